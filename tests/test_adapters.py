import numpy as np
import pytest
import torch

from xmodal.adapters import AudioAdapter
from xmodal.adapters.audio import AudioContext, compress, decompress, frame_power, running_gains
from xmodal.config import AudioConfig


@pytest.fixture
def adapter():
    return AudioAdapter(AudioConfig())


@pytest.mark.parametrize("shape", [(16001,), (1, 7777), (2, 4099), (3, 2, 5001), (2, 1, 129)])
def test_round_trip_exact_length(adapter, shape):
    torch.manual_seed(0)
    x = torch.randn(*shape) * 0.2
    feats, ctx = adapter.encode(x)
    assert feats.shape[1] == 2 and feats.shape[2] == 257
    y = adapter.decode(feats, ctx)
    assert y.shape == x.shape
    assert (y - x).abs().max() <= 1e-4


@pytest.mark.parametrize("cfg", [AudioConfig(n_fft=400, hop_length=100), AudioConfig(compress=1.0),
                                 AudioConfig(normalize_rms=False), AudioConfig(n_fft=256, hop_length=64,
                                                                                win_length=200)])
def test_round_trip_other_settings(cfg):
    a = AudioAdapter(cfg)
    x = torch.randn(2, 3001) * 0.3
    feats, ctx = a.encode(x)
    assert (a.decode(feats, ctx) - x).abs().max() <= 1e-4


def test_batch_consistency(adapter):
    x = torch.randn(3, 2, 3000) * torch.tensor([0.01, 0.1, 0.5])[:, None, None]
    feats, ctx = adapter.encode(x)
    per_item = [adapter.encode(x[i])[0] for i in range(3)]
    torch.testing.assert_close(feats, torch.cat(per_item), atol=1e-5, rtol=1e-5)


def test_stereo_shares_one_scale(adapter):
    left = torch.randn(4000) * 0.01
    x = torch.stack([left, 4 * left])  # (2, T): right channel 12 dB louder
    feats, ctx = adapter.encode(x)
    assert ctx.scale.shape == (1, 1, 1)
    torch.testing.assert_close(feats[1], feats[0] * 4 ** 0.3, atol=1e-5, rtol=1e-4)  # compressed ratio kept


def test_normalisation_fixes_rms_and_ctx_reuse(adapter):
    quiet = torch.randn(1, 8000) * 1e-3
    feats, ctx = adapter.encode(quiet)
    assert adapter.normalize(quiet, ctx).pow(2).mean().sqrt().item() == pytest.approx(0.1, rel=1e-3)
    clean = quiet * 0.5
    target, ctx2 = adapter.encode(clean, ctx)
    assert ctx2 is ctx
    torch.testing.assert_close(target, feats * 0.5 ** 0.3, atol=1e-5, rtol=1e-4)


def test_silence_is_safe(adapter):
    x = torch.zeros(2, 1000)
    feats, ctx = adapter.encode(x)
    assert torch.isfinite(feats).all()
    assert adapter.decode(feats, ctx).abs().max() == 0


def test_fp32_under_autocast(adapter):
    x = torch.randn(1, 4000) * 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats, ctx = adapter.encode(x)
        y = adapter.decode(feats.bfloat16(), ctx)
    assert feats.dtype == torch.float32 and y.dtype == torch.float32


def test_compress_inverse():
    z = torch.randn(5, 7, dtype=torch.complex64)
    torch.testing.assert_close(decompress(compress(z, 0.3), 0.3), z, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(compress(z, 0.3).abs(), z.abs() ** 0.3, atol=1e-5, rtol=1e-4)


def test_errors(adapter):
    with pytest.raises(ValueError, match=r"Expected `wave` of shape \(T,\), \(C, T\) or \(B, C, T\), "
                                         r"got \(2, 3, 4, 5\)"):
        adapter.encode(torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"Expected `wave` with at least one sample, got length 0"):
        adapter.encode(torch.zeros(2, 0))
    with pytest.raises(TypeError, match=r"Expected `wave` to be a torch.Tensor, got list"):
        adapter.encode([0.0, 1.0])
    _, ctx = adapter.encode(torch.zeros(2, 1, 100))
    with pytest.raises(ValueError, match=r"`ctx` was made for batch size 2, got a wave with batch 3"):
        adapter.encode(torch.zeros(3, 1, 100), ctx)
    with pytest.raises(ValueError, match=r"audio.win_length \(600\) must be at most audio.n_fft \(512\)"):
        AudioAdapter(AudioConfig(win_length=600))
    with pytest.raises(ValueError, match=r"audio.hop_length must be in \(0, win_length=512\], got 0"):
        AudioAdapter(AudioConfig(hop_length=0))
    with pytest.raises(ValueError, match=r"audio.compress must be in \(0, 1\], got 1.5"):
        AudioAdapter(AudioConfig(compress=1.5))
    assert isinstance(ctx, AudioContext)


# ----------------------------------------------------------------------------------------------------------------
# running level normalisation (audio.running_rms_seconds)


def level_adapter(**kw) -> AudioAdapter:
    return AudioAdapter(AudioConfig(normalize_rms=False, running_rms_seconds=kw.pop("seconds", 0.1),
                                    target_rms=kw.pop("target", 0.05), **kw))


@pytest.mark.parametrize("n_fft,win", [(512, None), (256, 200), (255, None)])
def test_frame_power_is_the_windowed_mean_square(n_fft, win):
    a = AudioAdapter(AudioConfig(n_fft=n_fft, hop_length=64, win_length=win))
    torch.manual_seed(0)
    x = torch.randn(2, 3000) * torch.tensor([[0.01], [0.3]])
    spec = a.stft(x)  # (2, F, N)
    w = a.full_window()
    frames = torch.nn.functional.pad(x[:, None], (n_fft // 2, n_fft // 2), mode="reflect")[:, 0]
    frames = frames.unfold(-1, n_fft, 64)  # (2, N, n_fft), torch.stft's centred frames
    direct = (frames.double() * w.double()).square().sum(-1) / w.double().square().sum()
    np.testing.assert_allclose(frame_power(spec, w), direct.numpy(), rtol=1e-5, atol=0)
    np.testing.assert_allclose(frame_power(spec.transpose(1, 2), w, dim=-1), direct.numpy(), rtol=1e-5, atol=0)


def test_running_gains_average_the_last_frames_and_chunk_exactly():
    power = np.array([[4.0, 4.0, 16.0, 16.0, 16.0, 0.0]])
    g = running_gains(power, power[:, :0], 0, 3, 1.0)
    rms = np.sqrt([4.0, 4.0, 8.0, 12.0, 16.0, 32.0 / 3])  # windows of 1, 2, then 3 frames
    np.testing.assert_allclose(g[0], 1.0 / rms, rtol=1e-6, atol=0)
    assert g.dtype == np.float32
    pieces = [running_gains(power[:, :2], power[:, :0], 0, 3, 1.0),  # a stream: 2 frames, then 1, then 3
              running_gains(power[:, 2:3], power[:, :2], 2, 3, 1.0),
              running_gains(power[:, 3:], power[:, 1:3], 3, 3, 1.0)]
    np.testing.assert_array_equal(np.concatenate(pieces, 1), g)
    silent = running_gains(np.zeros((1, 4)), power[:, :0], 0, 3, 0.05)
    np.testing.assert_allclose(silent, np.full((1, 4), 0.05 / 1e-5, np.float32))  # the RMS floor bounds the gain


def test_running_level_round_trip_and_level_of_the_features():
    a = level_adapter()
    assert a.level_frames == 12  # 0.1 s at 16 kHz, hop 128: 12.5 frames, rounded
    torch.manual_seed(0)
    loud, quiet = torch.randn(2, 8000) * 0.3, torch.randn(2, 8000) * 0.003
    x = torch.cat([quiet, loud], dim=1)  # (2, 16000): 40 dB up half way
    feats, ctx = a.encode(x)
    assert ctx.frame_gain.shape == (1, feats.shape[-1]) and torch.all(ctx.scale == 1)
    torch.testing.assert_close(a.decode(feats, ctx), x, atol=1e-4 * 0.3, rtol=0)
    # the network sees every stretch near the target level once the window is past the change
    level = np.sqrt(frame_power(decompress(torch.view_as_complex(feats.permute(0, 2, 3, 1).contiguous()), 0.3),
                                a.full_window()).mean(0))  # (N,)
    n = feats.shape[-1]
    for part in (slice(30, n // 2 - 4), slice(n // 2 + 30, n - 4)):
        assert level[part].min() > 0.05 / 1.5 and level[part].max() < 0.05 * 1.5
    assert a.normalize(x, ctx).shape == x.shape


def test_running_level_ctx_reuse_scale_invariance_and_errors():
    a = level_adapter(seconds=0.05)
    torch.manual_seed(1)
    noisy = torch.randn(1, 1, 6000) * 0.1
    feats, ctx = a.encode(noisy)
    target, ctx2 = a.encode(noisy * 0.5, ctx)  # the clean target takes the noisy input's gains
    assert ctx2.frame_gain is ctx.frame_gain
    torch.testing.assert_close(target, feats * 0.5 ** 0.3, atol=1e-5, rtol=1e-4)
    feats_loud, _ = a.encode(noisy * 100.0)  # a level change is normalised away
    torch.testing.assert_close(feats_loud, feats, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="`ctx` was made for 47 frames, got a wave of 32 frames"):
        a.encode(noisy[..., :4000], ctx)
    with pytest.raises(ValueError, match="running_rms_seconds must be >= 0 \\(0 = off\\), got -1"):
        AudioAdapter(AudioConfig(normalize_rms=False, running_rms_seconds=-1))
    with pytest.raises(ValueError, match="set audio.normalize_rms: false to use running_rms_seconds"):
        AudioAdapter(AudioConfig(running_rms_seconds=1.0))
    with pytest.raises(ValueError, match="audio.target_rms must be > 0, got 0"):
        AudioAdapter(AudioConfig(target_rms=0))
