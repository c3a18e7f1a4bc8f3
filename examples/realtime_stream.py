"""Denoise audio as it arrives: the loop of an audio callback, fed from a file in 10 ms blocks.

    python examples/realtime_stream.py noisy.wav denoised.wav [--model speech_rt] [--block-ms 10]

The stream runs at the file's rate, as it would at the sound card's (48 kHz, 44.1 kHz...): it resamples to the
model's 16 kHz and back inside. In a live application the blocks come from the sound card's input callback and
``stream.push`` returns what to play, lagging the input by ``stream.delay`` to ``stream.max_delay`` samples (24 to
31.9 ms at 16 kHz, 24.8 to 32.9 ms at 48 kHz, 24.8 to 52.7 ms at 44.1 kHz, whose resampling groups are 10 ms long)
plus one block, whatever the length of the session. The whole output written here equals
``xmodal.load(model).denoise`` of the whole file, written with the input's subtype (16-bit, 24-bit, float...) where
the output's format has it (else the format's default).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

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
    fmt, subtype = Path(args.dst).suffix[1:].upper(), sf.info(args.src).subtype  # PCM_16, PCM_24, FLOAT...
    if not sf.check_format(fmt, subtype):  # kept where the output's format has it, as xmodal.denoise does
        wide = subtype in ("PCM_24", "PCM_32", "FLOAT", "DOUBLE")  # float into FLAC: its deepest integer, 24-bit
        subtype = "PCM_24" if wide and sf.check_format(fmt, "PCM_24") else None  # else the format's default
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
    sf.write(args.dst, np.concatenate(out, axis=1).T, sr, subtype=subtype)
    # the output lags the input by stream.delay samples at best, stream.max_delay at worst, plus the block's wait
    print(f"{len(wave) / sr:.1f} s at {sr} Hz in {block}-sample blocks; latency {stream.delay / sr * 1000:.1f} ms "
          f"+ one block at best, {stream.max_delay / sr * 1000:.1f} ms + one block at worst; "
          f"slowest block {worst * 1000:.1f} ms of a {args.block_ms:g} ms budget -> {args.dst}")


if __name__ == "__main__":
    main()
