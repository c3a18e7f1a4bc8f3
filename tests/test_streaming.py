"""Causal speech models and real-time streaming: causality, frame-by-frame == whole-signal, SpeechStream ==
Denoiser.denoise, latency, independent streams, and every error with its message.

Everything runs small untrained causal U-Nets on generated audio, on CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from xmodal.checkpoint import load_run, save_weights
from xmodal.config import ConfigError, dump_config, load_config
from xmodal.denoise import Denoiser, load
from xmodal.modalities import modality_io
from xmodal.models import build_model
from xmodal.models.layers import CausalConv2d, StreamState, streaming
from xmodal.io import resample
from xmodal.streaming import SpeechStream, StreamResampler

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "tiny.yaml"
CAUSAL = ["model.causal=true", "audio.normalize_rms=false", "model.widths=[4,8,12]"]


def causal_net(overrides: list[str] | None = None, seed: int = 0):
    cfg = load_config(TINY, CAUSAL + (overrides or []))
    torch.manual_seed(seed)
    net = build_model(cfg.model, {"speech": modality_io("speech", cfg)}).eval()
    return net, cfg


@pytest.fixture(scope="module")
def den() -> Denoiser:
    """A tiny causal model (n_fft 256, hop 64) with random weights, made non-trivial by a large mask."""
    net, cfg = causal_net()
    return Denoiser(net, cfg, name="tiny-causal")


def wave(channels: int, length: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(length) / 16000
    tone = 0.2 * np.sin(2 * np.pi * 330 * t + 2 * np.sin(2 * np.pi * 2 * t))
    return (tone + 0.05 * rng.standard_normal((channels, length))).astype(np.float32)


def run_stream(stream: SpeechStream, x: np.ndarray, sizes: list[int]) -> tuple[np.ndarray, list[int]]:
    """Push ``x`` in blocks of ``sizes`` (cycled), flush; returns the output and the samples each call returned."""
    outs, counts, i, k = [], [], 0, 0
    while i < x.shape[-1]:
        n = sizes[k % len(sizes)]
        outs.append(stream.push(x[..., i:i + n]))
        counts.append(outs[-1].shape[-1])
        i, k = i + n, k + 1
    outs.append(stream.flush())
    counts.append(outs[-1].shape[-1])
    return np.concatenate(outs, axis=-1), counts


# ----------------------------------------------------------------------------------------------------------------
# causal layers and networks


def test_causal_conv_sees_only_the_past():
    torch.manual_seed(0)
    conv = CausalConv2d(3, 5, 3, dilation=4)
    assert conv.past == 8 and conv.weight.shape == (5, 3, 3, 3)
    x = torch.randn(2, 3, 7, 40)
    y = conv(x)
    assert y.shape == (2, 5, 7, 40)
    x2 = x.clone()
    x2[..., 25:] += 1.0
    y2 = conv(x2)
    assert torch.equal(y[..., :25], y2[..., :25]) and not torch.allclose(y[..., 25:], y2[..., 25:])
    x3 = x.clone()
    x3[..., 10] += 1.0  # frame 10 reaches frames 10, 14 and 18 (dilation 4), nothing else
    changed = (conv(x3) - y).abs().sum(dim=(0, 1, 2)) > 0
    assert changed.nonzero().flatten().tolist() == [10, 14, 18]
    with pytest.raises(ValueError, match="odd kernel along H, got 2"):
        CausalConv2d(3, 5, (2, 3))


def test_causal_network_ignores_the_future_and_needs_no_time_multiple():
    net, _ = causal_net()
    assert net.trunk.causal and net.trunk.time_multiple == 1 and net.trunk.size_multiple == 4
    x = torch.randn(1, 2, 129, 37)  # 37 frames: no padding along time for a causal trunk
    with torch.no_grad():
        y = net(x, "speech")
        x2 = x.clone()
        x2[..., 20:] = torch.randn(1, 2, 129, 17)
        y2 = net(x2, "speech")
    assert y.shape == x.shape
    assert torch.equal(y[..., :20], y2[..., :20]) and not torch.allclose(y[..., 20:], y2[..., 20:])


def test_causal_trunk_dilates_time_per_level_and_downsamples_frequency_only():
    net, _ = causal_net()
    dil = [net.trunk.enc[0][0].conv1.dilation, net.trunk.enc[1][0].conv1.dilation, net.trunk.mid[0].conv1.dilation]
    assert dil == [(1, 1), (1, 2), (1, 4)]
    assert net.trunk.down[0].stride == (2, 1) and net.trunk.up[0].stride == (2, 1)
    x = torch.randn(1, 4, 16, 9)
    assert net.trunk.down[0](x).shape == (1, 8, 8, 9)


@pytest.mark.parametrize("splits", [[1] * 30, [7, 1, 13, 9], [30], [2, 28]])
def test_frame_by_frame_equals_whole_signal(splits):
    net, _ = causal_net()
    x = torch.randn(2, 2, 129, 30)
    with torch.no_grad():
        whole = net(x, "speech")
        state, outs, i = StreamState(), [], 0
        with streaming(state):
            for n in splits:
                outs.append(net(x[..., i:i + n], "speech"))
                i += n
    torch.testing.assert_close(torch.cat(outs, dim=-1), whole, rtol=0, atol=1e-5)
    n_causal = sum(isinstance(m, CausalConv2d) for m in net.modules())
    assert len(state) == n_causal  # every causal convolution keeps its own past
    state.reset()
    assert len(state) == 0


def test_streams_are_independent_and_outside_a_stream_nothing_is_kept():
    net, _ = causal_net()
    a, b = torch.randn(1, 2, 129, 12), torch.randn(1, 2, 129, 12)
    with torch.no_grad():
        ref_a, ref_b = net(a, "speech"), net(b, "speech")
        sa, sb = StreamState(), StreamState()
        outs_a, outs_b = [], []
        for k in range(0, 12, 3):  # interleaved on one model
            with streaming(sa):
                outs_a.append(net(a[..., k:k + 3], "speech"))
            with streaming(sb):
                outs_b.append(net(b[..., k:k + 3], "speech"))
        assert torch.equal(net(a, "speech"), ref_a)  # no stream: zero past, as before
    torch.testing.assert_close(torch.cat(outs_a, -1), ref_a, rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.cat(outs_b, -1), ref_b, rtol=0, atol=1e-5)


def test_a_stream_refuses_frames_of_another_shape():
    net, _ = causal_net()
    with torch.no_grad(), streaming(StreamState()):
        net(torch.randn(1, 2, 129, 3), "speech")
        with pytest.raises(ValueError, match=r"changed shape from \(1, 3, 132\) to \(2, 3, 132\).*reset the stream"):
            net(torch.randn(2, 2, 129, 3), "speech")


def test_causal_config_errors():
    with pytest.raises(ConfigError, match="`model.causal` is for speech models .* got modality image"):
        load_config(REPO / "recipes" / "tiny_image.yaml", ["model.causal=true"])
    cfg = load_config(TINY, ["model.causal=true", "model.arch=cnn"])
    with pytest.raises(ValueError, match="model.causal needs model.arch 'unet'"):
        build_model(cfg.model, {"speech": modality_io("speech", cfg)})


def test_causal_model_saves_and_loads(tmp_path):
    net, cfg = causal_net(seed=3)
    save_weights(net, tmp_path / "model.safetensors", cfg)
    dump_config(cfg, tmp_path / "config.yaml")
    net2, cfg2 = load_run(tmp_path)
    assert cfg2.model.causal and not cfg2.audio.normalize_rms
    x = torch.randn(1, 2, 129, 20)
    with torch.no_grad():
        torch.testing.assert_close(net2(x, "speech"), net(x, "speech"), rtol=0, atol=0)
    assert isinstance(load(tmp_path).stream(), SpeechStream)


# ----------------------------------------------------------------------------------------------------------------
# SpeechStream == Denoiser.denoise


@pytest.mark.parametrize("length", [1, 100, 128, 129, 130, 1000, 8000])
@pytest.mark.parametrize("channels", [1, 2])
def test_stream_equals_offline_denoise(den, length, channels):
    x = wave(channels, length, seed=length)
    ref = den.denoise(x, 16000)
    y, counts = run_stream(den.stream(channels=channels), x, [37, 0, 200, 64, 1])
    assert y.shape == x.shape and sum(counts) == length
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-6 + 1e-5 * np.abs(ref).max())
    assert np.abs(y - x).max() > 1e-3  # the model does change the signal


def test_stream_of_a_long_signal_equals_chunked_offline_denoise(den):
    x = wave(1, 5 * 16000, seed=7)
    ref = den.denoise(x, 16000, chunk_seconds=1.0)  # several chunks offline
    y, _ = run_stream(den.stream(), x, [160])  # 10 ms blocks
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_stream_latency_is_n_fft_minus_hop(den):
    stream = den.stream()
    n_fft, hop = 256, 64
    assert stream.delay == n_fft - hop
    x = wave(1, 40 * hop)[0]
    got = 0
    for k in range(40):
        got += stream.push(x[k * hop:(k + 1) * hop]).shape[0]
        assert got == max(0, (k + 1) * hop - stream.delay), k
    assert stream.flush().shape[0] == stream.delay


def test_stream_mix_and_attenuation_limit_match_denoise(den):
    x = wave(2, 3000, seed=2)
    for kw in ({"mix": 0.3}, {"atten_limit_db": 6.0}, {"mix": 0.5, "atten_limit_db": 12.0}, {"mix": 0.0}):
        ref = den.denoise(x, 16000, **kw)
        y, _ = run_stream(den.stream(channels=2, **kw), x, [300])
        np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5 * np.abs(ref).max(), err_msg=str(kw))
    y, _ = run_stream(den.stream(channels=2, mix=0.0), x, [300])
    np.testing.assert_array_equal(y, x)


def test_stream_types_layouts_and_reset(den):
    x = wave(1, 2000, seed=4)
    stream = den.stream()
    first, _ = run_stream(stream, x[0], [250])  # 1-D blocks -> 1-D output
    assert first.ndim == 1 and first.shape == (2000,)
    with pytest.raises(RuntimeError, match="was already flushed; call reset"):
        stream.flush()
    with pytest.raises(RuntimeError, match="this stream was flushed; call reset"):
        stream.push(x[0, :10])
    stream.reset()
    outs = [stream.push(torch.from_numpy(x[:, i:i + 500])) for i in range(0, 2000, 500)]  # (1, n) tensors
    outs.append(stream.flush())
    assert all(isinstance(o, torch.Tensor) and o.ndim == 2 for o in outs)
    np.testing.assert_allclose(torch.cat(outs, -1).numpy()[0], first, rtol=0, atol=1e-6)
    empty = den.stream()
    assert empty.flush().shape == (0,)
    assert "SpeechStream(tiny-causal, channels=1, sample_rate=16000, delay=192)" == repr(den.stream())


def test_public_name():
    import xmodal

    assert xmodal.SpeechStream is SpeechStream and "SpeechStream" in dir(xmodal)


def test_stream_bf16_is_close_to_fp32(den):
    x = wave(1, 4000, seed=5)
    ref, _ = run_stream(den.stream(), x, [400])
    y, _ = run_stream(den.stream(precision="bf16"), x, [400])
    assert np.abs(y - ref).max() < 0.05 * np.abs(ref).max()


# ----------------------------------------------------------------------------------------------------------------
# running level normalisation (audio.running_rms_seconds): what a stream can do instead of normalize_rms


@pytest.fixture(scope="module")
def den_level() -> Denoiser:
    """The tiny causal model of `den`, with a 0.3 s running level (75 frames of hop 64) brought to RMS 0.05."""
    net, cfg = causal_net(["audio.running_rms_seconds=0.3", "audio.target_rms=0.05"])
    return Denoiser(net, cfg, name="tiny-level")


@pytest.mark.parametrize("rate", [16000, 48000])
def test_running_level_stream_equals_offline_denoise(den_level, rate):
    assert den_level.adapter.level_frames == 75
    for length, channels in ((1, 1), (129, 2), (1000, 1), (3 * rate, 2)):  # shorter and longer than the window
        x = wave(channels, length, seed=length)
        x[..., length // 2:] *= 20.0  # a level change inside the signal
        ref = den_level.denoise(x, rate)  # at 48 kHz with the band above the model's, as offline
        y, counts = run_stream(den_level.stream(channels=channels, sample_rate=rate), x, [rate // 100, 37, 0, 1])
        assert y.shape == x.shape and sum(counts) == length
        np.testing.assert_allclose(y, ref, rtol=0, atol=1e-6 + 1e-5 * np.abs(ref).max(), err_msg=str(length))


def test_running_level_chunked_offline_equals_stream(den_level):
    """Chunks get enough context for the level's window too (it is part of the receptive field)."""
    net_rf = den_level.receptive_field - 74 * 64
    net, cfg = causal_net()
    assert net_rf == Denoiser(net, cfg).receptive_field  # the same network without the level: 74 frames less
    x = wave(1, 5 * 16000, seed=7)
    x[:, 40000:] *= 0.05
    ref = den_level.denoise(x, 16000, chunk_seconds=1.0)  # several chunks offline
    y, _ = run_stream(den_level.stream(), x, [160])
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_running_level_makes_the_output_follow_the_input_level(den_level, den):
    x = wave(2, 16000, seed=3)
    ref = den_level.denoise(x, 16000)
    for k in (1e-3, 0.1, 4.0):
        np.testing.assert_allclose(den_level.denoise(k * x, 16000), k * ref, rtol=0, atol=2e-6 * k)
    plain = den.denoise(x, 16000)  # without it the network sees the level, and the output does not scale with it
    assert np.abs(den.denoise(1e-3 * x, 16000) - 1e-3 * plain).max() > 0.1 * 1e-3 * np.abs(plain).max()


def test_running_level_model_trains_saves_and_streams(tiny_config, tmp_path):
    """Training encodes the clean target with the noisy input's frame gains; the saved run keeps the setting."""
    from dataclasses import replace

    from xmodal.train import train

    cfg = load_config(TINY, CAUSAL + ["audio.running_rms_seconds=0.2", "audio.target_rms=0.05",
                                      "train.max_steps=2", "train.eval_every=0", f"train.run_dir={tmp_path / 'r'}"])
    cfg = replace(cfg, data=tiny_config.data)
    result = train(cfg)
    assert all(np.isfinite(result.losses))
    den2 = load(result.run_dir)
    assert den2.config.audio.running_rms_seconds == 0.2 and den2.adapter.level_frames == 50
    x = wave(1, 4000, seed=9)
    y, _ = run_stream(den2.stream(), x, [160])
    np.testing.assert_allclose(y, den2.denoise(x, 16000), rtol=0, atol=1e-5 * np.abs(y).max())


# ----------------------------------------------------------------------------------------------------------------
# other rates: a streaming resampler in and out


@pytest.mark.parametrize("rates", [(48000, 16000), (16000, 48000), (44100, 16000), (16000, 44100), (8000, 16000),
                                   (16000, 22050), (16000, 16001)])
def test_stream_resampler_equals_offline_resample(rates):
    rng = np.random.default_rng(sum(rates))
    for length in (1, 5, 441, 3001):
        x = rng.standard_normal((2, length)).astype(np.float32)
        ref = resample(torch.from_numpy(x), *rates).numpy()
        r = StreamResampler(*rates, channels=2)
        outs, i = [], 0
        for n in rng.integers(0, 400, size=length + 1):
            if i >= length:
                break
            outs.append(r.push(x[:, i:i + n]))
            i += n
        outs.append(r.flush())
        y = np.concatenate(outs, axis=1)
        assert y.shape == ref.shape == (2, -(-length * rates[1] // rates[0]))
        np.testing.assert_allclose(y, ref, rtol=0, atol=1e-6)


def test_stream_resampler_delay_reset_and_errors():
    r = StreamResampler(48000, 16000)
    assert (r.delay, r.max_delay) == (19, 21)  # width 19 input samples, groups of 3
    assert (StreamResampler(44100, 16000).delay, StreamResampler(44100, 16000).max_delay) == (17, 457)
    x = np.random.default_rng(0).standard_normal((1, 3000)).astype(np.float32)
    got = 0
    for k in range(0, 3000, 100):
        got += r.push(x[:, k:k + 100]).shape[1]
        lag = (k + 100) - 3 * got  # input samples not yet represented in the output
        assert r.delay <= lag <= r.max_delay
    assert got + r.flush().shape[1] == 1000
    with pytest.raises(RuntimeError, match="this resampler was already flushed; call reset"):
        r.flush()
    with pytest.raises(RuntimeError, match="this resampler was flushed; call reset"):
        r.push(x)
    r.reset()
    whole = np.concatenate([r.push(x), r.flush()], axis=1)
    np.testing.assert_allclose(whole, resample(torch.from_numpy(x), 48000, 16000).numpy(), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"`sample_rate` must be a positive integer \(Hz\), got 0"):
        StreamResampler(0, 16000)
    with pytest.raises(ValueError, match=r"`sample_rate` must be a positive integer \(Hz\), got 22050.5"):
        StreamResampler(16000, 22050.5)
    with pytest.raises(ValueError, match=r"`channels` must be a positive integer, got 0"):
        StreamResampler(48000, 16000, channels=0)
    r.reset()
    with pytest.raises(ValueError, match=r"Expected a block of shape \(1, n\) for a 1-channel resampler, got \(2, 5\)"):
        r.push(np.zeros((2, 5), np.float32))
    with pytest.raises(TypeError, match="Expected `block` to be a float array, got dtype int16"):
        r.push(np.zeros((1, 5), np.int16))
    assert r.push(torch.zeros(1, 300)).shape == (1, (300 - 19) // 3)  # a tensor is taken too


@pytest.mark.parametrize("rate", [48000, 44100, 8000])
def test_stream_at_another_rate_equals_offline_denoise(den, rate):
    for length, channels in ((1, 1), (7, 2), (300, 1), (rate // 2, 2)):
        x = wave(channels, length, seed=length)
        ref = den.denoise(x, rate)  # above 16 kHz with the band above the model's, as offline
        stream = den.stream(channels=channels, sample_rate=rate)
        assert stream.sample_rate == rate and stream.model_rate == 16000
        y, counts = run_stream(stream, x, [rate // 100, 37, 0, 1, 1000])
        assert y.shape == x.shape and sum(counts) == length
        np.testing.assert_allclose(y, ref, rtol=0, atol=1e-6 + 1e-5 * np.abs(ref).max(), err_msg=str(length))
    x = wave(2, 4000, seed=3)
    kw = {"mix": 0.5, "atten_limit_db": 9.0}
    y, _ = run_stream(den.stream(channels=2, sample_rate=rate, **kw), x, [480])
    ref = den.denoise(x, rate, **kw)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    for full_band in (False, True):  # the band above the model's: kept or not, in the stream as offline
        y, _ = run_stream(den.stream(channels=2, sample_rate=rate, full_band=full_band), x, [333, 7])
        ref = den.denoise(x, rate, full_band=full_band)
        np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
        if rate > 16000:
            other = den.denoise(x, rate, full_band=not full_band)
            assert np.abs(y - other).max() > 100 * 1e-5 * np.abs(ref).max()  # and the two differ


@pytest.mark.parametrize("rate", [16000, 48000, 44100, 8000])
def test_stream_delay_bounds_the_lag(den, rate):
    """After every push the output lags the input by at least `delay` and at most `max_delay` samples, for any block
    size; at the model's rate and whole hops exactly `delay` (tested above)."""
    x = wave(1, rate // 2)[0]
    lags = []
    for block in (1, 64, rate // 100, 1000):
        stream = den.stream(sample_rate=rate)
        got = i = 0
        while i < x.shape[0]:
            got += stream.push(x[i:i + block]).shape[0]
            i = min(x.shape[0], i + block)
            if got:
                lags.append(i - got)
        assert stream.flush().shape[0] == x.shape[0] - got
    assert stream.delay <= min(lags) and max(lags) <= stream.max_delay
    if rate == 16000:
        assert (stream.delay, stream.max_delay) == (192, 255)
    if rate == 48000:  # the model's 192 samples x 3 + the filters' half widths: 19 at 48 kHz, 7 x 3 at 16 kHz
        assert stream.delay == 19 + (192 + 7) * 3 and max(lags) > 3 * 192
    assert f"sample_rate={rate}, delay={stream.delay})" in repr(stream)


# ----------------------------------------------------------------------------------------------------------------
# errors


def test_stream_refuses_models_that_cannot_stream(run_dir):
    with pytest.raises(ValueError, match=r"is not causal \(model.causal: false\).*cannot stream.*'speech_rt'"):
        load(run_dir).stream()
    net, cfg = causal_net(["audio.normalize_rms=true"])
    with pytest.raises(ValueError, match=r"'rms' normalises each input by its whole-signal RMS.*normalize_rms: false"):
        Denoiser(net, cfg, name="rms").stream()


def test_stream_argument_and_block_errors(den):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="`channels` must be a positive integer"):
            den.stream(channels=bad)
    with pytest.raises(ValueError, match=r"`mix` must be in \[0, 1\]"):
        den.stream(mix=2.0)
    with pytest.raises(ValueError, match="`atten_limit_db` must be a non-negative"):
        den.stream(atten_limit_db=-3.0)
    with pytest.raises(ValueError, match="`precision` must be 'fp32', 'bf16' or 'auto', got 'fp16'"):
        den.stream(precision="fp16")
    for bad in (0, -8000, 44100.5, "48000"):
        with pytest.raises(ValueError, match=r"`sample_rate` must be a positive integer \(Hz\)"):
            den.stream(sample_rate=bad)
    stereo = den.stream(channels=2)
    with pytest.raises(ValueError, match=r"shape \(2, n\) for a 2-channel stream, got \(100,\)"):
        stereo.push(np.zeros(100, np.float32))
    with pytest.raises(ValueError, match=r"shape \(2, n\) for a 2-channel stream, got \(3, 100\)$"):
        stereo.push(np.zeros((3, 100), np.float32))
    with pytest.raises(ValueError, match=r"shape \(2, n\) for a 2-channel stream, got \(160, 2\); push block.T for "
                                         r"an \(n, C\) block, as sounddevice gives"):
        stereo.push(np.zeros((160, 2), np.float32))
    mono = den.stream()
    with pytest.raises(ValueError, match=r"1-channel stream, got \(160, 1\); push block.T for an \(n, C\) block"):
        mono.push(np.zeros((160, 1), np.float32))
    with pytest.raises(ValueError, match=r"shape \(n,\) or \(1, n\) for a 1-channel stream, got \(2, 5\)"):
        mono.push(np.zeros((2, 5), np.float32))
    with pytest.raises(TypeError, match="Expected `block` to be a float array, got dtype int16"):
        mono.push(np.zeros(10, np.int16))
    with pytest.raises(TypeError, match="Expected `block` to be a float tensor, got dtype torch.int64"):
        mono.push(torch.zeros(10, dtype=torch.long))
    with pytest.raises(TypeError, match="Expected `block` to be a numpy array or a torch tensor, got list"):
        mono.push([0.0, 0.1])
    bad = np.zeros(300, np.float32)
    bad[123] = np.nan
    with pytest.raises(ValueError, match="the block contains NaN or infinite samples"):
        mono.push(bad)
    x = wave(1, 1000)[0]  # a rejected block leaves the stream as it was
    y, _ = run_stream(mono, x, [333])
    np.testing.assert_allclose(y, den.denoise(x, 16000), rtol=0, atol=1e-5 * np.abs(y).max())


# ----------------------------------------------------------------------------------------------------------------
# ONNX: a causal export takes and returns its pasts, and streams through the same SpeechStream


@pytest.fixture(scope="module")
def causal_run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("causal_run")
    net, cfg = causal_net(seed=1)
    save_weights(net, d / "model.safetensors", cfg)
    dump_config(cfg, d / "config.yaml")
    return d


def test_causal_onnx_export_streams_like_pytorch(causal_run, tmp_path):
    import onnxruntime as ort

    from xmodal.export import OnnxNet, export_onnx

    report = export_onnx(causal_run, tmp_path / "rt.onnx")
    assert report.max_abs_diff < 1e-4 and report.states == sum(isinstance(m, CausalConv2d)
                                                               for m in load_run(causal_run)[0].modules())
    session = ort.InferenceSession(str(tmp_path / "rt.onnx"), providers=["CPUExecutionProvider"])
    net, _ = load_run(causal_run)
    shapes = OnnxNet(net, "speech").state_shapes(2, 129)
    names = [i.name for i in session.get_inputs()]
    assert names == ["noisy"] + [f"past_{i}" for i in range(len(shapes))]
    assert len(shapes) == sum(isinstance(m, CausalConv2d) for m in net.modules())
    assert [tuple(i.shape[1:]) for i in session.get_inputs()[1:]] == shapes
    assert [o.name for o in session.get_outputs()][1:] == [f"past_{i}_out" for i in range(len(shapes))]
    # frame by frame through ONNX Runtime, each call's pasts into the next == one PyTorch pass
    x = torch.randn(2, 2, 129, 9)
    pasts = [np.zeros((2, *s), np.float32) for s in shapes]
    outs = []
    for t in range(9):
        y, *pasts = session.run(None, {"noisy": x[..., t:t + 1].numpy(),
                                       **{f"past_{i}": p for i, p in enumerate(pasts)}})
        outs.append(y)
    with torch.no_grad():
        ref = net(x, "speech").numpy()
    np.testing.assert_allclose(np.concatenate(outs, -1), ref, rtol=0, atol=1e-4)
    # and through xmodal: load the file, denoise and stream
    den_onnx, den_torch = load(tmp_path / "rt.onnx"), load(causal_run)
    x = wave(2, 3000, seed=9)
    ref = den_torch.denoise(x, 16000)
    np.testing.assert_allclose(den_onnx.denoise(x, 16000), ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    y, _ = run_stream(den_onnx.stream(channels=2), x, [160])
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    x48 = wave(1, 4800, seed=10)  # at the sound card's rate too
    ref = den_torch.denoise(x48, 48000)
    y, _ = run_stream(den_onnx.stream(sample_rate=48000), x48, [480])
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    with torch.no_grad(), streaming(StreamState()):  # the exported network keeps one stream's batch too
        den_onnx.model(torch.randn(1, 2, 129, 3), "speech")
        with pytest.raises(ValueError, match="a stream's frames changed batch from 1 to 2; reset the stream first"):
            den_onnx.model(torch.randn(2, 2, 129, 3), "speech")


def test_causal_onnx_export_cli_reports_its_states(causal_run, tmp_path, capsys):
    from xmodal.export import main

    assert main([str(causal_run), "-o", str(tmp_path / "rt.onnx")]) == 0
    out = capsys.readouterr().out
    assert "ONNX Runtime streamed in two calls = one call (checked)" in out
    assert "causal: 12 past-frame inputs past_0..past_11" in out  # stem, 2 x (2 + 2) + 2 trunk convs, head


def test_causal_onnx_int8_export_runs_with_zero_pasts(causal_run, tmp_path):
    import soundfile as sf

    from xmodal.export import export_onnx

    sf.write(tmp_path / "cal.wav", wave(1, 8000, seed=3)[0], 16000)
    report = export_onnx(causal_run, tmp_path / "rt.onnx", int8=True, calibration=[tmp_path / "cal.wav"])
    assert report.int8_path.is_file() and report.calibration_inputs >= 1
    x = wave(1, 4000, seed=11)
    ref = load(causal_run).denoise(x, 16000)
    y, _ = run_stream(load(report.int8_path).stream(), x, [160])
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() < 0.2 * np.abs(ref).max()  # int8: close, not equal
