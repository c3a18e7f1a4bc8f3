"""Score denoising on paired folders: PESQ, STOI, ESTOI and SI-SDR of the noisy and the enhanced files against the
clean ones, per file and on average, with spectrogram figures.

    python -m xmodal.evaluate --clean DIR --noisy DIR [--enhanced DIR | --model M] [--json FILE] [--figures DIR]
                              [--figure-files N]

Files are matched by name across the folders. Each file is scored at the clean file's rate (noisy and enhanced files at
another rate are resampled to it); multi-channel files are averaged to mono; files of different lengths are scored
on their common part (with a warning); PESQ follows :mod:`xmodal.metrics`
(wide-band at 16 kHz, narrow-band at 8 kHz, other rates resampled to 16 kHz). A metric that fails on a clip (silence,
too short) is listed, never fatal. Without ``--enhanced`` the noisy files are enhanced in memory by ``--model``
(default: the bundled speech model).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xmodal._fs import atomic_write
from xmodal.io import AudioReadError, list_audio_files, read_audio, resample
from xmodal.metrics import SPEECH_METRICS, MetricAccumulator, speech_metrics

if TYPE_CHECKING:
    from xmodal.denoise import Denoiser

__all__ = ["evaluate_folders", "format_table", "main", "match_files", "save_spectrogram_figure"]

_LABELS = {"pesq": "PESQ", "stoi": "STOI", "estoi": "ESTOI", "si_sdr": "SI-SDR"}
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
    fig.savefig(path, dpi=100)
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
        value}, "enhanced": {...}}], "mean": {"noisy": {...}, "enhanced": {...}}, "failures": [{"row", "metric",
        "file", "reason"}], "errors": [{"file", "reason"}], "figures": [paths], "warnings": [str]}``. A metric
        that failed is absent from the file's scores (``None`` in the mean when it failed everywhere); ``errors``
        lists unreadable files; ``warnings`` files whose lengths differ (scored on their common part).

    Raises:
        ValueError: both ``enhanced_dir`` and ``model`` given, unknown metrics, a negative ``figure_files``, or
            unmatched file names.
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
        from xmodal.denoise import Denoiser, load

        denoiser = model if isinstance(model, Denoiser) else load(model, device)
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
        "failures": [{"row": r, "metric": m, "file": f, "reason": why} for r, m, f, why in acc.failures],
        "errors": errors,
        "figures": figures,
        "warnings": warnings,
    }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def format_table(result: dict[str, Any]) -> str:
    """Fixed-width table of :func:`evaluate_folders`'s result: one row per file plus the mean, noisy and enhanced
    side by side for each metric; then the failures and unreadable files."""
    metrics = result["metrics"]
    label = f"mean ({len(result['files'])})"
    width = min(40, max([len(label)] + [len(f["name"]) for f in result["files"]]))
    head1 = f"{'file':<{width}}" + "".join(f"  {_LABELS[m]:^15s}" for m in metrics)
    head2 = f"{'':<{width}}" + "".join(f"  {'noisy':>7s} {'enh':>7s}" for _ in metrics)

    def cells(noisy: dict, enhanced: dict) -> str:
        out = ""
        for m in metrics:
            a, b = noisy.get(m), enhanced.get(m)
            out += "  " + (f"{a:7.3f}" if a is not None else f"{'fail':>7s}") + " " + \
                   (f"{b:7.3f}" if b is not None else f"{'fail':>7s}")
        return out

    lines = [head1, head2]
    for f in result["files"]:
        name = f["name"] if len(f["name"]) <= width else f["name"][: width - 3] + "..."
        lines.append(f"{name:<{width}}" + cells(f["noisy"], f["enhanced"]))
    lines.append(f"{label:<{width}}" + cells(result["mean"]["noisy"], result["mean"]["enhanced"]))
    if result["failures"]:
        lines.append(f"metric failures ({len(result['failures'])}):")
        lines += [f"  {x['file']} {x['row']} {x['metric']}: {x['reason']}" for x in result["failures"]]
    if result.get("warnings"):
        lines.append(f"warnings ({len(result['warnings'])}):")
        lines += [f"  {w}" for w in result["warnings"]]
    if result["errors"]:
        lines.append(f"unreadable files ({len(result['errors'])}):")
        lines += [f"  {x['reason']}" for x in result["errors"]]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m xmodal.evaluate",
        description="PESQ / STOI / ESTOI / SI-SDR of noisy and enhanced files against clean ones, matched by name. "
                    "Exit status: 0 ok (metric failures are listed, not fatal), 1 some files unreadable, 2 usage "
                    "error (unmatched names, missing folder, model not loadable).")
    p.add_argument("--clean", required=True, metavar="DIR", help="clean reference files")
    p.add_argument("--noisy", required=True, metavar="DIR", help="noisy files (same names)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--enhanced", metavar="DIR", help="enhanced files (same names)")
    src.add_argument("--model", metavar="M", help="enhance the noisy files with this run directory, .safetensors "
                                                   "file or bundled name (default when --enhanced is not given: "
                                                   "the bundled speech model)")
    p.add_argument("--json", metavar="FILE", help="write per-file and mean values and failures as JSON")
    p.add_argument("--figures", metavar="DIR", help="write spectrogram PNGs (noisy / enhanced / clean) here")
    p.add_argument("--figure-files", type=int, default=3, metavar="N", help="how many files get a figure (default 3)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0 ok, 1 unreadable files, 2 usage error)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse exits on --help (0) and on usage errors (2)
        return int(e.code or 0)
    try:
        result = evaluate_folders(args.clean, args.noisy, args.enhanced, model=args.model, device=args.device,
                                  figures_dir=args.figures, figure_files=args.figure_files, progress=not args.quiet)
    except (ValueError, OSError) as e:  # unmatched names, missing folders, model not loadable
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json:
        text = json.dumps(result, indent=2) + "\n"
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    for err in result["errors"]:
        print(f"error: {err['reason']}", file=sys.stderr)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
