"""The seed guide's simple CNN denoiser (DnCNN-style plain conv stack), as a trunk for baselines."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SimpleCNN"]


class SimpleCNN(nn.Module):
    """``depth`` 3x3 conv + ReLU layers at constant width: ``(B, width, H, W) -> (B, width, H, W)``.

    Args:
        width: channels of every layer.
        depth: number of conv layers.
    """

    size_multiple = 1

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"model.cnn_depth must be at least 1, got {depth}")
        self.width = width
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
