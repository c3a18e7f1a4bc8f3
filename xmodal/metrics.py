"""Speech metrics (PESQ, STOI, ESTOI, SI-SDR) and an accumulator that survives failing clips and reduces over DDP.

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

__all__ = ["SPEECH_METRICS", "MetricAccumulator", "pesq_score", "si_sdr_score", "speech_metrics", "stoi_score"]

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
        ValueError: shapes differ, or the clip is too short / silent for STOI.
    """
    from pystoi import stoi

    ref, deg = _mono(ref, "ref"), _mono(deg, "deg")
    if ref.shape != deg.shape:
        raise ValueError(f"stoi: `ref` and `deg` must have the same length, got {ref.shape[0]} and {deg.shape[0]}")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pystoi warns (and returns 1e-5) on clips shorter than 30 frames
        value = float(stoi(ref, deg, sample_rate, extended=extended))
    if not math.isfinite(value) or value == 1e-5:
        raise ValueError("stoi failed: clip too short or silent (fewer than 30 speech frames)")
    return value


def si_sdr_score(ref: np.ndarray | torch.Tensor, deg: np.ndarray | torch.Tensor) -> float:
    """SI-SDR in dB of ``deg`` against ``ref`` (both ``(T,)``), zero-mean.

    Raises:
        ValueError: shapes differ or the reference is silent.
    """
    from xmodal.losses import si_sdr

    ref, deg = _mono(ref, "ref"), _mono(deg, "deg")
    if ref.shape != deg.shape:
        raise ValueError(f"si_sdr: `ref` and `deg` must have the same length, got {ref.shape[0]} and "
                         f"{deg.shape[0]}")
    if not np.any(ref - ref.mean()):
        raise ValueError("si_sdr failed: the reference is silent")
    return float(si_sdr(torch.from_numpy(deg), torch.from_numpy(ref)))


@dataclass
class MetricAccumulator:
    """Sums per (row, metric) with counts, plus a list of failures. Rows are e.g. ``noisy`` and ``enhanced``."""

    sums: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    counts: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    failures: list[tuple[str, str, str, str]] = field(default_factory=list)  # (row, metric, item, reason)

    def add(self, row: str, metric: str, value: float) -> None:
        self.sums[(row, metric)] += float(value)
        self.counts[(row, metric)] += 1

    def fail(self, row: str, metric: str, item: str, reason: str) -> None:
        self.failures.append((row, metric, item, reason))

    def means(self) -> dict[str, dict[str, float]]:
        """``{row: {metric: mean}}`` (NaN where every clip failed)."""
        out: dict[str, dict[str, float]] = defaultdict(dict)
        for key in sorted(set(self.sums) | {(r, m) for r, m, _, _ in self.failures}):
            row, metric = key
            n = self.counts.get(key, 0)
            out[row][metric] = self.sums[key] / n if n else float("nan")
        return dict(out)

    def all_reduce(self, keys: list[tuple[str, str]]) -> int:
        """Sum ``keys``' sums and counts over the default process group (no-op without one).

        Returns:
            The number of failures over all ranks (failure details stay on the rank that saw them).
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return len(self.failures)
        buf = torch.tensor([[self.sums[k], self.counts[k]] for k in keys] + [[len(self.failures), 0]],
                           dtype=torch.float64)
        if dist.get_backend() == "nccl":
            buf = buf.cuda()
        dist.all_reduce(buf)
        buf = buf.cpu()
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
    scores = {}
    for name in metrics:
        if name not in fns:
            raise ValueError(f"unknown speech metric {name!r} (known: {', '.join(SPEECH_METRICS)})")
        try:
            value = fns[name]()
        except ValueError as e:
            acc.fail(row, name, item, str(e))
            continue
        acc.add(row, name, value)
        scores[name] = value
    return scores
