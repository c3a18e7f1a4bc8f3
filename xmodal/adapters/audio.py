"""Audio adapter: waveform <-> compressed complex STFT.

The feature map is the power-law compressed complex spectrum ``|X|^c e^{i angle X}`` (c = 0.3 by default) as two real
channels (real, imag), the representation of MP-SENet, CMGAN and DeepFilterNet-style enhancers. Inputs are scaled to a
fixed RMS before the STFT and scaled back after the iSTFT (``audio.normalize_rms``), or, for streaming models, each
frame by the RMS of the last ``audio.running_rms_seconds`` of input (:func:`running_gains`). Channels of a
multi-channel file share one scale (so the stereo image is kept) and are processed as a batch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from xmodal.adapters.base import Adapter
from xmodal.config import AudioConfig

__all__ = ["AudioAdapter", "AudioContext", "compress", "decompress", "frame_power", "running_gains"]

_EPS = 1e-12
_RMS_FLOOR = 1e-5  # levels below this are normalised as if they were this (the gain is at most target / 1e-5)


def compress(spec: torch.Tensor, power: float) -> torch.Tensor:
    """``|X|^power e^{i angle X}`` of a complex tensor (any shape)."""
    if power == 1.0:
        return spec
    mag = spec.abs().clamp_min(_EPS)
    return spec * mag.pow(power - 1.0)


def decompress(spec: torch.Tensor, power: float) -> torch.Tensor:
    """Inverse of :func:`compress`."""
    return compress(spec, 1.0 / power)


def frame_power(spec: torch.Tensor, window: torch.Tensor, dim: int = -2) -> np.ndarray:
    """Mean square of each windowed frame's input, from its one-sided spectrum (Parseval), in float64.

    Args:
        spec: one-sided spectra of ``n_fft``-point frames, frequency along ``dim``.
        window: the ``(n_fft,)`` analysis window (zero-padded to ``n_fft``).
        dim: frequency axis of ``spec``.

    Returns:
        ``spec``'s shape without ``dim``, a float64 numpy array: ``sum((w x)^2) / sum(w^2)`` of each frame, the
        window-weighted mean square.
    """
    n_fft = window.shape[-1]
    power = torch.view_as_real(spec).double().square().sum(-1)  # |X|^2, (..., F, ...)
    # DC (and Nyquist for an even n_fft) appear once in the full spectrum, the other bins twice
    edges = power.select(dim, 0) + (power.select(dim, -1) if n_fft % 2 == 0 else 0.0)
    full = 2.0 * power.sum(dim) - edges
    return (full / (n_fft * float(window.double().square().sum()))).cpu().numpy()


def running_gains(power: np.ndarray, history: np.ndarray, seen: int, frames: int, target: float) -> np.ndarray:
    """Causal level normalisation: the gain of each frame, ``target / RMS`` of the input over the last ``frames``
    frames up to and including it (fewer at the start of a signal), the RMS floored at 1e-5.

    The same arithmetic serves a whole signal (``seen = 0``, empty ``history``) and a stream that brings it a few
    frames at a time, so both give the same gains.

    Args:
        power: ``(B, n)`` float64 frame mean squares (:func:`frame_power`) of frames ``seen .. seen + n - 1``.
        history: ``(B, h)`` the mean squares of the ``h = min(seen, frames - 1)`` frames before them.
        seen: frames of the signal before ``power``.
        frames: frames averaged (at least 1).
        target: RMS the frames are brought to.

    Returns:
        ``(B, n)`` float32 gains (numpy).
    """
    B, n = power.shape
    x = np.concatenate([np.zeros((B, frames - 1 - history.shape[1])), history, power], axis=1)  # (B, frames-1+n)
    sums = np.lib.stride_tricks.sliding_window_view(x, frames, axis=1).sum(-1)  # (B, n): each frame's window
    count = np.minimum(np.arange(seen + 1, seen + n + 1), frames)
    rms = np.sqrt(np.maximum(sums, 0.0) / count)
    return (target / np.maximum(rms, _RMS_FLOOR)).astype(np.float32)


@dataclass
class AudioContext:
    """What :meth:`AudioAdapter.decode` needs to give back the input's shape and level.

    Attributes:
        shape: shape of the wave given to ``encode`` (``(T,)``, ``(C, T)`` or ``(B, C, T)``).
        scale: ``(B, 1, 1)`` gain applied before the STFT (divided out after the iSTFT).
        frame_gain: ``(B, N)`` gain of each STFT frame (``audio.running_rms_seconds``; divided out of the network's
            output frames), or ``None``.
    """

    shape: tuple[int, ...]
    scale: torch.Tensor
    frame_gain: torch.Tensor | None = None


class AudioAdapter(Adapter):
    """Waveform ``(T,)``, ``(C, T)`` or ``(B, C, T)`` float <-> features ``(B*C, 2, F, N)``.

    F = n_fft // 2 + 1 frequency bins, N = 1 + T // hop_length frames.

    Args:
        config: STFT and normalisation settings.

    Example:
        >>> adapter = AudioAdapter(AudioConfig())
        >>> feats, ctx = adapter.encode(torch.randn(2, 16000) * 0.1)  # stereo, 1 s
        >>> feats.shape
        torch.Size([2, 2, 257, 126])
        >>> adapter.decode(feats, ctx).shape
        torch.Size([2, 16000])
    """

    channels = 2

    def __init__(self, config: AudioConfig) -> None:
        super().__init__()
        win_length = config.win_length or config.n_fft
        if win_length > config.n_fft:
            raise ValueError(f"audio.win_length ({win_length}) must be at most audio.n_fft ({config.n_fft})")
        if not 0 < config.hop_length <= win_length:
            raise ValueError(f"audio.hop_length must be in (0, win_length={win_length}], got {config.hop_length}")
        if not 0.0 < config.compress <= 1.0:
            raise ValueError(f"audio.compress must be in (0, 1], got {config.compress}")
        if not config.running_rms_seconds >= 0.0:
            raise ValueError(f"audio.running_rms_seconds must be >= 0 (0 = off), got {config.running_rms_seconds}")
        if config.running_rms_seconds > 0.0 and config.normalize_rms:
            raise ValueError("audio.running_rms_seconds normalises levels as the signal goes, audio.normalize_rms by "
                             "the whole signal: set audio.normalize_rms: false to use running_rms_seconds")
        if not config.target_rms > 0.0:
            raise ValueError(f"audio.target_rms must be > 0, got {config.target_rms}")
        self.config = config
        self.sample_rate = config.sample_rate
        self.n_fft = config.n_fft
        self.hop_length = config.hop_length
        self.win_length = win_length
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)

    @property
    def level_frames(self) -> int:
        """Frames the running level averages (``audio.running_rms_seconds``); 0 when off."""
        seconds = self.config.running_rms_seconds
        if seconds <= 0.0:
            return 0
        return max(1, round(seconds * self.sample_rate / self.hop_length))

    def full_window(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The analysis window zero-padded to ``n_fft`` and centred, as ``torch.stft`` uses it."""
        window = torch.zeros(self.n_fft, device=device if device is not None else self.window.device)
        left = (self.n_fft - self.win_length) // 2
        window[left:left + self.win_length] = self.window.to(window.device)
        return window

    def frame_gains(self, spec: torch.Tensor, batch: int) -> torch.Tensor:
        """Running-level gains ``(batch, N)`` of a whole signal's frames ``spec: (batch * C, F, N)`` (the channels of
        one item share their level)."""
        power = frame_power(spec, self.full_window(spec.device))  # (B*C, N)
        power = power.reshape(batch, -1, power.shape[-1]).mean(1)  # (B, N), the channels' mean
        gains = running_gains(power, np.zeros((batch, 0)), 0, self.level_frames, self.config.target_rms)
        return torch.from_numpy(gains).to(spec.device)

    @property
    def _min_length(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def freq_bins(self) -> int:
        return self.n_fft // 2 + 1

    def _pack(self, wave: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(wave):
            raise TypeError(f"Expected `wave` to be a torch.Tensor, got {type(wave).__name__}")
        if wave.ndim not in (1, 2, 3):
            raise ValueError(f"Expected `wave` of shape (T,), (C, T) or (B, C, T), got {tuple(wave.shape)}")
        if wave.shape[-1] == 0:
            raise ValueError("Expected `wave` with at least one sample, got length 0")
        return wave.reshape((1,) * (3 - wave.ndim) + tuple(wave.shape)).float()  # (..., T) -> (B, C, T)

    def stft(self, wave: torch.Tensor) -> torch.Tensor:
        """``(R, T)`` float -> ``(R, F, N)`` complex (no compression)."""
        return torch.stft(wave, self.n_fft, self.hop_length, self.win_length, self.window.to(wave.device),
                          center=True, return_complex=True)

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """``(R, F, N)`` complex -> ``(R, length)`` float."""
        return torch.istft(spec, self.n_fft, self.hop_length, self.win_length, self.window.to(spec.device),
                           center=True, length=length)

    def encode(self, wave: torch.Tensor, ctx: AudioContext | None = None) -> tuple[torch.Tensor, AudioContext]:
        """Waveform -> compressed complex spectrum.

        Args:
            wave: ``(T,)``, ``(C, T)`` or ``(B, C, T)`` float in [-1, 1].
            ctx: reuse this context's scale (to encode a clean target like its noisy input).

        Returns:
            ``features: (B*C, 2, F, N) float32`` and the context for :meth:`decode`.
        """
        x = self._pack(wave)  # (B, C, T)
        with torch.autocast(x.device.type, enabled=False):
            B, C, T = x.shape
            if ctx is None:
                if self.config.normalize_rms:
                    rms = x.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()  # (B, 1, 1), shared by the channels
                    scale = self.config.target_rms / rms.clamp_min(1e-5)
                else:
                    scale = torch.ones(B, 1, 1, device=x.device)
                ctx = AudioContext(shape=tuple(wave.shape), scale=scale)
            elif ctx.scale.shape[0] != B:
                raise ValueError(f"`ctx` was made for batch size {ctx.scale.shape[0]}, got a wave with batch {B}")
            x = (x * ctx.scale).reshape(B * C, T)  # (B, C, T) -> (B*C, T)
            if T < self._min_length:  # the centred STFT reflects n_fft // 2 samples: zero-pad very short inputs
                x = torch.nn.functional.pad(x, (0, self._min_length - T))
            spec = self.stft(x)  # (B*C, T) -> (B*C, F, N)
            if self.level_frames and ctx.frame_gain is None:
                ctx = replace(ctx, frame_gain=self.frame_gains(spec, B))  # (B, N)
            elif ctx.frame_gain is not None and ctx.frame_gain.shape[-1] != spec.shape[-1]:
                raise ValueError(f"`ctx` was made for {ctx.frame_gain.shape[-1]} frames, got a wave of "
                                 f"{spec.shape[-1]} frames")
            if ctx.frame_gain is not None:
                spec = (spec.reshape(B, C, *spec.shape[1:]) * ctx.frame_gain[:, None, None, :]).reshape(spec.shape)
            spec = compress(spec, self.config.compress)
            feats = torch.view_as_real(spec).permute(0, 3, 1, 2).contiguous()  # (B*C, F, N, 2) -> (B*C, 2, F, N)
        return feats, ctx

    def spectrum(self, features: torch.Tensor) -> torch.Tensor:
        """Compressed complex spectrum ``(B*C, 2, F, N)`` (the network's input or output) -> complex ``(B*C, F,
        N)``, at the encoding's level."""
        spec = torch.view_as_complex(features.float().permute(0, 2, 3, 1).contiguous())  # -> (B*C, F, N)
        return decompress(spec, self.config.compress)

    def decode(self, features: torch.Tensor, ctx: AudioContext) -> torch.Tensor:
        """Compressed complex spectrum ``(B*C, 2, F, N)`` -> waveform shaped like the encoded input."""
        with torch.autocast(features.device.type, enabled=False):
            T = ctx.shape[-1]
            B = ctx.scale.shape[0]
            spec = self.spectrum(features)
            if ctx.frame_gain is not None:
                spec = (spec.reshape(B, -1, *spec.shape[1:]) / ctx.frame_gain[:, None, None, :]).reshape(spec.shape)
            wave = self.istft(spec, length=max(T, self._min_length))[:, :T]  # (B*C, T)
            wave = wave.reshape(B, -1, T) / ctx.scale  # (B*C, T) -> (B, C, T)
        return wave.reshape(ctx.shape)

    def normalize(self, wave: torch.Tensor, ctx: AudioContext) -> torch.Tensor:
        """``wave`` shaped like the encoded input, times the encoding gain (the level the network works at; with
        running levels, the geometric mean of the frame gains, one gain per item)."""
        x = self._pack(wave)  # (B, C, T)
        scale = ctx.scale.to(x.device)
        if ctx.frame_gain is not None:
            scale = scale * ctx.frame_gain.to(x.device).log().mean(-1).exp().reshape(-1, 1, 1)
        return (x * scale).reshape(wave.shape)
