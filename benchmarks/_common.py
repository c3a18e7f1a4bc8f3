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


def best_time(fn, repeats: int) -> float:
    """Shortest wall time of ``repeats`` calls of ``fn`` (warm up before calling this)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)
