"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"


def bundled_speech_config(data_root: str | Path, overrides: list[str] = ()):
    """`recipes/speech_bundled.yaml` with its data folders under ``data_root`` (exits with a message if missing)."""
    from xmodal.config import load_config

    speech = Path(data_root) / "speech"
    if not speech.is_dir():
        print(f"error: {speech}: speech data folder not found (pass --data)", file=sys.stderr)
        raise SystemExit(2)
    return load_config(REPO / "recipes" / "speech_bundled.yaml", [
        f"data.clean_dir=[{speech / 'clean'}, {speech / 'clean_extra'}]",
        f"data.noise_dir=[{speech / 'noise'}, {speech / 'noise_extra'}]", *overrides])


CAMERA_SETTINGS = {  # camera-pipeline noise (xmodal.noise.camera), a bright scene to a dim one: photons at full
    "bright": (1000.0, 0.002, 95),  # scale, read-noise standard deviation in linear light, JPEG quality
    "indoor": (200.0, 0.005, 90),
    "dim": (50.0, 0.01, 85),
}

IMAGE_SETS = {  # held-out images (SPLITS.md): folder under the data root, files (None: every .png), channels
    "set12": ("image/Set12", None, 1),
    "kodak-valid": ("image/Kodak24", [f"kodim{i:02d}.png" for i in range(19, 25)], 3),
}


def held_out_images(data_root: str | Path, name: str) -> tuple[list[Path], int]:
    """``(files, channels)`` of an ``IMAGE_SETS`` set under ``data_root`` (exits with a message if missing)."""
    folder, names, channels = IMAGE_SETS[name]
    root = Path(data_root) / folder
    if not root.is_dir():
        print(f"error: {root}: image folder not found (pass --data)", file=sys.stderr)
        raise SystemExit(2)
    return ([root / n for n in names] if names else sorted(root.glob("*.png"))), channels


def with_channels(image, channels: int):
    """``(C, H, W)`` -> ``(channels, H, W)``: the first channels, or a gray image replicated."""
    return image[:channels] if image.shape[0] >= channels else image.repeat(channels, axis=0)


def to_8bit(x):
    """Clip to [0, 1] and round to 8-bit levels (still float in [0, 1]): the float protocol's scored output."""
    return (x.clip(0.0, 1.0) * 255.0).round() / 255.0


def best_time(fn, repeats: int) -> float:
    """Shortest wall time of ``repeats`` calls of ``fn`` (warm up before calling this)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)
