import pytest
import torch

from xmodal.adapters import AudioAdapter
from xmodal.adapters.audio import AudioContext, compress, decompress
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
    with pytest.raises(ValueError, match=r"Expected `wave` of shape \(T,\), \(C, T\) or \(B, C, T\), got \(2, 3, 4, 5\)"):
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
