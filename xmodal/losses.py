"""Losses: speech enhancement, then images and band stacks. Every term runs in fp32 with autocast disabled
(half-precision STFTs are a known failure).

Natural-domain terms take waves ``(B, C, T)`` (or any ``(..., T)``); feature-domain terms take the adapter's compressed
complex features ``(B, 2, F, N)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xmodal.config import LossConfig

__all__ = [
    "ImageLoss",
    "PerceptualLoss",
    "SpeechLoss",
    "charbonnier_loss",
    "complex_loss",
    "compressed_magnitude_loss",
    "ms_ssim_loss",
    "mse_loss",
    "multi_resolution_stft_loss",
    "si_sdr",
    "si_sdr_loss",
    "ssim_loss",
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
    """Scale-invariant SDR in dB (Le Roux et al. 2019), zero-mean, over the last axis: the training loss's form.

    ``eps`` is added to both energies so that the loss and its gradient stay finite for silent signals (an all-zero
    ``est`` gives 0 dB here, not -inf); it makes the value depend on the level of signals whose energy is near
    ``eps``. To score, use :func:`xmodal.metrics.si_sdr_score` (float64, exactly scale invariant, raises on a
    silent estimate).

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


_STFT_POWER_FLOOR = 1e-7


def _stft_mag(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    hop = n_fft // 4
    window = torch.hann_window(n_fft, device=x.device)
    spec = torch.stft(x.reshape(-1, x.shape[-1]), n_fft, hop, n_fft, window, return_complex=True)  # (R, F, N)
    # Power floored at 1e-7 before the square root, as in the ParallelWaveGAN implementation (a magnitude floor of
    # 3.2e-4, about -93 dB below unit-RMS white noise at n_fft 512): a floor on the magnitude itself (1e-7) lets the
    # log term chase bins 140 dB down, whose gradient (1 / magnitude) swings with rounding noise.
    return torch.view_as_real(spec).pow(2).sum(-1).clamp_min(_STFT_POWER_FLOOR).sqrt()


def multi_resolution_stft_loss(est: torch.Tensor, ref: torch.Tensor,
                               ffts: tuple[int, ...] = (512, 1024, 256)) -> torch.Tensor:
    """Multi-resolution STFT loss (Yamamoto et al. 2020): spectral convergence + log-magnitude L1, averaged.

    Spectral convergence is computed per signal and averaged over signals. Magnitudes are floored at ``sqrt(1e-7)``
    (power 1e-7), as in the ParallelWaveGAN implementation, so that bins far below the signal neither count nor send
    a ``1 / magnitude`` gradient.

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


# ------------------------------------------------------------------------------------------------- images / stacks


def charbonnier_loss(est: torch.Tensor, ref: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Mean ``sqrt((est - ref)^2 + eps^2)`` (``eps = 0``: mean absolute error)."""
    _check_pair(est, ref, "charbonnier_loss")
    d = est - ref
    return d.abs().mean() if eps == 0 else torch.sqrt(d * d + eps * eps).mean()


def mse_loss(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean ``(est - ref)^2``: the distance PSNR scores (``PSNR = -10 log10(MSE)`` for a peak of 1)."""
    _check_pair(est, ref, "mse_loss")
    d = est - ref
    return (d * d).mean()


def _as_images(x: torch.Tensor) -> torch.Tensor:
    """``(C, H, W)`` or ``(B, C, H, W)`` or ``(B, S, H, W)`` -> 4-D, channels scored separately."""
    return x if x.ndim == 4 else x.reshape((-1,) + tuple(x.shape[-3:]))


def ssim_loss(est: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """``1 - SSIM`` (pytorch-msssim: 11 x 11 Gaussian window, sigma 1.5, K = (0.01, 0.03), no padding)."""
    from pytorch_msssim import ssim

    _check_pair(est, ref, "ssim_loss")
    return 1 - ssim(_as_images(est), _as_images(ref), data_range=data_range, size_average=True)


def ms_ssim_loss(est: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """``1 - MS-SSIM`` (pytorch-msssim, 5 scales; images must be larger than 160 pixels per side)."""
    from pytorch_msssim import ms_ssim

    _check_pair(est, ref, "ms_ssim_loss")
    if min(est.shape[-2:]) <= 160:
        raise ValueError(f"ms_ssim_loss needs images larger than 160 x 160 (5 scales), got {tuple(est.shape[-2:])}; "
                         "raise image.patch_size or use image_loss.ssim")
    return 1 - ms_ssim(_as_images(est), _as_images(ref), data_range=data_range, size_average=True)


class PerceptualLoss(nn.Module):
    """L1 between VGG-16 feature maps of estimate and reference, from weights the user supplies (nothing is
    downloaded). Inputs in [0, 1] with any channel count: gray is replicated to RGB, other counts are scored
    channel by channel as gray.

    Args:
        weights: a torchvision ``vgg16`` state dict (``.pth``, loaded with ``weights_only``, or ``.safetensors``);
            keys with or without the ``features.`` prefix.
        layers: indices in ``vgg16().features`` whose outputs are compared.

    Raises:
        FileNotFoundError: ``weights`` does not exist; ValueError: the file is not a VGG-16 feature state dict.
    """

    _MEAN = (0.485, 0.456, 0.406)
    _STD = (0.229, 0.224, 0.225)

    def __init__(self, weights: str, layers: tuple[int, ...] = (3, 8, 15)) -> None:
        super().__init__()
        from torchvision.models import vgg16

        from xmodal.perceptual import read_state_dict

        state = read_state_dict(weights, "image_loss.perceptual_weights")
        state = {k.removeprefix("features."): v for k, v in state.items()
                 if not k.startswith("classifier.")}
        if not layers or max(layers) > 30 or min(layers) < 0:
            raise ValueError(f"image_loss.perceptual_layers must be indices in 0..30, got {list(layers)}")
        features = vgg16().features[: max(layers) + 1]
        try:
            features.load_state_dict({k: v for k, v in state.items() if int(k.split(".")[0]) <= max(layers)})
        except (RuntimeError, ValueError) as e:
            raise ValueError(f"image_loss.perceptual_weights: {weights} is not a torchvision VGG-16 state dict ({e})"
                             ) from None
        self.features = features.eval().requires_grad_(False)
        self.layers = set(layers)
        self.register_buffer("mean", torch.tensor(self._MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self._STD).view(1, 3, 1, 1), persistent=False)

    def _rgb(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_images(x)
        if x.shape[1] != 3:
            x = x.reshape(-1, 1, *x.shape[-2:]).expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std

    def forward(self, est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """``est``, ``ref``: ``(C, H, W)`` or ``(B, C, H, W)`` in [0, 1] -> scalar (sum over layers of mean L1)."""
        _check_pair(est, ref, "perceptual_loss")
        a, b = self._rgb(est), self._rgb(ref)
        total = est.new_zeros(())
        for i, layer in enumerate(self.features):
            a, b = layer(a), layer(b)
            if i in self.layers:
                total = total + (a - b).abs().mean()
        return total


class ImageLoss(nn.Module):
    """Weighted sum of the image losses, weights from :class:`~xmodal.config.ImageLossConfig` (0 = skipped).

    ``forward(est, ref, est_feats, ref_feats) -> (total, {term: value})`` on natural-domain images or stacks
    ``(B, C, H, W)``; the feature arguments are accepted for the common loss signature and unused. fp32, autocast off.
    """

    def __init__(self, config) -> None:
        super().__init__()
        weights = {"l1": config.l1, "mse": config.mse, "ssim": config.ssim, "ms_ssim": config.ms_ssim,
                   "perceptual": config.perceptual, "lpips": config.lpips}
        for name, w in weights.items():
            if w < 0:
                raise ValueError(f"image_loss.{name} must be >= 0, got {w}")
        if not any(weights.values()):
            raise ValueError("image_loss: every weight is 0; set at least one of " + ", ".join(weights))
        if config.charbonnier_eps < 0:
            raise ValueError(f"image_loss.charbonnier_eps must be >= 0, got {config.charbonnier_eps}")
        if config.perceptual > 0 and not config.perceptual_weights:
            raise ValueError("image_loss.perceptual > 0 needs image_loss.perceptual_weights: a torchvision VGG-16 "
                             "state dict file (xmodal never downloads weights)")
        self.weights = weights
        self.eps = config.charbonnier_eps
        self.perceptual = PerceptualLoss(config.perceptual_weights, config.perceptual_layers) \
            if config.perceptual > 0 else None
        self.lpips = None
        if config.lpips > 0:
            from xmodal.perceptual import LPIPS

            try:
                self.lpips = LPIPS(config.lpips_weights, config.lpips_linear, config.lpips_net)
            except (FileNotFoundError, ValueError) as e:
                raise type(e)(f"image_loss.lpips: {e}") from None

    def forward(self, est: torch.Tensor, ref: torch.Tensor, est_feats: torch.Tensor | None = None,
                ref_feats: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.autocast(est.device.type, enabled=False):
            est, ref = est.float(), ref.float()
            fns = {
                "l1": lambda: charbonnier_loss(est, ref, self.eps),
                "mse": lambda: mse_loss(est, ref),
                "ssim": lambda: ssim_loss(est, ref),
                "ms_ssim": lambda: ms_ssim_loss(est, ref),
                "perceptual": lambda: self.perceptual(est, ref),
                "lpips": lambda: self._lpips(est, ref),
            }
            terms = {name: fns[name]() for name, w in self.weights.items() if w > 0}
            total = sum(self.weights[name] * value for name, value in terms.items())
        return total, terms

    def _lpips(self, est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """Mean LPIPS; images with other than 1 or 3 channels are scored channel by channel as gray."""
        _check_pair(est, ref, "lpips_loss")
        est, ref = _as_images(est), _as_images(ref)
        if est.shape[1] not in (1, 3):
            est, ref = (x.reshape(-1, 1, *x.shape[-2:]) for x in (est, ref))
        return self.lpips(est, ref).mean()
