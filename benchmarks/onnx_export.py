"""PyTorch vs its ONNX export (fp32 and int8 weights) in ONNX Runtime: Set12 quality and CPU speed, same API.

Exports the gray image model and the speech model with ``xmodal.export.export_onnx`` (fp32, and int8 calibrated on
16 noisy training inputs per modality: Train400 crops, training-split speech mixtures) into a temporary folder
(``--keep DIR`` to keep them), then runs the three back-ends through the same denoiser classes (``xmodal.load`` of the
model, of ``.onnx`` and of ``.int8.onnx``):

- Set12 at sigma 25, float protocol (as ``benchmarks/image_quality.py``: noise in float64 from
  ``default_rng((seed, index))``, noisy not clipped, outputs clipped and rounded to 8 bits): mean PSNR / SSIM;
- time of one 512 x 512 image (Set12 ``08.png``), best of 3 after a warm-up;
- time of 10 s of 16 kHz audio through the speech model (real-time factor), best of 3 after a warm-up.

Speech quality of the exports: ``python benchmarks/speech_quality.py --model FILE.onnx`` (``xmodal.load`` takes them).

    python benchmarks/onnx_export.py [--data ../shared/data] [--threads 2] [--model gray] [--speech-model speech]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, best_time  # noqa: E402

from xmodal.imageio import read_image  # noqa: E402
from xmodal.metrics import psnr_score, ssim_score  # noqa: E402


def best_of(fn, n: int = 3) -> float:
    fn()  # warm-up
    return best_time(fn, n)


def calibration_files(data: Path, folder: Path, n: int) -> tuple[list[Path], list[Path]]:
    """``n`` noisy training inputs per modality for int8 calibration, never validation or test data: Train400 images
    (every 25th) with Gaussian noise of sigma drawn in [0, 50]/255 (saved as float .npy: unclipped), and 2-second
    training mixtures of the speech model's SPLITS.md training split (float wav)."""
    import soundfile as sf

    from _common import bundled_speech_config
    from xmodal.data import resolve_speech_data

    rng = np.random.default_rng(1)
    images = []
    for k, f in enumerate(sorted((data / "image" / "Train400").glob("*.png"))[::25][:n]):
        clean, _ = read_image(f)
        noisy = clean + rng.uniform(0, 50 / 255) * rng.standard_normal(clean.shape)
        images.append(folder / f"image_{k}.npy")
        np.save(images[-1], noisy.astype(np.float32))
    cfg = bundled_speech_config(data)
    train = resolve_speech_data(cfg.data, cfg.audio.sample_rate, "/nonexistent").train
    speech = []
    for k in range(n):
        noisy, _ = train[k * 37]
        speech.append(folder / f"speech_{k}.wav")
        sf.write(speech[-1], noisy.numpy().reshape(-1), cfg.audio.sample_rate, subtype="FLOAT")
    return images, speech


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder (default ../shared/data)")
    p.add_argument("--model", default="gray", help="image model: bundled name or run directory")
    p.add_argument("--speech-model", default="speech", help="speech model: bundled name or run directory")
    p.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    p.add_argument("--sigma", type=float, default=25.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calibration-items", type=int, default=16, help="int8 calibration inputs per modality")
    p.add_argument("--keep", default=None, metavar="DIR",
                   help="write the exports here (e.g. for benchmarks/speech_quality.py --model DIR/speech.int8.onnx)")
    args = p.parse_args()

    import xmodal
    from xmodal.export import export_onnx

    root = Path(args.data) / "image" / "Set12"
    if not root.is_dir():
        print(f"error: {root}: image folder not found (pass --data)", file=sys.stderr)
        raise SystemExit(2)
    torch.set_num_threads(args.threads)
    files = sorted(f for f in root.iterdir() if f.suffix == ".png")
    sigma = args.sigma / 255.0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.keep) if args.keep else Path(tmp)
        calib = Path(tmp) / "calibration"
        calib.mkdir()
        image_calib, speech_calib = calibration_files(Path(args.data), calib, args.calibration_items)
        img = export_onnx(args.model, out / "image.onnx", int8=True, calibration=image_calib, overwrite=True)
        sp = export_onnx(args.speech_model, out / "speech.onnx", int8=True, calibration=speech_calib,
                         overwrite=True)
        print(f"exported {args.model}: ONNX Runtime vs PyTorch max |difference| {img.max_abs_diff:.2e} (fp32), "
              f"{img.int8_max_abs_diff:.2e} (int8); {args.speech_model}: {sp.max_abs_diff:.2e}, "
              f"{sp.int8_max_abs_diff:.2e}")
        sizes = {"pytorch fp32": None, "onnx fp32": img.path.stat().st_size, "onnx int8": img.int8_path.stat().st_size}
        backends = {"pytorch fp32": (xmodal.load(args.model), xmodal.load(args.speech_model)),
                    "onnx fp32": (xmodal.load(img.path), xmodal.load(sp.path)),
                    "onnx int8": (xmodal.load(img.int8_path), xmodal.load(sp.int8_path))}
        rows = {}
        wave = (0.1 * np.random.default_rng(0).standard_normal(16000 * 10)).astype(np.float32)
        for name, (den, sden) in backends.items():
            psnrs, ssims = [], []
            big = None
            for k, f in enumerate(files):
                clean, _ = read_image(f)
                clean = clean.astype(np.float64)
                noisy = clean + sigma * np.random.default_rng((args.seed, k)).standard_normal(clean.shape)
                est = np.round(np.clip(den.denoise(noisy.astype(np.float32)), 0, 1) * 255.0) / 255.0
                psnrs.append(psnr_score(clean, est))
                ssims.append(ssim_score(clean, est))
                if f.stem == "08":
                    big = noisy.astype(np.float32)
            t_img = best_of(lambda: den.denoise(big))
            t_wav = best_of(lambda: sden.denoise(wave, 16000))
            rows[name] = (float(np.mean(psnrs)), float(np.mean(ssims)), t_img, t_wav / 10.0)
            print(f"{name:14s} Set12 {rows[name][0]:.2f} dB / {rows[name][1]:.4f}   512x512 {t_img:.3f} s   "
                  f"speech RTF {rows[name][3]:.4f}", flush=True)
    print(f"\nSet12, sigma {args.sigma:g}/255, float protocol, seed {args.seed}; {args.threads} threads; "
          f"{torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}")
    print(f"{'':14s}{'PSNR (dB)':>10s}{'SSIM':>8s}{'512x512 (s)':>13s}{'speech RTF':>12s}{'image file':>12s}")
    for name, (ps, ss, ti, rtf) in rows.items():
        size = f"{sizes[name] / 2**20:.1f} MiB" if sizes[name] else "-"
        print(f"{name:14s}{ps:10.2f}{ss:8.4f}{ti:13.3f}{rtf:12.4f}{size:>12s}")


if __name__ == "__main__":
    main()
