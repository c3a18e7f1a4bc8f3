"""Quality of a speech model on the SPLITS.md validation mixtures, beside noisereduce (spectral gating).

228 mixtures: 19 unseen talkers x 4 unseen noises x {0, 5, 10} dB (noise offset from a fixed seed, SNR over the whole
utterance), built by the same code as training validation. Prints PESQ / STOI / ESTOI / SI-SDR means for the noisy
input, xmodal and noisereduce, a per-SNR breakdown, and whether the issue's targets are met.

    python benchmarks/speech_quality.py [--model speech|speech_rt|RUN_DIR] [--data ../shared/data] [--json out.json]
    python benchmarks/speech_quality.py --model speech_rt --gain-db -20   # the same mixtures 20 dB quieter

``--gain-db`` scales every mixture (and its clean reference) before denoising: the mixtures sit at about -25 dBFS of
speech, so this measures how a model copes with quieter or louder recordings (a model that normalises levels does
not see the difference; a streaming model, which cannot, must have learnt it). ``--stream`` denoises through
``Denoiser.stream()`` in 10 ms blocks instead of ``Denoiser.denoise`` (causal models; the output is the same).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

METRICS = ("pesq", "stoi", "estoi", "si_sdr")


def main() -> int:
    from _common import DEFAULT_DATA, bundled_speech_config
    from xmodal.data import resolve_speech_data
    from xmodal.metrics import MetricAccumulator, speech_metrics

    import xmodal

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="bundled name or run directory (default: the bundled model)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="root holding speech/")
    p.add_argument("--json", default=None, help="write per-clip and mean scores here")
    p.add_argument("--limit", type=int, default=0, help="only the first N mixtures (quick checks)")
    p.add_argument("--gain-db", type=float, default=0.0, help="scale the mixtures by this gain first (default 0)")
    p.add_argument("--stream", action="store_true", help="denoise through Denoiser.stream() in 10 ms blocks")
    args = p.parse_args()
    cfg = bundled_speech_config(args.data)
    sr = cfg.audio.sample_rate
    clips = resolve_speech_data(cfg.data, sr, "/nonexistent").valid
    if args.limit:
        clips = clips[: args.limit]
    denoiser = xmodal.load(args.model)
    import noisereduce

    gain = np.float32(10.0 ** (args.gain_db / 20.0))
    block = sr // 100

    def run(noisy: np.ndarray) -> np.ndarray:
        if not args.stream:
            return np.asarray(denoiser.denoise(noisy, sr))
        stream = denoiser.stream()
        return np.concatenate([stream.push(noisy[i:i + block]) for i in range(0, len(noisy), block)]
                              + [stream.flush()])

    acc = MetricAccumulator()
    by_snr: dict[str, MetricAccumulator] = defaultdict(MetricAccumulator)
    seconds = {"xmodal": 0.0, "noisereduce": 0.0}
    rows = []
    for i, clip in enumerate(clips):
        noisy, clean = clip.noisy[0].numpy() * gain, clip.clean[0].numpy() * gain
        t = time.perf_counter()
        ours = run(noisy)
        seconds["xmodal"] += time.perf_counter() - t
        t = time.perf_counter()
        nr = noisereduce.reduce_noise(y=noisy, sr=sr).astype(np.float32)
        seconds["noisereduce"] += time.perf_counter() - t
        snr = clip.name.split("@")[1]
        row = {"name": clip.name}
        for name, est in (("noisy", noisy), ("xmodal", ours), ("noisereduce", nr)):
            row[name] = speech_metrics(acc, name, clip.name, clean, est, sr)
            speech_metrics(by_snr[snr], name, clip.name, clean, est, sr)
        rows.append(row)
        if (i + 1) % 20 == 0:
            print(f"  {i + 1}/{len(clips)} mixtures scored", file=sys.stderr)
    means = acc.means()
    audio_s = sum(c.noisy.shape[-1] for c in clips) / sr
    print(f"{len(clips)} validation mixtures ({audio_s / 60:.1f} min), model {args.model or 'bundled speech'}"
          f"{' streamed in 10 ms blocks' if args.stream else ''}, gain {args.gain_db:+g} dB; "
          f"PESQ wide-band (pesq package), STOI/ESTOI (pystoi), SI-SDR zero-mean")
    print(f"{'':13s}" + "".join(f"{m:>9s}" for m in METRICS) + "   time (s)")
    for name in ("noisy", "xmodal", "noisereduce"):
        t = f"{seconds[name]:9.1f}" if name in seconds else ""
        print(f"{name:13s}" + "".join(f"{means[name][m]:9.3f}" for m in METRICS) + "  " + t)
    print("per SNR (PESQ / SI-SDR):")
    for snr in sorted(by_snr, key=lambda s: float(s.replace("dB", ""))):
        m = by_snr[snr].means()
        print(f"  {snr:>5s}: " + ", ".join(f"{n} {m[n]['pesq']:.3f} / {m[n]['si_sdr']:.2f}"
                                             for n in ("noisy", "xmodal", "noisereduce")))
    d_pesq = means["xmodal"]["pesq"] - means["noisy"]["pesq"]
    d_sdr = means["xmodal"]["si_sdr"] - means["noisy"]["si_sdr"]
    beats = all(means["xmodal"][m] > means["noisereduce"][m] for m in ("pesq", "stoi", "si_sdr"))
    print(f"PESQ {d_pesq:+.3f} over noisy (target >= +0.5: {'met' if d_pesq >= 0.5 else 'NOT met'}); "
          f"SI-SDR {d_sdr:+.2f} dB (target >= +7: {'met' if d_sdr >= 7 else 'NOT met'}); "
          f"beats noisereduce on PESQ, STOI and SI-SDR: {'yes' if beats else 'NO'}")
    if acc.failures:
        print(f"{len(acc.failures)} metric failures: " + "; ".join(f"{r}/{m}/{i}: {why}"
                                                                    for r, m, i, why in acc.failures[:5]))
    if args.json:
        Path(args.json).write_text(json.dumps({"means": means, "clips": rows, "seconds": seconds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
