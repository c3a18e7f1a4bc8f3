"""The shared U-Net trunk. It never knows the modality: ``(B, width, H, W) -> (B, width, H, W)``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from xmodal.models.layers import ResBlock

__all__ = ["UNet"]


class UNet(nn.Module):
    """Residual U-Net trunk.

    Level ``i`` holds ``blocks[i]`` residual blocks in the encoder and as many in the decoder (the last level, the
    bottom, holds ``blocks[-1]`` once); levels are joined by 2x strided-conv downsampling and 2x transposed-conv
    upsampling; skips are added. H and W must be multiples of :attr:`size_multiple` (the network wrapper pads).

    Args:
        widths: channels per level, e.g. ``(16, 32, 64, 96)`` (3 downsamplings).
        blocks: residual blocks per level on each side: one count for every level, or one count per level (as many
            as ``widths``), e.g. ``(1, 2, 2, 1)`` to spend depth at half and quarter resolution.
        norm: ``layer`` or ``none``.
        causal: treat W as time and never look ahead (streaming): convolutions are causal along W, with time
            dilation ``2**i`` at level ``i`` (the context the plain U-Net gets from downsampling time), and levels
            downsample H only (2x1 kernels), so W needs no multiple (:attr:`time_multiple` is 1).
    """

    def __init__(self, widths: tuple[int, ...], blocks: int | Sequence[int] = 1, norm: str = "layer",
                 causal: bool = False) -> None:
        super().__init__()
        if len(widths) < 1 or any(w < 1 for w in widths):
            raise ValueError(f"model.widths must be a non-empty list of positive ints, got {list(widths)}")
        counts = [blocks] * len(widths) if isinstance(blocks, int) else list(blocks)
        if len(counts) != len(widths):
            raise ValueError(f"model.blocks must be one int or one int per level ({len(widths)} for widths "
                             f"{list(widths)}), got {counts}")
        if any(n < 1 for n in counts):
            raise ValueError(f"model.blocks must be at least 1, got {blocks if isinstance(blocks, int) else counts}")
        self.width = widths[0]
        self.blocks = tuple(counts)
        self.causal = causal
        self.size_multiple = 2 ** (len(widths) - 1)  # along H (and W unless causal)
        self.time_multiple = 1 if causal else self.size_multiple  # along W
        step = (2, 1) if causal else 2  # down/up-sampling kernel = stride

        def level(i: int, w: int, n: int) -> nn.Sequential:
            dilation = 2 ** i if causal else 1
            return nn.Sequential(*[ResBlock(w, norm, causal, dilation) for _ in range(n)])

        self.enc = nn.ModuleList(level(i, w, n) for i, (w, n) in enumerate(zip(widths[:-1], counts)))
        self.down = nn.ModuleList(nn.Conv2d(a, b, step, stride=step) for a, b in zip(widths[:-1], widths[1:]))
        self.mid = level(len(widths) - 1, widths[-1], counts[-1])
        self.up = nn.ModuleList(nn.ConvTranspose2d(b, a, step, stride=step) for a, b in zip(widths[:-1], widths[1:]))
        self.dec = nn.ModuleList(level(i, w, n) for i, (w, n) in enumerate(zip(widths[:-1], counts)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, widths[0], H, W)``, H a multiple of ``size_multiple``, W of ``time_multiple`` -> same shape."""
        skips = []
        for enc, down in zip(self.enc, self.down):
            x = enc(x)
            skips.append(x)
            x = down(x)  # (B, w_i, H, W) -> (B, w_{i+1}, H/2, W/2) (W kept if causal)
        x = self.mid(x)
        for up, dec, skip in zip(reversed(self.up), reversed(self.dec), reversed(skips)):
            x = dec(up(x) + skip)  # (B, w_{i+1}, H/2, W/2) -> (B, w_i, H, W)
        return x
