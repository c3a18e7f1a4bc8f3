import math

import pytest
import torch

from xmodal.config import LossConfig
from xmodal.losses import (SpeechLoss, complex_loss, compressed_magnitude_loss, multi_resolution_stft_loss, si_sdr,
                           si_sdr_loss, waveform_l1_loss)


def orthogonal_noise(ref, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = torch.randn(ref.shape, generator=g)
    n = n - n.mean(-1, keepdim=True)
    r = ref - ref.mean(-1, keepdim=True)
    return n - (n * r).sum(-1, keepdim=True) / r.pow(2).sum(-1, keepdim=True) * r


def test_si_sdr_known_values():
    ref = torch.randn(3, 4000, dtype=torch.float64)
    ref = ref - ref.mean(-1, keepdim=True)
    noise = orthogonal_noise(ref)
    for snr in (-5.0, 0.0, 10.0, 30.0):
        scale = ref.pow(2).sum(-1).sqrt() / noise.pow(2).sum(-1).sqrt() / 10 ** (snr / 20)
        est = 3.0 * (ref + scale[:, None] * noise)  # scale-invariant: x3 changes nothing
        torch.testing.assert_close(si_sdr(est, ref), torch.full((3,), snr, dtype=torch.float64), atol=1e-6, rtol=0)
    assert si_sdr_loss(ref + 0.1 * noise, ref) == pytest.approx(-si_sdr(ref + 0.1 * noise, ref).mean().item())


def test_si_sdr_is_offset_invariant():
    ref = torch.randn(2000)
    est = ref + 0.1 * orthogonal_noise(ref)
    assert si_sdr(est + 0.5, ref).item() == pytest.approx(si_sdr(est, ref).item(), abs=1e-4)


def test_spectral_losses_known_values():
    ref = torch.zeros(1, 2, 3, 4)
    ref[:, 0] = 1.0  # magnitude 1 everywhere
    est = torch.zeros_like(ref)
    est[:, 1] = 2.0  # magnitude 2, orthogonal phase
    assert compressed_magnitude_loss(est, ref).item() == pytest.approx(1.0, abs=1e-5)
    assert complex_loss(est, ref).item() == pytest.approx((1 + 4) / 2, abs=1e-6)
    assert compressed_magnitude_loss(ref, ref).item() == pytest.approx(0.0, abs=1e-6)


def test_waveform_and_mrstft_known_values():
    torch.manual_seed(0)
    ref = torch.randn(2, 1, 8000)
    assert waveform_l1_loss(ref + 0.5, ref).item() == pytest.approx(0.5, abs=1e-6)
    assert multi_resolution_stft_loss(ref, ref).item() == pytest.approx(0.0, abs=1e-6)
    # doubling: spectral convergence ||r - 2r|| / ||r|| = 1 and log-magnitude L1 = ln 2, at every resolution
    assert multi_resolution_stft_loss(2 * ref, ref).item() == pytest.approx(1 + math.log(2), abs=1e-3)


def test_mrstft_ignores_differences_far_below_the_signal():
    # A clip with a silent second half (as padded segments and the demo corpus have), and an estimate that differs
    # only by noise 120 dB below the signal there. The log-magnitude term compares bins above the power floor (1e-7,
    # magnitude 3.2e-4), as the ParallelWaveGAN implementation does: such an estimate is as good as exact, and its
    # gradient is small (0.007; noise 40 dB down everywhere gets 0.06). A floor on the magnitude itself (1e-7) scored
    # it 2.2 and sent gradients of up to 347 (1 / magnitude) into the silent half.
    torch.manual_seed(0)
    ref = torch.randn(2, 1, 16000)
    ref[..., 8000:] = 0
    est = ref.clone()
    est[..., 8000:] = 1e-6 * torch.randn(2, 1, 8000)
    est.requires_grad_(True)
    loss = multi_resolution_stft_loss(est, ref)
    loss.backward()
    assert loss.item() < 1e-3
    assert est.grad.abs().max() < 0.02
    # the same noise 30 dB below the signal is a real difference, and is scored as one
    assert multi_resolution_stft_loss(torch.where(ref == 0, 0.03 * torch.randn_like(ref), ref), ref).item() > 0.5


def test_speech_loss_weights_and_fp32_under_autocast():
    torch.manual_seed(0)
    wave, feats = torch.randn(2, 1, 4000), torch.randn(2, 2, 33, 20)
    est_wave, est_feats = wave + 0.1 * torch.randn_like(wave), feats + 0.1 * torch.randn_like(feats)
    cfg = LossConfig(magnitude=0.9, complex=0.1, waveform=0.2, mrstft=0.3, si_sdr=0.01)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, terms = SpeechLoss(cfg)(est_wave, wave, est_feats.bfloat16(), feats)
    assert total.dtype == torch.float32
    expected = (0.9 * compressed_magnitude_loss(est_feats.bfloat16().float(), feats)
                + 0.1 * complex_loss(est_feats.bfloat16().float(), feats) + 0.2 * waveform_l1_loss(est_wave, wave)
                + 0.3 * multi_resolution_stft_loss(est_wave, wave) + 0.01 * si_sdr_loss(est_wave, wave))
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(terms) == {"magnitude", "complex", "waveform", "mrstft", "si_sdr"}
    _, only = SpeechLoss(LossConfig(magnitude=1, complex=0, waveform=0))(est_wave, wave, est_feats, feats)
    assert set(only) == {"magnitude"}


def test_loss_errors():
    with pytest.raises(ValueError, match=r"si_sdr: `est` and `ref` must have the same shape, got \(3,\) and \(4,\)"):
        si_sdr(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match=r"complex_loss: expected features of shape \(B, 2, F, N\), "
                                         r"got \(1, 3, 4, 4\)"):
        complex_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"multi_resolution_stft_loss: `ffts` must hold at least one FFT size"):
        multi_resolution_stft_loss(torch.zeros(1, 100), torch.zeros(1, 100), ())
    with pytest.raises(ValueError, match=r"loss.waveform must be >= 0, got -1"):
        SpeechLoss(LossConfig(waveform=-1))
    with pytest.raises(ValueError, match=r"loss: every weight is 0"):
        SpeechLoss(LossConfig(magnitude=0, complex=0, waveform=0, mrstft=0, si_sdr=0))
