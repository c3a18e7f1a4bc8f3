"""Real-time streaming of a causal speech model: latency, per-block compute time, and equality with offline denoising.

A 60 s (by default) 16 kHz signal (the library's synthetic speech plus pink noise at 5 dB SNR; ``--rate R``:
resampled to R Hz, e.g. a sound card's 48000, and streamed at that rate through the stream's resamplers) is pushed
through ``Denoiser.stream()`` in blocks of ``--block-ms`` (10 ms by default), as an audio callback would. Each push is
timed on ``--threads`` torch threads (1 by default: a real-time thread next to the rest of an application). Prints:

- the algorithmic latency (the stream's delay plus one block; the most lag seen after a push and the stream's
  bound for it) and the compute time per block (mean, median, 99th
  percentile, max) against the block's duration, the real-time factor, and how many blocks missed their deadline;
- the largest difference between the streamed output and ``Denoiser.denoise`` of the whole signal.

    python benchmarks/speech_streaming.py [--model speech_rt] [--seconds 60] [--block-ms 10] [--threads 1]
                                          [--rate 48000] [--no-full-band]

Above the model's rate the stream keeps the band above the model's by default, as ``denoise`` does;
``--no-full-band`` times (and compares) both without it.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from speech_speed import SR, make_audio

from xmodal.denoise import load
from xmodal.io import resample


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="speech_rt", help="causal model: bundled name or run directory")
    p.add_argument("--seconds", type=float, default=60.0, help="signal length (default 60)")
    p.add_argument("--block-ms", type=float, default=10.0, help="block length in ms (default 10)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"))
    p.add_argument("--rate", type=int, default=None, help="stream at this rate (default: the model's)")
    p.add_argument("--no-full-band", dest="full_band", action="store_false",
                   help="above the model's rate, stop at its band (default: keep the band above it)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    den = load(args.model)
    if den.sample_rate != SR:
        raise SystemExit(f"this benchmark makes {SR} Hz audio; the model runs at {den.sample_rate} Hz")
    rate = args.rate or SR
    x = make_audio(args.seconds)
    if rate != SR:
        x = resample(x[None], SR, rate).numpy()[0]
    block = max(1, round(args.block_ms * rate / 1000))
    warm = den.stream(precision=args.precision, sample_rate=rate, full_band=args.full_band)  # warm-up
    for i in range(0, rate, block):
        warm.push(x[i:i + block])
    stream = den.stream(precision=args.precision, sample_rate=rate, full_band=args.full_band)
    times, outs, lag, got = [], [], 0, 0
    for i in range(0, len(x), block):
        t = time.perf_counter()
        outs.append(stream.push(x[i:i + block]))
        times.append(time.perf_counter() - t)
        got += len(outs[-1])
        lag = max(lag, min(len(x), i + block) - got)
    t = time.perf_counter()
    outs.append(stream.flush())
    flush_s = time.perf_counter() - t
    y = np.concatenate(outs)
    ms = np.array(times) * 1000
    budget = block / rate * 1000
    total = ms.sum() / 1000 + flush_s
    print(f"model {args.model} ({den.config.audio.n_fft}-point STFT, hop {den.config.audio.hop_length}), "
          f"{args.seconds:g} s at {rate} Hz in {block}-sample blocks ({budget:g} ms), {args.threads} thread(s), "
          f"{args.precision}")
    print(f"algorithmic latency: delay {stream.delay} samples ({stream.delay / rate * 1000:.1f} ms) + one block "
          f"({budget:g} ms) = {stream.delay / rate * 1000 + budget:.1f} ms; most lag after a push {lag} samples "
          f"({lag / rate * 1000:.1f} ms; bound max_delay {stream.max_delay})")
    print(f"compute per block: mean {ms.mean():.2f} ms, median {np.median(ms):.2f}, p99 {np.percentile(ms, 99):.2f}, "
          f"max {ms.max():.2f} (budget {budget:g} ms); blocks over budget: {(ms > budget).sum()} of {len(ms)}")
    print(f"real-time factor {total / args.seconds:.3f} ({total:.2f} s for {args.seconds:g} s)")
    t = time.perf_counter()
    ref = den.denoise(x, rate, full_band=args.full_band)
    offline_s = time.perf_counter() - t
    print(f"offline Denoiser.denoise of the whole signal: {offline_s:.2f} s (RTF {offline_s / args.seconds:.3f}); "
          f"max |stream - offline| = {np.abs(y - ref).max():.2e} (signal peak {np.abs(ref).max():.2f})")


if __name__ == "__main__":
    main()
