"""Synthetic noise models for images and band stacks: training pairs and benchmarks.

Every function takes ``x: (..., C, H, W)`` float in the data's natural scale (typically [0, 1]) and returns the noisy
image with the same shape and dtype. Noise is added in float and never clipped (the benchmark protocol in DESIGN.md:
clip or round only where the protocol says so).

Randomness: every draw comes from the ``generator`` argument (a ``torch.Generator``; ``None`` = torch's global RNG).
Draws happen on the generator's device and are moved to ``x``'s device, so a CPU generator with a CUDA ``x`` works
(a CUDA generator is faster there). The same generator state and input give the same output.

Noise parameters (``sigma``, ``peak``, ``amount``) accept:

- a float: the same value for every image;
- a ``tuple`` ``(low, high)``: a range, drawn uniformly once per image (per leading index of ``x``), or once per image
  and channel with ``per_channel=True``;
- for ``sigma`` only, a ``list`` (or 1-D tensor) of ``C`` values: one fixed sigma per channel.

A two-value *tuple* is always a range and a *list* always per-channel values, so ``C = 2`` is not ambiguous.

Models (the per-pixel standard deviation returned as ``sigma_map`` by :func:`apply_noise` in brackets):

- ``gaussian``: ``x + sigma * n`` [``sigma``];
- ``poisson_gaussian`` (Foi et al. 2008): ``Poisson(peak * x) / peak + sigma * n`` [``sqrt(x / peak + sigma^2)``];
- ``speckle``: ``x * (1 + sigma * n)`` [``|x| * sigma``];
- ``gamma_speckle`` (SAR, ``looks`` L): ``x * G``, ``G ~ Gamma(L, 1/L)`` (mean 1, variance 1/L) [``|x| / sqrt(L)``];
- ``salt_and_pepper``: a fraction ``amount`` of pixels set to ``high`` (salt) or ``low`` (pepper)
  [the exact standard deviation of that replacement given ``x``, see :func:`salt_and_pepper_std`];
- ``stripe`` (push-broom sensors): one offset ``~ N(0, sigma^2)`` per column (or row) and channel [``sigma``];
- ``deadline`` (dead detector lines of hyperspectral sensors): each column (or row) of each channel lost with
  probability ``amount``, set to ``low`` [``sqrt(amount (1 - amount)) |x - low|``, see :func:`salt_and_pepper_std`];
- ``rician`` (MRI magnitude): ``sqrt((x + sigma n1)^2 + (sigma n2)^2)`` [the Rice standard deviation given ``|x|``,
  see :func:`rician_std`; the bias is :func:`rician_mean` minus ``|x|``];
- ``camera`` (the noise of real photos): shot and read noise added on the Bayer mosaic of the image taken back to
  linear light, then demosaicking, white balance, the sRGB curve and optionally JPEG, see :func:`camera`
  [first order: the demosaicked linear standard deviation through the slope of the sRGB curve];

with ``n, n1, n2 ~ N(0, 1)`` independent per element. Any of them can be followed by video coding, as phones and
video sites do: H.264 at a drawn quality (:func:`h264`, ``NoiseSpec.h264_crf``; the ``sigma_map`` ignores it).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Literal, Union, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "NoiseKind",
    "NoiseModel",
    "NoiseSpec",
    "apply_noise",
    "camera",
    "can_estimate_sigma",
    "curriculum_sigma",
    "deadline",
    "estimate_photon_noise",
    "estimate_poisson_gaussian",
    "estimate_sigma",
    "gaussian",
    "h264",
    "linear_to_srgb",
    "poisson_gaussian",
    "rician",
    "rician_mean",
    "rician_std",
    "salt_and_pepper",
    "salt_and_pepper_std",
    "speckle",
    "srgb_to_linear",
    "stripe",
]

NoiseKind = Literal["gaussian", "poisson_gaussian", "speckle", "gamma_speckle", "salt_and_pepper", "stripe", "deadline",
                    "rician", "camera"]
SpeckleKind = Literal["gaussian", "gamma"]
StripeDirection = Literal["vertical", "horizontal"]
ScheduleKind = Literal["linear", "cosine"]
Level = Union[float, tuple[float, float]]
SigmaLike = Union[float, tuple[float, float], Sequence[float], torch.Tensor]


# ----------------------------------------------------------------------------------------------------------- checks


def _check_x(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"Expected `x` to be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"Expected `x` to be a floating-point tensor, got {x.dtype}")
    if x.ndim < 3:
        raise ValueError(f"Expected `x` of shape (..., C, H, W) (at least 3 dims), got {tuple(x.shape)}; "
                         "add a channel axis, e.g. x[None] for one (H, W) image")


def _check_frames(frames: object, x: torch.Tensor) -> None:
    """``frames``: a positive integer dividing the number of images of ``x (..., C, H, W)`` (the clips of a video)."""
    if not (_is_integer(frames) and frames >= 1):
        raise ValueError(f"`frames` must be a positive integer, got {frames!r}")
    n = math.prod(x.shape[:-3])
    if n % frames:
        raise ValueError(f"`frames`={frames} must divide the number of images, {n} (shape {tuple(x.shape)})")


def _is_number(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _is_integer(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_value(name: str, v: float, *, positive: bool = False, at_most_one: bool = False) -> float:
    v = float(v)
    if at_most_one and not 0.0 <= v <= 1.0:
        raise ValueError(f"`{name}` must be in [0, 1], got {v}")
    if positive and not (math.isfinite(v) and v > 0):
        raise ValueError(f"`{name}` must be > 0, got {v}")
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"`{name}` must be >= 0, got {v}")
    return v


def _check_level(name: str, level: object, *, positive: bool = False, at_most_one: bool = False,
                 allow_list: bool = False) -> float | tuple[float, float] | list[float]:
    """A float, a ``(low, high)`` tuple, or (``allow_list``) a per-channel list, each value checked."""
    if _is_number(level):
        return _check_value(name, level, positive=positive, at_most_one=at_most_one)
    if isinstance(level, tuple):
        if len(level) != 2 or not all(_is_number(v) for v in level):
            hint = " (pass a list for per-channel values)" if allow_list else ""
            raise ValueError(f"`{name}` as a tuple is a (low, high) range: expected 2 numbers, got {level!r}{hint}")
        low, high = (_check_value(name, v, positive=positive, at_most_one=at_most_one) for v in level)
        if low > high:
            raise ValueError(f"`{name}` range must have low <= high, got {level!r}")
        return low, high
    if allow_list and isinstance(level, (list, torch.Tensor)):
        values = level.flatten().tolist() if isinstance(level, torch.Tensor) else list(level)
        if isinstance(level, torch.Tensor) and level.ndim != 1:
            raise ValueError(f"`{name}` as a tensor must be 1-D (one value per channel), got {tuple(level.shape)}")
        if not values or not all(_is_number(v) for v in values):
            raise ValueError(f"`{name}` as a list must hold one number per channel, got {level!r}")
        return [_check_value(name, v, positive=positive, at_most_one=at_most_one) for v in values]
    kinds = "a float, a (low, high) tuple or a per-channel list" if allow_list else "a float or a (low, high) tuple"
    raise TypeError(f"`{name}` must be {kinds}, got {type(level).__name__}")


# ------------------------------------------------------------------------------------------------------------ draws


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64; float16/bfloat16/float32 compute in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _gen_device(x: torch.Tensor, generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else x.device


def _rand(shape: Sequence[int], x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``U[0, 1)`` of ``shape`` drawn on the generator's device, returned on ``x``'s device in the work dtype."""
    u = torch.rand(tuple(shape), generator=generator, device=_gen_device(x, generator), dtype=_work_dtype(x))
    return u.to(x.device)


def _randn(shape: Sequence[int], x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``N(0, 1)`` of ``shape``, drawn like :func:`_rand`."""
    n = torch.randn(tuple(shape), generator=generator, device=_gen_device(x, generator), dtype=_work_dtype(x))
    return n.to(x.device)


def _level_shape(x: torch.Tensor, per_channel: bool) -> tuple[int, ...]:
    """``(*L, C or 1, 1, 1)``: one value per image (and channel), broadcastable against ``x``."""
    return (*x.shape[:-3], x.shape[-3] if per_channel else 1, 1, 1)


def _draw_level(name: str, level: float | tuple[float, float] | list[float], x: torch.Tensor, per_channel: bool,
                generator: torch.Generator | None) -> torch.Tensor:
    """The checked ``level`` as a tensor broadcastable against ``x``: ``(1, ..., 1)``, ``(*L, 1 or C, 1, 1)`` for a
    range, or ``(1, ..., C, 1, 1)`` for a per-channel list."""
    dtype = _work_dtype(x)
    if isinstance(level, list):
        if per_channel:
            raise ValueError(f"per_channel=True draws one `{name}` per channel from a (low, high) range; "
                             f"`{name}` is already a per-channel list")
        if len(level) != x.shape[-3]:
            raise ValueError(f"`{name}` has {len(level)} per-channel values but `x` has {x.shape[-3]} channels "
                             f"(shape {tuple(x.shape)})")
        return torch.tensor(level, dtype=dtype, device=x.device).view(-1, 1, 1)  # (C,) -> (C, 1, 1)
    if isinstance(level, tuple):
        low, high = level
        return low + (high - low) * _rand(_level_shape(x, per_channel), x, generator)
    return torch.full((1,) * x.ndim, float(level), dtype=dtype, device=x.device)


def _standard_gamma(shape: tuple[int, ...], alpha: float, x: torch.Tensor,
                    generator: torch.Generator | None) -> torch.Tensor:
    """``Gamma(alpha, 1)`` samples drawn from ``generator`` (torch's own gamma sampler takes no generator).

    Marsaglia & Tsang (2000) squeeze-rejection, vectorised: each round redraws only the rejected elements (acceptance
    is above 95 % for ``alpha >= 1``); ``alpha < 1`` uses ``Gamma(alpha + 1) * U^(1 / alpha)``.
    """
    a = alpha + 1.0 if alpha < 1.0 else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    n = math.prod(shape)
    out = torch.empty(n, dtype=_work_dtype(x), device=x.device)
    todo = torch.arange(n, device=x.device)
    while todo.numel():
        z = _randn((todo.numel(),), x, generator)
        u = _rand((todo.numel(),), x, generator)
        v = (1.0 + c * z) ** 3
        accept = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v + d * torch.log(v.clamp_min(1e-30)))
        out[todo[accept]] = d * v[accept]
        todo = todo[~accept]
    if alpha < 1.0:
        out = out * _rand((n,), x, generator) ** (1.0 / alpha)
    return out.view(shape)  # (n,) -> shape


# ----------------------------------------------------------------------------------------------------------- models
# Each private ``_model`` returns ``(noisy, std)`` in the work dtype, ``std`` broadcastable against ``x``; the public
# functions return ``noisy`` in ``x``'s dtype and :func:`apply_noise` also returns ``std`` expanded to ``x``'s shape.


def _gaussian(x: torch.Tensor, sigma: SigmaLike, generator: torch.Generator | None,
              per_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    _check_x(x)
    s = _draw_level("sigma", _check_level("sigma", sigma, allow_list=True), x, per_channel, generator)
    xw = x.to(_work_dtype(x))
    return xw + s * _randn(x.shape, x, generator), s


def gaussian(x: torch.Tensor, sigma: SigmaLike, generator: torch.Generator | None = None, *,
             per_channel: bool = False) -> torch.Tensor:
    """Additive white Gaussian noise: ``x + sigma * n``, ``n ~ N(0, 1)``.

    Args:
        x: ``(..., C, H, W)`` float, natural scale (typically [0, 1]).
        sigma: standard deviation in ``x``'s units (``25 / 255`` for "sigma 25" on 8-bit data): a float, a
            ``(low, high)`` tuple drawn uniformly per image, or a list of ``C`` per-channel values.
        generator: source of every random draw (``None``: torch's global RNG).
        per_channel: with a range, draw one sigma per image and channel instead of per image.

    Returns:
        ``(..., C, H, W)``, ``x``'s dtype, not clipped.

    Raises:
        TypeError: ``x`` is not a float tensor, or ``sigma`` is not one of the accepted forms.
        ValueError: ``x`` has fewer than 3 dims; negative sigma; a range with low > high; a per-channel list whose
            length is not ``C``; ``per_channel=True`` with a per-channel list.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> noisy = gaussian(torch.zeros(2, 3, 8, 8), (0.0, 0.2), g)  # one sigma per image
    """
    return _gaussian(x, sigma, generator, per_channel)[0].to(x.dtype)


def _poisson_gaussian(x: torch.Tensor, peak: Level, sigma: SigmaLike, generator: torch.Generator | None,
                      per_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    _check_x(x)
    p = _draw_level("peak", _check_level("peak", peak, positive=True), x, per_channel, generator)
    s = _draw_level("sigma", _check_level("sigma", sigma, allow_list=True), x, per_channel, generator)
    rate = x.to(_work_dtype(x)).clamp_min(0.0) * p
    dev = _gen_device(x, generator)
    counts = torch.poisson(rate.to(dev), generator=generator).to(x.device)
    noisy = counts / p + s * _randn(x.shape, x, generator)
    return noisy, torch.sqrt(rate / (p * p) + s * s)


def poisson_gaussian(x: torch.Tensor, peak: Level, sigma: SigmaLike = 0.0, generator: torch.Generator | None = None,
                     *, per_channel: bool = False) -> torch.Tensor:
    """Poisson-Gaussian (shot + read) noise: ``Poisson(peak * x) / peak + sigma * n`` (Foi et al. 2008).

    The noisy mean is ``x`` and its variance ``x / peak + sigma^2``: ``peak`` is the photon count of a pixel at
    ``x = 1`` (smaller peak = stronger noise). Negative ``x`` values get a Poisson rate of 0.

    Args:
        x: ``(..., C, H, W)`` float in [0, 1] (the natural scale; values above 1 are fine).
        peak: photons at ``x = 1``, > 0: a float or a ``(low, high)`` range drawn per image.
        sigma: standard deviation of the Gaussian (read) part, as in :func:`gaussian`.
        generator: source of every random draw.
        per_channel: with ranges, draw peak and sigma per image and channel.

    Returns:
        ``(..., C, H, W)``, ``x``'s dtype, not clipped (may be negative where ``sigma > 0``).

    Raises:
        TypeError, ValueError: as :func:`gaussian`; ``peak <= 0``.
    """
    return _poisson_gaussian(x, peak, sigma, generator, per_channel)[0].to(x.dtype)


def _speckle(x: torch.Tensor, sigma: SigmaLike | None, generator: torch.Generator | None, kind: str,
             looks: float | None, per_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    _check_x(x)
    xw = x.to(_work_dtype(x))
    if kind == "gaussian":
        if sigma is None:
            raise ValueError("speckle(kind='gaussian') needs `sigma`, got None")
        if looks is not None:
            raise ValueError(f"`looks` belongs to speckle(kind='gamma'); kind='gaussian' takes `sigma`, got "
                             f"looks={looks}")
        s = _draw_level("sigma", _check_level("sigma", sigma, allow_list=True), x, per_channel, generator)
        return xw * (1.0 + s * _randn(x.shape, x, generator)), xw.abs() * s
    elif kind == "gamma":
        if looks is None:
            raise ValueError("speckle(kind='gamma') needs `looks`, got None")
        if sigma is not None:
            raise ValueError(f"`sigma` belongs to speckle(kind='gaussian'); kind='gamma' takes `looks`, got "
                             f"sigma={sigma}")
        if per_channel:
            raise ValueError("per_channel=True applies to sigma ranges; speckle(kind='gamma') has a fixed `looks`")
        L = _check_value("looks", looks, positive=True)
        G = _standard_gamma(tuple(x.shape), L, x, generator) / L
        return xw * G, xw.abs() / math.sqrt(L)
    else:
        raise ValueError(f"`kind` must be one of {get_args(SpeckleKind)}, got {kind!r}")


def speckle(x: torch.Tensor, sigma: SigmaLike | None = None, generator: torch.Generator | None = None, *,
            kind: SpeckleKind = "gaussian", looks: float | None = None, per_channel: bool = False) -> torch.Tensor:
    """Multiplicative speckle.

    - ``kind="gaussian"``: ``x * (1 + sigma * n)``, ``n ~ N(0, 1)``: noise standard deviation ``|x| * sigma``.
    - ``kind="gamma"`` (fully developed SAR speckle with ``looks`` L): ``x * G``, ``G ~ Gamma(L, 1/L)``:
      mean 1, variance ``1 / L``; the result keeps the sign of ``x`` and is ``>= 0`` for ``x >= 0``.

    Args:
        x: ``(..., C, H, W)`` float, natural scale (intensity for SAR).
        sigma: relative standard deviation for ``kind="gaussian"`` (forms as in :func:`gaussian`).
        generator: source of every random draw.
        kind: ``"gaussian"`` or ``"gamma"``.
        looks: number of looks L > 0 for ``kind="gamma"`` (need not be an integer).
        per_channel: with a sigma range, draw per image and channel.

    Returns:
        ``(..., C, H, W)``, ``x``'s dtype.

    Raises:
        TypeError, ValueError: as :func:`gaussian`; unknown ``kind``; ``sigma`` missing for ``"gaussian"`` or given
            for ``"gamma"``; ``looks`` missing, given for ``"gaussian"`` or ``<= 0``.
    """
    return _speckle(x, sigma, generator, kind, looks, per_channel)[0].to(x.dtype)


def salt_and_pepper_std(x: torch.Tensor, amount: float | torch.Tensor, salt_vs_pepper: float = 0.5,
                        low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Exact per-pixel standard deviation of salt-and-pepper noise ``noisy - x`` given ``x``.

    With ``p = amount``, ``s = salt_vs_pepper``: ``E[e] = p (s (high - x) + (1 - s)(low - x))``,
    ``E[e^2] = p (s (high - x)^2 + (1 - s)(low - x)^2)`` and ``std = sqrt(E[e^2] - E[e]^2)``.

    Args:
        x: clean values, any shape.
        amount: replaced fraction in [0, 1] (a float or a tensor broadcastable against ``x``).
        salt_vs_pepper: fraction of the replaced pixels set to ``high``.
        low: pepper value.
        high: salt value.

    Returns:
        Same shape as ``x``.
    """
    e_high, e_low = high - x, low - x
    mean = amount * (salt_vs_pepper * e_high + (1 - salt_vs_pepper) * e_low)
    second = amount * (salt_vs_pepper * e_high ** 2 + (1 - salt_vs_pepper) * e_low ** 2)
    return torch.sqrt((second - mean ** 2).clamp_min(0.0))


def _salt_and_pepper(x: torch.Tensor, amount: Level, generator: torch.Generator | None, salt_vs_pepper: float,
                     low: float, high: float, per_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    _check_x(x)
    p = _draw_level("amount", _check_level("amount", amount, at_most_one=True), x, False, generator)
    salt_vs_pepper = _check_value("salt_vs_pepper", salt_vs_pepper, at_most_one=True)
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise ValueError(f"`low` and `high` must be finite with low <= high, got low={low}, high={high}")
    # per_channel=False: one draw per pixel location, shared by the channels (a dead/hot pixel is white or black)
    shape = tuple(x.shape) if per_channel else (*x.shape[:-3], 1, *x.shape[-2:])
    hit = _rand(shape, x, generator) < p
    salt = _rand(shape, x, generator) < salt_vs_pepper
    xw = x.to(_work_dtype(x))
    value = torch.where(salt, torch.full_like(xw[..., :1, :, :], high), torch.full_like(xw[..., :1, :, :], low))
    noisy = torch.where(hit, value, xw)
    return noisy, salt_and_pepper_std(xw, p, salt_vs_pepper, low, high)


def salt_and_pepper(x: torch.Tensor, amount: Level, generator: torch.Generator | None = None, *,
                    salt_vs_pepper: float = 0.5, low: float = 0.0, high: float = 1.0,
                    per_channel: bool = False) -> torch.Tensor:
    """Impulse noise: each pixel is replaced with probability ``amount`` by ``high`` (salt, with probability
    ``salt_vs_pepper``) or ``low`` (pepper).

    Args:
        x: ``(..., C, H, W)`` float in ``[low, high]``.
        amount: replaced fraction in [0, 1]: a float or a ``(low, high)`` range drawn per image.
        generator: source of every random draw.
        salt_vs_pepper: fraction of replaced pixels that become salt, in [0, 1].
        low: pepper value (0 for data in [0, 1]).
        high: salt value (1 for data in [0, 1]).
        per_channel: ``False`` (default) replaces whole pixels (all channels, same value); ``True`` draws every
            channel independently.

    Returns:
        ``(..., C, H, W)``, ``x``'s dtype.

    Raises:
        TypeError, ValueError: ``x`` as in :func:`gaussian`; ``amount`` or ``salt_vs_pepper`` outside [0, 1];
            ``low > high`` or non-finite.
    """
    return _salt_and_pepper(x, amount, generator, salt_vs_pepper, low, high, per_channel)[0].to(x.dtype)


def _stripe(x: torch.Tensor, sigma: SigmaLike, generator: torch.Generator | None, direction: str,
            per_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    _check_x(x)
    s = _draw_level("sigma", _check_level("sigma", sigma, allow_list=True), x, per_channel, generator)
    *lead, C, H, W = x.shape
    if direction == "vertical":
        offsets = _randn((*lead, C, 1, W), x, generator)  # one per column and channel, constant down the column
    elif direction == "horizontal":
        offsets = _randn((*lead, C, H, 1), x, generator)  # one per row and channel, constant along the row
    else:
        raise ValueError(f"`direction` must be one of {get_args(StripeDirection)}, got {direction!r}")
    return x.to(_work_dtype(x)) + s * offsets, s


def _deadline(x: torch.Tensor, amount: Level, generator: torch.Generator | None, direction: str, low: float,
              per_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    _check_x(x)
    p = _draw_level("amount", _check_level("amount", amount, at_most_one=True), x, per_channel, generator)
    if not math.isfinite(low):
        raise ValueError(f"`low` must be finite, got {low}")
    *lead, C, H, W = x.shape
    if direction == "vertical":
        dead = _rand((*lead, C, 1, W), x, generator) < p  # a column of a channel, top to bottom
    elif direction == "horizontal":
        dead = _rand((*lead, C, H, 1), x, generator) < p
    else:
        raise ValueError(f"`direction` must be one of {get_args(StripeDirection)}, got {direction!r}")
    xw = x.to(_work_dtype(x))
    return torch.where(dead, torch.full_like(xw, low), xw), salt_and_pepper_std(xw, p, 0.0, low, low)


def deadline(x: torch.Tensor, amount: Level, generator: torch.Generator | None = None, *,
             direction: StripeDirection = "vertical", low: float = 0.0, per_channel: bool = False) -> torch.Tensor:
    """Dead lines of push-broom hyperspectral sensors: each column (``"vertical"``) or row (``"horizontal"``) of each
    channel is lost with probability ``amount``: every pixel of it set to ``low``. Channels lose different lines.

    Args:
        x: ``(..., C, H, W)`` float, natural scale.
        amount: the fraction of lines lost, in [0, 1]: a float or a ``(low, high)`` range drawn per image.
        generator: source of every random draw.
        direction: ``"vertical"`` (dead columns) or ``"horizontal"`` (dead rows).
        low: the value of a dead line (0 for data in [0, 1]).
        per_channel: with an ``amount`` range, draw it per image and channel.

    Returns:
        ``(..., C, H, W)``, ``x``'s dtype.

    Raises:
        TypeError, ValueError: ``x`` as in :func:`gaussian`; ``amount`` outside [0, 1]; unknown ``direction``;
            non-finite ``low``.
    """
    return _deadline(x, amount, generator, direction, low, per_channel)[0].to(x.dtype)


def stripe(x: torch.Tensor, sigma: SigmaLike, generator: torch.Generator | None = None, *,
           direction: StripeDirection = "vertical", per_channel: bool = False) -> torch.Tensor:
    """Stripe noise of push-broom / whisk-broom sensors: one offset ``~ N(0, sigma^2)`` per column (``"vertical"``
    stripes) or per row (``"horizontal"``) and channel, added to every pixel of that column or row.

    Args:
        x: ``(..., C, H, W)`` float, natural scale.
        sigma: offset standard deviation (forms as in :func:`gaussian`).
        generator: source of every random draw.
        direction: ``"vertical"`` (stripes run along H, one offset per column) or ``"horizontal"``.
        per_channel: with a sigma range, draw per image and channel.

    Returns:
        ``(..., C, H, W)``, ``x``'s dtype.

    Raises:
        TypeError, ValueError: as :func:`gaussian`; unknown ``direction``.
    """
    return _stripe(x, sigma, generator, direction, per_channel)[0].to(x.dtype)


def _rice_laguerre_half(z: torch.Tensor) -> torch.Tensor:
    """``exp(-z) ((1 + 2z) I0(z) + 2z I1(z))`` = ``L_{1/2}(-2z)`` with exponentially scaled Bessel functions."""
    return (1.0 + 2.0 * z) * torch.special.i0e(z) + 2.0 * z * torch.special.i1e(z)


def rician_mean(amplitude: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Mean of a Rice distribution: ``sigma sqrt(pi/2) L_{1/2}(-A^2 / (2 sigma^2))`` (``A`` when sigma is 0).

    Args:
        amplitude: ``A = |x|``, any shape.
        sigma: Gaussian standard deviation per component (float or tensor broadcastable against ``amplitude``).

    Returns:
        Same shape as ``amplitude`` broadcast with ``sigma``.
    """
    A = amplitude.abs().double()
    s = torch.as_tensor(sigma, dtype=torch.float64, device=A.device)
    z = A ** 2 / (4.0 * s.clamp_min(1e-300) ** 2)
    mean = s * math.sqrt(math.pi / 2.0) * _rice_laguerre_half(z)
    return torch.where(s > 0, mean, A).to(amplitude.dtype)


def rician_std(amplitude: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Standard deviation of a Rice distribution: ``sqrt(A^2 + 2 sigma^2 - mean^2)`` (computed in float64).

    It is about ``sigma * sqrt(2 - pi/2)`` at ``A = 0`` and tends to ``sigma`` for ``A >> sigma``.

    Args:
        amplitude: ``A = |x|``, any shape.
        sigma: Gaussian standard deviation per component.

    Returns:
        Same shape as ``amplitude`` broadcast with ``sigma``.
    """
    A = amplitude.abs().double()
    s = torch.as_tensor(sigma, dtype=torch.float64, device=A.device)
    var = A ** 2 + 2.0 * s ** 2 - rician_mean(A, s) ** 2
    return torch.sqrt(var.clamp_min(0.0)).to(amplitude.dtype)


def _rician(x: torch.Tensor, sigma: SigmaLike, generator: torch.Generator | None,
            per_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    _check_x(x)
    s = _draw_level("sigma", _check_level("sigma", sigma, allow_list=True), x, per_channel, generator)
    xw = x.to(_work_dtype(x))
    n1, n2 = _randn(x.shape, x, generator), _randn(x.shape, x, generator)
    return torch.sqrt((xw + s * n1) ** 2 + (s * n2) ** 2), rician_std(xw, s)


def rician(x: torch.Tensor, sigma: SigmaLike, generator: torch.Generator | None = None, *,
           per_channel: bool = False) -> torch.Tensor:
    """Rician noise of MRI magnitude images: ``sqrt((x + n1)^2 + n2^2)``, ``n1, n2 ~ N(0, sigma^2)``.

    The result is biased upwards: its mean is :func:`rician_mean` (``sigma sqrt(pi/2)`` at ``x = 0``).

    Args:
        x: ``(..., C, H, W)`` float magnitude, natural scale.
        sigma: per-component standard deviation (forms as in :func:`gaussian`).
        generator: source of every random draw.
        per_channel: with a sigma range, draw per image and channel.

    Returns:
        ``(..., C, H, W)``, ``x``'s dtype, ``>= 0``.

    Raises:
        TypeError, ValueError: as :func:`gaussian`.
    """
    return _rician(x, sigma, generator, per_channel)[0].to(x.dtype)


# sRGB transfer function (IEC 61966-2-1) and the camera pipeline


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """sRGB-coded values -> linear light (the exact piecewise IEC 61966-2-1 curve; ``x`` clipped to [0, 1])."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """Linear light in [0, 1] -> sRGB-coded values (inverse of :func:`srgb_to_linear`; ``x`` clipped to [0, 1])."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(0.0031308) ** (1.0 / 2.4) - 0.055)


def _srgb_slope(linear: torch.Tensor) -> torch.Tensor:
    """d linear_to_srgb / d linear at ``linear`` (clipped to [0, 1])."""
    v = linear.clamp(0.0, 1.0)
    return torch.where(v <= 0.0031308, torch.full_like(v, 12.92),
                       (1.055 / 2.4) * v.clamp_min(0.0031308) ** (-1.4 / 2.4))


_WB_GAINS = ((1.9, 2.4), (1.5, 1.9))  # red and blue white-balance gains drawn per image (Brooks et al. 2019)
_DEMOSAIC = (  # bilinear demosaicking: kernels for the red/blue planes and the green plane of an RGGB mosaic
    torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 4.0,
    torch.tensor([[0.0, 1.0, 0.0], [1.0, 4.0, 1.0], [0.0, 1.0, 0.0]]) / 4.0,
)


def _bayer_masks(n: int, h: int, w: int, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``(n, 3, h, w)`` 0/1 masks of the R, G, B sites of an RGGB mosaic whose phase is drawn per image."""
    phase = (_rand((n, 2), x, generator) * 2).floor().long()  # (n, 2): row and column offset, 0 or 1
    rows = (torch.arange(h, device=x.device)[None, :] + phase[:, :1]) % 2  # (n, h)
    cols = (torch.arange(w, device=x.device)[None, :] + phase[:, 1:]) % 2  # (n, w)
    r = ((rows[:, :, None] == 0) & (cols[:, None, :] == 0))  # (n, h, w)
    b = ((rows[:, :, None] == 1) & (cols[:, None, :] == 1))
    return torch.stack([r, ~(r | b), b], dim=1).to(_work_dtype(x))  # (n, 3, h, w)


def _demosaic(masks: torch.Tensor, values: torch.Tensor, variances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear demosaicking of the ``(n, 1, h, w)`` mosaic ``values`` (sites given by ``(n, 3, h, w)`` ``masks``),
    and the exact variance of its output when the samples are independent with ``variances``.

    A normalised convolution: each output is the kernel-weighted mean of the samples of its colour present in its
    3 x 3 neighbourhood, so inside the image it is the usual bilinear interpolation, and at the borders it averages
    the samples that exist (each counted once: the variance ``sum w^2 var / (sum w)^2`` holds there too).
    """
    rb, g = (k.to(values) for k in _DEMOSAIC)
    weight = torch.stack([rb, g, rb])[:, None]  # (3, 1, 3, 3): one kernel per colour plane

    def conv(t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, padding=1, groups=3)

    norm = conv(masks, weight)  # (n, 3, h, w) > 0: every pixel has a sample of each colour in its 3 x 3 neighbourhood
    return conv(masks * values, weight) / norm, conv(masks * variances, weight * weight) / (norm * norm)


def _jpeg(x: torch.Tensor, quality: tuple[int, int], generator: torch.Generator | None,
          frames: int = 1) -> torch.Tensor:
    """Round ``(n, C, h, w)`` (C = 1 or 3) to 8 bits and pass each image through Pillow's JPEG (4:2:0 chroma) at a
    quality drawn in ``quality``, its 8 x 8 block grid shifted by an offset drawn per image (the image is padded by
    replication above and to the left); both drawn once per group of ``frames`` consecutive images."""
    import io

    from PIL import Image

    lo, hi = quality
    n, c, h, w = x.shape
    q = (lo + (hi - lo + 1) * _rand((n // frames,), x, generator)).floor().clamp(lo, hi).long()
    shift = (_rand((n // frames, 2), x, generator) * 8).floor().long()
    q, shift = q.repeat_interleave(frames).tolist(), shift.repeat_interleave(frames, dim=0).tolist()
    codes = (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # (n, h, w, C)
    out = []
    for i, (dy, dx) in enumerate(shift):
        padded = np.pad(codes[i], ((dy, 0), (dx, 0), (0, 0)), mode="edge")
        buf = io.BytesIO()
        Image.fromarray(padded[..., 0] if c == 1 else padded).save(buf, "JPEG", quality=int(q[i]))
        decoded = np.asarray(Image.open(buf)).reshape(h + dy, w + dx, c)[dy:, dx:]
        out.append(torch.from_numpy(decoded.copy()))
    return torch.stack(out).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype) / 255.0


def _camera(x: torch.Tensor, peak: Level, sigma: Level, jpeg_quality: tuple[float, float] | None,
            generator: torch.Generator | None, frames: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    _check_x(x)
    _check_frames(frames, x)
    peak = _check_level("peak", peak, positive=True)
    sigma = _check_level("sigma", sigma)
    if jpeg_quality is not None:
        jpeg_quality = _check_quality(jpeg_quality)
        if x.shape[-3] not in (1, 3):
            raise ValueError(f"JPEG (jpeg_quality) needs 1 or 3 channels, got {x.shape[-3]} (shape {tuple(x.shape)})")
    *lead, C, H, W = x.shape
    if C == 3 and min(H, W) < 2:
        raise ValueError(f"camera noise on a colour image needs at least 2 x 2 pixels (one Bayer quad), got "
                         f"shape {tuple(x.shape)}")
    xs = x.reshape(-1, C, H, W).to(_work_dtype(x))  # (n, C, H, W)
    m = xs.shape[0] // frames  # cameras: each one's settings are drawn once and repeated over its frames

    def per_frame(t: torch.Tensor) -> torch.Tensor:
        return t.repeat_interleave(frames, dim=0) if t.shape[0] == m else t

    lin = srgb_to_linear(xs)
    lo, hi = peak if isinstance(peak, tuple) else (peak, peak)
    p = per_frame(torch.exp(math.log(lo) + (math.log(hi) - math.log(lo))
                            * _rand((m, 1, 1, 1), xs, generator)))  # log-uniform
    s = per_frame(_draw_level("sigma", sigma, xs[::frames], False, generator))  # (n, 1, 1, 1) or (1, 1, 1, 1)
    if C == 3:  # a colour sensor: one RGGB mosaic, white balance undone before the noise and redone after
        masks = per_frame(_bayer_masks(m, H, W, xs, generator))
        (rl, rh), (bl, bh) = _WB_GAINS
        gains = per_frame(torch.cat([rl + (rh - rl) * _rand((m, 1), xs, generator),
                                     torch.ones((m, 1), dtype=xs.dtype, device=xs.device),
                                     bl + (bh - bl) * _rand((m, 1), xs, generator)], 1)[..., None, None])
        raw = (masks * lin / gains).sum(dim=1, keepdim=True)  # (n, 1, H, W): the sensor's values
    else:  # a monochrome sensor: every pixel measured
        raw, gains = lin, torch.ones((), dtype=xs.dtype, device=xs.device)
    rate = raw.clamp_min(0.0) * p
    counts = torch.poisson(rate.to(_gen_device(xs, generator)), generator=generator).to(xs.device)
    measured = counts / p + s * _randn(raw.shape, xs, generator)
    var = rate / (p * p) + s * s  # the variance of each measured value
    if C == 3:
        noisy_lin, var = _demosaic(masks, measured, var)  # (n, 3, H, W) each
        noisy_lin, var = noisy_lin * gains, var * gains * gains
    else:
        noisy_lin = measured
    noisy = linear_to_srgb(noisy_lin)
    std = _srgb_slope(lin) * var.sqrt()  # first order (delta method) through the sRGB curve, before JPEG
    if jpeg_quality is not None:
        noisy = _jpeg(noisy, jpeg_quality, generator, frames)
    return noisy.reshape(x.shape), std.reshape(x.shape)


def _check_quality(quality: object, name: str = "`jpeg_quality`") -> tuple[int, int]:
    if not (isinstance(quality, (tuple, list)) and len(quality) == 2 and all(_is_number(q) for q in quality)):
        raise ValueError(f"{name} must be a (low, high) range of JPEG qualities, got {quality!r}")
    lo, hi = quality
    if not (1 <= lo <= hi <= 100 and float(lo).is_integer() and float(hi).is_integer()):
        raise ValueError(f"{name} must be integers with 1 <= low <= high <= 100, got {quality!r}")
    return int(lo), int(hi)


def camera(x: torch.Tensor, peak: Level, sigma: Level = 0.0, generator: torch.Generator | None = None, *,
           jpeg_quality: tuple[int, int] | None = None, frames: int = 1) -> torch.Tensor:
    """Noise of a camera's processing pipeline: the noise of real photos (Brooks et al. 2019, CBDNet 2019).

    ``x`` is taken as sRGB-coded and taken back to the sensor: linear light (:func:`srgb_to_linear`), for 3 channels
    an RGGB Bayer mosaic (phase drawn per image) with the white balance undone (red and blue gains drawn per image
    in [1.9, 2.4] and [1.5, 1.9]). Shot and read noise are added there, ``Poisson(peak * v) / peak + sigma * n``;
    then the pipeline runs forward: bilinear demosaicking, white balance, clipping to [0, 1], the sRGB curve and
    optionally JPEG (its 8 x 8 block grid at an offset drawn per image). The result is noise that depends on the
    signal (strongest in the shadows, after the sRGB curve), is correlated between neighbouring pixels, and is
    stronger in red and blue than in green: what a Gaussian-trained denoiser does not expect. No colour-correction
    matrix is applied, so the noise of different colours stays uncorrelated. Other channel counts are a monochrome
    sensor (no mosaic, no white balance).

    The returned ``sigma_map`` of :func:`apply_noise` is first order: the exact standard deviation of the demosaicked
    linear values, through the slope of the sRGB curve at the clean value; it ignores clipping and JPEG.

    Args:
        x: ``(..., C, H, W)`` float sRGB in [0, 1] (clipped to it).
        peak: photons at full scale, > 0: a float or a ``(low, high)`` range drawn log-uniformly per image (Brooks et
            al.'s shot-noise range is about ``(80, 10000)``).
        sigma: standard deviation of the read noise in linear units (a float or a range drawn per image).
        generator: source of every random draw.
        jpeg_quality: ``(low, high)``: JPEG-compress the result at an integer quality drawn per image (1 or 3
            channels; the output is then on the 8-bit grid); ``None``: no JPEG.
        frames: video: the images (over the flattened leading dimensions) come in clips of ``frames`` consecutive
            frames filmed by one camera: its settings (photon level, read noise, white balance, mosaic phase, JPEG
            quality and grid) are drawn once per clip, its noise independently in every frame.

    Returns:
        ``(..., C, H, W)``, ``x``'s dtype, in [0, 1].

    Raises:
        TypeError, ValueError: as :func:`poisson_gaussian`; a bad ``jpeg_quality`` or JPEG for other than 1 or 3
            channels; a colour image smaller than 2 x 2 pixels; ``frames`` not a positive integer dividing the
            number of images.

    Example:
        >>> noisy = camera(torch.rand(2, 3, 32, 32), (100.0, 1000.0), 0.002, torch.Generator().manual_seed(0))
    """
    return _camera(x, peak, sigma, jpeg_quality, generator, frames)[0].to(x.dtype)


_H264_PARAMS = "threads=1:lookahead-threads=1:sliced-threads=0:mbtree=0"  # reproducible: one thread, and no
# macroblock tree (with it, libx264's output was seen to change from run to run with the state of the heap)
_X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
_BT709, _LIMITED = 1, 1  # AVCOL_SPC_BT709, AVCOL_RANGE_MPEG: how phones and cameras code HD video


def _check_crf(crf: object, name: str = "`crf`") -> tuple[int, int]:
    pair = (crf, crf) if _is_integer(crf) else crf
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(_is_integer(q) for q in pair)
            and 0 <= pair[0] <= pair[1] <= 51):
        raise ValueError(f"{name} must be an H.264 CRF or a (low, high) range of them, integers with 0 <= low <= "
                         f"high <= 51, got {crf!r}")
    return int(pair[0]), int(pair[1])


def _h264(x: torch.Tensor, crf: tuple[int, int], generator: torch.Generator | None, frames: int,
          preset: str) -> torch.Tensor:
    """``(n, C, h, w)``, C = 1 or 3, in clips of ``frames`` consecutive images: each clip coded and decoded."""
    from xmodal.io import import_av

    av = import_av("H.264 noise (h264_crf)")
    n, c, h, w = x.shape
    lo, hi = crf
    q = (lo + (hi - lo + 1) * _rand((n // frames,), x, generator)).floor().clamp(lo, hi).long().tolist()
    codes = (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # (n, h, w, C)
    codes = np.pad(codes, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")  # 4:2:0 needs an even size
    fmt = "gray" if c == 1 else "rgb24"
    out = []
    for k, quality in enumerate(q):
        enc = av.CodecContext.create("libx264", "w")
        enc.width, enc.height, enc.pix_fmt = codes.shape[2], codes.shape[1], "yuv420p"
        enc.time_base, enc.framerate = Fraction(1, 30), 30
        enc.colorspace, enc.color_range = _BT709, _LIMITED
        enc.options = {"crf": str(quality), "preset": preset, "x264-params": _H264_PARAMS}
        packets = []
        for t in range(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(codes[k * frames + t].squeeze(-1) if c == 1
                                                                    else codes[k * frames + t]), format=fmt)
            frame = frame.reformat(format="yuv420p", dst_colorspace=_BT709, dst_color_range=_LIMITED)
            frame.pts = t
            packets += enc.encode(frame)
        packets += enc.encode(None)
        dec = av.CodecContext.create("h264", "r")
        dec.thread_count = 1
        decoded = [f for p in [*packets, None] for f in dec.decode(p)]
        assert len(decoded) == frames, (frames, len(decoded))  # libx264 drops no frame
        out += [f.to_ndarray(format=fmt).reshape(codes.shape[1:])[:h, :w] for f in decoded]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype) / 255.0


def h264(x: torch.Tensor, crf: int | tuple[int, int], generator: torch.Generator | None = None, *, frames: int = 1,
         preset: str = "veryfast") -> torch.Tensor:
    """Video coding as a noise model: ``x`` coded with H.264 and decoded, as a phone or a video site does.

    Each clip of ``frames`` consecutive images (over the flattened leading dimensions) is one video: rounded to
    8 bits, taken to 4:2:0 YCbCr (BT.709, limited range) by swscale, coded by libx264 at a constant rate factor
    drawn per clip in ``crf`` (18: near transparent; 23: x264's default; 28 and above: blocking, smeared texture,
    mosquito noise at edges), decoded and taken back to RGB the way :mod:`xmodal.videoio` reads video files. The
    first frame of a clip is an intra frame, the others are predicted (P and B). Coding also removes some of the
    noise; what it leaves is correlated in space and in time. The output is reproducible: the same input and
    generator state give the same output (libx264 runs on one thread, without its macroblock tree).

    Args:
        x: ``(..., C, H, W)`` float in [0, 1] (clipped to it), ``C`` 1 (gray) or 3 (RGB); any size (odd sizes
            are padded for 4:2:0 and cropped back).
        crf: the constant rate factor, an integer in [0, 51], or a ``(low, high)`` range drawn per clip.
        generator: source of the CRF draws.
        frames: clip length; it must divide the number of images. 1: every image is a one-frame video (intra
            coded, like a still).
        preset: libx264's speed preset (``"veryfast"``: fast; the bundled ``video_color_real`` was trained with it).

    Returns:
        ``(..., C, H, W)``, ``x``'s dtype, on the 8-bit grid.

    Raises:
        ImportError: without PyAV (``pip install "xmodal[video]"``).
        TypeError, ValueError: ``x`` not a float tensor of at least 3 dimensions; ``C`` not 1 or 3; a bad ``crf``;
            ``frames`` not a positive integer dividing the number of images; an unknown ``preset``.

    Example:
        >>> clip = torch.rand(8, 3, 64, 64)
        >>> coded = h264(clip, (18, 28), torch.Generator().manual_seed(0), frames=8)
    """
    _check_x(x)
    crf = _check_crf(crf)
    _check_frames(frames, x)
    if preset not in _X264_PRESETS:
        raise ValueError(f"`preset` must be one of {_X264_PRESETS}, got {preset!r}")
    C, H, W = x.shape[-3:]
    if C not in (1, 3):
        raise ValueError(f"H.264 noise needs 1 or 3 channels, got {C} (shape {tuple(x.shape)})")
    return _h264(x.reshape(-1, C, H, W), crf, generator, frames, preset).reshape(x.shape)


# ----------------------------------------------------------------------------------------------------- config level


@dataclass(frozen=True)
class NoiseSpec:
    """Configuration of one noise model (YAML-friendly: ranges are ``(low, high)``; ``low == high`` fixes a value).

    Attributes:
        kind: which model (see the module docstring).
        sigma: Gaussian / speckle / stripe / Rician standard deviation range, drawn per image (natural units;
            the default is the [0, 50] / 255 blind range of DRUNet-style training).
        peak: Poisson photons at ``x = 1``, range drawn per image (``poisson_gaussian``; log-uniformly for
            ``camera``, at full scale in linear light); the Gaussian read part uses ``sigma`` (set
            ``sigma=(0.0, 0.0)`` for pure Poisson).
        amount: replaced fraction range (``salt_and_pepper``; lost lines, ``deadline``).
        looks: number of looks L > 0 (``gamma_speckle``).
        salt_vs_pepper: fraction of replaced pixels set to ``high`` (``salt_and_pepper``).
        low: pepper value (``salt_and_pepper``); value of a dead line (``deadline``).
        high: salt value (``salt_and_pepper``).
        direction: stripe or dead-line direction (``stripe``, ``deadline``).
        per_channel: draw ranges per image and channel instead of per image (for ``salt_and_pepper`` it replaces
            channels independently; ``gamma_speckle`` and ``camera`` ignore it).
        jpeg_quality: ``camera`` only: ``(low, high)`` JPEG quality drawn per image, ``None`` for no JPEG.
        h264_crf: after the noise, H.264 coding at a CRF (an integer, or a ``(low, high)`` range drawn per image;
            per clip in video training; :func:`h264`); ``None``: no coding. Needs PyAV and 1 or 3 channels.
    """

    kind: NoiseKind = "gaussian"
    sigma: tuple[float, float] = (0.0, 50.0 / 255.0)
    peak: tuple[float, float] = (10.0, 100.0)
    amount: tuple[float, float] = (0.0, 0.1)
    looks: float = 1.0
    salt_vs_pepper: float = 0.5
    low: float = 0.0
    high: float = 1.0
    direction: StripeDirection = "vertical"
    per_channel: bool = False
    jpeg_quality: Union[tuple[int, int], None] = None
    h264_crf: Union[tuple[int, int], None] = None

    def __post_init__(self) -> None:
        if self.kind not in get_args(NoiseKind):
            raise ValueError(f"NoiseSpec.kind must be one of {get_args(NoiseKind)}, got {self.kind!r}")
        if self.direction not in get_args(StripeDirection):
            raise ValueError(f"NoiseSpec.direction must be one of {get_args(StripeDirection)}, "
                             f"got {self.direction!r}")
        for f in fields(self):
            if f.name in ("sigma", "peak", "amount"):
                value = getattr(self, f.name)
                if isinstance(value, list):  # YAML gives lists; keep the frozen dataclass hashable
                    value = tuple(value)
                    object.__setattr__(self, f.name, value)
                if not isinstance(value, tuple):
                    raise TypeError(f"NoiseSpec.{f.name} must be a (low, high) tuple, got {value!r}")
                _check_level(f"NoiseSpec.{f.name}", value, positive=f.name == "peak",
                             at_most_one=f.name == "amount")
        if self.jpeg_quality is not None:
            object.__setattr__(self, "jpeg_quality", _check_quality(self.jpeg_quality, "NoiseSpec.jpeg_quality"))
            if self.kind != "camera":
                raise ValueError(f"NoiseSpec.jpeg_quality is for kind 'camera', got kind {self.kind!r}")
        if self.h264_crf is not None:
            object.__setattr__(self, "h264_crf", _check_crf(self.h264_crf, "NoiseSpec.h264_crf"))
        _check_value("NoiseSpec.looks", self.looks, positive=True)
        _check_value("NoiseSpec.salt_vs_pepper", self.salt_vs_pepper, at_most_one=True)
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low <= self.high):
            raise ValueError(f"NoiseSpec.low and NoiseSpec.high must be finite with low <= high, "
                             f"got low={self.low}, high={self.high}")


def apply_noise(x: torch.Tensor, spec: NoiseSpec,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the model described by ``spec``; also return the per-pixel noise standard deviation.

    ``sigma_map`` is the standard deviation of ``noisy - x`` given ``x`` (and the drawn parameters), suitable as the
    optional noise-level-map input channel of a network:

    - ``gaussian``, ``stripe``: the drawn ``sigma`` (constant per image/channel);
    - ``poisson_gaussian``: ``sqrt(max(x, 0) / peak + sigma^2)``;
    - ``speckle``: ``|x| * sigma``; ``gamma_speckle``: ``|x| / sqrt(looks)``;
    - ``salt_and_pepper``: :func:`salt_and_pepper_std` (0 where ``amount`` is 0);
    - ``rician``: :func:`rician_std` of ``|x|`` (tends to ``sigma`` in bright regions, ``~0.655 sigma`` at 0);
    - ``camera``: first order, see :func:`camera`;

    and that of the noise before any ``h264_crf`` coding (every image is then a one-frame video).

    Args:
        x: ``(..., C, H, W)`` float, natural scale.
        spec: the noise model.
        generator: source of every random draw.

    Returns:
        ``(noisy, sigma_map)``, both ``(..., C, H, W)`` in ``x``'s dtype.

    Raises:
        TypeError, ValueError: as the model's function.

    Example:
        >>> spec = NoiseSpec(kind="poisson_gaussian", peak=(20.0, 60.0), sigma=(0.0, 0.02))
        >>> noisy, sigma_map = apply_noise(torch.rand(4, 3, 32, 32), spec, torch.Generator().manual_seed(0))
    """
    if not isinstance(spec, NoiseSpec):
        raise TypeError(f"Expected `spec` to be a NoiseSpec, got {type(spec).__name__}")
    k, pc = spec.kind, spec.per_channel
    if k == "gaussian":
        noisy, std = _gaussian(x, spec.sigma, generator, pc)
    elif k == "poisson_gaussian":
        noisy, std = _poisson_gaussian(x, spec.peak, spec.sigma, generator, pc)
    elif k == "speckle":
        noisy, std = _speckle(x, spec.sigma, generator, "gaussian", None, pc)
    elif k == "gamma_speckle":
        noisy, std = _speckle(x, None, generator, "gamma", spec.looks, False)
    elif k == "salt_and_pepper":
        noisy, std = _salt_and_pepper(x, spec.amount, generator, spec.salt_vs_pepper, spec.low, spec.high, pc)
    elif k == "stripe":
        noisy, std = _stripe(x, spec.sigma, generator, spec.direction, pc)
    elif k == "deadline":
        noisy, std = _deadline(x, spec.amount, generator, spec.direction, spec.low, pc)
    elif k == "rician":
        noisy, std = _rician(x, spec.sigma, generator, pc)
    elif k == "camera":
        noisy, std = _camera(x, spec.peak, spec.sigma, spec.jpeg_quality, generator)
    else:  # unreachable through NoiseSpec.__post_init__, kept for exhaustiveness
        raise ValueError(f"NoiseSpec.kind must be one of {get_args(NoiseKind)}, got {k!r}")
    if spec.h264_crf is not None:
        noisy = h264(noisy, spec.h264_crf, generator)
    return noisy.to(x.dtype), std.expand(x.shape).to(x.dtype).contiguous()


class NoiseModel(nn.Module):
    """Thin module around :func:`apply_noise`: stores a :class:`NoiseSpec`, holds no parameters.

    Example:
        >>> model = NoiseModel(NoiseSpec(kind="gaussian", sigma=(0.0, 0.2)))
        >>> noisy, sigma_map = model(torch.rand(2, 1, 16, 16), torch.Generator().manual_seed(0))
    """

    def __init__(self, spec: NoiseSpec) -> None:
        super().__init__()
        if not isinstance(spec, NoiseSpec):
            raise TypeError(f"Expected `spec` to be a NoiseSpec, got {type(spec).__name__}")
        self.spec = spec

    def forward(self, x: torch.Tensor,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(noisy, sigma_map)`` for ``x: (..., C, H, W)``, see :func:`apply_noise`."""
        return apply_noise(x, self.spec, generator)

    def extra_repr(self) -> str:
        return repr(self.spec)


# --------------------------------------------------------------------------------------------------------- schedule


def curriculum_sigma(step: int, max_steps: int, start: tuple[float, float], end: tuple[float, float],
                     warmup_fraction: float = 0.5, kind: ScheduleKind = "linear") -> tuple[float, float]:
    """Progressive noise range for training: ``start`` at step 0, ``end`` from ``warmup_fraction * max_steps`` on.

    With ``t = min(step / (warmup_fraction * max_steps), 1)`` (``t = 1`` when ``warmup_fraction`` is 0) and weight
    ``w = t`` (``"linear"``) or ``w = (1 - cos(pi t)) / 2`` (``"cosine"``), each bound is
    ``start + w * (end - start)``. ``w`` is non-decreasing in ``step``, so when ``end >= start`` (bound by bound)
    both bounds grow monotonically.

    Args:
        step: current step, >= 0 (steps past ``max_steps`` give ``end``).
        max_steps: total steps, > 0.
        start: ``(low, high)`` sigma range at step 0.
        end: ``(low, high)`` sigma range after the warm-up.
        warmup_fraction: fraction of ``max_steps`` spent ramping, in [0, 1].
        kind: ``"linear"`` or ``"cosine"`` ramp.

    Returns:
        ``(low, high)``: pass it as ``sigma`` to a noise function or into a :class:`NoiseSpec`.

    Raises:
        ValueError: negative ``step``, ``max_steps <= 0``, ``warmup_fraction`` outside [0, 1], a malformed range,
            unknown ``kind``.

    Example:
        >>> curriculum_sigma(500, 1000, (0.0, 0.05), (0.0, 0.2), warmup_fraction=0.5)
        (0.0, 0.2)
    """
    if not _is_integer(step) or step < 0:
        raise ValueError(f"`step` must be an integer >= 0, got {step!r}")
    if not _is_integer(max_steps) or max_steps <= 0:
        raise ValueError(f"`max_steps` must be an integer > 0, got {max_steps!r}")
    if not 0.0 <= warmup_fraction <= 1.0:
        raise ValueError(f"`warmup_fraction` must be in [0, 1], got {warmup_fraction}")
    bounds = []
    for name, value in (("start", start), ("end", end)):
        if not isinstance(value, (tuple, list)):
            raise ValueError(f"`{name}` must be a (low, high) tuple, got {value!r}")
        bounds.append(_check_level(name, tuple(value)))
    (lo0, hi0), (lo1, hi1) = bounds
    ramp = warmup_fraction * max_steps
    t = 1.0 if ramp == 0 else min(step / ramp, 1.0)
    if kind == "linear":
        w = t
    elif kind == "cosine":
        w = 0.5 * (1.0 - math.cos(math.pi * t))
    else:
        raise ValueError(f"`kind` must be one of {get_args(ScheduleKind)}, got {kind!r}")
    return lo0 + w * (lo1 - lo0), hi0 + w * (hi1 - hi0)


# ------------------------------------------------------------------------------------------------------- estimation

_WEAK_TEXTURE_CONFIDENCE = 1.0 - 1e-6  # a noise-only patch is taken for a textured one once in a million


def can_estimate_sigma(height: int, width: int, patch_size: int = 7) -> bool:
    """Whether an image of ``height`` x ``width`` pixels is large enough for :func:`estimate_sigma`: it must hold
    ``4 p`` patch positions, ``(height - d + 1) (width - d + 1) >= 4 d^2`` for ``d = patch_size`` (e.g. 20 x 20 or
    12 x 40 pixels for the default 7 x 7 patches).

    Raises:
        ValueError: ``height`` or ``width`` not an integer >= 0, or ``patch_size`` not an integer >= 3.
    """
    for name, value, least in (("height", height, 0), ("width", width, 0), ("patch_size", patch_size, 3)):
        if not _is_integer(value) or value < least:
            raise ValueError(f"`{name}` must be an integer >= {least}, got {value!r}")
    n = max(0, height - patch_size + 1) * max(0, width - patch_size + 1)
    return n >= 4 * patch_size * patch_size


def estimate_sigma(image: np.ndarray | torch.Tensor, *, patch_size: int = 7,
                   max_patches: int = 65_536) -> np.ndarray:
    """The standard deviation of the white Gaussian noise in ``image``, channel by channel, from the image alone.

    The method of Liu, Tanaka and Okutomi (2013, "Single-image noise level estimation for blind denoising"): the
    noise variance is the smallest eigenvalue of the covariance of the image's ``patch_size`` x ``patch_size``
    patches, taken over the weakly textured patches only: those whose gradient energy is below what noise of the
    current estimate alone reaches with probability 1 - 1e-6 (a gamma quantile), re-selected until the estimate
    settles (from all patches at first). The smallest eigenvalue of the sample covariance of ``N`` patches of ``p``
    pixels lies below the noise variance, at the Marchenko-Pastur edge ``(1 - sqrt(p / N))^2`` times it, which is
    divided out (pure noise then reads within 0.1 % for ``N`` of 7,000 and more, against 8 % low without it).
    Patches that touch a pixel at the image's lowest or highest value are left out: clipped or saturated pixels
    carry less noise. Accuracy on real images: ``benchmarks/noise_estimation.py``.

    For noise that is not white (camera photos after demosaicking and JPEG, coded video) it estimates its white part,
    less than the per-pixel standard deviation.

    Args:
        image: ``(H, W)`` or ``(C, H, W)``, numpy array or torch tensor, in its own units (the estimate is in the
            same units: 25/255 for sigma 25 in an 8-bit image scaled to [0, 1]).
        patch_size: the side of the patches (at least 3).
        max_patches: at most about this many patches per channel: larger images are sampled on a coarser grid of
            patch positions (every ``s``-th row and column), and only those patches are read: time and memory stay
            about those of a 512 x 512 image (8192 x 8192 at 16,384 patches: 0.07 s, 27 MiB, one thread).

    Returns:
        ``(C,)`` float64 array (``(1,)`` for an ``(H, W)`` image).

    Raises:
        TypeError: ``image`` is not a numpy array or torch tensor.
        ValueError: not 2-D or 3-D, NaN or infinite values, a bad ``patch_size`` or ``max_patches``, or an image
            too small to hold ``4 p`` patches (``p = patch_size^2``).
    """
    x, sampling = _patch_sampling(image, patch_size, max_patches)
    sigmas = []
    for c in range(x.shape[0]):
        plane = x[c][None, None]  # (1, 1, H, W)
        patches = sampling.patches(plane[0])  # (N, p): only the sampled patches, whatever the image size
        energy = sampling.energy(patches)  # (N,)
        # patches touching the plane's lowest or highest value: clipped (or saturated) pixels carry less noise
        unclipped = ~((patches == plane.min()) | (patches == plane.max())).any(dim=1)
        if int(unclipped.sum()) >= 4 * patches.shape[1]:
            patches, energy = patches[unclipped], energy[unclipped]
        sigmas.append(math.sqrt(_weak_texture_variance(patches, energy, sampling.threshold)[0]))
    return np.asarray(sigmas, dtype=np.float64)


def estimate_photon_noise(image: np.ndarray | torch.Tensor, *, patch_size: int = 7, max_patches: int = 65_536,
                          min_photons: float = 3.0) -> float:
    """The photons at full scale of the Poisson noise in ``image`` ([0, 1] units), from the image alone: the noise of
    a pixel of mean ``x`` is ``Poisson(photons * x) / photons``, its variance ``x / photons``.

    Under the Anscombe transform with any guess ``g`` of the photons (:func:`xmodal.vst.anscombe`) that noise becomes
    white with a variance of ``g / photons`` (for counts of a few photons and more), which :func:`estimate_sigma`'s
    method (Liu et al. 2013, the weakly textured patches) measures; the guess is then ``g / variance``, repeated until
    it settles (once or twice: at the answer the variance is 1). Patches darker than ``min_photons`` on average (where
    the transform leaves the variance below 1), patches touching the image's largest value (saturation) and flat ones
    (padding, masks) are left out. Channels are pooled (one sensor). Read noise is not estimated: it is taken as 0.
    On Set12 (``benchmarks/noise_estimation.py --photons``) it reads within 3.5 % at 10 and 30 photons at full
    scale, 4.4 % low at 100, 12 % low at 1000 on average (texture read as noise), and is unreliable below about 5: an
    image whose patches all hold fewer than ``min_photons`` gets a warning and the estimate from its brightest
    patches.

    Args:
        image: ``(H, W)`` or ``(C, H, W)`` in [0, 1] units (full scale at 1), numpy array or torch tensor.
        patch_size, max_patches: as for :func:`estimate_sigma` (``max_patches`` per channel).
        min_photons: the darkest patch mean (in photons) taken into account.

    Returns:
        Photons at full scale (the ``poisson`` of :meth:`xmodal.denoise.ImageDenoiser.denoise`).

    Raises:
        TypeError: ``image`` is not a numpy array or torch tensor.
        ValueError: as :func:`estimate_sigma`; negative values (counts cannot be); a constant image, too few
            unsaturated patches that are not flat, or no noise found (a clean image).
    """
    from xmodal.vst import anscombe

    x, sampling = _patch_sampling(image, patch_size, max_patches)
    d, p = sampling.size, sampling.size ** 2
    lo, hi = (float(v) for v in torch.aminmax(x))
    if lo < 0:
        raise ValueError(f"`image` has negative values (down to {lo:.3g}): photon counts alone cannot be; there is "
                         "read noise (estimate_poisson_gaussian estimates it with the photons) or a black level above "
                         "the low end of the value range")
    if lo == hi:
        raise ValueError(f"`image` is constant ({lo:.6g} everywhere): no noise to measure")

    def patches_of(image: torch.Tensor) -> torch.Tensor:  # (C, H, W) -> the sampled patches (N, p), channels pooled
        return torch.cat([sampling.patches(plane[None]) for plane in image])

    raw = patches_of(x)
    # saturated (or the one brightest) pixels carry less noise; flat patches (padding, masks) none
    kept = ~(raw == hi).any(dim=1) & (raw.amax(dim=1) > raw.amin(dim=1))
    if int(kept.sum()) < 4 * p:
        raise ValueError(f"`image` holds {int(kept.sum())} {d} x {d} patches that are neither flat nor touch its "
                         f"largest value; {4 * p} are needed")
    means = raw.mean(dim=1)
    photons = 1.0  # any guess: the first round (every patch, dark ones too) gives the order of magnitude
    for round_ in range(12):
        bright = kept & (means * photons >= min_photons) if round_ else kept
        dark = int(bright.sum()) < 4 * p
        if dark:  # a very dark image: its brightest patches (where the transform's variance is below 1)
            bright = kept & (means >= torch.topk(means[kept], 4 * p).values[-1])
        z = patches_of(anscombe(x, photons))[bright]  # the transform of the image, not of its overlapping patches
        variance, _ = _weak_texture_variance(z, sampling.energy(z), sampling.threshold)
        update = photons / variance if variance > 0 else math.inf
        if not math.isfinite(update) or update > 1e9:
            raise ValueError(f"no photon noise found in `image` (its Anscombe transform's variance reads "
                             f"{variance:.3g}): it looks clean, or its noise is not photon noise")
        settled = abs(update - photons) <= 1e-3 * photons
        photons = update
        if settled:
            break
    if dark:
        warnings.warn(f"estimate_photon_noise: no patch of `image` holds {min_photons:g} photons on average at the "
                      f"estimate ({photons:.3g} photons at full scale), where it becomes unreliable (it reads high on "
                      "such dark images); give the photon count if it is known", stacklevel=2)
    return float(photons)


_PG_CLIPPED = 0.02  # a level with more than this fraction of its pixels at the image's lowest value is left out
_PG_MAX_LEVELS = 16


def estimate_poisson_gaussian(image: np.ndarray | torch.Tensor, *, photons: float | None = None,
                              read_noise: float | None = None, patch_size: int = 7,
                              max_patches: int = 65_536) -> tuple[float, float]:
    """The photons at full scale and the read noise of Poisson-Gaussian noise in ``image`` ([0, 1] units), from the
    image alone: a pixel of mean ``x`` carries noise of variance ``x / photons + read_noise^2`` (a sensor's shot
    noise and its Gaussian read noise; the ``poisson`` and ``read_noise`` of
    :meth:`xmodal.denoise.ImageDenoiser.denoise`).

    The noise-level function is measured as in Foi et al. (2008, "Practical Poissonian-Gaussian noise modeling and
    fitting for single-image raw-data"): the image's patches are sorted by their mean into up to 16 levels of equal
    count; at each, the noise variance is Liu et al.'s (:func:`estimate_sigma`: the smallest eigenvalue of the
    covariance of the weakly textured patches), taken in the patches' directions orthogonal to their mean, so that
    sorting by the mean does not remove noise; the line ``variance = mean / photons + read_noise^2`` is then fitted
    by least squares weighted by each level's precision (``2 variance^2 / patches``), with a negative intercept read as
    no read noise. Patches touching the image's largest value (saturation) and flat ones are left out, and so are
    levels with more than 2 % of their pixels at its lowest value (clipped at a black level, or dark counts of 0,
    where the variance no longer follows the line). Channels are pooled (one sensor).

    Accuracy on Set12 (``benchmarks/noise_estimation.py --photons 10,30,100,1000 --read-noise 0,0.01,0.03``): with
    read noise, the photons read 0.95-0.97 of the truth on average from 10 to 100 photons (0.89-1.20 per image;
    texture reads as noise), a read noise of 0.03 reads 0.027-0.035 on average (0-0.065 per image); unreliable at
    1000 photons, where texture outweighs the noise. On pure photon noise it reads some read noise (0.020 on average
    at 30 photons, 0.055 at 10): :func:`estimate_photon_noise` is the estimate for such data. On sparse images
    (``--set spots``: spots on a flat background of 1/20 of their peak) no flat patch measures the bright levels:
    the photons read 1.02 of the truth on average at 100 photons (0.91-1.10), 1.20 at 20 (1.12-1.28).
    Give one of the two when it is known (a camera's gain from its data sheet), and the other is fitted alone.

    Args:
        image: ``(H, W)`` or ``(C, H, W)`` in [0, 1] units (full scale at 1, the black level at 0; values below 0
            are read noise), numpy array or torch tensor.
        photons: the photons at full scale if known (then only the read noise is estimated).
        read_noise: the read noise if known (then only the photons are estimated).
        patch_size, max_patches: as for :func:`estimate_sigma` (``max_patches`` per channel).

    Returns:
        ``(photons, read_noise)``: photons at full scale (> 0) and the read noise's standard deviation (>= 0), in the
        units of ``image``.

    Raises:
        TypeError: ``image`` is not a numpy array or torch tensor; ``photons`` or ``read_noise`` not a number.
        ValueError: as :func:`estimate_sigma`; both ``photons`` and ``read_noise`` given, ``photons`` not > 0,
            ``read_noise`` negative; a constant image; too few unsaturated, unclipped levels to fit; no
            signal-dependent noise found (a clean image, or white Gaussian noise alone: :func:`estimate_sigma`).
    """
    from xmodal.vst import check_photon_noise

    if photons is not None and read_noise is not None:
        raise ValueError("`photons` and `read_noise` are both given: there is nothing to estimate")
    slope = None if photons is None else 1.0 / check_photon_noise(photons, name="photons")[0]
    floor = None if read_noise is None else check_photon_noise(1.0, read_noise)[1] ** 2
    x, sampling = _patch_sampling(image, patch_size, max_patches)
    p = sampling.size ** 2
    lo, hi = (float(v) for v in torch.aminmax(x))
    if lo == hi:
        raise ValueError(f"`image` is constant ({lo:.6g} everywhere): no noise to measure")
    raw = torch.cat([sampling.patches(plane[None]) for plane in x])  # (N, p), channels pooled
    raw = raw[raw.amax(dim=1) > raw.amin(dim=1)]  # no flat patches (padding, masks, saturated areas)
    needed = 1 if slope is not None or floor is not None else 2
    if len(raw) < needed * 16 * p:
        raise ValueError(f"`image` holds {len(raw)} {sampling.size} x {sampling.size} patches that are not flat; "
                         f"{needed * 16 * p} are needed to fit its noise at {needed} level(s)")
    # an orthonormal basis of the directions orthogonal to (1, ..., 1): the noise there does not depend on the mean
    basis = torch.linalg.qr(torch.cat([torch.ones(p, 1), torch.eye(p)[:, :-1]], dim=1))[0][:, 1:]
    means, variances, counts = [], [], []
    levels = torch.tensor_split(raw[torch.argsort(raw.mean(dim=1))], min(_PG_MAX_LEVELS, len(raw) // (16 * p)))
    for rows in levels:
        if float(((rows == lo) | (rows == hi)).float().mean()) > _PG_CLIPPED:
            continue  # clipped or saturated pixels: the variance no longer follows the line
        variance, weak = _weak_texture_variance(rows @ basis, sampling.energy(rows), sampling.threshold)
        means.append(float(rows[weak].mean()))
        variances.append(variance)
        counts.append(int(weak.sum()))
    if len(means) < needed:
        raise ValueError(f"`image` has {len(means)} noise levels to fit, {needed} needed: {len(levels) - len(means)} "
                         f"of its {len(levels)} have more than {_PG_CLIPPED:.0%} of their pixels at its lowest value "
                         f"({lo:.3g}: clipped, or dark counts of 0) or at its highest ({hi:.3g}: saturated)"
                         + ("; photon counts without read noise: estimate_photon_noise" if lo == 0 else ""))
    m, v, n = (np.asarray(values, dtype=np.float64) for values in (means, variances, counts))
    weights = n.copy()
    for _ in range(8):  # reweighted by the fitted variance: each level's estimate has a variance 2 v^2 / n
        a, b = _fit_noise_line(m, v, weights, slope, floor)
        weights = n / (2.0 * np.maximum(a * m + b, 1e-12) ** 2)
    if not (a > 0 and 1.0 / a <= 1e9):
        given = f", or the `read_noise` given ({math.sqrt(floor):.3g}) is above its noise" if floor else ""
        raise ValueError(f"no signal-dependent noise found in `image` (variance {a:.3g} x mean + {b:.3g}): it looks "
                         f"clean, or its noise is not photon noise (white Gaussian noise: estimate_sigma){given}")
    return float(1.0 / a), float(math.sqrt(b))


def _fit_noise_line(m: np.ndarray, v: np.ndarray, w: np.ndarray, slope: float | None,
                    floor: float | None) -> tuple[float, float]:
    """Weighted least squares of ``v = a m + b`` with ``b >= 0``; ``a`` (``slope``) or ``b`` (``floor``) given."""
    if slope is not None:
        return slope, max(0.0, float(np.sum(w * (v - slope * m)) / np.sum(w)))
    if floor is None:
        design = np.stack([m, np.ones_like(m)], axis=1)
        a, b = np.linalg.lstsq(design * np.sqrt(w)[:, None], v * np.sqrt(w), rcond=None)[0]
        if b >= 0:
            return float(a), float(b)
        floor = 0.0  # a negative intercept: no read noise
    return float(np.sum(w * m * (v - floor)) / np.sum(w * m * m)), floor


@dataclass(frozen=True)
class _PatchSampling:
    """How :func:`estimate_sigma` and :func:`estimate_photon_noise` read an image's patches."""

    size: int  # patch side d
    stride: int  # every stride-th patch position on each axis
    threshold: float  # weak texture: gradient energy below threshold x noise variance

    def patches(self, plane: torch.Tensor) -> torch.Tensor:
        """``(1, H, W)`` -> the sampled ``(N, d * d)`` patches."""
        return F.unfold(plane[None], self.size, stride=self.stride)[0].T

    def energy(self, patches: torch.Tensor) -> torch.Tensor:
        """``(N,)`` gradient energy of each patch: central differences ``[-1/2, 0, 1/2]`` inside it."""
        square = patches.view(-1, self.size, self.size)
        return (((square[:, :, 2:] - square[:, :, :-2]) * 0.5).square().sum(dim=(1, 2))
                + ((square[:, 2:] - square[:, :-2]) * 0.5).square().sum(dim=(1, 2)))


def _patch_sampling(image: object, patch_size: object, max_patches: object) -> tuple[torch.Tensor, _PatchSampling]:
    """``image`` checked as ``(C, H, W)`` float32 (CPU), and how to sample its patches (the errors of
    :func:`estimate_sigma`)."""
    from scipy.stats import gamma

    if not isinstance(image, (np.ndarray, torch.Tensor)):
        raise TypeError(f"Expected `image` to be a numpy array or torch tensor, got {type(image).__name__}")
    x = torch.from_numpy(np.array(image, dtype=np.float32)) if isinstance(image, np.ndarray) else \
        image.detach().cpu().float()
    if x.ndim not in (2, 3):
        raise ValueError(f"Expected `image` of shape (H, W) or (C, H, W), got {tuple(x.shape)}")
    if not _is_integer(patch_size) or patch_size < 3:
        raise ValueError(f"`patch_size` must be an integer >= 3, got {patch_size!r}")
    if not _is_integer(max_patches) or max_patches < 1:
        raise ValueError(f"`max_patches` must be an integer >= 1, got {max_patches!r}")
    x = x.reshape((1,) * (3 - x.ndim) + tuple(x.shape))
    d, (_, H, W) = int(patch_size), x.shape
    p, n = d * d, max(0, H - d + 1) * max(0, W - d + 1)
    if not can_estimate_sigma(H, W, d):
        raise ValueError(f"`image` of {H} x {W} pixels is too small to estimate its noise from {d} x {d} patches "
                         f"(it holds {n}, at least {4 * p} are needed)")
    if not all(math.isfinite(float(v)) for v in torch.aminmax(x)):  # (NaN propagates; no image-sized temporary)
        raise ValueError("`image` contains NaN or infinite values")
    # noise alone gives a patch a gradient energy of sigma^2 times a gamma variable of shape p/2 and mean
    # tr(Dh'Dh + Dv'Dv) = 2 d (d - 2) x 1/2: the central differences [-1/2, 0, 1/2] inside the patch (Liu et al.)
    threshold = float(gamma.ppf(_WEAK_TEXTURE_CONFIDENCE, p / 2, scale=2.0 * d * (d - 2) / p))
    return x, _PatchSampling(d, max(1, math.ceil(math.sqrt(n / int(max_patches)))), threshold)


def _smallest_variance(rows: torch.Tensor) -> float:
    """The smallest eigenvalue of the sample covariance of ``rows`` (N, p), its Marchenko-Pastur bias divided out."""
    p = rows.shape[1]
    centred = rows - rows.mean(0)
    low = float(torch.linalg.eigvalsh((centred.T @ centred).double() / rows.shape[0])[0])
    return max(0.0, low) / (1.0 - math.sqrt(p / rows.shape[0])) ** 2


def _weak_texture_variance(patches: torch.Tensor, energy: torch.Tensor,
                           threshold: float) -> tuple[float, torch.Tensor]:
    """Liu et al.'s iteration on ``patches`` (N, p) with gradient ``energy`` (N,): ``(noise variance, the weakly
    textured patches' mask)``."""
    p = patches.shape[1]
    variance, weak = _smallest_variance(patches), torch.ones(len(patches), dtype=torch.bool)
    for _ in range(10):  # settles in two to four rounds
        selected = energy < variance * threshold
        if int(selected.sum()) < 4 * p:  # too few flat patches to go on: keep the estimate so far
            break
        weak = selected
        update = _smallest_variance(patches[weak])
        settled = abs(update - variance) <= 1e-4 * variance  # (it can swap between two sets 1e-5 apart)
        variance = update
        if settled:
            break
    return variance, weak
