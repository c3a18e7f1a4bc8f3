"""Shared fixtures: tiny configs and synthetic audio (no network, no ../shared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from xmodal.config import load_config

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "tiny.yaml"


@pytest.fixture(autouse=True)
def _one_thread():
    """Small inputs: one thread is faster and leaves the other core alone."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """A run directory holding an untrained model of the tiny recipe (config.yaml + model.safetensors)."""
    from xmodal.checkpoint import save_weights
    from xmodal.config import dump_config
    from xmodal.modalities import modality_io
    from xmodal.models import build_model

    d = tmp_path_factory.mktemp("run")
    cfg = load_config(TINY)
    torch.manual_seed(0)
    save_weights(build_model(cfg.model, {"speech": modality_io("speech", cfg)}), d / "model.safetensors", cfg)
    dump_config(cfg, d / "config.yaml")
    return d


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    """A small synthetic clean/ + noise/ corpus written once per test session."""
    from xmodal.data.synthetic import make_demo_corpus

    return make_demo_corpus(tmp_path_factory.mktemp("demo"), n_clean=8, n_noise=4, seed=1)


@pytest.fixture
def tiny_config(tmp_path, demo_corpus):
    """The tiny recipe on the session's demo corpus, run directory inside ``tmp_path``."""
    clean, noise = demo_corpus
    return load_config(TINY, [f"train.run_dir={tmp_path / 'run'}", f"data.clean_dir=[{clean}]",
                              f"data.noise_dir=[{noise}]", "data.valid_fraction=0.25"])


def chirp(seconds: float, sample_rate: int, f0: float = 200.0, f1: float = 3000.0, amp: float = 0.3) -> np.ndarray:
    """``(T,)`` float32 linear chirp."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (amp * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * seconds)))).astype(np.float32)


@pytest.fixture
def python_sigterm():
    """SIGTERM raising in Python while the test runs (a test whose code under test does not catch it then fails
    instead of killing pytest), given back after; yields the test's handler."""
    import signal

    def terminated(signum, frame):
        raise SystemExit("SIGTERM reached the test's handler")

    previous = signal.signal(signal.SIGTERM, terminated)
    yield terminated
    signal.signal(signal.SIGTERM, previous)
