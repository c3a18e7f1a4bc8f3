"""Audio adapter: waveform <-> compressed complex STFT.

The feature map is the power-law compressed complex spectrum ``|X|^c e^{i angle X}`` (c = 0.3 by default) as two real
channels (real, imag), the representation of MP-SENet, CMGAN and DeepFilterNet-style enhancers. Inputs are scaled to a
fixed RMS before the STFT and scaled back after the iSTFT. Channels of a multi-channel file share one scale (so the
stereo image is kept) and are processed as a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xmodal.adapters.base import Adapter
from xmodal.config import AudioConfig

__all__ = ["AudioAdapter", "AudioContext", "compress", "decompress"]

_EPS = 1e-12


def compress(spec: torch.Tensor, power: float) -> torch.Tensor:
    """``|X|^power e^{i angle X}`` of a complex tensor (any shape)."""
    if power == 1.0:
        return spec
    mag = spec.abs().clamp_min(_EPS)
    return spec * mag.pow(power - 1.0)


def decompress(spec: torch.Tensor, power: float) -> torch.Tensor:
    """Inverse of :func:`compress`."""
    return compress(spec, 1.0 / power)


@dataclass
class AudioContext:
    """What :meth:`AudioAdapter.decode` needs to give back the input's shape and level.

    Attributes:
        shape: shape of the wave given to ``encode`` (``(T,)``, ``(C, T)`` or ``(B, C, T)``).
        scale: ``(B, 1, 1)`` gain applied before the STFT (divided out after the iSTFT).
    """

    shape: tuple[int, ...]
    scale: torch.Tensor


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
        self.config = config
        self.sample_rate = config.sample_rate
        self.n_fft = config.n_fft
        self.hop_length = config.hop_length
        self.win_length = win_length
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)

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
            spec = compress(spec, self.config.compress)
            feats = torch.view_as_real(spec).permute(0, 3, 1, 2).contiguous()  # (B*C, F, N, 2) -> (B*C, 2, F, N)
        return feats, ctx

    def decode(self, features: torch.Tensor, ctx: AudioContext) -> torch.Tensor:
        """Compressed complex spectrum ``(B*C, 2, F, N)`` -> waveform shaped like the encoded input."""
        with torch.autocast(features.device.type, enabled=False):
            T = ctx.shape[-1]
            B = ctx.scale.shape[0]
            spec = torch.view_as_complex(features.float().permute(0, 2, 3, 1).contiguous())  # -> (B*C, F, N)
            spec = decompress(spec, self.config.compress)
            wave = self.istft(spec, length=max(T, self._min_length))[:, :T]  # (B*C, T)
            wave = wave.reshape(B, -1, T) / ctx.scale  # (B*C, T) -> (B, C, T)
        return wave.reshape(ctx.shape)

    def normalize(self, wave: torch.Tensor, ctx: AudioContext) -> torch.Tensor:
        """``wave`` shaped like the encoded input, times the encoding gain (the level the network works at)."""
        x = self._pack(wave)  # (B, C, T)
        return (x * ctx.scale.to(x.device)).reshape(wave.shape)
