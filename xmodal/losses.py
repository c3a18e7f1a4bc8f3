"""Speech-enhancement losses. Every term runs in fp32 with autocast disabled (half-precision STFTs are a known failure).

Natural-domain terms take waves ``(B, C, T)`` (or any ``(..., T)``); feature-domain terms take the adapter's compressed
complex features ``(B, 2, F, N)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xmodal.config import LossConfig

__all__ = [
    "SpeechLoss",
    "complex_loss",
    "compressed_magnitude_loss",
    "multi_resolution_stft_loss",
    "si_sdr",
    "si_sdr_loss",
    "waveform_l1_loss",
]


def _check_pair(est: torch.Tensor, ref: torch.Tensor, name: str) -> None:
    if est.shape != ref.shape:
        raise ValueError(f"{name}: `est` and `ref` must have the same shape, got {tuple(est.shape)} and "
                         f"{tuple(ref.shape)}")


def _check_features(est: torch.Tensor, ref: torch.Tensor, name: str) -> None:
    _check_pair(est, ref, name)
    if est.ndim != 4 or est.shape[1] != 2:
        raise ValueError(f"{name}: expected features of shape (B, 2, F, N), got {tuple(est.shape)}")


def _magnitude(feats: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(feats[:, 0] ** 2 + feats[:, 1] ** 2 + 1e-12)  # (B, 2, F, N) -> (B, F, N)


def compressed_magnitude_loss(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """MSE between magnitudes of compressed complex features ``(B, 2, F, N)``."""
    _check_features(est, ref, "compressed_magnitude_loss")
    return F.mse_loss(_magnitude(est.float()), _magnitude(ref.float()))


def complex_loss(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """MSE between compressed complex features (real and imaginary parts) ``(B, 2, F, N)``."""
    _check_features(est, ref, "complex_loss")
    return F.mse_loss(est.float(), ref.float())


def waveform_l1_loss(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean absolute error between waves ``(..., T)``."""
    _check_pair(est, ref, "waveform_l1_loss")
    return F.l1_loss(est.float(), ref.float())


def si_sdr(est: torch.Tensor, ref: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), zero-mean, over the last axis.

    Args:
        est: ``(..., T)`` estimate.
        ref: ``(..., T)`` reference.

    Returns:
        ``(...)`` SI-SDR in dB.
    """
    _check_pair(est, ref, "si_sdr")
    est = est.double() if est.dtype == torch.float64 else est.float()
    ref = ref.to(est.dtype)
    est = est - est.mean(dim=-1, keepdim=True)
    ref = ref - ref.mean(dim=-1, keepdim=True)
    alpha = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps)
    target = alpha * ref
    noise = est - target
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))


def si_sdr_loss(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Negative mean SI-SDR (dB) over waves ``(..., T)``."""
    return -si_sdr(est, ref).mean()


def _stft_mag(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    hop = n_fft // 4
    window = torch.hann_window(n_fft, device=x.device)
    spec = torch.stft(x.reshape(-1, x.shape[-1]), n_fft, hop, n_fft, window, return_complex=True)  # (R, F, N)
    return spec.abs().clamp_min(1e-7)


def multi_resolution_stft_loss(est: torch.Tensor, ref: torch.Tensor,
                               ffts: tuple[int, ...] = (512, 1024, 256)) -> torch.Tensor:
    """Multi-resolution STFT loss (Yamamoto et al. 2020): spectral convergence + log-magnitude L1, averaged.

    Spectral convergence is computed per signal and averaged over signals.

    Args:
        est: ``(..., T)`` estimate.
        ref: ``(..., T)`` reference.
        ffts: FFT sizes (hop = n_fft / 4, Hann window of n_fft).
    """
    _check_pair(est, ref, "multi_resolution_stft_loss")
    if not ffts:
        raise ValueError("multi_resolution_stft_loss: `ffts` must hold at least one FFT size")
    total = est.new_zeros((), dtype=torch.float32)
    for n_fft in ffts:
        e, r = _stft_mag(est.float(), n_fft), _stft_mag(ref.float(), n_fft)  # (R, F, N)
        # spectral convergence per signal, then averaged (so the loss decomposes over a batch split across ranks)
        sc = ((r - e).flatten(1).norm(dim=1) / r.flatten(1).norm(dim=1)).mean()
        mag = F.l1_loss(torch.log(e), torch.log(r))
        total = total + sc + mag
    return total / len(ffts)


class SpeechLoss(nn.Module):
    """Weighted sum of the speech losses, weights from :class:`~xmodal.config.LossConfig` (0 = term skipped).

    ``forward(est_wave, ref_wave, est_feats, ref_feats) -> (total, {term: value})``; waves ``(B, C, T)``, features
    ``(B*C, 2, F, N)``. Computed in fp32 with autocast disabled.
    """

    def __init__(self, config: LossConfig) -> None:
        super().__init__()
        weights = {"magnitude": config.magnitude, "complex": config.complex, "waveform": config.waveform,
                   "mrstft": config.mrstft, "si_sdr": config.si_sdr}
        for name, w in weights.items():
            if w < 0:
                raise ValueError(f"loss.{name} must be >= 0, got {w}")
        if not any(weights.values()):
            raise ValueError("loss: every weight is 0; set at least one of " + ", ".join(weights))
        self.weights = weights
        self.mrstft_ffts = config.mrstft_ffts

    def forward(self, est_wave: torch.Tensor, ref_wave: torch.Tensor, est_feats: torch.Tensor,
                ref_feats: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.autocast(est_wave.device.type, enabled=False):
            fns = {
                "magnitude": lambda: compressed_magnitude_loss(est_feats, ref_feats),
                "complex": lambda: complex_loss(est_feats, ref_feats),
                "waveform": lambda: waveform_l1_loss(est_wave, ref_wave),
                "mrstft": lambda: multi_resolution_stft_loss(est_wave, ref_wave, self.mrstft_ffts),
                "si_sdr": lambda: si_sdr_loss(est_wave, ref_wave),
            }
            terms = {name: fns[name]() for name, w in self.weights.items() if w > 0}
            total = sum(self.weights[name] * value for name, value in terms.items())
        return total, terms
