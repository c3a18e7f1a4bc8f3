"""Photon-limited (Poisson-Gaussian) noise through Gaussian denoisers: the generalized Anscombe transform and its
exact unbiased inverse (Makitalo & Foi, IEEE TIP 2011 and 2013).

Microscopes, telescopes, X-ray detectors and cameras in low light count photons: the noise of a pixel of mean ``x``
(in [0, 1] units, ``x = 1`` holding ``peak`` photons) is ``Poisson(peak * x) / peak`` plus the sensor's read noise
``N(0, read_noise^2)``, so its variance grows with the signal. The transform, in photon counts ``c = peak * y``,

    f(c) = 2 sqrt(max(c + 3/8 + (peak * read_noise)^2, 0)),

makes that noise close to Gaussian with unit variance, which a model trained on white Gaussian noise removes; the
denoised value is then an estimate of ``E[f(c) | x]``, not of ``f(peak * x)``. The algebraic inverse of ``f`` is biased
at low counts (a dark image comes out too dark); the *exact unbiased* inverse maps ``E[f(c) | x]`` back to ``x``. It is
computed here from the distribution itself: ``E[f(c) | lambda]`` tabulated for photon means ``lambda`` from 0 to
``TABLE_PHOTONS`` (a sum over the Poisson counts, a fine grid over the read noise), inverted by
interpolation, and above the table the asymptotic inverse ``(d / 2)^2 - 1/8 - (peak * read_noise)^2``.
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np
import torch

__all__ = ["TABLE_PHOTONS", "anscombe", "as_number", "check_photon_args", "check_photon_noise", "expected_anscombe",
           "inverse_anscombe"]

#: Photon means up to which the exact inverse is tabulated; above, the asymptotic one (they meet within 1e-6).
TABLE_PHOTONS = 1000.0


def check_photon_noise(peak: object, read_noise: object = 0.0, name: str = "poisson") -> tuple[float, float]:
    """``(peak, read_noise)`` as floats, checked: ``peak`` > 0 photons at full scale, ``read_noise`` >= 0 (a
    standard deviation in [0, 1] units). ``name``: the name of ``peak`` in the messages.

    Raises:
        TypeError: not real numbers.
        ValueError: ``peak`` not finite and > 0, ``read_noise`` not finite and >= 0.
    """
    peak, read_noise = as_number(name, peak), as_number("read_noise", read_noise)
    if not (math.isfinite(peak) and peak > 0):
        raise ValueError(f"`{name}` (photons at full scale, value 1) must be > 0, got {peak}")
    if not (math.isfinite(read_noise) and read_noise >= 0):
        raise ValueError(f"`read_noise` (standard deviation of the sensor's Gaussian noise, in the units where full "
                         f"scale is 1) must be >= 0, got {read_noise}")
    return float(peak), float(read_noise)


def check_photon_args(poisson: object, read_noise: object, sigma: object = None) -> None:
    """``ValueError``/``TypeError`` for the ``poisson`` / ``read_noise`` of the image and video denoisers (and the
    evaluation) that cannot go together, or with a noise level ``sigma``: ``poisson`` a number > 0, ``"auto"`` or
    ``None``; ``read_noise`` a number >= 0 or ``"auto"``, only with ``poisson``. The messages name the arguments in
    backticks (the command lines swap in their flags)."""
    if isinstance(read_noise, str):
        if read_noise != "auto":
            raise ValueError(f"`read_noise` must be a standard deviation (a number >= 0) or 'auto', got {read_noise!r}")
        given = "'auto'"
    else:
        given = "" if (rn := as_number("read_noise", read_noise)) == 0 else f"{rn:g}"
    if poisson is None:
        if given:
            raise ValueError(f"`read_noise` ({given}) is the Gaussian part of photon noise: it goes with `poisson` "
                             "(photons at full scale)")
        return
    if sigma is not None:
        raise ValueError("`poisson` and `sigma` cannot both be given: the Anscombe transform of photon noise sets "
                         "the level the network sees")
    if isinstance(poisson, str):
        if poisson != "auto":
            raise ValueError(f"`poisson` must be the photons at full scale (a number > 0) or 'auto', got {poisson!r}")
    else:
        check_photon_noise(poisson, 0.0 if isinstance(read_noise, str) else read_noise)


def as_number(name: str, value: object) -> float:
    """``value`` as a float: a real number, or one held in a 0-d numpy array or tensor; ``TypeError`` otherwise."""
    if isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 0 and value.dtype != bool \
            and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number, got {type(value).__name__}")
    return float(value)


def anscombe(y: torch.Tensor, peak: float, read_noise: float = 0.0) -> torch.Tensor:
    """The generalized Anscombe transform of ``y`` ([0, 1] units, any shape): noise of variance about 1."""
    s2 = (peak * read_noise) ** 2
    return 2.0 * (peak * y + 0.375 + s2).clamp_min(0.0).sqrt()


@functools.lru_cache(maxsize=16)
def _table(peak: float, read_noise: float) -> tuple[np.ndarray, np.ndarray]:
    """``(lambdas, E[f(c) | lambda])``: photon means 0..TABLE_PHOTONS (dense at low counts) and the transform's mean
    there, float64, strictly increasing."""
    s = peak * read_noise  # read noise in photons
    lam = np.unique(np.concatenate([np.linspace(0.0, 20.0, 2001), np.geomspace(20.0, TABLE_PHOTONS, 3000)]))
    k = np.arange(0, int(TABLE_PHOTONS + 12 * math.sqrt(TABLE_PHOTONS) + 40), dtype=np.float64)
    if s > 0:  # E over the read noise of f(k + s n), n ~ N(0, 1), on a fine grid (f has a kink where it reaches 0,
        n = np.linspace(-8.0, 8.0, 8001)  # which Gauss-Hermite quadrature misses by 1e-2 at low counts)
        w = np.exp(-0.5 * n * n)
        w /= w.sum()
        fk = np.concatenate([2.0 * np.sqrt(np.maximum(part + s * n[None, :] + 0.375 + s * s, 0.0)) @ w
                             for part in np.array_split(k[:, None], 8)])  # in parts: 1,459 x 8,001 at once is 93 MB
    else:
        fk = 2.0 * np.sqrt(k + 0.375)
    from scipy.special import gammaln  # Poisson pmf in log space: no overflow at 1000 photons

    log_lam = np.log(np.maximum(lam, 1e-300))  # lambda = 0: row 0 is set below
    log_pmf = k[None, :] * log_lam[:, None] - lam[:, None] - gammaln(k + 1.0)[None, :]
    log_pmf[0] = np.where(k == 0, 0.0, -np.inf)  # lambda = 0: all mass at k = 0
    expected = np.exp(log_pmf) @ fk
    return lam, expected


def expected_anscombe(lam: np.ndarray | float, peak: float, read_noise: float = 0.0) -> np.ndarray:
    """``E[f(c) | lambda]`` for photon means ``lam`` (interpolated from the table; asymptotic above it)."""
    lam = np.asarray(lam, dtype=np.float64)
    grid, expected = _table(peak, read_noise)
    s2 = (peak * read_noise) ** 2
    return np.where(lam <= TABLE_PHOTONS, np.interp(lam, grid, expected),
                    2.0 * np.sqrt(np.maximum(lam, 0.0) + 0.125 + s2))


def inverse_anscombe(d: torch.Tensor, peak: float, read_noise: float = 0.0) -> torch.Tensor:
    """The exact unbiased inverse: ``d`` (an estimate of ``E[f(c) | x]``, any shape) -> ``x`` in [0, 1] units,
    never negative (a photon mean). Same dtype and device as ``d``."""
    grid, expected = _table(peak, read_noise)
    s2 = (peak * read_noise) ** 2
    dn = d.detach().to("cpu", torch.float64).numpy()
    lam = np.where(dn <= expected[-1], np.interp(dn, expected, grid),  # below E[f | 0]: 0 photons
                   np.maximum(dn * dn / 4.0 - 0.125 - s2, 0.0))
    return torch.from_numpy(lam / peak).to(device=d.device, dtype=d.dtype)
