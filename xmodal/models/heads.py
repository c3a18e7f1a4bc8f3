"""Per-modality stems (features -> trunk width) and heads (trunk width -> estimate in the feature domain).

A head combines the trunk output with the network input, so the network's output is always an estimate of the clean
feature map (an identity network gives back its input): ``complex_mask`` multiplies the input spectrum by a bounded
complex mask (speech), ``residual`` subtracts a predicted noise map (images).
"""

from __future__ import annotations

import torch
from torch import nn

from xmodal.models.layers import make_conv

__all__ = ["ComplexMaskHead", "ConvStem", "ResidualHead", "SpectralStem", "make_head", "make_stem"]


class ConvStem(nn.Module):
    """3x3 conv from the modality's channels to the trunk width (causal along W if ``causal``)."""

    def __init__(self, in_channels: int, width: int, causal: bool = False) -> None:
        super().__init__()
        self.conv = make_conv(in_channels, width, causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SpectralStem(nn.Module):
    """Adds a frequency-position channel (linear in [-1, 1] over H = frequency) before the 3x3 conv.

    Convolutions are translation invariant; speech spectra are not along frequency, so the position helps.
    """

    def __init__(self, in_channels: int, width: int, causal: bool = False) -> None:
        super().__init__()
        self.conv = make_conv(in_channels + 1, width, causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        pos = torch.linspace(-1.0, 1.0, H, device=x.device, dtype=x.dtype)  # (H,)
        pos = pos.view(1, 1, H, 1).expand(B, 1, H, W)  # (H,) -> (B, 1, H, W)
        return self.conv(torch.cat([x, pos], dim=1))  # (B, C+1, H, W) -> (B, width, H, W)


class ComplexMaskHead(nn.Module):
    """Bounded complex mask on a 2-channel (real, imag) input: ``|M| = bound * tanh(|m|)``, phase of ``m``."""

    def __init__(self, width: int, bound: float = 1.0, causal: bool = False) -> None:
        super().__init__()
        if bound <= 0:
            raise ValueError(f"model.mask_bound must be positive, got {bound}")
        self.conv = make_conv(width, 2, causal)
        self.bound = bound

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``h: (B, width, H, W)`` trunk output, ``x: (B, 2, H, W)`` input -> ``(B, 2, H, W)`` estimate."""
        m = self.conv(h).float()  # (B, 2, H, W), fp32 for the mask arithmetic
        mr, mi = m[:, 0], m[:, 1]
        mag = torch.sqrt(mr * mr + mi * mi + 1e-8)  # (B, H, W)
        gain = self.bound * torch.tanh(mag) / mag
        mr, mi = mr * gain, mi * gain
        xr, xi = x[:, 0].float(), x[:, 1].float()
        return torch.stack([mr * xr - mi * xi, mr * xi + mi * xr], dim=1)  # complex product -> (B, 2, H, W)


class ResidualHead(nn.Module):
    """Predicts the noise and subtracts it from the input: ``x[:, o:o+C_out] - conv(h)``.

    ``offset`` picks which input channels are being denoised when the input carries more than the output: spectral
    context bands around the middle band (multispectral), or a trailing noise-level-map channel.
    """

    def __init__(self, width: int, out_channels: int, offset: int = 0, causal: bool = False) -> None:
        super().__init__()
        self.conv = make_conv(width, out_channels, causal)
        self.offset = offset
        self.out_channels = out_channels

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``h: (B, width, H, W)``, ``x: (B, C_in, H, W)`` -> ``(B, C_out, H, W)``."""
        return x[:, self.offset:self.offset + self.out_channels] - self.conv(h)


def make_stem(kind: str, in_channels: int, width: int, causal: bool = False) -> nn.Module:
    if kind == "conv":
        return ConvStem(in_channels, width, causal)
    if kind == "spectral":
        return SpectralStem(in_channels, width, causal)
    raise ValueError(f"unknown stem kind {kind!r} (expected 'conv' or 'spectral')")


def make_head(kind: str, width: int, channels: int, mask_bound: float = 1.0, out_channels: int | None = None,
              offset: int = 0, causal: bool = False) -> nn.Module:
    out_channels = channels if out_channels is None else out_channels
    if offset < 0 or offset + out_channels > channels:
        raise ValueError(f"head output channels {offset}..{offset + out_channels} do not fit {channels} inputs")
    if kind == "complex_mask":
        if channels != 2 or out_channels != 2:
            raise ValueError(f"the complex_mask head needs 2 feature channels (real, imag), got {channels}")
        return ComplexMaskHead(width, mask_bound, causal)
    if kind == "residual":
        return ResidualHead(width, out_channels, offset, causal)
    raise ValueError(f"unknown head kind {kind!r} (expected 'complex_mask' or 'residual')")
