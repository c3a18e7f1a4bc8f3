"""Peak memory (RSS) of denoising a long recording in a subprocess, as a file of each kind the speech model takes.

Writes ``--minutes`` of synthetic speech + noise (written block by block) to a temp folder as ``--format``:

- ``wav``: 16 kHz mono 16-bit WAV, through ``Denoiser.denoise_file`` (to WAV);
- ``m4a``: 48 kHz mono AAC in ``.m4a`` (a phone's voice memo), through ``Denoiser.denoise_file`` (to ``.m4a``);
- ``mp4``: the same AAC track as the soundtrack of an ``.mp4`` with a 32 x 32 gray H.264 picture at 1 frame per
  second, through ``VideoDenoiser.denoise_file(..., audio=speech)`` (``--audio denoise``; the bundled ``video_gray``
  model on the frames).

It denoises the file in a child process and reports the child's peak RSS (its own
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` at the end: ``RUSAGE_CHILDREN`` would also count the parent's pages
that a child holds between fork and exec) next to the peak RSS of a child that only imports xmodal and loads the
model(s) (the fixed cost), and checks the output's length. The children run as the ``xmodal.denoise`` command line
does, with ``xmodal.keep_freed_memory()`` on (freed memory stays with the process: the setting that keeps the most).

    python benchmarks/speech_memory.py [--format wav|m4a|mp4] [--model RUN_DIR_OR_NAME] [--minutes 60]
                                       [--chunk-seconds 20] [--limit-gb 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
RATES = {"wav": 16000, "m4a": 48000, "mp4": 48000}

_CHILD = """
import resource, sys, time
import torch
from xmodal.denoise import load
from xmodal.runtime import keep_freed_memory
keep_freed_memory()
model, src, dst, chunk, threads, run = sys.argv[1:]
if int(threads):
    torch.set_num_threads(int(threads))
den = load(None if model == "-" else model)
video = load("video_gray") if src.endswith(".mp4") else None
t = time.perf_counter()
if run == "1" and video is not None:
    video.denoise_file(src, dst, audio=den)
elif run == "1":
    den.denoise_file(src, dst, chunk_seconds=float(chunk))
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def long_blocks(minutes: float, rate: int, seed: int = 0):
    """``minutes`` of a 30 s speech clip plus fresh noise per block: yields (L,) float32 blocks."""
    from xmodal.data.synthetic import synth_speech

    rng = np.random.default_rng(seed)
    clip = synth_speech(30.0, rate, rng)
    total = int(minutes * 60 * rate)
    for a in range(0, total, len(clip)):
        n = min(len(clip), total - a)
        yield (clip[:n] * rng.uniform(0.3, 1.0) + 0.03 * rng.standard_normal(n)).astype(np.float32)


def write_long(path: Path, minutes: float, kind: str) -> int:
    """Write the long recording as ``kind`` without holding it all; returns its samples."""
    rate, total = RATES[kind], 0
    if kind == "wav":
        with sf.SoundFile(str(path), "w", samplerate=rate, channels=1, subtype="PCM_16") as f:
            for block in long_blocks(minutes, rate):
                f.write(block)
                total += len(block)
        return total
    import av

    with av.open(str(path), "w", format="ipod" if kind == "m4a" else "mp4") as out:
        audio = out.add_stream("aac", rate=rate, layout="mono")
        audio.bit_rate = 96_000
        picture = None
        if kind == "mp4":
            picture = out.add_stream("libx264", rate=1, options={"preset": "ultrafast"})
            picture.width, picture.height, picture.pix_fmt = 32, 32, "yuv420p"
        for block in long_blocks(minutes, rate):
            frame = av.AudioFrame.from_ndarray(block[None], format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, total, Fraction(1, rate)
            out.mux(audio.encode(frame))
            first, total = total, total + len(block)
            for second in range(-(-first // rate), -(-total // rate)) if picture is not None else ():
                gray = np.full((32, 32), 64 + (second % 128), np.uint8)
                image = av.VideoFrame.from_ndarray(gray, format="gray").reformat(format="yuv420p")
                image.pts = second
                out.mux(picture.encode(image))
        out.mux(audio.encode(None))
        if picture is not None:
            out.mux(picture.encode(None))
    return total


def output_samples(path: Path, kind: str) -> int:
    if kind == "wav":
        return sf.info(str(path)).frames
    from xmodal.io import read_av_audio

    return read_av_audio(path)[0].shape[1]


def run_child(model: str, src: Path, dst: Path, chunk: float, threads: int, denoise: bool) -> tuple[float, float]:
    """Run the child; returns (seconds denoising, the child's own peak RSS in MiB)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    out = subprocess.run([sys.executable, "-c", _CHILD, model, str(src), str(dst), str(chunk), str(threads),
                          "1" if denoise else "0"], check=True, capture_output=True, text=True, env=env)
    seconds, rss_kib = out.stdout.split()[-2:]
    return float(seconds), int(rss_kib) / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--format", choices=tuple(RATES), default="wav", help="the file denoised (default wav)")
    p.add_argument("--model", default=None, help="run directory, .safetensors file or bundled name (default: bundled)")
    p.add_argument("--minutes", type=float, default=60.0, help="length of the test file (default 60)")
    p.add_argument("--chunk-seconds", type=float, default=20.0)
    p.add_argument("--threads", type=int, default=0, help="torch threads in the child (0 = torch's default)")
    p.add_argument("--limit-gb", type=float, default=2.0, help="report PASS when the peak RSS is below this")
    args = p.parse_args()

    model, kind, rate = args.model or "-", args.format, RATES[args.format]
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / f"long.{kind}", Path(tmp) / f"long_denoised.{kind}"
        t = time.perf_counter()
        samples = write_long(src, args.minutes, kind)
        print(f"wrote {args.minutes:g} min at {rate // 1000} kHz mono as .{kind} ({src.stat().st_size / 2**20:.0f} "
              f"MiB) in {time.perf_counter() - t:.1f} s")
        _, base_mib = run_child(model, src, dst, args.chunk_seconds, args.threads, denoise=False)
        seconds, peak_mib = run_child(model, src, dst, args.chunk_seconds, args.threads, denoise=True)
        got = output_samples(dst, kind)
    slack = 0 if kind == "wav" else 8  # AAC: FFmpeg's MP4 duration rounds by a few samples
    ok_len = 0 <= got - samples <= slack
    limit_mib = args.limit_gb * 1024
    print(f"model: {args.model or 'bundled speech'}, chunk_seconds: {args.chunk_seconds:g}")
    print(f"peak RSS, import + load only:  {base_mib:8.1f} MiB")
    print(f"peak RSS, denoising:           {peak_mib:8.1f} MiB")
    print(f"denoising time: {seconds:.1f} s (RTF {seconds / (args.minutes * 60):.4f})")
    print(f"output: {got} samples ({'as the input' if ok_len else f'EXPECTED {samples}'})")
    print(f"{'PASS' if peak_mib < limit_mib and ok_len else 'FAIL'}: peak {peak_mib:.0f} MiB vs limit "
          f"{limit_mib:.0f} MiB")


if __name__ == "__main__":
    main()
