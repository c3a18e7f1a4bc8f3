"""The bundled speech model ships inside the package: it loads offline, matches its card, and denoises."""

import numpy as np
import pytest

import xmodal
from xmodal.data.synthetic import synth_noise, synth_speech
from xmodal.metrics import si_sdr_score
from xmodal.pretrained import resolve_model


def test_bundled_model_loads_and_matches_its_card():
    folder = resolve_model("speech")
    assert (folder / "MODEL_CARD.md").is_file()
    den = xmodal.load()
    n = sum(p.numel() for p in den.model.parameters())
    assert f"{n:,}" in (folder / "MODEL_CARD.md").read_text()
    assert den.sample_rate == 16000 and den.config.model.widths == (8, 24, 48, 96, 128)


@pytest.mark.parametrize("sample_rate", [16000, 48000])
def test_bundled_model_removes_white_noise(sample_rate):
    rng = np.random.default_rng(0)
    clean = synth_speech(3.0, sample_rate, rng)
    noise = rng.standard_normal(clean.shape).astype(np.float32)
    noise *= np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2))  # 0 dB
    noisy = clean + noise
    out = xmodal.load().denoise(noisy, sample_rate)
    assert out.shape == noisy.shape and out.dtype == noisy.dtype
    # a speech model should remove most stationary white noise, even on this synthetic speech-like signal
    assert si_sdr_score(clean, out) > si_sdr_score(clean, noisy) + 5.0
