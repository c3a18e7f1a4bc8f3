import math

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


def test_si_sdr_score_is_scale_invariant_at_any_level():
    rng = np.random.default_rng(5)
    ref = chirp(0.5, 16000).astype(np.float64)
    est = ref + 0.3 * rng.standard_normal(ref.shape)
    value = si_sdr_score(ref, est)
    for k in (1e-12, 1e-6, 1e3):  # the old fixed eps of 1e-8 moved the value at the two low levels
        assert si_sdr_score(ref, k * est) == pytest.approx(value, abs=1e-9)
        assert si_sdr_score(k * ref, est) == pytest.approx(value, abs=1e-9)
    r, e = ref - ref.mean(), est - est.mean()
    target = (e @ r) / (r @ r) * r
    assert value == pytest.approx(10 * np.log10((target @ target) / ((e - target) @ (e - target))), abs=1e-9)
    assert si_sdr_score(ref, 2 * ref) > 250  # exact copy: bounded by the relative guard, not inf


def test_si_sdr_score_raises_on_a_silent_estimate():
    ref = chirp(0.5, 16000)
    with pytest.raises(ValueError, match=r"si_sdr failed: the estimate is silent \(all zeros after removing its "
                                         r"mean; SI-SDR is -inf\)"):
        si_sdr_score(ref, np.zeros_like(ref))
    with pytest.raises(ValueError, match=r"si_sdr failed: the estimate is silent"):
        si_sdr_score(ref, np.full_like(ref, 0.25))  # a constant is silent once its mean is removed
    acc = MetricAccumulator()
    assert "si_sdr" not in speech_metrics(acc, "enhanced", "quiet", ref, np.zeros_like(ref), 16000, ("si_sdr",))
    assert [(m, item) for _, m, item, _ in acc.failures] == [("si_sdr", "quiet")]


def test_stoi_raises_on_a_silent_reference(pair16):
    _, noisy = pair16
    for extended in (False, True):
        with pytest.raises(ValueError, match=r"stoi failed: the reference is silent \(all zeros\)"):
            stoi_score(np.zeros_like(noisy), noisy, 16000, extended=extended)


def test_means_are_paired_over_rows():
    acc = MetricAccumulator()
    for item, noisy, enhanced in (("a", 1.0, 2.0), ("b", 3.0, None), ("c", 5.0, 7.0)):
        acc.add("noisy", "pesq", noisy, item)
        if enhanced is None:
            acc.fail("enhanced", "pesq", item, "pesq failed: a signal is all zeros")
        else:
            acc.add("enhanced", "pesq", enhanced, item)
        acc.add("noisy", "stoi", 0.5, item)
        acc.add("enhanced", "stoi", 0.75, item)
    means = acc.means()
    assert means["noisy"]["pesq"] == pytest.approx(3.0)  # (1 + 5) / 2: b failed in the enhanced row
    assert means["enhanced"]["pesq"] == pytest.approx(4.5)
    assert means["noisy"]["stoi"] == pytest.approx(0.5) and means["enhanced"]["stoi"] == pytest.approx(0.75)
    assert acc.mean_counts() == {"noisy": {"pesq": 2, "stoi": 3}, "enhanced": {"pesq": 2, "stoi": 3}}
    assert acc.counts[("noisy", "pesq")] == 3  # the totals are kept
    # a copy of sums / counts / failures (as the training validator makes of its noisy row) keeps the pairing
    copy = MetricAccumulator()
    copy.sums.update(acc.sums)
    copy.counts.update(acc.counts)
    copy.failures.extend(acc.failures)
    assert copy.means() == means
    # a metric failing in every row of an item, or every item of a row
    acc.fail("noisy", "estoi", "a", "too short")
    acc.add("enhanced", "estoi", 0.9, "a")
    assert math.isnan(acc.means()["noisy"]["estoi"]) and math.isnan(acc.means()["enhanced"]["estoi"])
    # values added without an item name: unpaired totals, as before
    old = MetricAccumulator()
    old.add("noisy", "pesq", 1.0)
    old.add("noisy", "pesq", 2.0)
    old.fail("enhanced", "pesq", "x", "why")
    assert old.means()["noisy"]["pesq"] == pytest.approx(1.5) and math.isnan(old.means()["enhanced"]["pesq"])


def test_a_failing_output_does_not_improve_the_validation_mean(pair16):
    clean, noisy = pair16
    acc = MetricAccumulator()
    silent = np.zeros_like(clean)
    for item, deg in (("good", noisy), ("bad", silent)):
        speech_metrics(acc, "noisy", item, clean, noisy if item == "good" else 0.5 * clean + noisy, 16000,
                       ("pesq", "si_sdr"))
        speech_metrics(acc, "enhanced", item, clean, deg, 16000, ("pesq", "si_sdr"))
    means = acc.means()
    for m in ("pesq", "si_sdr"):  # only `good` is in both means: noisy and enhanced are the same clip there
        assert means["enhanced"][m] == pytest.approx(means["noisy"][m])
        assert acc.mean_counts()["noisy"][m] == 1
