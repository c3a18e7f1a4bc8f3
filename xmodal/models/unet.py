"""The shared U-Net trunk. It never knows the modality: ``(B, width, H, W) -> (B, width, H, W)``."""

from __future__ import annotations

import torch
from torch import nn

from xmodal.models.layers import ResBlock

__all__ = ["UNet"]


class UNet(nn.Module):
    """Residual U-Net trunk.

    Each level holds ``blocks`` residual blocks; levels are joined by 2x strided-conv downsampling and 2x transposed-
    conv upsampling; skips are added. H and W must be multiples of :attr:`size_multiple` (the network wrapper pads).

    Args:
        widths: channels per level, e.g. ``(16, 32, 64, 96)`` (3 downsamplings).
        blocks: residual blocks per level on each side.
        norm: ``layer`` or ``none``.
    """

    def __init__(self, widths: tuple[int, ...], blocks: int = 1, norm: str = "layer") -> None:
        super().__init__()
        if len(widths) < 1 or any(w < 1 for w in widths):
            raise ValueError(f"model.widths must be a non-empty list of positive ints, got {list(widths)}")
        if blocks < 1:
            raise ValueError(f"model.blocks must be at least 1, got {blocks}")
        self.width = widths[0]
        self.size_multiple = 2 ** (len(widths) - 1)
        self.enc = nn.ModuleList(nn.Sequential(*[ResBlock(w, norm) for _ in range(blocks)]) for w in widths[:-1])
        self.down = nn.ModuleList(nn.Conv2d(a, b, 2, stride=2) for a, b in zip(widths[:-1], widths[1:]))
        self.mid = nn.Sequential(*[ResBlock(widths[-1], norm) for _ in range(blocks)])
        self.up = nn.ModuleList(nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in zip(widths[:-1], widths[1:]))
        self.dec = nn.ModuleList(nn.Sequential(*[ResBlock(w, norm) for _ in range(blocks)]) for w in widths[:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, widths[0], H, W)`` with H, W multiples of ``size_multiple`` -> same shape."""
        skips = []
        for enc, down in zip(self.enc, self.down):
            x = enc(x)
            skips.append(x)
            x = down(x)  # (B, w_i, H, W) -> (B, w_{i+1}, H/2, W/2)
        x = self.mid(x)
        for up, dec, skip in zip(reversed(self.up), reversed(self.dec), reversed(skips)):
            x = dec(up(x) + skip)  # (B, w_{i+1}, H/2, W/2) -> (B, w_i, H, W)
        return x
