"""Video denoising on Set12 (gray) or kodim19-24 (colour) clips: the video model beside the image model frame by frame,
same noise, same run.

There is no clean video in the project's data, so the clips are made as the models' validation clips are: each
held-out image (``--set set12``: Set12, gray, default models ``video`` and ``gray``; ``--set kodak-valid``: Kodak24
kodim19-24, colour, default models ``video_color`` and ``color``; never seen in training, SPLITS.md) is filmed along a
fixed camera path (a straight integer translation of up to ``--motion`` pixels per frame on each axis, plus up to
``--jitter`` pixels of shake; ``xmodal.data.video.still_clip``, seeded by the image index), ``--frames`` frames, as
large as the path allows. The path is drawn for each motion
setting: 0 is a static camera, 3 the training range, 6 twice as fast as anything seen in training.

Float protocol (as ``image_quality.py``): noise ``sigma/255 * N(0, 1)`` drawn in float64 from
``numpy.random.default_rng((seed, image index))`` independently for every frame, never clipped; every output clipped
to [0, 1] and rounded to 8 bits before scoring. Metrics (``xmodal.metrics.video_metrics``): PSNR of the clip's mean
squared error, SSIM averaged over frames, temporal PSNR (the PSNR of the frame-to-frame changes: flicker).

    python benchmarks/video_quality.py [--data ../shared/data] [--set set12|kodak-valid] [--sigma 25] [--frames 10]
                                       [--motions 0,3,6] [--model video] [--image-model gray] [--also MODEL ...]
                                       [--align-range N] [--objects] [--camera SETTING] [--h264-crf N] [--bm3d]
                                       [--auto-sigma] [--poisson P]
                                       [--json out.json]

``--camera bright|indoor|dim`` replaces the white noise by camera-pipeline noise (``xmodal.noise.camera``, the settings
of ``image_realnoise.py``): one camera films each clip (its white balance, mosaic phase and JPEG grid drawn once from
``(seed, image index)``), shot and read noise drawn independently in every frame, every frame JPEG-coded (an intra-only
stand-in for a video codec); the noisy frames are 8-bit. For phone video: ``--set kodak-valid --camera indoor
--image-model photo --also video_color_real``.

``--h264-crf N`` codes each noisy clip as one H.264 video (``xmodal.noise.h264``: libx264 at CRF ``N``, preset
``--h264-preset``, default ``medium``, 4:2:0 BT.709) as a phone or a video site stores it; with ``--camera`` the frames
are then not JPEG-coded.

``--poisson P`` replaces the white noise by photon noise ``Poisson(P * clean) / P`` (P photons at full scale, drawn
independently in every frame, in float), and every model is given ``poisson=P`` (the Anscombe transform and its
exact unbiased inverse); the video model is also scored without it (the noise taken as it is).

``--objects`` adds local motion: an elliptic object cut from another image of the set moves over each clip on its own
path (what a global translation cannot align), the video model's weak point. ``--also`` scores more video models on
the same clips (e.g. ``--set kodak-valid --also video_gray``: the gray video model channel by channel).

Also printed: the video model with its motion compensation turned off (the same network given unaligned
neighbours), and the time per 512 x 512 frame.
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
from _common import (CAMERA_SETTINGS, DEFAULT_DATA, IMAGE_SETS, best_time, held_out_images,  # noqa: E402
                     to_8bit, with_channels)

from xmodal.imageio import read_image  # noqa: E402
from xmodal.metrics import MetricAccumulator, video_metrics  # noqa: E402
from xmodal.noise import camera, h264  # noqa: E402


DEFAULT_MODELS = {"set12": ("video", "gray"), "kodak-valid": ("video_color", "color")}  # video, image model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder (default ../shared/data)")
    p.add_argument("--set", choices=sorted(IMAGE_SETS), default="set12",
                   help="held-out stills the clips are made of: set12 (gray) or kodak-valid (kodim19-24, colour)")
    p.add_argument("--sigma", type=float, default=25.0, help="noise standard deviation on the 0-255 scale")
    p.add_argument("--frames", type=int, default=10, help="frames per clip")
    p.add_argument("--motions", default="0,3,6", help="camera speeds (pixels per frame) to test, comma-separated")
    p.add_argument("--jitter", type=int, default=1, help="camera shake in pixels (0 for a static camera)")
    p.add_argument("--model", default=None, help="video model: run directory or bundled name (default: video / "
                                                 "video_color by set)")
    p.add_argument("--image-model", default=None, help="image model applied frame by frame (default: gray / color "
                                                       "by set)")
    p.add_argument("--also", action="append", default=[], metavar="MODEL",
                   help="another video model to score on the same clips (repeatable)")
    p.add_argument("--objects", action="store_true",
                   help="add local motion: an elliptic object (a third of the frame, cut from another image of the "
                        "set) moving on its own path over every clip")
    p.add_argument("--object-speed", type=int, default=4, help="the object's largest speed, px/frame per axis")
    p.add_argument("--camera", choices=sorted(CAMERA_SETTINGS), default=None,
                   help="camera-pipeline noise at this setting instead of white Gaussian noise (--sigma unused)")
    p.add_argument("--h264-crf", type=int, default=None,
                   help="code each noisy clip with H.264 at this CRF (with --camera: instead of JPEG frames)")
    p.add_argument("--h264-preset", default="medium", help="libx264 preset of --h264-crf (default medium)")
    p.add_argument("--bm3d", action="store_true", help="also BM3D frame by frame (slow: seconds per frame)")
    p.add_argument("--auto-sigma", action="store_true",
                   help="give every model sigma='auto', as the command line does: noise above their training range "
                        "(50/255) denoised at a lower contrast (each frame on its own for the image model)")
    p.add_argument("--align-range", type=int, default=None, help="video model's motion search range in pixels "
                                                                 "(default: its config's)")
    p.add_argument("--poisson", type=float, default=None, metavar="P",
                   help="photon noise of P photons at full scale instead of white noise; models given poisson=P")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--json", default=None, help="write per-clip and mean results here")
    args = p.parse_args()

    import xmodal
    from xmodal.data.video import add_moving_object, still_clip

    default_video, default_image = DEFAULT_MODELS[args.set]
    args.model, args.image_model = args.model or default_video, args.image_model or default_image
    files, channels = held_out_images(args.data, args.set)
    if args.threads:
        torch.set_num_threads(args.threads)
    motions = [int(m) for m in args.motions.split(",")]
    video = xmodal.load(args.model, precision=args.precision)
    if args.align_range is not None:
        video.align_range = args.align_range
    image = xmodal.load(args.image_model, precision=args.precision)
    others = {m: xmodal.load(m, precision=args.precision) for m in args.also}
    if args.poisson is not None and (args.camera or args.h264_crf is not None or args.bm3d or args.auto_sigma):
        p.error("--poisson goes without --camera, --h264-crf, --bm3d and --auto-sigma")
    given = {"sigma": "auto"} if args.auto_sigma else {}  # what every model is told of the noise level
    if args.poisson is not None:
        given = {"poisson": args.poisson}
    sigma = args.sigma / 255.0
    methods = ["noisy", f"image model ({args.image_model}) frame by frame", f"video model ({args.model})",
               "video model, motion compensation off", *(f"video model ({m})" for m in others)]
    if args.poisson is not None:
        methods.append(f"video model ({args.model}) without --poisson")
    if args.bm3d:
        import bm3d

        methods.append("BM3D frame by frame")
    results: dict = {"sigma": None if args.camera or args.poisson else args.sigma, "poisson": args.poisson,
                     "camera": args.camera, "frames": args.frames,
                     "h264_crf": args.h264_crf, "h264_preset": args.h264_preset,
                     "jitter": args.jitter, "seed": args.seed,
                     "objects": args.objects, "object_speed": args.object_speed,
                     "precision": args.precision, "motions": {}}
    noise = (f"camera noise '{args.camera}' (peak {CAMERA_SETTINGS[args.camera][0]:g}, read "
             f"{CAMERA_SETTINGS[args.camera][1]:g}"
             + (f", JPEG q{CAMERA_SETTINGS[args.camera][2]})" if args.h264_crf is None else ")") if args.camera
             else f"photon noise, {args.poisson:g} photons at full scale" if args.poisson is not None
             else f"sigma {args.sigma:g}")
    if args.h264_crf is not None:
        noise += f", H.264 CRF {args.h264_crf} ({args.h264_preset})"
    print(f"{args.set} clips, {args.frames} frames, {noise}, jitter {args.jitter} px"
          + (f", a moving object (up to {args.object_speed} px/frame)" if args.objects else "")
          + f"; video model {video!r}; image model {args.image_model}" + ("; sigma='auto'" if args.auto_sigma else ""))
    for motion in motions:
        accs = {m: MetricAccumulator() for m in methods}
        per_clip = []
        for k, f in enumerate(files):
            still, _ = read_image(f)
            still = with_channels(still, channels)
            clean, _ = still_clip(still, args.frames, motion, args.jitter, (args.seed, 104729, k))  # (T, 1, h, w)
            if args.objects:
                other, _ = read_image(files[(k + 5) % len(files)])
                other = with_channels(other, channels)
                side = min(clean.shape[-2:]) // 3
                i, j = (other.shape[-2] - side) // 2, (other.shape[-1] - side) // 2
                clean = add_moving_object(clean, other[:, i:i + side, j:j + side], args.object_speed,
                                          np.random.default_rng((args.seed, 7, k)))
            clean = clean.astype(np.float64)
            if args.camera:
                peak, read, quality = CAMERA_SETTINGS[args.camera]
                gen = torch.Generator().manual_seed(int(np.random.default_rng((args.seed, k)).integers(2 ** 62)))
                noisy = camera(torch.from_numpy(clean.astype(np.float32)), peak, read, gen,
                               jpeg_quality=(quality, quality) if args.h264_crf is None else None,
                               frames=len(clean)).numpy()
            elif args.poisson is not None:
                rng = np.random.default_rng((args.seed, k))
                noisy = (rng.poisson(args.poisson * clean) / args.poisson).astype(np.float32)
            else:
                rng = np.random.default_rng((args.seed, k))
                noisy = (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32)
            if args.h264_crf is not None:
                noisy = h264(torch.from_numpy(noisy), args.h264_crf, frames=len(noisy), preset=args.h264_preset).numpy()
            outs = {methods[0]: noisy,
                    methods[1]: to_8bit(np.stack([image.denoise(frame, **given) for frame in noisy])),
                    methods[2]: to_8bit(video.denoise(noisy, **given))}
            align = video.align_range
            video.align_range = 0  # the same network on unaligned neighbours: what the alignment is worth
            outs[methods[3]] = to_8bit(video.denoise(noisy, **given))
            video.align_range = align
            for m, den in others.items():
                outs[f"video model ({m})"] = to_8bit(den.denoise(noisy, **given))
            if args.poisson is not None:
                outs[f"video model ({args.model}) without --poisson"] = to_8bit(video.denoise(noisy))
            if args.bm3d:
                outs["BM3D frame by frame"] = to_8bit(np.stack(
                    [bm3d.bm3d(frame[0], sigma, profile="np")[None] if channels == 1 else
                     np.asarray(bm3d.bm3d_rgb(frame.transpose(1, 2, 0), sigma_psd=sigma)).transpose(2, 0, 1)
                     for frame in noisy]))
            row = {"name": f.stem, "shape": list(clean.shape)}
            for m, out in outs.items():
                row[m] = video_metrics(accs[m], "x", f.stem, clean, out)
            per_clip.append(row)
        means = {m: accs[m].means()["x"] for m in methods}
        results["motions"][str(motion)] = {"mean": means, "clips": per_clip}
        print(f"\ncamera speed up to {motion} px/frame:")
        print(f"{'':52s}{'PSNR':>9s}{'SSIM':>9s}{'tPSNR':>9s}")
        for m in methods:
            v = means[m]
            print(f"{m:52s}{v['psnr']:9.2f}{v['ssim']:9.4f}{v['tpsnr']:9.2f}")
        if motion == motions[0]:
            print("per clip PSNR (image model -> video model): " + ", ".join(
                f"{r['name']} {r[methods[1]]['psnr']:.2f}->{r[methods[2]]['psnr']:.2f}" for r in per_clip))

    x = np.random.default_rng(0).random((5, channels, 512, 512), dtype=np.float32)
    video.denoise(x[:2])
    image.denoise(x[0])
    t_video = best_time(lambda: video.denoise(x), 2) / 5
    t_image = best_time(lambda: image.denoise(x[0]), 3)
    from xmodal.align import estimate_shifts

    guides = torch.from_numpy(x[:2].mean(axis=1))
    t_align = best_time(lambda: estimate_shifts(guides[:1], guides[1:], video.align_range), 3)
    results["seconds_per_512_frame"] = {"video": t_video, "image": t_image, "align_one_pair": t_align}
    print(f"\nspeed, one 512 x 512 frame ({torch.get_num_threads()} threads, {args.precision}): video model "
          f"{t_video:.3f} s (of which motion estimation about {2 * t_align:.3f} s: two new frame pairs per frame), "
          f"image model {t_image:.3f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t0:.0f} s)")
