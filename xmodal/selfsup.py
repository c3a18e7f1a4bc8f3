"""Self-supervised training from noisy images alone: Neighbor2Neighbor (Huang et al., CVPR 2021).

Microscopes, telescopes, scanners and MRI give noisy images and no clean ones. Neighbor2Neighbor trains a denoiser on
them as they are: every 2 x 2 cell of a noisy crop ``y`` gives two *neighbouring* pixels, one to each of two
half-size sub-images ``g1(y)`` and ``g2(y)``. Their clean contents nearly agree and, for noise independent from
pixel to pixel with zero mean, their noises are independent, so ``g2(y)`` is a noisy target for the network's
estimate from ``g1(y)`` whose expected squared error is the clean one's plus a constant. The gap between neighbours'
clean values is corrected by the regulariser

    L = |f(g1(y)) - g2(y)|^2 + gamma |f(g1(y)) - g2(y) - (g1(f(y)) - g2(f(y)))|^2

with ``f(y)`` (the whole crop, no gradient) sub-sampled the same way. ``gamma`` ramps linearly from 0 to its value
over the run, as in the authors' code.

Where it does not apply: noise correlated between neighbouring pixels (demosaicked or JPEG-coded camera photos, the
denoising inside cameras) is learnt as signal; use pairs or a camera-noise model for those
(:func:`xmodal.noise.camera`), or sub-sample first. Items stay a pure function of ``(seed, n)``: the neighbour
choices are drawn by the dataset (:class:`NeighbourPairs`), so resuming and DDP see the same sub-images.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

__all__ = ["NEIGHBOUR_PAIRS", "Neighbor2NeighborLoss", "NeighbourPairs", "gamma_at", "neighbour_choices",
           "subsample"]

#: The ordered pairs of edge-sharing positions of a 2 x 2 cell (position ``2 * row + column``).
NEIGHBOUR_PAIRS = np.array([(0, 1), (1, 0), (0, 2), (2, 0), (1, 3), (3, 1), (2, 3), (3, 2)], dtype=np.int64)


def neighbour_choices(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """``(2, height, width) int64``: for each 2 x 2 cell, the position (0-3) of the pixel that goes to the first
    sub-image and that of its neighbour that goes to the second, one of the 8 ordered edge pairs uniformly."""
    return np.ascontiguousarray(NEIGHBOUR_PAIRS[rng.integers(len(NEIGHBOUR_PAIRS), size=(height, width))]
                                .transpose(2, 0, 1))


def subsample(x: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
    """The half-size sub-image of ``x`` holding, from each 2 x 2 cell, the pixel at ``choice``'s position.

    Args:
        x: ``(B, C, H, W)`` with even H and W.
        choice: ``(B, H / 2, W / 2)`` integer positions 0-3 (``2 * row + column`` within the cell).

    Returns:
        ``(B, C, H / 2, W / 2)``, every channel from the same pixel.

    Raises:
        ValueError: odd H or W, or ``choice`` of another shape.
    """
    B, C, H, W = x.shape
    if H % 2 or W % 2:
        raise ValueError(f"subsample: H and W must be even (2 x 2 cells), got {H} x {W}")
    if tuple(choice.shape) != (B, H // 2, W // 2):
        raise ValueError(f"subsample: expected `choice` of shape {(B, H // 2, W // 2)}, got {tuple(choice.shape)}")
    cells = F.pixel_unshuffle(x, 2).view(B, C, 4, H // 2, W // 2)  # cell position k = 2 * row + column
    index = choice.to(device=x.device, dtype=torch.int64)[:, None, None].expand(B, C, 1, H // 2, W // 2)
    return cells.gather(2, index).squeeze(2)


def gamma_at(step: int, max_steps: int, gamma: float) -> float:
    """The regulariser's weight at ``step`` (0-based) of ``max_steps``: ramped linearly from 0 to ``gamma``."""
    return gamma * min(1.0, step / max(1, max_steps))


class NeighbourPairs(Dataset):
    """Items ``(noisy crop, choices)`` for Neighbor2Neighbor from a dataset of ``(noisy, clean)`` crops, of which only
    the noisy one is used (for data without a clean version the two are the same file).

    ``choices`` is ``(2, P / 2, P / 2)`` (:func:`neighbour_choices`), drawn from ``(seed, n)`` alone.
    """

    def __init__(self, crops: Dataset, seed: int) -> None:
        self.crops = crops
        self.seed = seed

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        noisy, _ = self.crops[n]
        rng = np.random.default_rng((self.seed, n, 2))  # its own stream: the crop's draws are unchanged
        return noisy, torch.from_numpy(neighbour_choices(noisy.shape[-2] // 2, noisy.shape[-1] // 2, rng))


class Neighbor2NeighborLoss(nn.Module):
    """``forward(est, target, full_first, full_second, gamma) -> (total, {"rec": ..., "reg": ...})``: the
    reconstruction ``mean((est - target)^2)`` plus ``gamma`` times the regulariser ``mean((est - target -
    (full_first - full_second))^2)``. ``est = f(g1(y))``, ``target = g2(y)``, ``full_* = g*(f(y))``, all
    ``(B, C, h, w)``; fp32, autocast off."""

    def forward(self, est: torch.Tensor, target: torch.Tensor, full_first: torch.Tensor, full_second: torch.Tensor,
                gamma: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.autocast(est.device.type, enabled=False):
            diff = est.float() - target.float()
            rec = diff.square().mean()
            reg = (diff - (full_first.float() - full_second.float())).square().mean()
        return rec + gamma * reg, {"rec": rec, "reg": reg}
