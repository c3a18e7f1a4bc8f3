"""Global motion compensation for video: integer translations between frames, estimated on noisy frames.

A frame denoised with its temporal neighbours gains most when the neighbours show the same content at the same
pixels. Camera motion (pans, shake) moves the whole picture; :func:`estimate_shifts` finds, for each pair of frames,
the integer translation that best maps one onto the other, and :func:`shift_frames` applies it. What translation
cannot explain (objects moving on their own, sub-pixel remainders, rotation) is left to the network, which is trained
on frames aligned by the same estimator, so it also learns what a failed estimate looks like.

The estimate minimises the mean squared difference of the two frames (after a Gaussian blur, sigma 1 pixel, that
takes most of the noise out) over a fixed interior window, searched coarse to fine: an exhaustive search on a 2x/4x...
average-pooled pyramid level where the range is at most 4 pixels (frames of at least 128 pixels a side; smaller ones
are searched exhaustively at full resolution), then a +-1 pixel refinement at every finer level.
Everything is batched: one call aligns the frames of a whole training batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["estimate_shifts", "shift_frames"]

_BLUR = torch.tensor([0.0545, 0.2442, 0.4026, 0.2442, 0.0545])  # Gaussian, sigma 1 pixel, 5 taps (sums to 1)


def _blur(x: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` -> the same, blurred separably with replicated edges."""
    k = _BLUR.to(x)
    y = F.pad(x[:, None], (2, 2, 2, 2), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, 5))
    return F.conv2d(y, k.view(1, 1, 5, 1))[:, 0]


def shift_frames(frames: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Translate each frame by an integer shift, edges replicated: ``out[n, ..., y, x] = frames[n, ..., y - dy, x -
    dx]`` (clamped to the frame).

    Args:
        frames: ``(N, ..., H, W)``.
        shifts: ``(N, 2)`` integer ``(dy, dx)``.

    Returns:
        ``(N, ..., H, W)``.
    """
    N, H, W = frames.shape[0], frames.shape[-2], frames.shape[-1]
    if not bool(shifts.any()):
        return frames
    shifts = shifts.to(frames.device).long()
    ys = (torch.arange(H, device=frames.device)[None] - shifts[:, :1]).clamp(0, H - 1)  # (N, H)
    xs = (torch.arange(W, device=frames.device)[None] - shifts[:, 1:]).clamp(0, W - 1)  # (N, W)
    flat = frames.reshape(N, -1, H, W)
    rows = torch.gather(flat, 2, ys[:, None, :, None].expand(N, flat.shape[1], H, W))
    out = torch.gather(rows, 3, xs[:, None, None, :].expand(N, flat.shape[1], H, W))
    return out.reshape(frames.shape)


def _search(a: torch.Tensor, b: torch.Tensor, r: int, margin: int,
            centre: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Exhaustive search of every shift in ``centre + [-r, r]^2``, the same candidates for all frames (plain slices of
    a padded copy, no gathers): ``(N, 2)``, the lowest mean squared difference over the interior."""
    N, H, W = a.shape
    cy, cx = centre
    p = r + max(abs(cy), abs(cx))
    padded = F.pad(b[:, None], (p, p, p, p), mode="replicate")[:, 0]  # (N, H + 2p, W + 2p)
    inner = a[:, margin:H - margin, margin:W - margin]
    best = torch.full((N,), float("inf"), device=a.device)
    shifts = torch.tensor([cy, cx], device=a.device).repeat(N, 1)
    for dy in range(cy - r, cy + r + 1):
        for dx in range(cx - r, cx + r + 1):  # moved[y, x] = b[y - dy, x - dx] = padded[y - dy + p, x - dx + p]
            moved = padded[:, p - dy + margin:p - dy + H - margin, p - dx + margin:p - dx + W - margin]
            cost = (inner - moved).pow(2).mean(dim=(1, 2))
            better = cost < best
            best = torch.where(better, cost, best)
            shifts[better] = torch.tensor([dy, dx], device=a.device)
    return shifts


def estimate_shifts(ref: torch.Tensor, mov: torch.Tensor, max_shift: int) -> torch.Tensor:
    """The integer translation ``(dy, dx)`` that best aligns each ``mov`` frame to its ``ref`` frame:
    ``shift_frames(mov, s)`` matches ``ref``; ``|dy|, |dx| <= max_shift``.

    Args:
        ref, mov: ``(N, H, W)`` float frames (noisy is fine; channel-averaged for colour).
        max_shift: search range in pixels (0 gives zeros).

    Returns:
        ``(N, 2)`` int64 shifts, on the frames' device.
    """
    N, H, W = ref.shape
    R = min(int(max_shift), (min(H, W) - 1) // 4)  # keep at least half of each side as the compared interior
    if R <= 0 or N == 0:
        return torch.zeros(N, 2, dtype=torch.long, device=ref.device)
    with torch.no_grad():
        a, b = _blur(ref.float()), _blur(mov.float())
        pyramid = [(a, b)]
        factor = 1
        while R / factor > 4 and min(H, W) // (2 * factor) >= 64:  # small frames are searched at full resolution
            a, b = F.avg_pool2d(a[:, None], 2)[:, 0], F.avg_pool2d(b[:, None], 2)[:, 0]
            pyramid.append((a, b))
            factor *= 2
        r = math.ceil(R / factor)
        shifts = _search(a, b, r, min(r, (min(a.shape[-2:]) - 1) // 4))
        for level in range(len(pyramid) - 2, -1, -1):  # +-1 refinement at every finer level
            a, b = pyramid[level]
            limit = math.ceil(R / 2 ** level)
            shifts = (shifts * 2).clamp(-limit, limit)
            margin = min(limit + 1, (min(a.shape[-2:]) - 1) // 4)
            refined = shifts.clone()
            for centre in torch.unique(shifts, dim=0).tolist():  # frames sharing a coarse estimate, together
                group = (shifts == torch.tensor(centre, device=shifts.device)).all(dim=1)
                refined[group] = _search(a[group], b[group], 1, margin, (centre[0], centre[1]))
            shifts = refined
        return shifts.clamp(-R, R)
