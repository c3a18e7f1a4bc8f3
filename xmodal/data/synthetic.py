"""A small speech-like demo corpus the library generates itself, so recipes run on a fresh machine with no data.

``python -m xmodal.data.synthetic OUT_DIR [--kind speech|image|stack|video]`` writes noisy/clean demo pairs to try the
denoise and evaluate commands: speech-like WAVs, 8-bit PNG images (gray and colour), a 16-bit multi-band TIFF stack, or
video clips (folders of 8-bit PNG frames of a synthetic scene under a panning camera).

Clean "speech": voiced syllables (harmonic source with a wandering f0, shaped by two or three formants, syllable
envelopes) and unvoiced fricative bursts, separated by pauses. Noise: white, pink, brown, mains hum, synthetic babble,
impulsive clicks. It is not speech; it exercises the whole pipeline and lets a model learn something real (harmonic
structure vs broadband or tonal noise). Deterministic for a given seed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["main", "make_demo_corpus", "make_demo_image_pairs", "make_demo_images", "make_demo_pairs",
           "make_demo_stack", "make_demo_stack_pair", "synth_image", "synth_noise", "synth_speech", "synth_stack"]

_VOWELS = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410),
           (440, 1020, 2240), (660, 1720, 2410), (490, 1350, 1690)]  # (F1, F2, F3) Hz, Peterson & Barney


def _formant_filter(x: np.ndarray, formants: tuple[int, ...], sample_rate: int) -> np.ndarray:
    from scipy.signal import lfilter

    y = np.zeros_like(x)
    for i, f in enumerate(formants):
        if f >= sample_rate / 2:
            continue
        bw = 80 + 40 * i
        r = np.exp(-np.pi * bw / sample_rate)
        theta = 2 * np.pi * f / sample_rate
        a = [1.0, -2 * r * np.cos(theta), r * r]
        y += lfilter([1 - r], a, x) / (i + 1)
    return y


def synth_speech(seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """``(T,)`` float32 speech-like signal, peak about 0.5."""
    n = int(seconds * sample_rate)
    out = np.zeros(n)
    f0_base = rng.uniform(90, 250)
    pos = int(rng.uniform(0.05, 0.2) * sample_rate)
    while pos < n:
        dur = int(rng.uniform(0.08, 0.3) * sample_rate)
        end = min(n, pos + dur)
        m = end - pos
        t = np.arange(m) / sample_rate
        if rng.random() < 0.8:  # voiced syllable
            f0 = f0_base * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(1, 4) * t + rng.uniform(0, 6.28)))
            phase = 2 * np.pi * np.cumsum(f0) / sample_rate
            src = sum(np.sin(k * phase) / k for k in range(1, int(sample_rate / 2 / f0.max())))
            seg = _formant_filter(src, _VOWELS[rng.integers(len(_VOWELS))], sample_rate)
        else:  # fricative
            seg = _formant_filter(rng.standard_normal(m), (int(rng.uniform(3000, 6000)),), sample_rate)
        env = np.sin(np.pi * np.arange(m) / m) ** 2
        out[pos:end] += seg * env * rng.uniform(0.3, 1.0)
        pos = end + int(rng.exponential(0.08) * sample_rate)
    out /= np.abs(out).max() + 1e-9
    return (0.5 * out).astype(np.float32)


def synth_noise(kind: str, seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """``(T,)`` float32 noise of ``kind`` (white, pink, brown, hum, babble, clicks), peak about 0.5."""
    n = int(seconds * sample_rate)
    if kind in ("white", "pink", "brown"):
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.maximum(np.fft.rfftfreq(n, 1 / sample_rate), 20.0)
        spec *= {"white": 1.0, "pink": f ** -0.5, "brown": f ** -1.0}[kind]
        x = np.fft.irfft(spec, n)
    elif kind == "hum":
        t = np.arange(n) / sample_rate
        f = rng.choice([50.0, 60.0])
        x = sum(np.sin(2 * np.pi * f * k * t + rng.uniform(0, 6.28)) / k for k in range(1, 12))
        x = x + 0.05 * rng.standard_normal(n)
    elif kind == "babble":
        x = sum(synth_speech(seconds, sample_rate, rng).astype(np.float64) for _ in range(6))
    elif kind == "clicks":
        x = 0.02 * rng.standard_normal(n)
        for p in rng.integers(0, n - 200, size=max(1, int(seconds * 6))):
            x[p:p + 200] += rng.standard_normal(200) * np.exp(-np.arange(200) / 30)
    else:
        raise ValueError(f"unknown noise kind {kind!r} (white, pink, brown, hum, babble, clicks)")
    x = np.asarray(x, dtype=np.float64)
    return (0.5 * x / (np.abs(x).max() + 1e-9)).astype(np.float32)


def make_demo_corpus(root: str | os.PathLike, sample_rate: int = 16000, n_clean: int = 24, n_noise: int = 12,
                     seed: int = 0) -> tuple[Path, Path]:
    """Write ``root/clean/*.wav`` and ``root/noise/*.wav`` (16-bit) unless they are already there.

    Returns:
        ``(clean_dir, noise_dir)``.
    """
    from xmodal.io import write_audio

    root = Path(root)
    clean_dir, noise_dir = root / "clean", root / "noise"
    done = root / ".complete"
    if done.exists():
        return clean_dir, noise_dir
    clean_dir.mkdir(parents=True, exist_ok=True)
    noise_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n_clean):
        wave = synth_speech(rng.uniform(2.0, 4.0), sample_rate, rng)
        write_audio(clean_dir / f"demo_speech_{i:03d}.wav", wave, sample_rate, "PCM_16")
    kinds = ["white", "pink", "brown", "hum", "babble", "clicks"]
    for i in range(n_noise):
        wave = synth_noise(kinds[i % len(kinds)], 6.0, sample_rate, rng)
        write_audio(noise_dir / f"demo_noise_{kinds[i % len(kinds)]}_{i:03d}.wav", wave, sample_rate, "PCM_16")
    done.write_text("xmodal demo corpus (synthetic, not real speech)\n")
    return clean_dir, noise_dir


def make_demo_pairs(root: str | os.PathLike, n_pairs: int = 3, snr_db: float = 5.0, sample_rate: int = 16000,
                    seed: int = 0) -> tuple[Path, Path]:
    """Write ``root/clean/demo_NN.wav`` and ``root/noisy/demo_NN.wav`` (speech-like signal + noise at ``snr_db``).

    The last pair is stereo at 44.1 kHz (to show rate and channel handling); the others are mono at
    ``sample_rate``. Returns ``(clean_dir, noisy_dir)``.
    """
    from xmodal.data.speech import mix_at_snr
    from xmodal.io import write_audio

    root = Path(root)
    clean_dir, noisy_dir = root / "clean", root / "noisy"
    clean_dir.mkdir(parents=True, exist_ok=True)
    noisy_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    kinds = ["pink", "babble", "hum", "white", "clicks", "brown"]
    for i in range(n_pairs):
        stereo = i == n_pairs - 1 and n_pairs > 1
        sr = 44100 if stereo else sample_rate
        channels = 2 if stereo else 1
        clean = np.stack([synth_speech(4.0, sr, np.random.default_rng((seed, i)))] * channels)  # (C, T)
        clean[1:] *= 0.6  # a stereo image: right channel quieter
        noise = np.stack([synth_noise(kinds[i % len(kinds)], 4.0, sr, rng) for _ in range(channels)])
        noisy = mix_at_snr(clean, noise, snr_db)
        peak = max(1.0, float(np.abs(noisy).max()) / 0.99)
        write_audio(clean_dir / f"demo_{i:02d}.wav", clean / peak, sr, "PCM_16")
        write_audio(noisy_dir / f"demo_{i:02d}.wav", noisy / peak, sr, "PCM_16")
    return clean_dir, noisy_dir


def _smooth_field(H: int, W: int, rng: np.random.Generator, scale: float) -> np.ndarray:
    """A smooth random field in [0, 1]: white noise low-passed in the Fourier domain (Gaussian, ``scale`` pixels)."""
    spec = np.fft.rfft2(rng.standard_normal((H, W)))
    fy = np.fft.fftfreq(H)[:, None]
    fx = np.fft.rfftfreq(W)[None, :]
    field = np.fft.irfft2(spec * np.exp(-2 * (np.pi * scale) ** 2 * (fx ** 2 + fy ** 2)), s=(H, W))
    field -= field.min()
    return field / max(field.max(), 1e-12)


def synth_image(H: int, W: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """A ``(channels, H, W)`` image in [0, 1] with edges, flat regions, gradients and texture: random rectangles and
    discs of random colours over a smooth background, plus a striped texture patch. Not a photograph."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    image = np.stack([_smooth_field(H, W, rng, max(H, W) / 4) for _ in range(channels)]) * 0.5 + 0.25
    for _ in range(int(rng.integers(4, 9))):
        colour = rng.uniform(0, 1, (channels, 1, 1))
        if rng.random() < 0.5:
            y0, x0 = rng.integers(0, H), rng.integers(0, W)
            mask = (yy >= y0) & (yy < y0 + rng.integers(H // 8, H // 2)) & (xx >= x0) & \
                   (xx < x0 + rng.integers(W // 8, W // 2))
        else:
            cy, cx, r = rng.uniform(0, H), rng.uniform(0, W), rng.uniform(min(H, W) / 12, min(H, W) / 4)
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        image = np.where(mask[None], colour, image)
    period, angle = rng.uniform(3, 9), rng.uniform(0, np.pi)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    y0, x0 = int(rng.integers(0, H // 2)), int(rng.integers(0, W // 2))
    image[:, y0:y0 + H // 3, x0:x0 + W // 3] = 0.2 + 0.6 * stripes[None, y0:y0 + H // 3, x0:x0 + W // 3]
    return np.clip(image, 0, 1).astype(np.float32)


def synth_stack(bands: int, H: int, W: int, rng: np.random.Generator, materials: int = 4) -> np.ndarray:
    """A ``(bands, H, W)`` stack in [0, 1]: smooth abundance maps of a few materials (soft partition of the scene)
    times smooth spectral signatures, the linear mixing model of remote sensing. Not a real scene."""
    abundance = np.stack([_smooth_field(H, W, rng, min(H, W) / 10) for _ in range(materials)]) ** 3
    abundance /= abundance.sum(axis=0, keepdims=True) + 1e-12  # (M, H, W), sums to 1
    t = np.linspace(0, 1, bands)
    signatures = np.stack([0.15 + 0.7 * _smooth_field(1, 64, rng, 8)[0, np.linspace(0, 63, bands).astype(int)]
                           * (0.6 + 0.4 * np.cos(np.pi * t * rng.uniform(0.5, 2))) ** 2 for _ in range(materials)])
    stack = np.tensordot(signatures.T, abundance, axes=1)  # (S, M) x (M, H, W) -> (S, H, W)
    return np.clip(stack, 0, 1).astype(np.float32)


def make_demo_images(root: str | os.PathLike, n: int = 24, size: int = 96, channels: int = 1,
                     seed: int = 0) -> Path:
    """Write ``n`` synthetic 8-bit PNG images (``demo_00.png``...) to ``root`` (kept if already there)."""
    from xmodal.imageio import write_image

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng((seed, 2, channels))
    for i in range(n):
        image = synth_image(size, size, channels, rng)
        path = root / f"demo_{i:02d}.png"
        if not path.exists():
            write_image(path, image, "uint8")
    return root


def make_demo_stack(root: str | os.PathLike, bands: int = 8, size: int = 128, seed: int = 0) -> Path:
    """Write a synthetic band stack as a folder of 16-bit single-band TIFFs (``band_01.tif``...) under ``root``."""
    from xmodal.imageio import write_image

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stack = synth_stack(bands, size, size, np.random.default_rng((seed, 3)))
    for b in range(bands):
        path = root / f"band_{b + 1:02d}.tif"
        if not path.exists():
            write_image(path, stack[b:b + 1], "uint16")
    return root


def make_demo_image_pairs(root: str | os.PathLike, n_pairs: int = 3, sigma: float = 25.0, size: int = 128,
                          seed: int = 0) -> tuple[Path, Path]:
    """Write ``n_pairs`` synthetic 8-bit PNG pairs (gray and colour alternately) to ``root/clean`` and ``root/noisy``
    (Gaussian noise of ``sigma`` on the 0-255 scale, then rounded to 8 bits, as a camera file would be)."""
    from xmodal.imageio import write_image

    root = Path(root)
    clean_dir, noisy_dir = root / "clean", root / "noisy"
    clean_dir.mkdir(parents=True, exist_ok=True)
    noisy_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng((seed, 4))
    for i in range(n_pairs):
        channels = 1 if i % 2 == 0 else 3
        clean = synth_image(size, size + 32, channels, rng)
        noisy = clean + sigma / 255.0 * rng.standard_normal(clean.shape).astype(np.float32)
        write_image(clean_dir / f"demo_{i:02d}.png", clean, "uint8")
        write_image(noisy_dir / f"demo_{i:02d}.png", noisy, "uint8")
    return clean_dir, noisy_dir


def make_demo_stack_pair(root: str | os.PathLike, bands: int = 8, size: int = 128, sigma: float = 0.05,
                         seed: int = 0) -> tuple[Path, Path]:
    """Write a synthetic stack as 16-bit multi-band TIFFs ``root/stack_clean.tif`` and ``root/stack_noisy.tif``
    (Gaussian noise of ``sigma`` times each band's min-max range: the ``band_minmax`` full scale)."""
    import tifffile

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng((seed, 5))
    clean = synth_stack(bands, size, size, rng)
    span = (clean.max(axis=(1, 2)) - clean.min(axis=(1, 2)))[:, None, None]  # each band's own full scale
    noisy = clean + sigma * span * rng.standard_normal(clean.shape).astype(np.float32)
    paths = root / "stack_clean.tif", root / "stack_noisy.tif"
    for path, stack in zip(paths, (clean, noisy)):
        tifffile.imwrite(path, np.round(np.clip(stack, 0, 1) * 65535).astype(np.uint16), photometric="minisblack",
                         planarconfig="separate")
    return paths


def make_demo_clip_pairs(root: str | os.PathLike, n_pairs: int = 2, sigma: float = 25.0, frames: int = 8,
                         size: int = 128, seed: int = 0) -> tuple[Path, Path]:
    """Write ``n_pairs`` synthetic gray clips as folders of 8-bit PNG frames, ``root/clean/clip_NN/`` and
    ``root/noisy/clip_NN/``: a synthetic scene filmed along a random camera path (up to 3 px/frame), Gaussian noise of
    ``sigma`` (0-255 scale) drawn independently for every frame, then rounded to 8 bits."""
    from xmodal.data.video import still_clip
    from xmodal.videoio import ClipInfo, write_clip

    root = Path(root)
    rng = np.random.default_rng((seed, 6))
    info = ClipInfo("frames", (frames, 1, size, size), "uint8")
    for i in range(n_pairs):
        scene = synth_image(size + 3 * frames + 4, size + 32 + 3 * frames + 4, 1, rng)
        clean, _ = still_clip(scene, frames, 3, 1, (seed, 6, i))
        clean = clean[:, :, :size, :size + 32]
        noisy = clean + sigma / 255.0 * rng.standard_normal(clean.shape).astype(np.float32)
        for folder, clip in (("clean", clean), ("noisy", noisy)):
            write_clip(root / folder / f"clip_{i:02d}", clip, info, overwrite=True)
    return root / "clean", root / "noisy"


def main(argv: list[str] | None = None) -> int:
    """``python -m xmodal.data.synthetic OUT_DIR [--kind speech|image|stack|video] [--pairs N] [--snr DB]``: write
    demo noisy/clean pairs."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m xmodal.data.synthetic",
                                description="Write synthetic noisy/clean demo pairs (speech-like WAVs, PNG images, "
                                            "a band stack or clips of PNG frames; not real recordings, photographs "
                                            "or films).")
    p.add_argument("out_dir")
    p.add_argument("--kind", choices=["speech", "image", "stack", "video"], default="speech")
    p.add_argument("--pairs", type=int, default=3, help="speech/image/video: number of pairs (default 3)")
    p.add_argument("--snr", type=float, default=5.0, help="speech: SNR of the noisy files in dB (default 5)")
    args = p.parse_args(argv)
    if args.pairs < 1:
        p.error(f"--pairs must be at least 1, got {args.pairs}")
    if args.kind == "stack":
        clean, noisy = make_demo_stack_pair(args.out_dir)
        print(f"wrote a demo stack pair (8 bands, 16-bit TIFF): {noisy} and {clean}")
        return 0
    if args.kind == "video":
        clean, noisy = make_demo_clip_pairs(args.out_dir, args.pairs)
        print(f"wrote {args.pairs} demo clip pairs (folders of 8 PNG frames): {noisy} and {clean}")
        return 0
    make = make_demo_pairs if args.kind == "speech" else make_demo_image_pairs
    clean_dir, noisy_dir = make(args.out_dir, args.pairs, args.snr) if args.kind == "speech" else \
        make(args.out_dir, args.pairs)
    print(f"wrote {args.pairs} demo {args.kind} pairs: {noisy_dir} and {clean_dir}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
