"""Metrics: speech (PESQ, STOI, ESTOI, SI-SDR), images and stacks (PSNR, SSIM, SAM; LPIPS from user-supplied
weights, :mod:`xmodal.perceptual`), video (PSNR, SSIM, temporal PSNR, LPIPS), and an accumulator that survives failing
clips and reduces over DDP.

PESQ is ITU-T P.862 through the ``pesq`` package: wide-band (P.862.2) at 16 kHz, narrow-band at 8 kHz; other rates
are resampled to 16 kHz (wide-band). STOI/ESTOI come from ``pystoi`` (which resamples to 10 kHz itself).
A clip on which a metric fails (silence, too short) is recorded and skipped, never fatal.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from xmodal.perceptual import LPIPS, lpips_score

__all__ = ["IMAGE_METRICS", "LPIPS", "SPEECH_METRICS", "SSIM_IMPLEMENTATION", "STACK_METRICS", "VIDEO_METRICS",
           "MetricAccumulator", "ergas_score", "image_metrics", "lpips_score", "mpsnr_score", "pesq_score",
           "psnr_score", "sam_score", "si_sdr_score", "speech_metrics", "ssim_score", "stoi_score",
           "temporal_psnr_score", "video_metrics"]

SPEECH_METRICS = ("pesq", "stoi", "estoi", "si_sdr")


def _mono(x: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1:
        raise ValueError(f"Expected `{name}` of shape (T,) or (1, T), got {tuple(x.shape)}")
    return x


def pesq_score(ref: np.ndarray | torch.Tensor, deg: np.ndarray | torch.Tensor, sample_rate: int) -> float:
    """PESQ MOS-LQO of ``deg`` against ``ref`` (both ``(T,)``).

    Wide-band at 16 kHz, narrow-band at 8 kHz; any other rate is resampled to 16 kHz and scored wide-band.

    Raises:
        ValueError: shapes differ, or PESQ cannot score the clip (too short, no utterance detected).
    """
    from pesq import pesq

    ref, deg = _mono(ref, "ref"), _mono(deg, "deg")
    if ref.shape != deg.shape:
        raise ValueError(f"pesq: `ref` and `deg` must have the same length, got {ref.shape[0]} and {deg.shape[0]}")
    if sample_rate not in (8000, 16000):
        from xmodal.io import resample

        ref = resample(ref.astype(np.float32), sample_rate, 16000).double().numpy()
        deg = resample(deg.astype(np.float32), sample_rate, 16000).double().numpy()
        sample_rate = 16000
    mode = "wb" if sample_rate == 16000 else "nb"
    if not (np.any(ref) and np.any(deg)):
        raise ValueError("pesq failed: a signal is all zeros")
    try:
        return float(pesq(sample_rate, ref, deg, mode))
    except Exception as e:  # pesq raises its own error classes (NoUtterancesError, BufferTooShortError, ...)
        raise ValueError(f"pesq failed: {type(e).__name__}: {e}") from None


def stoi_score(ref: np.ndarray | torch.Tensor, deg: np.ndarray | torch.Tensor, sample_rate: int,
               extended: bool = False) -> float:
    """STOI (or ESTOI with ``extended=True``) of ``deg`` against ``ref`` (both ``(T,)``), via pystoi.

    Raises:
        ValueError: shapes differ, the reference is all zeros, or the clip is too short / silent for STOI.
    """
    from pystoi import stoi

    ref, deg = _mono(ref, "ref"), _mono(deg, "deg")
    if ref.shape != deg.shape:
        raise ValueError(f"stoi: `ref` and `deg` must have the same length, got {ref.shape[0]} and {deg.shape[0]}")
    if not np.any(ref):  # pystoi returns 0.0 here (its silent-frame removal leaves nothing), not an error
        raise ValueError("stoi failed: the reference is silent (all zeros)")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pystoi warns (and returns 1e-5) on clips shorter than 30 frames
        value = float(stoi(ref, deg, sample_rate, extended=extended))
    if not math.isfinite(value) or value == 1e-5:
        raise ValueError("stoi failed: clip too short or silent (fewer than 30 speech frames)")
    return value


def si_sdr_score(ref: np.ndarray | torch.Tensor, deg: np.ndarray | torch.Tensor) -> float:
    """SI-SDR in dB of ``deg`` against ``ref`` (both ``(T,)``), zero-mean, in float64.

    Exactly scale invariant: no absolute epsilon (unlike the training loss :func:`xmodal.losses.si_sdr`), so
    ``si_sdr_score(ref, k * deg)`` is the same for every ``k > 0`` however quiet the signals. Only a relative guard
    bounds the value to about +-313 dB (an estimate exactly proportional to, or exactly orthogonal to, the reference).

    Raises:
        ValueError: shapes differ, the reference is silent, or the estimate is silent (its SI-SDR is -inf).
    """
    ref, deg = _mono(ref, "ref"), _mono(deg, "deg")
    if ref.shape != deg.shape:
        raise ValueError(f"si_sdr: `ref` and `deg` must have the same length, got {ref.shape[0]} and "
                         f"{deg.shape[0]}")
    ref, deg = ref - ref.mean(), deg - deg.mean()
    if not np.any(ref):
        raise ValueError("si_sdr failed: the reference is silent")
    if not np.any(deg):
        raise ValueError("si_sdr failed: the estimate is silent (all zeros after removing its mean; SI-SDR is -inf)")
    target = (deg @ ref) / (ref @ ref) * ref  # (T,) projection of the estimate on the reference
    noise = deg - target  # (T,)
    t, n = float(target @ target), float(noise @ noise)
    guard = np.finfo(np.float64).eps ** 2  # relative: scales with the signals, keeps log10 finite
    return 10 * math.log10(max(t, guard * n) / max(n, guard * t))


@dataclass
class MetricAccumulator:
    """Scores per (row, metric) with counts, plus a list of failures. Rows are e.g. ``noisy`` and ``enhanced``.

    :meth:`means` is PAIRED: the mean of a metric, in every row, is over the items that every row scored with it.
    An item on which the metric failed in one row (PESQ of a silent output) leaves every row's mean of that metric,
    so the rows stay compared on the same items; but a failed output is then not counted against its row, so read
    the means with :meth:`mean_counts` and ``failures`` (reports print both). Items are recorded by name under
    ``(row, metric, item)`` keys of ``sums`` and ``counts``, next to the ``(row, metric)`` totals, so a copy of
    ``sums``, ``counts`` and ``failures`` into another accumulator keeps the pairing.
    """

    sums: dict[tuple[str, ...], float] = field(default_factory=lambda: defaultdict(float))
    counts: dict[tuple[str, ...], int] = field(default_factory=lambda: defaultdict(int))
    failures: list[tuple[str, str, str, str]] = field(default_factory=list)  # (row, metric, item, reason)

    def add(self, row: str, metric: str, value: float, item: str | None = None) -> None:
        """Add ``value`` of ``metric`` under ``row``; with ``item`` (its name) it takes part in the pairing,
        without it the metric's means fall back to unpaired totals."""
        self.sums[(row, metric)] += float(value)
        self.counts[(row, metric)] += 1
        if item is not None:
            self.sums[(row, metric, item)] += float(value)
            self.counts[(row, metric, item)] += 1

    def fail(self, row: str, metric: str, item: str, reason: str) -> None:
        self.failures.append((row, metric, item, reason))

    def _totals(self) -> dict[tuple[str, str], tuple[float, int]]:
        """``(row, metric) -> (sum, count)`` over the items every row scored; unpaired totals for a metric added
        without item names (or already reduced over processes)."""
        per_item: dict[tuple[str, str], dict[str, tuple[float, int]]] = defaultdict(dict)
        for key, value in self.sums.items():
            if len(key) == 3:
                per_item[key[:2]][key[2]] = (value, self.counts.get(key, 0))
        failed: dict[str, set[str]] = defaultdict(set)
        rows_of: dict[str, set[str]] = defaultdict(set)
        for row, metric, item, _ in self.failures:
            failed[metric].add(item)
            rows_of[metric].add(row)
        for key in self.sums:
            if len(key) == 2:
                rows_of[key[1]].add(key[0])
        out = {}
        for metric, rows in rows_of.items():
            itemised = all(sum(n for _, n in per_item[(r, metric)].values()) == self.counts.get((r, metric), 0)
                           for r in rows)
            if not itemised:
                out.update({(r, metric): (self.sums.get((r, metric), 0.0), self.counts.get((r, metric), 0))
                            for r in rows})
                continue
            common = sorted(set.intersection(*(set(per_item[(r, metric)]) for r in rows)) - failed[metric])
            for r in rows:
                scored = per_item[(r, metric)]
                out[(r, metric)] = (sum(scored[i][0] for i in common), sum(scored[i][1] for i in common))
        return out

    def means(self) -> dict[str, dict[str, float]]:
        """``{row: {metric: mean}}`` over the items every row scored with that metric (NaN where there is none)."""
        out: dict[str, dict[str, float]] = defaultdict(dict)
        for (row, metric), (s, n) in sorted(self._totals().items()):
            out[row][metric] = s / n if n else float("nan")
        return dict(out)

    def mean_counts(self) -> dict[str, dict[str, int]]:
        """``{row: {metric: number of items}}`` that each mean of :meth:`means` is over."""
        out: dict[str, dict[str, int]] = defaultdict(dict)
        for (row, metric), (_, n) in sorted(self._totals().items()):
            out[row][metric] = n
        return dict(out)

    def all_reduce(self, keys: list[tuple[str, str]]) -> int:
        """Sum ``keys``' paired sums and counts (each process pairs its own items) over the default process group
        (no-op without one). Afterwards :meth:`means` gives the reduced means and the per-item records of ``keys``
        are gone.

        Returns:
            The number of failures over all ranks (failure details stay on the rank that saw them).
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return len(self.failures)
        totals = self._totals()
        buf = torch.tensor([list(totals.get(k, (0.0, 0))) for k in keys] + [[len(self.failures), 0]],
                           dtype=torch.float64)
        if dist.get_backend() == "nccl":
            buf = buf.cuda()
        dist.all_reduce(buf)
        buf = buf.cpu()
        wanted = set(keys)
        for key in [k for k in self.sums if len(k) == 3 and k[:2] in wanted]:
            del self.sums[key]
            self.counts.pop(key, None)
        for k, (s, n) in zip(keys, buf[:-1].tolist()):
            self.sums[k], self.counts[k] = s, int(n)
        return int(buf[-1, 0])


def speech_metrics(acc: MetricAccumulator, row: str, item: str, ref: np.ndarray | torch.Tensor,
                   deg: np.ndarray | torch.Tensor, sample_rate: int,
                   metrics: tuple[str, ...] = SPEECH_METRICS) -> dict[str, float]:
    """Score one clip with every metric into ``acc`` under ``row``; a failing metric is recorded, not raised.

    Args:
        acc: accumulator to add to.
        row: report row (``noisy``, ``enhanced``...).
        item: clip name for the failure log.
        ref: ``(T,)`` clean reference.
        deg: ``(T,)`` signal to score.
        sample_rate: rate of both.
        metrics: names from :data:`SPEECH_METRICS`.

    Returns:
        The scores that succeeded.
    """
    fns = {
        "pesq": lambda: pesq_score(ref, deg, sample_rate),
        "stoi": lambda: stoi_score(ref, deg, sample_rate),
        "estoi": lambda: stoi_score(ref, deg, sample_rate, extended=True),
        "si_sdr": lambda: si_sdr_score(ref, deg),
    }
    return _score_into(acc, row, item, fns, metrics, "speech", SPEECH_METRICS)


def _score_into(acc: MetricAccumulator, row: str, item: str, fns: dict, metrics: tuple[str, ...], kind: str,
                known: tuple[str, ...]) -> dict[str, float]:
    """Run ``fns[name]()`` for every name of ``metrics`` into ``acc``; a ``ValueError`` is recorded as a failure of
    that metric, not raised. Returns the scores that succeeded.

    Raises:
        ValueError: a name of ``metrics`` that ``fns`` does not know.
    """
    scores = {}
    for name in metrics:
        if name not in fns:
            raise ValueError(f"unknown {kind} metric {name!r} (known: {', '.join(known)})")
        try:
            value = fns[name]()
        except ValueError as e:
            acc.fail(row, name, item, str(e))
            continue
        acc.add(row, name, value, item)
        scores[name] = value
    return scores


# ------------------------------------------------------------------------------------------------- images / stacks

IMAGE_METRICS = ("psnr", "ssim")
STACK_METRICS = ("psnr", "mpsnr", "ssim", "sam", "ergas")
VIDEO_METRICS = ("psnr", "ssim", "tpsnr")
SSIM_IMPLEMENTATION = ("pytorch-msssim ssim: 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, valid "
                       "convolution, channels averaged (Wang et al. 2004; equals skimage with gaussian_weights=True, "
                       "sigma=1.5, use_sample_covariance=False)")


def _image4(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().cpu().double()
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"Expected `{name}` of shape (H, W) or (C, H, W), got {tuple(x.shape)}")
    return x[None]  # (1, C, H, W)


def _pair(metric: str, ref: np.ndarray | torch.Tensor, deg: np.ndarray | torch.Tensor,
          mask: np.ndarray | torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(ref, deg, mask)`` of a metric as ``(1, C, H, W)`` float64 and ``(H, W)`` bool (``None``: every pixel is
    scored), with ``ref`` and ``deg`` zeroed outside the mask (nodata NaNs there never reach a sum).

    Raises:
        ValueError: shapes differ; a mask of another size, or that scores no pixel; NaN or infinity in a scored
            pixel."""
    a, b = _image4(ref, "ref"), _image4(deg, "deg")
    if a.shape != b.shape:
        raise ValueError(f"{metric}: `ref` and `deg` must have the same shape, got {tuple(a.shape[1:])} and "
                         f"{tuple(b.shape[1:])}")
    m = None
    if mask is not None:
        m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).cpu()
        if m.dtype != torch.bool or tuple(m.shape) != tuple(a.shape[-2:]):
            raise ValueError(f"{metric}: `mask` must be a bool array of the images' (H, W) = "
                             f"{tuple(a.shape[-2:])}, got {m.dtype} {tuple(m.shape)}")
        if not bool(m.any()):
            raise ValueError(f"{metric} failed: the mask leaves no pixel to score (all nodata)")
        a, b = a.masked_fill(~m, 0.0), b.masked_fill(~m, 0.0)
    for name, x in (("ref", a), ("deg", b)):
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise ValueError(f"{metric} failed: `{name}` holds NaN or infinity in {bad} scored value(s)"
                             + ("" if mask is not None else " (pass `mask` to leave nodata pixels out)"))
    return a, b, m


def _integer_range(x: np.ndarray | torch.Tensor) -> tuple[int, int] | None:
    """``(min, max)`` of ``x``'s integer dtype (``None`` for float, complex and bool arrays)."""
    if isinstance(x, torch.Tensor):
        dtype = x.dtype
        if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
            return None
        info = torch.iinfo(dtype)
        return int(info.min), int(info.max)
    dtype = np.asarray(x).dtype
    if not np.issubdtype(dtype, np.integer):
        return None
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _data_range(ref: np.ndarray | torch.Tensor, data_range: float | None, kind: str) -> float:
    """``data_range``, or when ``None`` the one scikit-image infers from ``ref``'s dtype: for an integer dtype
    ``kind="psnr"`` takes the dtype's maximum (``max - min`` when ``ref`` holds negative values) and ``kind="ssim"``
    its ``max - min`` (255 for uint8, 65535 for uint16); for float images 1."""
    if data_range is not None:
        return float(data_range)
    limits = _integer_range(ref)
    if limits is None:
        return 1.0
    lo, hi = limits
    if kind == "psnr" and (lo == 0 or float(ref.min() if isinstance(ref, torch.Tensor) else np.min(ref)) >= 0):
        return float(hi)
    return float(hi - lo)


def _mean_hw(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``x: (..., H, W)`` over its pixels, or over the pixels of ``mask`` (``x`` zero elsewhere)."""
    return x.mean(dim=(-2, -1)) if mask is None else x.sum(dim=(-2, -1)) / mask.sum()


def psnr_score(ref: np.ndarray | torch.Tensor, deg: np.ndarray | torch.Tensor,
               data_range: float | None = None, mask: np.ndarray | torch.Tensor | None = None) -> float:
    """PSNR in dB over all pixels and channels: ``10 log10(data_range^2 / MSE)`` (``inf`` for identical images).

    ``data_range`` ``None``: inferred from ``ref``'s dtype as scikit-image does for integer images (the dtype's
    maximum, e.g. 255 for uint8, or ``max - min`` of the dtype when ``ref`` has negative values); float images: 1
    (scikit-image takes 2 for a float ``ref`` with negative values). ``mask``: ``(H, W)`` bool, the pixels to score
    (nodata left out); ``None``: all.

    Raises:
        ValueError: shapes differ, a bad ``mask``, NaN or infinity in a scored pixel.
    """
    data_range = _data_range(ref, data_range, "psnr")
    a, b, m = _pair("psnr", ref, deg, mask)
    mse = float(_mean_hw((a - b).pow(2), m).mean())
    return math.inf if mse == 0 else 10 * math.log10(data_range ** 2 / mse)


def mpsnr_score(ref: np.ndarray | torch.Tensor, deg: np.ndarray | torch.Tensor,
                data_range: float | None = None, mask: np.ndarray | torch.Tensor | None = None) -> float:
    """Mean over bands of each band's PSNR in dB (the MPSNR of hyperspectral denoising papers), ``(S, H, W)``.

    Unlike :func:`psnr_score` of the whole stack (one MSE over all bands), every band weighs the same, so a few
    badly denoised bands pull it down even when their squared error is small beside the others'. ``inf`` when a band
    is identical. ``data_range`` and ``mask`` as in :func:`psnr_score`.

    Raises:
        ValueError: as :func:`psnr_score`.
    """
    data_range = _data_range(ref, data_range, "psnr")
    a, b, m = _pair("mpsnr", ref, deg, mask)
    mse = _mean_hw((a - b).pow(2), m)[0]  # (S,)
    return float(torch.where(mse == 0, math.inf, 10 * torch.log10(data_range ** 2 / mse)).mean())


def ergas_score(ref: np.ndarray | torch.Tensor, deg: np.ndarray | torch.Tensor, ratio: float = 1.0,
                mask: np.ndarray | torch.Tensor | None = None) -> float:
    """ERGAS (Wald 2000), lower is better: ``100 / ratio * sqrt(mean over bands of RMSE_b^2 / mean(ref_b)^2)`` for
    ``(S, H, W)`` stacks, each band's error relative to its own mean level. ``ratio`` is the resolution ratio of
    fusion tasks; 1 for denoising. Meant for physical values (radiance, reflectance, digital numbers), not values
    with an offset removed. ``mask`` as in :func:`psnr_score` (the means and errors over its pixels).

    Raises:
        ValueError: as :func:`psnr_score`; ``ratio`` not positive, or a band of ``ref`` has mean 0.
    """
    if not ratio > 0:
        raise ValueError(f"ergas: `ratio` must be positive, got {ratio}")
    a, b, m = _pair("ergas", ref, deg, mask)
    a, b = a[0], b[0]  # (S, H, W)
    level = _mean_hw(a, m)  # (S,)
    if bool((level == 0).any()):
        zero = [int(i) + 1 for i in torch.nonzero(level == 0).flatten()]
        raise ValueError(f"ergas failed: band(s) {zero} of `ref` have mean 0 (the error is relative to it)")
    mse = _mean_hw((a - b).pow(2), m)  # (S,)
    return float(100.0 / ratio * torch.sqrt((mse / level ** 2).mean()))


def ssim_score(ref: np.ndarray | torch.Tensor, deg: np.ndarray | torch.Tensor,
               data_range: float | None = None, mask: np.ndarray | torch.Tensor | None = None) -> float:
    """Mean SSIM over pixels and channels, see :data:`SSIM_IMPLEMENTATION`.

    ``data_range`` ``None``: inferred from ``ref``'s dtype as scikit-image does (integer images: the dtype's
    ``max - min``, e.g. 255 for uint8; float images: 1). ``mask`` (``(H, W)`` bool): the mean is over the windows
    that lie wholly in its pixels (the same SSIM map, computed here as pytorch-msssim computes it); ``None``: all.

    Raises:
        ValueError: as :func:`psnr_score`; an image smaller than the 11 x 11 window, or a mask that holds no whole
            window.
    """
    from pytorch_msssim import ssim

    data_range = _data_range(ref, data_range, "ssim")
    a, b, m = _pair("ssim", ref, deg, mask)
    if min(a.shape[-2:]) < 11:
        raise ValueError(f"ssim: images must be at least 11 x 11 (the window), got {tuple(a.shape[-2:])}")
    if m is None:
        return float(ssim(a, b, data_range=data_range, size_average=True))
    inside = torch.nn.functional.avg_pool2d(m[None, None].double(), 11, stride=1)[0, 0] > 1.0 - 1e-9  # (H-10, W-10)
    if not bool(inside.any()):
        raise ValueError("ssim failed: no 11 x 11 window lies wholly in the scored pixels (the mask)")
    return float(_ssim_map(a, b, data_range)[0][:, inside].mean())


def _ssim_map(a: torch.Tensor, b: torch.Tensor, data_range: float) -> torch.Tensor:
    """The SSIM map ``(1, C, H - 10, W - 10)`` of :data:`SSIM_IMPLEMENTATION` (Wang et al. 2004; pytorch-msssim's
    arithmetic: an 11-tap Gaussian of sigma 1.5 built in float32, applied separably without padding)."""
    coords = torch.arange(11, dtype=torch.float) - 5
    g = torch.exp(-coords ** 2 / (2 * 1.5 ** 2))
    g = (g / g.sum()).to(a.dtype)
    C = a.shape[1]

    def blur(x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.conv2d(x, g.view(1, 1, 1, 11).expand(C, 1, 1, 11), groups=C)
        return torch.nn.functional.conv2d(x, g.view(1, 1, 11, 1).expand(C, 1, 11, 1), groups=C)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu1, mu2 = blur(a), blur(b)
    var1, var2, cov = blur(a * a) - mu1 ** 2, blur(b * b) - mu2 ** 2, blur(a * b) - mu1 * mu2
    return (2 * mu1 * mu2 + c1) / (mu1 ** 2 + mu2 ** 2 + c1) * (2 * cov + c2) / (var1 + var2 + c2)


def sam_score(ref: np.ndarray | torch.Tensor, deg: np.ndarray | torch.Tensor,
              mask: np.ndarray | torch.Tensor | None = None) -> float:
    """Spectral angle mapper: mean over pixels of the angle (degrees) between the ``S``-band spectra of ``ref``
    and ``deg`` (``(S, H, W)``).

    A pixel where exactly one of the two spectra is all zero counts as 90 degrees (a spectrum that collapsed to 0,
    or appeared from nothing, shares no direction with the other). A pixel where both are all zero has no angle and
    is left out of the mean, and so are the pixels outside ``mask`` (as in :func:`psnr_score`).

    Raises:
        ValueError: as :func:`psnr_score`; every scored pixel has two all-zero spectra.
    """
    a, b, m = _pair("sam", ref, deg, mask)
    a, b = a[0], b[0]  # (S, H, W)
    na, nb = a.norm(dim=0), b.norm(dim=0)  # (H, W)
    both, one = (na > 0) & (nb > 0), (na > 0) ^ (nb > 0)  # (H, W)
    if m is not None:
        both, one = both & m, one & m
    if not bool((both | one).any()):
        raise ValueError("sam failed: every pixel has an all-zero spectrum in both `ref` and `deg`")
    cos = ((a * b).sum(dim=0)[both] / (na[both] * nb[both])).clamp(-1.0, 1.0)  # (N,)
    angles = torch.cat([torch.rad2deg(torch.arccos(cos)), torch.full((int(one.sum()),), 90.0, dtype=cos.dtype)])
    return float(angles.mean())


def _lpips_fn(metrics: tuple[str, ...], lpips: LPIPS | None, ref: object, deg: object, data_range: float,
              mask: object = None) -> dict:
    """``{"lpips": scorer}`` when ``lpips`` is given (a scorer that fails for an image with nodata pixels:
    ``mask``); the metric asked for without a model is an error."""
    if lpips is None:
        if "lpips" in metrics:
            raise ValueError("metric 'lpips' needs an LPIPS model: pass lpips=xmodal.metrics.LPIPS(...) (weights "
                             "are supplied by the user; nothing is downloaded)")
        return {}

    def score() -> float:
        if mask is not None:
            raise ValueError("lpips failed: the image has nodata pixels, which a network cannot leave out")
        return lpips_score(ref, deg, lpips, data_range)

    return {"lpips": score}


def image_metrics(acc: MetricAccumulator, row: str, item: str, ref: np.ndarray | torch.Tensor,
                  deg: np.ndarray | torch.Tensor, metrics: tuple[str, ...] = IMAGE_METRICS,
                  data_range: float | None = None, lpips: LPIPS | None = None,
                  mask: np.ndarray | torch.Tensor | None = None) -> dict[str, float]:
    """Score one image or stack ``(C, H, W)`` with ``metrics`` (from :data:`STACK_METRICS`, and ``lpips`` with an
    ``lpips`` model, for 1- and 3-channel images) into ``acc``; a metric that fails is recorded, not raised.
    ``data_range`` ``None``: from ``ref``'s dtype, as :func:`psnr_score` and :func:`ssim_score` infer it. ``mask``
    (``(H, W)`` bool): the pixels scored (nodata left out), as :func:`psnr_score` takes it; LPIPS, a network's
    judgement of the whole picture, fails on an image with a mask.

    Raises:
        ValueError: an unknown metric, or ``lpips`` asked for without a model.
    """
    fns = {
        "psnr": lambda: psnr_score(ref, deg, data_range, mask),
        "ssim": lambda: ssim_score(ref, deg, data_range, mask),
        "mpsnr": lambda: mpsnr_score(ref, deg, data_range, mask),
        "sam": lambda: sam_score(ref, deg, mask),
        "ergas": lambda: ergas_score(ref, deg, mask=mask),
        **_lpips_fn(metrics, lpips, ref, deg, _data_range(ref, data_range, "ssim"), mask),
    }
    return _score_into(acc, row, item, fns, metrics, "image", STACK_METRICS + ("lpips",))


# ----------------------------------------------------------------------------------------------------------- video


def _clip4(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().cpu().double()
    if x.ndim == 3:
        x = x[:, None]  # (T, H, W) -> (T, 1, H, W)
    if x.ndim != 4:
        raise ValueError(f"Expected `{name}` of shape (T, H, W) or (T, C, H, W), got {tuple(x.shape)}")
    return x


def temporal_psnr_score(ref: np.ndarray | torch.Tensor, deg: np.ndarray | torch.Tensor,
                        data_range: float | None = None) -> float:
    """Temporal PSNR (flicker) in dB: the PSNR of the frame-to-frame changes,
    ``10 log10(data_range^2 / mean((d_deg - d_ref)^2))`` with ``d_x[t] = x[t] - x[t-1]``.

    An error that stays put from one frame to the next costs nothing here; an error that changes from frame to frame
    (flicker, the independent residual noise of a frame-by-frame denoiser) does. For an error independent between
    frames this is about the clip's PSNR minus 3 dB; for a temporally consistent output it is higher than the PSNR.
    ``inf`` when the changes match exactly. ``data_range`` ``None``: from ``ref``'s dtype, as in :func:`psnr_score`.

    Raises:
        ValueError: shapes differ, or fewer than 2 frames.
    """
    data_range = _data_range(ref, data_range, "psnr")
    a, b = _clip4(ref, "ref"), _clip4(deg, "deg")
    if a.shape != b.shape:
        raise ValueError(f"tpsnr: `ref` and `deg` must have the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if a.shape[0] < 2:
        raise ValueError(f"tpsnr: needs at least 2 frames, got {a.shape[0]}")
    e = b - a
    mse = float((e[1:] - e[:-1]).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(data_range ** 2 / mse)


def video_metrics(acc: MetricAccumulator, row: str, item: str, ref: np.ndarray | torch.Tensor,
                  deg: np.ndarray | torch.Tensor, metrics: tuple[str, ...] = VIDEO_METRICS,
                  data_range: float | None = None, lpips: LPIPS | None = None) -> dict[str, float]:
    """Score one clip ``(T, C, H, W)`` (or ``(T, H, W)``) into ``acc``: ``psnr`` of the whole clip's mean squared
    error, ``ssim`` averaged over frames and channels, ``tpsnr`` (:func:`temporal_psnr_score`), ``lpips`` (with an
    ``lpips`` model) averaged over frames. A metric that fails is recorded, not raised. ``data_range`` ``None``:
    from ``ref``'s dtype, as :func:`psnr_score` and :func:`ssim_score` infer it.

    Raises:
        ValueError: an unknown metric, or ``lpips`` asked for without a model.
    """
    psnr_range, ssim_range = _data_range(ref, data_range, "psnr"), _data_range(ref, data_range, "ssim")
    a, b = _clip4(ref, "ref"), _clip4(deg, "deg")  # float64: the ranges come from the dtypes given

    def same_shape(name: str) -> None:  # (T, C) and (C, T) flatten alike: the frames must match, not just the count
        if a.shape != b.shape:
            raise ValueError(f"{name}: `ref` and `deg` must have the same shape, got {tuple(a.shape)} and "
                             f"{tuple(b.shape)}")

    fns = {"psnr": lambda: same_shape("psnr") or psnr_score(a.flatten(0, 1), b.flatten(0, 1), psnr_range),
           "ssim": lambda: same_shape("ssim") or ssim_score(a.flatten(0, 1), b.flatten(0, 1), ssim_range),
           "tpsnr": lambda: temporal_psnr_score(a, b, psnr_range),
           **_lpips_fn(metrics, lpips, a, b, ssim_range)}
    return _score_into(acc, row, item, fns, metrics, "video", VIDEO_METRICS + ("lpips",))
