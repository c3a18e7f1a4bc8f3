"""Self-supervised (Neighbor2Neighbor) against supervised training, same network, same steps, scored on Set12.

What a user without clean images has is simulated: every Train400 image gets ONE draw of noise (Gaussian at
``--sigma``, or Poisson shot noise with ``--peak`` photons at full scale; float, not clipped; seed fixed), written as
a float ``.npy`` file, and the self-supervised run sees only those files (``image.self_supervised=neighbor2neighbor``,
nothing added). The supervised run is the usual one: clean Train400 with a fresh draw of the same noise for every
crop. Both use ``recipes/image.yaml`` (batch 16, AdamW, cosine), from scratch or from ``--init-from`` (a bundled
model: adapting it to a sensor's noise), validate on Set12 during training, and are then scored on Set12 with the
float protocol of ``image_quality.py`` (outputs rounded to 8 bits), beside BM3D (given the true sigma; for Poisson
noise the image's RMS noise) unless ``--skip-bm3d``, and beside the ``--init-from`` model as it is (and, for Poisson
noise, through the Anscombe transform with the true photon count: no training at all).

    python benchmarks/self_supervised.py [--data ../shared/data] [--steps 3000] [--noise gaussian --sigma 25 |
                                         --noise poisson --peak 30] [--init-from gray] [--lr 8e-4]
                                         [--out runs/selfsup] [--threads 2] [--skip-bm3d] [--only self|supervised]
                                         [--score-only]

The self-supervised run uses crops of ``2 * patch`` pixels (its network sees the half-size sub-images, as the
supervised run sees ``patch``-pixel crops), and costs about 2.5 times as much per step (one more forward pass on the
whole crop).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, REPO, held_out_images, to_8bit  # noqa: E402

from xmodal.imageio import read_image  # noqa: E402
from xmodal.metrics import psnr_score, ssim_score  # noqa: E402


def add_noise(clean: np.ndarray, args: argparse.Namespace, rng: np.random.Generator) -> np.ndarray:
    """``clean`` (float64 in [0, 1]) with one draw of the benchmark's noise, not clipped."""
    if args.noise == "poisson":
        return rng.poisson(args.peak * clean) / args.peak
    return clean + args.sigma / 255.0 * rng.standard_normal(clean.shape)


def noisy_train400(data: Path, out: Path, args: argparse.Namespace) -> Path:
    """One fixed draw of noise per Train400 image, as float32 ``.npy`` files in ``out`` (kept between runs)."""
    src = data / "image" / "Train400"
    files = sorted(src.glob("*.png"))
    if not files:
        print(f"error: {src}: no Train400 images (pass --data)", file=sys.stderr)
        raise SystemExit(2)
    out.mkdir(parents=True, exist_ok=True)
    for k, f in enumerate(files):
        dst = out / f"{f.stem}.npy"
        if not dst.is_file():
            clean, _ = read_image(f)  # (1, H, W) in [0, 1]
            noisy = add_noise(clean.astype(np.float64), args, np.random.default_rng((args.seed, 1000003, k)))
            np.save(dst, noisy.astype(np.float32))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder (default ../shared/data)")
    p.add_argument("--steps", type=int, default=3000, help="training steps of each run")
    p.add_argument("--noise", choices=["gaussian", "poisson"], default="gaussian")
    p.add_argument("--sigma", type=float, default=25.0, help="Gaussian noise standard deviation, 0-255 scale")
    p.add_argument("--peak", type=float, default=30.0, help="Poisson noise: photons at full scale (x = 1)")
    p.add_argument("--patch", type=int, default=64, help="supervised crop size (self-supervised: twice this)")
    p.add_argument("--init-from", default=None, help="start both runs from this model (bundled name or run folder)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the recipe's 8e-4)")
    p.add_argument("--out", default="runs/selfsup", help="run directories and the noisy training set go here")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-bm3d", action="store_true")
    p.add_argument("--only", choices=["self", "supervised"], help="train and score one of the two runs")
    p.add_argument("--score-only", action="store_true", help="score the runs already in --out, without training")
    args = p.parse_args()

    import torch

    import xmodal
    from xmodal.train import train

    data, out = Path(args.data), Path(args.out)
    set12, _ = held_out_images(data, "set12")
    if args.noise == "poisson":
        what, tag = f"Poisson noise, {args.peak:g} photons at full scale", f"poisson{args.peak:g}"
        spec = f"{{kind: poisson_gaussian, peak: [{args.peak}, {args.peak}], sigma: [0, 0]}}"
    else:
        what, tag, s = f"Gaussian noise, sigma {args.sigma:g}/255", f"gaussian{args.sigma:g}", args.sigma / 255.0
        spec = f"{{kind: gaussian, sigma: [{s}, {s}]}}"
    common = [f"image.valid_dir=[{data / 'image' / 'Set12'}]", f"image.valid_noise={spec}",
              f"train.max_steps={args.steps}", f"train.eval_every={max(1, args.steps // 4)}",
              "train.log_every=100", f"train.threads={args.threads}", "train.progress=false", "image.num_workers=1"]
    common += [f"train.init_from={args.init_from}"] if args.init_from else []
    common += [f"optim.lr={args.lr}"] if args.lr else []
    noisy_dir = out / f"train400_{tag}"
    runs = {
        "supervised": [f"image.train_dir=[{data / 'image' / 'Train400'}]", f"image.noise={spec}",
                       f"image.patch_size={args.patch}", f"train.run_dir={out / 'supervised'}"],
        "self": [f"image.train_dir=[{noisy_dir if args.score_only else noisy_train400(data, noisy_dir, args)}]",
                 "image.noise.sigma=[0,0]", "image.self_supervised=neighbor2neighbor",
                 f"image.patch_size={2 * args.patch}", f"train.run_dir={out / 'self'}"],
    }
    names = [args.only] if args.only else list(runs)
    minutes = {}
    for name in [] if args.score_only else names:
        t = time.perf_counter()
        train(xmodal.load_config(REPO / "recipes" / "image.yaml", [*runs[name], *common]))
        minutes[name] = (time.perf_counter() - t) / 60

    torch.set_num_threads(args.threads)
    dens = {name: (xmodal.load(out / name), {}) for name in names}  # name -> (denoiser, denoise() arguments)
    if args.init_from:
        start = xmodal.load(args.init_from)
        dens = {f"{args.init_from} as is": (start, {}), **dens}
        if args.noise == "poisson":  # no training: the Anscombe transform (xmodal.vst) with the true photon count
            dens = {f"{args.init_from} --poisson": (start, {"poisson": args.peak}), **dens}
    methods = ["noisy", *dens] + ([] if args.skip_bm3d else ["bm3d"])
    scores: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
    for k, f in enumerate(set12):
        clean, _ = read_image(f)
        clean = clean.astype(np.float64)
        noisy = add_noise(clean, args, np.random.default_rng((args.seed, k)))
        outs = {"noisy": noisy, **{n: to_8bit(d.denoise(noisy.astype(np.float32), **kw).astype(np.float64))
                                   for n, (d, kw) in dens.items()}}
        if "bm3d" in methods:
            import bm3d

            sigma = float(np.sqrt(np.mean((noisy - clean) ** 2)))  # Gaussian: about sigma / 255
            sigma = args.sigma / 255.0 if args.noise == "gaussian" else sigma
            outs["bm3d"] = to_8bit(np.asarray(bm3d.bm3d(noisy[0], sigma_psd=sigma))[None])
        for m in methods:
            scores[m].append((psnr_score(clean, outs[m]), ssim_score(clean, outs[m])))
        print(f"{f.stem:6s} " + "  ".join(f"{m} {scores[m][-1][0]:6.2f}" for m in methods), flush=True)
    print(f"\nSet12, {what}, float protocol, {args.steps} steps per run"
          + (f" from {args.init_from}" if args.init_from else " from scratch") + f", seed {args.seed}")
    for m in methods:
        psnr, ssim = np.mean(scores[m], axis=0)
        note = f"   trained in {minutes[m]:.1f} min" if m in minutes else ""
        print(f"{m:18s} PSNR {psnr:6.2f} dB  SSIM {ssim:.4f}{note}")


if __name__ == "__main__":
    main()
