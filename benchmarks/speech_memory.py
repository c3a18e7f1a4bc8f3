"""Peak memory (RSS) of denoising a long 16 kHz mono file with ``Denoiser.denoise_file`` in a subprocess.

Writes ``--minutes`` of synthetic speech + noise (16-bit WAV, written block by block) to a temp folder, denoises it in
a child process and reports the child's peak RSS (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``) next to the peak
RSS of a child that only imports xmodal and loads the model (the fixed cost), and checks the output's length. The
children run as the ``xmodal.denoise`` command line does, with ``xmodal.keep_freed_memory()`` on (freed memory stays
with the process: the setting that keeps the most).

    python benchmarks/speech_memory.py [--model RUN_DIR_OR_NAME] [--minutes 60] [--chunk-seconds 20] [--limit-gb 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
ROOT = Path(__file__).resolve().parents[1]

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
t = time.perf_counter()
if run == "1":
    den.denoise_file(src, dst, chunk_seconds=float(chunk))
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def write_long_wav(path: Path, minutes: float, seed: int = 0) -> int:
    """Write ``minutes`` of a 30 s speech clip plus fresh noise per block, without holding it all; returns frames."""
    from xmodal.data.synthetic import synth_speech

    rng = np.random.default_rng(seed)
    clip = synth_speech(30.0, SR, rng)
    total = int(minutes * 60 * SR)
    with sf.SoundFile(str(path), "w", samplerate=SR, channels=1, subtype="PCM_16") as f:
        for a in range(0, total, len(clip)):
            n = min(len(clip), total - a)
            f.write(clip[:n] * rng.uniform(0.3, 1.0) + 0.03 * rng.standard_normal(n).astype(np.float32))
    return total


def run_child(model: str, src: Path, dst: Path, chunk: float, threads: int, denoise: bool) -> tuple[float, float]:
    """Run the child; returns (seconds denoising, the child's own peak RSS in MiB)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    out = subprocess.run([sys.executable, "-c", _CHILD, model, str(src), str(dst), str(chunk), str(threads),
                          "1" if denoise else "0"], check=True, capture_output=True, text=True, env=env)
    seconds, rss_kib = out.stdout.split()[-2:]
    return float(seconds), int(rss_kib) / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="run directory, .safetensors file or bundled name (default: bundled)")
    p.add_argument("--minutes", type=float, default=60.0, help="length of the test file (default 60)")
    p.add_argument("--chunk-seconds", type=float, default=20.0)
    p.add_argument("--threads", type=int, default=0, help="torch threads in the child (0 = torch's default)")
    p.add_argument("--limit-gb", type=float, default=2.0, help="report PASS when the peak RSS is below this")
    args = p.parse_args()

    model = args.model or "-"
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "long.wav", Path(tmp) / "long_denoised.wav"
        t = time.perf_counter()
        frames = write_long_wav(src, args.minutes)
        print(f"wrote {args.minutes:g} min of 16 kHz mono PCM_16 ({src.stat().st_size / 2**20:.0f} MiB) in "
              f"{time.perf_counter() - t:.1f} s")
        _, base_mib = run_child(model, src, dst, args.chunk_seconds, args.threads, denoise=False)
        seconds, self_mib = run_child(model, src, dst, args.chunk_seconds, args.threads, denoise=True)
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        info = sf.info(str(dst))
        ok_len = info.frames == frames and info.samplerate == SR and info.subtype == "PCM_16"
    limit_mib = args.limit_gb * 1024
    print(f"model: {args.model or 'bundled speech'}, chunk_seconds: {args.chunk_seconds:g}")
    print(f"peak RSS, import + load only:  {base_mib:8.1f} MiB")
    print(f"peak RSS, denoise_file:        {peak_mib:8.1f} MiB (child's own report {self_mib:.1f} MiB)")
    print(f"denoising time: {seconds:.1f} s (RTF {seconds / (args.minutes * 60):.4f})")
    print(f"output: {info.frames} frames at {info.samplerate} Hz {info.subtype} "
          f"({'same as the input' if ok_len else f'EXPECTED {frames} frames at {SR} Hz PCM_16'})")
    print(f"{'PASS' if peak_mib < limit_mib and ok_len else 'FAIL'}: peak {peak_mib:.0f} MiB vs limit "
          f"{limit_mib:.0f} MiB")


if __name__ == "__main__":
    main()
