"""Tiled inference on large images: overlapping tiles, smooth blending, memory bounded by the output plus one tile.

Along each axis of length ``N`` the tiles are at most ``tile`` pixels long, start on multiples of ``multiple`` (so a
U-Net sees the same down-sampling grid as on the whole image) and overlap their neighbours by at least ``overlap``
pixels. Each tile's output is weighted by a separable window that is 1 inside the tile and ramps up (down) across
each shared edge:

* the outer quarter of the overlap (``overlap // 4`` pixels at the tile's edge) gets weight 0: outputs that saw the
  tile's artificial border are dropped;
* a raised-cosine ramp spans the middle half of the overlap;
* at the image's own borders the weight is 1 (no ramp).

The windows are then normalised so that the weights of all tiles covering a pixel sum to exactly 1. Consequences:
a network whose one-sided receptive field is at most ``overlap // 4`` pixels gives a tiled output equal to the
untiled one (up to float rounding), and a wider one gives seams that are blended smoothly. An image that fits in one
tile goes through ``fn`` once, unchanged.

Example:
    >>> net = torch.nn.Conv2d(1, 1, 3, padding=1)
    >>> x = torch.rand(1, 1, 100, 70)
    >>> with torch.no_grad():
    ...     y = tiled_apply(net, x, tile=32, overlap=8)
    >>> y.shape
    torch.Size([1, 1, 100, 70])
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch

__all__ = ["DEFAULT_OVERLAP", "DEFAULT_TILE", "blend_window", "plan_tiles", "subsampled_apply", "tiled_apply"]

DEFAULT_TILE = 512
DEFAULT_OVERLAP = 64


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_tiling(tile: int, overlap: int, multiple: int = 1) -> tuple[int, int, int]:
    """Validate tiling arguments; returns them as ints.

    Raises:
        ValueError: a non-integer or non-positive ``tile``/``multiple``, a negative ``overlap``, ``tile <= 2 *
            overlap``, or ``tile - overlap < multiple`` (tiles could not advance on the ``multiple`` grid).
    """
    tile = _check_int("tile", tile, 1)
    overlap = _check_int("overlap", overlap, 0)
    multiple = _check_int("multiple", multiple, 1)
    if tile <= 2 * overlap:
        raise ValueError(f"`tile` ({tile}) must exceed 2 * `overlap` ({2 * overlap})")
    if tile - overlap < multiple:
        raise ValueError(f"`tile` - `overlap` ({tile} - {overlap}) must be at least `multiple` ({multiple}), the "
                         "grid tile starts are aligned to")
    return tile, overlap, multiple


def plan_tiles(length: int, tile: int, overlap: int, multiple: int = 1) -> list[tuple[int, int]]:
    """Tiles ``[start, stop)`` covering ``length`` pixels along one axis.

    Starts are multiples of ``multiple``, spread as evenly as the grid allows; every tile is at most ``tile`` long;
    consecutive tiles overlap by at least ``overlap``; the first starts at 0 and the last stops at ``length``.

    Args:
        length: pixels along the axis (>= 1).
        tile: maximum tile length.
        overlap: minimum overlap of consecutive tiles.
        multiple: alignment of tile starts.

    Returns:
        ``[(0, length)]`` when ``length <= tile``, else the tiles in order.

    Raises:
        ValueError: ``length < 1`` or bad tiling arguments (see :func:`check_tiling`).

    Example:
        >>> plan_tiles(100, 48, 8, 4)
        [(0, 48), (24, 72), (52, 100)]
    """
    length = _check_int("length", length, 1)
    tile, overlap, multiple = check_tiling(tile, overlap, multiple)
    if length <= tile:
        return [(0, length)]
    step = (tile - overlap) // multiple * multiple  # largest aligned step keeping the overlap (> 0: checked)
    last = math.ceil((length - tile) / multiple) * multiple  # aligned start of the last tile: it reaches `length`
    n = 1 + math.ceil(last / step)
    # k * last / (n - 1) rounded down to the grid: gaps are multiples of `multiple` below step + multiple, so <= step
    starts = [(k * last // (n - 1)) // multiple * multiple for k in range(n)]
    return [(s, min(s + tile, length)) for s in starts]


def _ramp(overlap: int) -> torch.Tensor:
    """``(overlap,)`` rising edge: 0 over the first quarter, raised cosine over the middle half, 1 after."""
    margin = overlap // 4
    span = overlap - 2 * margin
    i = torch.arange(overlap, dtype=torch.float64) - margin + 0.5  # centre of each pixel, from the ramp's start
    t = (i / max(span, 1)).clamp(0.0, 1.0)
    return 0.5 - 0.5 * torch.cos(math.pi * t)


def blend_window(tiles: list[tuple[int, int]], length: int, overlap: int) -> list[torch.Tensor]:
    """Normalised 1-D blending weights of each tile of ``tiles`` (from :func:`plan_tiles`).

    Returns:
        One ``(stop - start,)`` float64 weight vector per tile; at every position the weights of the tiles covering
        it sum to 1.
    """
    raw = []
    rise = _ramp(overlap)
    for k, (start, stop) in enumerate(tiles):
        w = torch.ones(stop - start, dtype=torch.float64)
        if k > 0 and overlap:
            w[:overlap] = rise
        if k < len(tiles) - 1 and overlap:
            w[-overlap:] = torch.minimum(w[-overlap:], rise.flip(0))
        raw.append(w)
    total = torch.zeros(length, dtype=torch.float64)
    for (start, stop), w in zip(tiles, raw):
        total[start:stop] += w
    # > 0 everywhere: image borders get 1, and across a shared edge the two ramps sum to at least 1
    return [w / total[start:stop] for (start, stop), w in zip(tiles, raw)]


def tiled_apply(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int = DEFAULT_TILE,
                overlap: int = DEFAULT_OVERLAP, multiple: int = 1, *, progress: bool = False) -> torch.Tensor:
    """Apply a fully convolutional ``fn`` to ``x`` tile by tile and blend the tiles.

    Memory: the output plus one tile's input, output and activations (never the whole image's activations).

    Args:
        fn: maps ``(B, C, h, w) -> (B, C', h, w)`` (same batch and spatial size; ``C'`` may differ from ``C``).
        x: ``(B, C, H, W)`` input.
        tile: maximum tile side in pixels.
        overlap: minimum overlap of neighbouring tiles (see the module docstring for the blending).
        multiple: tile starts are multiples of this (pass the network's ``trunk.size_multiple``).
        progress: show a progress bar over tiles (when there are several).

    Returns:
        ``(B, C', H, W)`` in ``fn``'s output dtype; exactly ``fn(x)`` when ``H <= tile`` and ``W <= tile``.

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: ``x`` not 4-D or empty; bad ``tile``/``overlap``/``multiple`` (see :func:`check_tiling`);
            ``fn`` returned a tensor of the wrong batch size or spatial size.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"Expected `x` to be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.numel() == 0:
        raise ValueError(f"Expected `x` of shape (B, C, H, W) with no empty axis, got {tuple(x.shape)}")
    tile, overlap, multiple = check_tiling(tile, overlap, multiple)
    B, _, H, W = x.shape
    if H <= tile and W <= tile:
        return _checked(fn(x), B, H, W)
    rows, cols = plan_tiles(H, tile, overlap, multiple), plan_tiles(W, tile, overlap, multiple)
    wy, wx = blend_window(rows, H, overlap), blend_window(cols, W, overlap)
    out: torch.Tensor | None = None
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(rows) * len(cols), desc="tiles", unit="tile", leave=False, dynamic_ncols=True)
    try:
        for (y0, y1), wr in zip(rows, wy):
            for (x0, x1), wc in zip(cols, wx):
                y = _checked(fn(x[:, :, y0:y1, x0:x1]), B, y1 - y0, x1 - x0)  # (B, C', h, w)
                if out is None:
                    out = y.new_zeros(B, y.shape[1], H, W)  # (B, C', H, W)
                elif y.shape[1] != out.shape[1]:
                    raise ValueError(f"`fn` returned {y.shape[1]} channels for tile ({y0}:{y1}, {x0}:{x1}), "
                                     f"{out.shape[1]} for the first tile")
                weight = (wr[:, None] * wc[None, :]).to(device=y.device, dtype=y.dtype)  # (h, w)
                out[:, :, y0:y1, x0:x1] += y * weight
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if out is None:  # unreachable: H, W >= 1 gives at least one tile
        raise RuntimeError("tiled_apply: no tile was processed")
    return out


def _checked(y: torch.Tensor, batch: int, h: int, w: int) -> torch.Tensor:
    if not isinstance(y, torch.Tensor) or y.ndim != 4 or y.shape[0] != batch or tuple(y.shape[-2:]) != (h, w):
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"`fn` must map (B, C, h, w) to (B, C', h, w); for a tile of shape (B={batch}, ..., {h}, "
                         f"{w}) it returned {got}")
    return y


def subsampled_apply(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, stride: int) -> torch.Tensor:
    """Pixel-shuffle down-sampling (Zhou et al., AAAI 2020): apply ``fn`` to the ``stride**2`` sub-images of every
    ``stride``-th pixel (as one batch) and interleave their outputs back.

    Noise that is correlated between neighbouring pixels (demosaicking, JPEG, the denoising inside cameras) is much
    less correlated between pixels ``stride`` apart, so a denoiser trained on white noise sees what it knows; the
    price is detail finer than ``stride`` pixels, which each sub-image sees aliased. ``stride=1`` is ``fn(x)``.

    Args:
        fn: maps ``(B, C, h, w) -> (B, C', h, w)``; called once per sub-image.
        x: ``(B, C, H, W)``; H and W need not be multiples of ``stride`` (the last rows and columns are repeated up
            to one, and cropped off the output).
        stride: the sub-sampling step, an integer >= 1 and at most ``min(H, W)``.

    Returns:
        ``(B, C', H, W)``.

    Raises:
        ValueError: a bad ``stride``.
    """
    stride = _check_int("stride", stride, 1)
    B, C, H, W = x.shape
    if stride > min(H, W):
        raise ValueError(f"`stride` ({stride}) must be at most the image's smaller side ({min(H, W)} pixels)")
    if stride == 1:
        return fn(x)
    pad_h, pad_w = -H % stride, -W % stride
    if pad_h or pad_w:
        x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    s2, h, w = stride * stride, x.shape[-2] // stride, x.shape[-1] // stride
    sub = torch.nn.functional.pixel_unshuffle(x, stride).view(B, C, s2, h, w)  # sub-image k = i * stride + j
    y = torch.stack([fn(sub[:, :, k]) for k in range(s2)], dim=2)  # one sub-image at a time: (B, C', s2, h, w)
    return torch.nn.functional.pixel_shuffle(y.flatten(1, 2), stride)[..., :H, :W]
