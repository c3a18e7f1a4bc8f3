"""Denoising for users: :func:`load` a model, then ``denoise`` arrays or ``denoise_file`` files; or the batch command
line::

    python -m xmodal.denoise noisy/*.wav talk.flac scans/ cube.tif -o denoised/ [--model RUN_DIR] [--mix 0.9]
    python -m xmodal.denoise scene_bands/ -o denoised/ --modality multispectral
    python -m xmodal.denoise clip_frames/ clip.npy -o denoised/ --modality video

:func:`load` returns the class of the model's modality: :class:`Denoiser` (speech: any length, rate and channel
count), :class:`ImageDenoiser` (images of any size, tiled; bit depth and format of files kept),
:class:`StackDenoiser` (multispectral stacks of any band count: multi-band TIFF/.npy files or folders of single-band
TIFFs) or :class:`VideoDenoiser` (clips of any length: folders of frames or ``(T, H, W[, C])`` .npy files, streamed
frame by frame with their temporal neighbours). Without ``--model`` the command line picks the modality and a bundled
model per file (see ``--help``).

Images and stacks go through :func:`xmodal.tiling.tiled_apply` (overlapping tiles aligned to the U-Net's grid,
blended smoothly), so memory is the output plus one tile; stacks are also cut into groups of bands.

How a speech signal goes through the network:

* **Levels.** One RMS-normalisation scale per item, computed over the whole signal and all its channels, is reused for
  every chunk (an :class:`~xmodal.adapters.audio.AudioContext` passed to ``encode``), so chunking never changes levels
  and the channels of a stereo file keep their balance. Channels are processed together as a batch.
* **Rates.** Each chunk is resampled to the model's rate, denoised and resampled back (with its context margins, so
  the filters' edges fall in the discarded part).
* **Chunks.** Long signals are cut into chunks of ``chunk_seconds``. Each chunk is extended by a linear cross-fade
  zone and by a context margin of at least one second and at least the network's receptive field on each side; chunk
  starts are aligned so that, at the model rate, they fall on a multiple of ``hop_length * size_multiple`` samples
  (STFT frames and the U-Net's down-sampling grid line up with those of the whole signal) and, across a resampling,
  on a multiple of the resampler's period. Chunked output therefore equals unchunked output up to float rounding.
* **Files** are read block by block (two passes: one for the level, one to denoise) and written incrementally to a
  temp file in the destination folder that is renamed at the end: memory stays bounded for hour-long files and no
  partial output is ever left behind.

Example:
    >>> import xmodal
    >>> denoiser = xmodal.load("runs/speech")  # doctest: +SKIP
    >>> clean = denoiser.denoise(noisy, 44100, mix=0.9)  # doctest: +SKIP
    >>> denoiser.denoise_file("talk.wav", "talk_clean.wav")  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import functools
import glob
import math
import numbers
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, get_args

import numpy as np
import torch
from torch import nn

from xmodal._cli import command_name, number_or_auto, run_command
from xmodal.adapters.audio import AudioContext
from xmodal.config import Config
from xmodal.io import AudioReadError, list_audio_files, resample
from xmodal.noise import can_estimate_sigma, estimate_photon_noise, estimate_poisson_gaussian, estimate_sigma
from xmodal.stackio import (CONTAINER_EXTENSIONS, NIFTI_EXTENSIONS, check_container, envi_data_path, is_container,
                             split_variable, stack_stem, stack_suffix)
from xmodal.tiling import DEFAULT_OVERLAP, DEFAULT_TILE, check_tiling, subsampled_apply, tiled_apply
from xmodal.vst import anscombe, as_number, check_photon_args, check_photon_noise, inverse_anscombe

if TYPE_CHECKING:
    from xmodal.io import AvAudioSource
    from xmodal.streaming import SpeechStream
    from xmodal.videoio import AudioProcess, StreamedAudio

__all__ = ["DEFAULT_CHUNK_SECONDS", "DEFAULT_CONTEXT_SECONDS", "Chunk", "Denoiser", "ImageDenoiser", "StackDenoiser",
           "VideoDenoiser", "file_value_range", "load", "main", "plan_chunks", "plausible_unit_range"]

DEFAULT_CHUNK_SECONDS = 20.0
DEFAULT_CONTEXT_SECONDS = 1.0
_READ_BLOCK = 1 << 18  # frames per read in the level pass
_TRUNCATED = re.compile(r"^\s*(data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


# ----------------------------------------------------------------------------------------------------------------
# Argument checks


def _check_options(mix: float, atten_limit_db: float | None, chunk_seconds: float,
                   context_seconds: float | None) -> None:
    """Raise ``ValueError`` naming the argument when an option is out of range."""
    if not isinstance(mix, numbers.Real) or not 0.0 <= mix <= 1.0:
        raise ValueError(f"`mix` must be in [0, 1] (0 = input, 1 = fully denoised), got {mix!r}")
    if atten_limit_db is not None and (not isinstance(atten_limit_db, numbers.Real) or not atten_limit_db >= 0.0):
        raise ValueError(f"`atten_limit_db` must be a non-negative number of dB or None, got {atten_limit_db!r}")
    if not isinstance(chunk_seconds, numbers.Real) or not 0.0 < chunk_seconds < math.inf:
        raise ValueError(f"`chunk_seconds` must be a positive number of seconds, got {chunk_seconds!r}")
    if context_seconds is not None and (not isinstance(context_seconds, numbers.Real)
                                        or not 0.0 <= context_seconds < math.inf):
        raise ValueError(f"`context_seconds` must be a non-negative number of seconds or None, got {context_seconds!r}")


def _check_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, (bool, np.bool_)) or not isinstance(sample_rate, (int, np.integer, float)) \
            or not sample_rate > 0 or int(sample_rate) != sample_rate:
        raise ValueError(f"`sample_rate` must be a positive integer (Hz), got {sample_rate!r}")
    if not 1000 <= sample_rate <= 768000:  # 1 Hz would resample a second of audio to hours of it
        raise ValueError(f"`sample_rate` must be an audio rate, 1000 to 768000 Hz, got {sample_rate!r}")
    return int(sample_rate)


def _fit(x: torch.Tensor, length: int) -> torch.Tensor:
    """``x`` cut or zero-padded to ``length`` samples along the last axis."""
    x = x[..., :length]
    return torch.nn.functional.pad(x, (0, length - x.shape[-1])) if x.shape[-1] < length else x


def top_band_gains(noisy: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    """Gains in [0, 1] for the content above a speech model's band, one per STFT frame: the amplitude ratio of the
    network's estimate to its input over the top octave of the model's band (4-8 kHz at 16 kHz). ``noisy``,
    ``estimate``: ``(..., F, N)`` complex spectra (any common scale); returns ``(..., N)``. Speech above the band
    (fricatives, breath, air) comes with the speech below it; noise there is suppressed as much as the network
    suppresses it just below."""
    top = noisy.shape[-2] // 2

    def power(spec: torch.Tensor) -> torch.Tensor:  # (..., F, N) complex -> (..., N)
        return torch.view_as_real(spec[..., top:, :]).square().sum((-3, -1))

    pn, pe = power(noisy), power(estimate)
    return (pe / (pn + 1e-12 * pn.amax(-1, keepdim=True) + 1e-30)).sqrt().clamp(max=1.0)


def gains_at(gains: np.ndarray, first: int, count: int, frames_per_sample: float, frame0: int = 0) -> np.ndarray:
    """Frame gains ``(..., K)`` (frame ``k`` centred on model sample ``k hop``; ``gains[..., 0]`` is frame
    ``frame0``) at output samples ``first .. first + count - 1``, whose times in frames are ``n *
    frames_per_sample``: linear between frame centres, the last frame's gain after it. Returns ``(..., count)``
    float32."""
    pos = np.arange(first, first + count, dtype=np.float64) * frames_per_sample - frame0
    frames = np.arange(gains.shape[-1], dtype=np.float64)
    rows = [np.interp(pos, frames, row) for row in gains.reshape(-1, gains.shape[-1])]
    return np.stack(rows).reshape(*gains.shape[:-1], count).astype(np.float32)


def _limit_gain(atten_limit_db: float | None) -> float:
    """Share of the removed signal mixed back in so that suppression is at most ``atten_limit_db`` dB."""
    return 0.0 if atten_limit_db is None else 10.0 ** (-atten_limit_db / 20.0)


# ----------------------------------------------------------------------------------------------------------------
# Chunk planning


@dataclass(frozen=True)
class Chunk:
    """One piece of a long signal, in samples of the input.

    The network sees ``[start, stop)``; the output keeps ``[keep_start, keep_stop)``, fading in linearly over its first
    ``fade_in`` samples and out over its last ``fade_out`` samples (adjacent fades overlap exactly and sum to 1).
    """

    start: int
    stop: int
    keep_start: int
    keep_stop: int
    fade_in: int
    fade_out: int


def plan_chunks(length: int, core: int, context: int, half_fade: int, align: int = 1) -> list[Chunk]:
    """Cut ``length`` samples into chunks of about ``core`` samples.

    Args:
        length: samples in the signal.
        core: samples between chunk boundaries (at least ``2 * half_fade``; a last piece shorter than that is merged).
        context: samples the network sees beyond each kept region (discarded afterwards); not at the signal ends.
        half_fade: the cross-fade spans ``2 * half_fade`` samples centred on each boundary.
        align: chunk starts are rounded down to a multiple of this.

    Returns:
        The chunks, in order. One chunk covering everything when ``length <= core``.

    Raises:
        ValueError: a non-positive length, core or alignment, a negative context or fade, or a core shorter than the
            cross-fade.
    """
    if length < 1 or core < 1 or align < 1 or context < 0 or half_fade < 0:
        raise ValueError(f"plan_chunks: expected length, core, align >= 1 and context, half_fade >= 0, got "
                         f"length={length}, core={core}, context={context}, half_fade={half_fade}, align={align}")
    if core < 2 * half_fade:
        raise ValueError(f"plan_chunks: `core` ({core}) must be at least the cross-fade length {2 * half_fade}")
    n = max(1, math.ceil(length / core))
    if n > 1 and length - (n - 1) * core < 2 * half_fade:
        n -= 1  # the last piece would be shorter than the fade: merge it into the previous one
    cuts = [k * core for k in range(n)] + [length]
    chunks = []
    for k in range(n):
        keep_start = cuts[k] - half_fade if k > 0 else 0
        keep_stop = cuts[k + 1] + half_fade if k < n - 1 else length
        start = max(0, (keep_start - context) // align * align)
        chunks.append(Chunk(start=start, stop=min(length, keep_stop + context), keep_start=keep_start,
                            keep_stop=keep_stop, fade_in=2 * half_fade if k > 0 else 0,
                            fade_out=2 * half_fade if k < n - 1 else 0))
    return chunks


def _receptive_field_frames(model: nn.Module, modality: str, channels: int, device: torch.device) -> int:
    """One-sided receptive field of ``model`` along the last (time) axis, in frames, measured with input gradients.

    The gradient of a few output frames with respect to a random input is non-zero exactly where the input can
    influence them. The input is widened until that support no longer touches its edges (capped at 16384 frames).
    """
    known = getattr(model, "receptive_field_frames", None)  # a network that cannot be differentiated (ONNX Runtime)
    if known is not None:
        return int(known)
    m = int(getattr(getattr(model, "trunk", None), "size_multiple", 1))
    gen = torch.Generator().manual_seed(0)
    n = max(64, 16 * m)
    while True:
        x = torch.randn(1, channels, 2 * m, n, generator=gen).to(device)  # (1, C_m, F, N)
        c = n // 2 // m * m
        with torch.inference_mode(False), torch.enable_grad():  # also when called inside inference_mode
            x = x.clone().requires_grad_(True)
            y = model(x, modality)[..., c:c + m]  # (1, C_m, F, m): one cell of the down-sampling grid
            (g,) = torch.autograd.grad((y * torch.randn(y.shape, generator=gen).to(device)).sum(), x)
        support = g.abs().sum(dim=(0, 1, 2)).nonzero().flatten()  # (1, C_m, F, N) -> (N,) -> indices
        lo, hi = int(support.min()), int(support.max())
        if (lo > 0 and hi < n - 1) or n >= 16384:
            return max(c - lo, hi - (c + m - 1), 0)
        n *= 2


def _setup(obj: Any, model: nn.Module, config: Config, device: str | torch.device, name: str, modality: str) -> None:
    """Common constructor of the denoisers: check the device and the model's modality, move the model, build the
    adapter; sets ``device``, ``config``, ``modality``, ``name``, ``model``, ``adapter`` and ``size_multiple``."""
    from xmodal.modalities import make_adapter

    try:
        obj.device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"`device` must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if obj.device.type not in ("cpu", "cuda"):  # mps, meta, xpu...: not what xmodal runs or tests on
        raise ValueError(f"`device` must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if obj.device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`device` is {device!r} but CUDA is not available on this machine")
    label = f"the model{' ' + repr(name) if name else ''}"
    if config.joint_run:  # a jointly trained model: this class's modality of it
        if modality not in config.modalities:
            raise ValueError(f"{label} was trained jointly on {' and '.join(config.modalities)}; "
                             f"{type(obj).__name__} takes {modality} models")
        config = config.for_modality(modality)
    if config.modality != modality:
        raise ValueError(f"{label} is a{'n' if config.modality[0] in 'aeiou' else ''} {config.modality} model "
                         f"(config.modality); {type(obj).__name__} takes {modality} models: use xmodal.load, which "
                         "picks the right class")
    if config.modality not in getattr(model, "modalities", [config.modality]):
        raise ValueError(f"{label} has no stem/head for modality {config.modality!r}")
    obj.config = config
    obj.modality = config.modality
    obj.name = name
    obj.model = model.to(obj.device).eval()
    obj.adapter = make_adapter(config.modality, config).to(obj.device)
    obj.size_multiple = int(getattr(getattr(model, "trunk", None), "size_multiple", 1))


# noise above a model's training range is brought to this fraction of the largest level it was trained on (Set12,
# gray, sigma 50-75: 0.9 is 0.01-0.03 dB better than 1.0); stacks to the full level (SAM at 0.1 to 0.15: 0.07-0.10
# degree better than 0.9, PSNR the same)
_RANGE_TARGET = 0.9
_STACK_RANGE_TARGET = 1.0
# blind models estimate the level only to compare it with their range: a quicker estimate (within about 2/255)
_RANGE_CHECK_PATCHES = 16_384


def _trained_max_sigma(config: Config) -> float | None:
    """The largest white Gaussian noise level among ``config``'s training noise models (``image.noise`` and
    ``image.noise_mix``), in [0, 1] units; ``None`` when there is none (e.g. camera noise only)."""
    levels = [float(spec.sigma[1]) for spec in (config.image.noise, *config.image.noise_mix) if spec.kind == "gaussian"]
    return max(levels) if levels and max(levels) > 0 else None


def _blind_levels(sigma: Sigma, x4: torch.Tensor, span: float, max_sigma: float | None) -> torch.Tensor | None:
    """A blind model's ``sigma`` (checked) -> the ``(B,)`` noise levels of the ``(B, C, H, W)`` images ``x4`` in
    [0, 1] units (``span`` converts a float given in the user's units), or ``None`` when there is nothing to compare
    (``sigma`` is ``None``, the model has no range, or images too small to estimate)."""
    if sigma is None:
        return None
    if isinstance(sigma, (np.ndarray, torch.Tensor)) and sigma.ndim == 0:
        sigma = float(sigma)  # a number held in an array
    if isinstance(sigma, str):
        if sigma != "auto":
            raise ValueError(f"`sigma` must be a float or 'auto' (None: the image as it is), got {sigma!r}")
    elif not isinstance(sigma, numbers.Real) or isinstance(sigma, bool):
        raise TypeError(f"Expected `sigma` to be a float or 'auto' for this blind model (per-pixel maps are for "
                        f"non-blind models), got {type(sigma).__name__}")
    else:
        _check_level(float(sigma), span)
    if max_sigma is None:
        return None
    if not isinstance(sigma, str):
        return torch.full((x4.shape[0],), float(sigma) / span)
    if not can_estimate_sigma(*x4.shape[-2:]):
        return None  # too small to tell: taken as it is
    return torch.tensor([float(np.sqrt(np.mean(estimate_sigma(x, max_patches=_RANGE_CHECK_PATCHES) ** 2)))
                         for x in x4])


@dataclass(frozen=True)
class _PhotonNoise:
    """Checked ``poisson`` / ``read_noise`` of :meth:`ImageDenoiser.denoise`, and the mapping of the images'
    Anscombe transform to [0, 1]: ``(f - lo) / span``, its noise level ``1 / span``."""

    params: tuple[float, float]  # (photons at full scale, read noise)
    range: tuple[float, float]  # (lo, span)


def _photon_noise(poisson: object, read_noise: object, sigma: Sigma, x4: torch.Tensor) -> _PhotonNoise | None:
    """``poisson`` (a number, ``"auto"``: estimated from the ``(B, C, H, W)`` images ``x4`` in [0, 1] units, or
    ``None``) and ``read_noise`` (a number or ``"auto"``), checked; the transform is mapped to [0, 1] by its own 0.1
    and 99.9 percentiles (of every image and channel), so that dim data (a few photons in a 16-bit file) fills the
    model's range instead of a corner of it, where a model's small errors near black would be magnified by the whole
    scale."""
    check_photon_args(poisson, read_noise, sigma)
    if poisson is None:
        return None
    pooled = x4.reshape(-1, *x4.shape[-2:])  # the images and channels pooled: one sensor
    auto_photons, auto_read = isinstance(poisson, str), isinstance(read_noise, str)
    if auto_photons and not auto_read and as_number("read_noise", read_noise) == 0:
        poisson = estimate_photon_noise(pooled)
    elif auto_photons or auto_read:
        poisson, read_noise = estimate_poisson_gaussian(pooled, photons=None if auto_photons else poisson,
                                                        read_noise=None if auto_read else read_noise)
    peak, rn = check_photon_noise(poisson, read_noise)
    lo, hi = _robust_range(anscombe(x4, peak, rn))
    if not hi - lo > 1.0:  # less than the noise's own level (1): nothing but noise, or nearly no photons
        raise ValueError(f"`poisson` {peak:g}: the image's Anscombe transform spans {hi - lo:.3g} (0.1-99.9 "
                         "percentiles), under its noise level of 1: too few photons at that count to denoise, or the "
                         "photons at full scale are far too low (raw counts in float files: poisson=1)")
    return _PhotonNoise((peak, rn), (lo, hi - lo))


def _check_level(sigma: float, span: float) -> None:
    """``ValueError`` for a noise level that is negative, not finite, or above the whole range of the data (``span``
    in the level's units: a level in the wrong units, such as 25 meant as 25/255)."""
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"`sigma` must be finite and >= 0 (a noise standard deviation), got {sigma}")
    if sigma > span:
        raise ValueError(f"`sigma` ({sigma:g}) is above the whole range of the data ({span:g} in its units): it is a "
                         f"standard deviation in the image's units (0.098 for 25/255 in [0, 1] data)")


def _range_gains(levels: torch.Tensor | None, max_sigma: float | None, shape: tuple[int, ...],
                 target: float = _RANGE_TARGET) -> torch.Tensor | None:
    """Noise levels -> the contrast gains (at most 1, as ``shape``) that bring those above ``target * max_sigma`` to
    it; ``None`` when there are no levels or no gain below 1."""
    if levels is None or max_sigma is None:
        return None
    gains = (target * max_sigma / levels.clamp_min(1e-12)).clamp(max=1.0).float()
    return None if bool((gains == 1.0).all()) else gains.view(shape)


def _lower_contrast(x: torch.Tensor, gains: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` at contrast ``gains`` about its mean over ``dims`` (a new tensor; items whose gain is 1 get pivot 0 and
    stay exact) and that pivot, for :func:`_restore_contrast`."""
    gains = gains.to(x.device)
    pivot = x.mean(dim=dims, keepdim=True).where(gains != 1.0, 0.0)
    return x.sub(pivot).mul_(gains).add_(pivot), pivot


def _restore_contrast(y: torch.Tensor, gains: torch.Tensor, pivot: torch.Tensor) -> torch.Tensor:
    """Undo :func:`_lower_contrast` on the output ``y``, in place."""
    return y.sub_(pivot.to(y.device)).div_(gains.to(y.device)).add_(pivot.to(y.device))


def _check_precision(precision: str, device: torch.device) -> str:
    """``fp32``, ``bf16`` or ``auto`` (bf16 where the hardware computes it natively: CUDA with bf16 support, or a
    CPU with AVX-512 BF16 / AMX; else fp32) -> ``fp32`` or ``bf16``."""
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        native = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        return "bf16" if native is not None and native() else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"`precision` must be 'fp32', 'bf16' or 'auto', got {precision!r}")
    return precision


def _image_forward(obj: Any, feats: torch.Tensor) -> torch.Tensor:
    """The network on ``feats`` in ``obj.precision`` (channels-last memory: faster convolutions on CPU); fp32 out."""
    from xmodal.inference import autocast_for

    with autocast_for(obj.device, obj.precision):
        return obj.model(feats.contiguous(memory_format=torch.channels_last), obj.modality).float()


# ----------------------------------------------------------------------------------------------------------------
# The denoiser


class Denoiser:
    """A trained speech model ready to denoise arrays and files.

    Build it with :func:`load`. ``mix`` and ``atten_limit_db`` combine the input ``x`` and the network's estimate
    ``e`` sample by sample (at the input's rate)::

        g   = 10 ** (-atten_limit_db / 20)      (0 when atten_limit_db is None)
        y   = e + g * (x - e)                   attenuation limit: what was removed, x - e, comes back at gain g,
                                                so noise is suppressed by at most atten_limit_db dB (DeepFilterNet's
                                                rule; 0 dB gives back the input)
        out = x + mix * (y - x)                 dry/wet: 0 = the input, 1 = y

    Args:
        model: the network (``DenoisingNet``) in eval mode.
        config: its resolved config (``config.audio`` defines the STFT, the rate and the normalisation).
        device: where the network runs (``cpu`` or ``cuda``).
        name: what to call the model in messages.

    Raises:
        ValueError: not a speech model, no stem/head for ``config.modality``, or the device is not available.
    """

    def __init__(self, model: nn.Module, config: Config, device: str | torch.device = "cpu", name: str = "") -> None:
        _setup(self, model, config, device, name, "speech")
        self.sample_rate = int(config.audio.sample_rate)
        self._rf_samples: int | None = None

    def __repr__(self) -> str:
        return f"Denoiser({self.name or 'model'!s}, sample_rate={self.sample_rate}, device={self.device})"

    @property
    def receptive_field(self) -> int:
        """One-sided receptive field in samples at the model's rate (network frames x hop + the STFT window, and the
        frames a running level averages, ``audio.running_rms_seconds``)."""
        if self._rf_samples is None:
            frames = _receptive_field_frames(self.model, self.modality, self.adapter.channels, self.device)
            level = max(getattr(self.adapter, "level_frames", 0) - 1, 0)  # a running level reaches further back
            self._rf_samples = (frames + level) * self.config.audio.hop_length + self.config.audio.n_fft
        return self._rf_samples

    # -- geometry ---------------------------------------------------------------------------------------------

    def chunk_plan(self, length: int, sample_rate: int, chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
                   context_seconds: float | None = None) -> list[Chunk]:
        """How a signal of ``length`` samples at ``sample_rate`` is cut (see :func:`plan_chunks`).

        ``context_seconds=None`` takes the larger of :data:`DEFAULT_CONTEXT_SECONDS` and the receptive field (plus
        the resamplers' filter length), which makes chunked output equal to unchunked output. A smaller explicit
        context is faster but only approximately equal near chunk boundaries.
        """
        _check_options(1.0, None, chunk_seconds, context_seconds)
        sample_rate = _check_rate(sample_rate)
        g = math.gcd(sample_rate, self.sample_rate)
        orig, new = sample_rate // g, self.sample_rate // g  # the resampler's period: `orig` in, `new` out
        cell = int(getattr(getattr(self.model, "trunk", None), "time_multiple", self.size_multiple))
        grid = self.config.audio.hop_length * cell  # model-rate samples per down-sampling cell along time
        align = orig * (grid // math.gcd(grid, new))  # input samples that map onto a whole number of cells
        if context_seconds is None:
            filt = 32 * math.ceil(max(sample_rate, self.sample_rate) / self.sample_rate)  # resampler edges
            context = max(math.ceil(DEFAULT_CONTEXT_SECONDS * sample_rate),
                          math.ceil(self.receptive_field * sample_rate / self.sample_rate) + filt)
        else:
            context = math.ceil(context_seconds * sample_rate)
        half_fade = context // 4
        core = max(round(chunk_seconds * sample_rate), 2 * half_fade, 1)
        return plan_chunks(length, core, context, half_fade, align)

    # -- the network on one piece -------------------------------------------------------------------------------

    def _scale(self, sum_squares: np.ndarray, count: int) -> torch.Tensor:
        """``(B,)`` sums of squares over ``count`` samples -> ``(B, 1, 1)`` normalisation gain."""
        audio = self.config.audio
        if not audio.normalize_rms:
            return torch.ones(len(sum_squares), 1, 1)
        rms = np.sqrt(np.asarray(sum_squares, dtype=np.float64) / max(count, 1))  # (B,)
        scale = audio.target_rms / np.maximum(rms, 1e-5)
        return torch.from_numpy(scale.astype(np.float32)).reshape(-1, 1, 1)  # (B,) -> (B, 1, 1)

    @torch.no_grad()
    def _enhance(self, x: np.ndarray, sample_rate: int, scale: torch.Tensor, full_band: bool = True) -> np.ndarray:
        """Network estimate of ``x: (B, C, L) float32`` at ``sample_rate``; returns ``(B, C, L) float32``. Above the
        model's rate, ``full_band`` adds the input's content above the model's band, scaled by
        :func:`top_band_gains` interpolated with :func:`gains_at`."""
        L = x.shape[-1]
        x_t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)  # (B, C, L)
        wave = resample(x_t, sample_rate, self.sample_rate)  # (B, C, L) -> (B, C, L_m)
        ctx = AudioContext(shape=tuple(wave.shape), scale=scale.to(self.device))
        feats, ctx = self.adapter.encode(wave, ctx)  # (B*C, 2, F, N)
        out = self.model(feats, self.modality).float()
        est = _fit(resample(self.adapter.decode(out, ctx), self.sample_rate, sample_rate), L)  # (B, C, L)
        if full_band and sample_rate > self.sample_rate:
            spectrum = self.adapter.spectrum
            gains = top_band_gains(spectrum(feats), spectrum(out)).reshape(*x.shape[:2], -1)  # (B, C, N)
            high = x_t - _fit(resample(wave, self.sample_rate, sample_rate), L)  # the input above the model's band
            at = gains_at(gains.cpu().numpy(), 0, L, self.sample_rate / (sample_rate * self.config.audio.hop_length))
            est = est + torch.from_numpy(at).to(est.device) * high
        return est.cpu().numpy()

    def _stream(self, read: Callable[[int, int], np.ndarray], length: int, sample_rate: int, scale: torch.Tensor,
                *, mix: float, atten_limit_db: float | None, chunk_seconds: float, context_seconds: float | None,
                progress: bool, desc: str = "", full_band: bool = True) -> Iterator[np.ndarray]:
        """Denoise a signal chunk by chunk; yields consecutive output blocks ``(B, C, L_i)`` that tile ``length``.

        ``read(a, b)`` returns input samples ``[a, b)`` as ``(B, C, b - a) float32``.
        """
        chunks = self.chunk_plan(length, sample_rate, chunk_seconds, context_seconds)
        gain = _limit_gain(atten_limit_db)
        pending: np.ndarray | None = None  # weighted fade-out tail of the previous chunk
        bar = None
        if progress and len(chunks) > 1:
            from tqdm import tqdm

            bar = tqdm(total=len(chunks), desc=desc or "denoise", unit="chunk", leave=False, dynamic_ncols=True)
        try:
            for ch in chunks:
                x = read(ch.start, ch.stop)  # (B, C, stop - start)
                y = x.copy() if mix == 0.0 else self._enhance(x, sample_rate, scale, full_band)
                if gain > 0.0:
                    y += gain * (x - y)
                if mix < 1.0:
                    y = x + mix * (y - x)
                y = y[..., ch.keep_start - ch.start:ch.keep_stop - ch.start]  # (B, C, keep_stop - keep_start)
                if ch.fade_in:
                    ramp = (np.arange(ch.fade_in, dtype=np.float32) + 0.5) / ch.fade_in  # (fade_in,) 0 -> 1
                    y[..., :ch.fade_in] = y[..., :ch.fade_in] * ramp + pending
                if ch.fade_out:
                    ramp = (np.arange(ch.fade_out, dtype=np.float32) + 0.5) / ch.fade_out
                    cut = y.shape[-1] - ch.fade_out
                    pending = y[..., cut:] * (1.0 - ramp)  # the next chunk fades in where this one fades out
                    y = y[..., :cut]
                if bar is not None:
                    bar.update(1)
                yield y
        finally:
            if bar is not None:
                bar.close()

    def _denoise_source(self, source: AudioSource, *, mix: float = 1.0, atten_limit_db: float | None = None,
                        chunk_seconds: float = DEFAULT_CHUNK_SECONDS, context_seconds: float | None = None,
                        progress: bool = False, desc: str = "", full_band: bool = True) -> Iterator[np.ndarray]:
        """Denoise an audio file read in order (:class:`~xmodal.io.AvAudioSource`, :class:`_SoundFileSource`) in
        bounded memory, in two passes over it. The first, done here, checks every sample and measures the level (a
        model with ``audio.normalize_rms`` scales by the whole recording's RMS, as :meth:`denoise` does); the
        returned iterator makes the second: output blocks ``(C, L) float32`` that tile the source exactly, a chunk
        of ``chunk_seconds`` (plus context) decoded at a time. Options as in :meth:`denoise`.

        Raises:
            AudioReadError: zero-length audio, NaN or infinite samples, or a file that stops reading part way.
        """
        length, sum_squares = 0, 0.0
        for block in source.blocks():
            if not np.isfinite(block).all():
                raise AudioReadError(f"{source.name}: contains NaN or infinite samples")
            sum_squares += float(np.square(block, dtype=np.float64).sum())
            length += block.shape[1]
        if length == 0:
            raise AudioReadError(f"{source.name}: zero-length audio")
        scale = self._scale(np.array([sum_squares]), source.channels * length)

        def second_pass() -> Iterator[np.ndarray]:
            reader, written = _ForwardReader(source), 0
            for block in self._stream(reader.read, length, source.rate, scale, mix=mix, atten_limit_db=atten_limit_db,
                                      chunk_seconds=chunk_seconds, context_seconds=context_seconds,
                                      progress=progress, desc=desc, full_band=full_band):
                written += block.shape[-1]
                yield block[0]  # (1, C, L) -> (C, L)
            if written != length:  # a bug guard: the chunk plan must tile the file exactly
                raise RuntimeError(f"{source.name}: wrote {written} frames instead of {length}")

        return second_pass()

    # -- real time ----------------------------------------------------------------------------------------------

    def stream(self, channels: int = 1, *, mix: float = 1.0, atten_limit_db: float | None = None,
               precision: str = "fp32", sample_rate: int | None = None, full_band: bool = True) -> SpeechStream:
        """A real-time stream: push blocks of audio as they arrive, get the denoised audio back ``n_fft - hop``
        model-rate samples later (24 ms for the bundled ``speech_rt``; about 1 ms more at another rate). Its output
        equals :meth:`denoise` of the whole signal (with the same ``full_band``). Needs a causal model
        (``model.causal: true``, ``audio.normalize_rms: false``).

        Args:
            channels: channels of the blocks pushed.
            mix, atten_limit_db: as in :meth:`denoise`.
            precision: ``fp32``, ``bf16`` or ``auto`` for the network.
            sample_rate: rate of the blocks pushed and returned (e.g. the sound card's 48000); ``None`` = the
                model's. Resampled inside the stream with the filter :meth:`denoise` uses.
            full_band: above the model's rate, keep the band above the model's as :meth:`denoise` does (no added
                latency: the gains of the frames a sample needs are computed before the sample is final).

        Returns:
            A :class:`xmodal.streaming.SpeechStream` (``push(block)``, ``flush()``, ``reset()``, ``delay``).

        Raises:
            ValueError: the model is not causal or normalises levels by the whole signal, or a bad argument.
        """
        from xmodal.streaming import SpeechStream

        return SpeechStream(self, channels, mix=mix, atten_limit_db=atten_limit_db, precision=precision,
                            sample_rate=sample_rate, full_band=full_band)

    # -- arrays -------------------------------------------------------------------------------------------------

    def denoise(self, wave: np.ndarray | torch.Tensor, sample_rate: int, *, mix: float = 1.0,
                atten_limit_db: float | None = None, chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
                context_seconds: float | None = None, progress: bool = False,
                channels_last: bool = False, full_band: bool = True) -> np.ndarray | torch.Tensor:
        """Denoise a waveform of any length, rate and channel count.

        Args:
            wave: ``(T,)``, ``(C, T)`` or ``(B, C, T)`` float in [-1, 1], a numpy array or a torch tensor
                (``(T, C)`` or ``(B, T, C)`` with ``channels_last``).
            sample_rate: rate of ``wave`` in Hz (resampled to the model's rate and back).
            mix: dry/wet in [0, 1]: 0 gives back the input, 1 the fully denoised signal.
            atten_limit_db: suppress noise by at most this many dB (``None`` = no limit); see the class docstring.
            chunk_seconds: process long signals in chunks of about this length (bounded memory).
            context_seconds: context margin each side of a chunk; ``None`` = enough for chunked == unchunked.
            progress: show a progress bar over chunks.
            channels_last: ``wave`` is ``(T, C)`` (or ``(B, T, C)``), as ``soundfile.read`` and sound-card libraries
                give it; so is the result.
            full_band: at rates above the model's (44.1 or 48 kHz into a 16 kHz model) keep the input's content
                above the model's band, with the gain the network applies to its top octave, frame by frame (see
                :func:`top_band_gains`); ``False``: the output stops at the model's band (8 kHz).

        Returns:
            The denoised waveform, of the same type, dtype, device and shape as ``wave``.

        Raises:
            TypeError: ``wave`` is not a float numpy array or torch tensor.
            ValueError: a bad shape, NaN/inf samples (or doubles beyond float32's range), ``sample_rate <= 0``,
                ``mix`` outside [0, 1], a negative ``atten_limit_db`` or a non-positive ``chunk_seconds``; a
                ``wave`` that looks like ``(T, C)`` (more than 64 rows of at most 64 samples) without
                ``channels_last``: it would be denoised as that many channels of a few samples.


        Example:
            >>> out = denoiser.denoise(np.zeros((2, 48000), np.float32), 48000)  # doctest: +SKIP
            >>> out.shape
            (2, 48000)
        """
        x = _float_numpy(wave, "wave")
        if channels_last:
            if x.ndim not in (2, 3) or 0 in x.shape:
                raise ValueError(f"Expected `wave` of shape (T, C) or (B, T, C) (channels_last=True) with no empty "
                                 f"axis, got {tuple(x.shape)}")
            x = np.swapaxes(x, -1, -2)  # (..., T, C) -> (..., C, T)
        elif x.ndim not in (1, 2, 3) or 0 in x.shape:
            raise ValueError(f"Expected `wave` of shape (T,), (C, T) or (B, C, T) with no empty axis, "
                             f"got {tuple(x.shape)}")
        elif x.ndim >= 2 and x.shape[-1] <= 64 < x.shape[-2]:  # denoising that would take minutes, for nothing
            raise ValueError(f"`wave` of shape {tuple(x.shape)} would be read as "
                             f"{'(B, C, T)' if x.ndim == 3 else '(C, T)'}: {x.shape[-2]} channels of {x.shape[-1]} "
                             "samples; for a (T, C) array (soundfile.read gives those) pass channels_last=True")
        sample_rate = _check_rate(sample_rate)
        _check_options(mix, atten_limit_db, chunk_seconds, context_seconds)
        if not np.isfinite(x).all():
            raise ValueError("`wave` contains NaN or infinite samples")
        x3 = x.reshape((1,) * (3 - x.ndim) + x.shape)  # (T,) | (C, T) | (B, C, T) -> (B, C, T)
        T = x3.shape[-1]
        scale = self._scale(np.square(x3, dtype=np.float64).sum(axis=(1, 2)), x3.shape[1] * T)
        out = np.empty_like(x3)  # (B, C, T)
        pos = 0
        for block in self._stream(lambda a, b: x3[..., a:b], T, sample_rate, scale, mix=mix,
                                  atten_limit_db=atten_limit_db, chunk_seconds=chunk_seconds,
                                  context_seconds=context_seconds, progress=progress, full_band=full_band):
            out[..., pos:pos + block.shape[-1]] = block
            pos += block.shape[-1]
        out = out.reshape(x.shape)  # (B, C, T) -> (C, T) or (T,) as `wave`
        if channels_last:
            out = np.ascontiguousarray(np.swapaxes(out, -1, -2))  # (..., C, T) -> (..., T, C)
        if isinstance(wave, torch.Tensor):
            return torch.from_numpy(out).to(device=wave.device, dtype=wave.dtype)
        return out.astype(wave.dtype, copy=False)

    # -- files --------------------------------------------------------------------------------------------------

    def denoise_file(self, src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False,
                     mix: float = 1.0, atten_limit_db: float | None = None,
                     chunk_seconds: float = DEFAULT_CHUNK_SECONDS, context_seconds: float | None = None,
                     progress: bool = False, full_band: bool = True) -> Path:
        """Denoise an audio file of any length into ``dst``, in bounded memory.

        The output has the input's sample rate, channel count, subtype (``PCM_16``, ``PCM_24``, ``FLOAT``...) and
        exact length; its format follows ``dst``'s extension (the input's format when the extension is unknown; an
        image, video or stack extension is refused).
        It is written to a hidden temp file in ``dst``'s folder and renamed when complete, so a failure never leaves
        a partial file. The input is read twice, block by block (level and validation, then denoising). Truncation is
        detected from WAV/AIFF data-size headers and from decoder errors (FLAC); formats that carry no size (OGG)
        cannot be checked.

        Args:
            src: input audio file (anything libsndfile reads: WAV, FLAC, OGG Vorbis/Opus, MP3, AIFF...; or, through
                PyAV, ``.m4a`` and video containers holding sound only, decoded twice the same way).
            dst: output path (its folder is created).
            overwrite: replace an existing ``dst``. ``dst`` is never allowed to be ``src``.
            mix, atten_limit_db, chunk_seconds, context_seconds, progress, full_band: as in :meth:`denoise`.

        Returns:
            ``dst`` as a :class:`~pathlib.Path`.

        Raises:
            AudioReadError: ``src`` missing, not readable as audio, zero-length, truncated, or with NaN/inf samples.
            ValueError: ``dst`` is ``src`` or a directory or has an image, video or stack extension, an option is
                out of range, Opus output at a rate Opus lacks, or ``src`` is a video file with a picture (its sound
                goes with :class:`VideoDenoiser`).
            FileExistsError: ``dst`` exists and ``overwrite`` is false.
        """
        from xmodal.io import AV_CONTAINERS, AvAudioSource, audio_metadata, av_streams, write_audio_blocks

        src, dst = Path(src), Path(dst)
        _check_options(mix, atten_limit_db, chunk_seconds, context_seconds)
        if not src.is_file():
            raise AudioReadError(_not_a_file(src, "audio file"))
        if dst.resolve() == src.resolve() or (dst.exists() and os.path.samefile(dst, src)):
            raise ValueError(f"{dst}: refusing to write the output over its input file {src}")
        if dst.is_dir():
            raise ValueError(f"{dst}: `dst` is a directory, expected a file path")
        if dst.exists() and not overwrite:
            raise FileExistsError(f"{dst}: output file already exists (pass overwrite=True, or --overwrite)")
        source: AudioSource
        if src.suffix.lower() in AV_CONTAINERS:
            if av_streams(src)[0]:  # a picture: writing the sound alone would lose it
                raise ValueError(f"{src}: a video file with a picture; its sound is denoised with the picture: "
                                 "python -m xmodal.denoise FILE -o OUT --audio denoise (or VideoDenoiser.denoise_file("
                                 "..., audio=speech_denoiser))")
            source = AvAudioSource(src)
            in_format, in_subtype = "PYAV", source.codec.upper()
        else:
            source = _SoundFileSource(src)
            in_format, in_subtype = source.format, source.subtype
        fmt: str | None = None
        if dst.suffix.lower() in AV_CONTAINERS:  # the input's codec when the container takes it, else its default
            codecs = AV_CONTAINERS[dst.suffix.lower()][1]
            subtype = in_subtype if in_subtype.lower() in codecs else codecs[0].upper()
        else:  # a lossless PyAV stream (ALAC, FLAC in .mkv) as PCM of its depth
            if _file_kind(dst) in ("image", "stack", "video"):  # sound under a picture's name: refused
                raise ValueError(f"{dst}: {_KIND.get(_file_kind(dst), 'a band stack')}'s extension; the denoised "
                                 "sound needs an audio one (.wav, .flac, .ogg, .mp3, .m4a...)")
            pcm = f"PCM_{source.bits}" if in_format == "PYAV" and source.lossless else in_subtype
            fmt, subtype = _output_format(dst, in_format, pcm, source.rate)
        blocks = self._denoise_source(source, mix=mix, atten_limit_db=atten_limit_db, chunk_seconds=chunk_seconds,
                                      context_seconds=context_seconds, progress=progress, desc=src.name,
                                      full_band=full_band)  # pass 1 (level, checks) runs here, before any writing
        # pass 2 writes a hidden temp file in dst's folder, renamed when complete, removed on failure
        write_audio_blocks(dst, blocks, source.rate, source.channels, subtype=subtype, metadata=audio_metadata(src),
                           clip=not subtype.startswith(("FLOAT", "DOUBLE", "VORBIS", "OPUS")), fmt=fmt,
                           bits=source.bits)
        return dst


class _SoundFileSource:
    """An audio file libsndfile reads, read in order in blocks, as :class:`~xmodal.io.AvAudioSource` reads a PyAV
    one: the header is checked when it is made, each :meth:`blocks` call is a fresh pass.

    Raises:
        AudioReadError: not readable as audio, zero frames, or a data size short of what the header declares.
    """

    def __init__(self, path: Path) -> None:
        import soundfile as sf

        self.path, self.name = path, str(path)
        try:
            f = sf.SoundFile(str(path))
        except Exception as e:  # libsndfile raises several types (LibsndfileError, RuntimeError, ...)
            raise AudioReadError(f"{path}: not readable as audio ({e})") from None
        with f:
            self.rate, self.channels, self.length = int(f.samplerate), int(f.channels), int(f.frames)
            self.format, self.subtype, info = f.format, f.subtype, f.extra_info
        self.bits = 24 if self.subtype in _WIDE else 16  # of a lossless copy in a PyAV container (ALAC, FLAC)
        if self.length == 0:
            raise AudioReadError(f"{path}: zero-length audio")
        for m in _TRUNCATED.finditer(info):
            if int(m.group(3)) < int(m.group(2)):
                raise AudioReadError(f"{path}: truncated file (header declares {m.group(2)} bytes of "
                                     f"{m.group(1)}, only {m.group(3)} present)")

    def blocks(self) -> Iterator[np.ndarray]:
        """The file's samples as consecutive ``(C, L) float32`` blocks of :data:`_READ_BLOCK` frames.

        Raises:
            AudioReadError: a read fails or stops short of the frames the header declares.
        """
        import soundfile as sf

        with sf.SoundFile(str(self.path)) as f:
            for a in range(0, self.length, _READ_BLOCK):
                b = min(self.length, a + _READ_BLOCK)
                try:
                    data = f.read(b - a, dtype="float32", always_2d=True)  # (b - a, C)
                except Exception as e:
                    raise AudioReadError(f"{self.path}: cannot read samples {a}..{b} ({e})") from None
                if data.shape[0] != b - a:
                    raise AudioReadError(f"{self.path}: truncated file (header declares {self.length} frames, read "
                                         f"stopped at {a + data.shape[0]})")
                yield np.ascontiguousarray(data.T)  # (L, C) -> (C, L)


AudioSource = Union["AvAudioSource", _SoundFileSource]  # what Denoiser._denoise_source reads


class _ForwardReader:
    """``read(a, b)``: samples ``[a, b)`` of a source as ``(1, C, b - a)``, for reads whose ``a`` never goes back
    (the chunks of :meth:`Denoiser._stream`, which overlap by their context): blocks are decoded forward and only the
    samples from the last ``a`` on are kept."""

    def __init__(self, source: AudioSource) -> None:
        self.name, self._blocks = source.name, source.blocks()
        self._buffer = np.zeros((source.channels, 0), np.float32)
        self._start = 0  # the source's index of the buffer's first sample

    def read(self, a: int, b: int) -> np.ndarray:
        if a < self._start:
            raise RuntimeError(f"{self.name}: a read at sample {a} went back before sample {self._start}")
        pieces, end = [self._buffer[:, a - self._start:]], self._start + self._buffer.shape[1]  # end: decoded
        while end < b:
            block = next(self._blocks, None)
            if block is None:  # the first pass counted more: the file changed between the passes
                raise AudioReadError(f"{self.name}: ended at sample {end} on the second reading, before sample {b}")
            pieces.append(block[:, max(0, a - end):])
            end += block.shape[1]
        self._buffer = np.concatenate(pieces, axis=1) if len(pieces) > 1 else pieces[0]
        self._start = a
        return self._buffer[None, :, :b - a].copy()


_LOSSY = ("MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III", "VORBIS", "OPUS")
_WIDE = ("PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ALAC_20", "ALAC_24", "ALAC_32")  # more than 16 bits per sample
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def _not_a_file(src: Path, what: str) -> str:
    """Why ``src`` cannot be read as one ``what``: missing, or a folder (which the command line takes whole)."""
    if src.is_dir():
        return (f"{src}: a folder; denoise_file takes one {what} (python -m xmodal.denoise {src.name} -o OUT "
                "denoises a folder)")
    return f"{src}: file not found"


def _output_format(dst: Path, in_format: str, in_subtype: str, sample_rate: int) -> tuple[str, str]:
    """libsndfile ``(format, subtype)`` for ``dst``: its extension's format (else the input's; ``.opus`` is Opus in
    OGG), the input's subtype when that format supports it and it is not a lossy codec of another format (MP3 ->
    WAV gives PCM_16, not MP3 in WAV, which libsndfile cannot write), else the format's default.

    Raises:
        ValueError: Opus output at a rate Opus does not have; an unknown extension for an input libsndfile does not
            read (no format to fall back on).
    """
    import soundfile as sf

    ext = dst.suffix[1:].upper()
    if ext == "OPUS":
        fmt, subtype = "OGG", "OPUS"
    else:
        fmt = {"AIF": "AIFF", "OGA": "OGG"}.get(ext, ext)
        if fmt not in sf.available_formats():
            if in_format not in sf.available_formats():  # an .m4a input (PyAV): no libsndfile format to fall back on
                raise ValueError(f"{dst}: unknown audio extension {dst.suffix!r} (write .wav, .flac, .ogg, .mp3, "
                                 ".m4a...)")
            fmt = in_format
        keep = sf.check_format(fmt, in_subtype) and (fmt == in_format or in_subtype not in _LOSSY)
        subtype = in_subtype if keep else sf.default_subtype(fmt)
        if not keep and in_subtype in _WIDE and subtype.startswith("PCM_") and sf.check_format(fmt, "PCM_24"):
            subtype = "PCM_24"  # a float or 32-bit input into FLAC...: the deepest integer the format holds
    if subtype == "OPUS" and sample_rate not in _OPUS_RATES:
        raise ValueError(f"{dst}: Opus holds audio at {', '.join(str(r // 1000) for r in _OPUS_RATES)} kHz, this "
                         f"is {sample_rate} Hz; write another format (.ogg, .flac, .wav)")
    return fmt, subtype


# ----------------------------------------------------------------------------------------------------------------
# Images and band stacks


def _float_numpy(x: Any, name: str, note: str = "") -> np.ndarray:
    """A float numpy array or torch tensor -> float32 numpy array on the CPU (no copy when it already is one).

    Raises:
        TypeError: not a numpy array or tensor, or not floating point (the message names ``name``; ``note`` is
            added after "float array/tensor", e.g. the expected value range).
    """
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point():
            raise TypeError(f"Expected `{name}` to be a float tensor{note}, got dtype {x.dtype}")
        out = x.detach().to("cpu", torch.float32).numpy()
    elif isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"Expected `{name}` to be a float array{note}, got dtype {x.dtype}")
        with np.errstate(over="ignore"):  # finite doubles beyond float32's range: said below, by name
            out = np.asarray(x, dtype=np.float32)
    else:
        raise TypeError(f"Expected `{name}` to be a numpy array or a torch tensor, got {type(x).__name__}")
    if x.dtype in (np.float64, torch.float64) and not np.isfinite(out).all():  # finite doubles that float32 cannot hold
        wide = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x)
        big = np.isfinite(wide) & ~np.isfinite(out)
        if big.any():
            raise ValueError(f"`{name}` holds {int(big.sum())} finite value(s) beyond float32's range (up to "
                             f"{float(np.abs(wide[big]).max()):.3g}; float32 holds +-3.4e38): scale it first")
    return out


def _from_user(x: np.ndarray | torch.Tensor, name: str, shapes: str, ndims: tuple[int, ...]) -> torch.Tensor:
    """A float numpy array or tensor -> float32 CPU tensor (a view when possible), checked for shape and values."""
    t = torch.from_numpy(np.ascontiguousarray(_float_numpy(x, name, " (values in [0, 1])")))
    if t.ndim not in ndims or 0 in t.shape:
        raise ValueError(f"Expected `{name}` of shape {shapes} with no empty axis, got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"`{name}` contains NaN or infinite values")
    return t


def _to_user(y: torch.Tensor, like: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """``y`` (the shape of ``like``) as the type, dtype and device of ``like``."""
    if isinstance(like, torch.Tensor):
        return y.to(device=like.device, dtype=like.dtype)
    return y.cpu().numpy().astype(like.dtype, copy=False)


def _channels_first(x: np.ndarray | torch.Tensor, name: str, shapes: tuple[str, str], ndims: tuple[int, ...],
                    channels_last: bool) -> tuple[torch.Tensor, str]:
    """``x`` checked by :func:`_from_user`, with its channels third from last, and a hint for the caller's messages.

    ``shapes``: the accepted shapes (channels first, channels last) for messages; ``ndims``: the accepted numbers of
    dims, channels first. With ``channels_last`` the input has channels on its last axis (the ``ndims`` above the
    smallest), moved to third from last. Without it, a shape whose last axis looks like channels (at most 4 entries,
    the two before it more than 4) returns the hint ``"; for a channels-last <name> pass channels_last=True"``, else
    ``""``."""
    if channels_last:
        t = _from_user(x, name, f"{shapes[1]} (channels_last=True)", tuple(n for n in ndims if n > min(ndims)))
        return t.movedim(-1, -3), ""  # (..., H, W, C) -> (..., C, H, W)
    t = _from_user(x, name, shapes[0], ndims)
    looks_last = t.ndim >= 3 and t.shape[-1] <= 4 < min(t.shape[-3], t.shape[-2])
    return t, f"; for a channels-last {name} pass channels_last=True" if looks_last else ""


ValueRange = Union[None, str, tuple[float, float]]
Sigma = Union[None, str, float, np.ndarray, torch.Tensor]  # an image's noise level: see ImageDenoiser.denoise

# a colour model given a gray input copies it to its channels: noise identical in all three, which it was not
# trained on and mostly leaves (Set12 02 at sigma 25 through `color`: 22.98 dB from 20.18; `gray`: 33.14 dB)
_GRAY_INTO_COLOUR = ("a colour model given a gray {what} copies it into its three channels, where the noise is then "
                     "the same in all three, unlike the independent colour noise it was trained on: it barely "
                     "denoises it (Set12 02, sigma 25: 22.98 dB from 20.18, against 33.14 dB with 'gray'); use a gray "
                     "model ({model})")
_RANGE_PERCENTILES = (0.1, 99.9)
_RANGE_SAMPLES = 1 << 16  # percentiles of larger images are taken on an evenly strided subsample of this many values


def _robust_range(x: torch.Tensor) -> tuple[float, float]:
    """The 0.1 and 99.9 percentiles of ``x`` (an evenly strided subsample of about 65,536 values)."""
    flat = x.reshape(-1)
    flat = flat[:: max(1, flat.numel() // _RANGE_SAMPLES)]
    q = torch.quantile(flat.double(), torch.tensor([p / 100 for p in _RANGE_PERCENTILES], dtype=torch.float64))
    return float(q[0]), float(q[1])


def _plausible(lo: float, hi: float) -> bool:
    """The rule of :func:`plausible_unit_range` on a ``(0.1, 99.9)`` percentile pair."""
    return -1.0 <= lo and hi <= 2.0 and not 0.0 < hi - lo < 0.02


def plausible_unit_range(x: np.ndarray | torch.Tensor) -> bool:
    """Whether ``x`` looks like [0, 1] image data (noise included): its 0.1 and 99.9 percentiles lie in
    [-1, 2] (room for noise up to sigma 50/255 and beyond) and, unless the image is constant, are at least 0.02
    apart. Integer files scaled by their dtype always are; float data from elsewhere (0-255 floats, 12-bit counts,
    reflectances of 0.01) may not be."""
    return _plausible(*_robust_range(x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))))


def _check_value_range(value_range: Any) -> ValueRange:
    """``value_range`` checked: ``None``, ``"auto"`` or a float ``(lo, hi)`` pair with ``lo < hi``."""
    if value_range is None or (isinstance(value_range, str) and value_range == "auto"):
        return value_range
    if isinstance(value_range, str):
        raise ValueError(f"`value_range` must be None, 'auto' or (lo, hi), got {value_range!r}")
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"`value_range` must be None, 'auto' or (lo, hi), got {value_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"`value_range` (lo, hi) must be finite with lo < hi, got {value_range!r}")
    return lo, hi


#: a 16-bit file whose 99.9th percentile stays below this fraction of 65535 holds fewer bits (or a dark scene)
_SHORT_OF_16_BITS = 0.25


def file_value_range(image: np.ndarray | torch.Tensor, dtype: str, value_range: ValueRange = None) -> ValueRange:
    """The ``value_range`` for :meth:`ImageDenoiser.denoise` of an image read by :func:`~xmodal.imageio.read_image`
    from a file of ``dtype``, given one in the file's own units (``None``, ``"auto"`` or ``(lo, hi)``).

    ``None``: 8-bit files are [0, 1] by their dtype, and so are 16-bit files whose values reach a quarter of it;
    16-bit files that stay below (10-, 12- or 14-bit sensor data, dark scenes: by dtype their noise would look many
    times weaker than it is) and float files that are not :func:`plausible_unit_range` are ``"auto"``, float files
    that are are used as they are (``image`` ``None``: integer files by their dtype). ``(lo, hi)`` of an integer
    file is divided by its dtype's scale (255, 65535), as ``image`` was. The denoise command,
    :meth:`ImageDenoiser.denoise_file` and ``evaluate --model`` all decide through this function."""
    from xmodal.imageio import _INT_MAX

    value_range = _check_value_range(value_range)
    scale = _INT_MAX.get(dtype)
    if value_range is None:
        if dtype == "uint16" and image is not None:
            x = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.asarray(image))
            return "auto" if _robust_range(x)[1] < _SHORT_OF_16_BITS else None
        return None if scale is not None or plausible_unit_range(image) else "auto"
    if isinstance(value_range, tuple) and scale is not None:
        return value_range[0] / scale, value_range[1] / scale
    return value_range


def _resolve_range(x: torch.Tensor, value_range: ValueRange) -> tuple[float, float]:
    """``(lo, span)`` such that ``(x - lo) / span`` is the model's [0, 1] scale (``value_range`` checked)."""
    value_range = _check_value_range(value_range)
    if value_range is None:
        return 0.0, 1.0
    if isinstance(value_range, str):  # "auto"
        lo, hi = _robust_range(x)
        if hi <= lo:  # (nearly) constant: its full range, or a shift of the constant to 0
            lo, hi = float(x.min()), float(x.max())
        return (lo, hi - lo) if hi > lo else (lo, 1.0)
    lo, hi = value_range
    return lo, hi - lo


def _warn_unless_unit(x: torch.Tensor, value_range: ValueRange, what: str) -> None:
    """Warn (naming the caller's argument ``what``) when ``value_range`` is ``None`` and ``x`` is far from [0, 1]."""
    if value_range is None and not _plausible(*(q := _robust_range(x))):
        warnings.warn(f"`{what}` values span [{q[0]:.4g}, {q[1]:.4g}] (0.1-99.9 percentiles), but the model "
                      "denoises [0, 1] data; pass value_range=(lo, hi) (e.g. (0, 255)) or value_range='auto' "
                      "(command line: --value-range LO,HI or auto)", stacklevel=3)


def _band_ranges(x4: torch.Tensor, value_range: ValueRange) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lo, span)``, each ``(B, S, 1, 1)``, that map the bands of ``x4`` ``(B, S, H, W)`` to the model's [0, 1]:
    ``(x - lo) / span`` (``value_range`` as :meth:`StackDenoiser.denoise` takes it, checked; ``"auto"`` band by
    band)."""
    value_range = _check_value_range(value_range)
    B, S = x4.shape[:2]
    if not isinstance(value_range, str):
        lo, span = _resolve_range(x4, value_range)
        return (torch.full((B, S, 1, 1), lo, dtype=x4.dtype, device=x4.device),
                torch.full((B, S, 1, 1), span, dtype=x4.dtype, device=x4.device))
    ranges = [_resolve_range(band, "auto") for band in x4.reshape(B * S, *x4.shape[-2:])]
    lo, span = (torch.tensor(v, dtype=x4.dtype, device=x4.device).reshape(B, S, 1, 1) for v in zip(*ranges))
    return lo, span


def _check_subsample(subsample: object, height: int, width: int) -> int:
    """``subsample`` as an int from 1 to the smaller side, or ``ValueError`` naming it."""
    if isinstance(subsample, bool) or not isinstance(subsample, numbers.Integral) or subsample < 1:
        raise ValueError(f"`subsample` must be an integer >= 1, got {subsample!r}")
    if subsample > min(height, width):
        raise ValueError(f"`subsample` ({subsample}) must be at most the image's smaller side ({min(height, width)} "
                         "pixels)")
    return int(subsample)


def _check_image_dst(src: Path, dst: Path, overwrite: bool, folder: bool = False) -> None:
    """Refuse ``dst`` when it is ``src`` (or one of ``src``'s band files), of the wrong kind, or exists without
    ``overwrite``."""
    same = dst.resolve() == src.resolve() or (dst.exists() and src.exists() and os.path.samefile(dst, src))
    if same:
        raise ValueError(f"{dst}: refusing to write the output over its input {'folder' if src.is_dir() else 'file'} "
                         f"{src}")
    if src.is_dir() and dst.exists() and any(dst.resolve() == f.resolve() for f in src.iterdir()):
        raise ValueError(f"{dst}: refusing to write the output over an input band file of {src}")
    if folder and dst.exists() and not dst.is_dir():
        raise ValueError(f"{dst}: `dst` is a file, expected a folder (the bands of {src})")
    if not folder and dst.is_dir():
        raise ValueError(f"{dst}: `dst` is a directory, expected a file path")
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst}: output {'folder' if folder else 'file'} already exists (pass overwrite=True, "
                              "or --overwrite)")


class ImageDenoiser:
    """A trained image model ready to denoise arrays and image files of any size (tiled, bounded memory).

    Images are float in [0, 1] (dtype scaling of :func:`xmodal.imageio.read_image`). A gray model (1 channel)
    denoises each channel of any image on its own; a colour model (3 channels) takes RGB images and gray ones
    (replicated, outputs averaged; with a warning: its noise is then identical in the three channels, which a colour
    model mostly leaves). Large images go through :func:`xmodal.tiling.tiled_apply`.

    Non-blind models (``config.image.noise_map``) take the noise standard deviation ``sigma`` (image units, e.g.
    ``25 / 255``), a float or a per-pixel map, appended as an extra input channel; blind models estimate it. Either
    kind given ``sigma`` (a level, or ``"auto"``) handles noise stronger than it was trained on: see :meth:`denoise`.

    Attributes:
        max_sigma: the largest white Gaussian noise level the model was trained on, in [0, 1] units (``50 / 255`` for
            the bundled models), or ``None`` if it saw no white Gaussian noise (``image.noise`` and ``noise_mix`` of
            its config).

    Args:
        model: the network (``DenoisingNet``) in eval mode.
        config: its resolved config (``modality: image``).
        device: where the network runs (``cpu`` or ``cuda``).
        name: what to call the model in messages.
        precision: ``fp32`` (default), ``bf16`` (autocast; about twice as fast on CPUs with AVX-512 BF16 / AMX, and
            on GPUs; outputs differ from fp32 by about 0.2/255 on average, 1.5/255 at most) or ``auto`` (bf16 where
            native).

    Raises:
        ValueError: not an image model, no stem/head for it, or the device is not available.

    Example:
        >>> den = xmodal.load("image_gray")  # doctest: +SKIP
        >>> clean = den.denoise(noisy)  # (H, W), (C, H, W) or (B, C, H, W) in [0, 1]  # doctest: +SKIP
        >>> den.denoise_file("scan.tif", "scan_clean.tif")  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, config: Config, device: str | torch.device = "cpu", name: str = "",
                 precision: str = "fp32") -> None:
        _setup(self, model, config, device, name, "image")
        self.precision = _check_precision(precision, self.device)
        self.model = self.model.to(memory_format=torch.channels_last)
        self.channels = int(config.image.channels)
        self.noise_map = bool(config.image.noise_map)
        self.max_sigma = _trained_max_sigma(self.config)

    def __repr__(self) -> str:
        kind = "gray" if self.channels == 1 else f"{self.channels}-channel"
        return (f"ImageDenoiser({self.name or 'model'!s}, {kind}, {'non-blind' if self.noise_map else 'blind'}, "
                f"device={self.device})")

    def _sigma_map(self, sigma: Sigma, x4: torch.Tensor, span: float) -> torch.Tensor | None:
        """``sigma`` (in units ``span`` times those of ``x4``) -> ``(B, 1, H, W)`` noise-level map in ``x4``'s units
        for a ``(B, C, H, W)`` image ``x4`` (``None`` for blind models)."""
        B, _, H, W = x4.shape
        if not self.noise_map:
            return None
        if sigma is None:
            raise ValueError("this model is non-blind (config.image.noise_map is true): pass `sigma`, the noise "
                             "standard deviation in image units (a float such as 25/255, a per-pixel map, or "
                             "'auto' to estimate it)")
        if isinstance(sigma, str):
            if sigma != "auto":
                raise ValueError(f"`sigma` must be a float, a per-pixel map or 'auto', got {sigma!r}")
            if not can_estimate_sigma(H, W):
                raise ValueError(f"sigma='auto': an image of {H} x {W} pixels is too small to estimate its noise "
                                 f"level (20 x 20 pixels at least); pass the level as a number")
            # one level per image: the root mean square of its channels' (xmodal.noise.estimate_sigma)
            levels = [float(np.sqrt(np.mean(estimate_sigma(x4[b]) ** 2))) for b in range(B)]
            return torch.tensor(levels, dtype=torch.float32).view(B, 1, 1, 1).expand(B, 1, H, W).contiguous()
        if isinstance(sigma, numbers.Real) and not isinstance(sigma, bool):
            _check_level(float(sigma), span)
            s = torch.full((B, 1, H, W), float(sigma))
        else:
            s = _from_user(sigma, "sigma", "(H, W), (1, H, W) or (B, 1, H, W)", (2, 3, 4)) \
                if isinstance(sigma, (np.ndarray, torch.Tensor)) else None
            if s is None:
                raise TypeError(f"Expected `sigma` to be a float or a per-pixel map (numpy array or torch tensor), "
                                f"got {type(sigma).__name__}")
            try:
                s = torch.broadcast_to(s.reshape((1,) * (4 - s.ndim) + tuple(s.shape)), (B, 1, H, W))
            except RuntimeError:
                raise ValueError(f"Expected `sigma` of shape (H, W), (1, H, W) or (B, 1, H, W) with B={B}, H={H}, "
                                 f"W={W} (one map per image, shared by its channels), got {tuple(s.shape)}") from None
        if not torch.isfinite(s).all() or bool((s < 0).any()):
            raise ValueError("`sigma` must be finite and >= 0 (a noise standard deviation), got a map with values "
                             "outside that")
        if bool((s > span).any()):
            _check_level(float(s.max()), span)
        return s / span if span != 1.0 else s  # the user's units -> [0, 1] units

    def denoise(self, image: np.ndarray | torch.Tensor, *, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                sigma: Sigma = None, ensemble: bool = False, subsample: int = 1,
                progress: bool = False, channels_last: bool = False,
                value_range: ValueRange = None, poisson: float | Literal["auto"] | None = None,
                read_noise: float | Literal["auto"] = 0.0) -> np.ndarray | torch.Tensor:
        """Denoise an image of any size.

        Args:
            image: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` float in [0, 1], numpy array or torch tensor
                (``(H, W, C)`` or ``(B, H, W, C)`` with ``channels_last``). A gray model takes any ``C``; a colour
                model ``C`` = 1 or its channel count.
            tile: images larger than ``tile`` pixels on a side are processed in tiles of at most this size.
            overlap: overlap of neighbouring tiles (blended, see :mod:`xmodal.tiling`).
            sigma: the noise standard deviation in image units: a float, ``"auto"`` (estimated from each image:
                :func:`xmodal.noise.estimate_sigma`, white Gaussian noise, the root mean square of its channels') or,
                for non-blind models, a map of shape ``(H, W)``, ``(1, H, W)`` or ``(B, 1, H, W)``. Non-blind models
                need it (their input). Both kinds use it for noise above the levels they were trained on
                (``max_sigma``), where a network's output degrades fast: an image whose level exceeds
                ``0.9 * max_sigma`` is denoised at a contrast reduced about its mean by ``0.9 * max_sigma / level``
                (its noise then at that level; a map scaled alike), and the output is scaled back. On Set12, ``gray``
                at sigma 75/255: 25.41 dB with ``"auto"`` against 21.36 dB without (``benchmarks/image_quality.py
                --sigma 75 --auto-sigma``). ``None`` (default): blind models take the image as it is. Blind models
                estimate from at most 16,384 patches per channel (within about 2/255; it only sets the contrast), and
                take images too small to estimate (under about 20 x 20 pixels) as they are. A level above the whole
                range of the data (e.g. 25 meant as 25/255) is an error.
            ensemble: geometric self-ensemble: average the outputs for the 8 flips/rotations of the image (8 times
                slower; typically a tenth or two of a dB of PSNR better).
            subsample: pixel-shuffle down-sampling (:func:`xmodal.tiling.subsampled_apply`): ``2`` denoises the 4
                sub-images of every other pixel and interleaves them back. For real photos given to a model trained
                on white Gaussian noise: their noise is correlated between neighbouring pixels (demosaicking, JPEG),
                much less so between pixels 2 apart. Costs the detail finer than ``subsample`` pixels; ``1`` (the
                default) is off. Not needed with a model trained on such noise (``color_real``).
            progress: show a progress bar over tiles.
            channels_last: ``image`` has its channels last, as arrays from Pillow, OpenCV or imageio do; the result
                has them last too. ``sigma`` maps keep their shapes above.
            value_range: the values that map to [0, 1], the range the model was trained on: ``None`` (default) takes
                ``image`` as [0, 1] data; ``(lo, hi)`` maps ``lo`` -> 0 and ``hi`` -> 1 (e.g. ``(0, 255)`` for 8-bit
                values in a float array, ``(0, 4095)`` for 12-bit data); ``"auto"`` maps the image's own 0.1 and 99.9
                percentiles (over all its channels, so colours keep their balance). The result is mapped back, and
                ``sigma`` is taken in the same units as ``image``.
            poisson: photon-limited data (microscopy, astronomy, X-ray, low light): the photons (or electrons) a
                pixel at 1 holds (after ``value_range``; with a black level, give ``(black, white)`` there). The
                noise ``Poisson(poisson * x) / poisson`` (plus ``read_noise``) grows with the signal; the image goes
                through the generalized Anscombe transform, which makes it white Gaussian noise of a known level,
                is denoised there, and comes back through the exact unbiased inverse (:mod:`xmodal.vst`), never
                below 0. On Set12 with 30 photons at full scale: ``gray`` 29.30 dB against 27.02 dB without.
                ``"auto"`` estimates it from the image (one value for all of ``image``):
                :func:`xmodal.noise.estimate_photon_noise` without read noise, otherwise
                :func:`xmodal.noise.estimate_poisson_gaussian`. ``None`` (default): the noise is taken as Gaussian.
                Not with ``sigma`` (the transform sets it).
            read_noise: with ``poisson``: the sensor's Gaussian read noise, a standard deviation in the units where
                full scale is 1 (as ``sigma`` after ``value_range``), or ``"auto"``: estimated from the image with
                the photons, or given them (:func:`xmodal.noise.estimate_poisson_gaussian`; data with a black level
                subtracted has values below 0, which photon counts alone cannot have).

        Returns:
            The denoised image, of the same type, dtype, device and shape as ``image`` (not clipped).

        Raises:
            TypeError: ``image`` (or ``sigma``) is not a float numpy array or tensor; ``poisson`` or ``read_noise``
                not a number.
            ValueError: a bad shape, an empty axis, NaN/inf values, a channel count the model does not take,
                ``sigma`` missing for a non-blind model, negative, or a bad map or string, or bad
                ``tile``/``overlap``, a ``subsample`` that is not an integer from 1 to the image's smaller side;
                ``poisson`` not > 0, ``read_noise`` negative, a string other than ``"auto"`` or given without
                ``poisson``, ``poisson`` with ``sigma``; with ``"auto"``, an image the estimate fails on (see the
                estimators).

        Warns:
            UserWarning: a ``(C, H, W)`` image whose shape looks channels-last (``W <= 4 < C, H``) given to a gray
                model, which would denoise it as ``C`` images of ``W`` pixels wide; with ``value_range=None``, values
                far from [0, 1] (see :func:`plausible_unit_range`).
        """
        x, hint = _channels_first(image, "image", ("(H, W), (C, H, W) or (B, C, H, W)", "(H, W, C) or (B, H, W, C)"),
                                  (2, 3, 4), channels_last)
        x4 = x.reshape((1,) * (4 - x.ndim) + tuple(x.shape))  # (H, W) | (C, H, W) | (B, C, H, W) -> (B, C, H, W)
        C = x4.shape[1]
        if self.channels != 1 and C not in (1, self.channels):
            raise ValueError(f"this model denoises {self.channels}-channel (or gray) images; `image` has {C} "
                             f"channels (shape {tuple(x.shape)}); use a gray model, which takes any channel "
                             f"count{hint}")
        if hint:
            warnings.warn(f"`image` of shape {tuple(x.shape)} is read as (C, H, W): {C} images of {x.shape[-2]} x "
                          f"{x.shape[-1]} pixels{hint}", stacklevel=2)
        if C == 1 and self.channels != 1:
            warnings.warn(_GRAY_INTO_COLOUR.format(what="image", model="'gray'"), stacklevel=2)
        check_tiling(tile, overlap, self.size_multiple)
        subsample = _check_subsample(subsample, *x4.shape[-2:])
        lo, span = _resolve_range(x4, value_range)
        if poisson is None:  # photon data: values above 1 are photon counts above full scale, not a wrong range
            _warn_unless_unit(x4, value_range, "image")
        if span != 1.0 or lo != 0.0:
            x4 = (x4 - lo) / span  # -> [0, 1]
        sigma_span, photons = span, _photon_noise(poisson, read_noise, sigma, x4)
        if photons is not None:  # the Anscombe domain, mapped to [0, 1]: white noise of level 1 / t_span
            t_lo, t_span = photons.range
            x4 = (anscombe(x4, *photons.params) - t_lo) / t_span
            sigma, sigma_span = 1.0 / t_span, 1.0
        sigma_map = self._sigma_map(sigma, x4, sigma_span)
        levels = _blind_levels(sigma, x4, sigma_span, self.max_sigma) if sigma_map is None else \
            sigma_map.reshape(sigma_map.shape[0], -1).amax(dim=1).cpu()  # non-blind: each map's largest level
        gains = _range_gains(levels, self.max_sigma, (-1, 1, 1, 1))
        if gains is not None:  # noise above the training range: denoised at a lower contrast (see `sigma`)
            x4, pivot = _lower_contrast(x4, gains, (1, 2, 3))
            sigma_map = None if sigma_map is None else sigma_map * gains.to(sigma_map.device)
        inputs = x4 if sigma_map is None else torch.cat([x4, sigma_map], dim=1)  # (B, C [+1], H, W)

        def run(t: torch.Tensor) -> torch.Tensor:  # (B, C [+1], h, w) -> (B, C, h, w)
            feats, ctx = self.adapter.encode(t)
            return self.adapter.decode(_image_forward(self, feats), ctx)

        def whole(t: torch.Tensor) -> torch.Tensor:  # (B, C [+1], H, W) -> (B, C, H, W), tiled, sub-sampled
            return subsampled_apply(lambda u: tiled_apply(run, u, tile, overlap, self.size_multiple,
                                                          progress=progress), t, subsample)

        with torch.no_grad():
            inputs = inputs.to(self.device)
            if not ensemble:
                y = whole(inputs)
            else:
                y = torch.zeros_like(inputs[:, :C])
                for k in range(4):  # 4 rotations x (plain, flipped), each undone on the output
                    for flip in (False, True):
                        t = torch.rot90(inputs, k, dims=(-2, -1))
                        t = t.flip(-1) if flip else t
                        out = whole(t)
                        out = out.flip(-1) if flip else out
                        y += torch.rot90(out, -k, dims=(-2, -1))
                y /= 8
        if gains is not None:
            y = _restore_contrast(y, gains, pivot)
        if photons is not None:
            y = inverse_anscombe(y * t_span + t_lo, *photons.params)
        if span != 1.0 or lo != 0.0:
            y = y * span + lo  # back to the image's units
        y = y.reshape(x.shape)
        return _to_user(y.movedim(-3, -1) if channels_last else y, image)  # (..., C, H, W) -> (..., H, W, C)

    def denoise_file(self, src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False,
                     tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                     sigma: Sigma = None, ensemble: bool = False,
                     subsample: int = 1, progress: bool = False, value_range: ValueRange = None,
                     poisson: float | Literal["auto"] | None = None,
                     read_noise: float | Literal["auto"] = 0.0) -> Path:
        """Denoise an image file into ``dst`` at the input's bit depth (uint8, uint16, float) and layout.

        The format follows ``dst``'s extension (``.png``, ``.jpg``, ``.bmp``, ``.webp``, ``.avif``, ``.tif``,
        ``.npy``, ``.heic``); GeoTIFF tags are kept. An alpha channel (gray+alpha, RGBA) is copied unchanged. The
        output is written to a temp file in ``dst``'s folder and renamed when complete, so a failure never leaves a
        partial file.

        Args:
            src: the noisy image (PNG, JPEG, BMP, WebP, AVIF, TIFF, ``.npy`` or HEIC; see
                :func:`xmodal.imageio.read_image`).
            dst: output path (its folder is created).
            overwrite: replace an existing ``dst``. ``dst`` is never allowed to be ``src``.
            tile, overlap, sigma, ensemble, subsample, progress, poisson, read_noise: as in :meth:`denoise`;
                ``sigma`` in the units :func:`~xmodal.imageio.read_image` gives (25/255 for sigma 25 in an 8-bit
                file; values for float files); ``poisson``: photons at the top of ``value_range``: by default the
                dtype's maximum (255, 65535) and, for float files, 1 (taken as they are, not by percentiles; raw
                photon counts in a float file: ``poisson=1``).
            value_range: ``(lo, hi)`` in the file's own units (e.g. ``(0, 4095)`` for 12-bit data in a 16-bit file)
                or ``"auto"``, as in :meth:`denoise`. ``None`` (default): integer files are scaled by their dtype
                (uint8 / 255, uint16 / 65535), and float files are used as they are if they look like [0, 1] data
                (:func:`plausible_unit_range`), else ``"auto"``.

        Returns:
            ``dst`` as a :class:`~pathlib.Path`.

        Raises:
            ImageReadError: ``src`` missing or not readable as an image (corrupt, empty, unsupported dtype, NaN...).
            ValueError: ``dst`` is ``src`` or a directory, an unsupported ``dst`` extension or one that cannot store
                the result (e.g. float data as PNG), a channel count the model does not take, a bad ``sigma``.
            FileExistsError: ``dst`` exists and ``overwrite`` is false.
        """
        from xmodal.imageio import (IMAGE_EXTENSIONS, ImageReadError, alpha_channels, nodata_value, read_image,
                                    write_image)

        src, dst = Path(src), Path(dst)
        if not src.is_file():
            raise ImageReadError(_not_a_file(src, "image file"))
        _check_image_dst(src, dst, overwrite)
        if dst.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ValueError(f"{dst}: unsupported output extension {dst.suffix!r} (expected one of "
                             f"{', '.join(IMAGE_EXTENSIONS)})")
        image, info = read_image(src)  # (C, H, W)
        keep = alpha_channels(info.mode)  # copied, not denoised
        colour = image[: image.shape[0] - keep]  # (C - keep, H, W)
        colour, masks = _fill_nodata(colour, [nodata_value(info)] * colour.shape[0])
        try:
            if poisson is not None and value_range is None:  # photon counts relative to the file's full scale
                mapping = (0.0, 1.0) if info.dtype.startswith("float") else None  # floats as they are, ints by dtype
            else:
                mapping = file_value_range(colour, info.dtype, value_range)
            out = self.denoise(colour, tile=tile, overlap=overlap, sigma=sigma, ensemble=ensemble, subsample=subsample,
                               progress=progress, value_range=mapping, poisson=poisson, read_noise=read_noise)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{src}: {e}") from None
        _restore_nodata(out, image, masks)
        if keep:
            out = np.concatenate([out, image[-keep:]], axis=0)  # (C, H, W)
        write_image(dst, out, info)  # atomic; the dtype, layout, mode and GeoTIFF tags of the input
        return dst


def _fill_nodata(x: np.ndarray, values: list[float | None]) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """``(filled, masks)`` for ``x: (C, H, W)`` with GDAL nodata ``values`` per channel (in ``x``'s units; ``nan``
    allowed; ``None``: none): ``filled`` has the channel's mean where it holds nodata, so the network sees no
    sentinel (e.g. -9999) and value ranges ignore it; ``masks``: channel -> ``(H, W)`` nodata pixels."""
    masks = {}
    for c, value in enumerate(values):
        if value is not None:
            mask = np.isnan(x[c]) if math.isnan(value) else x[c] == np.float32(value)  # (H, W)
            if mask.any():
                masks[c] = mask
    filled = x.copy() if masks else x
    for c, mask in masks.items():
        filled[c][mask] = x[c][~mask].mean() if not mask.all() else 0.0
    return filled, masks


def _restore_nodata(out: np.ndarray, x: np.ndarray, masks: dict[int, np.ndarray]) -> None:
    """Put the nodata pixels of :func:`_fill_nodata` back into ``out`` (in place): nodata stays nodata."""
    for c, mask in masks.items():
        out[c][mask] = x[c][mask]


class StackDenoiser:
    """A trained multispectral model ready to denoise band stacks of any band count and size.

    Band ``b`` is denoised from bands ``b - k .. b + k`` (``k = config.image.context_bands``, mirrored at the ends of
    the spectrum). Stacks are processed tile by tile (:func:`xmodal.tiling.tiled_apply`) and, within a tile,
    ``bands_per_batch`` bands at a time, so memory is the output plus one tile of the input plus one band group's
    activations, whatever the band count. ``max_sigma``: as for :class:`ImageDenoiser` (``0.1`` of each band's
    range for the bundled model).

    Args:
        model: the network (``DenoisingNet``) in eval mode.
        config: its resolved config (``modality: multispectral``).
        device: where the network runs (``cpu`` or ``cuda``).
        name: what to call the model in messages.
        precision: ``fp32`` (default), ``bf16`` (autocast; about twice as fast on CPUs with AVX-512 BF16 / AMX, and
            on GPUs; outputs differ from fp32 by about 0.2/255 on average, 1.5/255 at most) or ``auto`` (bf16 where
            native).

    Raises:
        ValueError: not a multispectral model, no stem/head for it, or the device is not available.

    Example:
        >>> den = xmodal.load("multispectral")  # doctest: +SKIP
        >>> den.denoise_file("scene/", "scene_clean/")  # a folder of single-band TIFFs  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, config: Config, device: str | torch.device = "cpu", name: str = "",
                 precision: str = "fp32") -> None:
        _setup(self, model, config, device, name, "multispectral")
        self.precision = _check_precision(precision, self.device)
        self.model = self.model.to(memory_format=torch.channels_last)
        self.context_bands = int(config.image.context_bands)
        self.max_sigma = _trained_max_sigma(self.config)

    def __repr__(self) -> str:
        return f"StackDenoiser({self.name or 'model'!s}, context_bands={self.context_bands}, device={self.device})"

    def denoise(self, stack: np.ndarray | torch.Tensor, *, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                bands_per_batch: int = 8, progress: bool = False, sigma: Sigma = None,
                value_range: ValueRange = None) -> np.ndarray | torch.Tensor:
        """Denoise a band stack.

        Args:
            stack: ``(S, H, W)`` or ``(B, S, H, W)`` float (per-band scaled, about [0, 1], unless ``value_range``
                says otherwise), numpy or torch; any ``S``.
            tile: stacks larger than ``tile`` pixels on a side are processed in tiles of at most this size.
            overlap: overlap of neighbouring tiles (blended, see :mod:`xmodal.tiling`).
            bands_per_batch: bands sent through the network together (per item of the batch).
            progress: show a progress bar over tiles.
            sigma: the noise level, for noise above the levels the model was trained on (``max_sigma``), as in
                :meth:`ImageDenoiser.denoise` but band by band: a float (every band's, in the stack's units) or
                ``"auto"`` (each band's own, estimated). A band whose level is above ``max_sigma`` is denoised at a
                contrast lowered about its mean until its noise is at that level, and scaled back; other bands keep
                their contrast (their outputs still change through the lowered bands they take as spectral
                context). ``None`` (default): as it is.
            value_range: the values the model's [0, 1] is for: ``None`` (default) the stack as it is, per-band
                scaled (a warning when its values are far from [0, 1]: raw reflectances, digital numbers);
                ``"auto"`` each band's own 0.1-99.9 percentile range (as ``scaling="band_percentile"`` reads a file,
                with those percentiles), mapped back after; ``(lo, hi)`` one range for every band.

        Returns:
            The denoised stack, of the same type, dtype, device and shape as ``stack``.

        Raises:
            TypeError: ``stack`` is not a float numpy array or tensor, or ``sigma`` a map.
            ValueError: a bad shape, an empty axis, NaN/inf values, bad ``tile``/``overlap``/``bands_per_batch``,
                a bad ``sigma`` or ``value_range``.
        """
        from xmodal.adapters.image import spectral_neighbours

        x = _from_user(stack, "stack", "(S, H, W) or (B, S, H, W)", (3, 4))
        if isinstance(bands_per_batch, bool) or not isinstance(bands_per_batch, numbers.Integral) \
                or bands_per_batch < 1:
            raise ValueError(f"`bands_per_batch` must be a positive integer, got {bands_per_batch!r}")
        check_tiling(tile, overlap, self.size_multiple)
        x4 = x if x.ndim == 4 else x[None]  # (S, H, W) -> (1, S, H, W)
        B, S = x4.shape[:2]
        K = 2 * self.context_bands + 1
        _warn_unless_unit(x4, value_range, "stack")
        lo, span = _band_ranges(x4, value_range)  # (B, S, 1, 1) each
        x4 = (x4 - lo) / span
        widest = float(span.max())  # a level in the stack's units is checked against its widest band's range
        levels = _blind_levels(sigma, x4.reshape(B * S, 1, *x4.shape[-2:]), widest, self.max_sigma)  # band by band
        if levels is not None and not isinstance(sigma, str):  # sigma / widest -> sigma / each band's span
            levels = levels * widest / span.reshape(-1).cpu()
        gains = _range_gains(levels, self.max_sigma, (B, S, 1, 1), _STACK_RANGE_TARGET)
        if gains is not None:  # noise above the training range: those bands at a lower contrast (see `sigma`)
            x4, pivot = _lower_contrast(x4, gains, (-2, -1))
        idx = spectral_neighbours(S, self.context_bands, self.device)  # (S, K)

        def run(t: torch.Tensor) -> torch.Tensor:  # (B, S, h, w) -> (B, S, h, w)
            h, w = t.shape[-2:]
            out = torch.empty_like(t)
            for g0 in range(0, S, bands_per_batch):
                g = idx[g0:g0 + bands_per_batch]  # (G, K)
                G = g.shape[0]
                feats = t[:, g.reshape(-1)].reshape(B * G, K, h, w)  # (B, G*K, h, w) -> (B*G, K, h, w)
                est = _image_forward(self, feats)  # (B*G, 1, h, w): the middle band of each item
                out[:, g0:g0 + G] = est.reshape(B, G, h, w)  # (B*G, 1, h, w) -> (B, G, h, w)
            return out

        with torch.no_grad():
            y = tiled_apply(run, x4.to(self.device), tile, overlap, self.size_multiple, progress=progress)
        if gains is not None:
            y = _restore_contrast(y, gains, pivot)
        return _to_user((y * span.to(y.device) + lo.to(y.device)).reshape(x.shape), stack)

    def denoise_file(self, src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False,
                     scaling: Literal["dtype", "band_minmax", "band_percentile", "stack_minmax"] | None = None,
                     tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP, bands_per_batch: int = 8,
                     progress: bool = False, sigma: Sigma = None) -> Path:
        """Denoise a stack file or folder into ``dst``, keeping each band's dtype and the GeoTIFF tags.

        Bands are read with per-band ``scaling`` (see :func:`xmodal.imageio.read_stack`), denoised and written back
        in file units (:func:`xmodal.imageio.write_stack`); GDAL ``nodata`` pixels are kept as they are, and the
        network sees the band's mean there (never the sentinel value, which would bleed into valid pixels).

        Args:
            src: a multi-band TIFF or ``.npy`` file, a MATLAB ``.mat`` file (``"scene.mat:variable"`` for one of
                several arrays), an ENVI header or a NIfTI volume (:mod:`xmodal.stackio`), or a folder of
                single-band TIFFs (one band each, natural order).
            dst: a ``.tif``/``.tiff``/``.npy``/``.mat``/``.hdr``/``.nii``/``.nii.gz`` file (a ``.mat``, ENVI or
                NIfTI source written to its own format keeps its other variables, header fields or header bytes; an
                ENVI destination also writes its data file), or a folder (a path without extension, or any path
                when ``src`` is a folder) that receives one file per band with the input's band file names. Written
                atomically: a temp file, or a temp folder renamed when complete (with ``overwrite``, band files
                replace those of an existing folder one by one; its other files are left alone).
            overwrite: replace an existing ``dst``. ``dst`` is never allowed to be ``src`` or one of its bands.
            scaling: per-band scaling of the input; ``None`` (default): the scaling the model was trained with
                (``config.image.scaling``, usually ``band_minmax``: each band spans [0, 1]).
            tile, overlap, bands_per_batch, progress: as in :meth:`denoise`.
            sigma: as in :meth:`denoise`, a float in the scaled units (a fraction of each band's range under
                ``scaling``), or ``"auto"``.

        Returns:
            ``dst`` as a :class:`~pathlib.Path`.

        Raises:
            ImageReadError: ``src`` missing or not readable as a stack (corrupt file, empty folder, bands of
                different sizes, unsupported dtype, NaN...).
            ValueError: ``dst`` is ``src`` or of the wrong kind, an unsupported ``dst`` extension, bands of different
                dtypes into one file, an unknown ``scaling``, bad tiling options, a bad ``sigma``.
            FileExistsError: ``dst`` exists and ``overwrite`` is false.
        """
        import shutil
        import tempfile

        from xmodal.imageio import ImageReadError, check_stack_destination, read_stack, write_stack

        src, dst = Path(src), Path(dst)
        src_file = split_variable(src)[0]  # scene.mat:input -> scene.mat
        if not src_file.exists():
            raise ImageReadError(f"{src}: file or folder not found")
        suffix = stack_suffix(dst)
        folder = suffix not in _STACK_SUFFIXES and (src_file.is_dir() or suffix == "")
        if not folder and suffix not in _STACK_SUFFIXES:
            raise ValueError(f"{dst}: a stack is written to a {'/'.join(_STACK_SUFFIXES)} file or a folder (no "
                             f"extension), got {suffix!r}")
        if is_container(src):
            check_container(src)  # an ambiguous .mat or a bad ENVI header is named before any output question
        _check_image_dst(src_file, dst, overwrite, folder=folder)
        stack, info = read_stack(src, self.config.image.scaling if scaling is None else scaling)  # (S, H, W)
        check_stack_destination(dst, info)  # before the denoising: an ENVI output of int8 bands...
        if suffix == ".hdr":  # the ENVI data file beside dst: never the input's, never replaced unasked
            data = envi_data_path(dst, info.container)
            src_data = envi_data_path(src_file, info.container) if src_file.suffix.lower() == ".hdr" else None
            _check_image_dst(src_file if src_data is None else src_data, data, overwrite)
        x, masks = _fill_nodata(stack, [None if n is None else float(np.float32((n - o) / c))
                                         for n, o, c in zip(info.nodata, info.offset, info.scale)])
        try:
            out = self.denoise(x, tile=tile, overlap=overlap, bands_per_batch=bands_per_batch, progress=progress,
                               sigma=sigma)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{src}: {e}") from None
        _restore_nodata(out, stack, masks)
        if not folder:
            write_stack(dst, out, info)  # atomic
            return dst
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent))
        try:
            bands = tmp / "bands"  # no extension: write_stack writes a folder
            write_stack(bands, out, info)
            if src.is_dir():  # the input's band file names (write_stack writes `{stem}.tif`)
                for name, f in zip(info.band_names, info.files):
                    if Path(f).name != f"{name}.tif":
                        os.replace(bands / f"{name}.tif", bands / Path(f).name)
            if dst.exists():  # overwrite (checked above): replace the band files, keep the folder's other files
                for f in sorted(bands.iterdir()):
                    os.replace(f, dst / f.name)
            else:
                os.replace(bands, dst)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dst


class VideoDenoiser:
    """A trained video model ready to denoise clips of any length, size and channel count.

    Frame ``t`` is denoised from frames ``t - k .. t + k`` (``k = config.image.context_frames``, mirrored at both
    ends of the clip), one frame at a time and tile by tile (:func:`xmodal.tiling.tiled_apply`): memory is one
    temporal window of ``2k + 1`` frames plus one tile's activations, whatever the clip's length or size, and
    :meth:`denoise_file` streams frames from and to disk. A gray model denoises each channel of a colour clip as a gray
    clip; a colour model replicates a gray clip (with a warning, as :class:`ImageDenoiser`). ``max_sigma``: as for
    :class:`ImageDenoiser`.

    Args:
        model: the network (``DenoisingNet``) in eval mode.
        config: its resolved config (``modality: video``).
        device: where the network runs (``cpu`` or ``cuda``).
        name: what to call the model in messages.
        precision: ``fp32`` (default), ``bf16`` (autocast) or ``auto``, as for :class:`ImageDenoiser`.

    Raises:
        ValueError: not a video model, no stem/head for it, or the device is not available.

    Example:
        >>> den = xmodal.load("video")  # doctest: +SKIP
        >>> den.denoise_file("clip_frames/", "clip_clean/")  # a folder of frames  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, config: Config, device: str | torch.device = "cpu", name: str = "",
                 precision: str = "fp32") -> None:
        _setup(self, model, config, device, name, "video")
        self.precision = _check_precision(precision, self.device)
        self.model = self.model.to(memory_format=torch.channels_last)
        self.context_frames = int(config.image.context_frames)
        self.max_sigma = _trained_max_sigma(self.config)

    def __repr__(self) -> str:
        return (f"VideoDenoiser({self.name or 'model'!s}, channels={self.config.image.channels}, "
                f"context_frames={self.context_frames}, align_range={self.adapter.align_range}, "
                f"device={self.device})")

    @property
    def align_range(self) -> int:
        """Motion compensation search range in pixels (``config.image.align_range``; 0 = off). Settable: a range
        wider than in training helps clips with faster motion than the model saw (the search costs more)."""
        return self.adapter.align_range

    @align_range.setter
    def align_range(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"`align_range` must be an integer >= 0, got {value!r}")
        self.adapter.align_range = int(value)

    def _frames(self, read: Callable[[int], torch.Tensor], length: int, tile: int, overlap: int,
                progress: bool, lo: float = 0.0, span: float = 1.0, subsample: int = 1,
                photons: _PhotonNoise | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """``(t, denoised frame (C, H, W))`` for every frame, reading each input frame once (``read(t) -> (C, H,
        W)``) and keeping only the current temporal window; frames are mapped by ``(x - lo) / span`` to the model's
        [0, 1] (photon data: then through the Anscombe transform of ``photons``, mapped by its range) and the output
        back; ``subsample`` as in :meth:`ImageDenoiser.denoise` (the aligned window is sub-sampled)."""
        from tqdm import tqdm

        from xmodal.adapters.image import spectral_neighbours

        mapped = lo != 0.0 or span != 1.0

        check_tiling(tile, overlap, self.size_multiple)
        k = self.context_frames
        idx = spectral_neighbours(length, k).tolist()  # (T, 2k+1)
        cache: dict[int, torch.Tensor] = {}
        pairs: dict[tuple[int, int], torch.Tensor] = {}  # (i, j), i < j -> shift aligning frame j onto frame i
        for t in tqdm(range(length), desc="frames", unit="frame", disable=not progress or length < 2,
                      dynamic_ncols=True):
            for old in [i for i in cache if i < t - k]:
                del cache[old]
            for old in [p for p in pairs if p[0] < t - k]:
                del pairs[old]
            for i in idx[t]:
                if i not in cache:
                    cache[i] = read(i).to(self.device)
                    if mapped:
                        cache[i] = (cache[i] - lo) / span
                    if photons is not None:
                        cache[i] = (anscombe(cache[i], *photons.params) - photons.range[0]) / photons.range[1]
            window = torch.stack([cache[i] for i in idx[t]])  # (2k+1, C, H, W)
            if t == 0:
                subsample = _check_subsample(subsample, *window.shape[-2:])
            shifts = None
            if self.adapter.align_range > 0:  # each pair of frames is aligned once (as `encode` does)
                new = sorted({(min(t, j), max(t, j)) for j in idx[t] if j != t} - set(pairs))
                if new:
                    guides = torch.stack([cache[i].float().mean(dim=0) for i, _ in new]
                                         + [cache[j].float().mean(dim=0) for _, j in new])[None]  # (1, 2P, H, W)
                    found = self.adapter.pair_shifts(guides, [(n, len(new) + n) for n in range(len(new))])[0]
                    pairs.update(zip(new, found))
                shifts = torch.stack([torch.zeros(2, dtype=torch.long, device=self.device) if j == t else
                                      pairs[(t, j)] if t < j else -pairs[(j, t)] for j in idx[t]])
            feats, ctx = self.adapter.encode_middle(window, shifts)
            with torch.no_grad():
                est = subsampled_apply(lambda u: tiled_apply(lambda f: _image_forward(self, f), u, tile, overlap,
                                                             self.size_multiple), feats, subsample)
            out = self.adapter.decode(est, ctx)[0]
            if photons is not None:
                out = inverse_anscombe(out * photons.range[1] + photons.range[0], *photons.params)
            yield t, (out * span + lo if mapped else out)

    def _photons(self, poisson: object, read_noise: object, sigma: Sigma,
                 frames: Callable[[], Iterable[torch.Tensor]]) -> _PhotonNoise | None:
        """``poisson`` / ``read_noise`` of :meth:`denoise` for a clip, checked (with ``sigma``): the photon noise
        (estimated from ``frames()``: up to 8 of its ``(C, H, W)`` frames in [0, 1] units, when ``"auto"``) and the
        mapping of its Anscombe transform to [0, 1], by the range of those frames' transforms, its contrast lowered as
        :meth:`_lowered` does for noise (the transform's, of level 1) above the model's range."""
        check_photon_args(poisson, read_noise, sigma)
        if poisson is None:
            return None
        sample = torch.stack([frame.float() for frame in frames()])
        try:
            photons = _photon_noise(poisson, read_noise, sigma, sample)
        except ValueError as e:  # the estimators name what they read `image`: here, frames of the clip
            raise ValueError(str(e).replace("`image`", f"`clip` ({len(sample)} of its frames)")
                             .replace("the image's", "the clip's")) from None
        lowered = self._lowered(1.0, (anscombe(frame, *photons.params) for frame in sample), *photons.range)
        return replace(photons, range=lowered)

    def _lowered(self, sigma: Sigma, frames: Iterable[torch.Tensor], lo: float, span: float) -> tuple[float, float]:
        """The ``(lo, span)`` mapping of a clip to [0, 1], changed to also lower its contrast about the mean of
        ``frames`` (up to 8 of its ``(C, H, W)`` frames, in its own units) when its noise level (``sigma``, or
        ``"auto"``: the root mean square of those frames' estimates) is above the model's range (see ``sigma`` of
        :meth:`denoise`)."""
        levels, means = [], []
        for frame in frames:  # one at a time in float32: frames can be large (4K)
            mapped = (frame.float() - lo) / span
            level = _blind_levels(sigma, mapped[None], span, self.max_sigma)
            if level is None:
                return lo, span
            levels.append(level)
            means.append(float(mapped.mean()))
        gains = _range_gains(torch.cat(levels).square().mean().sqrt(), self.max_sigma, (1,))
        if gains is None:
            return lo, span
        gain, mean = float(gains), float(np.mean(means))  # ((x - lo) / span - mean) * gain + mean = (x - lo') / span'
        return lo + span * mean * (1.0 - 1.0 / gain), span / gain

    def denoise(self, clip: np.ndarray | torch.Tensor, *, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                subsample: int = 1, progress: bool = False, channels_last: bool = False,
                value_range: ValueRange = None, sigma: Sigma = None,
                poisson: float | Literal["auto"] | None = None,
                read_noise: float | Literal["auto"] = 0.0) -> np.ndarray | torch.Tensor:
        """Denoise a clip held in memory.

        Args:
            clip: ``(T, H, W)`` (gray) or ``(T, C, H, W)`` float in [0, 1], numpy or torch; any ``T``, ``C``, size
                (``(T, H, W, C)`` with ``channels_last``).
            tile: frames larger than ``tile`` pixels on a side are processed in tiles of at most this size.
            overlap: overlap of neighbouring tiles (blended, see :mod:`xmodal.tiling`).
            subsample: pixel-shuffle down-sampling of each frame's motion-compensated window, as in
                :meth:`ImageDenoiser.denoise`: for camera video, whose noise is correlated between neighbouring
                pixels, through a model trained on white noise (``1``, the default, is off).
            progress: show a progress bar over frames.
            channels_last: ``clip`` is ``(T, H, W, C)``, as video readers (PyAV, imageio, OpenCV) give frames; so is
                the result.
            value_range: the values that map to [0, 1], as in :meth:`ImageDenoiser.denoise`: ``None`` takes the clip
                as [0, 1] data, ``(lo, hi)`` maps ``lo`` -> 0 and ``hi`` -> 1 (``(0, 255)`` for 8-bit values in
                floats), ``"auto"`` the clip's own 0.1 and 99.9 percentiles (over all frames and channels, so the
                frames keep their relative brightness). The result is mapped back.
            sigma: the clip's noise level, for noise above the levels the model was trained on (``max_sigma``), as
                in :meth:`ImageDenoiser.denoise`: a float in the clip's units, or ``"auto"`` (estimated from up to 8
                evenly spaced frames, the root mean square of their levels). Above ``0.9 * max_sigma`` the whole
                clip is denoised at a contrast lowered about the mean of those frames, one factor for every frame
                (no flicker), and scaled back. ``None`` (default): as it is.
            poisson, read_noise: photon-limited video (time-lapse microscopy, low-light video), as in
                :meth:`ImageDenoiser.denoise`: the photons at full scale (after ``value_range``) and the read noise;
                every frame goes through the same Anscombe transform, mapped by the range of up to 8 evenly spaced
                frames' transforms, and comes back through the exact unbiased inverse. ``"auto"`` estimates them from
                those frames (one value for the clip). Not with ``sigma``.

        Returns:
            The denoised clip, of the same type, dtype, device and shape as ``clip``.

        Raises:
            TypeError: ``clip`` is not a float numpy array or tensor; ``poisson`` or ``read_noise`` not a number.
            ValueError: a bad shape, an empty axis, NaN/inf values, a channel count the model cannot take, bad
                ``tile``/``overlap``, a bad ``value_range`` or ``sigma``, a ``subsample`` that is not an integer from 1
                to the frames' smaller side; bad ``poisson`` / ``read_noise`` (as for
                :meth:`ImageDenoiser.denoise`).

        Warns:
            UserWarning: the shape looks channels-last (last axis at most 4, the two before it more than 4) and
                ``channels_last`` is not set: the clip would be denoised as frames a few pixels wide; with
                ``value_range=None``, values far from [0, 1] (see :func:`plausible_unit_range`).
        """
        x, hint = _channels_first(clip, "clip", ("(T, H, W) or (T, C, H, W)", "(T, H, W, C)"), (3, 4), channels_last)
        C, M = (1 if x.ndim == 3 else x.shape[1]), int(self.config.image.channels)
        if M != 1 and C not in (1, M):  # as images: the channels-last hint where the shape suggests it
            raise ValueError(f"this model denoises {M}-channel (or gray) videos; `clip` has {C} channels (shape "
                             f"{tuple(x.shape)}); use a gray video model, which takes any channel count{hint}")
        if hint:
            axes = "(T, C, H, W)" if x.ndim == 4 else "(T, H, W)"
            warnings.warn(f"`clip` of shape {tuple(x.shape)} is read as {axes}: frames of {x.shape[-2]} x "
                          f"{x.shape[-1]} pixels{hint}", stacklevel=2)
        if (x.ndim == 3 or x.shape[1] == 1) and int(self.config.image.channels) != 1:
            warnings.warn(_GRAY_INTO_COLOUR.format(what="clip", model="'video' or 'video_gray_real'"), stacklevel=2)
        x4 = x[:, None] if x.ndim == 3 else x  # (T, H, W) -> (T, 1, H, W)
        lo, span = _resolve_range(x4, value_range)
        if poisson is None:  # photon data: values above 1 are photon counts above full scale, not a wrong range
            _warn_unless_unit(x4, value_range, "clip")
        picks = _sample_frames(x4.shape[0])
        photons = self._photons(poisson, read_noise, sigma, lambda: ((x4[int(i)].float() - lo) / span for i in picks))
        if sigma is not None:
            lo, span = self._lowered(sigma, (x4[int(i)] for i in picks), lo, span)
        out = torch.empty_like(x4)
        for t, frame in self._frames(lambda i: x4[i], x4.shape[0], tile, overlap, progress, lo, span, subsample,
                                     photons):
            out[t] = frame.cpu()
        y = out.reshape(x.shape)
        return _to_user(y.movedim(-3, -1) if channels_last else y, clip)  # (T, C, H, W) -> (T, H, W, C)

    def denoise_file(self, src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False,
                     tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP, subsample: int = 1,
                     progress: bool = False, value_range: ValueRange = None, sigma: Sigma = None,
                     poisson: float | Literal["auto"] | None = None, read_noise: float | Literal["auto"] = 0.0,
                     audio: str | Denoiser | AudioProcess | StreamedAudio = "copy") -> Path:
        """Denoise a clip on disk into ``dst``, frame by frame (see :mod:`xmodal.videoio`).

        Args:
            src: a folder of frames (PNG, JPEG, BMP, WebP, TIFF, ``.npy``; natural name order; the alpha channel of
                gray+alpha or RGBA frames is copied, not denoised, as for images), a ``.npy`` clip ``(T, H, W)`` /
                ``(T, H, W, C)``, a multi-page TIFF (one frame per page: a time-lapse or z-stack), or a video file
                (``.mp4``, ``.mov``, ``.mkv``, ``.avi``, ``.webm``; needs PyAV).
            dst: a folder (a path without one of those extensions): one frame file per frame, with the input's
                frame names, formats and bit depth (a ``.npy`` or video input gives ``frame_00000.png``...); a
                ``.npy`` file or a multi-page TIFF (``.tif``, an ImageJ stack) at the input's dtype; or a video file
                at the input's frame rate (codecs: see :mod:`xmodal.videoio`). Written atomically: a temporary
                folder or file beside ``dst``, renamed when every frame is written (with ``overwrite``, the frames
                of an existing folder are replaced and its other files kept).
            overwrite: replace an existing ``dst``; ``dst`` is never allowed to be ``src`` or one of its frames.
            tile, overlap, subsample, progress, sigma, poisson, read_noise: as in :meth:`denoise` (``poisson``:
                photons at the top of ``value_range``, by default the dtype's maximum; float frames with ``poisson``
                are taken as they are, 1 being full scale, as for :meth:`ImageDenoiser.denoise_file`).
            value_range: ``(lo, hi)`` in the file's own units, or ``"auto"`` (percentiles of up to 8 evenly spaced
                frames), as for :meth:`ImageDenoiser.denoise_file`; ``None``: integer frames are scaled by their
                dtype, float frames used as they are when they look like [0, 1] data and auto-ranged otherwise.
            audio: what becomes of the soundtrack of a video file written to a video file: ``"copy"`` (default;
                each audio stream copied as it is, or re-encoded when ``dst``'s container cannot hold its codec),
                ``"drop"``, a speech :class:`Denoiser` (``xmodal.load("speech")``) that denoises it (in two passes
                over each stream, a chunk in memory at a time, whatever its length), or any function ``(wave (C, T)
                float32, sample_rate) -> wave`` (given each stream whole). The audio keeps its timing against the
                frames (a variable frame rate is kept too). A folder or ``.npy`` destination holds no audio:
                ``"copy"`` then leaves it out, and a denoiser is an error.

        Returns:
            ``dst`` as a :class:`~pathlib.Path`.

        Raises:
            ImageReadError: ``src`` missing or not a clip (no frames, a corrupt frame, frames of different sizes or
                dtypes, a ``.npy`` of the wrong shape or dtype...); nothing is written.
            ValueError: ``dst`` is ``src`` or of the wrong kind, a channel count the model or the container cannot
                take, bad tiling options, a bad ``value_range`` or ``sigma``, a bad ``audio``, or an audio denoiser
                for a video file with sound going to a folder or ``.npy`` file.
            FileExistsError: ``dst`` exists and ``overwrite`` is false.
        """
        from xmodal.imageio import _INT_MAX, ImageReadError, alpha_channels
        from xmodal.videoio import TIFF_CLIP_EXTENSIONS, VIDEO_EXTENSIONS, ClipReader, ClipWriter

        src, dst = Path(src), Path(dst)
        if not src.exists():
            raise ImageReadError(f"{src}: clip not found (a folder of frames, a .npy file, a multi-page TIFF or a "
                                 "video file)")
        folder = dst.suffix.lower() not in (".npy", *TIFF_CLIP_EXTENSIONS, *VIDEO_EXTENSIONS)
        _check_image_dst(src, dst, overwrite, folder=folder)
        try:
            value_range = _check_value_range(value_range)
        except ValueError as e:
            raise ValueError(f"{src}: {e}") from None
        process = _audio_process(audio, progress=progress, desc=f"{src.name} (sound)")
        reader = ClipReader(src)
        try:
            to_video = reader.info.kind == "video" and dst.suffix.lower() in VIDEO_EXTENSIONS
            if reader.info.audio and process is not None and not to_video:
                raise ValueError(f"{src}: its soundtrack cannot be denoised into {dst}, a "
                                 f"{'.npy file' if not folder else 'folder of frames'} (no audio there); write a "
                                 f"video file ({', '.join(VIDEO_EXTENSIONS)}) or leave the audio out")
            frame_info = reader.info.frame_info
            keep = alpha_channels(frame_info.mode) if frame_info is not None else 0  # copied, not denoised
            colours = reader.info.shape[1] - keep
            alphas: dict[int, torch.Tensor] = {}  # frame -> its alpha channel, from its reading to its writing

            def read(i: int) -> torch.Tensor:
                frame = torch.from_numpy(reader[i])
                if keep:
                    alphas[i] = frame[colours:]
                return frame[:colours]

            picks = _sample_frames(len(reader))
            sample = None  # frames are read for the range only when it depends on the data
            if poisson is not None and value_range is None and reader.info.dtype not in _INT_MAX:
                lo, span = 0.0, 1.0  # photon data in a float clip: as it is (raw counts: poisson=1)
            elif value_range is None and reader.info.value_range:  # a float clip: read when the reader opened it
                lo, span = reader.info.value_range[0], reader.info.value_range[1] - reader.info.value_range[0]
            else:
                if value_range == "auto" or (value_range is None and poisson is None
                                             and ranged_by_frames(reader.info)):  # 12 bits of 16 (a camera's)
                    sample = torch.from_numpy(np.stack([reader[int(i)][:colours] for i in picks]))  # (<= 8, C, H, W)
                lo, span = _resolve_range(sample, file_value_range(sample, reader.info.dtype, value_range))
            info = reader.info  # a float clip goes into a video file from the range it was denoised in
            info = replace(info, value_range=(lo, lo + span)) if info.dtype not in _INT_MAX else info

            def frames() -> Iterator[torch.Tensor]:  # the sampled frames, read one at a time
                return iter(sample) if sample is not None else \
                    (torch.from_numpy(reader[int(i)][:colours]) for i in picks)

            try:
                photons = self._photons(poisson, read_noise, sigma, lambda: ((f.float() - lo) / span for f in frames()))
                if sigma is not None:
                    lo, span = self._lowered(sigma, frames(), lo, span)
            except (TypeError, ValueError) as e:
                raise type(e)(f"{src}: {e}") from None
            writer = ClipWriter(dst, info, info.shape, overwrite=overwrite,
                                source=src if to_video else None, audio=process or audio)
            try:
                for t, frame in self._frames(read, len(reader), tile, overlap, progress, lo, span, subsample,
                                             photons):
                    writer.write(t, torch.cat([frame.cpu(), alphas.pop(t)]) if keep else frame)  # each read once
                return writer.commit()  # the soundtrack is muxed (and denoised) here
            except ValueError as e:
                writer.abort()
                raise (e if str(src) in str(e) else ValueError(f"{src}: {e}")) from None
            except BaseException:
                writer.abort()
                raise
        finally:
            reader.close()


def ranged_by_frames(info: Any) -> bool:
    """Whether a clip (:class:`~xmodal.videoio.ClipInfo` ``info``) given no value range is mapped to [0, 1] from
    its own sampled frames (:func:`sampled_clip_range`): 16-bit frames, which may use a fraction of their range, not
    decoded from a video file."""
    return info.dtype == "uint16" and info.kind != "video"


def sampled_clip_range(clip: np.ndarray, dtype: str) -> tuple[float, float] | tuple[()]:
    """``(lo, hi)`` the denoise command maps a clip ``(T, C, H, W)`` (read from a file of ``dtype``, not a video
    file) to [0, 1] with when given no range, from the frames it samples (:func:`file_value_range`: 16-bit frames
    short of their range); ``()`` when it takes the clip as it is read."""
    sample = torch.from_numpy(np.stack([np.asarray(clip[int(i)]) for i in _sample_frames(len(clip))]))
    lo, span = _resolve_range(sample, file_value_range(sample, dtype))
    return (lo, lo + span) if (lo, span) != (0.0, 1.0) else ()


def _sample_frames(length: int) -> np.ndarray:
    """Up to 8 evenly spaced frame indices of a clip of ``length`` frames: what a clip's value range and noise level
    are read from."""
    return np.unique(np.linspace(0, length - 1, min(length, 8)).round().astype(int))


def _audio_process(audio: Any, **options: Any) -> AudioProcess | StreamedAudio | None:
    """What :class:`~xmodal.videoio.ClipWriter` does to a soundtrack for ``audio`` of
    :meth:`VideoDenoiser.denoise_file`: ``None`` (copied or dropped), the function itself, or for a speech
    :class:`Denoiser` a :class:`~xmodal.videoio.StreamedAudio` that runs it chunk by chunk with ``options`` (those of
    :meth:`Denoiser.denoise_file`, and ``desc``: the progress bar's label); ``ValueError`` for anything else."""
    from xmodal.videoio import StreamedAudio

    if isinstance(audio, str) and audio in ("copy", "drop"):
        return None
    if isinstance(audio, Denoiser):
        return StreamedAudio(functools.partial(audio._denoise_source, **options))
    if callable(audio) or isinstance(audio, StreamedAudio):
        return audio
    kind = f"a {type(audio).__name__}" if not isinstance(audio, str) else repr(audio)
    raise ValueError(f"`audio` must be 'copy', 'drop', a speech Denoiser (xmodal.load('speech')) or a function "
                     f"(wave, sample_rate) -> wave, got {kind}")


def _is_onnx(path_or_name: Any) -> bool:
    return isinstance(path_or_name, (str, os.PathLike)) and str(path_or_name).lower().endswith(".onnx")


def model_modalities(path_or_name: str | os.PathLike | None) -> tuple[str, ...]:
    """The modalities a model denoises (several for a jointly trained one), read from its config or ONNX metadata
    without loading the network."""
    if _is_onnx(path_or_name):
        if not Path(path_or_name).is_file():
            raise ValueError(f"{path_or_name}: no such ONNX file")
        from xmodal.export import OnnxRuntimeNet

        return (OnnxRuntimeNet(path_or_name).modality,)
    from xmodal.checkpoint import run_config
    from xmodal.pretrained import resolve_model

    return run_config(resolve_model(path_or_name)).modalities


class ModalityNeeded(ValueError):
    """:func:`load` was given a jointly trained model (several modalities) without ``modality``."""


AnyDenoiser = Union[Denoiser, ImageDenoiser, StackDenoiser, VideoDenoiser]
_CLASSES: dict[str, type] = {"speech": Denoiser, "image": ImageDenoiser, "multispectral": StackDenoiser,
                             "video": VideoDenoiser}


def load(path_or_name: str | os.PathLike | None = None, device: str | torch.device = "cpu",
         precision: str = "fp32", modality: str | None = None) -> AnyDenoiser:
    """Load a denoiser of the model's modality.

    Args:
        path_or_name: a bundled name (``None``, ``"default"`` or ``"speech"``: speech; ``"speech_rt"``/``"realtime"``:
            causal speech, streams; ``"image_gray"``/``"gray"``/``"image"``; ``"image_color"``/``"color"``/
            ``"colour"``; ``"image_color_real"``/``"color_real"``/``"colour_real"``/``"photo"``: colour photos with
            camera noise; ``"multispectral"``/``"stack"``; ``"video_gray"``/``"video"``; ``"video_color"``/
            ``"video_colour"``; ``"video_color_real"``/``"video_colour_real"``/``"video_photo"``: colour video with
            camera noise, H.264-coded or not; ``"video_gray_real"``: the same for gray video); a run directory
            (``config.yaml`` + ``model.safetensors``); a ``.safetensors`` file with an embedded config; or an
            ``.onnx`` file written by ``python -m xmodal.export`` (the network then runs in ONNX Runtime, CPU).
        device: ``cpu`` or ``cuda``.
        precision: image and stack models: ``fp32``, ``bf16`` or ``auto`` (see :class:`ImageDenoiser`); speech
            models always run in fp32 (the value is still checked).
        modality: which modality of a jointly trained model (``modality: [speech, image]``) to load; needed for
            those, optional for single-modality models (then it must be the model's).

    Returns:
        A :class:`Denoiser` (``config.modality`` speech), :class:`ImageDenoiser` (image), :class:`StackDenoiser`
        (multispectral) or :class:`VideoDenoiser` (video).

    Raises:
        FileNotFoundError: the bundled model is not installed.
        ValueError: an unknown name or path (the message lists the bundled names), an unknown modality, a joint
            model without ``modality`` or a ``modality`` the model lacks, or an unavailable device.
        CheckpointError: a run directory or weights file that cannot be loaded.

    Example:
        >>> denoiser = xmodal.load()  # doctest: +SKIP
        >>> image_denoiser = xmodal.load("image_gray")  # doctest: +SKIP
    """
    from xmodal.checkpoint import load_run
    from xmodal.pretrained import resolve_model

    if _is_onnx(path_or_name):  # an export of xmodal.export: the network runs in ONNX Runtime
        from xmodal.export import OnnxRuntimeNet, embedded_config

        if not Path(path_or_name).is_file():
            raise ValueError(f"{path_or_name}: no such ONNX file")
        if str(device) != "cpu":
            raise ValueError(f"{path_or_name}: an ONNX export runs on the CPU (ONNX Runtime), not on {device!r}")
        if precision not in ("fp32", "auto"):
            raise ValueError(f"{path_or_name}: an ONNX export runs as exported (fp32, or int8 weights); `precision` "
                             f"must be 'fp32' or 'auto', got {precision!r}")
        net = OnnxRuntimeNet(path_or_name)
        den = _CLASSES[net.modality](net, embedded_config(net), name=str(path_or_name))  # this module's classes
        if modality is not None and modality != den.modality:
            raise ValueError(f"{path_or_name}: an export of the {den.modality} network, not {modality!r}")
        return den
    path = resolve_model(path_or_name)
    model, config = load_run(path)
    if modality is None and config.joint_run:
        raise ModalityNeeded(f"{path}: a model trained jointly on {' and '.join(config.modalities)}: say which to load "
                         f"(modality={config.modalities[0]!r}, ...); the command line picks it from each file")
    if modality is not None and modality not in config.modalities:
        raise ValueError(f"{path}: a model of {' and '.join(config.modalities)}, not {modality!r}"
                         if modality in _CLASSES else
                         f"`modality` must be one of {', '.join(map(repr, _CLASSES))}, got {modality!r}")
    config = config.for_modality(modality or config.modality)
    cls = _CLASSES.get(config.modality)
    if cls is None:
        raise ValueError(f"{path}: config.modality {config.modality!r} has no denoiser (known: "
                         f"{', '.join(_CLASSES)})")
    name = str(path_or_name) if path_or_name is not None else "speech"
    if cls is Denoiser:  # speech runs in fp32 (the STFT path is precision-sensitive); `precision` is checked only
        den = cls(model, config, device=device, name=name)
        _check_precision(precision, den.device)
        return den
    return cls(model, config, device=device, name=name, precision=precision)


# ----------------------------------------------------------------------------------------------------------------
# Command line

_STACK_SUFFIXES = (".tif", ".tiff", ".npy", *CONTAINER_EXTENSIONS)
_KIND = {"speech": "an audio file", "image": "an image file", "multispectral": "a multispectral stack",
         "video": "a video clip"}
_MODEL_KIND = {"speech": "a speech model", "image": "an image model", "multispectral": "a multispectral model",
               "video": "a video model"}


@dataclass(frozen=True)
class _Job:
    """One input of the command line: a file, or a folder read as one stack (single-band TIFFs) or one clip
    (frames)."""

    src: Path
    modality: str
    model: str | None  # bundled name of the default model (None: the --model given)


def _known_extensions() -> dict[str, tuple[str, ...]]:
    """The extensions the command line reads, by kind: ``audio``, ``image`` (images and stacks), ``video``."""
    from xmodal.imageio import IMAGE_EXTENSIONS
    from xmodal.io import AUDIO_EXTENSIONS
    from xmodal.videoio import VIDEO_EXTENSIONS

    return {"audio": tuple(AUDIO_EXTENSIONS), "image": (*IMAGE_EXTENSIONS, *CONTAINER_EXTENSIONS),
            "video": tuple(VIDEO_EXTENSIONS)}


def _known_extensions_text() -> str:
    """``"audio: .wav, ...; images and stacks: .png, ...; video: .mp4, ..."`` for messages."""
    labels = {"audio": "audio", "image": "images and stacks", "video": "video"}
    return "; ".join(f"{labels[kind]}: {', '.join(exts)}" for kind, exts in _known_extensions().items())


def _file_kind(path: Path) -> str | None:
    """``"speech"`` for an audio extension, ``"image"`` for an image one, ``"stack"`` for a MATLAB, ENVI or NIfTI file
    (always a band stack), ``"video"`` for a video file, else ``None``."""
    if is_container(path):
        return "stack"
    suffix = stack_suffix(path)
    kind = next((k for k, exts in _known_extensions().items() if suffix in exts), None)
    return "speech" if kind == "audio" else kind


def _unknown_extension(path: Path) -> str:
    """What the command line reads, for a file it tried as audio because its extension is none of them."""
    return (f"{path.suffix or 'no extension'!r} is none of the known extensions ({_known_extensions_text()}; other "
            "audio formats libsndfile reads work too, as do folders of frames or band TIFFs with --modality)")


def _peek_channels(path: Path) -> tuple[int, str]:
    """``(channels, mode)`` of an image file from its header (no pixel data is read); a file the header reader
    rejects is read by :func:`~xmodal.imageio.read_image`, which raises :class:`ImageReadError` naming the reason."""
    from xmodal.imageio import (IMAGE_EXTENSIONS, PILLOW_FORMATS, _tiff_alpha, npy_channels_last, pillow_formats,
                                read_image, tiff_mode)

    suffix = path.suffix.lower()
    try:
        if IMAGE_EXTENSIONS.get(suffix) in PILLOW_FORMATS:
            from PIL import Image

            with Image.open(path, formats=pillow_formats()) as im:
                mode = {"P": "RGB", "PA": "RGBA", "1": "L"}.get(im.mode, im.mode)
                mode = "L" if mode.startswith("I") or mode == "F" else mode
                return len(Image.getmodebands(mode)), mode
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                if len(tif.series) == 1:
                    series = tif.series[0]
                    channels = math.prod(n for n, a in zip(series.shape, series.axes) if a not in "YX")
                    if channels > 0 and 0 not in series.shape:
                        page = tif.pages[0]
                        photometric = int(page.photometric)
                        if photometric == 3 and channels == 1:  # palette: read as its colours
                            return 3, "RGB"
                        photometric = 2 if photometric == 6 else photometric  # YCbCr: decoded to RGB
                        return channels, tiff_mode(photometric, channels, _tiff_alpha(page))
        if suffix == ".npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if arr.size and arr.ndim in (2, 3) and arr.dtype.kind in "uif":
                channels = 1 if arr.ndim == 2 else arr.shape[-1] if npy_channels_last(arr.shape) else arr.shape[0]
                return int(channels), {1: "L", 3: "RGB"}.get(int(channels), "multiband")  # .npy holds no alpha
    except Exception:  # a corrupt header: read_image below names the reason
        pass
    image, info = read_image(path)  # raises ImageReadError for anything it cannot read
    return image.shape[0], info.mode


_CAMERA_SUFFIXES = (".jpg", ".jpeg", ".heic", ".heif", ".avif")  # what cameras and phones save photos as


def _default_image_model(path: Path, forced: str | None) -> tuple[str, str]:
    """``(modality, bundled model name)`` for an image file from its channel count and format (auto or ``--modality
    image``): colour photos in a camera format (JPEG, HEIC, AVIF) get the model trained on camera noise, other colour
    images the white-noise one; gray pictures stored as RGB (:func:`_gray_picture`) the gray model; a 3-band TIFF
    not tagged RGB is a band stack (the gray model band by band with ``--modality image``)."""
    from xmodal.imageio import alpha_channels

    channels, mode = _peek_channels(path)
    colour = channels - alpha_channels(mode)  # an alpha channel is copied, not denoised
    bands = mode == "multiband"  # a TIFF's samples or pages that are not tagged RGB: bands, not colours
    if forced is None and (colour > 3 or (colour == 3 and bands)) and mode != "CMYK" \
            and path.suffix.lower() in _STACK_SUFFIXES:
        return "multispectral", "multispectral"  # 4 bands or more, none of them alpha (RGB+NIR), or 3 untagged
    if colour != 3 or mode == "CMYK" or bands or _gray_picture(path):
        return "image", "image_gray"
    return "image", "image_color_real" if path.suffix.lower() in _CAMERA_SUFFIXES else "image_color"


def _gray_picture(path: Path, levels: int = 2) -> bool:
    """Whether an RGB(A) file holds a gray picture: its three channels within ``levels`` 8-bit levels of each other
    everywhere (a gray photo saved as colour, whose noise is then the same in the three channels, which a colour
    model barely removes). Pillow formats are read at most 1024 pixels on a side (JPEG decoded at a reduced scale);
    8/16-bit TIFF and ``.npy`` whole, up to 16 M pixels. Float files, larger ones, and any file that cannot be read
    are taken as colour (its reader then says why)."""
    from PIL import Image

    from xmodal.imageio import IMAGE_EXTENSIONS, PILLOW_FORMATS, pillow_formats, read_image

    if IMAGE_EXTENSIONS.get(path.suffix.lower()) not in PILLOW_FORMATS:
        try:
            image, info = read_image(path)  # (C, H, W) in [0, 1]
        except Exception:
            return False
        if info.dtype not in ("uint8", "uint16") or info.mode not in ("RGB", "RGBA") or image[0].size > 1 << 24:
            return False
        return float(np.abs(np.diff(image[:3], axis=0)).max()) <= (levels + 0.5) / 255
    try:
        with Image.open(path, formats=pillow_formats()) as im:
            if im.mode not in ("RGB", "RGBA"):
                return False
            im.draft("RGB", (1024, 1024))  # JPEG: a reduced-scale decode, no-op for other formats
            small = im.convert("RGB")
            small.thumbnail((1024, 1024))  # equal channels stay equal
            rgb = np.asarray(small, dtype=np.int16)  # (h, w, 3)
    except Exception:  # a heuristic: whatever fails here, the file is taken as colour and its reader says why
        return False
    return int(np.abs(np.diff(rgb, axis=-1)).max()) <= levels


def _audio_only(src: Path) -> bool:
    """Whether a video-container file holds sound and no picture (from its header; ``False`` without PyAV or when
    it cannot be read: the video reader then says why)."""
    from xmodal.io import av_streams

    try:
        pictures, sounds = av_streams(src)
    except ImportError:
        return False
    return sounds > 0 and pictures == 0


def _default_video_model(src: Path) -> str:
    """The bundled model for a clip. What cameras and phones film (video files, folders of JPEG/HEIC/AVIF frames)
    gets a model trained on camera noise and video coding: ``video_color_real`` for colour, ``video_gray_real`` for
    gray (one channel; 8-bit gray frames). ``(T, H, W, 3)`` arrays, RGB multi-page TIFFs and folders of RGB or RGBA
    frames in other formats get ``video_color`` (white noise); the rest ``video_gray`` (which denoises any channel
    count, channel by channel), gray footage stored as colour (:func:`_gray_clip`) included. Only a header is read
    (the stream's pixel format, the array's or TIFF's shape, the first frame's header), and for colour clips up to 8
    frames; a clip that cannot be read this way gets ``video_gray``, whose reader then reports why with the file's
    name."""
    from xmodal.videoio import TIFF_CLIP_EXTENSIONS, VIDEO_EXTENSIONS, clip_frames, video_channels

    try:
        if src.is_dir():
            first = clip_frames(src)[0]
            camera, mode = first.suffix.lower() in _CAMERA_SUFFIXES, _peek_channels(first)[1]
            colour, gray = mode in ("RGB", "RGBA"), mode == "L"  # RGBA: the alpha is copied
        elif src.suffix.lower() in VIDEO_EXTENSIONS:
            channels = video_channels(src)
            camera, colour, gray = True, channels == 3, channels == 1
        elif src.suffix.lower() in TIFF_CLIP_EXTENSIONS:
            import tifffile

            from xmodal.videoio import _tiff_layout

            with tifffile.TiffFile(src) as tif:
                shape = _tiff_layout(tif)[1]
            camera, colour, gray = False, len(shape) == 4 and shape[-1] == 3, False
        else:
            shape = np.load(src, mmap_mode="r", allow_pickle=False).shape
            camera, colour, gray = False, len(shape) == 4 and shape[-1] == 3, False
    except Exception:  # the denoiser's reader gives the real error
        return "video_gray"
    if colour and _gray_clip(src):  # gray footage stored as colour: a gray model, as for images
        colour, gray = False, True
    if colour:
        return "video_color_real" if camera else "video_color"
    return "video_gray_real" if camera and gray else "video_gray"


def _gray_clip(src: Path, levels: int = 2) -> bool:
    """Whether a colour clip holds gray pictures: in each of up to 8 evenly spaced frames (one black frame says
    nothing about the rest) the first three channels are within ``levels`` of 255 of each other everywhere. A clip
    that cannot be read is taken as colour (its reader reports why later)."""
    from xmodal.videoio import ClipReader

    try:
        reader = ClipReader(src)
    except Exception:
        return False
    try:
        for t in _sample_frames(len(reader)):
            frame = reader[int(t)][:3]  # (3, H, W) float32 in [0, 1] for integer frames
            if frame.shape[0] < 3 or float(np.abs(np.diff(frame, axis=0)).max()) > (levels + 0.5) / 255:
                return False
        return True
    except Exception:
        return False
    finally:
        reader.close()


def _list_folder(folder: Path, modality: str | None) -> list[Path]:
    """Files of ``folder`` to denoise (sorted): for a speech model its audio files and the video files that hold
    sound only (browser recordings), for an image model its image files, and with no model chosen (``modality``
    None) its audio, image and video files, each to be denoised as what it is."""
    from xmodal.imageio import IMAGE_EXTENSIONS
    from xmodal.io import AUDIO_EXTENSIONS
    from xmodal.videoio import VIDEO_EXTENSIONS

    if modality == "speech":
        files = sorted(p for p in folder.iterdir() if p.is_file() and (p.suffix.lower() in AUDIO_EXTENSIONS or (
            p.suffix.lower() in VIDEO_EXTENSIONS and _audio_only(p))))
        return files or list_audio_files(folder)  # the audio CLI's message for a folder without audio
    exts = (*IMAGE_EXTENSIONS, *((*CONTAINER_EXTENSIONS, *AUDIO_EXTENSIONS, *VIDEO_EXTENSIONS) if modality is None
                                 else ()))
    files = sorted(p for p in folder.iterdir() if p.is_file() and stack_suffix(p) in exts
                   and not (p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS))  # as list_audio_files
    # for audio; hidden image files (macOS "._x.png", temp files) are skipped, as read_stack does
    if not files:
        what = "image" if modality else "audio, image or video"
        raise ValueError(f"{folder}: no {what} files ({', '.join(dict.fromkeys(exts))}) in this folder")
    return files


def _holds_frames(folder: Path) -> bool:
    """Whether ``folder`` is one clip of frames: it holds image files, and none of its first 3 TIFFs (in name order)
    is a multi-page TIFF clip (a folder of time-lapses is a folder of clips, a stray single image among them
    reported on its own)."""
    from xmodal.imageio import IMAGE_EXTENSIONS
    from xmodal.videoio import TIFF_CLIP_EXTENSIONS, is_clip

    images = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                    and not f.name.startswith("."))
    tiffs = [f for f in images if f.suffix.lower() in TIFF_CLIP_EXTENSIONS]
    return bool(images) and not any(is_clip(f) for f in tiffs[:3])


def _expand_inputs(items: list[str], modality: str | None = "speech") -> tuple[list[Path], list[str]]:
    """Files, folders and globs -> (unique paths in order, error messages).

    Folders expand to their files of ``modality`` (:func:`_list_folder`); a ``multispectral`` or
    ``video`` folder is kept as one path (one stack of single-band TIFFs, one clip of frames), except a
    ``multispectral`` folder holding no TIFF, which expands to its stack files (``.npy``, ``.mat``, ENVI headers,
    NIfTI volumes), and a ``video`` folder holding no frame, which expands to its clips (sub-folders, ``.npy`` and
    video files).
    """
    from xmodal.imageio import TIFF_EXTENSIONS
    from xmodal.videoio import TIFF_CLIP_EXTENSIONS, VIDEO_EXTENSIONS

    paths: list[Path] = []
    errors: list[str] = []
    for item in items:
        p = Path(item)
        matches = [p] if split_variable(p)[0].exists() else [Path(m) for m in sorted(glob.glob(item, recursive=True))]
        if not matches:
            errors.append(f"{item}: file not found" + (" (no match for this pattern)" if glob.has_magic(item) else ""))
        for m in matches:
            if m.is_dir() and modality not in ("multispectral", "video"):
                try:
                    paths.extend(_list_folder(m, modality))
                except (ValueError, OSError) as e:
                    errors.append(str(e))
            elif m.is_dir() and modality == "multispectral" and not any(
                    f.is_file() and f.suffix.lower() in TIFF_EXTENSIONS and not f.name.startswith(".")
                    for f in m.iterdir()):  # no band TIFFs: a folder of stack files (.mat, ENVI, NIfTI...)
                files = sorted(f for f in m.iterdir() if f.is_file() and not f.name.startswith(".")
                               and stack_suffix(f) in (".npy", *CONTAINER_EXTENSIONS))
                if files:
                    paths.extend(files)
                else:
                    errors.append(f"{m}: holds no band TIFFs (one stack) and no stack files (.npy, "
                                  f"{', '.join(CONTAINER_EXTENSIONS)})")
            elif m.is_dir() and modality == "video" and not _holds_frames(m):
                clips = sorted(f for f in m.iterdir() if not f.name.startswith(".") and (
                    f.is_dir() or f.suffix.lower() in (".npy", *TIFF_CLIP_EXTENSIONS, *VIDEO_EXTENSIONS)))
                if clips:
                    paths.extend(clips)
                else:
                    errors.append(f"{m}: holds no frames and no clips (sub-folders of frames, .npy, multi-page TIFF "
                                  "or video files)")
            else:
                paths.append(m)
    unique: dict[Path, Path] = {}
    for f in paths:
        unique.setdefault(f.resolve(), f)
    return list(unique.values()), errors


def _plan_job(src: Path, model_modality: str | None, forced: str | None) -> _Job:
    """The modality and default model of one input; ``ValueError`` when it does not suit the model or
    ``--modality``."""
    kind = "folder" if src.is_dir() else _file_kind(src)
    target = model_modality or forced
    if kind == "video" and _audio_only(src):  # a video container holding sound only (browser recordings)
        kind = "speech"
    if kind == "stack" and not model_modality and stack_suffix(src) in NIFTI_EXTENSIONS:
        raise ValueError(f"{src}: no bundled model is trained on medical volumes (MRI magnitude noise is Rician, "
                         "with a bias a Gaussian denoiser keeps): pass --model with a run trained on your scans "
                         "(recipes/multispectral.yaml with image.noise.kind=rician, slices as bands), or "
                         "--model multispectral for the satellite-trained band model")
    if target is None:  # auto: the file decides
        if kind == "stack":
            return _Job(src, "multispectral", "multispectral")
        if kind == "video":
            return _Job(src, "video", _default_video_model(src))
        if kind == "image":
            modality, name = _default_image_model(src, None)
            return _Job(src, modality, name)
        return _Job(src, "speech", "speech")  # audio, and unknown extensions (libsndfile decides), as before
    why = (f"the model is {_MODEL_KIND[target]}" if model_modality else f"--modality {target} was given")
    if target == "speech":
        if kind in ("image", "stack", "folder"):
            this = {"folder": "a folder", "stack": _KIND["multispectral"]}.get(kind, _KIND["image"])
            raise ValueError(f"{src}: {why}; this is {this} (use an image or multispectral model)")
        return _Job(src, "speech", None if model_modality else "speech")
    if kind == "speech":
        raise ValueError(f"{src}: {why}; this is {_KIND['speech']} (use a speech model, or leave --model and "
                         "--modality out)")
    if kind == "stack" and target != "multispectral":
        raise ValueError(f"{src}: {why}; a .mat, ENVI or NIfTI file is read as a band stack (use a multispectral "
                         "model, or leave --model and --modality out)")
    if kind == "video" and target != "video":
        raise ValueError(f"{src}: {why}; this is a video file (use a video model, e.g. video_photo for phone and "
                         "camera footage, or leave --model and --modality out)")
    if target == "image":
        if kind == "folder":  # unreachable: folders are expanded for image models
            raise ValueError(f"{src}: {why}; a folder is read as one stack by multispectral models only")
        return _Job(src, "image", None if model_modality else _default_image_model(src, "image")[1])
    if target == "multispectral":
        if kind not in ("folder", "stack") and src.suffix.lower() not in _STACK_SUFFIXES:
            raise ValueError(f"{src}: {why}; a stack must be a {'/'.join(_STACK_SUFFIXES)} file or a folder of "
                             f"single-band TIFFs, got {src.suffix or 'no extension'!r}")
        return _Job(src, "multispectral", None if model_modality else "multispectral")
    if target == "video":
        from xmodal.videoio import TIFF_CLIP_EXTENSIONS, VIDEO_EXTENSIONS

        if kind != "folder" and src.suffix.lower() not in (".npy", *TIFF_CLIP_EXTENSIONS, *VIDEO_EXTENSIONS):
            raise ValueError(f"{src}: {why}; a clip must be a folder of frames, a .npy file (T, H, W) / "
                             f"(T, H, W, C), a multi-page TIFF or a video file ({', '.join(VIDEO_EXTENSIONS)}), got "
                             f"{src.suffix or 'no extension'!r}")
        return _Job(src, "video", None if model_modality else _default_video_model(src))
    raise ValueError(f"unknown modality {target!r}")  # unreachable: argparse checks --modality


def _parser() -> argparse.ArgumentParser:
    from xmodal.imageio import StackScaling

    p = argparse.ArgumentParser(
        prog=command_name("denoise"),
        description="Denoise audio files (WAV, FLAC, OGG, Opus, MP3, M4A...; any rate, channel count and length), "
                    "images (PNG, JPEG, BMP, WebP, AVIF, TIFF, .npy, HEIC; bit depth and format kept), multispectral "
                    "stacks (multi-band TIFF/.npy files, MATLAB .mat (scene.mat:variable for one of several "
                    "arrays), ENVI .hdr rasters, NIfTI .nii/.nii.gz volumes with --model, or folders of single-band "
                    "TIFFs with --modality multispectral) and video clips (video files such as .mp4 with PyAV "
                    "installed, their sound kept in sync (--audio); folders of frames or (T, H, W[, C]) .npy files "
                    "with --modality video or a "
                    "video --model) into OUT_DIR, keeping their names. Without --model the modality and the bundled "
                    "model follow each file: audio (and video files holding sound only) -> 'speech', 1-channel "
                    "images and gray pictures saved as RGB -> 'image_gray', colour JPEG/HEIC/AVIF photos -> "
                    "'image_color_real' (trained on camera noise), other 3/4-channel images -> 'image_color' (white "
                    "Gaussian noise), TIFF/.npy with 4 or more channels none of them alpha, and 3-band TIFFs not "
                    "tagged RGB -> 'multispectral', colour video files and "
                    "folders of JPEG/HEIC/AVIF frames -> 'video_color_real' (camera noise, H.264-coded or JPEG "
                    "frames), gray ones (gray footage stored as colour too) -> 'video_gray_real', other colour frame "
                    "folders and .npy clips -> 'video_color' (white noise), other gray clips -> 'video_gray'. "
                    "--model color, video_color or video_gray for white noise, --model photo, video_photo or "
                    "video_gray_real for camera noise. Exit status: 0 all done, 1 some files failed (each is "
                    "reported with its reason), 2 usage error or model not loadable.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders or glob patterns")
    p.add_argument("-o", "--output-dir", required=True, metavar="OUT_DIR", help="folder for the outputs (created)")
    p.add_argument("--model", default=None, metavar="RUN_DIR_OR_NAME",
                   help="run directory, .safetensors file, .onnx export or bundled name (e.g. speech_rt: the causal "
                        "real-time speech model; photo / video_photo: colour photos / video with camera noise); its "
                        "modality decides (default: a bundled model per file)")
    p.add_argument("--modality", choices=["auto", "speech", "image", "multispectral", "video"], default="auto",
                   help="treat every input as this modality (default auto: from the file, or from --model); with "
                        "multispectral a folder is one stack, with video one clip (bundled model 'video_color_real' "
                        "for colour video files and JPEG/HEIC/AVIF frames, 'video_gray_real' for gray ones, "
                        "'video_color' for other RGB frames, else 'video_gray')")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (inputs are never replaced)")
    p.add_argument("--mix", type=float, default=1.0, help="speech: dry/wet: 0 = input, 1 = fully denoised (default 1)")
    p.add_argument("--atten-limit-db", type=float, default=None, metavar="DB",
                   help="speech: suppress noise by at most DB decibels (default: no limit)")
    p.add_argument("--no-full-band", dest="full_band", action="store_false",
                   help="speech: stop the output at the model's band (8 kHz) instead of keeping the input's content "
                        "above it (44.1/48 kHz audio) with the gain the network applies just below")
    p.add_argument("--chunk-seconds", type=float, default=DEFAULT_CHUNK_SECONDS, metavar="S",
                   help=f"speech: process in chunks of about S seconds (default {DEFAULT_CHUNK_SECONDS:g})")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE, metavar="N",
                   help=f"images/stacks/video: process in tiles of at most N x N pixels (default {DEFAULT_TILE})")
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, metavar="N",
                   help=f"images/stacks/video: overlap of neighbouring tiles in pixels (default {DEFAULT_OVERLAP})")
    p.add_argument("--sigma", type=_sigma_arg, default="auto", metavar="S",
                   help="images, stacks and video: the noise standard deviation in the units files are read in "
                        "(integer files: a fraction of the dtype's range, 0.098 = 25/255 in an 8-bit file, even with "
                        "--value-range; float files: their values; stacks: a fraction of each band's scaled range), "
                        "'auto' (default: estimated from each image, band or 8 frames of a clip; white Gaussian "
                        "noise) or 'none'. Non-blind models take it as input; noise above what a model was trained "
                        "on (50/255 for the bundled image and video models, 0.1 for the stack model) is denoised at a "
                        "lower contrast, restored after ('none': as it is)")
    p.add_argument("--poisson", type=number_or_auto("the photons at full scale"), default=None, metavar="PHOTONS",
                   help="images and video: photon-limited data (microscopy and its time-lapses, astronomy, X-ray, "
                        "low light), PHOTONS the photons (electrons) a pixel at full scale holds (full scale: the "
                        "dtype's maximum, or HI of --value-range LO,HI with LO the black level): the data is denoised "
                        "through the generalized Anscombe transform and its exact unbiased inverse, so "
                        "signal-dependent noise becomes what the model knows (replaces --sigma); 'auto' estimates "
                        "PHOTONS from each image or clip (8 of its frames)")
    p.add_argument("--read-noise", type=number_or_auto("the read noise"), default=0.0, metavar="S",
                   help="with --poisson: the sensor's Gaussian read noise, a standard deviation as a fraction of full "
                        "scale (default 0), or 'auto': estimated from each image (with PHOTONS, or given them)")
    p.add_argument("--scaling", choices=list(get_args(StackScaling)), default=None,
                   help="stacks: per-band scaling of the input (default: the one the model was trained with, "
                        "image.scaling of its config; band_minmax for the bundled model)")
    p.add_argument("--ensemble", action="store_true",
                   help="images: average the 8 flips/rotations (8 times slower, a little better)")
    p.add_argument("--subsample", type=int, default=1, metavar="S",
                   help="images and video: denoise the S x S sub-images of every S-th pixel and interleave them back "
                        "(pixel-shuffle down-sampling): real photos, whose noise is correlated between neighbouring "
                        "pixels, through a model trained on white noise such as 'gray'; 2 is usual. Not needed "
                        "with 'color_real' (default 1: off)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32",
                   help="image/stack/video models: bf16 is about twice as fast on CPUs with AVX-512 BF16 / AMX "
                        "(auto: bf16 where native); speech always runs in fp32 (default fp32)")
    p.add_argument("--value-range", default=None, metavar="auto|LO,HI",
                   help="images and video: the values that map to the model's [0, 1], in the file's units: LO,HI "
                        "(e.g. 0,4095 for 12-bit data in 16-bit files) or auto (the 0.1-99.9 percentiles of the "
                        "image, or of up to 8 frames of a clip). Default: integer files by their dtype; float files "
                        "as they are when they look like [0, 1] data, else auto")
    p.add_argument("--format", action="append", default=[], metavar="EXT",
                   help="write outputs with this extension instead of the input's, for the inputs of its kind: an "
                        "image one (png, tif, ...: e.g. JPEGs denoised into lossless PNGs) for image and stack files, "
                        "an audio one (wav, flac, ...) for audio files, a video one (mkv: lossless FFV1, ...) for "
                        "video, .npy and TIFF clips (npy or tif also turn .npy and TIFF clips into each other); repeat "
                        "it for several kinds (default: each input's own)")
    p.add_argument("--audio", choices=["copy", "denoise", "drop"], default="copy",
                   help="video files written as video files: their soundtrack is copied (default; re-encoded when "
                        "the output container cannot hold its codec), denoised with the speech model of "
                        "--audio-model (with --mix, --atten-limit-db, --chunk-seconds), or dropped; kept in sync "
                        "with the frames")
    p.add_argument("--audio-model", default="speech", metavar="RUN_DIR_OR_NAME",
                   help="the speech model of --audio denoise (default: the bundled 'speech')")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary (errors are still printed)")
    return p


def _parse_value_range(text: str | None) -> ValueRange:
    """``--value-range`` -> ``None``, ``"auto"`` or ``(lo, hi)``; ``ValueError`` naming the option otherwise."""
    if text is None or text == "auto":
        return text
    try:
        return _check_value_range(tuple(float(v) for v in text.split(",")))
    except ValueError:
        raise ValueError(f"--value-range: expected 'auto' or LO,HI with LO < HI (e.g. 0,4095), got {text!r}") from None


def _sigma_arg(value: str) -> float | str | None:
    """``--sigma``: a number >= 0, ``auto`` or ``none`` (-> ``None``)."""
    if value in ("auto", "none"):
        return None if value == "none" else value
    try:
        level = float(value)
    except ValueError:
        level = math.nan
    if not math.isfinite(level) or level < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 (0.098 for 25/255), 'auto' or 'none', got {value!r}")
    return level


def _output_formats(formats: list[str]) -> dict[str, str]:
    """``--format`` values -> ``{"audio" | "image" | "video": ".ext"}``; ``ValueError`` for an unknown extension or
    two of one kind."""
    chosen: dict[str, str] = {}
    for value in formats:
        ext = "." + value.lower().lstrip(".")
        kind = next((k for k, exts in _known_extensions().items() if ext in exts), None)
        if kind is None:
            raise ValueError(f"--format {value}: unknown extension ({_known_extensions_text()})")
        if kind in chosen and chosen[kind] != ext:
            raise ValueError(f"--format {value}: {kind} outputs are already {chosen[kind]} (one --format per kind)")
        chosen[kind] = ext
    return chosen


def _output_path(out_dir: Path, job: _Job, formats: dict[str, str]) -> Path:
    """Where ``job``'s output goes: its name in ``out_dir``, with the ``--format`` extension of its kind if any
    (folders, read as one stack or clip, keep their names)."""
    src = split_variable(job.src)[0]  # scene.mat:input -> scene.mat (its other variables are kept)
    kind = {"speech": "audio", "image": "image", "multispectral": "image", "video": "video"}[job.modality]
    array_clips = (".npy", ".tif", ".tiff")
    if kind == "video" and "video" not in formats and src.suffix.lower() in array_clips \
            and formats.get("image") in array_clips:
        kind = "image"  # a .npy clip written as a TIFF stack, or the other way round
    if src.is_dir() or kind not in formats:
        return out_dir / src.name
    stem = stack_stem(src)
    if stem.lower().endswith(".ome") and formats[kind] not in (".tif", ".tiff"):  # cells.ome.tif -> cells.npy
        stem = stem[:-4]
    return out_dir / (stem + formats[kind])


def _warn_unused(src: Path, what: str, **given: bool) -> None:
    """Warn that the command line options ``given`` (``True``: set) do not apply to ``src``, ``what`` it is."""
    unused = [f"--{name}" for name, on in given.items() if on]
    if unused:
        warnings.warn(f"{src}: {' and '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply to {what}: "
                      "not used for it", stacklevel=3)


def _run_job(den: AnyDenoiser, job: _Job, dst: Path, args: argparse.Namespace,
             speech: Denoiser | None = None) -> None:
    progress = not args.quiet
    if args.poisson is not None and not isinstance(den, (ImageDenoiser, VideoDenoiser)):
        what = {"speech": "audio", "multispectral": "a band stack"}.get(den.modality, den.modality)
        hint = " (a time-lapse or z-stack in one TIFF: --modality video)" if den.modality == "multispectral" \
            and job.src.suffix.lower() in (".tif", ".tiff") else ""
        raise ValueError(f"{job.src}: --poisson applies to images and video, not to {what}{hint}")
    if isinstance(den, Denoiser):
        den.denoise_file(job.src, dst, overwrite=args.overwrite, mix=args.mix, atten_limit_db=args.atten_limit_db,
                         chunk_seconds=args.chunk_seconds, progress=progress, full_band=args.full_band)
    elif isinstance(den, ImageDenoiser):
        den.denoise_file(job.src, dst, overwrite=args.overwrite, tile=args.tile, overlap=args.overlap,
                         sigma=args.sigma, ensemble=args.ensemble, subsample=args.subsample, progress=progress,
                         value_range=args.value_range, poisson=args.poisson, read_noise=args.read_noise)
    elif isinstance(den, StackDenoiser):
        if args.value_range is not None:
            raise ValueError(f"{job.src}: --value-range applies to images and clips; a band stack is scaled band by "
                             "band (--scaling)")
        _warn_unused(job.src, "a band stack", ensemble=args.ensemble, subsample=args.subsample != 1)
        den.denoise_file(job.src, dst, overwrite=args.overwrite, scaling=args.scaling, tile=args.tile,
                         overlap=args.overlap, progress=progress, sigma=args.sigma)
    elif isinstance(den, VideoDenoiser):
        _warn_unused(job.src, "a clip", ensemble=args.ensemble)
        audio = args.audio if speech is None else _audio_process(
            speech, mix=args.mix, atten_limit_db=args.atten_limit_db, chunk_seconds=args.chunk_seconds,
            full_band=args.full_band, progress=progress, desc=f"{job.src.name} (sound)")
        den.denoise_file(job.src, dst, overwrite=args.overwrite, tile=args.tile, overlap=args.overlap,
                         subsample=args.subsample, progress=progress, value_range=args.value_range, sigma=args.sigma,
                         poisson=args.poisson, read_noise=args.read_noise, audio=audio)
    else:  # unreachable: load returns one of the four
        raise TypeError(f"unexpected denoiser {type(den).__name__}")


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0 ok, 1 some files failed, 2 usage error, 130 Ctrl-C, 143
    SIGTERM)."""
    return run_command(_main, argv, "the files finished so far are written; the one in progress was not")


def _main(argv: list[str] | None) -> int:
    from tqdm import tqdm

    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse exits on --help (0) and on usage errors (2)
        return int(e.code or 0)

    def report(message: str) -> None:
        tqdm.write(f"error: {message}", file=sys.stderr)

    from xmodal.runtime import keep_freed_memory

    keep_freed_memory()  # reuse freed feature maps instead of page-faulting fresh ones (about 20% faster on CPU)

    try:
        _check_options(args.mix, args.atten_limit_db, args.chunk_seconds, None)
        check_tiling(args.tile, args.overlap)
        if args.subsample < 1:
            raise ValueError(f"--subsample must be an integer >= 1, got {args.subsample}")
        formats = _output_formats(args.format)
        args.value_range = _parse_value_range(args.value_range)
        check_photon_args(args.poisson, args.read_noise, args.sigma if isinstance(args.sigma, float) else None)
        if args.poisson is not None:
            args.sigma = None  # the default 'auto' gives way to the transform's level
    except ValueError as e:
        report(str(e).replace("`mix`", "--mix").replace("`atten_limit_db`", "--atten-limit-db")
               .replace("`chunk_seconds`", "--chunk-seconds").replace("`tile`", "--tile")
               .replace("`overlap`", "--overlap").replace("`poisson`", "--poisson")
               .replace("`read_noise`", "--read-noise").replace("`sigma`", "--sigma"))
        return 2
    out_dir = Path(args.output_dir)
    created = not out_dir.exists()
    if out_dir.exists() and not out_dir.is_dir():
        report(f"-o {out_dir}: a file; -o names the output folder (outputs keep their input's name in it)")
        return 2
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        report(f"{out_dir}: cannot create the output folder ({e.strerror or e})")
        return 2

    def denoise_all() -> int:
        forced = None if args.modality == "auto" else args.modality
        # denoisers by (bundled name, modality); (None, modality) is --model's (a joint model gives one per modality)
        models: dict[tuple[str | None, str], AnyDenoiser] = {}
        model_modality = None
        available: tuple[str, ...] = ()
        if args.model is not None:
            try:
                available = model_modalities(args.model)
                if forced is not None and forced not in available:
                    report(f"--modality {forced} does not match the model {args.model}: it is "
                           + (_MODEL_KIND[available[0]] if len(available) == 1 else
                              f"a joint model of {' and '.join(available)}"))
                    return 2
                first = forced or available[0]
                models[(None, first)] = load(args.model, args.device, args.precision, modality=first)
            except (ValueError, OSError) as e:  # unknown name, bundled model missing, bad checkpoint, no CUDA
                report(str(e))
                return 2
            model_modality = forced or (available[0] if len(available) == 1 else None)  # None: joint, per file
        paths, errors = _expand_inputs(args.inputs, model_modality or forced)
        for message in errors:
            report(message)
        failed, done = len(errors), 0
        jobs: list[_Job] = []
        for src in paths:  # the modality and model of each input, from its extension and header
            try:
                job = _plan_job(src, model_modality, forced)
                if available and model_modality is None:  # a joint model: the file decides among its modalities
                    if job.modality not in available:
                        raise ValueError(f"{src}: the model {args.model} is a joint model of "
                                         f"{' and '.join(available)}; this is {_KIND[job.modality]}")
                    job = _Job(src, job.modality, None)
                jobs.append(job)
            except (ValueError, OSError) as e:  # ImageReadError is a ValueError
                message = str(e)
                report(message if str(src) in message else f"{src}: {message}")
                failed += 1
        for job in jobs:  # each needed model, once, before any work
            key = (job.model, job.modality)
            if key not in models:
                try:
                    models[key] = load(job.model, args.device, args.precision) if job.model else \
                        load(args.model, args.device, args.precision, modality=job.modality)
                except (ValueError, OSError) as e:
                    report(f"{job.src}: needs the bundled {job.model!r} model, which cannot be loaded: {e}"
                           if job.model else str(e))
                    return 2
        speech = None  # the speech model of --audio denoise, when a video is to be denoised
        if args.audio == "denoise" and any(job.modality == "video" for job in jobs):
            try:
                speech = load(args.audio_model, args.device, modality="speech")
            except (ValueError, OSError) as e:
                report(f"--audio-model {args.audio_model}: {e}")
                return 2
        inputs = {split_variable(j.src)[0].resolve(): j.src for j in jobs}  # scene.mat:input is scene.mat
        planned: dict[Path, Path] = {}
        for job in tqdm(jobs, desc="files", unit="file", disable=args.quiet or len(jobs) < 2, dynamic_ncols=True):
            src = job.src
            dst = _output_path(out_dir, job, formats)
            key = dst.resolve()
            if key in inputs:
                report(f"{src}: its output {dst} would overwrite the input {'folder' if src.is_dir() else 'file'} "
                       f"{inputs[key]}; choose another -o")
                failed += 1
                continue
            if key in planned:
                report(f"{src}: its output {dst} collides with that of {planned[key]} (same file name); skipped")
                failed += 1
                continue
            planned[key] = src
            try:
                _run_job(models[(job.model, job.modality)], job, dst, args, speech)
                done += 1
            except (ValueError, OSError, RuntimeError, ImportError) as e:
                # AudioReadError / ImageReadError are ValueErrors; libsndfile raises RuntimeError
                # the CLI's option, not the API's argument
                message = re.sub(r"\(pass overwrite=True(, or | / )--overwrite", "(pass --overwrite", str(e))
                if isinstance(e, AudioReadError) and job.model is not None and _file_kind(src) is None:
                    message += f"; {_unknown_extension(src)}"  # read as audio only because its extension is unknown
                report(message if str(src) in message else f"{src}: {message}")
                failed += 1
        if not args.quiet:
            print(f"denoised {done} file(s) into {out_dir}"
                  + (f"; {failed} failed" if failed else ""), file=sys.stderr)
        return 1 if failed else 0

    try:
        return denoise_all()
    finally:  # a folder made for outputs that never came is not left behind
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()


if __name__ == "__main__":
    sys.exit(main())
