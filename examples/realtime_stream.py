"""Denoise audio as it arrives: the loop of an audio callback, fed from a file in 10 ms blocks.

    python examples/realtime_stream.py noisy.wav denoised.wav [--model speech_rt] [--block-ms 10]

The stream runs at the file's rate, as it would at the sound card's (48 kHz, 44.1 kHz...): it resamples to the
model's 16 kHz and back inside. In a live application the blocks come from the sound card's input callback and
``stream.push`` returns what to play; ``stream.delay`` samples of latency (24 ms at 16 kHz, 24.8 ms at 48 kHz) plus
one block are added, whatever the length of the session. The whole output written here equals
``xmodal.load(model).denoise`` of the whole file.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import soundfile as sf

import xmodal


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src", help="input audio file (any rate)")
    p.add_argument("dst", help="output file")
    p.add_argument("--model", default="speech_rt", help="a causal model (default: bundled speech_rt)")
    p.add_argument("--block-ms", type=float, default=10.0, help="block length in ms (default 10)")
    args = p.parse_args()
    denoiser = xmodal.load(args.model)
    wave, sr = sf.read(args.src, dtype="float32", always_2d=True)  # (T, C)
    try:
        stream = denoiser.stream(channels=wave.shape[1], sample_rate=sr)
    except ValueError as e:  # e.g. a model that is not causal
        raise SystemExit(f"error: {e}") from None
    block = round(args.block_ms * sr / 1000)
    out, worst = [], 0.0
    for i in range(0, len(wave), block):  # the audio callback
        t = time.perf_counter()
        out.append(stream.push(wave[i:i + block].T))  # (C, n) in -> (C, m) out, m = what is ready
        worst = max(worst, time.perf_counter() - t)
    out.append(stream.flush())  # end of the session: the last stream.delay samples
    sf.write(args.dst, np.concatenate(out, axis=1).T, sr)
    print(f"{len(wave) / sr:.1f} s at {sr} Hz in {block}-sample blocks; latency {stream.delay / sr * 1000:.1f} ms "
          f"+ one block; "
          f"slowest block {worst * 1000:.1f} ms of a {args.block_ms:g} ms budget -> {args.dst}")


if __name__ == "__main__":
    main()
