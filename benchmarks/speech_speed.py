"""Real-time factor of ``Denoiser.denoise`` on one thread, next to ``noisereduce.reduce_noise`` on the same audio.

The audio is 60 s (by default) of the library's synthetic speech plus pink noise at 5 dB SNR, 16 kHz mono. Each
method is timed ``--repeats`` times after a warm-up; the best time is reported. RTF = processing time / audio
duration (below 1 is faster than real time).

    python benchmarks/speech_speed.py [--model RUN_DIR_OR_NAME] [--seconds 60] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import best_time

from xmodal.data.synthetic import synth_noise, synth_speech
from xmodal.denoise import DEFAULT_CHUNK_SECONDS, load

SR = 16000


def make_audio(seconds: float, seed: int = 0) -> np.ndarray:
    """``(T,) float32`` synthetic speech + pink noise at 5 dB SNR."""
    rng = np.random.default_rng(seed)
    clean = synth_speech(seconds, SR, rng)
    noise = synth_noise("pink", seconds, SR, rng)
    noise *= np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2)) * 10 ** (-5 / 20)
    return (clean + noise).astype(np.float32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="run directory, .safetensors file or bundled name (default: bundled)")
    p.add_argument("--seconds", type=float, default=60.0, help="audio length (default 60)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--chunk-seconds", type=float, default=DEFAULT_CHUNK_SECONDS)
    p.add_argument("--skip-noisereduce", action="store_true")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    den = load(args.model)
    audio = make_audio(args.seconds)
    den.denoise(audio[:SR], SR)  # warm-up (and the one-off receptive-field measurement)
    params = sum(p.numel() for p in den.model.parameters())
    rows = [("xmodal Denoiser.denoise", best_time(lambda: den.denoise(audio, SR, chunk_seconds=args.chunk_seconds),
                                                  args.repeats))]
    if not args.skip_noisereduce:
        import noisereduce as nr

        nr.reduce_noise(y=audio[:SR], sr=SR)  # warm-up
        rows.append(("noisereduce.reduce_noise", best_time(lambda: nr.reduce_noise(y=audio, sr=SR), args.repeats)))

    print(f"model: {den.name} ({params / 1e6:.3f} M parameters, widths {list(den.config.model.widths)}), "
          f"audio: {args.seconds:g} s at {SR} Hz mono, torch threads: {torch.get_num_threads()}, "
          f"chunk_seconds: {args.chunk_seconds:g}, best of {args.repeats}")
    print(f"{'method':28s} {'seconds':>9s} {'RTF':>8s} {'x real time':>12s}")
    for name, t in rows:
        print(f"{name:28s} {t:9.3f} {t / args.seconds:8.4f} {args.seconds / t:12.1f}")


if __name__ == "__main__":
    main()
