"""Denoising for users: :func:`load` a model, then :meth:`Denoiser.denoise` arrays or :meth:`Denoiser.denoise_file`
files of any length, sample rate and channel count; or the batch command line::

    python -m xmodal.denoise noisy/*.wav talk.flac recordings/ -o denoised/ [--model RUN_DIR] [--mix 0.9]

How a signal goes through the network:

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
import glob
import math
import numbers
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from xmodal._fs import atomic_write
from xmodal.adapters.audio import AudioContext
from xmodal.config import Config
from xmodal.io import AudioReadError, list_audio_files, resample

__all__ = ["DEFAULT_CHUNK_SECONDS", "DEFAULT_CONTEXT_SECONDS", "Chunk", "Denoiser", "load", "main", "plan_chunks"]

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
    return int(sample_rate)


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
    m = int(getattr(getattr(model, "trunk", None), "size_multiple", 1))
    gen = torch.Generator().manual_seed(0)
    n = max(64, 16 * m)
    while True:
        x = torch.randn(1, channels, 2 * m, n, generator=gen).to(device).requires_grad_(True)  # (1, C_m, F, N)
        c = n // 2 // m * m
        with torch.enable_grad():
            y = model(x, modality)[..., c:c + m]  # (1, C_m, F, m): one cell of the down-sampling grid
            (g,) = torch.autograd.grad((y * torch.randn(y.shape, generator=gen).to(device)).sum(), x)
        support = g.abs().sum(dim=(0, 1, 2)).nonzero().flatten()  # (1, C_m, F, N) -> (N,) -> indices
        lo, hi = int(support.min()), int(support.max())
        if (lo > 0 and hi < n - 1) or n >= 16384:
            return max(c - lo, hi - (c + m - 1), 0)
        n *= 2


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
        ValueError: the model has no stem/head for ``config.modality``, or the device is not available.
    """

    def __init__(self, model: nn.Module, config: Config, device: str | torch.device = "cpu", name: str = "") -> None:
        from xmodal.modalities import make_adapter

        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"`device` must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"`device` is {device!r} but CUDA is not available on this machine")
        if config.modality not in getattr(model, "modalities", [config.modality]):
            raise ValueError(f"the model{' ' + repr(name) if name else ''} has no stem/head for modality "
                             f"{config.modality!r}")
        self.config = config
        self.modality = config.modality
        self.name = name
        self.model = model.to(self.device).eval()
        self.adapter = make_adapter(config.modality, config).to(self.device)
        self.sample_rate = int(config.audio.sample_rate)
        self.size_multiple = int(getattr(getattr(model, "trunk", None), "size_multiple", 1))
        self._rf_samples: int | None = None

    def __repr__(self) -> str:
        return f"Denoiser({self.name or 'model'!s}, sample_rate={self.sample_rate}, device={self.device})"

    @property
    def receptive_field(self) -> int:
        """One-sided receptive field in samples at the model's rate (network frames x hop + the STFT window)."""
        if self._rf_samples is None:
            frames = _receptive_field_frames(self.model, self.modality, self.adapter.channels, self.device)
            self._rf_samples = frames * self.config.audio.hop_length + self.config.audio.n_fft
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
        grid = self.config.audio.hop_length * self.size_multiple  # model-rate samples per down-sampling cell
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
    def _enhance(self, x: np.ndarray, sample_rate: int, scale: torch.Tensor) -> np.ndarray:
        """Network estimate of ``x: (B, C, L) float32`` at ``sample_rate``; returns ``(B, C, L) float32``."""
        L = x.shape[-1]
        wave = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)  # (B, C, L)
        wave = resample(wave, sample_rate, self.sample_rate)  # (B, C, L) -> (B, C, L_m)
        ctx = AudioContext(shape=tuple(wave.shape), scale=scale.to(self.device))
        feats, ctx = self.adapter.encode(wave, ctx)  # (B*C, 2, F, N)
        est = self.adapter.decode(self.model(feats, self.modality).float(), ctx)  # (B, C, L_m), exact length
        est = resample(est, self.sample_rate, sample_rate)[..., :L]  # (B, C, L_m) -> (B, C, L)
        if est.shape[-1] < L:
            est = torch.nn.functional.pad(est, (0, L - est.shape[-1]))
        return est.cpu().numpy()

    def _stream(self, read: Callable[[int, int], np.ndarray], length: int, sample_rate: int, scale: torch.Tensor,
                *, mix: float, atten_limit_db: float | None, chunk_seconds: float, context_seconds: float | None,
                progress: bool, desc: str = "") -> Iterator[np.ndarray]:
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
                y = x.copy() if mix == 0.0 else self._enhance(x, sample_rate, scale)
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

    # -- arrays -------------------------------------------------------------------------------------------------

    def denoise(self, wave: np.ndarray | torch.Tensor, sample_rate: int, *, mix: float = 1.0,
                atten_limit_db: float | None = None, chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
                context_seconds: float | None = None, progress: bool = False) -> np.ndarray | torch.Tensor:
        """Denoise a waveform of any length, rate and channel count.

        Args:
            wave: ``(T,)``, ``(C, T)`` or ``(B, C, T)`` float in [-1, 1], a numpy array or a torch tensor.
            sample_rate: rate of ``wave`` in Hz (resampled to the model's rate and back).
            mix: dry/wet in [0, 1]: 0 gives back the input, 1 the fully denoised signal.
            atten_limit_db: suppress noise by at most this many dB (``None`` = no limit); see the class docstring.
            chunk_seconds: process long signals in chunks of about this length (bounded memory).
            context_seconds: context margin each side of a chunk; ``None`` = enough for chunked == unchunked.
            progress: show a progress bar over chunks.

        Returns:
            The denoised waveform, of the same type, dtype, device and shape as ``wave``.

        Raises:
            TypeError: ``wave`` is not a float numpy array or torch tensor.
            ValueError: a bad shape, NaN/inf samples, ``sample_rate <= 0``, ``mix`` outside [0, 1], a negative
                ``atten_limit_db`` or a non-positive ``chunk_seconds``.

        Example:
            >>> out = denoiser.denoise(np.zeros((2, 48000), np.float32), 48000)  # doctest: +SKIP
            >>> out.shape
            (2, 48000)
        """
        if isinstance(wave, torch.Tensor):
            if not wave.is_floating_point():
                raise TypeError(f"Expected `wave` to be a float tensor, got dtype {wave.dtype}")
            x = wave.detach().to("cpu", torch.float32).numpy()
        elif isinstance(wave, np.ndarray):
            if not np.issubdtype(wave.dtype, np.floating):
                raise TypeError(f"Expected `wave` to be a float array, got dtype {wave.dtype}")
            x = np.asarray(wave, dtype=np.float32)
        else:
            raise TypeError(f"Expected `wave` to be a numpy array or a torch tensor, got {type(wave).__name__}")
        if x.ndim not in (1, 2, 3) or 0 in x.shape:
            raise ValueError(f"Expected `wave` of shape (T,), (C, T) or (B, C, T) with no empty axis, "
                             f"got {tuple(x.shape)}")
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
                                  context_seconds=context_seconds, progress=progress):
            out[..., pos:pos + block.shape[-1]] = block
            pos += block.shape[-1]
        out = out.reshape(x.shape)  # (B, C, T) -> shape of `wave`
        if isinstance(wave, torch.Tensor):
            return torch.from_numpy(out).to(device=wave.device, dtype=wave.dtype)
        return out.astype(wave.dtype, copy=False)

    # -- files --------------------------------------------------------------------------------------------------

    def denoise_file(self, src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False,
                     mix: float = 1.0, atten_limit_db: float | None = None,
                     chunk_seconds: float = DEFAULT_CHUNK_SECONDS, context_seconds: float | None = None,
                     progress: bool = False) -> Path:
        """Denoise an audio file of any length into ``dst``, in bounded memory.

        The output has the input's sample rate, channel count, subtype (``PCM_16``, ``PCM_24``, ``FLOAT``...) and
        exact length; its format follows ``dst``'s extension (the input's format when the extension is unknown).
        It is written to a hidden temp file in ``dst``'s folder and renamed when complete, so a failure never leaves
        a partial file. The input is read twice, block by block (level and validation, then denoising). Truncation is
        detected from WAV/AIFF data-size headers and from decoder errors (FLAC); formats that carry no size (OGG)
        cannot be checked.

        Args:
            src: input audio file (anything libsndfile reads: WAV, FLAC, OGG, AIFF...).
            dst: output path (its folder is created).
            overwrite: replace an existing ``dst``. ``dst`` is never allowed to be ``src``.
            mix, atten_limit_db, chunk_seconds, context_seconds, progress: as in :meth:`denoise`.

        Returns:
            ``dst`` as a :class:`~pathlib.Path`.

        Raises:
            AudioReadError: ``src`` missing, not readable as audio, zero-length, truncated, or with NaN/inf samples.
            ValueError: ``dst`` is ``src`` or a directory, or an option is out of range.
            FileExistsError: ``dst`` exists and ``overwrite`` is false.
        """
        import soundfile as sf

        src, dst = Path(src), Path(dst)
        _check_options(mix, atten_limit_db, chunk_seconds, context_seconds)
        if not src.is_file():
            raise AudioReadError(f"{src}: file not found")
        if dst.resolve() == src.resolve() or (dst.exists() and os.path.samefile(dst, src)):
            raise ValueError(f"{dst}: refusing to write the output over its input file {src}")
        if dst.is_dir():
            raise ValueError(f"{dst}: `dst` is a directory, expected a file path")
        if dst.exists() and not overwrite:
            raise FileExistsError(f"{dst}: output file already exists (pass overwrite=True, or --overwrite)")
        try:
            f = sf.SoundFile(str(src))
        except Exception as e:  # libsndfile raises several types (LibsndfileError, RuntimeError, ...)
            raise AudioReadError(f"{src}: not readable as audio ({e})") from None
        with f:
            sr, C, T = int(f.samplerate), int(f.channels), int(f.frames)
            if T == 0:
                raise AudioReadError(f"{src}: zero-length audio")
            if not f.seekable():
                raise AudioReadError(f"{src}: the file is not seekable")
            for m in _TRUNCATED.finditer(f.extra_info):
                if int(m.group(3)) < int(m.group(2)):
                    raise AudioReadError(f"{src}: truncated file (header declares {m.group(2)} bytes of "
                                         f"{m.group(1)}, only {m.group(3)} present)")

            def read(a: int, b: int) -> np.ndarray:
                f.seek(a)
                try:
                    data = f.read(b - a, dtype="float32", always_2d=True)  # (b - a, C)
                except Exception as e:
                    raise AudioReadError(f"{src}: cannot read samples {a}..{b} ({e})") from None
                if data.shape[0] != b - a:
                    raise AudioReadError(f"{src}: truncated file (header declares {T} frames, read stopped at "
                                         f"{a + data.shape[0]})")
                return np.ascontiguousarray(data.T)[None]  # (L, C) -> (1, C, L)

            sum_squares = 0.0
            for a in range(0, T, _READ_BLOCK):  # pass 1: validate and measure the level
                block = read(a, min(T, a + _READ_BLOCK))
                if not np.isfinite(block).all():
                    raise AudioReadError(f"{src}: contains NaN or infinite samples")
                sum_squares += float(np.square(block, dtype=np.float64).sum())
            scale = self._scale(np.array([sum_squares]), C * T)
            fmt, subtype = _output_format(dst, f.format, f.subtype)

            def write(tmp: str) -> None:  # pass 2: denoise block by block into the temp file
                clip = not subtype.startswith(("FLOAT", "DOUBLE", "VORBIS", "OPUS"))
                written = 0
                with sf.SoundFile(tmp, "w", samplerate=sr, channels=C, subtype=subtype, format=fmt) as out:
                    for block in self._stream(read, T, sr, scale, mix=mix, atten_limit_db=atten_limit_db,
                                              chunk_seconds=chunk_seconds, context_seconds=context_seconds,
                                              progress=progress, desc=src.name):
                        block = block[0].T  # (1, C, L) -> (L, C)
                        out.write(np.clip(block, -1.0, 1.0) if clip else block)
                        written += block.shape[0]
                if written != T:  # a bug guard: the chunk plan must tile the file exactly
                    raise RuntimeError(f"{src}: wrote {written} frames instead of {T}")

            atomic_write(dst, write)  # temp file in dst's folder, renamed when complete, removed on failure
        return dst


def _output_format(dst: Path, in_format: str, in_subtype: str) -> tuple[str, str]:
    """libsndfile ``(format, subtype)`` for ``dst``: its extension's format (else the input's), the input's subtype
    when that format supports it (else the format's default)."""
    import soundfile as sf

    ext = dst.suffix[1:].upper()
    fmt = {"AIF": "AIFF", "OGA": "OGG"}.get(ext, ext)
    if fmt not in sf.available_formats():
        fmt = in_format
    subtype = in_subtype if sf.check_format(fmt, in_subtype) else sf.default_subtype(fmt)
    return fmt, subtype


def load(path_or_name: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> Denoiser:
    """Load a denoiser.

    Args:
        path_or_name: ``None``, ``"default"`` or ``"speech"`` for the bundled speech model; a run directory
            (``config.yaml`` + ``model.safetensors``); or a ``.safetensors`` file with an embedded config.
        device: ``cpu`` or ``cuda``.

    Returns:
        A :class:`Denoiser`.

    Raises:
        FileNotFoundError: the bundled model is not installed.
        ValueError: an unknown name or path (the message lists the bundled names), or an unavailable device.
        CheckpointError: a run directory or weights file that cannot be loaded.

    Example:
        >>> denoiser = xmodal.load()  # doctest: +SKIP
    """
    from xmodal.checkpoint import load_run
    from xmodal.pretrained import resolve_model

    path = resolve_model(path_or_name)
    model, config = load_run(path)
    return Denoiser(model, config, device=device, name=str(path_or_name) if path_or_name is not None else "speech")


# ----------------------------------------------------------------------------------------------------------------
# Command line


def _expand_inputs(items: list[str]) -> tuple[list[Path], list[str]]:
    """Files, folders (their audio files) and globs -> (unique files in order, error messages)."""
    files: list[Path] = []
    errors: list[str] = []
    for item in items:
        p = Path(item)
        matches = [p] if p.exists() else [Path(m) for m in sorted(glob.glob(item, recursive=True))]
        if not matches:
            errors.append(f"{item}: file not found" + (" (no match for this pattern)" if glob.has_magic(item) else ""))
        for m in matches:
            if m.is_dir():
                try:
                    files.extend(list_audio_files(m))
                except ValueError as e:
                    errors.append(str(e))
            else:
                files.append(m)
    unique: dict[Path, Path] = {}
    for f in files:
        unique.setdefault(f.resolve(), f)
    return list(unique.values()), errors


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m xmodal.denoise",
        description="Denoise audio files (any rate, channel count and length) into OUT_DIR, keeping their names, "
                    "rates, channels, subtypes and lengths. Exit status: 0 all done, 1 some files failed (each is "
                    "reported with its reason), 2 usage error or model not loadable.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files, folders of audio files, or glob patterns")
    p.add_argument("-o", "--output-dir", required=True, metavar="OUT_DIR", help="folder for the outputs (created)")
    p.add_argument("--model", default=None, metavar="RUN_DIR_OR_NAME",
                   help="run directory, .safetensors file or bundled name (default: the bundled speech model)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (inputs are never replaced)")
    p.add_argument("--mix", type=float, default=1.0, help="dry/wet: 0 = input, 1 = fully denoised (default 1)")
    p.add_argument("--atten-limit-db", type=float, default=None, metavar="DB",
                   help="suppress noise by at most DB decibels (default: no limit)")
    p.add_argument("--chunk-seconds", type=float, default=DEFAULT_CHUNK_SECONDS, metavar="S",
                   help=f"process in chunks of about S seconds (default {DEFAULT_CHUNK_SECONDS:g})")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary (errors are still printed)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0 ok, 1 some files failed, 2 usage error)."""
    from tqdm import tqdm

    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse exits on --help (0) and on usage errors (2)
        return int(e.code or 0)

    def report(message: str) -> None:
        tqdm.write(f"error: {message}", file=sys.stderr)

    try:
        _check_options(args.mix, args.atten_limit_db, args.chunk_seconds, None)
    except ValueError as e:
        report(str(e).replace("`mix`", "--mix").replace("`atten_limit_db`", "--atten-limit-db")
               .replace("`chunk_seconds`", "--chunk-seconds"))
        return 2
    out_dir = Path(args.output_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        report(f"{out_dir}: cannot create the output folder ({e.strerror or e})")
        return 2
    try:
        denoiser = load(args.model, args.device)
    except (ValueError, OSError) as e:  # unknown name, bundled model missing, bad checkpoint, no CUDA
        report(str(e))
        return 2
    files, errors = _expand_inputs(args.inputs)
    for message in errors:
        report(message)
    failed, done = len(errors), 0
    inputs = {f.resolve(): f for f in files}
    planned: dict[Path, Path] = {}
    for src in tqdm(files, desc="files", unit="file", disable=args.quiet or len(files) < 2, dynamic_ncols=True):
        dst = out_dir / src.name
        key = dst.resolve()
        if key in inputs:
            report(f"{src}: its output {dst} would overwrite the input file {inputs[key]}; choose another -o")
            failed += 1
            continue
        if key in planned:
            report(f"{src}: its output {dst} collides with that of {planned[key]} (same file name); skipped")
            failed += 1
            continue
        planned[key] = src
        try:
            denoiser.denoise_file(src, dst, overwrite=args.overwrite, mix=args.mix,
                                  atten_limit_db=args.atten_limit_db, chunk_seconds=args.chunk_seconds,
                                  progress=not args.quiet)
            done += 1
        except (ValueError, OSError, RuntimeError) as e:  # AudioReadError is a ValueError; libsndfile's a RuntimeError
            message = str(e)
            report(message if str(src) in message else f"{src}: {message}")
            failed += 1
    if not args.quiet:
        print(f"denoised {done} file(s) into {out_dir}"
              + (f"; {failed} failed" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
