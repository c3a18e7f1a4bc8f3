"""Gray (Set12) or colour (Kodak24 kodim19-24) Gaussian denoising: the xmodal model beside BM3D, same noise, same run.

Float protocol (DESIGN.md): clean = 8-bit file / 255; noisy = clean + sigma/255 * N(0, 1) drawn in float64 from
``numpy.random.default_rng((seed, image index))``, never clipped; each output is clipped to [0, 1] and rounded to
8 bits before PSNR and SSIM against the clean image (SSIM: see ``xmodal.metrics.SSIM_IMPLEMENTATION``). BM3D is the
``bm3d`` package (``bm3d.bm3d`` for gray, ``bm3d.bm3d_rgb`` for colour, profile ``np``) given the true sigma.

With ``--poisson PHOTONS`` the noise is photon noise instead, ``Poisson(PHOTONS * clean) / PHOTONS`` (the same seeds),
scored for the model as it is, the model through the Anscombe transform (``denoise(..., poisson=PHOTONS)``), and BM3D
through the same transform and exact unbiased inverse (Makitalo & Foi's method).

    python benchmarks/image_quality.py [--data ../shared/data] [--set set12|kodak-valid] [--sigma 25 | --poisson 30]
                                       [--model gray] [--ensemble] [--auto-sigma] [--skip-bm3d] [--json out.json]
                                       [--lpips [BACKBONE.pth] [--lpips-net alex] [--lpips-linear FILE]]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, IMAGE_SETS, held_out_images, to_8bit, with_channels  # noqa: E402

from xmodal.imageio import read_image  # noqa: E402
from xmodal.metrics import LPIPS, SSIM_IMPLEMENTATION, lpips_score, psnr_score, ssim_score  # noqa: E402
from xmodal.vst import anscombe, inverse_anscombe  # noqa: E402

DEFAULT_MODEL = {"set12": "gray", "kodak-valid": "color"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder (default ../shared/data)")
    p.add_argument("--set", choices=sorted(IMAGE_SETS), default="set12")
    p.add_argument("--sigma", type=float, default=25.0, help="noise standard deviation on the 0-255 scale")
    p.add_argument("--poisson", type=float, default=None, metavar="PHOTONS",
                   help="photon noise with PHOTONS at full scale instead of Gaussian noise")
    p.add_argument("--model", default=None, help="run directory or bundled name (default: gray / color by set)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32", help="xmodal inference precision")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--skip-bm3d", action="store_true")
    p.add_argument("--ensemble", action="store_true", help="also score the x8 flip/rotation self-ensemble")
    p.add_argument("--auto-sigma", action="store_true",
                   help="also score the model given sigma='auto' (the command line's default): noise above its "
                        "training range is denoised at a lower contrast. Same as the plain model below about 45/255")
    p.add_argument("--lpips", nargs="?", const="", metavar="FILE",
                   help="also score LPIPS (lower is closer) from torchvision's ImageNet backbone weights: FILE, or "
                        "without FILE torchvision's hub cache; linear layers from the lpips package. Nothing is "
                        "downloaded")
    p.add_argument("--lpips-linear", metavar="FILE", help="LPIPS v0.1 linear layers (default: the lpips package's)")
    p.add_argument("--lpips-net", choices=["alex", "vgg", "squeeze"], default="alex")
    p.add_argument("--json", default=None, help="write per-image and mean results here")
    args = p.parse_args()

    import xmodal

    files, channels = held_out_images(args.data, args.set)
    default_model = DEFAULT_MODEL[args.set]
    if args.threads:
        torch.set_num_threads(args.threads)
    den = xmodal.load(args.model or default_model, precision=args.precision)
    lpips = None if args.lpips is None else LPIPS(args.lpips or None, args.lpips_linear, args.lpips_net)
    keys = ("psnr", "ssim") + (("lpips",) if lpips else ())
    params = sum(p.numel() for p in den.model.parameters())
    sigma = args.sigma / 255.0
    methods = ["noisy", "xmodal"] + (["xmodal vst"] if args.poisson else []) \
        + (["xmodal x8"] if args.ensemble else []) \
        + (["xmodal auto"] if args.auto_sigma else []) + ([] if args.skip_bm3d else ["bm3d"])
    photons = {} if args.poisson is None else {"poisson": args.poisson}  # the x8 and auto rows: with it too
    rows, times = [], {m: 0.0 for m in methods[1:]}
    for k, f in enumerate(files):
        clean, _ = read_image(f)
        clean = with_channels(clean, channels).astype(np.float64)
        rng = np.random.default_rng((args.seed, k))
        noisy = clean + sigma * rng.standard_normal(clean.shape) if args.poisson is None else \
            rng.poisson(args.poisson * clean) / args.poisson
        outs = {"noisy": noisy}
        t = time.perf_counter()
        outs["xmodal"] = den.denoise(noisy.astype(np.float32)).astype(np.float64)
        times["xmodal"] += time.perf_counter() - t
        if args.poisson:
            t = time.perf_counter()
            outs["xmodal vst"] = den.denoise(noisy.astype(np.float32), **photons).astype(np.float64)
            times["xmodal vst"] += time.perf_counter() - t
        if args.ensemble:
            t = time.perf_counter()
            outs["xmodal x8"] = den.denoise(noisy.astype(np.float32), ensemble=True, **photons).astype(np.float64)
            times["xmodal x8"] += time.perf_counter() - t
        if args.auto_sigma:
            t = time.perf_counter()
            outs["xmodal auto"] = den.denoise(noisy.astype(np.float32), sigma="auto").astype(np.float64)
            times["xmodal auto"] += time.perf_counter() - t
        if "bm3d" in methods:
            import bm3d

            t = time.perf_counter()
            z, s = noisy, sigma  # photon noise: BM3D on its Anscombe transform, white noise of level 1
            if args.poisson:
                z, s = anscombe(torch.from_numpy(noisy), args.poisson).numpy(), 1.0
            if channels == 1:
                out = np.asarray(bm3d.bm3d(z[0], sigma_psd=s))[None]
            else:
                out = np.asarray(bm3d.bm3d_rgb(z.transpose(1, 2, 0), sigma_psd=s)).transpose(2, 0, 1)
            outs["bm3d"] = out if not args.poisson else inverse_anscombe(torch.from_numpy(out), args.poisson).numpy()
            times["bm3d"] += time.perf_counter() - t
        row = {"image": f.stem}
        for m in methods:
            est = outs[m] if m == "noisy" else to_8bit(outs[m])  # the noisy input is scored as it is (unclipped)
            row[m] = {"psnr": psnr_score(clean, est), "ssim": ssim_score(clean, est)}
            if lpips:
                row[m]["lpips"] = lpips_score(clean, est, lpips)
        rows.append(row)
        print(f"{f.stem:12s} " + "  ".join(f"{m} {row[m]['psnr']:6.2f} dB / {row[m]['ssim']:.4f}"
                                           + (f" / {row[m]['lpips']:.4f}" if lpips else "") for m in methods),
              flush=True)
    mean = {m: {k: float(np.mean([r[m][k] for r in rows])) for k in keys} for m in methods}
    noise = f"sigma {args.sigma:g}/255" if args.poisson is None else f"Poisson noise, {args.poisson:g} photons at 1"
    print(f"\n{args.set}, {noise}, float protocol (noisy unclipped, outputs rounded to 8 bits), "
          f"{len(files)} images, seed {args.seed}")
    print(f"model: {args.model or default_model} ({params / 1e6:.3f} M parameters, {den.precision})")
    print(f"{'':12s}{'PSNR (dB)':>11s}{'SSIM':>9s}" + (f"{'LPIPS':>9s}" if lpips else "") + f"{'time (s)':>10s}")
    for m in methods:
        print(f"{m:12s}{mean[m]['psnr']:11.2f}{mean[m]['ssim']:9.4f}" + (f"{mean[m]['lpips']:9.4f}" if lpips else "")
              + (f"{times[m]:10.1f}" if m in times else ""))
    print(f"SSIM: {SSIM_IMPLEMENTATION}")
    if lpips:
        print(f"LPIPS: {lpips.description}")
    if args.json:
        Path(args.json).write_text(json.dumps({"set": args.set, "sigma": args.sigma, "poisson": args.poisson,
                                               "seed": args.seed,
                                               "model": args.model or default_model, "parameters": params,
                                               "ssim": SSIM_IMPLEMENTATION, "mean": mean, "seconds": times,
                                               "lpips": lpips.description if lpips else None,
                                               "images": rows}, indent=2))


if __name__ == "__main__":
    main()
