"""Colour photos with camera-pipeline noise (kodim19-24): the Gaussian ``color`` model (plain and with pixel-shuffle
sub-sampling), the ``color_real`` model trained on such noise, and CBM3D told the noise's true RMS, same noise.

The noise is :func:`xmodal.noise.camera`: each clean sRGB image is taken back to linear light and to an RGGB mosaic
(white balance undone), shot and read noise are added there, and the pipeline runs forward (bilinear demosaicking,
white balance, sRGB curve, JPEG). Three settings, from a bright scene to a dim one (``peak``: photons at full scale;
``read``: read-noise standard deviation in linear light; JPEG quality). Draws come from a generator seeded with
``(seed, setting, image)``. The noisy image is 8-bit (JPEG); outputs are clipped and rounded to 8 bits before PSNR
and SSIM (``xmodal.metrics.SSIM_IMPLEMENTATION``). CBM3D is ``bm3d.bm3d_rgb`` (profile ``np``) given the RMS of
``noisy - clean``: an oracle no real photo offers, and a white-noise model of noise that is not white.

Gray photos: the luminance (BT.601 weights, rounded to 8 bits) of the same noisy and clean images, denoised by the
``gray`` model (plain and sub-sampled) and by ``color_real`` (a colour model takes gray images as three equal
channels).

With ``--figure DIR`` it also writes, for each real noisy photo of ``RNI15`` (no clean version: for the eye only), a
PNG of a 192 x 192 crop from its centre: noisy | color | color, subsample 2 | color_real.

    python benchmarks/image_realnoise.py [--data ../shared/data] [--real-model color_real] [--skip-bm3d]
                                         [--figure DIR] [--json out.json]
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
from _common import CAMERA_SETTINGS, DEFAULT_DATA, held_out_images, to_8bit  # noqa: E402

from xmodal.imageio import read_image  # noqa: E402
from xmodal.metrics import SSIM_IMPLEMENTATION, psnr_score, ssim_score  # noqa: E402
from xmodal.noise import camera  # noqa: E402

SETTINGS = CAMERA_SETTINGS  # name: (peak, read noise, JPEG quality)


def figure(data: Path, out: Path, dens: dict[str, object]) -> None:
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    files = sorted((data / "image" / "RNI15").glob("*.*"))
    for f in files:
        image, _ = read_image(f)
        image = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
        _, H, W = image.shape
        s = min(192, H, W)
        crop = image[:, (H - s) // 2:(H - s) // 2 + s, (W - s) // 2:(W - s) // 2 + s]
        panels = [crop] + [den.denoise(crop, subsample=sub) for den, sub in dens.values()]
        row = np.concatenate([np.pad(to_8bit(p), ((0, 0), (0, 0), (0, 4)), constant_values=1.0) for p in panels], -1)
        Image.fromarray((row.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(out / f"{f.stem}.png")
    print(f"figures: {len(files)} RNI15 crops in {out} (noisy | {' | '.join(dens)})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder (default ../shared/data)")
    p.add_argument("--model", default="color", help="the Gaussian colour model (default color)")
    p.add_argument("--real-model", default="color_real", help="the model trained on camera noise")
    p.add_argument("--gray-model", default="gray", help="the Gaussian gray model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--skip-bm3d", action="store_true")
    p.add_argument("--figure", default=None, metavar="DIR", help="write RNI15 comparison crops here")
    p.add_argument("--json", default=None, help="write per-image and mean results here")
    args = p.parse_args()

    import xmodal

    if args.threads:
        torch.set_num_threads(args.threads)
    files, _ = held_out_images(args.data, "kodak-valid")
    gauss, real, gray = xmodal.load(args.model), xmodal.load(args.real_model), xmodal.load(args.gray_model)
    methods = {"color": (gauss, 1), "color, subsample 2": (gauss, 2), "color_real": (real, 1)}
    gray_methods = {"gray": (gray, 1), "gray, subsample 2": (gray, 2), "color_real (gray in)": (real, 1)}
    names = ["noisy", *methods] + ([] if args.skip_bm3d else ["cbm3d (oracle rms)"])
    results: dict[str, dict] = {}
    luma = np.array([0.299, 0.587, 0.114]).reshape(3, 1, 1)
    for si, (setting, (peak, read, quality)) in enumerate(SETTINGS.items()):
        rows, times = [], {m: 0.0 for m in names[1:]}
        for k, f in enumerate(files):
            clean = read_image(f)[0].astype(np.float64)
            gen = torch.Generator().manual_seed(int(np.random.default_rng((args.seed, si, k)).integers(2 ** 62)))
            noisy = camera(torch.from_numpy(clean), peak, read, gen, jpeg_quality=(quality, quality)).numpy()
            outs = {"noisy": noisy}
            for m, (den, sub) in methods.items():
                t = time.perf_counter()
                outs[m] = den.denoise(noisy.astype(np.float32), subsample=sub).astype(np.float64)
                times[m] += time.perf_counter() - t
            if not args.skip_bm3d:
                import bm3d

                rms = float(np.sqrt(np.mean((noisy - clean) ** 2)))
                t = time.perf_counter()
                outs[names[-1]] = np.asarray(bm3d.bm3d_rgb(noisy.transpose(1, 2, 0), sigma_psd=rms)).transpose(2, 0, 1)
                times[names[-1]] += time.perf_counter() - t
            row = {"image": f.stem}
            for m in names:
                est = to_8bit(outs[m])
                row[m] = {"psnr": psnr_score(clean, est), "ssim": ssim_score(clean, est)}
            clean_y, noisy_y = (to_8bit((a * luma).sum(axis=0, keepdims=True)) for a in (clean, noisy))
            row["gray noisy"] = {"psnr": psnr_score(clean_y, noisy_y), "ssim": ssim_score(clean_y, noisy_y)}
            for m, (den, sub) in gray_methods.items():
                est = to_8bit(den.denoise(noisy_y.astype(np.float32), subsample=sub).astype(np.float64))
                row[m] = {"psnr": psnr_score(clean_y, est), "ssim": ssim_score(clean_y, est)}
            rows.append(row)
            print(f"{setting:7s} {f.stem:8s} " + "  ".join(f"{m} {row[m]['psnr']:6.2f}" for m in names), flush=True)
        mean = {m: {k: float(np.mean([r[m][k] for r in rows])) for k in ("psnr", "ssim")}
                for m in names + ["gray noisy", *gray_methods]}
        results[setting] = {"peak": peak, "read": read, "jpeg_quality": quality, "mean": mean, "seconds": times,
                            "images": rows}
    print(f"\nkodim19-24 with camera-pipeline noise (xmodal.noise.camera), seed {args.seed}; outputs rounded to 8 bits")
    print(f"{'':22s}" + "".join(f"{s + f' (peak {v[0]:g}, read {v[1]:g}, q{v[2]})':>36s}" for s, v in SETTINGS.items()))
    print(f"{'':22s}" + f"{'PSNR (dB) / SSIM':>36s}" * len(SETTINGS))
    for m in names + ["gray noisy", *gray_methods]:
        print(f"{m:22s}" + "".join(f"{results[s]['mean'][m]['psnr']:27.2f} / {results[s]['mean'][m]['ssim']:.4f}"
                                   for s in SETTINGS))
    print(f"SSIM: {SSIM_IMPLEMENTATION}")
    if args.figure:
        figure(Path(args.data), Path(args.figure), {"color": (gauss, 1), "color, subsample 2": (gauss, 2),
                                                    "color_real": (real, 1)})
    if args.json:
        Path(args.json).write_text(json.dumps({"seed": args.seed, "ssim": SSIM_IMPLEMENTATION, "model": args.model,
                                               "real_model": args.real_model, "settings": results}, indent=2))


if __name__ == "__main__":
    main()
