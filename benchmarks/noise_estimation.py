"""Noise-level estimation without a clean image: ``xmodal.noise.estimate_sigma`` beside scikit-image's.

For each held-out image (Set12 gray, Kodak24 kodim19-24 colour, channel by channel) and each sigma, white Gaussian
noise of that sigma/255 is added to the clean 8-bit image / 255 (float64, ``numpy.random.default_rng((seed, sigma,
image index))``), either kept in float (the benchmark protocol) or, with ``--8bit``, clipped and rounded to 8 bits as
a noisy file stores it. Both estimators read the noisy image alone; the table gives their mean estimate, mean error
and largest error over the images and channels (0-255 scale), and the mean time per image.
``skimage.restoration.estimate_sigma`` is Donoho's wavelet median absolute deviation (the usual quick estimate).

With ``--photons 3,10,30,100,1000`` it measures ``xmodal.noise.estimate_photon_noise`` instead: photon noise
``Poisson(P * clean) / P`` (``numpy.random.default_rng((seed, P, image index))``), the estimated photon count at full
scale per image against the true ``P`` (as a ratio), and the warnings it gave. With ``--read-noise 0,0.01,0.03`` as
well, ``xmodal.noise.estimate_poisson_gaussian`` on Poisson-Gaussian noise ``Poisson(P * clean) / P + N(0, r^2)``
(not clipped: values below 0 kept, as after a black level is subtracted in float): the photons (ratio) and the read
noise (in [0, 1] units) it reads, both fitted together. ``--set spots`` replaces the images by sparse synthetic
fluorescence (no data needed): 40 Gaussian spots (sigma 2.5 px) of up to ``P`` photons on a flat background of
``P / 20``, 256 x 256, 12 draws (``numpy.random.default_rng((seed, k))``), the case where the bright levels hold no
flat patch.

    python benchmarks/noise_estimation.py [--data ../shared/data] [--set set12|kodak-valid] [--sigmas 0,5,15,25,50]
                                          [--8bit] [--photons 3,10,30,100,1000 [--read-noise 0,0.01,0.03]]
                                          [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, IMAGE_SETS, held_out_images, to_8bit  # noqa: E402

from xmodal.imageio import read_image  # noqa: E402
from xmodal.noise import estimate_photon_noise, estimate_poisson_gaussian, estimate_sigma  # noqa: E402


def spots(rng: np.random.Generator, size: int = 256, count: int = 40) -> np.ndarray:
    """``(1, size, size)`` sparse fluorescence in [0, 1]: ``count`` Gaussian spots (sigma 2.5 px) reaching 1 on a
    background of 0.05."""
    yy, xx = np.mgrid[0:size, 0:size]
    image = np.full((size, size), 0.05)
    for cy, cx in rng.integers(8, size - 8, size=(count, 2)):
        image += 0.95 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.5 ** 2))
    return np.clip(image, 0, 1)[None]


def skimage_sigma(image: np.ndarray) -> np.ndarray:
    """scikit-image's estimate, channel by channel (``(C, H, W)`` -> ``(C,)``)."""
    from skimage.restoration import estimate_sigma as wavelet_sigma

    return np.array([wavelet_sigma(plane) for plane in image])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder (default ../shared/data)")
    p.add_argument("--set", choices=sorted(IMAGE_SETS) + ["spots"], default="set12",
                   help="held-out images, or 'spots': synthetic sparse fluorescence (with --photons)")
    p.add_argument("--sigmas", default="0,5,15,25,50", help="noise standard deviations on the 0-255 scale")
    p.add_argument("--8bit", dest="eight_bit", action="store_true",
                   help="clip and round the noisy images to 8 bits, as noisy files are")
    p.add_argument("--photons", default=None, help="photon counts at full scale: measure estimate_photon_noise")
    p.add_argument("--read-noise", default=None,
                   help="with --photons: read-noise standard deviations (fractions of full scale): measure "
                        "estimate_poisson_gaussian")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the per-image estimates here")
    args = p.parse_args()

    sigmas = [float(s) for s in args.sigmas.split(",")]
    if args.set == "spots":
        if not args.photons:
            p.error("--set spots goes with --photons")
        files, cleans = [], [spots(np.random.default_rng((args.seed, k))) for k in range(12)]
    else:
        files, channels = held_out_images(args.data, args.set)
        cleans = [read_image(f)[0][:channels].astype(np.float64) for f in files]
    if args.read_noise:
        if not args.photons:
            p.error("--read-noise goes with --photons")
        return poisson_gaussian([float(v) for v in args.photons.split(",")],
                                [float(v) for v in args.read_noise.split(",")], cleans, args)
    if args.photons:
        return photon_counts([float(v) for v in args.photons.split(",")], cleans, args)
    estimators = {"xmodal": estimate_sigma, "skimage": skimage_sigma}
    protocol = "clipped and rounded to 8 bits" if args.eight_bit else "in float, not clipped"
    print(f"{args.set}: {len(files)} images x {channels} channel(s); noise {protocol}; estimates on the 0-255 scale")
    print(f"{'sigma':>6} | {'estimator':<8} | {'mean':>7} | {'mean err':>8} | {'max |err|':>9} | {'s / image':>9}")
    results: dict[str, dict[str, list]] = {}
    for sigma in sigmas:
        noisy = []
        for i, clean in enumerate(cleans):
            x = clean + sigma / 255 * np.random.default_rng((args.seed, int(sigma * 100), i)).standard_normal(
                clean.shape)
            noisy.append(to_8bit(x) if args.eight_bit else x)
        for name, estimator in estimators.items():
            start = time.perf_counter()
            got = np.stack([estimator(x) * 255 for x in noisy])  # (images, channels)
            seconds = (time.perf_counter() - start) / len(noisy)
            err = got - sigma
            print(f"{sigma:6.1f} | {name:<8} | {got.mean():7.2f} | {err.mean():+8.2f} | {np.abs(err).max():9.2f} | "
                  f"{seconds:9.3f}")
            results.setdefault(f"{sigma:g}", {})[name] = got.tolist()
    if args.json:
        Path(args.json).write_text(json.dumps({"set": args.set, "eight_bit": args.eight_bit, "files":
                                               [f.name for f in files], "estimates": results}, indent=1))


def photon_counts(counts: list[float], cleans: list[np.ndarray], args: argparse.Namespace) -> None:
    """``--photons``: estimate_photon_noise on each image at each photon count."""
    import warnings

    print(f"{args.set}: {len(cleans)} images; photon noise in float; estimated photons at full scale")
    print(f"{'photons':>8} | {'min':>8} | {'max':>8} | {'mean ratio':>10} | {'warned':>6} | {'s / image':>9}")
    results = {}
    for count in counts:
        got, warned = [], 0
        start = time.perf_counter()
        for i, clean in enumerate(cleans):
            noisy = np.random.default_rng((args.seed, int(count * 100), i)).poisson(count * clean) / count
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                got.append(estimate_photon_noise(noisy))
            warned += bool(caught)
        seconds = (time.perf_counter() - start) / len(cleans)
        print(f"{count:8g} | {min(got):8.2f} | {max(got):8.2f} | {np.mean(got) / count:10.3f} | {warned:6d} | "
              f"{seconds:9.3f}")
        results[f"{count:g}"] = got
    if args.json:
        Path(args.json).write_text(json.dumps({"set": args.set, "photons": results}, indent=1))


def poisson_gaussian(counts: list[float], reads: list[float], cleans: list[np.ndarray],
                     args: argparse.Namespace) -> None:
    """``--photons`` with ``--read-noise``: estimate_poisson_gaussian on each image at each pair."""
    print(f"{args.set}: {len(cleans)} images; Poisson-Gaussian noise in float, not clipped; photons at full scale "
          "(ratio to the true count) and read noise (fraction of full scale) fitted together")
    print(f"{'photons':>8} | {'read':>6} | {'ratio min':>9} | {'max':>6} | {'mean':>6} | {'read min':>8} | "
          f"{'max':>6} | {'mean':>6} | {'failed':>6} | {'s / image':>9}")
    results = {}
    for count in counts:
        for read in reads:
            got, reasons = [], []
            start = time.perf_counter()
            for i, clean in enumerate(cleans):
                rng = np.random.default_rng((args.seed, int(count * 100), int(read * 1e5), i))
                noisy = rng.poisson(count * clean) / count + read * rng.standard_normal(clean.shape)
                try:
                    got.append(estimate_poisson_gaussian(noisy))
                except ValueError as e:
                    reasons.append(str(e))
            seconds = (time.perf_counter() - start) / len(cleans)
            if not got:
                print(f"{count:8g} | {read:6g} | every image failed: {reasons[0]}")
                continue
            ratio, est = np.array([g[0] for g in got]) / count, np.array([g[1] for g in got])
            print(f"{count:8g} | {read:6g} | {ratio.min():9.3f} | {ratio.max():6.3f} | {ratio.mean():6.3f} | "
                  f"{est.min():8.4f} | {est.max():6.4f} | {est.mean():6.4f} | {len(reasons):6d} | {seconds:9.3f}")
            results[f"{count:g},{read:g}"] = [list(g) for g in got]
    if args.json:
        Path(args.json).write_text(json.dumps({"set": args.set, "poisson_gaussian": results}, indent=1))


if __name__ == "__main__":
    main()
