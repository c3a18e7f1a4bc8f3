"""Image losses (Charbonnier, SSIM, MS-SSIM, perceptual, the weighted sum), image metrics against their reference
packages, and the image sections of the config."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_msssim import ms_ssim, ssim
from skimage.metrics import peak_signal_noise_ratio

from tests.conftest import REPO
from xmodal.config import ConfigError, ImageLossConfig, load_config
from xmodal.losses import ImageLoss, PerceptualLoss, charbonnier_loss, ms_ssim_loss, mse_loss, ssim_loss
from xmodal.metrics import (IMAGE_METRICS, STACK_METRICS, MetricAccumulator, ergas_score, image_metrics, mpsnr_score,
                            psnr_score, sam_score, ssim_score)

TINY_IMAGE = REPO / "recipes" / "tiny_image.yaml"


def pair(shape, seed=0, sigma=0.1):
    gen = torch.Generator().manual_seed(seed)
    ref = torch.rand(shape, generator=gen)
    est = (ref + sigma * torch.randn(shape, generator=gen)).clamp(0, 1)
    return est, ref


# ---------------------------------------------------------------------------------------------------------- losses


def test_charbonnier():
    est, ref = pair((2, 3, 8, 9))
    assert float(charbonnier_loss(est, ref)) == pytest.approx(float((est - ref).abs().mean()), rel=1e-6)
    assert float(charbonnier_loss(est, ref, eps=0.0)) == float(torch.nn.functional.l1_loss(est, ref))
    # a known difference: d = 0.3 everywhere, eps 0.4 -> sqrt(0.09 + 0.16) = 0.5
    a = torch.zeros(1, 1, 4, 4)
    assert float(charbonnier_loss(a + 0.3, a, eps=0.4)) == pytest.approx(0.5, rel=1e-6)
    assert float(charbonnier_loss(a, a, eps=0.01)) == pytest.approx(0.01, rel=1e-5)  # floor at eps
    with pytest.raises(ValueError, match=r"charbonnier_loss: `est` and `ref` must have the same shape, got "
                                         r"\(1, 1, 4, 4\) and \(1, 1, 4, 5\)"):
        charbonnier_loss(a, torch.zeros(1, 1, 4, 5))


def test_mse_loss_is_the_distance_psnr_scores():
    est, ref = pair((2, 3, 8, 9), seed=4)
    torch.testing.assert_close(mse_loss(est, ref), torch.nn.functional.mse_loss(est, ref))
    a = torch.zeros(1, 1, 4, 4)
    assert float(mse_loss(a + 0.1, a)) == pytest.approx(0.01, rel=1e-6)  # PSNR 20 dB for a peak of 1
    with pytest.raises(ValueError, match=r"mse_loss: `est` and `ref` must have the same shape, got "
                                         r"\(1, 1, 4, 4\) and \(1, 1, 4, 5\)"):
        mse_loss(a, torch.zeros(1, 1, 4, 5))


def test_ssim_loss_against_pytorch_msssim():
    est, ref = pair((2, 3, 32, 33), seed=1)
    expected = 1 - ssim(est, ref, data_range=1.0, size_average=True)
    torch.testing.assert_close(ssim_loss(est, ref), expected)
    assert float(ssim_loss(ref, ref)) == pytest.approx(0.0, abs=1e-6)
    # (C, H, W) is one image
    torch.testing.assert_close(ssim_loss(est[0], ref[0]), 1 - ssim(est[:1], ref[:1], data_range=1.0))
    with pytest.raises(ValueError, match=r"ssim_loss: `est` and `ref` must have the same shape"):
        ssim_loss(est, ref[:1])


def test_ms_ssim_loss_against_pytorch_msssim_and_size_error():
    est, ref = pair((1, 1, 161, 170), seed=2)
    expected = 1 - ms_ssim(est, ref, data_range=1.0, size_average=True)
    torch.testing.assert_close(ms_ssim_loss(est, ref), expected)
    with pytest.raises(ValueError, match=r"ms_ssim_loss needs images larger than 160 x 160 \(5 scales\), got "
                                         r"\(160, 170\); raise image.patch_size or use image_loss.ssim"):
        ms_ssim_loss(est[..., :160, :], ref[..., :160, :])


def test_image_loss_terms_and_weights():
    est, ref = pair((2, 1, 24, 24), seed=3)
    loss = ImageLoss(ImageLossConfig(l1=1.0, ssim=0.5, charbonnier_eps=0.0))
    total, terms = loss(est, ref)
    assert set(terms) == {"l1", "ssim"}
    torch.testing.assert_close(terms["l1"], (est - ref).abs().mean())
    torch.testing.assert_close(terms["ssim"], ssim_loss(est, ref))
    torch.testing.assert_close(total, terms["l1"] + 0.5 * terms["ssim"])
    l1_mse = ImageLoss(ImageLossConfig(l1=0.5, mse=2.0))
    total, terms = l1_mse(est, ref)
    assert set(terms) == {"l1", "mse"}
    torch.testing.assert_close(terms["mse"], ((est - ref) ** 2).mean())
    torch.testing.assert_close(total, 0.5 * terms["l1"] + 2.0 * terms["mse"])
    only_ssim = ImageLoss(ImageLossConfig(l1=0.0, ssim=1.0))
    total, terms = only_ssim(est, ref, None, None)
    assert set(terms) == {"ssim"}
    # gradients reach the estimate
    e = est.clone().requires_grad_(True)
    ImageLoss(ImageLossConfig(l1=1.0, ssim=0.1, charbonnier_eps=1e-3))(e, ref)[0].backward()
    assert e.grad is not None and torch.isfinite(e.grad).all() and e.grad.abs().sum() > 0


def test_image_loss_errors():
    with pytest.raises(ValueError, match=r"image_loss: every weight is 0; set at least one of l1, mse, ssim, ms_ssim, "
                                         r"perceptual"):
        ImageLoss(ImageLossConfig(l1=0.0))
    with pytest.raises(ValueError, match=r"image_loss.ssim must be >= 0, got -0.5"):
        ImageLoss(ImageLossConfig(ssim=-0.5))
    with pytest.raises(ValueError, match=r"image_loss.mse must be >= 0, got -1.0"):
        ImageLoss(ImageLossConfig(mse=-1.0))
    with pytest.raises(ValueError, match=r"image_loss.charbonnier_eps must be >= 0, got -0.1"):
        ImageLoss(ImageLossConfig(charbonnier_eps=-0.1))
    with pytest.raises(ValueError, match=r"image_loss.perceptual > 0 needs image_loss.perceptual_weights: a "
                                         r"torchvision VGG-16 state dict file \(xmodal never downloads weights\)"):
        ImageLoss(ImageLossConfig(perceptual=0.1))


@pytest.fixture(scope="module")
def vgg_features(tmp_path_factory):
    """A randomly initialised torchvision VGG-16 ``features`` (no download), saved as .pth and .safetensors."""
    from safetensors.torch import save_file
    from torchvision.models import vgg16

    torch.manual_seed(0)
    full = vgg16()
    d = tmp_path_factory.mktemp("vgg")
    features = full.features[:4]
    state = {f"features.{k}": v.contiguous() for k, v in full.features.state_dict().items()
             if int(k.split(".")[0]) < 4}
    torch.save(state, d / "vgg.pth")
    save_file({k.removeprefix("features."): v for k, v in state.items()}, str(d / "vgg.safetensors"))
    return features.eval(), d


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_perceptual_loss_compares_vgg_layers(vgg_features, fmt):
    features, d = vgg_features
    loss = PerceptualLoss(str(d / f"vgg.{fmt}"), layers=(3,))
    est, ref = pair((2, 3, 32, 32), seed=4)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        fa, fb = features((est - mean) / std), features((ref - mean) / std)  # layer 3 = ReLU1_2 output
        value = loss(est, ref)
    torch.testing.assert_close(value, (fa - fb).abs().mean())
    assert float(loss(ref, ref)) == 0.0
    # gray is replicated to RGB
    g_est, g_ref = est[:, :1], ref[:, :1]
    with torch.no_grad():
        fa = features((g_est.expand(-1, 3, -1, -1) - mean) / std)
        fb = features((g_ref.expand(-1, 3, -1, -1) - mean) / std)
        torch.testing.assert_close(loss(g_est, g_ref), (fa - fb).abs().mean())
    assert not any(p.requires_grad for p in loss.parameters())
    with pytest.raises(ValueError, match=r"perceptual_loss: `est` and `ref` must have the same shape"):
        loss(est, ref[:1])


def test_perceptual_loss_in_image_loss(vgg_features):
    _, d = vgg_features
    cfg = ImageLossConfig(l1=0.0, perceptual=2.0, perceptual_weights=str(d / "vgg.pth"), perceptual_layers=(1, 3))
    est, ref = pair((1, 1, 32, 32), seed=5)
    total, terms = ImageLoss(cfg)(est, ref)
    assert set(terms) == {"perceptual"}
    torch.testing.assert_close(total, 2.0 * terms["perceptual"])
    torch.testing.assert_close(terms["perceptual"], PerceptualLoss(str(d / "vgg.pth"), (1, 3))(est, ref))


def test_perceptual_loss_errors(vgg_features, tmp_path):
    _, d = vgg_features
    with pytest.raises(FileNotFoundError, match=r"image_loss.perceptual_weights: .*nothing.pth does not exist"):
        PerceptualLoss(str(tmp_path / "nothing.pth"))
    for name in ("bad.pth", "bad.safetensors"):
        (tmp_path / name).write_bytes(b"not a state dict")
        with pytest.raises(ValueError, match=rf"image_loss.perceptual_weights: .*{name} is not a readable state "
                                             r"dict"):
            PerceptualLoss(str(tmp_path / name), (3,))
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"list.pth holds a list, not a state dict \(a dict of tensors\)"):
        PerceptualLoss(str(tmp_path / "list.pth"), (3,))
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match=r"(?s)wrong.pth is not a torchvision VGG-16 state dict \(.*size mismatch"):
        PerceptualLoss(str(tmp_path / "wrong.pth"), (3,))
    with pytest.raises(ValueError, match=r"(?s)vgg.pth is not a torchvision VGG-16 state dict \(.*Missing key"):
        PerceptualLoss(str(d / "vgg.pth"), (8,))  # the file holds layers 0..3 only
    with pytest.raises(ValueError, match=r"image_loss.perceptual_layers must be indices in 0..30, got \[31\]"):
        PerceptualLoss(str(d / "vgg.pth"), (31,))
    with pytest.raises(ValueError, match=r"image_loss.perceptual_layers must be indices in 0..30, got \[\]"):
        PerceptualLoss(str(d / "vgg.pth"), ())


# ---------------------------------------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("shape", [(17, 23), (1, 17, 23), (3, 17, 23), (3, 32, 29)])
def test_psnr_and_ssim_against_skimage(shape):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    est, ref = pair(shape, seed=len(shape) + shape[-1])
    a, b = ref.numpy().astype(np.float64), est.numpy().astype(np.float64)
    assert psnr_score(ref, est) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1), rel=1e-9)
    kw = dict(data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    expected = structural_similarity(a, b, **kw) if a.ndim == 2 else \
        structural_similarity(a, b, channel_axis=0, **kw)
    assert ssim_score(ref, est) == pytest.approx(expected, abs=1e-6)
    # numpy input gives the same values
    assert psnr_score(a, b) == pytest.approx(psnr_score(ref, est), rel=1e-6)


def test_psnr_known_values_and_errors():
    ref = np.zeros((1, 4, 4))
    assert psnr_score(ref, ref + 0.1) == pytest.approx(20.0)
    assert psnr_score(ref, ref + 25.5, data_range=255.0) == pytest.approx(20.0)
    assert psnr_score(ref, ref) == math.inf
    with pytest.raises(ValueError, match=r"psnr: `ref` and `deg` must have the same shape, got \(1, 4, 4\) and "
                                         r"\(1, 4, 5\)"):
        psnr_score(ref, np.zeros((1, 4, 5)))
    with pytest.raises(ValueError, match=r"Expected `deg` of shape \(H, W\) or \(C, H, W\), got \(1, 1, 4, 4\)"):
        psnr_score(ref, np.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"ssim: images must be at least 11 x 11 \(the window\), got \(10, 30\)"):
        ssim_score(np.zeros((10, 30)), np.zeros((10, 30)))
    with pytest.raises(ValueError, match=r"ssim: `ref` and `deg` must have the same shape"):
        ssim_score(np.zeros((12, 12)), np.zeros((12, 13)))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
def test_psnr_and_ssim_infer_the_range_of_integer_images_as_skimage(dtype):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rng = np.random.default_rng(4)
    top = np.iinfo(dtype).max
    ref = rng.integers(top // 4, 3 * (top // 4), (3, 24, 21)).astype(dtype)
    if dtype == np.int16:
        ref[0, 0, 0] = -5  # negative values: skimage's PSNR takes the dtype's max - min
    deg = np.clip(ref + rng.normal(0, top / 20, ref.shape), np.iinfo(dtype).min, top).astype(dtype)
    expected_psnr = peak_signal_noise_ratio(ref, deg)
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=0)
    expected_ssim = structural_similarity(ref, deg, data_range=float(top) - np.iinfo(dtype).min, **kw)
    assert psnr_score(ref, deg) == pytest.approx(expected_psnr, rel=1e-9)
    assert psnr_score(torch.from_numpy(ref.astype(np.int32)), torch.from_numpy(deg.astype(np.int32)),
                      data_range=float(top if dtype != np.int16 else 65535)) == pytest.approx(expected_psnr, rel=1e-9)
    assert ssim_score(ref, deg) == pytest.approx(expected_ssim, abs=1e-6)
    if dtype == np.uint8:
        assert expected_psnr > 20  # not the -20 dB a range of 1 gives
        assert psnr_score(torch.from_numpy(ref), torch.from_numpy(deg)) == pytest.approx(expected_psnr, rel=1e-9)
        assert psnr_score(ref, deg, data_range=1.0) == pytest.approx(expected_psnr - 20 * math.log10(255), rel=1e-9)
        acc = MetricAccumulator()
        scores = image_metrics(acc, "noisy", "u8", ref, deg)
        assert scores["psnr"] == pytest.approx(expected_psnr, rel=1e-9)
        assert scores["ssim"] == pytest.approx(expected_ssim, abs=1e-6)


def sam_reference(ref: np.ndarray, deg: np.ndarray) -> float:
    angles = []
    for i in range(ref.shape[1]):
        for j in range(ref.shape[2]):
            u, v = ref[:, i, j].astype(np.float64), deg[:, i, j].astype(np.float64)
            nu, nv = np.linalg.norm(u), np.linalg.norm(v)
            if nu == 0 and nv == 0:  # no angle: left out
                continue
            if nu == 0 or nv == 0:  # one spectrum collapsed to 0: at right angles to anything
                angles.append(90.0)
                continue
            angles.append(np.degrees(np.arccos(np.clip(u @ v / (nu * nv), -1, 1))))
    return float(np.mean(angles))


def test_sam_against_numpy_reference():
    rng = np.random.default_rng(0)
    ref = rng.random((6, 7, 9))
    deg = ref + 0.05 * rng.standard_normal(ref.shape)
    ref[:, 0, 0] = 0  # a zero spectrum in one image only: 90 degrees
    deg[:, 3, 4] = 0
    ref[:, 6, 8] = deg[:, 6, 8] = 0  # zero in both: left out
    deg[:, 5, 5] = -ref[:, 5, 5]  # an opposite spectrum: 180 degrees
    assert sam_score(ref, deg) == pytest.approx(sam_reference(ref, deg), rel=1e-9)
    assert sam_score(ref, ref * 3.0) == pytest.approx(0.0, abs=1e-5)  # scale invariant
    # two bands at right angles: 90 degrees
    a = np.zeros((2, 1, 1))
    b = np.zeros((2, 1, 1))
    a[0], b[1] = 1.0, 2.0
    assert sam_score(a, b) == pytest.approx(90.0)
    with pytest.raises(ValueError, match=r"sam failed: every pixel has an all-zero spectrum in both `ref` and `deg`"):
        sam_score(np.zeros((3, 4, 4)), np.zeros((3, 4, 4)))
    assert sam_score(np.zeros((3, 4, 4)), rng.random((3, 4, 4))) == pytest.approx(90.0)


def test_sam_counts_a_collapsed_half_as_90_degrees():
    rng = np.random.default_rng(3)
    ref = rng.random((5, 8, 8)) + 0.1
    good = ref * (1 + 0.01 * rng.standard_normal(ref.shape))
    collapsed = good.copy()
    collapsed[:, :4] = 0  # the output went to 0 on half the scene
    assert sam_score(ref, good) < 1.0
    assert sam_score(ref, collapsed) == pytest.approx(0.5 * sam_score(ref[:, 4:], good[:, 4:]) + 45.0, rel=1e-9)
    both_zero = ref.copy()
    both_zero[:, :4] = 0  # dark in the reference too: those pixels have no angle and are left out
    assert sam_score(both_zero, collapsed) == pytest.approx(sam_score(ref[:, 4:], good[:, 4:]), rel=1e-9)
    with pytest.raises(ValueError, match=r"sam: `ref` and `deg` must have the same shape"):
        sam_score(np.zeros((3, 4, 4)), np.zeros((2, 4, 4)))


def test_mpsnr_and_ergas_against_numpy_references():
    rng = np.random.default_rng(11)
    ref = rng.uniform(200, 3000, (6, 24, 20))  # radiance-like band levels
    deg = ref + rng.normal(0, 1, ref.shape) * np.arange(1, 7)[:, None, None] * 20  # each band its own error
    mse = ((ref - deg) ** 2).mean(axis=(1, 2))
    # MPSNR: the mean of per-band PSNRs (skimage's), not the PSNR of the pooled MSE
    per_band = [peak_signal_noise_ratio(ref[i], deg[i], data_range=4000) for i in range(6)]
    assert mpsnr_score(ref, deg, 4000) == pytest.approx(np.mean(per_band), rel=1e-12)
    assert mpsnr_score(ref, deg, 4000) > psnr_score(ref, deg, 4000) + 0.5  # the loud bands weigh less here
    exact = deg.copy()
    exact[2] = ref[2]
    assert mpsnr_score(ref, exact, 4000) == math.inf
    # ERGAS as Vivone et al.'s benchmark toolbox writes it: (100 / ratio) sqrt(mean_b MSE_b / mean(ref_b)^2)
    want = 100 * math.sqrt(np.mean(mse / ref.mean(axis=(1, 2)) ** 2))
    assert ergas_score(ref, deg) == pytest.approx(want, rel=1e-12)
    assert ergas_score(ref, deg, ratio=4) == pytest.approx(want / 4, rel=1e-12)
    assert ergas_score(ref * 10, deg * 10) == pytest.approx(want, rel=1e-12)  # dimensionless: a gain cancels
    assert ergas_score(ref, ref) == 0.0
    dark = ref.copy()
    dark[[1, 4]] = 0
    with pytest.raises(ValueError, match=r"ergas failed: band\(s\) \[2, 5\] of `ref` have mean 0 \(the error is "
                                         r"relative to it\)"):
        ergas_score(dark, deg)
    with pytest.raises(ValueError, match=r"ergas: `ratio` must be positive, got 0"):
        ergas_score(ref, deg, ratio=0)
    for fn in (mpsnr_score, ergas_score):
        with pytest.raises(ValueError, match=r"must have the same shape, got \(6, 24, 20\) and \(5, 24, 20\)"):
            fn(ref, deg[:5])


def test_image_metrics_records_failures():
    acc = MetricAccumulator()
    est, ref = pair((3, 20, 20), seed=6)
    scores = image_metrics(acc, "enhanced", "a", ref, est, STACK_METRICS)
    assert set(scores) == {"psnr", "mpsnr", "ssim", "sam", "ergas"}
    assert scores["psnr"] == pytest.approx(psnr_score(ref, est))
    assert scores["mpsnr"] == pytest.approx(mpsnr_score(ref, est)) and scores["ergas"] == ergas_score(ref, est)
    small_est, small_ref = pair((1, 8, 30), seed=7)
    scores = image_metrics(acc, "enhanced", "tiny", small_ref, small_est, IMAGE_METRICS)
    assert set(scores) == {"psnr"}  # ssim failed, recorded
    assert len(acc.failures) == 1
    failure = acc.failures[0]
    assert "tiny" in str(failure) and "ssim" in str(failure) and "at least 11 x 11" in str(failure)
    means = acc.means()
    assert means["enhanced"]["psnr"] == pytest.approx((psnr_score(ref, est) + psnr_score(small_ref, small_est)) / 2)
    assert means["enhanced"]["ssim"] == pytest.approx(ssim_score(ref, est))  # the failed item is not averaged
    with pytest.raises(ValueError, match=r"unknown image metric 'ms_ssim' \(known: psnr, mpsnr, ssim, sam, ergas, "
                                         r"lpips\)"):
        image_metrics(acc, "enhanced", "a", ref, est, ("ms_ssim",))


def test_masked_metrics_equal_the_metrics_of_the_masked_out_part_cut_away():
    """A mask that leaves out whole columns scores exactly what the image cut to the other columns scores (SSIM over
    the windows wholly inside, the same map pytorch-msssim computes); the masked-out pixels may hold anything."""
    est, ref = pair((4, 24, 40), seed=8)
    est, ref = est.double().clone(), ref.double().clone()  # pair() gives float32 (C, H, W) tensors
    mask = torch.ones(24, 40, dtype=torch.bool)
    mask[:, 31:] = False
    ref[:, :, 31:], est[:, :, 35:] = float("nan"), 1e6  # nodata: NaN in the reference, garbage in the output
    cut_ref, cut_est = ref[:, :, :31], est[:, :, :31]
    for fn in (psnr_score, mpsnr_score, ssim_score):
        assert fn(ref, est, mask=mask) == pytest.approx(fn(cut_ref, cut_est), abs=1e-12)
    assert sam_score(ref, est, mask) == pytest.approx(sam_score(cut_ref, cut_est), abs=1e-12)
    assert ergas_score(ref, est, mask=mask) == pytest.approx(ergas_score(cut_ref, cut_est), rel=1e-12)
    clean_ref = ref.nan_to_num(0.5)
    assert ssim_score(clean_ref, est.clamp(0, 1), mask=np.ones((24, 40), bool)) == pytest.approx(
        ssim_score(clean_ref, est.clamp(0, 1)), abs=1e-12)  # an all-true mask: the pytorch-msssim value


def test_metric_masks_and_non_finite_values_are_refused_with_reasons():
    est, ref = pair((3, 20, 20), seed=9)
    with pytest.raises(ValueError, match=r"psnr: `mask` must be a bool array of the images' \(H, W\) = \(20, 20\), got "
                                         r"torch.bool \(20, 19\)"):
        psnr_score(ref, est, mask=np.ones((20, 19), bool))
    with pytest.raises(ValueError, match=r"sam: `mask` must be a bool array .* got torch.uint8 \(20, 20\)"):
        sam_score(ref, est, mask=np.ones((20, 20), np.uint8))
    with pytest.raises(ValueError, match=r"mpsnr failed: the mask leaves no pixel to score \(all nodata\)"):
        mpsnr_score(ref, est, mask=np.zeros((20, 20), bool))
    corner = np.zeros((20, 20), bool)
    corner[:10, :10] = True
    with pytest.raises(ValueError, match=r"ssim failed: no 11 x 11 window lies wholly in the scored pixels"):
        ssim_score(ref, est, mask=corner)
    bad = est.clone()
    bad[0, 3, 4] = float("nan")
    with pytest.raises(ValueError, match=r"psnr failed: `deg` holds NaN or infinity in 1 scored value\(s\) \(pass "
                                         r"`mask` to leave nodata pixels out\)"):
        psnr_score(ref, bad)
    with pytest.raises(ValueError, match=r"ergas failed: `ref` holds NaN or infinity in 1 scored value\(s\)$"):
        ergas_score(bad, ref, mask=np.ones((20, 20), bool))
    acc = MetricAccumulator()
    assert image_metrics(acc, "enhanced", "holed", ref, bad, IMAGE_METRICS) == {}  # recorded, not NaN means
    assert [f[1] for f in acc.failures] == ["psnr", "ssim"]
    assert acc.mean_counts() == {"enhanced": {"psnr": 0, "ssim": 0}}  # a mean over no image, never over a NaN
    masked = np.ones((20, 20), bool)
    masked[0, 0] = False  # LPIPS, a network's judgement of the whole image, cannot leave a pixel out
    scores = image_metrics(acc, "enhanced", "dem", ref, est, ("psnr", "lpips"), lpips=object(), mask=masked)
    assert set(scores) == {"psnr"} and acc.failures[-1] == (
        "enhanced", "lpips", "dem", "lpips failed: the image has nodata pixels, which a network cannot leave out")


# ---------------------------------------------------------------------------------------------------------- config


def test_tiny_image_recipe_loads():
    cfg = load_config(TINY_IMAGE)
    assert cfg.modality == "image"
    assert cfg.image.channels == 1 and cfg.image.patch_size == 32 and cfg.model.widths == (8, 16)
    assert cfg.image_loss.l1 == 1.0 and cfg.image_loss.ssim == 0.1
    cfg = load_config(TINY_IMAGE, ["modality=multispectral", "image.context_bands=1",
                                   "image.noise={kind: poisson_gaussian, peak: [5, 50], sigma: [0, 0.02]}",
                                   "image.curriculum_start=[0, 0.01]"])
    assert cfg.modality == "multispectral" and cfg.image.context_bands == 1
    assert cfg.image.noise.kind == "poisson_gaussian" and cfg.image.noise.peak == (5.0, 50.0)
    assert cfg.image.curriculum_start == (0.0, 0.01)


def test_bundled_image_recipes_load_and_build_their_loss():
    seen = set()
    for path in sorted((REPO / "recipes").glob("*.yaml")):
        cfg = load_config(path)
        if cfg.modality in ("image", "multispectral") and not cfg.image_loss.perceptual:
            assert isinstance(ImageLoss(cfg.image_loss), ImageLoss), path
            seen.add(cfg.modality)
    assert seen >= {"image"}


@pytest.mark.parametrize("override, message", [
    ("image.noise.sigma=[0.2,0.1]", r"override `image.noise.sigma=\[0.2,0.1\]`: `image.noise`: `NoiseSpec.sigma` "
                                    r"range must have low <= high, got \(0.2, 0.1\)"),
    ("image.noise.kind=foo", r"`image.noise.kind` must be 'gaussian' \| 'poisson_gaussian'.*, got str 'foo'"),
    ("image.noise.sigma=[0.1]", r"`image.noise.sigma` must be a list of 2 \(float, float\), got list"),
    ("image.valid_noise.peak=[0,1]", r"`image.valid_noise`: `NoiseSpec.peak` must be > 0, got 0.0"),
    ("image_loss.ssmi=0.1", r"unknown key `image_loss.ssmi` \(did you mean `image_loss.ssim`\?\)"),
    ("image.chanels=3", r"unknown key `image.chanels` \(did you mean `image.channels`\?\)"),
    ("image.curriculum_start=[0.1,0.0]", r"`image`: image.curriculum_start must be a \(low, high\) range with "
                                         r"0 <= low <= high, got \[0.1, 0.0\]"),
    ("image.curriculum_fraction=1.5", r"`image.curriculum_fraction` must be in \[0, 1\], got 1.5"),
    ("modality=radar", r"`modality` must be 'speech' \| 'image' \| 'multispectral' \| 'video' or a list of 'speech' "
                       r"\| 'image' \| 'multispectral' \| 'video', got str 'radar'"),
])
def test_image_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY_IMAGE, [override])


def test_image_config_error_in_a_file(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(Path(TINY_IMAGE).read_text().replace("  patch_size: 32", "  patch_size: 32\n  noise: "
                                                           "{kind: gaussian, sigma: [0.3, 0.1]}"))
    with pytest.raises(ConfigError, match=r"r.yaml: `image.noise`: `NoiseSpec.sigma` range must have low <= high"):
        load_config(recipe)
