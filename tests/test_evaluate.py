"""xmodal.evaluate: paired-folder scoring against the reference packages (pesq, pystoi), JSON, figures, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pesq import pesq
from pystoi import stoi

import xmodal.pretrained
from xmodal.data.synthetic import synth_noise, synth_speech
from xmodal.denoise import load
from xmodal.evaluate import evaluate_folders, main, match_files
from xmodal.io import resample

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``clean/``, ``noisy/`` (5 dB white noise) and ``enhanced/`` (noise at -10 dB relative) with 2 files of 3 s."""
    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    for sub in ("clean", "noisy", "enhanced"):
        (root / sub).mkdir()
    for i in range(2):
        clean = synth_speech(3.0, SR, rng)
        noise = synth_noise("white", 3.0, SR, rng)
        noise *= np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2)) * 10 ** (-5 / 20)
        for sub, wave in (("clean", clean), ("noisy", clean + noise), ("enhanced", clean + 0.3 * noise)):
            sf.write(root / sub / f"utt{i}.wav", wave.astype(np.float32), SR, subtype="FLOAT")
    return root


def read64(path: Path) -> np.ndarray:
    return sf.read(str(path), dtype="float32")[0].astype(np.float64)


def si_sdr_ref(ref: np.ndarray, deg: np.ndarray) -> float:
    """Le Roux et al. 2019, float64, no energy floor (the metric is exactly scale invariant)."""
    ref, deg = ref - ref.mean(), deg - deg.mean()
    target = (deg @ ref) / (ref @ ref) * ref
    return float(10 * np.log10((target @ target) / ((deg - target) @ (deg - target))))


def reference_scores(ref: np.ndarray, deg: np.ndarray, sample_rate: int = SR) -> dict[str, float]:
    return {"pesq": pesq(sample_rate, ref, deg, "wb"), "stoi": stoi(ref, deg, sample_rate),
            "estoi": stoi(ref, deg, sample_rate, extended=True), "si_sdr": si_sdr_ref(ref, deg)}


def assert_scores(got: dict[str, float], want: dict[str, float]) -> None:
    assert set(got) == set(want)
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-6), k


def test_scores_equal_reference_packages(pairs: Path) -> None:
    result = evaluate_folders(pairs / "clean", pairs / "noisy", pairs / "enhanced")
    assert [f["name"] for f in result["files"]] == ["utt0.wav", "utt1.wav"]
    for f in result["files"]:
        ref = read64(pairs / "clean" / f["name"])
        assert f["sample_rate"] == SR
        for row in ("noisy", "enhanced"):
            assert_scores(f[row], reference_scores(ref, read64(pairs / row / f["name"])))
    for row in ("noisy", "enhanced"):
        for m in ("pesq", "stoi", "estoi", "si_sdr"):
            assert result["mean"][row][m] == pytest.approx(np.mean([f[row][m] for f in result["files"]]), abs=1e-9)
    assert result["mean"]["enhanced"]["si_sdr"] > result["mean"]["noisy"]["si_sdr"] + 5
    assert result["failures"] == [] and result["errors"] == [] and result["warnings"] == []


def test_cli_table_json_and_figures(pairs: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["--clean", str(pairs / "clean"), "--noisy", str(pairs / "noisy"), "--enhanced", str(pairs / "enhanced"),
            "--json", str(tmp_path / "out" / "scores.json"), "--figures", str(tmp_path / "figs"),
            "--figure-files", "1", "--quiet"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "PESQ" in table and "SI-SDR" in table and "utt0.wav" in table and "mean (2)" in table
    data = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert set(data) >= {"files", "mean", "failures", "errors", "figures", "metrics"}
    assert data["enhanced"] == str(pairs / "enhanced") and len(data["files"]) == 2
    direct = evaluate_folders(pairs / "clean", pairs / "noisy", pairs / "enhanced")
    for row in ("noisy", "enhanced"):
        assert_scores(data["mean"][row], direct["mean"][row])
        for got, want in zip(data["files"], direct["files"]):
            assert got["name"] == want["name"]
            assert_scores(got[row], want[row])
    assert os.listdir(tmp_path / "figs") == ["utt0.png"] and data["figures"] == [str(tmp_path / "figs" / "utt0.png")]
    assert (tmp_path / "figs" / "utt0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path / "out") == ["scores.json"]


def test_model_enhances_in_memory(pairs: Path, run_dir: Path, tmp_path: Path) -> None:
    assert main(["--clean", str(pairs / "clean"), "--noisy", str(pairs / "noisy"), "--model", str(run_dir),
                 "--json", str(tmp_path / "s.json"), "--quiet"]) == 0
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["enhanced"] == f"model {run_dir}"
    den = load(run_dir)
    for f in data["files"]:
        noisy = sf.read(str(pairs / "noisy" / f["name"]), dtype="float32")[0]
        est = den.denoise(noisy, SR).astype(np.float64)
        assert_scores(f["enhanced"], reference_scores(read64(pairs / "clean" / f["name"]), est))


def test_other_rates_and_channels_are_resampled_to_the_clean_rate(pairs: Path, tmp_path: Path) -> None:
    enh = tmp_path / "enh8k"
    enh.mkdir()
    for name in ("utt0.wav", "utt1.wav"):
        mono = resample(sf.read(str(pairs / "enhanced" / name), dtype="float32")[0], SR, 8000).numpy()
        sf.write(enh / name, np.stack([mono, mono], axis=1), 8000, subtype="FLOAT")  # stereo, 8 kHz
    result = evaluate_folders(pairs / "clean", pairs / "noisy", enh, metrics=("pesq", "si_sdr"))
    for f in result["files"]:
        assert f["sample_rate"] == SR
        deg = resample(sf.read(str(enh / f["name"]), dtype="float32")[0].mean(axis=1), 8000, SR).numpy()
        ref = read64(pairs / "clean" / f["name"])
        n = min(len(ref), len(deg))
        deg = deg[:n].astype(np.float64)
        assert f["enhanced"]["pesq"] == pytest.approx(pesq(SR, ref[:n], deg, "wb"), abs=1e-6)
        assert f["enhanced"]["si_sdr"] == pytest.approx(si_sdr_ref(ref[:n], deg), abs=1e-6)


def test_metric_failures_are_listed_not_fatal(pairs: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for sub in ("clean", "noisy", "enhanced"):
        for name in ("utt0.wav", "utt1.wav"):
            (tmp_path / sub).mkdir(exist_ok=True)
            os.symlink(pairs / sub / name, tmp_path / sub / name)
    noise = synth_noise("pink", 3.0, SR, np.random.default_rng(1)) * 0.1
    sf.write(tmp_path / "clean" / "silent.wav", np.zeros(3 * SR, np.float32), SR, subtype="FLOAT")
    sf.write(tmp_path / "noisy" / "silent.wav", noise, SR, subtype="FLOAT")
    sf.write(tmp_path / "enhanced" / "silent.wav", noise * 0.1, SR, subtype="FLOAT")
    argv = ["--clean", str(tmp_path / "clean"), "--noisy", str(tmp_path / "noisy"), "--enhanced",
            str(tmp_path / "enhanced"), "--json", str(tmp_path / "s.json"), "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "metric failures" in out and "silent.wav enhanced si_sdr: si_sdr failed: the reference is silent" in out
    data = json.loads((tmp_path / "s.json").read_text())
    failed = {(x["row"], x["metric"]) for x in data["failures"] if x["file"] == "silent.wav"}
    assert ("noisy", "si_sdr") in failed and ("enhanced", "pesq") in failed
    assert data["mean"]["noisy"]["si_sdr"] == pytest.approx(
        np.mean([f["noisy"]["si_sdr"] for f in data["files"] if f["name"] != "silent.wav"]))


def test_unmatched_names(pairs: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    os.symlink(pairs / "noisy" / "utt0.wav", noisy / "utt0.wav")
    os.symlink(pairs / "noisy" / "utt1.wav", noisy / "other.wav")
    with pytest.raises(ValueError, match=r"do not hold the same file names \(only in --clean: utt1.wav; "
                                         r"only in --noisy: other.wav\)"):
        match_files(pairs / "clean", noisy=noisy)
    assert main(["--clean", str(pairs / "clean"), "--noisy", str(noisy), "--enhanced", str(pairs / "enhanced")]) == 2
    assert "only in --noisy: other.wav" in capsys.readouterr().err


def test_argument_errors(pairs: Path, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    c, n, e = pairs / "clean", pairs / "noisy", pairs / "enhanced"
    with pytest.raises(ValueError, match=r"pass either `enhanced_dir` \(--enhanced\) or `model` \(--model\)"):
        evaluate_folders(c, n, e, model=run_dir)
    with pytest.raises(ValueError, match=r"unknown speech metric\(s\) 'mos' \(known: pesq, stoi, estoi, si_sdr\)"):
        evaluate_folders(c, n, e, metrics=("mos",))
    with pytest.raises(ValueError, match=r"`figure_files` must be >= 0, got -1"):
        evaluate_folders(c, n, e, figure_files=-1)
    with pytest.raises(FileNotFoundError, match=r"missing: audio folder not found"):
        evaluate_folders(c, tmp_path / "missing", e)
    assert main(["--clean", str(c), "--noisy", str(n), "--enhanced", str(e), "--model", str(run_dir)]) == 2
    assert main(["--clean", str(c), "--noisy", str(tmp_path / "missing"), "--enhanced", str(e)]) == 2
    assert "audio folder not found" in capsys.readouterr().err
    monkeypatch.setattr(xmodal.pretrained, "_HERE", tmp_path)
    assert main(["--clean", str(c), "--noisy", str(n), "--quiet"]) == 2  # default: the bundled model
    assert "bundled model 'speech' is not installed" in capsys.readouterr().err


def test_unreadable_file_is_reported(pairs: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    os.symlink(pairs / "noisy" / "utt0.wav", noisy / "utt0.wav")
    (noisy / "utt1.wav").write_text("not audio")
    assert main(["--clean", str(pairs / "clean"), "--noisy", str(noisy), "--enhanced", str(pairs / "enhanced"),
                 "--json", str(tmp_path / "s.json"), "--quiet"]) == 1
    assert "utt1.wav: not readable as audio" in capsys.readouterr().err
    data = json.loads((tmp_path / "s.json").read_text())
    assert [f["name"] for f in data["files"]] == ["utt0.wav"] and data["errors"][0]["file"] == "utt1.wav"


def test_length_mismatch_is_scored_on_the_common_part_with_a_warning(pairs: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    enh = tmp_path / "enh"
    enh.mkdir()
    os.symlink(pairs / "enhanced" / "utt0.wav", enh / "utt0.wav")
    short = sf.read(str(pairs / "enhanced" / "utt1.wav"), dtype="float32")[0][: 2 * SR]
    sf.write(enh / "utt1.wav", short, SR, subtype="FLOAT")
    assert main(["--clean", str(pairs / "clean"), "--noisy", str(pairs / "noisy"), "--enhanced", str(enh),
                 "--json", str(tmp_path / "s.json"), "--quiet"]) == 0
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["warnings"] == ["utt1.wav: lengths differ (clean 48000, noisy 48000, enhanced 32000 samples at "
                                "16000 Hz); scored the first 32000"]
    assert "warnings (1):" in capsys.readouterr().out
    ref = read64(pairs / "clean" / "utt1.wav")[: 2 * SR]
    assert data["files"][1]["enhanced"]["pesq"] == pytest.approx(pesq(SR, ref, short.astype(np.float64), "wb"),
                                                                 abs=1e-6)


def test_means_are_paired_when_an_enhanced_file_fails(pairs: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    """A silent output fails PESQ and SI-SDR: it leaves those means in BOTH rows, and the table says so."""
    for sub in ("clean", "noisy", "enhanced"):
        (tmp_path / sub).mkdir()
        for name in ("utt0.wav", "utt1.wav"):
            os.symlink(pairs / sub / name, tmp_path / sub / name)
        os.symlink(pairs / sub / "utt1.wav", tmp_path / sub / "utt2.wav")
    (tmp_path / "enhanced" / "utt2.wav").unlink()
    sf.write(tmp_path / "enhanced" / "utt2.wav", np.zeros(3 * SR, np.float32), SR, subtype="FLOAT")
    argv = ["--clean", str(tmp_path / "clean"), "--noisy", str(tmp_path / "noisy"), "--enhanced",
            str(tmp_path / "enhanced"), "--json", str(tmp_path / "s.json"), "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "s.json").read_text())
    failed = sorted((x["row"], x["metric"]) for x in data["failures"])
    assert failed == [("enhanced", "pesq"), ("enhanced", "si_sdr")]
    assert "utt2.wav enhanced si_sdr: si_sdr failed: the estimate is silent" in out
    both = [f for f in data["files"] if f["name"] != "utt2.wav"]
    for m in ("pesq", "si_sdr"):
        for row in ("noisy", "enhanced"):
            assert data["mean"][row][m] == pytest.approx(np.mean([f[row][m] for f in both]), abs=1e-9)
        assert data["mean_counts"][m] == 2
    for m in ("stoi", "estoi"):  # scored everywhere (STOI of silence is 0, a valid score): over all three files
        assert data["mean"]["noisy"][m] == pytest.approx(np.mean([f["noisy"][m] for f in data["files"]]), abs=1e-9)
        assert data["mean_counts"][m] == 3
    assert "mean (3)*" in out
    assert ("* each mean is over the files that every row scored: PESQ over 2 of 3, SI-SDR over 2 of 3 (a file on "
            "which a metric failed in one row is left out of that metric's means)") in out
    # every metric over every file: the plain label, no note
    assert main(["--clean", str(pairs / "clean"), "--noisy", str(pairs / "noisy"), "--enhanced",
                 str(pairs / "enhanced"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "mean (2) " in out and "mean (2)*" not in out and "each mean is over" not in out


def test_json_to_an_unwritable_place_is_an_error_not_a_traceback(pairs: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "some_file").write_text("x")
    target = tmp_path / "some_file" / "s.json"  # a regular file where a folder should be (fails even as root)
    argv = ["--clean", str(pairs / "clean"), "--noisy", str(pairs / "noisy"), "--enhanced", str(pairs / "enhanced"),
            "--json", str(target), "--quiet"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "mean (2)" in captured.out  # the table is printed first
    assert captured.err.startswith(f"error: {target}: ")
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1  # one line: the path and the reason
    assert captured.err.strip() != f"error: {target}:"  # the OS's reason follows ("File exists", "Not a directory")
