import numpy as np
import pytest
import torch

from tests.conftest import chirp
from xmodal.data.synthetic import synth_speech
from xmodal.io import resample
from xmodal.metrics import MetricAccumulator, pesq_score, si_sdr_score, speech_metrics, stoi_score


@pytest.fixture(scope="module")
def pair16():
    rng = np.random.default_rng(0)
    clean = synth_speech(3.0, 16000, rng)
    noisy = (clean + 0.05 * rng.standard_normal(clean.shape)).astype(np.float32)
    return clean, noisy


def test_pesq_matches_reference_package(pair16):
    from pesq import pesq

    clean, noisy = pair16
    assert pesq_score(clean, noisy, 16000) == pytest.approx(pesq(16000, clean.astype(float), noisy.astype(float), "wb"),
                                                            abs=1e-9)
    c8, n8 = (resample(x, 16000, 8000).numpy() for x in (clean, noisy))
    assert pesq_score(c8, n8, 8000) == pytest.approx(pesq(8000, c8.astype(float), n8.astype(float), "nb"), abs=1e-9)
    # other rates: resampled to 16 kHz, wide-band
    c44, n44 = (resample(x, 16000, 44100).numpy() for x in (clean, noisy))
    r16 = [resample(x.astype(np.float32), 44100, 16000).double().numpy() for x in (c44, n44)]
    assert pesq_score(c44, n44, 44100) == pytest.approx(pesq(16000, r16[0], r16[1], "wb"), abs=1e-9)
    assert pesq_score(clean, clean, 16000) > 4.4


def test_stoi_matches_reference_package(pair16):
    from pystoi import stoi

    clean, noisy = pair16
    assert stoi_score(clean, noisy, 16000) == pytest.approx(stoi(clean, noisy, 16000), abs=1e-9)
    assert stoi_score(torch.from_numpy(clean), torch.from_numpy(noisy), 16000, extended=True) == pytest.approx(
        stoi(clean, noisy, 16000, extended=True), abs=1e-9)


def test_si_sdr_score_known_value():
    ref = chirp(1.0, 16000)
    noise = np.random.default_rng(1).standard_normal(ref.shape)
    noise -= noise.mean()
    r = ref - ref.mean()
    noise -= (noise @ r) / (r @ r) * r
    noise *= np.linalg.norm(r) / np.linalg.norm(noise) / 10 ** (12.0 / 20)
    assert si_sdr_score(ref, ref + noise) == pytest.approx(12.0, abs=1e-3)


def test_failures_are_recorded_not_fatal(pair16):
    clean, noisy = pair16
    acc = MetricAccumulator()
    speech_metrics(acc, "noisy", "ok", clean, noisy, 16000)
    silent = np.zeros(16000, dtype=np.float32)
    scores = speech_metrics(acc, "noisy", "silent", silent, silent, 16000)
    speech_metrics(acc, "noisy", "short", clean[:100], noisy[:100], 16000)
    assert "pesq" not in scores and "si_sdr" not in scores
    assert acc.counts[("noisy", "pesq")] == 1
    failed = {(item, metric) for _, metric, item, _ in acc.failures}
    assert {("silent", "pesq"), ("silent", "si_sdr"), ("short", "pesq"), ("short", "stoi")} <= failed
    means = acc.means()["noisy"]
    assert means["pesq"] == pytest.approx(pesq_score(clean, noisy, 16000))


def test_metric_errors():
    with pytest.raises(ValueError, match=r"pesq: `ref` and `deg` must have the same length, got 10 and 11"):
        pesq_score(np.zeros(10), np.zeros(11), 16000)
    with pytest.raises(ValueError, match=r"Expected `ref` of shape \(T,\) or \(1, T\), got \(2, 10\)"):
        stoi_score(np.zeros((2, 10)), np.zeros((2, 10)), 16000)
    with pytest.raises(ValueError, match=r"si_sdr failed: the reference is silent"):
        si_sdr_score(np.zeros(100), np.ones(100))
    with pytest.raises(ValueError, match=r"unknown speech metric 'mos'"):
        speech_metrics(MetricAccumulator(), "x", "y", np.zeros(10), np.zeros(10), 16000, metrics=("mos",))
    with pytest.raises(ValueError, match=r"stoi: `ref` and `deg` must have the same length, got 10 and 12"):
        stoi_score(np.zeros(10), np.zeros(12), 16000)
    with pytest.raises(ValueError, match=r"si_sdr: `ref` and `deg` must have the same length"):
        si_sdr_score(np.zeros(10), np.zeros(12))
