"""Denoising for users: xmodal.load, Denoiser.denoise / denoise_file, chunking, and the batch CLI.

Everything runs a tiny untrained U-Net on generated audio (sines + noise), on CPU.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import xmodal
import xmodal.pretrained
from xmodal.config import load_config
from xmodal.denoise import Denoiser, load, main, plan_chunks
from xmodal.inference import enhance
from xmodal.io import AudioReadError
from xmodal.models import build_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def den(run_dir: Path) -> Denoiser:
    return load(run_dir)


def make_wave(sample_rate: int, channels: int, seconds: float, seed: int = 0) -> np.ndarray:
    """``(C, T) float32``: a tone with vibrato plus noise, different in each channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    chans = [(0.3 / (c + 1)) * np.sin(2 * np.pi * (220 * (c + 1)) * t + 3 * np.sin(2 * np.pi * 3 * t))
             + 0.05 * rng.standard_normal(t.shape) for c in range(channels)]
    return np.stack(chans).astype(np.float32)


def write(path: Path, wave: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.T, sample_rate, subtype=subtype)  # (C, T) -> (T, C)
    return path


# ----------------------------------------------------------------------------------------------------------------
# load and the bundled-model resolver


def test_lazy_public_names(run_dir: Path) -> None:
    assert xmodal.load is load and xmodal.Denoiser is Denoiser
    # submodules too, after a plain `import xmodal` in a fresh interpreter, which imports none of them by itself
    code = ("import sys, xmodal\n"
            "assert 'xmodal.noise' not in sys.modules and 'torch' not in sys.modules\n"
            "f = xmodal.noise.estimate_sigma\n"
            "import xmodal.noise\n"
            "assert f is xmodal.noise.estimate_sigma and xmodal.metrics.__name__ == 'xmodal.metrics'\n"
            "try:\n"
            "    xmodal.nothing\n"
            "except AttributeError as e:\n"
            "    assert str(e) == \"module 'xmodal' has no attribute 'nothing'\", e\n"
            "else:\n"
            "    raise AssertionError('no error')\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bundled_model_missing_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xmodal.pretrained, "_HERE", tmp_path)
    for name in (None, "speech", "default"):
        with pytest.raises(FileNotFoundError, match=r"bundled model 'speech' is not installed at .*speech_default"):
            load(name)


def test_bundled_model_resolves_when_installed(tmp_path: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(run_dir, tmp_path / "speech_default")
    monkeypatch.setattr(xmodal.pretrained, "_HERE", tmp_path)
    assert load().sample_rate == 16000
    assert load("default").name == "default"
    # a run directory named like a bundled model, in the working directory: the name still means the bundled model,
    # and says so; './speech' is the directory
    shutil.copytree(run_dir, tmp_path / "work" / "speech")
    monkeypatch.chdir(tmp_path / "work")
    with pytest.warns(UserWarning, match=r"'speech' is a bundled model's name and also a run directory here; loading "
                                         r"the bundled model \(pass './speech' for the directory\)"):
        assert load("speech").name == "speech"
    assert load("./speech").name == "./speech"


def test_unknown_model_lists_bundled_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown model 'nope': no such file or directory; bundled names are "
                                         r"color, color_real, colour, colour_real, default, gray, image, .*photo, "
                                         r"realtime, speech, speech_rt, stack, video, video_color, video_color_real, "
                                         r"video_colour, video_colour_real, video_gray, video_gray_real, video_photo$"):
        load("nope")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"not a run directory or a \.safetensors file"):
        load(tmp_path / "notes.txt")


def test_load_weights_file_with_embedded_config(run_dir: Path) -> None:
    x = make_wave(16000, 1, 0.5)
    a = load(run_dir / "model.safetensors").denoise(x, 16000)
    b = load(run_dir).denoise(x, 16000)
    np.testing.assert_array_equal(a, b)


def test_denoiser_argument_errors(run_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"`device` must be 'cpu', 'cuda' or 'cuda:N', got 'gpu0'"):
        load(run_dir, device="gpu0")
    for other in ("meta", "mps"):  # devices torch knows but xmodal does not run on
        with pytest.raises(ValueError, match=rf"`device` must be 'cpu', 'cuda' or 'cuda:N', got '{other}'"):
            load(run_dir, device=other)
    cfg = load_config(ROOT / "recipes" / "tiny.yaml")
    with pytest.raises(ValueError, match=r"has no stem/head for modality 'speech'"):
        Denoiser(build_model(cfg.model, {}), cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when CUDA is missing")
def test_cuda_missing(run_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"`device` is 'cuda' but CUDA is not available"):
        load(run_dir, device="cuda")


# ----------------------------------------------------------------------------------------------------------------
# Arrays


@pytest.mark.parametrize("shape", [(1200,), (2, 1200), (3, 2, 1200)])
@pytest.mark.parametrize("kind", ["numpy32", "numpy64", "torch32", "torch64", "bf16"])
def test_types_shapes_dtypes_kept(den: Denoiser, shape: tuple[int, ...], kind: str) -> None:
    x = np.random.default_rng(0).standard_normal(shape) * 0.1
    wave = {"numpy32": lambda: x.astype(np.float32), "numpy64": lambda: x,
            "torch32": lambda: torch.from_numpy(x).float(), "torch64": lambda: torch.from_numpy(x),
            "bf16": lambda: torch.from_numpy(x).to(torch.bfloat16)}[kind]()
    out = den.denoise(wave, 16000)
    assert type(out) is type(wave) and out.dtype == wave.dtype and tuple(out.shape) == shape


def test_matches_one_pass_enhance(den: Denoiser) -> None:
    """At the model's rate, one chunk is exactly the adapter -> network -> adapter path (one scale per item)."""
    x = torch.from_numpy(make_wave(16000, 2, 1.3)).unsqueeze(0)  # (1, 2, T)
    ref = enhance(den.model, den.adapter, x, "speech")
    torch.testing.assert_close(den.denoise(x, 16000), ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(2, 3000), (2, 2, 3000), (1, 1000)])
def test_channels_last_equals_channels_first(den: Denoiser, shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 0.1  # (..., C, T)
    ref = den.denoise(x, 16000)
    tc = np.swapaxes(x, -1, -2).copy()  # (..., T, C), as soundfile.read gives
    out = den.denoise(tc, 16000, channels_last=True)
    assert out.shape == tc.shape
    np.testing.assert_array_equal(out, np.swapaxes(ref, -1, -2))
    out_t = den.denoise(torch.from_numpy(tc), 16000, channels_last=True, mix=0.5)
    torch.testing.assert_close(out_t, torch.from_numpy(np.swapaxes(den.denoise(x, 16000, mix=0.5), -1, -2)))
    with pytest.raises(ValueError, match=r"Expected `wave` of shape \(T, C\) or \(B, T, C\) \(channels_last=True\) "
                                         r"with no empty axis, got \(1000,\)"):
        den.denoise(x.reshape(-1)[:1000], 16000, channels_last=True)


def test_time_by_channel_looking_wave_is_refused(den: Denoiser) -> None:
    tc = np.zeros((3000, 2), np.float32)
    with pytest.raises(ValueError, match=r"`wave` of shape \(3000, 2\) would be read as \(C, T\): 3000 channels of "
                                         r"2 samples; for a \(T, C\) array \(soundfile.read gives those\) pass "
                                         r"channels_last=True"):
        den.denoise(tc, 16000)
    with pytest.raises(ValueError, match=r"would be read as \(B, C, T\): 3000 channels of 2 samples"):
        den.denoise(tc[None], 16000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        den.denoise(tc.T, 16000)  # (C, T)
        den.denoise(np.zeros((2, 5), np.float32), 16000)  # a short (C, T) signal
        den.denoise(tc, 16000, channels_last=True)


def test_batch_equals_items(den: Denoiser) -> None:
    x = np.stack([make_wave(16000, 2, 1.0, seed=s) * g for s, g in ((0, 1.0), (1, 0.2))])  # (2, 2, T)
    out = den.denoise(x, 16000, chunk_seconds=0.3)
    for b in range(2):
        np.testing.assert_allclose(out[b], den.denoise(x[b], 16000, chunk_seconds=0.3), atol=1e-6)


@pytest.mark.parametrize("sample_rate", [8000, 16000, 44100, 48000])
def test_chunked_equals_unchunked_at_any_rate(den: Denoiser, sample_rate: int) -> None:
    x = make_wave(sample_rate, 2, 2.3)
    plan = den.chunk_plan(x.shape[-1], sample_rate, chunk_seconds=0.4)
    assert len(plan) >= 4
    whole = den.denoise(x, sample_rate, chunk_seconds=60)
    chunked = den.denoise(x, sample_rate, chunk_seconds=0.4)
    assert whole.shape == chunked.shape == x.shape
    np.testing.assert_allclose(chunked, whole, atol=1e-5, rtol=0)
    assert np.abs(whole - x).max() > 1e-3  # the network did change the signal


def _network_gives(den: Denoiser, monkeypatch: pytest.MonkeyPatch, what: str) -> None:
    """Make the network an identity (``"input"``: its estimate is its input) or silence (``"zeros"``)."""
    den.receptive_field  # measured on the real network first (then cached)
    monkeypatch.setattr(den, "model", lambda feats, modality: feats if what == "input" else torch.zeros_like(feats))


@pytest.mark.parametrize("sample_rate", [44100, 48000])
def test_full_band_keeps_what_the_network_keeps_above_its_band(den: Denoiser, monkeypatch: pytest.MonkeyPatch,
                                                              sample_rate: int) -> None:
    from xmodal.io import resample

    x = make_wave(sample_rate, 2, 1.0)
    t = np.arange(x.shape[-1]) / sample_rate
    x += (0.1 * np.sin(2 * np.pi * 12000 * t)).astype(np.float32)  # content above the model's 8 kHz band
    low = resample(resample(x, sample_rate, 16000), 16000, sample_rate).numpy()[..., :x.shape[-1]]
    _network_gives(den, monkeypatch, "input")  # a network that keeps everything: the top-octave gain is 1
    np.testing.assert_allclose(den.denoise(x, sample_rate), x, atol=1e-5, rtol=0)  # the whole input back
    np.testing.assert_allclose(den.denoise(x, sample_rate, full_band=False), low, atol=1e-5, rtol=0)  # its low band
    _network_gives(den, monkeypatch, "zeros")  # a network that removes everything: so is the content above
    assert np.abs(den.denoise(x, sample_rate)).max() < 1e-6


def test_full_band_gain_follows_the_network_frame_by_frame(den: Denoiser) -> None:
    rate = 48000
    x = make_wave(rate, 1, 1.2)
    t = np.arange(x.shape[-1]) / rate
    x += (0.1 * np.sin(2 * np.pi * 12000 * t)).astype(np.float32)
    full, limited = den.denoise(x, rate), den.denoise(x, rate, full_band=False)
    added = full - limited  # what the full band adds: the input above 8 kHz times gains in [0, 1]
    from xmodal.io import resample

    high = x - resample(resample(x, rate, 16000), 16000, rate).numpy()[..., :x.shape[-1]]
    assert np.all(np.abs(added) <= np.abs(high) + 1e-6)
    assert 0.0 < np.sum(added * high) / np.sum(high * high) < 1.0  # a real gain, not all or nothing
    at_model_rate = x[..., :16000]  # taken as a 16 kHz signal: there is no band above the model's
    np.testing.assert_array_equal(den.denoise(at_model_rate, 16000), den.denoise(at_model_rate, 16000,
                                                                                  full_band=False))


def test_short_context_is_exact_away_from_edges_and_close_at_them(den: Denoiser) -> None:
    sr = 16000
    x = make_wave(sr, 1, 3.0)
    plan = den.chunk_plan(x.shape[-1], sr, chunk_seconds=0.5, context_seconds=0.01)
    whole = den.denoise(x, sr, chunk_seconds=60)
    chunked = den.denoise(x, sr, chunk_seconds=0.5, context_seconds=0.01)
    near = np.zeros(x.shape[-1], dtype=bool)
    reach = den.receptive_field + sr // 100
    for ch in plan[1:]:  # every boundary between chunks
        near[max(0, ch.keep_start - reach):ch.keep_start + ch.fade_in + reach] = True
    diff = np.abs(chunked - whole)[0]
    assert diff[~near].max() < 1e-5
    assert 1e-6 < diff[near].max() < 0.25 * np.abs(whole).max()


def test_levels_scale_with_input_across_chunks(den: Denoiser) -> None:
    """One RMS scale per item over the whole signal: the output is equivariant to the input gain."""
    x = make_wave(16000, 2, 2.0)
    np.testing.assert_allclose(den.denoise(4 * x, 16000, chunk_seconds=0.3),
                               4 * den.denoise(x, 16000, chunk_seconds=0.3), atol=1e-5)


def test_mix_and_attenuation_limit(den: Denoiser) -> None:
    x = make_wave(44100, 2, 0.7)
    est = den.denoise(x, 44100)
    np.testing.assert_array_equal(den.denoise(x, 44100, mix=0.0), x)
    t = torch.from_numpy(x)
    assert torch.equal(den.denoise(t, 44100, mix=0.0), t)
    np.testing.assert_allclose(den.denoise(x, 44100, mix=0.25), x + 0.25 * (est - x), atol=1e-6)
    g = 10 ** (-6 / 20)
    np.testing.assert_allclose(den.denoise(x, 44100, atten_limit_db=6.0), est + g * (x - est), atol=1e-6)
    np.testing.assert_allclose(den.denoise(x, 44100, atten_limit_db=0.0), x, atol=1e-6)
    np.testing.assert_allclose(den.denoise(x, 44100, atten_limit_db=math.inf), est, atol=1e-6)


def test_very_short_input(den: Denoiser) -> None:
    for n in (1, 7, 100):
        assert den.denoise(np.full(n, 0.1, np.float32), 44100).shape == (n,)


@pytest.mark.parametrize(("wave", "kwargs", "error", "match"), [
    ([0.1, 0.2], {}, TypeError, r"Expected `wave` to be a numpy array or a torch tensor, got list"),
    (np.zeros(100, np.int16), {}, TypeError, r"Expected `wave` to be a float array, got dtype int16"),
    (torch.zeros(100, dtype=torch.int32), {}, TypeError, r"Expected `wave` to be a float tensor, got dtype "
                                                          r"torch.int32"),
    (np.zeros((1, 1, 1, 100), np.float32), {}, ValueError, r"Expected `wave` of shape \(T,\), \(C, T\) or "
                                                           r"\(B, C, T\) with no empty axis, got \(1, 1, 1, 100\)"),
    (np.zeros((2, 0), np.float32), {}, ValueError, r"with no empty axis, got \(2, 0\)"),
    (np.array([0.0, np.nan], np.float32), {}, ValueError, r"`wave` contains NaN or infinite samples"),
    (np.array([0.0, np.inf], np.float32), {}, ValueError, r"`wave` contains NaN or infinite samples"),
    (np.array([0.0, 1e300, -1e40]), {}, ValueError, r"`wave` holds 2 finite value\(s\) beyond float32's range \(up "
                                                    r"to 1e\+300; float32 holds \+-3.4e38\): scale it first"),
    (torch.tensor([0.0, 1e39], dtype=torch.float64), {}, ValueError, r"`wave` holds 1 finite value\(s\) beyond "),
    (np.zeros(100, np.float32), {"sample_rate": 0}, ValueError, r"`sample_rate` must be a positive integer \(Hz\), "
                                                                r"got 0"),
    (np.zeros(100, np.float32), {"sample_rate": 1.5}, ValueError, r"`sample_rate` must be a positive integer"),
    (np.zeros(100, np.float32), {"sample_rate": 1}, ValueError, r"`sample_rate` must be an audio rate, 1000 to "
                                                                r"768000 Hz, got 1$"),
    (np.zeros(100, np.float32), {"sample_rate": 10 ** 6}, ValueError, r"768000 Hz, got 1000000$"),
    (np.zeros(100, np.float32), {"mix": 1.5}, ValueError, r"`mix` must be in \[0, 1\] .*got 1.5"),
    (np.zeros(100, np.float32), {"mix": float("nan")}, ValueError, r"`mix` must be in \[0, 1\]"),
    (np.zeros(100, np.float32), {"atten_limit_db": -3}, ValueError, r"`atten_limit_db` must be a non-negative "
                                                                    r"number of dB or None, got -3"),
    (np.zeros(100, np.float32), {"chunk_seconds": 0}, ValueError, r"`chunk_seconds` must be a positive number"),
    (np.zeros(100, np.float32), {"context_seconds": -1.0}, ValueError, r"`context_seconds` must be a non-negative"),
])
def test_denoise_argument_errors(den: Denoiser, wave, kwargs: dict, error: type, match: str) -> None:
    kwargs = {"sample_rate": 16000, **kwargs}
    with pytest.raises(error, match=match):
        den.denoise(wave, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Chunk plans


@pytest.mark.parametrize(("length", "core", "context", "half_fade", "align"),
                         [(1000, 300, 50, 20, 7), (1000, 2000, 50, 20, 1), (1010, 250, 0, 0, 64),
                          (950, 300, 10, 40, 1)])
def test_plan_chunks_tiles_the_signal(length: int, core: int, context: int, half_fade: int, align: int) -> None:
    plan = plan_chunks(length, core, context, half_fade, align)
    assert plan[0].keep_start == 0 == plan[0].start and plan[-1].keep_stop == length == plan[-1].stop
    for a, b in zip(plan, plan[1:]):
        assert b.keep_start == a.keep_stop - a.fade_out and a.fade_out == b.fade_in == 2 * half_fade
    for c in plan:
        assert c.start % align == 0 and c.start <= c.keep_start and c.keep_stop <= c.stop
        assert c.keep_start - c.start >= min(context, c.keep_start) and c.stop - c.keep_stop >= min(
            context, length - c.keep_stop)
        assert c.keep_stop - c.keep_start >= c.fade_in + c.fade_out
    if length > core:
        assert len(plan) > 1


def test_plan_chunks_merges_a_short_last_piece() -> None:
    assert len(plan_chunks(1010, 500, 0, 20)) == 2
    assert len(plan_chunks(1050, 500, 0, 20)) == 3


def test_plan_chunks_errors() -> None:
    with pytest.raises(ValueError, match=r"plan_chunks: expected length, core, align >= 1 .* got length=0"):
        plan_chunks(0, 10, 0, 0)
    with pytest.raises(ValueError, match=r"plan_chunks: `core` \(10\) must be at least the cross-fade length 20"):
        plan_chunks(100, 10, 0, 10)


# ----------------------------------------------------------------------------------------------------------------
# Files


@pytest.mark.parametrize(("sample_rate", "channels", "subtype", "ext"), [
    (8000, 1, "PCM_16", "wav"), (16000, 2, "PCM_24", "wav"), (44100, 1, "FLOAT", "wav"), (48000, 2, "PCM_16", "flac"),
])
def test_denoise_file_keeps_format_and_equals_in_memory(den: Denoiser, tmp_path: Path, sample_rate: int,
                                                        channels: int, subtype: str, ext: str) -> None:
    src = write(tmp_path / f"in.{ext}", make_wave(sample_rate, channels, 1.6), sample_rate, subtype)
    dst = den.denoise_file(src, tmp_path / "out" / f"in.{ext}", chunk_seconds=0.5)
    a, b = sf.info(str(src)), sf.info(str(dst))
    assert (b.samplerate, b.channels, b.frames, b.subtype, b.format) == (a.samplerate, a.channels, a.frames,
                                                                         a.subtype, a.format)
    x, _ = sf.read(str(src), dtype="float32", always_2d=True)  # (T, C)
    y, _ = sf.read(str(dst), dtype="float32", always_2d=True)
    ref = np.clip(den.denoise(x.T, sample_rate, chunk_seconds=60).T, -1, 1)  # unchunked, in memory
    np.testing.assert_allclose(y, ref, atol=1e-5 if subtype == "FLOAT" else 2.0 / 2 ** 15)
    assert sorted(os.listdir(dst.parent)) == ["in." + ext]
    assert dst.stat().st_mode & 0o777 == src.stat().st_mode & 0o777  # usual permissions, not mkstemp's 0600


def test_denoise_file_format_follows_destination(den: Denoiser, tmp_path: Path) -> None:
    src = write(tmp_path / "in.wav", make_wave(16000, 2, 0.5), 16000, "PCM_24")
    info = sf.info(str(den.denoise_file(src, tmp_path / "out.flac")))
    assert (info.format, info.subtype, info.frames) == ("FLAC", "PCM_24", 8000)
    info = sf.info(str(den.denoise_file(src, tmp_path / "out.ogg")))
    assert (info.format, info.subtype, info.frames) == ("OGG", "VORBIS", 8000)


@pytest.mark.parametrize(("ext", "sample_rate", "channels", "fmt", "subtype"), [
    ("mp3", 44100, 2, "MP3", "MPEG_LAYER_III"), ("opus", 48000, 1, "OGG", "OPUS"), ("opus", 16000, 2, "OGG", "OPUS")])
def test_compressed_audio_files(den: Denoiser, tmp_path: Path, ext: str, sample_rate: int, channels: int, fmt: str,
                                subtype: str) -> None:
    src = tmp_path / f"in.{ext}"
    sf.write(src, make_wave(sample_rate, channels, 1.0).T, sample_rate, format=fmt, subtype=subtype)
    dst = den.denoise_file(src, tmp_path / "out" / f"in.{ext}")
    a, b = sf.info(str(src)), sf.info(str(dst))
    assert (b.samplerate, b.channels, b.frames, b.format, b.subtype) == (sample_rate, channels, a.frames, fmt, subtype)
    x, _ = sf.read(str(src), dtype="float32", always_2d=True)
    y, _ = sf.read(str(dst), dtype="float32", always_2d=True)
    ref = den.denoise(x.T, sample_rate).T  # the decoded input denoised in memory; the output went through the codec
    snr = 10 * np.log10(np.sum(ref ** 2) / np.sum((y - ref) ** 2))
    assert snr > 15, snr  # lossy codecs (19-33 dB seen), but the same signal
    # to a lossless format: PCM, not the lossy codec inside WAV (which libsndfile cannot write)
    info = sf.info(str(den.denoise_file(src, tmp_path / "out.wav")))
    assert (info.format, info.subtype, info.frames) == ("WAV", "PCM_16", a.frames)


@pytest.mark.parametrize(("subtype", "ext", "expected"), [
    ("FLOAT", "flac", "PCM_24"), ("PCM_32", "flac", "PCM_24"), ("DOUBLE", "flac", "PCM_24"),
    ("DOUBLE", "aiff", "DOUBLE"), ("PCM_24", "flac", "PCM_24"), ("PCM_16", "flac", "PCM_16"),
    ("FLOAT", "ogg", "VORBIS")])
def test_wide_audio_into_another_format_keeps_24_bits(den: Denoiser, tmp_path: Path, subtype: str, ext: str,
                                                      expected: str) -> None:
    src = write(tmp_path / "in.wav", make_wave(16000, 1, 0.5), 16000, subtype)
    info = sf.info(str(den.denoise_file(src, tmp_path / f"out.{ext}")))
    assert (info.subtype, info.frames) == (expected, 8000)


def test_cli_ctrl_c_exits_130_with_nothing_half_written(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import xmodal.denoise as den_mod

    for name in ("a", "b"):
        write(tmp_path / "in" / f"{name}.wav", make_wave(16000, 1, 0.5), 16000)
    real = den_mod._run_job

    def run_job(den, job, dst, args, speech=None):
        if job.src.name == "b.wav":
            raise KeyboardInterrupt
        real(den, job, dst, args, speech)

    monkeypatch.setattr(den_mod, "_run_job", run_job)
    assert main([str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(run_dir), "--quiet"]) == 130
    assert capsys.readouterr().err.endswith("interrupted (Ctrl-C): the files finished so far are written; the one "
                                            "in progress was not\n")
    assert sorted(os.listdir(tmp_path / "out")) == ["a.wav"]


def test_load_leaves_the_callers_rng_and_denoise_works_in_inference_mode(run_dir: Path) -> None:
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    fresh = load(run_dir)  # its network is built (randomly initialised), then overwritten by the weights
    assert torch.equal(torch.rand(4), expected)
    x = make_wave(16000, 1, 0.5)
    with torch.inference_mode():  # the first call measures the receptive field with autograd: still works here
        y = fresh.denoise(x, 16000)
    np.testing.assert_array_equal(y, fresh.denoise(x, 16000))


def write_m4a(path: Path, wave: np.ndarray, sample_rate: int, codec: str, muxer: str = "ipod",
              sample_format: str | None = None) -> Path:
    """An .m4a as phones write it (or another audio-only container), made with PyAV directly (not through xmodal);
    ``sample_format`` (``s16p``...): the encoder's, else its first."""
    import av

    with av.open(str(path), "w", format=muxer) as out:
        s = out.add_stream(codec, rate=sample_rate, layout="mono" if wave.shape[0] == 1 else "stereo")
        if sample_format:
            s.format = sample_format
        frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout=s.layout)
        frame.sample_rate, frame.pts = sample_rate, 0
        for packet in [*s.encode(frame), *s.encode()]:
            out.mux(packet)
    return path


@pytest.mark.parametrize(("codec", "sample_rate", "channels"), [("aac", 44100, 1), ("alac", 48000, 2)])
def test_m4a_files(den: Denoiser, tmp_path: Path, codec: str, sample_rate: int, channels: int) -> None:
    from xmodal.io import read_audio, read_av_audio

    wave = make_wave(sample_rate, channels, 0.7)
    src = write_m4a(tmp_path / "memo.m4a", wave, sample_rate, codec, sample_format="s16p" if codec == "alac" else None)
    x, sr, got_codec = read_av_audio(src)
    # no encoder delay nor padding: ALAC exact, AAC to the few samples by which FFmpeg's MP4 duration rounds
    slack = 0 if codec == "alac" else 8
    assert (x.shape[0], sr, got_codec) == (channels, sample_rate, codec)
    assert 0 <= x.shape[1] - wave.shape[1] <= slack
    n = wave.shape[1]
    if codec == "alac":  # lossless (16-bit)
        assert np.abs(x - wave).max() <= 1.01 / 2 ** 15
    else:  # AAC, aligned with the samples that were encoded
        assert 10 * np.log10(np.sum(wave ** 2) / np.sum((x[:, :n] - wave) ** 2)) > 10  # 13 dB seen: AAC drops noise
    dst = den.denoise_file(src, tmp_path / "out" / "memo.m4a")
    y, sr_out, out_codec = read_av_audio(dst)
    assert (y.shape[0], sr_out, out_codec) == (channels, sample_rate, codec)  # the input's codec kept
    assert 0 <= y.shape[1] - x.shape[1] <= slack
    y = y[:, :x.shape[1]]
    ref = den.denoise(x, sample_rate)
    tol = 1.01 / 2 ** 15 if codec == "alac" else None
    if tol:
        assert np.abs(y - np.clip(ref, -1, 1)).max() <= tol
    else:
        assert 10 * np.log10(np.sum(ref ** 2) / np.sum((y - ref) ** 2)) > 10
    assert sorted(os.listdir(dst.parent)) == ["memo.m4a"]
    # to and from other formats
    info = sf.info(str(den.denoise_file(src, tmp_path / "memo.wav")))
    assert (info.format, info.subtype, info.frames, info.samplerate) == ("WAV", "PCM_16", x.shape[1], sample_rate)
    back = den.denoise_file(tmp_path / "memo.wav", tmp_path / "again.m4a")
    assert read_av_audio(back)[2] == "aac" and 0 <= read_audio(back)[0].shape[1] - x.shape[1] <= 8


@pytest.mark.parametrize(("name", "muxer", "codec", "sample_format", "bits"), [
    ("memo.m4a", "ipod", "alac", "s16p", 16), ("memo.m4a", "ipod", "alac", "s32p", 24),
    ("talk.mkv", "matroska", "flac", "s16", 16), ("talk.mkv", "matroska", "flac", "s32", 24)])
def test_lossless_sample_depth_is_kept(den: Denoiser, tmp_path: Path, name: str, muxer: str, codec: str,
                                       sample_format: str, bits: int) -> None:
    from xmodal.io import AvAudioSource, write_audio_blocks

    src = write_m4a(tmp_path / name, make_wave(16000, 1, 0.5), 16000, codec, muxer, sample_format)
    source = AvAudioSource(src)
    assert (source.codec, source.lossless, source.bits) == (codec, True, bits)
    ref = np.clip(den.denoise(source.whole(), 16000), -1, 1)

    def check(y: np.ndarray) -> None:  # 16 bits: on their grid; 24: within one of their steps (FFmpeg truncates)
        if bits == 16:
            assert np.array_equal(y * 32768, np.round(y * 32768)) and np.abs(y - ref).max() <= 1.01 / 32768
        else:
            assert np.abs(y - ref).max() <= 1.01 / 2 ** 23

    out = AvAudioSource(den.denoise_file(src, tmp_path / "out" / name))
    assert (out.codec, out.bits) == (codec, bits)
    check(out.whole())
    for ext in ("flac", "wav"):  # as PCM of the same depth
        dst = den.denoise_file(src, tmp_path / f"out.{ext}")
        assert sf.info(str(dst)).subtype == f"PCM_{bits}"
        check(sf.read(str(dst), dtype="float32", always_2d=True)[0].T)
        # and back into a PyAV container: FLAC of that depth
        back = AvAudioSource(den.denoise_file(dst, tmp_path / f"back_{ext}.mkv"))
        assert (back.codec, back.bits) == ("flac", bits)
    with pytest.raises(ValueError, match=r"`bits` must be 16 or 24, got 20"):
        write_audio_blocks(tmp_path / "x.m4a", [np.zeros((1, 10), np.float32)], 16000, 1, subtype="ALAC", bits=20)
    assert not (tmp_path / "x.m4a").exists()
    # a lossy stream is no deeper than 16 bits
    lossy = AvAudioSource(write_m4a(tmp_path / "lossy.m4a", make_wave(16000, 1, 0.5), 16000, "aac"))
    assert (lossy.lossless, lossy.bits) == (False, 16)
    assert AvAudioSource(den.denoise_file(lossy.path, tmp_path / "lossy.mkv")).bits == 16


@pytest.mark.parametrize(("name", "muxer", "codec", "sample_rate"), [("talk.webm", "webm", "libopus", 48000),
                                                                    ("talk.mp4", "mp4", "aac", 44100)])
def test_audio_only_video_containers(den: Denoiser, tmp_path: Path, name: str, muxer: str, codec: str,
                                     sample_rate: int) -> None:
    from xmodal.denoise import _plan_job
    from xmodal.io import read_av_audio

    src = write_m4a(tmp_path / name, make_wave(sample_rate, 1, 0.5), sample_rate, codec, muxer)  # a browser recording
    assert _plan_job(src, None, None).modality == "speech"  # the command line takes it as sound, not video
    dst = den.denoise_file(src, tmp_path / "out" / name)
    x, _, in_codec = read_av_audio(src)
    y, rate, out_codec = read_av_audio(dst)
    assert (rate, out_codec, y.shape[0]) == (sample_rate, in_codec, 1) and abs(y.shape[1] - x.shape[1]) <= 8


def test_video_with_a_picture_is_not_taken_for_sound(den: Denoiser, tmp_path: Path) -> None:
    from xmodal.videoio import write_clip

    write_clip(tmp_path / "clip.mp4", np.zeros((3, 1, 16, 16), np.float32))
    with pytest.raises(ValueError, match=r"clip.mp4: a video file with a picture; its sound is denoised with the "
                                         r"picture: python -m xmodal.denoise FILE -o OUT --audio denoise"):
        den.denoise_file(tmp_path / "clip.mp4", tmp_path / "out.mp4")
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]


def test_m4a_errors(den: Denoiser, tmp_path: Path) -> None:
    from xmodal.io import read_audio
    from xmodal.videoio import write_clip

    (tmp_path / "junk.m4a").write_bytes(b"not an mp4 at all")
    with pytest.raises(AudioReadError, match=r"junk.m4a: not readable as audio"):
        den.denoise_file(tmp_path / "junk.m4a", tmp_path / "out.m4a")
    write_clip(tmp_path / "silent.mp4", np.zeros((3, 1, 16, 16), np.float32))  # a video without sound
    os.replace(tmp_path / "silent.mp4", tmp_path / "silent.m4a")
    with pytest.raises(AudioReadError, match=r"silent.m4a: holds no audio stream"):
        read_audio(tmp_path / "silent.m4a")
    from xmodal.io import AvAudioSource

    with pytest.raises(AudioReadError, match=r"silent.m4a: audio stream 5: no such audio stream"):
        AvAudioSource(tmp_path / "silent.m4a", 5)
    src = write(tmp_path / "in.wav", make_wave(16000, 1, 0.3), 16000)
    with pytest.raises(ValueError, match=r"out.m4a: a .m4a file is written with AAC, ALAC, got subtype 'PCM_16'"):
        from xmodal.io import write_audio

        write_audio(tmp_path / "out.m4a", np.zeros((1, 100), np.float32), 16000, subtype="PCM_16")
    assert sorted(os.listdir(tmp_path)) == ["in.wav", "junk.m4a", "silent.m4a"]
    memo = write_m4a(tmp_path / "memo.m4a", make_wave(16000, 1, 0.3), 16000, "aac")
    with pytest.raises(ValueError, match=r"out.xyz: unknown audio extension '.xyz' \(write .wav, .flac, .ogg, "):
        den.denoise_file(memo, tmp_path / "out.xyz")
    import av

    import xmodal.io

    for decoded, message in [([], r"memo.m4a: zero-length audio"),
                             ([np.zeros((1, 50), np.float32), np.full((1, 99), np.nan, np.float32)],
                              r"memo.m4a: contains NaN or infinite")]:
        with pytest.MonkeyPatch.context() as mp:  # what an empty or broken stream decodes to
            mp.setattr(xmodal.io.AvAudioSource, "blocks", lambda self, got=decoded: iter(got))
            with pytest.raises(AudioReadError, match=message):
                read_audio(memo)
            with pytest.raises(AudioReadError, match=message):
                den.denoise_file(memo, tmp_path / "out.m4a")

    readings = []

    def damaged(frames, fail_at):  # a stream that stops decoding part way, as PyAV reports it
        readings.append(1)
        if len(readings) < fail_at:
            yield from frames
            yield None
            return
        yield next(frames)
        raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")

    for out, fail_at in [("out.wav", 1), ("out.m4a", 2)]:  # the level pass, the denoising pass (output half-written)
        readings.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(xmodal.io, "_and_flush", lambda frames, n=fail_at: damaged(frames, n))
            with pytest.raises(AudioReadError, match=r"memo.m4a: cannot be decoded \(\[Errno 1094995529\] Invalid "):
                den.denoise_file(memo, tmp_path / out)
        assert len(readings) == fail_at
    assert sorted(os.listdir(tmp_path)) == ["in.wav", "junk.m4a", "memo.m4a", "silent.m4a"]
    assert src.exists()


def test_m4a_without_pyav(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xmodal.io import read_audio

    (tmp_path / "memo.m4a").write_bytes(b"whatever")
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError: PyAV not installed
    with pytest.raises(ImportError, match=r'memo.m4a: .m4a audio needs PyAV: pip install "xmodal\[video\]" \(or pip '
                                          r"install av\)"):
        read_audio(tmp_path / "memo.m4a")


def test_tags_are_kept(den: Denoiser, tmp_path: Path) -> None:
    tags = {"title": "Interview", "artist": "Ada", "date": "2026-11-30", "comment": "take 2"}
    src = tmp_path / "in.flac"
    with sf.SoundFile(src, "w", 16000, 1, format="FLAC") as f:
        for key, value in tags.items():
            setattr(f, key, value)
        f.write(make_wave(16000, 1, 0.5)[0])
    for name in ("out.flac", "out.wav", "out.ogg"):  # streamed files, also to another format
        with sf.SoundFile(den.denoise_file(src, tmp_path / name)) as f:
            assert {k: v for k, v in f.copy_metadata().items() if v} == tags, name
    import av

    from xmodal.io import audio_metadata

    memo = den.denoise_file(src, tmp_path / "memo.m4a")  # to an .m4a and back
    with av.open(str(memo)) as c:
        assert {k: c.metadata.get(k) for k in ("title", "artist")} == {"title": "Interview", "artist": "Ada"}
    back = audio_metadata(den.denoise_file(memo, tmp_path / "back.wav"))
    assert (back["title"], back["artist"]) == ("Interview", "Ada")
    assert audio_metadata(tmp_path / "missing.wav") == {}


def test_opus_rates(den: Denoiser, tmp_path: Path) -> None:
    src = write(tmp_path / "in.wav", make_wave(44100, 1, 0.3), 44100)
    with pytest.raises(ValueError, match=r"out.opus: Opus holds audio at 8, 12, 16, 24, 48 kHz, this is 44100 Hz; "
                                         r"write another format"):
        den.denoise_file(src, tmp_path / "out.opus")
    assert sorted(os.listdir(tmp_path)) == ["in.wav"]
    src = write(tmp_path / "in16.wav", make_wave(16000, 1, 0.3), 16000)
    info = sf.info(str(den.denoise_file(src, tmp_path / "out.opus")))
    assert (info.format, info.subtype, info.samplerate, info.frames) == ("OGG", "OPUS", 16000, 4800)


def test_denoise_file_refuses_its_input_and_existing_outputs(den: Denoiser, tmp_path: Path) -> None:
    src = write(tmp_path / "a.wav", make_wave(16000, 1, 0.3), 16000)
    before = src.read_bytes()
    for dst in (src, tmp_path / "." / "a.wav"):
        with pytest.raises(ValueError, match=r"refusing to write the output over its input file"):
            den.denoise_file(src, dst, overwrite=True)
    os.link(src, tmp_path / "hard.wav")
    with pytest.raises(ValueError, match=r"refusing to write the output over its input file"):
        den.denoise_file(src, tmp_path / "hard.wav", overwrite=True)
    assert src.read_bytes() == before
    dst = den.denoise_file(src, tmp_path / "b.wav")
    with pytest.raises(FileExistsError, match=r"b.wav: output file already exists \(pass overwrite=True"):
        den.denoise_file(src, dst)
    den.denoise_file(src, dst, overwrite=True, mix=0.5)
    (tmp_path / "d.wav").mkdir()
    with pytest.raises(ValueError, match=r"d.wav: `dst` is a directory, expected a file path"):
        den.denoise_file(src, tmp_path / "d.wav", overwrite=True)
    with pytest.raises(ValueError, match=r"`mix` must be in \[0, 1\]"):
        den.denoise_file(src, tmp_path / "e.wav", mix=2.0)
    for name, kind in (("e.png", "an image file"), ("e.tif", "an image file"), ("e.mat", "a band stack")):
        with pytest.raises(ValueError, match=rf"e\.{name[2:]}: {kind}'s extension; the denoised sound needs an audio "
                                             r"one \(\.wav, \.flac"):
            den.denoise_file(src, tmp_path / name)
    with pytest.raises(AudioReadError, match=rf"{tmp_path.name}: a folder; denoise_file takes one audio file "
                                             rf"\(python -m xmodal.denoise {tmp_path.name} -o OUT denoises a folder\)"):
        den.denoise_file(tmp_path, tmp_path / "f.wav")
    assert not any(tmp_path.glob("e.*")) and not (tmp_path / "f.wav").exists()


def make_bad_files(folder: Path) -> dict[str, str]:
    """Write broken audio files into ``folder``; returns file name -> expected reason (a regex)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    (folder / "corrupt.wav").write_bytes(b"RIFF" + rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    (folder / "text.wav").write_text("this is not audio\n" * 50)
    sf.write(folder / "empty.wav", np.zeros((0, 1), np.float32), 16000, subtype="PCM_16")
    nan = make_wave(16000, 1, 0.5)
    nan[0, 4000] = np.nan
    write(folder / "nan.wav", nan, 16000, "FLOAT")
    data = write(folder / "full.wav", make_wave(16000, 2, 1.0), 16000, "PCM_24").read_bytes()
    (folder / "full.wav").unlink()
    (folder / "truncated.wav").write_bytes(data[: len(data) * 6 // 10])
    write(folder / "full.flac", make_wave(16000, 1, 3.0), 16000, "PCM_16")
    data = (folder / "full.flac").read_bytes()
    (folder / "full.flac").unlink()
    (folder / "truncated.flac").write_bytes(data[: len(data) // 2])
    return {
        "corrupt.wav": r"not readable as audio \(",
        "text.wav": r"not readable as audio \(",
        "empty.wav": r"zero-length audio",
        "nan.wav": r"contains NaN or infinite samples",
        "truncated.wav": r"truncated file \(header declares \d+ bytes of data, only \d+ present\)",
        "truncated.flac": r"cannot read samples \d+\.\.\d+ \(",
    }


def test_denoise_file_bad_inputs(den: Denoiser, tmp_path: Path) -> None:
    bad = make_bad_files(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    for name, reason in {**bad, "missing.wav": r"file not found"}.items():
        with pytest.raises(AudioReadError, match=rf"{name}: {reason}"):
            den.denoise_file(tmp_path / "in" / name, out / name)
    assert os.listdir(out) == []


def test_denoise_file_short_reads(den: Denoiser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write(tmp_path / "a.wav", make_wave(16000, 1, 0.5), 16000)
    real_read = sf.SoundFile.read
    monkeypatch.setattr(sf.SoundFile, "read", lambda self, frames=-1, **kw: real_read(self, max(frames - 1, 0), **kw))
    with pytest.raises(AudioReadError, match=r"a.wav: truncated file \(header declares 8000 frames, read stopped at"):
        den.denoise_file(src, tmp_path / "o.wav")
    monkeypatch.setattr(sf.SoundFile, "read", real_read)
    from xmodal.denoise import _SoundFileSource

    real_blocks, passes = _SoundFileSource.blocks, []

    def shrinking(self):  # the file is cut short between the level pass and the denoising pass
        passes.append(1)
        for block in real_blocks(self):
            yield block if len(passes) == 1 else block[:, :5000]
            break

    monkeypatch.setattr(_SoundFileSource, "blocks", shrinking)
    with pytest.raises(AudioReadError, match=r"a.wav: ended at sample 5000 on the second reading, before sample 8000"):
        den.denoise_file(src, tmp_path / "o.wav")
    assert len(passes) == 2 and sorted(os.listdir(tmp_path)) == ["a.wav"]


def test_forward_reader(tmp_path: Path) -> None:
    """Reads that only move forward get the samples of the whole file, holding only what comes after the last read's
    start; a read that goes back is a bug, and says so."""
    from xmodal.denoise import _ForwardReader, _SoundFileSource

    wave = make_wave(16000, 2, 1.5)
    source = _SoundFileSource(write(tmp_path / "a.wav", wave, 16000, "FLOAT"))
    assert source.length == wave.shape[1] and [b.shape for b in source.blocks()] == [(2, wave.shape[1])]
    source.blocks = lambda: (wave[:, a:a + 700] for a in range(0, wave.shape[1], 700))  # many small blocks
    reader = _ForwardReader(source)
    for a, b in [(0, 10), (0, 2000), (1500, 1600), (1500, 9000), (8999, 12000), (15000, 16000), (16000, 24000),
                 (24000, 24000)]:  # overlapping, skipping ahead, empty
        got = reader.read(a, b)
        assert got.shape == (1, 2, b - a) and np.array_equal(got[0], wave[:, a:b])
        assert reader._buffer.shape[1] <= b - a + 700  # the samples before `a` are let go
    with pytest.raises(RuntimeError, match=r"a.wav: a read at sample 100 went back before sample 24000"):
        reader.read(100, 200)


def test_no_partial_output_when_the_network_fails(den: Denoiser, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    src = write(tmp_path / "in" / "a.wav", make_wave(16000, 1, 2.0), 16000)
    calls = []

    def failing(self, x, sample_rate, scale, full_band=True):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("boom")
        return x

    monkeypatch.setattr(Denoiser, "_enhance", failing)
    (tmp_path / "out").mkdir()
    with pytest.raises(RuntimeError, match="boom"):
        den.denoise_file(src, tmp_path / "out" / "a.wav", chunk_seconds=0.5)
    assert len(calls) == 2 and os.listdir(tmp_path / "out") == []


def test_length_guard(den: Denoiser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write(tmp_path / "a.wav", make_wave(16000, 1, 0.5), 16000)
    monkeypatch.setattr(Denoiser, "_stream", lambda self, read, length, *a, **k: iter([read(0, length - 1)]))
    with pytest.raises(RuntimeError, match=r"a.wav: wrote 7999 frames instead of 8000"):
        den.denoise_file(src, tmp_path / "b.wav")
    assert sorted(os.listdir(tmp_path)) == ["a.wav"]


# ----------------------------------------------------------------------------------------------------------------
# Command line


def test_console_scripts_are_the_commands(tmp_path: Path) -> None:
    """The install puts xmodal-train, -denoise, -evaluate and -export on the path: each is its module's main, and its
    usage names it as it was called."""
    import importlib
    from importlib.metadata import distribution

    scripts = {ep.name: ep for ep in distribution("xmodal").entry_points if ep.group == "console_scripts"}
    assert sorted(scripts) == ["xmodal-denoise", "xmodal-evaluate", "xmodal-export", "xmodal-train"]
    for name, entry in scripts.items():
        assert entry.load() is importlib.import_module(f"xmodal.{name.removeprefix('xmodal-')}").main
    src = write(tmp_path / "in" / "a.wav", make_wave(16000, 1, 0.5), 16000)
    script = Path(sys.executable).parent / "xmodal-denoise"  # the venv's bin folder, where pip put it
    done = subprocess.run([str(script), str(src), "-o", str(tmp_path / "out"), "--quiet"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert sf.info(str(tmp_path / "out" / "a.wav")).frames == 8000
    bad = subprocess.run([str(script), str(src)], capture_output=True, text=True)  # no -o
    assert bad.returncode == 2 and bad.stderr.startswith("usage: xmodal-denoise ")
    bad = subprocess.run([sys.executable, "-m", "xmodal.denoise", str(src)], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("usage: python -m xmodal.denoise ")


FORMATS = [("m8_pcm16.wav", 8000, 1, "PCM_16"), ("s16_pcm24.wav", 16000, 2, "PCM_24"),
           ("m44_float.wav", 44100, 1, "FLOAT"), ("s48_pcm16.wav", 48000, 2, "PCM_16"),
           ("s44_float.wav", 44100, 2, "FLOAT"), ("m48_pcm24.flac", 48000, 1, "PCM_24")]


def test_cli_keeps_rate_length_subtype_channels(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for i, (name, sr, ch, subtype) in enumerate(FORMATS):
        write(tmp_path / "in" / name, make_wave(sr, ch, 0.7 + 0.13 * i, seed=i), sr, subtype)
    out = tmp_path / "out" / "nested"
    assert main([str(tmp_path / "in"), "-o", str(out), "--model", str(run_dir), "--chunk-seconds", "0.3"]) == 0
    assert "denoised 6 file(s)" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == sorted(n for n, *_ in FORMATS)
    for name, *_ in FORMATS:
        a, b = sf.info(str(tmp_path / "in" / name)), sf.info(str(out / name))
        assert (b.samplerate, b.channels, b.frames, b.subtype) == (a.samplerate, a.channels, a.frames, a.subtype)


def test_cli_globs_files_and_options(run_dir: Path, tmp_path: Path) -> None:
    for name in ("a.wav", "b.wav", "c.flac"):
        write(tmp_path / name, make_wave(16000, 1, 0.4), 16000, "PCM_24" if name.endswith("flac") else "FLOAT")
    out = tmp_path / "out"
    argv = [str(tmp_path / "*.wav"), str(tmp_path / "c.flac"), str(tmp_path / "a.wav"), "-o", str(out), "--model",
            str(run_dir), "--quiet", "--mix", "0", "--atten-limit-db", "10", "--device", "cpu"]
    assert main(argv) == 0
    assert sorted(os.listdir(out)) == ["a.wav", "b.wav", "c.flac"]
    x, _ = sf.read(str(tmp_path / "b.wav"), dtype="float32")
    y, _ = sf.read(str(out / "b.wav"), dtype="float32")
    np.testing.assert_array_equal(x, y)  # mix 0 gives back the input


def test_cli_bad_files_reported_batch_continues(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = make_bad_files(tmp_path / "in")
    write(tmp_path / "in" / "good.wav", make_wave(16000, 1, 0.5), 16000)
    (tmp_path / "in" / "notes.txt").write_text("ignored: not an audio extension")
    out = tmp_path / "out"
    argv = [str(tmp_path / "in"), str(tmp_path / "missing.wav"), str(tmp_path / "nothing*.wav"), "-o", str(out),
            "--model", str(run_dir), "--quiet"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    for name, reason in bad.items():
        assert any(name in line and re.search(reason, line) for line in err.splitlines()), (name, err)
    assert "missing.wav: file not found" in err
    assert "nothing*.wav: file not found (no match for this pattern)" in err
    assert os.listdir(out) == ["good.wav"]  # no partial or hidden temp files


def test_cli_overwrite_rules(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = write(tmp_path / "in" / "a.wav", make_wave(16000, 1, 0.4), 16000)
    before = src.read_bytes()
    out = tmp_path / "out"
    base = ["-o", str(out), "--model", str(run_dir), "--quiet"]
    assert main([str(src)] + base) == 0
    assert main([str(src)] + base) == 1
    assert "a.wav: output file already exists (pass --overwrite)\n" in capsys.readouterr().err
    assert main([str(src), "--overwrite"] + base) == 0
    # the output folder is the input folder: never overwrite an input, even with --overwrite
    assert main([str(src), "-o", str(tmp_path / "in"), "--model", str(run_dir), "--quiet", "--overwrite"]) == 1
    assert "would overwrite the input file" in capsys.readouterr().err
    assert src.read_bytes() == before
    # two inputs with the same name would write the same output
    write(tmp_path / "other" / "a.wav", make_wave(16000, 1, 0.4), 16000)
    assert main([str(src), str(tmp_path / "other" / "a.wav"), "-o", str(tmp_path / "out2"), "--model",
                 str(run_dir), "--quiet"]) == 1
    assert "collides with that of" in capsys.readouterr().err
    assert os.listdir(tmp_path / "out2") == ["a.wav"]


def test_cli_empty_folder(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "-o", str(tmp_path / "out"), "--model", str(run_dir), "--quiet"]) == 1
    assert "empty: no audio files" in capsys.readouterr().err


def test_cli_usage_errors(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = write(tmp_path / "a.wav", make_wave(16000, 1, 0.2), 16000)
    assert main([]) == 2
    assert main(["--help"]) == 0
    capsys.readouterr()
    assert main([str(src), "-o", str(tmp_path / "o"), "--model", str(run_dir), "--mix", "2"]) == 2
    assert "--mix must be in [0, 1]" in capsys.readouterr().err
    assert main([str(src), "-o", str(tmp_path / "o"), "--model", str(run_dir), "--chunk-seconds", "0"]) == 2
    assert "--chunk-seconds must be a positive number" in capsys.readouterr().err
    assert main([str(src), "-o", str(tmp_path / "o"), "--model", str(tmp_path / "nope")]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main([str(src), "-o", str(src), "--model", str(run_dir)]) == 2
    assert f"-o {src}: a file; -o names the output folder (outputs keep their input's name in it)" \
        in capsys.readouterr().err
    (tmp_path / "blocked").write_text("a file where a folder would go")
    assert main([str(src), "-o", str(tmp_path / "blocked" / "o"), "--model", str(run_dir)]) == 2
    assert "o: cannot create the output folder" in capsys.readouterr().err


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "xmodal.denoise", str(tmp_path / "x.wav")], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "-o/--output-dir" in r.stderr


def test_full_disk_is_named_when_libsndfile_says_system_error(tmp_path, monkeypatch):
    """libsndfile reports a full disk as "System error."; the error says what it is, and nothing is left behind."""
    import errno

    import xmodal.io
    from xmodal.io import write_audio

    def fail(self, data):
        raise sf.LibsndfileError(2)  # what libsndfile raises when write(2) fails with ENOSPC

    monkeypatch.setattr(sf.SoundFile, "write", fail)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(xmodal.io.shutil, "disk_usage", lambda p: usage._replace(free=4096))
    with pytest.raises(OSError, match=r"out.wav: no space left on the device \(libsndfile: System error.\); nothing "
                                      r"was written") as info:
        write_audio(tmp_path / "out.wav", np.zeros((1, 100), np.float32), 16000)
    assert info.value.errno == errno.ENOSPC and os.listdir(tmp_path) == []
    monkeypatch.setattr(xmodal.io.shutil, "disk_usage", lambda p: usage._replace(free=10 << 30))
    with pytest.raises(sf.LibsndfileError, match=r"System error"):  # space left: libsndfile's own error, unchanged
        write_audio(tmp_path / "out.wav", np.zeros((1, 100), np.float32), 16000)
    assert os.listdir(tmp_path) == []
