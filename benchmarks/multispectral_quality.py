"""Multispectral denoising on the held-out bottom quarter of the shared stacks: the band-agnostic xmodal model beside
per-band BM3D and the gray-image model applied band by band, on PSNR, MPSNR, SSIM and SAM.

Protocol: each stack is read with per-band min-max scaling (every band spans [0, 1]: "full scale"); the bottom
quarter of its rows (SPLITS.md, never seen in training) is the clean reference; noisy = clean + sigma * N(0, 1)
(default sigma 0.05 of full scale, float64, ``default_rng((seed, stack index))``, not clipped). Outputs are scored as
they come (float, no clipping). PSNR with data range 1 over all bands (one MSE), MPSNR the mean of the bands' PSNRs
(what hyperspectral papers call PSNR); SAM in degrees.

    python benchmarks/multispectral_quality.py [--data ../shared/data] [--sigma 0.05] [--model multispectral]
                                               [--gray-model gray] [--skip-bm3d] [--auto-sigma]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA  # noqa: E402

from xmodal.imageio import read_stack  # noqa: E402
from xmodal.metrics import mpsnr_score, psnr_score, sam_score, ssim_score  # noqa: E402

S2_20M = ["s2_B05.tif", "s2_B06.tif", "s2_B07.tif", "s2_B8A.tif", "s2_B11.tif", "s2_B12.tif"]


def stacks(data: Path) -> list[tuple[str, object]]:
    ms = data / "multispectral"
    return [("landsat8 (10 bands)", ms / "landsat8_LC80200392015216LGN00"),
            ("sentinel2 20 m (6 bands)", [ms / "sentinel2_T18SVG_20160112" / f for f in S2_20M])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder (default ../shared/data)")
    p.add_argument("--sigma", type=float, default=0.05, help="noise std as a fraction of each band's full scale")
    p.add_argument("--model", default="multispectral", help="run directory or bundled name of the stack model")
    p.add_argument("--gray-model", default="gray", help="the image model applied band by band")
    p.add_argument("--valid-rows", type=float, default=0.25, help="bottom fraction of rows held out (SPLITS.md)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32", help="xmodal inference precision")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--skip-bm3d", action="store_true")
    p.add_argument("--auto-sigma", action="store_true",
                   help="also score the stack model given sigma='auto' (the command line's default): bands whose noise "
                        "is above its training range (0.1) are denoised at a lower contrast")
    args = p.parse_args()

    import xmodal

    if not (Path(args.data) / "multispectral").is_dir():
        print(f"error: {Path(args.data) / 'multispectral'}: folder not found (pass --data)", file=sys.stderr)
        raise SystemExit(2)
    if args.threads:
        torch.set_num_threads(args.threads)
    den = xmodal.load(args.model, precision=args.precision)
    gray = xmodal.load(args.gray_model, precision=args.precision)
    methods = ["noisy", "xmodal"] + (["xmodal auto"] if args.auto_sigma else []) + ["gray per band"] \
        + ([] if args.skip_bm3d else ["bm3d per band"])
    totals = {m: [] for m in methods}
    times = {m: 0.0 for m in methods[1:]}
    for k, (name, src) in enumerate(stacks(Path(args.data))):
        stack, _ = read_stack(src, "band_minmax")
        H = stack.shape[1]
        clean = stack[:, H - int(round(args.valid_rows * H)):].astype(np.float64)
        noisy = clean + args.sigma * np.random.default_rng((args.seed, k)).standard_normal(clean.shape)
        outs = {"noisy": noisy}
        t = time.perf_counter()
        outs["xmodal"] = den.denoise(noisy.astype(np.float32)).astype(np.float64)
        times["xmodal"] += time.perf_counter() - t
        if args.auto_sigma:
            t = time.perf_counter()
            outs["xmodal auto"] = den.denoise(noisy.astype(np.float32), sigma="auto").astype(np.float64)
            times["xmodal auto"] += time.perf_counter() - t
        t = time.perf_counter()
        outs["gray per band"] = gray.denoise(noisy.astype(np.float32)).astype(np.float64)  # channels -> bands
        times["gray per band"] += time.perf_counter() - t
        if "bm3d per band" in methods:
            import bm3d

            t = time.perf_counter()
            outs["bm3d per band"] = np.stack([np.asarray(bm3d.bm3d(b, sigma_psd=args.sigma)) for b in noisy])
            times["bm3d per band"] += time.perf_counter() - t
        print(f"\n{name}: validation rows {clean.shape[1]} x {clean.shape[2]}, sigma {args.sigma:g}")
        print(f"{'':16s}{'PSNR (dB)':>11s}{'MPSNR':>8s}{'SSIM':>9s}{'SAM (deg)':>11s}")
        for m in methods:
            s = (psnr_score(clean, outs[m], 1.0), mpsnr_score(clean, outs[m], 1.0), ssim_score(clean, outs[m], 1.0),
                 sam_score(clean, outs[m]))
            totals[m].append(s)
            print(f"{m:16s}{s[0]:11.2f}{s[1]:8.2f}{s[2]:9.4f}{s[3]:11.2f}")
    print(f"\nmean over {len(totals['noisy'])} stacks (model {args.model}, gray model {args.gray_model})")
    print(f"{'':16s}{'PSNR (dB)':>11s}{'MPSNR':>8s}{'SSIM':>9s}{'SAM (deg)':>11s}{'time (s)':>10s}")
    for m in methods:
        a = np.mean(totals[m], axis=0)
        print(f"{m:16s}{a[0]:11.2f}{a[1]:8.2f}{a[2]:9.4f}{a[3]:11.2f}" + (f"{times[m]:10.1f}" if m in times else ""))


if __name__ == "__main__":
    main()
