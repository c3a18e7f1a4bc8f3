"""Speed of the gray image model on a 512 x 512 image (beside BM3D on the same image), and peak memory of an
8192 x 8192 image going through tiled inference in a subprocess.

The image is Set12's 512 x 512 ``08.png`` (a synthetic image when the data folder is missing) with sigma 25/255
noise. Times are the best of ``--repeats`` after a warm-up, with torch's default threads (all cores) unless
``--threads``. Memory: a child process denoises a synthetic 8192 x 8192 gray image (256 MiB as float32) with
``ImageDenoiser.denoise(..., tile=--tile)`` and reports its peak RSS next to a child that only loads the model.

Both inference precisions are timed (fp32, and bf16 autocast, see ``ImageDenoiser``) and their outputs compared,
first with the process's default allocator settings (as ``xmodal.load`` in a program that changes nothing), then after
``xmodal.keep_freed_memory()`` and with ``sigma="auto"`` (the noise level estimated for the range check), as the
``xmodal.denoise`` command line runs. The big image's child process runs as the
command line does (``keep_freed_memory()`` on), the setting that keeps the most memory.

    python benchmarks/image_speed.py [--model gray] [--repeats 3] [--big 8192] [--tile 512] [--skip-bm3d]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, REPO  # noqa: E402

_CHILD = """
import resource, sys, time
import numpy as np, torch
import xmodal
model, size, tile, run, precision = sys.argv[1:]
xmodal.keep_freed_memory()
den = xmodal.load(model, precision=precision)
t = time.perf_counter()
if run == "1":
    rng = np.random.default_rng(0)
    n = int(size)
    image = np.empty((1, n, n), dtype=np.float32)
    for r in range(0, n, 1024):  # a smooth gradient plus noise, written in strips
        rows = np.arange(r, min(n, r + 1024), dtype=np.float32)[:, None] / n
        image[0, r:r + len(rows)] = 0.5 * rows + 0.25 + 0.1 * rng.standard_normal((len(rows), n), dtype=np.float32)
    out = den.denoise(image, tile=int(tile), sigma="auto")  # as the command line
    assert out.shape == image.shape, out.shape
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def run_child(model: str, size: int, tile: int, run: bool, precision: str) -> tuple[float, float]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    out = subprocess.run([sys.executable, "-c", _CHILD, model, str(size), str(tile), "1" if run else "0", precision],
                         check=True, capture_output=True, text=True, env=env)
    seconds, rss_kib = out.stdout.split()[-2:]
    return float(seconds), int(rss_kib) / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="gray")
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--big", type=int, default=8192, help="side of the memory-test image (0 skips it)")
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--big-precision", choices=["fp32", "bf16"], default="bf16", help="precision of the big image")
    p.add_argument("--skip-bm3d", action="store_true")
    args = p.parse_args()

    import xmodal
    from xmodal.imageio import read_image

    if args.threads:
        torch.set_num_threads(args.threads)
    src = Path(args.data) / "image" / "Set12" / "08.png"
    if src.is_file():
        clean = read_image(src)[0]
    else:
        from xmodal.data.synthetic import synth_image

        clean = synth_image(512, 512, 1, np.random.default_rng(0))
    noisy = (clean + 25 / 255 * np.random.default_rng(0).standard_normal(clean.shape)).astype(np.float32)
    print(f"{src.name if src.is_file() else 'synthetic'} {noisy.shape[2]} x {noisy.shape[1]}, "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores")
    outputs = {}
    for allocator in ("default allocator", "keep_freed_memory"):
        if allocator == "keep_freed_memory":
            print(f"xmodal.keep_freed_memory(): {'applied' if xmodal.keep_freed_memory() else 'not glibc, no-op'}")
        for precision in ("fp32", "bf16"):
            den = xmodal.load(args.model, precision=precision)
            as_cli = {"sigma": "auto"} if allocator == "keep_freed_memory" else {}
            outputs[precision] = den.denoise(noisy, **as_cli)  # warm-up
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                den.denoise(noisy, **as_cli)
                times.append(time.perf_counter() - t)
            print(f"xmodal {args.model} ({precision}, {allocator}{', sigma=auto' if as_cli else ''}): "
                  f"{min(times):.3f} s (best of {args.repeats})")
    diff = np.abs(outputs["fp32"] - outputs["bf16"])
    print(f"bf16 vs fp32 output: max |diff| {diff.max() * 255:.3f} / 255, mean {diff.mean() * 255:.4f} / 255")
    if not args.skip_bm3d:
        import bm3d

        t = time.perf_counter()
        bm3d.bm3d(noisy[0].astype(np.float64), sigma_psd=25 / 255)
        print(f"bm3d (sigma given): {time.perf_counter() - t:.3f} s")
    if args.big:
        _, base = run_child(args.model, args.big, args.tile, False, args.big_precision)
        seconds, peak = run_child(args.model, args.big, args.tile, True, args.big_precision)
        image_mib = args.big * args.big * 4 / 2 ** 20
        print(f"{args.big} x {args.big} gray image, tile {args.tile}, {args.big_precision}: {seconds:.1f} s, "
              f"peak RSS {peak:.0f} MiB "
              f"(model loaded: {base:.0f} MiB; input and output arrays: {2 * image_mib:.0f} MiB)")


if __name__ == "__main__":
    main()
