"""Score denoising against clean references: speech (PESQ, STOI, ESTOI, SI-SDR), images (PSNR, SSIM),
multispectral stacks (PSNR, MPSNR, SSIM, SAM, ERGAS) and video clips (PSNR, SSIM, temporal PSNR), per file and on
average, with figures.

    python -m xmodal.evaluate [--clean DIR] --noisy DIR [--enhanced DIR | --model M] [--json FILE] [--figures DIR]
                              [--figure-files N] [--modality {auto,speech,image,multispectral,video}]
                              [--data-range R] [--scaling {band_minmax,band_percentile,stack_minmax,dtype}]
                              [--rgb-bands 3,2,1]

``--modality auto`` (the default) looks at ``--clean``: a folder of audio files is speech, a folder of images
(:data:`xmodal.imageio.IMAGE_EXTENSIONS`) is image, a folder holding only sub-folders is video (one clip each), a
single file is a multispectral stack. A folder of single-band TIFFs forming one stack needs ``--modality
multispectral``; a folder of ``.npy`` clips needs ``--modality video``.

Speech: files are matched by name across the folders. Each file is scored at the clean file's rate (noisy and
enhanced files at another rate are resampled to it); multi-channel files are averaged to mono; files of different
lengths are scored on their common part (with a warning); PESQ follows :mod:`xmodal.metrics`
(wide-band at 16 kHz, narrow-band at 8 kHz, other rates resampled to 16 kHz). A metric that fails on a clip (silence,
too short) is listed, never fatal. Without ``--enhanced`` the noisy files are enhanced in memory by ``--model``
(default: the bundled speech model).

Images (:func:`evaluate_images`): files are matched by stem (``a.png`` pairs with ``a.tif``), read by
:func:`xmodal.imageio.read_image` (integer files scaled to [0, 1] by their dtype, float files as stored) and must have
the same ``(C, H, W)`` shape; PSNR uses ``--data-range`` (default 1), SSIM is
:data:`xmodal.metrics.SSIM_IMPLEMENTATION`. A file that cannot be read or whose shape differs is listed, not fatal.
Images need ``--enhanced`` or ``--model``. Without ``--clean`` (real noisy photos, which have no clean version) images
are scored by the noise level estimated in the noisy and enhanced images and the amount removed
(:func:`evaluate_images_no_reference`); the other modalities need ``--clean``.

Stacks (:func:`evaluate_stacks`): ``--clean``, ``--noisy`` and ``--enhanced`` are each ONE stack (a multi-band
TIFF/npy file, a MATLAB ``.mat`` array (``scene.mat:gt``), an ENVI header or a folder of single-band TIFFs). PSNR is
that of the whole stack (one MSE), MPSNR the mean of the bands' PSNRs (what hyperspectral papers report as PSNR),
SSIM the mean over bands. The per-band scaling (``--scaling``, default ``band_minmax``) is
computed on the CLEAN stack only and the same offset and scale are applied to the noisy and enhanced stacks, so the
three share one scale for PSNR and SSIM (scaling each stack on its own would hide a gain or offset error of the
denoiser). SAM and ERGAS are computed on the stacks' own values (as read from the files, in float): a per-band offset
would change the spectral angles and the band means ERGAS divides by. With ``--model`` the enhanced stack is what
``python -m xmodal.denoise`` writes for the noisy one.

Video (:func:`evaluate_videos`): ``--clean``, ``--noisy`` and ``--enhanced`` are folders of clips (each a folder of
frames, a ``(T, H, W[, C])`` ``.npy`` file or a video file, see :mod:`xmodal.videoio`) matched by name; PSNR of each
clip's mean squared error, SSIM averaged over its frames, and the temporal PSNR of
:func:`xmodal.metrics.temporal_psnr_score` (flicker: the PSNR of the frame-to-frame changes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from xmodal._cli import command_name, number_or_auto, run_command
from xmodal._fs import atomic_write
from xmodal.imageio import (_INT_MAX, IMAGE_EXTENSIONS, ImageReadError, _quantise, alpha_channels, nodata_value,
                            read_image, read_stack, read_stack_values)
from xmodal.io import AUDIO_EXTENSIONS, AudioReadError, list_audio_files, read_audio, resample
from xmodal.stackio import is_container, split_variable, stack_stem
from xmodal.videoio import TIFF_CLIP_EXTENSIONS, VIDEO_EXTENSIONS
from xmodal.vst import check_photon_args
from xmodal.metrics import (IMAGE_METRICS, LPIPS, SPEECH_METRICS, SSIM_IMPLEMENTATION, STACK_METRICS, VIDEO_METRICS,
                            MetricAccumulator, image_metrics, psnr_score, speech_metrics, video_metrics)

if TYPE_CHECKING:
    from xmodal.denoise import Denoiser

__all__ = ["detect_modality", "evaluate_folders", "evaluate_images", "evaluate_images_no_reference",
           "evaluate_stacks", "evaluate_videos",
           "format_table", "main", "match_clips", "match_files", "match_image_files", "save_image_comparison",
           "save_spectrogram_figure", "save_stack_comparison"]

Modality = Literal["auto", "speech", "image", "multispectral", "video"]
Scaling = Literal["band_minmax", "band_percentile", "stack_minmax", "dtype"]

_LABELS = {"pesq": "PESQ", "stoi": "STOI", "estoi": "ESTOI", "si_sdr": "SI-SDR", "psnr": "PSNR", "ssim": "SSIM",
           "sam": "SAM", "tpsnr": "tPSNR", "lpips": "LPIPS", "noise": "noise", "removed": "removed", "mpsnr": "MPSNR",
           "ergas": "ERGAS"}
_UNITS = {"si_sdr": " dB", "psnr": " dB", "sam": " deg", "tpsnr": " dB", "noise": " /255", "removed": " /255",
          "mpsnr": " dB"}
_ROWS = ("noisy", "enhanced")


def _name_list(names: set[str], limit: int = 10) -> str:
    names = sorted(names)
    more = f" ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def match_files(clean_dir: str | os.PathLike, **others: str | os.PathLike) -> list[str]:
    """Names of the audio files of ``clean_dir``, checked to exist in every folder of ``others``.

    Args:
        clean_dir: folder of clean references.
        others: label -> folder (e.g. ``noisy=...``, ``enhanced=...``).

    Returns:
        The sorted common file names.

    Raises:
        FileNotFoundError: a folder does not exist.
        ValueError: a folder holds no audio file, or the names differ (the message lists the unmatched names).
    """
    names = {p.name for p in list_audio_files(clean_dir)}
    problems = []
    for label, folder in others.items():
        theirs = {p.name for p in list_audio_files(folder)}
        if theirs != names:
            parts = []
            if names - theirs:
                parts.append(f"only in --clean: {_name_list(names - theirs)}")
            if theirs - names:
                parts.append(f"only in --{label}: {_name_list(theirs - names)}")
            problems.append(f"--clean {clean_dir} and --{label} {folder} do not hold the same file names ("
                            + "; ".join(parts) + ")")
    if problems:
        raise ValueError("; ".join(problems))
    return sorted(names)


def _image_files(folder: str | os.PathLike, label: str) -> dict[str, Path]:
    """Stem -> image file directly inside ``folder`` (hidden files and other extensions skipped).

    Raises:
        FileNotFoundError: ``folder`` is not a directory.
        ValueError: no image file, or two files share a stem.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder not found (--{label})")
    by_stem: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS:
            by_stem.setdefault(p.stem, []).append(p)
    if not by_stem:
        raise ValueError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder (--{label})")
    repeated = {stem: ps for stem, ps in by_stem.items() if len(ps) > 1}
    if repeated:
        stem, ps = sorted(repeated.items())[0]
        raise ValueError(f"{folder}: files are matched by stem, but {len(ps)} files share the stem {stem!r} "
                         f"({', '.join(p.name for p in ps)}) (--{label})")
    return {stem: ps[0] for stem, ps in by_stem.items()}


def match_image_files(clean_dir: str | os.PathLike, **others: str | os.PathLike) -> list[dict[str, Path]]:
    """Image files of ``clean_dir`` paired by stem with the files of every folder of ``others``.

    Stems are compared, not names, so ``a.png`` (clean) pairs with ``a.tif`` (enhanced).

    Args:
        clean_dir: folder of clean reference images.
        others: label -> folder (e.g. ``noisy=...``, ``enhanced=...``).

    Returns:
        One ``{"clean": path, label: path, ...}`` per stem, sorted by stem.

    Raises:
        FileNotFoundError: a folder does not exist.
        ValueError: a folder holds no image file or two files with one stem, or the stems differ (the message
            lists the unmatched names).
    """
    return _match_stems("clean", clean_dir, others)


def _match_stems(first: str, first_dir: str | os.PathLike,
                 others: dict[str, str | os.PathLike]) -> list[dict[str, Path]]:
    """:func:`match_image_files` with the folder the others are matched against labelled ``first``."""
    reference = _image_files(first_dir, first)
    files = {label: _image_files(folder, label) for label, folder in others.items()}
    problems = []
    for label, theirs in files.items():
        if set(theirs) != set(reference):
            ours, other = set(reference) - set(theirs), set(theirs) - set(reference)
            parts = []
            if ours:
                parts.append(f"only in --{first}: {_name_list({reference[s].name for s in ours})}")
            if other:
                parts.append(f"only in --{label}: {_name_list({theirs[s].name for s in other})}")
            none = "no file matches: " if not set(reference) & set(theirs) else ""
            problems.append(f"--{first} {first_dir} and --{label} {others[label]} do not hold the same image stems "
                            f"({none}" + "; ".join(parts) + ")")
    if problems:
        raise ValueError("; ".join(problems))
    return [{first: reference[stem], **{label: theirs[stem] for label, theirs in files.items()}}
            for stem in sorted(reference)]


def _mono(wave: np.ndarray) -> np.ndarray:
    """``(C, T)`` -> ``(T,)`` average of the channels."""
    return wave.mean(axis=0) if wave.shape[0] > 1 else wave[0]


def _at_rate(wave: np.ndarray, sample_rate: int, target: int) -> np.ndarray:
    """``(T,)`` at ``sample_rate`` -> ``(T',)`` float32 at ``target``."""
    return resample(wave, sample_rate, target).numpy() if sample_rate != target else wave


def _spectrogram_db(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """``(T,)`` -> ``(F, N)`` magnitude in dB (32 ms Hann window, 75 % overlap)."""
    import torch

    n_fft = 2 ** max(6, round(math.log2(0.032 * sample_rate)))
    x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    spec = torch.stft(x, n_fft, n_fft // 4, window=torch.hann_window(n_fft), return_complex=True)  # (F, N)
    return (20.0 * torch.log10(spec.abs() + 1e-8)).numpy()


def _title(label: str, scores: dict[str, float] | None) -> str:
    if scores is None:
        return label
    parts = []
    for m in SPEECH_METRICS:
        value = scores.get(m)
        unit = " dB" if m == "si_sdr" else ""
        parts.append(f"{_LABELS[m]} {value:.3f}{unit}" if value is not None else f"{_LABELS[m]} n/a")
    return f"{label}: " + ", ".join(parts)


def save_spectrogram_figure(path: str | os.PathLike, noisy: np.ndarray, enhanced: np.ndarray, clean: np.ndarray,
                            sample_rate: int, noisy_scores: dict[str, float] | None = None,
                            enhanced_scores: dict[str, float] | None = None, name: str = "") -> Path:
    """PNG of the noisy / enhanced / clean spectrograms stacked, on one colour scale, titled with their metrics.

    Args:
        path: PNG to write (its folder must exist).
        noisy, enhanced, clean: ``(T,)`` float waveforms at ``sample_rate``.
        sample_rate: rate in Hz.
        noisy_scores, enhanced_scores: metric name -> value, shown in the titles.
        name: file name shown in the figure title.

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg without touching pyplot's global backend
    from matplotlib.figure import Figure

    specs = [_spectrogram_db(w, sample_rate) for w in (noisy, enhanced, clean)]
    vmax = max(float(s.max()) for s in specs)
    vmin = vmax - 80.0
    fig = Figure(figsize=(10, 8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, 1, sharex=True)
    titles = [_title("noisy", noisy_scores), _title("enhanced", enhanced_scores), "clean (reference)"]
    image = None
    for ax, spec, wave, title in zip(axes, specs, (noisy, enhanced, clean), titles):
        extent = (0.0, len(wave) / sample_rate, 0.0, sample_rate / 2000.0)
        image = ax.imshow(spec, origin="lower", aspect="auto", extent=extent, vmin=vmin, vmax=vmax, cmap="magma")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("kHz")
    axes[-1].set_xlabel("time (s)")
    fig.colorbar(image, ax=list(axes), label="dB")
    if name:
        fig.suptitle(name)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    return Path(path)


def evaluate_folders(clean_dir: str | os.PathLike, noisy_dir: str | os.PathLike,
                     enhanced_dir: str | os.PathLike | None = None, *,
                     model: Denoiser | str | os.PathLike | None = None, device: str = "cpu",
                     metrics: tuple[str, ...] = SPEECH_METRICS, figures_dir: str | os.PathLike | None = None,
                     figure_files: int = 3, progress: bool = False) -> dict[str, Any]:
    """Score noisy and enhanced files against clean references.

    Args:
        clean_dir: clean references.
        noisy_dir: noisy files with the same names.
        enhanced_dir: enhanced files with the same names; if ``None``, the noisy files are enhanced in memory by
            ``model``.
        model: a :class:`~xmodal.denoise.Denoiser`, or a run directory / weights file / bundled name for
            :func:`xmodal.load` (``None`` = the bundled speech model). Only without ``enhanced_dir``.
        device: where a loaded model runs.
        metrics: names from :data:`xmodal.metrics.SPEECH_METRICS`.
        figures_dir: write ``<name>.png`` spectrogram figures for the first ``figure_files`` files here (created).
        figure_files: how many files get a figure.
        progress: show a progress bar over files.

    Returns:
        ``{"clean_dir", "noisy_dir", "enhanced", "metrics", "files": [{"name", "sample_rate", "noisy": {metric:
        value}, "enhanced": {...}}], "mean": {"noisy": {...}, "enhanced": {...}}, "mean_counts": {metric: n},
        "failures": [{"row", "metric", "file", "reason"}], "errors": [{"file", "reason"}], "figures": [paths],
        "warnings": [str]}``. A metric that failed is absent from the file's scores; the means are paired: a
        metric's mean, in both rows, is over the ``mean_counts[metric]`` files where it scored both the noisy and
        the enhanced file (``None`` when there is none), so a failure cannot favour one row; ``errors``
        lists unreadable files; ``warnings`` files whose lengths differ (scored on their common part).

    Raises:
        ValueError: both ``enhanced_dir`` and ``model`` given, unknown metrics, a negative ``figure_files``,
            unmatched file names, or a model of another modality.
        FileNotFoundError: a folder does not exist.
    """
    from tqdm import tqdm

    if enhanced_dir is not None and model is not None:
        raise ValueError("pass either `enhanced_dir` (--enhanced) or `model` (--model), not both")
    unknown = [m for m in metrics if m not in SPEECH_METRICS]
    if unknown:
        raise ValueError(f"unknown speech metric(s) {', '.join(map(repr, unknown))} "
                         f"(known: {', '.join(SPEECH_METRICS)})")
    if figure_files < 0:
        raise ValueError(f"`figure_files` must be >= 0, got {figure_files}")
    folders = {"noisy": noisy_dir} if enhanced_dir is None else {"noisy": noisy_dir, "enhanced": enhanced_dir}
    names = match_files(clean_dir, **folders)
    denoiser = None
    if enhanced_dir is None:
        from xmodal.denoise import Denoiser

        denoiser = model if isinstance(model, Denoiser) else _load_for(model, "speech", device)
        if getattr(denoiser, "modality", "speech") != "speech":  # xmodal.load also returns image/stack denoisers
            raise ValueError(f"model {model}: it denoises modality {denoiser.modality!r}, but the evaluation is of "
                             "'speech' data (--modality)")
    if figures_dir is not None:
        Path(figures_dir).mkdir(parents=True, exist_ok=True)

    acc = MetricAccumulator()
    files, errors, figures, warnings = [], [], [], []
    for name in tqdm(names, desc="evaluate", unit="file", disable=not progress, dynamic_ncols=True):
        try:
            clean, sr = read_audio(Path(clean_dir) / name)
            noisy, sr_noisy = read_audio(Path(noisy_dir) / name)
            if denoiser is not None:
                enhanced, sr_enh = denoiser.denoise(noisy, sr_noisy), sr_noisy
            else:
                enhanced, sr_enh = read_audio(Path(enhanced_dir) / name)
        except AudioReadError as e:
            errors.append({"file": name, "reason": str(e)})
            continue
        ref = _mono(clean)
        noisy_m = _at_rate(_mono(noisy), sr_noisy, sr)
        enh_m = _at_rate(_mono(enhanced), sr_enh, sr)
        n = min(len(ref), len(noisy_m), len(enh_m))  # score the common part
        if max(len(ref), len(noisy_m), len(enh_m)) - n > 1:  # more than a resampling rounding
            warnings.append(f"{name}: lengths differ (clean {len(ref)}, noisy {len(noisy_m)}, enhanced {len(enh_m)} "
                            f"samples at {sr} Hz); scored the first {n}")
        ref, noisy_m, enh_m = ref[:n], noisy_m[:n], enh_m[:n]
        entry = {"name": name, "sample_rate": sr,
                 "noisy": speech_metrics(acc, "noisy", name, ref, noisy_m, sr, metrics),
                 "enhanced": speech_metrics(acc, "enhanced", name, ref, enh_m, sr, metrics)}
        files.append(entry)
        if figures_dir is not None and len(figures) < figure_files:
            png = Path(figures_dir) / f"{Path(name).stem}.png"
            save_spectrogram_figure(png, noisy_m, enh_m, ref, sr, entry["noisy"], entry["enhanced"], name)
            figures.append(str(png))
    means = acc.means()
    mean = {row: {m: _finite_or_none(means.get(row, {}).get(m, float("nan"))) for m in metrics} for row in _ROWS}
    return {
        "clean_dir": str(clean_dir),
        "noisy_dir": str(noisy_dir),
        "enhanced": str(enhanced_dir) if enhanced_dir is not None else f"model {denoiser.name}",
        "metrics": list(metrics),
        "files": files,
        "mean": mean,
        "mean_counts": _mean_counts(acc, metrics),
        "failures": [{"row": r, "metric": m, "file": f, "reason": why} for r, m, f, why in acc.failures],
        "errors": errors,
        "figures": figures,
        "warnings": warnings,
    }


# ------------------------------------------------------------------------------------------------ images and stacks


class ArrayDenoiser(Protocol):
    """What :func:`evaluate_images` and :func:`evaluate_stacks` need of a model (an ``ImageDenoiser`` or
    ``StackDenoiser`` from :func:`xmodal.load`): ``denoise`` taking and returning a float ``(C, H, W)`` /
    ``(S, H, W)`` array of the same shape, and ``config.modality``."""

    config: Any

    def denoise(self, x: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` or ``(S, H, W)`` float -> the same shape, denoised."""
        ...


def _check_source(enhanced: object, denoiser: object, modality: str) -> None:
    if enhanced is not None and denoiser is not None:
        raise ValueError("pass either `enhanced` (--enhanced) or `denoiser` (--model), not both")
    if enhanced is None and denoiser is None:
        raise ValueError(f"{modality} evaluation needs the enhanced files (`enhanced_dir`, --enhanced) or a model "
                         "(`denoiser`, --model); neither was given")


def _photon_options(poisson: object, read_noise: object, enhanced: object) -> dict[str, Any] | None:
    """``poisson`` / ``read_noise`` of :func:`evaluate_images` checked, as ``denoise`` keywords (``None``: not
    given)."""
    check_photon_args(poisson, read_noise)
    if poisson is None:
        return None
    if enhanced is not None:
        raise ValueError("`poisson` sets how the model denoises (`denoiser`, --model), not with the enhanced files "
                         "(`enhanced_dir`, --enhanced)")
    return {"poisson": poisson, "read_noise": read_noise}


def _check_options(metrics: tuple[str, ...], known: tuple[str, ...], data_range: float, figure_files: int) -> None:
    unknown = [m for m in metrics if m not in known]
    if unknown or not metrics:
        raise ValueError(f"unknown metric(s) {', '.join(map(repr, unknown)) or '(none given)'} "
                         f"(known: {', '.join(known)})")
    if not (isinstance(data_range, (int, float)) and math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"`data_range` (--data-range) must be a finite number > 0, got {data_range!r}")
    if figure_files < 0:
        raise ValueError(f"`figure_files` must be >= 0, got {figure_files}")


def _load_for(model: str | os.PathLike | None, modality: str, device: str) -> Any:
    """:func:`xmodal.load` for an evaluation of ``modality``: a jointly trained model gives its ``modality`` part; a
    single-modality model loads as it is (the caller checks its modality and names the evaluation's)."""
    import xmodal
    from xmodal.denoise import ModalityNeeded

    try:
        return xmodal.load(model, device)
    except ModalityNeeded:
        return xmodal.load(model, device, modality=modality)


def _resolve_denoiser(denoiser: ArrayDenoiser | str | os.PathLike, modality: str,
                      device: str) -> tuple[ArrayDenoiser, str]:
    """The model object and its display name; a path or bundled name goes through :func:`xmodal.load`."""
    if isinstance(denoiser, (str, os.PathLike)):
        name = str(denoiser)
        denoiser = _load_for(denoiser, modality, device)
    else:
        name = str(getattr(denoiser, "name", "") or type(denoiser).__name__)
    if not callable(getattr(denoiser, "denoise", None)):
        raise TypeError(f"`denoiser` must have a `denoise` method, got {type(denoiser).__name__}")
    got = getattr(getattr(denoiser, "config", None), "modality", None)
    if got != modality:
        raise ValueError(f"model {name}: it denoises modality {got!r}, but the evaluation is of {modality!r} "
                         f"data (--modality)")
    return denoiser, name


def _denoised(denoiser: ArrayDenoiser, x: np.ndarray, what: str, **kwargs: object) -> np.ndarray:
    """``denoiser.denoise(x, **kwargs)`` as float numpy, checked to keep ``x``'s shape."""
    return _checked(denoiser.denoise(x, **kwargs), x, what)


def _checked(out: Any, x: np.ndarray, what: str) -> np.ndarray:
    """A model's output ``out`` for the input ``x`` as float32 numpy, checked to have ``x``'s shape."""
    if hasattr(out, "detach"):  # a torch tensor
        out = out.detach().cpu().numpy()
    out = np.asarray(out)
    if out.shape != x.shape:
        raise ValueError(f"{what}: the model returned shape {tuple(out.shape)} for an input of shape "
                         f"{tuple(x.shape)}; expected the same shape")
    return out.astype(np.float32, copy=False)


def _at_bit_depth(x: np.ndarray, dtype: str) -> np.ndarray:
    """``x`` in [0, 1] as :func:`~xmodal.imageio.write_image` then :func:`~xmodal.imageio.read_image` give it back
    at an integer ``dtype`` (rounded to its levels, clipped to [0, 1]); float dtypes unchanged."""
    levels = _INT_MAX.get(dtype)
    if levels is None:
        return x
    return np.clip(np.rint(x.astype(np.float64) * levels), 0, levels).astype(np.float32) / np.float32(levels)


def _colour(x: np.ndarray, info: Any) -> np.ndarray:
    """``(C, H, W)`` image without its alpha channel (the last one of an ``LA``/``RGBA`` file), which ``python -m
    xmodal.denoise`` copies unchanged and the evaluation sets aside: neither scored nor given to a model."""
    return x[:-1] if alpha_channels(getattr(info, "mode", None)) else x


class _ModelRefused(Exception):
    """The model refused one file (``denoise`` raised ``ValueError``/``TypeError``): listed, not fatal."""


def _model_output(model: ArrayDenoiser, noisy: np.ndarray, dtype: str, path: Path,
                  photons: dict[str, Any] | None = None, clip_range: tuple[float, ...] = ()) -> np.ndarray:
    """What ``python -m xmodal.denoise`` would write for the noisy file ``path`` (read as ``noisy``, stored as
    ``dtype``), read back: denoised in the value range it would use (a float image that is not [0, 1] data: auto)
    and with its ``--sigma auto`` (or its ``--poisson`` and ``--read-noise``: ``photons``, float files then taken as
    they are), rounded to the file's bit depth; a float clip in the range its reader found (``clip_range``)."""
    from xmodal.denoise import ImageDenoiser, VideoDenoiser, file_value_range

    kwargs: dict[str, Any] = {"sigma": "auto"} if isinstance(model, (ImageDenoiser, VideoDenoiser)) else {}
    if photons:
        kwargs = dict(photons)
    value_range = file_value_range(noisy, dtype) if isinstance(model, ImageDenoiser) and not photons else None
    if isinstance(model, VideoDenoiser) and not photons and clip_range:  # a float clip: the range its reader
        value_range = tuple(clip_range)  # gives the denoise command (:attr:`~xmodal.videoio.ClipInfo.value_range`)
    if value_range:
        kwargs["value_range"] = value_range
    try:
        out = model.denoise(noisy, **kwargs)
    except (TypeError, ValueError) as e:  # e.g. a colour model given a gray image
        raise _ModelRefused(f"{path}: the model cannot denoise this file: {e}") from None
    return _at_bit_depth(_checked(out, noisy, f"{path}"), dtype)


def _mean_or_none(value: float) -> float | None:
    """NaN (every item failed) -> ``None``; a finite value or ``inf`` (identical images) is kept."""
    return None if math.isnan(value) else value


def _means(acc: MetricAccumulator, metrics: tuple[str, ...]) -> dict[str, dict[str, float | None]]:
    means = acc.means()
    return {row: {m: _mean_or_none(means.get(row, {}).get(m, float("nan"))) for m in metrics} for row in _ROWS}


def _mean_counts(acc: MetricAccumulator, metrics: tuple[str, ...]) -> dict[str, int]:
    """Metric -> how many files its (paired) means are over: the files that every row scored with it."""
    counts = acc.mean_counts()
    return {m: min((counts.get(row, {}).get(m, 0) for row in _ROWS), default=0) for m in metrics}


def evaluate_images(clean_dir: str | os.PathLike, noisy_dir: str | os.PathLike,
                    enhanced_dir: str | os.PathLike | None = None,
                    denoiser: ArrayDenoiser | str | os.PathLike | None = None, *, device: str = "cpu",
                    metrics: tuple[str, ...] = IMAGE_METRICS, data_range: float = 1.0,
                    figures_dir: str | os.PathLike | None = None, figure_files: int = 3,
                    progress: bool = False, lpips: LPIPS | str | os.PathLike | None = None,
                    poisson: float | str | None = None, read_noise: float | str = 0.0) -> dict[str, Any]:
    """Score noisy and enhanced (or model-denoised) images against clean references with PSNR and SSIM.

    Files are paired by stem (:func:`match_image_files`) and read by :func:`xmodal.imageio.read_image`: integer
    files in [0, 1] by their dtype (uint8 / 255, uint16 / 65535), float files as stored.

    Args:
        clean_dir: clean reference images.
        noisy_dir: noisy images with the same stems.
        enhanced_dir: enhanced images with the same stems; or ``None`` with ``denoiser``.
        denoiser: an object with ``denoise(image (C, H, W) float in [0, 1]) -> (C, H, W)`` and
            ``config.modality == "image"`` (an ``ImageDenoiser``), or a run directory / weights file / bundled
            name for :func:`xmodal.load`. Only without ``enhanced_dir``. Its output is scored as ``python -m
            xmodal.denoise`` writes it: ``sigma="auto"`` (for an ``ImageDenoiser``), rounded to the noisy file's bit
            depth and clipped to [0, 1] for 8/16-bit files (float files: as returned).
        device: where a loaded model runs.
        metrics: names from :data:`xmodal.metrics.IMAGE_METRICS`, and ``lpips``.
        data_range: peak-to-peak range of the images for PSNR, SSIM and LPIPS (1 for integer files).
        figures_dir: write ``<stem>.png`` comparison figures (:func:`save_image_comparison`) for the first
            ``figure_files`` images here (created).
        figure_files: how many images get a figure.
        progress: show a progress bar over files.
        lpips: score LPIPS too (``lpips`` is added to ``metrics``): an :class:`xmodal.metrics.LPIPS`, or the path of
            its backbone weights (AlexNet, linear layers from the ``lpips`` package). Gray and RGB images only; it
            fails (recorded, not raised) on other channel counts and on images smaller than the backbone needs.
        poisson, read_noise: photon-limited data: the model denoises with them (as
            :meth:`xmodal.denoise.ImageDenoiser.denoise`, ``python -m xmodal.denoise --poisson``) instead of
            ``sigma="auto"``; only with ``denoiser``.

    Returns:
        ``{"modality": "image", "clean_dir", "noisy_dir", "enhanced", "metrics", "data_range",
        "ssim_implementation"[, "lpips_implementation"], "files": [{"name" (stem), "files": {"clean", "noisy"[,
        "enhanced"]: file name}, "shape": [C, H, W], "dtype"[, "alpha"], "noisy": {metric: value}, "enhanced":
        {...}}], "mean": {"noisy": {...}, "enhanced": {...}}, "mean_counts": {metric: n}, "failures": [{"row",
        "metric", "file", "reason"}], "errors": [{"file", "reason"}], "figures": [paths], "warnings": [str]}``.
        PSNR of identical images is ``inf``; a metric that failed (SSIM of an image smaller than 11 x 11) is absent
        from the file's scores; the means are paired as in :func:`evaluate_folders` (``None`` when no file scored
        in both rows). The alpha channel of a gray+alpha or RGBA file is set aside (``"alpha"`` in its entry): not
        scored and not given to a model, as ``python -m xmodal.denoise`` copies it unchanged. ``errors`` lists
        files that could not be read, whose shape differs from the clean one, or that the model refused (naming
        the file); ``warnings`` clean images with values outside ``[0, data_range]``.

    Raises:
        ValueError: both or neither of ``enhanced_dir`` and ``denoiser``, unknown metrics, ``lpips`` in
            ``metrics`` without ``lpips``, a bad ``data_range`` or ``figure_files``, unmatched stems, a model for
            another modality or returning another shape; LPIPS weights that are not what they should be.
        FileNotFoundError: a folder or an LPIPS weights file does not exist.
        TypeError: ``denoiser`` has no ``denoise`` method.
    """
    return _evaluate_arrays("image", clean_dir, noisy_dir, enhanced_dir, denoiser, device=device, metrics=metrics,
                            data_range=data_range, figures_dir=figures_dir, figure_files=figure_files,
                            progress=progress, lpips=lpips, poisson=poisson, read_noise=read_noise)


NOISE_SCALE = 255.0  # no-reference noise levels are reported on the 0-255 scale of [0, 1] images


def evaluate_images_no_reference(noisy_dir: str | os.PathLike, enhanced_dir: str | os.PathLike | None = None,
                                 denoiser: ArrayDenoiser | str | os.PathLike | None = None, *,
                                 device: str = "cpu", figures_dir: str | os.PathLike | None = None,
                                 figure_files: int = 3, progress: bool = False) -> dict[str, Any]:
    """Real noisy images without clean versions (camera photos, scans, ``RNI15``): how much noise the noisy and
    the enhanced images hold, and how much was taken out, measured without a reference.

    For each image: ``noise``, the standard deviation of the white Gaussian noise it holds, estimated from the image
    alone (:func:`xmodal.noise.estimate_sigma`, the root mean square of its channels'), for the noisy and the
    enhanced image; ``removed``, the standard deviation of the residual ``noisy - enhanced``. Both on the 0-255
    scale of images in [0, 1] (:data:`NOISE_SCALE` times the values :func:`~xmodal.imageio.read_image` gives). A
    good denoiser leaves ``noise`` near 0 (a clean 8-bit image reads as about 1) and removes about the noisy
    image's ``noise``: a ``removed`` well above it means image detail went too (look at the residual in the
    figures: it should show noise, not edges). Real noise that is not white (after demosaicking, JPEG) reads lower
    than its per-pixel standard deviation.

    Args:
        noisy_dir: the noisy images.
        enhanced_dir, denoiser, device, figures_dir, figure_files, progress: as in :func:`evaluate_images`; the
            figures show noisy / denoised / residual.

    Returns:
        ``{"modality": "image", "clean_dir": None, "noisy_dir", "enhanced", "metrics": ["noise", "removed"],
        "noise_scale": 255.0, "noise_estimator", "files": [{"name", "files", "shape", "dtype", "noisy": {"noise"},
        "enhanced": {"noise", "removed"}, "noise_channels": {"noisy": [...], "enhanced": [...]}}], "mean": {"noisy":
        {...}, "enhanced": {...}}, "failures": [], "errors": [{"file", "reason"}], "figures": [paths],
        "warnings": []}``. ``errors`` lists files that could not be read, whose shapes differ, or too small to
        estimate a noise level (7 x 7 patches).

    Raises:
        ValueError: both or neither of ``enhanced_dir`` and ``denoiser``, a bad ``figure_files``, unmatched stems,
            a model for another modality or returning another shape.
        FileNotFoundError: a folder does not exist.
    """
    from tqdm import tqdm

    from xmodal.noise import estimate_sigma

    _check_source(enhanced_dir, denoiser, "image")
    if figure_files < 0:
        raise ValueError(f"`figure_files` must be >= 0, got {figure_files}")
    if enhanced_dir is None:
        pairs = [{"noisy": path} for _, path in sorted(_image_files(noisy_dir, "noisy").items())]
    else:
        pairs = _match_stems("noisy", noisy_dir, {"enhanced": enhanced_dir})
    model, model_name = _resolve_denoiser(denoiser, "image", device) if denoiser is not None else (None, "")
    if figures_dir is not None:
        Path(figures_dir).mkdir(parents=True, exist_ok=True)
    files, errors, figures = [], [], []
    for pair in tqdm(pairs, desc="evaluate", unit="image", disable=not progress, dynamic_ncols=True):
        name = pair["noisy"].stem
        try:
            noisy, info = read_image(pair["noisy"])
            enhanced, enhanced_info = read_image(pair["enhanced"]) if model is None else (None, None)
        except ImageReadError as e:
            errors.append({"file": name, "reason": str(e)})
            continue
        noisy = _colour(noisy, info)  # alpha set aside, as python -m xmodal.denoise does
        if enhanced is None:
            try:
                enhanced = _model_output(model, noisy, info.dtype, pair["noisy"])
            except _ModelRefused as e:
                errors.append({"file": name, "reason": str(e)})
                continue
        elif (enhanced := _colour(enhanced, enhanced_info)).shape != noisy.shape:
            errors.append({"file": name, "reason": f"{pair['enhanced']}: shape {enhanced.shape} differs from "
                                                   f"{pair['noisy']}: {noisy.shape}; images must have the same "
                                                   f"(C, H, W)"})
            continue
        try:
            levels = {row: estimate_sigma(x) * NOISE_SCALE for row, x in (("noisy", noisy), ("enhanced", enhanced))}
        except ValueError as e:  # too small to hold enough patches
            errors.append({"file": name, "reason": f"{pair['noisy']}: {e}"})
            continue
        noise = {row: float(np.sqrt(np.mean(v ** 2))) for row, v in levels.items()}
        removed = float(np.std(noisy.astype(np.float64) - enhanced) * NOISE_SCALE)
        entry = {"name": name, "files": {row: p.name for row, p in pair.items()}, "shape": list(noisy.shape),
                 "dtype": info.dtype, "noisy": {"noise": noise["noisy"]},
                 "enhanced": {"noise": noise["enhanced"], "removed": removed},
                 "noise_channels": {row: v.tolist() for row, v in levels.items()}}
        files.append(entry)
        if figures_dir is not None and len(figures) < figure_files:
            png = Path(figures_dir) / f"{name}.png"
            save_image_comparison(png, noisy, enhanced, None, {"noise": noise["noisy"]},
                                  {"noise": noise["enhanced"], "removed": removed}, name=name)
            figures.append(str(png))

    def mean(row: str, metric: str) -> float | None:
        return float(np.mean([f[row][metric] for f in files])) if files else None

    return {
        "modality": "image",
        "clean_dir": None,
        "noisy_dir": str(noisy_dir),
        "enhanced": str(enhanced_dir) if enhanced_dir is not None else f"model {model_name}",
        "metrics": ["noise", "removed"],
        "noise_scale": NOISE_SCALE,
        "noise_estimator": "xmodal.noise.estimate_sigma (Liu et al. 2013, white Gaussian noise), root mean square "
                           "over channels",
        "files": files,
        "mean": {"noisy": {"noise": mean("noisy", "noise")},
                 "enhanced": {"noise": mean("enhanced", "noise"), "removed": mean("enhanced", "removed")}},
        "failures": [],
        "errors": errors,
        "figures": figures,
        "warnings": [],
    }


def _clip_items(folder: str | os.PathLike, label: str) -> dict[str, Path]:
    """Name -> clip directly inside ``folder``: its sub-folders (by name), ``.npy``, multi-page TIFF and video files
    (by stem).

    Raises:
        FileNotFoundError: ``folder`` is not a directory.
        ValueError: no clip, or a sub-folder and a ``.npy`` file share a name.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: clip folder not found (--{label})")
    items: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            items.setdefault(p.name, []).append(p)
        elif p.is_file() and p.suffix.lower() in (".npy", *TIFF_CLIP_EXTENSIONS, *VIDEO_EXTENSIONS):
            items.setdefault(p.stem, []).append(p)
    if not items:
        raise ValueError(f"{folder}: no clips (sub-folders of frames, .npy, multi-page TIFF or video files) in this "
                         f"folder (--{label})")
    repeated = {name: ps for name, ps in items.items() if len(ps) > 1}
    if repeated:
        name, ps = sorted(repeated.items())[0]
        raise ValueError(f"{folder}: clips are matched by name, but {', '.join(p.name for p in ps)} share the name "
                         f"{name!r} (--{label})")
    return {name: ps[0] for name, ps in items.items()}


def match_clips(clean_dir: str | os.PathLike, **others: str | os.PathLike) -> list[dict[str, Path]]:
    """Clips of ``clean_dir`` paired by name with the clips of every folder of ``others`` (``noisy=...``,
    ``enhanced=...``); one ``{"clean": path, label: path, ...}`` per name, sorted.

    Raises:
        FileNotFoundError: a folder does not exist.
        ValueError: a folder holds no clip, or the names differ (the message lists the unmatched ones).
    """
    clean = _clip_items(clean_dir, "clean")
    files = {label: _clip_items(folder, label) for label, folder in others.items()}
    problems = []
    for label, theirs in files.items():
        if set(theirs) != set(clean):
            parts = []
            if set(clean) - set(theirs):
                parts.append(f"only in --clean: {_name_list(set(clean) - set(theirs))}")
            if set(theirs) - set(clean):
                parts.append(f"only in --{label}: {_name_list(set(theirs) - set(clean))}")
            problems.append(f"--clean {clean_dir} and --{label} {others[label]} do not hold the same clip names ("
                            + "; ".join(parts) + ")")
    if problems:
        raise ValueError("; ".join(problems))
    return [{"clean": clean[n], **{label: theirs[n] for label, theirs in files.items()}} for n in sorted(clean)]


def evaluate_videos(clean_dir: str | os.PathLike, noisy_dir: str | os.PathLike,
                    enhanced_dir: str | os.PathLike | None = None,
                    denoiser: ArrayDenoiser | str | os.PathLike | None = None, *, device: str = "cpu",
                    metrics: tuple[str, ...] = VIDEO_METRICS, data_range: float = 1.0,
                    figures_dir: str | os.PathLike | None = None, figure_files: int = 3,
                    progress: bool = False, lpips: LPIPS | str | os.PathLike | None = None,
                    poisson: float | str | None = None, read_noise: float | str = 0.0) -> dict[str, Any]:
    """Score noisy and enhanced (or model-denoised) clips against clean clips with PSNR, SSIM and temporal PSNR.

    Clips are paired by name (:func:`match_clips`) and read by :func:`xmodal.videoio.read_clip` (integer frames in
    [0, 1] by their dtype). See :func:`xmodal.metrics.video_metrics` for the metrics.

    Args:
        clean_dir, noisy_dir, enhanced_dir: folders of clips with the same names (``enhanced_dir`` or
            ``denoiser``).
        denoiser: a ``VideoDenoiser`` (``denoise(clip (T, C, H, W)) -> (T, C, H, W)``, ``config.modality ==
            "video"``) or a run directory / weights file / bundled name for :func:`xmodal.load`; its output is
            scored as ``python -m xmodal.denoise`` writes it (``sigma="auto"``, rounded to the noisy clip's bit depth).
        device, metrics, data_range, figures_dir, figure_files, progress, lpips, poisson, read_noise: as in
            :func:`evaluate_images` (LPIPS is the mean over frames); a figure shows the middle frame of a clip.

    Returns:
        The dictionary of :func:`evaluate_images` with ``"modality": "video"``; each file entry has ``"shape":
        [T, C, H, W]``.

    Raises:
        ValueError: both or neither of ``enhanced_dir`` and ``denoiser``, unknown metrics, bad options, unmatched
            names, a model for another modality or returning another shape.
        FileNotFoundError: a folder does not exist.
    """
    return _evaluate_arrays("video", clean_dir, noisy_dir, enhanced_dir, denoiser, device=device, metrics=metrics,
                            data_range=data_range, figures_dir=figures_dir, figure_files=figure_files,
                            progress=progress, lpips=lpips, poisson=poisson, read_noise=read_noise)


def _evaluate_arrays(modality: str, clean_dir: str | os.PathLike, noisy_dir: str | os.PathLike,
                     enhanced_dir: str | os.PathLike | None, denoiser: ArrayDenoiser | str | os.PathLike | None, *,
                     device: str, metrics: tuple[str, ...], data_range: float,
                     figures_dir: str | os.PathLike | None, figure_files: int, progress: bool,
                     lpips: LPIPS | str | os.PathLike | None, poisson: float | str | None = None,
                     read_noise: float | str = 0.0) -> dict[str, Any]:
    """The loop of :func:`evaluate_images` and :func:`evaluate_videos`: pair, read, check shapes, denoise (rounded
    to the noisy file's bit depth), score noisy and enhanced, draw the first figures (a clip: its middle frame)."""
    from tqdm import tqdm

    from xmodal.denoise import ranged_by_frames, sampled_clip_range
    from xmodal.videoio import read_clip

    video = modality == "video"
    known, match, read, score = (VIDEO_METRICS, match_clips, read_clip, video_metrics) if video else \
        (IMAGE_METRICS, match_image_files, read_image, image_metrics)
    _check_source(enhanced_dir, denoiser, modality)
    photons = _photon_options(poisson, read_noise, enhanced_dir)
    if lpips is not None and "lpips" not in metrics:
        metrics = (*metrics, "lpips")
    _check_options(metrics, known + ("lpips",), data_range, figure_files)
    if "lpips" in metrics and lpips is None:
        raise ValueError("metric 'lpips' needs LPIPS weights: pass `lpips` (--lpips), an xmodal.metrics.LPIPS or "
                         "the path of its backbone weights")
    if lpips is not None and not isinstance(lpips, LPIPS):
        lpips = LPIPS(lpips)
    folders = {"noisy": noisy_dir} if enhanced_dir is None else {"noisy": noisy_dir, "enhanced": enhanced_dir}
    pairs = match(clean_dir, **folders)
    model, model_name = _resolve_denoiser(denoiser, modality, device) if denoiser is not None else (None, "")
    if figures_dir is not None:
        Path(figures_dir).mkdir(parents=True, exist_ok=True)

    acc = MetricAccumulator()
    files, errors, figures, warnings = [], [], [], []
    for pair in tqdm(pairs, desc="evaluate", unit="clip" if video else "image", disable=not progress,
                     dynamic_ncols=True):
        name = pair["clean"].stem if pair["clean"].is_file() else pair["clean"].name  # a clip may be a folder
        try:
            clean, info = read(pair["clean"])  # (C, H, W) or (T, C, H, W)
            noisy, noisy_info = read(pair["noisy"])
            enhanced, enhanced_info = read(pair["enhanced"]) if model is None else (None, None)
        except ImageReadError as e:
            errors.append({"file": name, "reason": str(e)})
            continue
        alpha = not video and any(alpha_channels(getattr(i, "mode", None)) for i in (info, noisy_info, enhanced_info))
        if alpha:  # (C, H, W) -> (C - 1, H, W) for each file that has one
            clean, noisy = _colour(clean, info), _colour(noisy, noisy_info)
            enhanced = _colour(enhanced, enhanced_info) if enhanced is not None else None
        mismatch = [f"{pair[row]}: shape {x.shape} differs from {pair['clean']}: {clean.shape}"
                    for row, x in (("noisy", noisy), ("enhanced", enhanced))
                    if x is not None and x.shape != clean.shape]
        if mismatch:
            errors.append({"file": name, "reason": "; ".join(mismatch) + (
                "; clips must have the same (T, C, H, W)" if video else "; images must have the same (C, H, W)")})
            continue
        if model is not None:
            try:
                clip_range = noisy_info.value_range if video else ()
                if video and not clip_range and not photons and ranged_by_frames(noisy_info):
                    clip_range = sampled_clip_range(noisy, noisy_info.dtype)  # as the command maps 12 bits of 16
                enhanced = _model_output(model, noisy, noisy_info.dtype, pair["noisy"], photons, clip_range)
            except _ModelRefused as e:
                errors.append({"file": name, "reason": str(e)})
                continue
        nodata = None if video else nodata_value(info)
        mask = None if nodata is None else _valid_pixels(clean, [nodata] * clean.shape[0])  # GeoTIFF nodata out
        masked = {} if mask is None else {"mask": mask}
        scored = clean if mask is None or not mask.any() else clean[:, mask]  # all nodata: its metrics fail
        if float(scored.min()) < 0 or float(scored.max()) > data_range:
            warnings.append(f"{pair['clean']}: values span [{float(scored.min()):.4g}, {float(scored.max()):.4g}], "
                            f"outside the data range [0, {data_range:g}] used by "
                            f"{' and '.join(_LABELS[m] for m in metrics)}")
        entry = {"name": name, "files": {row: p.name for row, p in pair.items()}, "shape": list(clean.shape),
                 "dtype": info.dtype, **({"alpha": "set aside (not scored)"} if alpha else {}),
                 **({"scored_pixels": int(mask.sum())} if mask is not None else {}),
                 "noisy": score(acc, "noisy", name, clean, noisy, metrics, data_range, lpips, **masked),
                 "enhanced": score(acc, "enhanced", name, clean, enhanced, metrics, data_range, lpips, **masked)}
        files.append(entry)
        if figures_dir is not None and len(figures) < figure_files:
            png = Path(figures_dir) / f"{name}.png"
            t = clean.shape[0] // 2  # a clip is shown by its middle frame
            shown = (noisy[t], enhanced[t], clean[t]) if video else (noisy, enhanced, clean)
            save_image_comparison(png, *shown, entry["noisy"], entry["enhanced"], data_range=data_range,
                                  name=f"{name}, frame {t + 1} of {clean.shape[0]}" if video else name)
            figures.append(str(png))
    return {
        "modality": modality,
        "clean_dir": str(clean_dir),
        "noisy_dir": str(noisy_dir),
        "enhanced": str(enhanced_dir) if enhanced_dir is not None else f"model {model_name}",
        "metrics": list(metrics),
        "data_range": data_range,
        "ssim_implementation": SSIM_IMPLEMENTATION,
        **({"lpips_implementation": lpips.description} if lpips is not None else {}),
        "files": files,
        "mean": _means(acc, metrics),
        "mean_counts": _mean_counts(acc, metrics),
        "failures": [{"row": r, "metric": m, "file": f, "reason": why} for r, m, f, why in acc.failures],
        "errors": errors,
        "figures": figures,
        "warnings": warnings,
    }


def _parse_rgb_bands(rgb_bands: str | tuple[int, ...] | list[int] | None, bands: int) -> tuple[int, int, int]:
    """1-based ``(red, green, blue)`` band numbers, checked against ``bands``; ``None`` = the middle three."""
    if rgb_bands is None:
        mid = bands // 2  # 0-based middle band; red = the next one (longer wavelength in the usual band order)
        return tuple(min(max(i, 0), bands - 1) + 1 for i in (mid + 1, mid, mid - 1))  # type: ignore[return-value]
    if isinstance(rgb_bands, str):
        try:
            numbers = tuple(int(v) for v in rgb_bands.split(","))
        except ValueError:
            numbers = ()
        if len(numbers) != 3:
            raise ValueError(f"--rgb-bands: expected three 1-based band numbers like '3,2,1', got {rgb_bands!r}")
    else:
        numbers = tuple(int(v) for v in rgb_bands)
        if len(numbers) != 3:
            raise ValueError(f"`rgb_bands` (--rgb-bands): expected three 1-based band numbers, got {rgb_bands!r}")
    bad = [n for n in numbers if not 1 <= n <= bands]
    if bad:
        raise ValueError(f"`rgb_bands` (--rgb-bands) {','.join(map(str, numbers))}: band {bad[0]} does not exist; "
                         f"the stack has bands 1 to {bands}")
    return numbers  # type: ignore[return-value]


def _stack_values(path: str | os.PathLike, label: str, clean_path: str | os.PathLike,
                  clean_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, Any]:
    """Read the stack at ``path``: its file values and its own per-band min/max scaling.

    Returns:
        ``(values, scaled, info)``: ``values: (S, H, W) float64``, the file values as stored
        (:func:`~xmodal.imageio.read_stack_values`), ``scaled: (S, H, W) float32`` each band in [0, 1] by its own
        min/max (``band_minmax``, which takes every stack dtype), and its :class:`~xmodal.imageio.StackInfo`.
    """
    stack, info = read_stack(path, "band_minmax")  # (S, H, W), each band in [0, 1] by its own min/max
    if stack.shape[0] != clean_shape[0]:
        raise ValueError(f"--{label} {path}: {stack.shape[0]} bands, but --clean {clean_path}: {clean_shape[0]} "
                         "bands; the stacks must hold the same bands")
    if stack.shape[1:] != clean_shape[1:]:
        raise ValueError(f"--{label} {path}: bands of {stack.shape[1]} x {stack.shape[2]} pixels, but --clean "
                         f"{clean_path}: {clean_shape[1]} x {clean_shape[2]}; the stacks must have the same size")
    return read_stack_values(path)[0], stack, info  # exact: never rebuilt from the float32 scaled bands


def _stack_model_values(model: ArrayDenoiser, noisy: str | os.PathLike, scaled: np.ndarray, info: Any,
                        clean_shape: tuple[int, ...]) -> np.ndarray:
    """File values ``(S, H, W) float64`` of what ``python -m xmodal.denoise`` writes for the noisy stack.

    A ``StackDenoiser`` runs its own ``denoise_file`` (the model's scaling of the noisy stack, ``sigma="auto"``)
    into a temporary folder, read back. Another model gets the noisy stack on its own per-band min/max scale
    (``scaled``); its output is mapped back to file units and rounded to the band's dtype for integer bands.
    """
    import tempfile

    from xmodal.denoise import StackDenoiser

    if isinstance(model, StackDenoiser):
        with tempfile.TemporaryDirectory(prefix="xmodal-evaluate-") as tmp:
            file, variable = split_variable(noisy)  # scene.mat:input -> scene.mat, its `input` denoised
            dst = Path(tmp) / file.name
            model.denoise_file(noisy, dst, sigma="auto")
            return _stack_values(f"{dst}:{variable}" if variable else dst, "model", noisy, clean_shape)[0]
    out = _denoised(model, scaled, str(noisy)).astype(np.float64)  # (S, H, W), own scale
    own_scale = np.asarray(info.scale, np.float64)[:, None, None]  # (S, 1, 1)
    values = out * own_scale + np.asarray(info.offset, np.float64)[:, None, None]  # (S, H, W) file units
    # as write_stack stores it: integer bands rounded and clipped to their dtype
    return np.stack([_quantise(v, np.dtype(d)).astype(np.float64) for v, d in zip(values, info.dtype)])


def _strict_json(x: Any) -> Any:
    """``x`` with the floats JSON cannot hold replaced: NaN (a mean over no file) by ``None``, an infinity (the PSNR
    of identical files) by ``"inf"`` / ``"-inf"``."""
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else "inf" if x > 0 else "-inf"
    if isinstance(x, dict):
        return {key: _strict_json(value) for key, value in x.items()}
    if isinstance(x, (list, tuple)):
        return [_strict_json(value) for value in x]
    return x


def _valid_pixels(values: np.ndarray, nodata: tuple[float | None, ...] | list[float | None]) -> np.ndarray | None:
    """``(H, W)`` bool: the pixels where every band of ``values`` ``(S, H, W)`` holds data (not its band's GDAL
    ``nodata`` value, not NaN where a band has one); ``None`` when that is every pixel."""
    valid = np.ones(values.shape[-2:], bool)
    for band, value in zip(values, nodata):
        if value is not None:
            valid &= ~np.isnan(band) if math.isnan(value) else band != value
    return None if valid.all() else valid


def _physical(info: Any) -> tuple[float, float]:
    """``(slope, intercept)`` from a stack's stored values to physical ones: a NIfTI volume's ``scl_slope`` and
    ``scl_inter``, else ``(1, 0)``."""
    c = info.container
    return (c.slope, c.inter) if c is not None and c.format == "nifti" else (1.0, 0.0)


def _physical_values(values: np.ndarray, info: Any) -> np.ndarray:
    """Stored values of a stack (file units) in physical units (:func:`_physical`)."""
    slope, inter = _physical(info)
    return values * slope + inter


def _stack_name(path: str | os.PathLike) -> str:
    p = split_variable(path)[0]
    return p.name if p.is_dir() else stack_stem(p)


def evaluate_stacks(clean: str | os.PathLike, noisy: str | os.PathLike, enhanced: str | os.PathLike | None = None,
                    denoiser: ArrayDenoiser | str | os.PathLike | None = None, *, device: str = "cpu",
                    scaling: Scaling = "band_minmax", metrics: tuple[str, ...] = STACK_METRICS,
                    data_range: float = 1.0, rgb_bands: str | tuple[int, ...] | list[int] | None = None,
                    figures_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Score a noisy and an enhanced (or model-denoised) multispectral stack against the clean one: PSNR, MPSNR
    (mean of the bands' PSNRs), SSIM (mean over bands), SAM and ERGAS over the whole stack, PSNR and SSIM per band.

    Scaling: for PSNR and SSIM, ``scaling`` (see :func:`xmodal.imageio.read_stack`) is computed on the CLEAN stack
    only, and the same per-band offset and scale are applied to the noisy and enhanced stacks (their file values are
    recovered and mapped with the clean offset/scale), so all three share one scale and a gain or offset error of
    the denoiser shows in the scores. SAM and ERGAS are computed on the file values themselves (in float64):
    subtracting a per-band offset would change the spectral angles and the band means ERGAS divides by. A NIfTI
    volume's file values are its physical ones (``scl_slope`` x stored value + ``scl_inter``), so volumes stored
    with different scalings compare as what they hold.

    Args:
        clean: the clean stack: a multi-band TIFF/npy file, a ``.mat`` array, an ENVI header, or a folder of
            single-band TIFFs.
        noisy: the noisy stack, same bands and size.
        enhanced: the enhanced stack; or ``None`` with ``denoiser``.
        denoiser: an object with ``denoise(stack (S, H, W) float) -> (S, H, W)`` and
            ``config.modality == "multispectral"``, or a run directory / weights file / bundled name for
            :func:`xmodal.load`. Only without ``enhanced``. The enhanced stack is what ``python -m xmodal.denoise``
            writes for the noisy one: a ``StackDenoiser`` runs its ``denoise_file`` (``sigma="auto"``); another
            object gets the noisy stack scaled by its OWN per-band min/max (never the clean one's) and its output is
            mapped back to file units, rounded and clipped to the dtype of integer bands.
        device: where a loaded model runs.
        scaling: ``"band_minmax"`` (each clean band spans [0, 1]), ``"stack_minmax"`` (the clean stack's min and max
            over all bands: one scale, as hyperspectral benchmarks normalise a cube and as a volume's slices share
            one), ``"band_percentile"`` (1st-99th percentile of
            each clean band) or ``"dtype"`` (uint8 / 255, uint16 / 65535, floats as stored).
        metrics: names from :data:`xmodal.metrics.STACK_METRICS`.
        data_range: peak-to-peak range for PSNR and SSIM on the scaled stacks.
        rgb_bands: 1-based ``(red, green, blue)`` band numbers of the false-colour composite in the figure, as a
            sequence or a ``"3,2,1"`` string; ``None`` = the three middle bands.
        figures_dir: write ``<stack name>.png`` (:func:`save_stack_comparison`) here (created).

    Returns:
        ``{"modality": "multispectral", "clean_dir", "noisy_dir", "enhanced", "metrics", "data_range",
        "ssim_implementation", "scaling": {"rule", "computed_on": "clean", "offset", "scale", "percentiles"},
        "band_names", "rgb_bands", "files": [{"name", "shape": [S, H, W], "noisy": {metric: value},
        "enhanced": {...}}], "bands": [{"name", "noisy": {"psnr", "ssim"}, "enhanced": {...}}], "mean",
        "failures", "errors": [], "figures", "warnings": []}`` (the layout of :func:`evaluate_images`, one file).

    Raises:
        FileNotFoundError: a stack file or folder does not exist.
        ImageReadError: a stack cannot be read (corrupt file, bands of different sizes in a folder...).
        ValueError: both or neither of ``enhanced`` and ``denoiser``, unknown metrics or ``scaling``, a bad
            ``data_range`` or ``rgb_bands``, stacks with different band counts or sizes, a model for another
            modality or returning another shape.
        TypeError: ``denoiser`` has no ``denoise`` method.
    """
    _check_source(enhanced, denoiser, "multispectral")
    _check_options(metrics, STACK_METRICS, data_range, 0)
    if scaling not in ("band_minmax", "band_percentile", "stack_minmax", "dtype"):
        raise ValueError(f"`scaling` (--scaling) must be 'band_minmax', 'band_percentile', 'stack_minmax' or 'dtype', "
                         f"got {scaling!r}")
    sources = {"clean": clean, "noisy": noisy, **({"enhanced": enhanced} if enhanced is not None else {})}
    for label, path in sources.items():
        if not split_variable(path)[0].exists():  # scene.mat:gt is scene.mat
            raise FileNotFoundError(f"{path}: stack file or folder not found (--{label})")
    model, model_name = (_resolve_denoiser(denoiser, "multispectral", device) if denoiser is not None
                         else (None, ""))

    ref, info = read_stack(clean, scaling)  # (S, H, W) on the clean scale
    offset, scale = np.asarray(info.offset, np.float64), np.asarray(info.scale, np.float64)  # (S,)
    rgb = _parse_rgb_bands(rgb_bands, ref.shape[0])
    # file values: what the files hold, in physical units where a NIfTI header scales its stored integers
    slope, inter = _physical(info)
    offset, scale = offset * slope + inter, scale * slope  # the clean scaling, in physical units
    stored, nodata = read_stack_values(clean)
    values = {"clean": stored * slope + inter}  # (S, H, W)
    mask = _valid_pixels(stored, nodata)  # (H, W): where every clean band holds data; None: everywhere
    noisy_values, noisy_scaled, noisy_info = _stack_values(noisy, "noisy", clean, ref.shape)
    values["noisy"] = _physical_values(noisy_values, noisy_info)
    if model is None:
        enhanced_values, _, enhanced_info = _stack_values(enhanced, "enhanced", clean, ref.shape)
    else:  # what python -m xmodal.denoise writes for the noisy stack (scaled by its own range, not the clean one)
        enhanced_values = _stack_model_values(model, noisy, noisy_scaled, noisy_info, ref.shape)
        enhanced_info = noisy_info  # written with the noisy stack's header
    values["enhanced"] = _physical_values(enhanced_values, enhanced_info)
    deg = {row: ((values[row] - offset[:, None, None]) / scale[:, None, None]).astype(np.float32)
           for row in _ROWS}  # (S, H, W) on the clean scale

    name = _stack_name(clean)
    acc, band_acc = MetricAccumulator(), MetricAccumulator()
    physical = tuple(m for m in metrics if m in ("sam", "ergas"))  # on file values: an offset changes them
    scaled_metrics = tuple(m for m in metrics if m not in physical)
    entry: dict[str, Any] = {"name": name, "shape": list(ref.shape)}
    if mask is not None:
        entry["scored_pixels"] = int(mask.sum())  # of H x W: the nodata pixels of the clean stack left out
    for row in _ROWS:  # PSNR/SSIM on the clean scale; SAM and ERGAS on the file values
        scores = image_metrics(acc, row, name, ref, deg[row], scaled_metrics, data_range, mask=mask)
        if physical:
            scores.update(image_metrics(acc, row, name, values["clean"], values[row], physical, mask=mask))
        entry[row] = {m: scores[m] for m in metrics if m in scores}
    band_metrics = tuple(m for m in metrics if m in IMAGE_METRICS)
    bands = [{"name": band,
              **{row: image_metrics(band_acc, row, f"{name} band {band}", ref[i], deg[row][i], band_metrics,
                                    data_range, mask=mask) for row in _ROWS}}
             for i, band in enumerate(info.band_names)]
    figures = []
    if figures_dir is not None:
        png = Path(figures_dir) / f"{name}.png"
        save_stack_comparison(png, deg["noisy"], deg["enhanced"], ref, rgb, entry["noisy"], entry["enhanced"],
                              band_names=info.band_names, data_range=data_range, name=name)
        figures.append(str(png))
    return {
        "modality": "multispectral",
        "clean_dir": str(clean),
        "noisy_dir": str(noisy),
        "enhanced": str(enhanced) if enhanced is not None else f"model {model_name}",
        "metrics": list(metrics),
        "data_range": data_range,
        "ssim_implementation": SSIM_IMPLEMENTATION,
        "scaling": {"rule": scaling, "computed_on": "clean", "offset": list(info.offset), "scale": list(info.scale),
                    "percentiles": list(info.percentiles) if info.percentiles is not None else None},
        "band_names": list(info.band_names),
        "rgb_bands": list(rgb),
        "files": [entry],
        "bands": bands,
        "mean": _means(acc, metrics),
        "mean_counts": _mean_counts(acc, metrics),
        "failures": [{"row": r, "metric": m, "file": f, "reason": why}
                     for r, m, f, why in acc.failures + band_acc.failures],
        "errors": [],
        "figures": figures,
        "warnings": [],
    }


# ---------------------------------------------------------------------------------------------- comparison figures


def _image_title(label: str, scores: dict[str, float] | None) -> str:
    if not scores:
        return label
    return f"{label}\n" + ", ".join(f"{_LABELS[m]} {v:.3f}{_UNITS.get(m, '')}" for m, v in scores.items())


def _check_triplet(noisy: np.ndarray, denoised: np.ndarray, clean: np.ndarray, axes: str) -> tuple[np.ndarray, ...]:
    arrays = tuple(np.asarray(x, dtype=np.float64) for x in (noisy, denoised, clean))
    for label, x in zip(("noisy", "denoised", "clean"), arrays):
        if x.ndim != 3 or 0 in x.shape:
            raise ValueError(f"Expected `{label}` of shape {axes}, got {tuple(x.shape)}")
    if not arrays[0].shape == arrays[1].shape == arrays[2].shape:
        raise ValueError(f"`noisy`, `denoised` and `clean` must have the same shape, got {arrays[0].shape}, "
                         f"{arrays[1].shape} and {arrays[2].shape}")
    return arrays


def _comparison_figure(path: str | os.PathLike, shown: tuple[np.ndarray, ...], residual: np.ndarray,
                       titles: tuple[str, ...], name: str, residual_label: str,
                       band_psnr: tuple[list[str], np.ndarray, np.ndarray] | None = None) -> Path:
    """Noisy / denoised / clean / residual panels (plus a per-band PSNR plot) written atomically as PNG.

    ``shown``: three ``(H, W)`` or ``(H, W, 3)`` arrays in [0, 1] (two without a clean one, and no ``band_psnr``);
    ``residual``: ``(H, W)``; ``titles``: one per panel.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg without touching pyplot's global backend
    from matplotlib.figure import Figure

    if band_psnr is None:  # three images and the residual, or two (no clean one) and the residual
        fig = Figure(figsize=(4 * (len(shown) + 1), 4.8), layout="constrained")
        axes = list(fig.subplots(1, len(shown) + 1))
    else:
        fig = Figure(figsize=(16, 8), layout="constrained")
        mosaic = fig.subplot_mosaic([["n", "d", "c", "r"], ["p", "p", "p", "p"]], height_ratios=[1.0, 0.7])
        axes = [mosaic[k] for k in "ndcr"]
    FigureCanvasAgg(fig)
    for ax, img, title in zip(axes, shown, titles):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    limit = float(np.abs(residual).max()) or 1e-6  # symmetric scale around 0
    res = axes[-1].imshow(residual, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    axes[-1].set_title(titles[-1], fontsize=9)
    axes[-1].set_axis_off()
    fig.colorbar(res, ax=axes[-1], shrink=0.8, label=residual_label)
    if band_psnr is not None:
        names, noisy_db, denoised_db = band_psnr
        ax = mosaic["p"]
        x = np.arange(1, len(names) + 1)
        ax.plot(x, np.where(np.isfinite(noisy_db), noisy_db, np.nan), "o-", label="noisy")
        ax.plot(x, np.where(np.isfinite(denoised_db), denoised_db, np.nan), "s-", label="denoised")
        ax.set_xticks(x, names, rotation=45 if len(names) > 8 else 0, fontsize=8)
        ax.set_ylabel("PSNR (dB)")
        ax.set_title("PSNR per band (against clean)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend()
    if name:
        fig.suptitle(name)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    return Path(path)


def save_image_comparison(path: str | os.PathLike, noisy: np.ndarray, denoised: np.ndarray,
                          clean: np.ndarray | None, noisy_scores: dict[str, float] | None = None,
                          denoised_scores: dict[str, float] | None = None, *, name: str = "",
                          data_range: float = 1.0) -> Path:
    """PNG (written atomically, matplotlib Agg) of noisy / denoised / clean / residual side by side (noisy /
    denoised / residual when ``clean`` is ``None``).

    Images with 3 or more channels are shown as RGB (first three channels), others as gray (first channel), all on
    ``[0, data_range]``. The residual ``noisy - denoised`` (mean over channels) uses a diverging colormap symmetric
    around 0 with a colorbar.

    Args:
        path: PNG to write (its folder is created).
        noisy, denoised, clean: ``(C, H, W)`` float images of one shape (``clean`` may be ``None``).
        noisy_scores, denoised_scores: metric name -> value (``psnr``, ``ssim``, ``noise``...), shown in the titles.
        name: title of the figure.
        data_range: the value shown as white.

    Returns:
        ``path``.

    Raises:
        ValueError: the images are not ``(C, H, W)`` or differ in shape.
    """
    arrays = _check_triplet(noisy, denoised, noisy if clean is None else clean, "(C, H, W)")
    images = arrays[:2] if clean is None else arrays

    def shown(x: np.ndarray) -> np.ndarray:
        x = np.clip(x / data_range, 0.0, 1.0)
        return x[:3].transpose(1, 2, 0) if x.shape[0] >= 3 else x[0]  # (C, H, W) -> (H, W, 3) or (H, W)

    C = images[0].shape[0]
    residual = (images[0] - images[1]).mean(axis=0)  # (C, H, W) -> (H, W)
    titles = (_image_title("noisy", noisy_scores), _image_title("denoised", denoised_scores),
              *(("clean (reference)",) if clean is not None else ()),
              "residual noisy - denoised" + (f"\n(mean of {C} channels)" if C > 1 else ""))
    return _comparison_figure(path, tuple(shown(x) for x in images), residual, titles, name, "noisy - denoised")


def save_stack_comparison(path: str | os.PathLike, noisy: np.ndarray, denoised: np.ndarray, clean: np.ndarray,
                          rgb_bands: str | tuple[int, ...] | list[int] | None = None,
                          noisy_scores: dict[str, float] | None = None,
                          denoised_scores: dict[str, float] | None = None, *,
                          band_names: tuple[str, ...] | list[str] | None = None, data_range: float = 1.0,
                          name: str = "") -> Path:
    """PNG (written atomically, matplotlib Agg) of a false-colour composite of three bands, noisy / denoised /
    clean / residual, above a plot of PSNR per band (noisy and denoised against clean).

    The composite is stretched per colour channel to the 2nd-98th percentiles of the CLEAN composite, the same
    stretch for all three panels. The residual is ``noisy - denoised`` averaged over the three bands, on a
    diverging colormap symmetric around 0 with a colorbar.

    Args:
        path: PNG to write (its folder is created).
        noisy, denoised, clean: ``(S, H, W)`` float stacks of one shape, on one scale.
        rgb_bands: 1-based ``(red, green, blue)`` band numbers (or ``"3,2,1"``); ``None`` = the middle three.
        noisy_scores, denoised_scores: metric name -> value, shown in the titles.
        band_names: ``S`` names for the PSNR plot (default ``1..S``).
        data_range: peak-to-peak range for the per-band PSNR.
        name: title of the figure.

    Returns:
        ``path``.

    Raises:
        ValueError: the stacks are not ``(S, H, W)`` or differ in shape; bad ``rgb_bands``; ``band_names`` not of
            length ``S``.
    """
    noisy, denoised, clean = _check_triplet(noisy, denoised, clean, "(S, H, W)")
    S = clean.shape[0]
    rgb = [b - 1 for b in _parse_rgb_bands(rgb_bands, S)]  # 0-based
    names = [str(n) for n in band_names] if band_names is not None else [str(i + 1) for i in range(S)]
    if len(names) != S:
        raise ValueError(f"`band_names` has {len(names)} names for a stack of {S} bands")
    lo = np.percentile(clean[rgb], 2.0, axis=(1, 2))[:, None, None]  # (3, 1, 1)
    hi = np.percentile(clean[rgb], 98.0, axis=(1, 2))[:, None, None]  # (3, 1, 1)
    span = np.where(hi > lo, hi - lo, 1.0)

    def shown(x: np.ndarray) -> np.ndarray:
        return np.clip((x[rgb] - lo) / span, 0.0, 1.0).transpose(1, 2, 0)  # (3, H, W) -> (H, W, 3)

    residual = (noisy - denoised)[rgb].mean(axis=0)  # (3, H, W) -> (H, W)
    band_psnr = (names, np.array([psnr_score(clean[i], noisy[i], data_range) for i in range(S)]),
                 np.array([psnr_score(clean[i], denoised[i], data_range) for i in range(S)]))
    label = "R,G,B = bands " + ",".join(str(b + 1) for b in rgb)
    titles = (_image_title(f"noisy ({label})", noisy_scores), _image_title("denoised", denoised_scores),
              "clean (reference)", "residual noisy - denoised\n(mean of the 3 bands)")
    return _comparison_figure(path, tuple(shown(x) for x in (noisy, denoised, clean)), residual, titles, name,
                              "noisy - denoised", band_psnr)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def format_table(result: dict[str, Any]) -> str:
    """Fixed-width table of :func:`evaluate_folders`', :func:`evaluate_images`' or :func:`evaluate_stacks`' result:
    one row per file plus the mean, noisy and enhanced side by side for each metric; a per-band table for stacks;
    the SSIM implementation, data range and scaling for images and stacks; then the failures and skipped files."""
    metrics = result["metrics"]
    n_files = len(result["files"])
    partial = {m: n for m, n in result.get("mean_counts", {}).items() if n != n_files}
    label = f"mean ({n_files})" + ("*" if partial else "")
    width = min(40, max([len(label)] + [len(f["name"]) for f in result["files"]]))
    if result.get("modality") == "image" and result.get("clean_dir") is None:  # no reference: noise levels
        lines = [f"{'file':<{width}}  {'noise (of 255)':^17s}  {'removed':>8s}",
                 f"{'':<{width}}  {'noisy':>8s} {'enh':>8s}  {'(of 255)':>8s}"]

        def row(first: str, noisy: dict, enhanced: dict) -> str:
            values = (noisy.get("noise"), enhanced.get("noise"), enhanced.get("removed"))
            a, b, c = (f"{v:8.2f}" if v is not None else f"{'-':>8s}" for v in values)
            return f"{first:<{width}}  {a} {b}  {c}"

        lines += [row(f["name"][:width], f["noisy"], f["enhanced"]) for f in result["files"]]
        lines.append(row(label, result["mean"]["noisy"], result["mean"]["enhanced"]))
        lines.append(f"no clean reference: noise = white Gaussian noise standard deviation estimated from each image "
                     f"alone ({result['noise_estimator']}); removed = standard deviation of noisy - enhanced")
        if result["errors"]:
            lines.append(f"skipped files ({len(result['errors'])}):")
            lines += [f"  {x['reason']}" for x in result["errors"]]
        return "\n".join(lines)

    def cells(noisy: dict, enhanced: dict, names: list[str]) -> str:
        out = ""
        for m in names:
            a, b = noisy.get(m), enhanced.get(m)
            out += "  " + (f"{a:7.3f}" if a is not None else f"{'fail':>7s}") + " " + \
                   (f"{b:7.3f}" if b is not None else f"{'fail':>7s}")
        return out

    def header(first: str, names: list[str], w: int) -> list[str]:
        return [f"{first:<{w}}" + "".join(f"  {_LABELS[m]:^15s}" for m in names),
                f"{'':<{w}}" + "".join(f"  {'noisy':>7s} {'enh':>7s}" for _ in names)]

    def cut(name: str, w: int) -> str:
        return name if len(name) <= w else name[: w - 3] + "..."

    lines = header("file", metrics, width)
    for f in result["files"]:
        lines.append(f"{cut(f['name'], width):<{width}}" + cells(f["noisy"], f["enhanced"], metrics))
    lines.append(f"{label:<{width}}" + cells(result["mean"]["noisy"], result["mean"]["enhanced"], metrics))
    if partial:
        lines.append("* each mean is over the files that every row scored: "
                     + ", ".join(f"{_LABELS[m]} over {n} of {n_files}" for m, n in partial.items())
                     + " (a file on which a metric failed in one row is left out of that metric's means)")
    if result.get("bands"):
        band_metrics = [m for m in metrics if m in IMAGE_METRICS]
        bw = min(40, max([4] + [len(b["name"]) for b in result["bands"]]))
        lines.append("")
        lines += header("band", band_metrics, bw)
        lines += [f"{cut(b['name'], bw):<{bw}}" + cells(b["noisy"], b["enhanced"], band_metrics)
                  for b in result["bands"]]
    if "ssim_implementation" in result:
        lines.append(f"PSNR/SSIM data range: {result['data_range']:g}; SSIM: {result['ssim_implementation']}")
    if "lpips_implementation" in result:
        lines.append(f"LPIPS: {result['lpips_implementation']}")
    if result.get("scaling"):
        sc = result["scaling"]
        lines.append(f"scaling: {sc['rule']} computed on the clean stack, applied to all stacks")
    if result["failures"]:
        lines.append(f"metric failures ({len(result['failures'])}):")
        lines += [f"  {x['file']} {x['row']} {x['metric']}: {x['reason']}" for x in result["failures"]]
    if result.get("warnings"):
        lines.append(f"warnings ({len(result['warnings'])}):")
        lines += [f"  {w}" for w in result["warnings"]]
    if result["errors"]:
        what = "unreadable files" if result.get("modality", "speech") == "speech" else \
            "skipped files (unreadable, shape mismatch or refused by the model)"
        lines.append(f"{what} ({len(result['errors'])}):")
        lines += [f"  {x['reason']}" for x in result["errors"]]
    return "\n".join(lines)


def detect_modality(clean: str | os.PathLike) -> Literal["speech", "image", "multispectral", "video"]:
    """The modality ``--modality auto`` picks from ``--clean``.

    A file is a multispectral stack; a folder is speech when it holds audio files
    (:data:`xmodal.io.AUDIO_EXTENSIONS`), image when it holds images (:data:`xmodal.imageio.IMAGE_EXTENSIONS`) and
    video when it holds only sub-folders (one clip of frames each) and video files. A folder of single-band TIFFs
    forming one stack is taken for images: pass ``--modality multispectral``; ``.npy`` clips and multi-page TIFF
    clips need ``--modality video``.

    Raises:
        FileNotFoundError: ``clean`` does not exist.
        ValueError: the folder holds both kinds of files, or neither.
    """
    path = Path(clean)
    if path.is_file() or is_container(path):  # scene.mat:gt names an array of scene.mat
        return "multispectral"
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: --clean file or folder not found")
    visible = [p for p in path.iterdir() if not p.name.startswith(".")]
    suffixes = {p.suffix.lower() for p in visible if p.is_file()}
    if visible and all(p.is_dir() or p.suffix.lower() in VIDEO_EXTENSIONS for p in visible):
        return "video"
    audio, images = bool(suffixes & set(AUDIO_EXTENSIONS)), bool(suffixes & set(IMAGE_EXTENSIONS))
    if audio and images:
        raise ValueError(f"{path}: holds both audio and image files; pass --modality speech or --modality image")
    if audio:
        return "speech"
    if images:
        return "image"
    raise ValueError(f"{path}: no audio ({', '.join(AUDIO_EXTENSIONS)}) or image ({', '.join(IMAGE_EXTENSIONS)}) "
                     "files in this folder; pass --modality")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=command_name("evaluate"),
        description="Score noisy and enhanced data against clean references: PESQ / STOI / ESTOI / SI-SDR for "
                    "speech, PSNR / SSIM (+ LPIPS with --lpips) for images, PSNR / MPSNR / SSIM / SAM / ERGAS for "
                    "multispectral stacks, PSNR / SSIM / temporal PSNR (+ LPIPS) for video clips. "
                    "Exit status: 0 ok (metric failures are listed, not fatal), 1 some files unreadable (or, for "
                    "images, of another shape), 2 usage error (unmatched names, missing folder, model not "
                    "loadable, stacks of different bands).")
    p.add_argument("--clean", metavar="DIR",
                   help="clean reference files (a folder; for multispectral one stack: a file or a folder of "
                        "single-band TIFFs; for video a folder of clips: frame folders or .npy files). Without it, "
                        "images (real noisy photos) get no-reference scores: the noise level estimated in the noisy "
                        "and enhanced images and the amount removed")
    p.add_argument("--noisy", required=True, metavar="DIR", help="noisy files (same names; images: same stems)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--enhanced", metavar="DIR", help="enhanced files (same names; images: same stems)")
    src.add_argument("--model", metavar="M", help="enhance the noisy files with this run directory, .safetensors "
                                                   "file or bundled name (speech default when --enhanced is not "
                                                   "given: the bundled speech model)")
    p.add_argument("--modality", choices=["auto", "speech", "image", "multispectral", "video"], default="auto",
                   help="auto (default): a --clean folder of audio files is speech, of images is image, of only "
                        "sub-folders is video, a --clean file is multispectral")
    p.add_argument("--json", metavar="FILE", help="write per-file and mean values and failures as JSON (strict: "
                                                  "a mean over no file is null, an infinite PSNR \"inf\")")
    p.add_argument("--figures", metavar="DIR", help="write figures here: spectrograms (speech) or noisy / denoised "
                                                     "/ clean / residual comparisons (images, stacks)")
    p.add_argument("--figure-files", type=int, default=3, metavar="N", help="how many files get a figure (default 3)")
    p.add_argument("--data-range", type=float, metavar="R",
                   help="images, stacks and video: peak-to-peak range for PSNR and SSIM (default 1)")
    p.add_argument("--scaling", choices=["band_minmax", "band_percentile", "stack_minmax", "dtype"],
                   help="multispectral: per-band scaling computed on the clean stack and applied to all three "
                        "(default band_minmax)")
    p.add_argument("--rgb-bands", metavar="R,G,B",
                   help="multispectral: 1-based bands of the false-colour figure, e.g. 3,2,1 (default: the middle "
                        "three)")
    p.add_argument("--lpips", nargs="?", const="", metavar="FILE",
                   help="images and video: score LPIPS too (lower is closer), from torchvision's ImageNet weights of "
                        "the backbone: FILE, or without FILE the file torchvision keeps in its hub cache "
                        "(alexnet-owt-7be5be79.pth). Nothing is downloaded")
    p.add_argument("--lpips-linear", metavar="FILE",
                   help="LPIPS linear layers (v0.1; default: from the installed `lpips` package)")
    p.add_argument("--lpips-net", choices=["alex", "vgg", "squeeze"],
                   help="LPIPS backbone (default alex, as in the paper)")
    p.add_argument("--poisson", type=number_or_auto("the photons at full scale"), default=None, metavar="PHOTONS",
                   help="with --model, images and video: photon-limited data, denoised as python -m xmodal.denoise "
                        "--poisson does (photons at full scale, or 'auto')")
    p.add_argument("--read-noise", type=number_or_auto("the read noise"), default=0.0, metavar="S",
                   help="with --poisson: the sensor's read noise (a fraction of full scale, or 'auto')")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the evaluation the parsed arguments ask for (see :func:`main`)."""
    if args.clean is None:
        return _evaluate_no_reference(args)
    modality = detect_modality(args.clean) if args.modality == "auto" else args.modality
    not_for = [opt for opt, value, allowed in (("--data-range", args.data_range, ("image", "multispectral", "video")),
                                               ("--scaling", args.scaling, ("multispectral",)),
                                               ("--rgb-bands", args.rgb_bands, ("multispectral",)),
                                               ("--lpips", args.lpips, ("image", "video")),
                                               ("--lpips-linear", args.lpips_linear, ("image", "video")),
                                               ("--lpips-net", args.lpips_net, ("image", "video")),
                                               ("--poisson", args.poisson, ("image", "video")))
               if value is not None and modality not in allowed]
    if not_for:
        raise ValueError(f"{', '.join(not_for)} do(es) not apply to {modality} evaluation")
    if args.lpips is None and (args.lpips_linear is not None or args.lpips_net is not None):
        raise ValueError("--lpips-linear and --lpips-net need --lpips")
    try:
        _photon_options(args.poisson, args.read_noise, args.enhanced)
    except ValueError as e:
        raise ValueError(str(e).replace("`poisson`", "--poisson").replace("`read_noise`", "--read-noise")
                         .replace("`denoiser`, --model", "--model").replace("`enhanced_dir`, --enhanced",
                                                                           "--enhanced")) from None
    data_range = 1.0 if args.data_range is None else args.data_range
    lpips = None if args.lpips is None else LPIPS(args.lpips or None, args.lpips_linear, args.lpips_net or "alex")
    if modality == "speech":
        return evaluate_folders(args.clean, args.noisy, args.enhanced, model=args.model, device=args.device,
                                figures_dir=args.figures, figure_files=args.figure_files, progress=not args.quiet)
    elif modality == "image":
        return evaluate_images(args.clean, args.noisy, args.enhanced, args.model, device=args.device,
                               data_range=data_range, figures_dir=args.figures, figure_files=args.figure_files,
                               progress=not args.quiet, lpips=lpips, poisson=args.poisson, read_noise=args.read_noise)
    elif modality == "multispectral":
        return evaluate_stacks(args.clean, args.noisy, args.enhanced, args.model, device=args.device,
                               scaling=args.scaling or "band_minmax", data_range=data_range,
                               rgb_bands=args.rgb_bands, figures_dir=args.figures if args.figure_files else None)
    elif modality == "video":
        return evaluate_videos(args.clean, args.noisy, args.enhanced, args.model, device=args.device,
                               data_range=data_range, figures_dir=args.figures, figure_files=args.figure_files,
                               progress=not args.quiet, lpips=lpips, poisson=args.poisson, read_noise=args.read_noise)
    else:  # unreachable: argparse checks the choices
        raise ValueError(f"unknown modality {modality!r}")


def _evaluate_no_reference(args: argparse.Namespace) -> dict[str, Any]:
    """No ``--clean``: images scored by their noise levels (:func:`evaluate_images_no_reference`)."""
    modality = args.modality
    if modality == "auto" and Path(args.noisy).exists():  # a missing folder: the image reader names it
        modality = detect_modality(args.noisy)
    elif modality == "auto":
        modality = "image"
    if modality != "image":
        raise ValueError(f"{modality} evaluation needs clean references (--clean); without them only images are "
                         "scored (the noise level estimated in the noisy and enhanced images)")
    given = [opt for opt, value in (("--data-range", args.data_range), ("--lpips", args.lpips),
                                    ("--lpips-linear", args.lpips_linear), ("--lpips-net", args.lpips_net),
                                    ("--scaling", args.scaling), ("--rgb-bands", args.rgb_bands),
                                    ("--poisson", args.poisson),
                                    ("--read-noise", None if args.read_noise == 0 else args.read_noise))
             if value is not None]
    if given:
        raise ValueError(f"{', '.join(given)} need(s) --clean: without clean references images are scored by their "
                         "estimated noise levels only")
    return evaluate_images_no_reference(args.noisy, args.enhanced, args.model, device=args.device,
                                        figures_dir=args.figures, figure_files=args.figure_files,
                                        progress=not args.quiet)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0 ok, 1 unreadable files, 2 usage error, 130 Ctrl-C, 143
    SIGTERM)."""
    return run_command(_main, argv, "no report written (figures finished so far are kept, whole)")


def _main(argv: list[str] | None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse exits on --help (0) and on usage errors (2)
        return int(e.code or 0)
    try:
        result = _evaluate(args)
    except ImageReadError as e:  # a stack that cannot be read
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:  # unmatched names, missing folders, model not loadable
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json:
        text = json.dumps(_strict_json(result), indent=2, allow_nan=False) + "\n"
        try:
            atomic_write(args.json, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        except OSError as e:  # a folder that does not exist, no permission, a file where a folder should be
            print(f"error: {args.json}: {e.strerror or e}", file=sys.stderr)
            return 1
    for err in result["errors"]:
        print(f"error: {err['reason']}", file=sys.stderr)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
