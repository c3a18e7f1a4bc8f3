"""Photon noise through Gaussian models: the generalized Anscombe transform (unit variance), its exact unbiased
inverse against the Poisson and Poisson-Gaussian distributions, and `poisson=` in the image API and command line."""

import numpy as np
import pytest
import tifffile
import torch
from scipy.stats import norm, poisson

import xmodal
from xmodal.denoise import main
from xmodal.imageio import read_image
from xmodal.noise import estimate_photon_noise, estimate_poisson_gaussian
from xmodal.vst import (TABLE_PHOTONS, anscombe, check_photon_noise, expected_anscombe, inverse_anscombe)


def _expected_by_summation(lam: float, read: float) -> float:
    """E[2 sqrt(max(c + 3/8 + read^2, 0))], c = Poisson(lam) + N(0, read^2), by direct summation and a fine grid."""
    k = np.arange(0, int(lam + 20 * np.sqrt(lam) + 40))
    if read == 0:
        return float((poisson.pmf(k, lam) * 2 * np.sqrt(k + 0.375)).sum())
    n = np.linspace(-9, 9, 36001)
    w = norm.pdf(n) * (n[1] - n[0])
    fk = np.array([(2 * np.sqrt(np.maximum(kk + read * n + 0.375 + read * read, 0)) * w).sum() for kk in k])
    return float((poisson.pmf(k, lam) * fk).sum())


@pytest.mark.parametrize("read", [0.0, 0.6])
def test_expected_transform_equals_the_distribution_s_mean(read):
    peak = 30.0
    for lam in (0.0, 0.3, 1.0, 4.0, 37.5, 400.0):
        assert float(expected_anscombe(lam, peak, read / peak)) == pytest.approx(_expected_by_summation(lam, read),
                                                                                  abs=2e-4)


@pytest.mark.parametrize("peak, read_noise", [(30.0, 0.0), (30.0, 0.02), (5.0, 0.05), (3000.0, 0.001)])
def test_inverse_undoes_the_expected_transform_at_every_level(peak, read_noise):
    lam = np.array([0.0, 0.05, 0.5, 1.0, 3.0, 17.0, 250.0, 999.0, TABLE_PHOTONS, 1500.0, 2.5e5])
    d = torch.from_numpy(expected_anscombe(lam, peak, read_noise))
    back = inverse_anscombe(d, peak, read_noise).numpy() * peak
    assert np.allclose(back, lam, rtol=1e-9, atol=1e-6)
    # the table and the asymptotic inverse meet where one hands over to the other
    just_below, above = expected_anscombe([TABLE_PHOTONS - 1e-9, TABLE_PHOTONS + 1e-9], peak, read_noise)
    assert above - just_below == pytest.approx(0.0, abs=1e-6)


def test_exact_inverse_is_unbiased_where_the_algebraic_one_is_not():
    """A dark flat field at 1 photon: averaging the transform of many draws and inverting gives 1 photon back; the
    algebraic inverse of the transform, (d / 2)^2 - 3/8, gives far too dark a value."""
    rng = np.random.default_rng(0)
    counts = rng.poisson(1.0, size=2_000_000).astype(np.float64)
    d = anscombe(torch.from_numpy(counts), 1.0).mean()  # peak 1: counts are the [0, 1] values
    assert float(inverse_anscombe(d.reshape(1), 1.0)) == pytest.approx(1.0, abs=0.01)
    assert float(d) ** 2 / 4 - 0.375 < 0.85  # 0.82: 18 % too dark


def test_transform_makes_the_noise_unit_variance():
    """Within 1 % from 20 photons up (measured 1.006, 1.000, 1.002); about 4 % over at 5 photons, as known."""
    rng = np.random.default_rng(1)
    for lam, tol in ((5.0, 0.07), (20.0, 0.015), (50.0, 0.015), (500.0, 0.015)):
        y = (rng.poisson(lam, 400_000) + 2.0 * rng.standard_normal(400_000)) / 100.0  # peak 100, read 2 photons
        f = anscombe(torch.from_numpy(y), 100.0, 0.02)
        assert float(f.var()) == pytest.approx(1.0, abs=tol)
    raw = rng.poisson(500.0, 400_000) / 100.0
    assert float(np.var(raw)) == pytest.approx(0.05, rel=0.02)  # untransformed: the variance follows the signal


def test_inverse_keeps_dtype_device_and_is_never_negative():
    d = torch.tensor([-3.0, 0.0, 1.0, 5.0], dtype=torch.float32)
    out = inverse_anscombe(d, 30.0, 0.01)
    assert out.dtype == torch.float32 and out.shape == d.shape
    assert (out >= 0).all() and out[0] == 0 and out[1] == 0


@pytest.mark.parametrize("peak, read, error, message", [
    (0.0, 0.0, ValueError, "`poisson` (photons at full scale, value 1) must be > 0, got 0.0"),
    (float("inf"), 0.0, ValueError, "`poisson` (photons at full scale, value 1) must be > 0, got inf"),
    (30.0, -0.1, ValueError, "`read_noise` (standard deviation of the sensor's Gaussian noise, in the units where "
                             "full scale is 1) must be >= 0, got -0.1"),
    ("30", 0.0, TypeError, "`poisson` must be a number, got str"),
    (30.0, True, TypeError, "`read_noise` must be a number, got bool"),
])
def test_check_photon_noise_errors(peak, read, error, message):
    with pytest.raises(error) as e:
        check_photon_noise(peak, read)
    assert str(e.value) == message


@pytest.fixture(scope="module")
def gray():
    return xmodal.load("gray")


def _photon_image(peak: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth 64 x 80 test image in [0.02, 0.98] and one draw of photon noise on it."""
    yy, xx = np.mgrid[0:64, 0:80] / 64.0
    clean = (0.5 + 0.48 * np.sin(3 * xx) * np.cos(2 * yy)).astype(np.float64)
    return clean, np.random.default_rng(seed).poisson(peak * clean) / peak


def test_denoise_through_the_transform_beats_taking_photon_noise_as_gaussian(gray):
    clean, noisy = _photon_image(10.0)
    plain = gray.denoise(noisy.astype(np.float32)).astype(np.float64)
    vst = gray.denoise(noisy.astype(np.float32), poisson=10.0)
    assert vst.dtype == np.float32 and vst.shape == noisy.shape and (vst >= 0).all()

    def psnr(x):
        return 10 * np.log10(1 / np.mean((x - clean) ** 2))

    assert psnr(vst) > psnr(plain) + 1.0 and psnr(vst) > psnr(noisy) + 8.0
    # the transform is applied in value_range's units: the same data as 0-1000 counts gives the same output
    scaled = gray.denoise((noisy * 1000).astype(np.float32), poisson=10.0, value_range=(0, 1000))
    assert np.allclose(scaled / 1000, vst, atol=1e-5)


def test_denoise_poisson_errors(gray):
    x = np.full((24, 24), 0.5, np.float32)
    with pytest.raises(ValueError, match="`poisson` and `sigma` cannot both be given"):
        gray.denoise(x, poisson=10.0, sigma=0.1)
    with pytest.raises(ValueError, match=r"`read_noise` \(0.01\) is the Gaussian part of photon noise: it goes with "
                                         r"`poisson`"):
        gray.denoise(x, read_noise=0.01)
    with pytest.raises(ValueError, match=r"`poisson` \(photons at full scale, value 1\) must be > 0, got -2"):
        gray.denoise(x, poisson=-2)


def test_cli_poisson_writes_the_denoised_image_and_refuses_what_it_cannot_do(tmp_path, capsys):
    clean, noisy = _photon_image(30.0, seed=3)
    src = tmp_path / "dark.tif"
    tifffile.imwrite(src, np.rint(noisy * 65535).clip(0, 65535).astype(np.uint16))
    assert main([str(src), "-o", str(tmp_path / "out"), "--poisson", "30", "--quiet"]) == 0
    out, _ = read_image(tmp_path / "out" / "dark.tif")
    den = xmodal.load("gray").denoise(read_image(src)[0], poisson=30.0)
    assert np.abs(out - np.clip(np.rint(den * 65535), 0, 65535) / 65535).max() <= 1 / 65535
    for args, message in [(["--poisson", "30", "--sigma", "0.1"], "--poisson and --sigma cannot both be given"),
                          (["--read-noise", "0.01"], "--read-noise (0.01) is the Gaussian part of photon noise: it "
                                                     "goes with --poisson (photons at full scale)"),
                          (["--poisson", "0"], "--poisson (photons at full scale, value 1) must be > 0, got 0.0")]:
        assert main([str(src), "-o", str(tmp_path / "bad"), *args]) == 2
        assert f"error: {message}" in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()
    stack = tmp_path / "cube.npy"
    np.save(stack, np.random.default_rng(0).random((6, 32, 32), dtype=np.float32))
    assert main([str(stack), "-o", str(tmp_path / "out2"), "--poisson", "30", "--modality", "multispectral",
                 "--quiet"]) == 1
    assert f"{stack}: --poisson applies to images and video, not to a band stack" in capsys.readouterr().err


@pytest.mark.parametrize("photons", [10.0, 30.0, 100.0])
def test_photon_count_is_estimated_from_the_image_alone(photons):
    """On a smooth image the estimate is within 5 % (on Set12 the mean is 2.3 % low at 10 photons, 3.1 % at 30, 4.4 %
    at 100: texture read as noise; `benchmarks/noise_estimation.py --photons`)."""
    yy, xx = np.mgrid[0:160, 0:160] / 160.0
    clean = 0.5 + 0.45 * np.sin(4 * xx + 1) * np.cos(3 * yy)
    noisy = np.random.default_rng(int(photons)).poisson(photons * clean) / photons
    assert estimate_photon_noise(noisy) == pytest.approx(photons, rel=0.05)
    assert estimate_photon_noise(np.stack([noisy, noisy[::-1]])) == pytest.approx(photons, rel=0.05)  # pooled


def test_estimate_photon_noise_errors():
    with pytest.raises(TypeError, match="Expected `image` to be a numpy array or torch tensor, got list"):
        estimate_photon_noise([[0.5]])
    with pytest.raises(ValueError, match=r"`image` has negative values \(down to -0.1\): photon counts alone cannot "
                                         r"be; there is read noise \(estimate_poisson_gaussian estimates it with the "
                                         r"photons\) or a black level above the low end of the value range"):
        estimate_photon_noise(np.full((64, 64), -0.1))
    with pytest.raises(ValueError, match="`image` of 8 x 64 pixels is too small to estimate its noise"):
        estimate_photon_noise(np.random.default_rng(0).random((8, 64)))
    saturated = np.ones((64, 64))
    saturated[::9, ::9] = 0.5
    with pytest.raises(ValueError, match=r"`image` holds 0 7 x 7 patches that are neither flat nor touch its largest "
                                         r"value; 196 are needed"):
        estimate_photon_noise(saturated)


def test_auto_photons_equal_the_estimate_given_by_hand(gray):
    clean, noisy = _photon_image(20.0, seed=7)
    photons = estimate_photon_noise(noisy)
    auto = gray.denoise(noisy.astype(np.float32), poisson="auto")
    assert np.array_equal(auto, gray.denoise(noisy.astype(np.float32), poisson=photons))
    with pytest.raises(ValueError, match=r"`poisson` must be the photons at full scale \(a number > 0\) or 'auto', "
                                         r"got 'many'"):
        gray.denoise(noisy.astype(np.float32), poisson="many")


def test_cli_poisson_auto(tmp_path, capsys):
    _, noisy = _photon_image(30.0, seed=5)
    tifffile.imwrite(tmp_path / "dim.tif", np.rint(noisy * 65535).clip(0, 65535).astype(np.uint16))
    src = tmp_path / "dim.tif"
    assert main([str(src), "-o", str(tmp_path / "out"), "--poisson", "auto", "--quiet"]) == 0
    image = read_image(src)[0]
    expected = xmodal.load("gray").denoise(image, poisson=estimate_photon_noise(image))
    assert np.abs(read_image(tmp_path / "out" / "dim.tif")[0] - np.clip(np.rint(expected * 65535), 0, 65535)
                  / 65535).max() <= 1 / 65535
    assert main([str(src), "-o", str(tmp_path / "bad"), "--poisson", "lots"]) == 2
    assert "argument --poisson: expected the photons at full scale (a number) or 'auto', got 'lots'" in \
        capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_dim_counts_in_a_16_bit_file_fill_the_model_s_range(tmp_path):
    """Raw counts of a few photons in a uint16 file use a corner of the dtype's range; the transform is mapped by its
    own range, so the model works where it was trained (at [f(0), f(65535)] it was worse than the noisy input)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:96]
    lam = 5.0 + sum(80.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18.0)
                    for cy, cx in rng.integers(8, 88, size=(12, 2)))
    counts = rng.poisson(lam).astype(np.uint16)
    src = tmp_path / "fluo.tif"
    tifffile.imwrite(src, counts)
    assert main([str(src), "-o", str(tmp_path / "out"), "--poisson", "65535", "--quiet"]) == 0
    out = tifffile.imread(tmp_path / "out" / "fluo.tif").astype(np.float64)
    rmse_out, rmse_in = np.sqrt(np.mean((out - lam) ** 2)), np.sqrt(np.mean((counts - lam) ** 2))
    assert rmse_out < 0.5 * rmse_in  # measured 0.74 against 2.89 on the audit's 512 x 512 version
    background = lam < 5.5
    assert out[background].mean() == pytest.approx(5.0, abs=0.3)  # no bias in the dark


def test_float_photon_files_are_taken_as_they_are(tmp_path, gray):
    """A float file of photon data is in its own units (1 = full scale; raw counts: poisson=1), not mapped by its
    percentiles as float images otherwise are."""
    clean, noisy = _photon_image(1.0, seed=2)
    counts = (noisy * 1.0).astype(np.float32)  # 1 photon at 1: values are counts, up to about 5
    np.save(tmp_path / "counts.npy", counts)
    assert main([str(tmp_path / "counts.npy"), "-o", str(tmp_path / "out"), "--poisson", "1", "--quiet"]) == 0
    out = np.load(tmp_path / "out" / "counts.npy")
    assert np.allclose(out, gray.denoise(counts, poisson=1.0), atol=1e-6)
    assert out.mean() == pytest.approx(clean.mean(), abs=0.05)


def test_photon_arguments_of_other_kinds(gray):
    _, noisy = _photon_image(30.0, seed=4)
    x = noisy.astype(np.float32)
    assert np.array_equal(gray.denoise(x, poisson=np.array(30.0)), gray.denoise(x, poisson=30.0))
    assert np.array_equal(gray.denoise(x, poisson=torch.tensor(30.0)), gray.denoise(x, poisson=30.0))
    with pytest.raises(TypeError, match="`read_noise` must be a number, got NoneType"):
        gray.denoise(x, read_noise=None)
    with pytest.raises(ValueError, match=r"`poisson` 1e-300: the image's Anscombe transform spans 0 \(0.1-99.9 "
                                         r"percentiles\), under its noise level of 1: too few photons"):
        gray.denoise(x, poisson=1e-300)


def test_cli_poisson_refuses_audio(tmp_path, capsys):
    import soundfile as sf

    wav = tmp_path / "talk.wav"
    sf.write(wav, np.zeros(8000, np.float32), 16000)
    assert main([str(wav), "-o", str(tmp_path / "out"), "--poisson", "30", "--quiet"]) == 1
    assert f"{wav}: --poisson applies to images and video, not to audio" in capsys.readouterr().err
    assert not (tmp_path / "out" / "talk.wav").exists()


def test_estimate_ignores_flat_padding_and_warns_on_dark_images():
    yy, xx = np.mgrid[0:160, 0:200] / 160.0
    clean = 0.5 + 0.45 * np.sin(4 * xx + 1) * np.cos(3 * yy)
    noisy = np.random.default_rng(3).poisson(30 * clean) / 30
    noisy[:, :80] = 0.2  # constant padding (a mask, a frame border): no noise there
    assert estimate_photon_noise(noisy) == pytest.approx(30, rel=0.05)  # read 48 before flat patches were left out
    dark = np.random.default_rng(4).poisson(30 * clean * 0.01) / 30  # under 1 photon per pixel
    with pytest.warns(UserWarning, match=r"estimate_photon_noise: no patch of `image` holds 3 photons on average"):
        estimate_photon_noise(dark)
    with pytest.raises(ValueError, match=r"`image` is constant \(0 everywhere\): no noise to measure"):
        estimate_photon_noise(np.zeros((64, 64)))
    ramp = 0.2 + 0.5 * np.mgrid[0:64, 0:64][1] / 64.0  # no noise at all
    with pytest.raises(ValueError, match=r"no photon noise found in `image` \(its Anscombe transform's variance reads "
                                         r"0\): it looks clean, or its noise is not photon noise"):
        estimate_photon_noise(ramp)


def _ramp_with_read_noise(peak: float, read: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 192 x 192 ramp from 0.03 to 0.97 (no texture) and one draw of Poisson-Gaussian noise on it (values below 0
    where the read noise takes them: a black level subtracted)."""
    yy, xx = np.mgrid[0:192, 0:192] / 192.0
    clean = 0.03 + 0.94 * (0.6 * xx + 0.4 * yy)
    rng = np.random.default_rng(seed)
    return clean, rng.poisson(peak * clean) / peak + read * rng.standard_normal(clean.shape)


@pytest.mark.parametrize("photons, read", [(10.0, 0.05), (30.0, 0.03), (100.0, 0.02)])
def test_photons_and_read_noise_are_estimated_together(photons, read):
    """On Set12 the photons come within a few percent on average, a little low (texture reads as noise):
    `benchmarks/noise_estimation.py --photons 10,30,100 --read-noise 0.01,0.03`."""
    _, noisy = _ramp_with_read_noise(photons, read)
    assert noisy.min() < 0  # estimate_photon_noise refuses such data
    got_photons, got_read = estimate_poisson_gaussian(noisy)
    assert got_photons == pytest.approx(photons, rel=0.05) and got_read == pytest.approx(read, abs=0.008)
    # one of the two given: the other is fitted alone
    assert estimate_poisson_gaussian(noisy, photons=photons) == (photons, pytest.approx(read, abs=0.008))
    assert estimate_poisson_gaussian(noisy, read_noise=read) == (pytest.approx(photons, rel=0.05), read)
    # channels pooled (one sensor), numpy or torch alike
    pooled = estimate_poisson_gaussian(torch.from_numpy(np.stack([noisy, _ramp_with_read_noise(photons, read, 1)[1]])))
    assert pooled == (pytest.approx(photons, rel=0.05), pytest.approx(read, abs=0.008))


def test_poisson_gaussian_estimate_reads_no_read_noise_in_photon_noise_and_leaves_out_clipped_levels():
    clean, noisy = _ramp_with_read_noise(30.0, 0.0)
    photons, read = estimate_poisson_gaussian(noisy)
    assert photons == pytest.approx(30.0, rel=0.05) and read < 0.01
    # clipped at the black level (negative values set to 0, as an unsigned integer file stores them): the levels
    # with clipped pixels are left out, not read as less noise
    _, dark = _ramp_with_read_noise(30.0, 0.04, seed=1)
    assert estimate_poisson_gaussian(np.clip(dark, 0, None)) == (pytest.approx(30.0, rel=0.06),
                                                                 pytest.approx(0.04, abs=0.008))


def test_estimate_poisson_gaussian_errors():
    _, noisy = _ramp_with_read_noise(30.0, 0.01)
    with pytest.raises(ValueError, match="`photons` and `read_noise` are both given: there is nothing to estimate"):
        estimate_poisson_gaussian(noisy, photons=30.0, read_noise=0.01)
    with pytest.raises(ValueError, match=r"`photons` \(photons at full scale, value 1\) must be > 0, got 0.0"):
        estimate_poisson_gaussian(noisy, photons=0.0)
    with pytest.raises(ValueError, match=r"`read_noise` \(standard deviation of the sensor's Gaussian noise"):
        estimate_poisson_gaussian(noisy, read_noise=-0.01)
    with pytest.raises(TypeError, match="`read_noise` must be a number, got str"):
        estimate_poisson_gaussian(noisy, read_noise="auto")
    with pytest.raises(TypeError, match="Expected `image` to be a numpy array or torch tensor, got list"):
        estimate_poisson_gaussian([[0.5]])
    with pytest.raises(ValueError, match=r"`image` is constant \(0.25 everywhere\): no noise to measure"):
        estimate_poisson_gaussian(np.full((64, 64), 0.25))
    with pytest.raises(ValueError, match="`image` holds 49 7 x 7 patches that are not flat; 1568 are needed to fit "
                                         r"its noise at 2 level\(s\)"):
        padded = np.zeros((64, 64))
        padded[:7, :7] = noisy[:7, :7]
        estimate_poisson_gaussian(padded)
    with pytest.raises(ValueError, match=r"`image` has 0 noise levels to fit, 2 needed: 16 of its 16 have more than 2% "
                                         r"of their pixels at its lowest value \(0: clipped, or dark counts of 0\) "
                                         r"or at its highest \(1: saturated\); photon counts without read noise: "
                                         "estimate_photon_noise"):
        estimate_poisson_gaussian(np.clip(noisy * 3 - 1, 0, 1))  # clipped and saturated everywhere
    with pytest.raises(ValueError, match=r"at its highest \(1.3: saturated\)$"):  # no hint when 0 is not the lowest
        estimate_poisson_gaussian(np.clip(noisy * 3 - 1, 0.1, 1.3))
    with pytest.raises(ValueError, match=r"no signal-dependent noise found in `image` \(variance -?[0-9.e-]+ x mean "
                                         r"\+ [0-9.e-]+\): it looks clean, or its noise is not photon noise"):
        clean = np.linspace(0.1, 0.9, 96 * 96).reshape(96, 96)  # its noise falls as the level rises
        estimate_poisson_gaussian(clean + (1.0 - clean) * 0.05 * np.random.default_rng(0).standard_normal(clean.shape))
    with pytest.raises(ValueError, match=r"no signal-dependent noise found in `image` .*, or the `read_noise` given "
                                         r"\(0.5\) is above its noise"):
        estimate_poisson_gaussian(noisy, read_noise=0.5)


def test_auto_read_noise_in_denoise_and_on_the_command_line(tmp_path, gray, capsys):
    clean, noisy = _ramp_with_read_noise(30.0, 0.03, seed=2)
    x = noisy[:96, :96].astype(np.float32)  # black-level-subtracted data: values below 0
    photons, read = estimate_poisson_gaussian(x)
    assert np.array_equal(gray.denoise(x, poisson="auto", read_noise="auto"),
                          gray.denoise(x, poisson=photons, read_noise=read))
    assert np.array_equal(gray.denoise(x, poisson=30.0, read_noise="auto"),
                          gray.denoise(x, poisson=30.0, read_noise=estimate_poisson_gaussian(x, photons=30.0)[1]))
    assert np.array_equal(gray.denoise(x, poisson="auto", read_noise=0.03),
                          gray.denoise(x, poisson=estimate_poisson_gaussian(x, read_noise=0.03)[0], read_noise=0.03))
    with pytest.raises(ValueError, match=r"`read_noise` must be a standard deviation \(a number >= 0\) or 'auto', "
                                         r"got 'low'"):
        gray.denoise(x, poisson=30.0, read_noise="low")
    with pytest.raises(ValueError, match=r"`read_noise` \('auto'\) is the Gaussian part of photon noise: it goes "
                                         r"with `poisson`"):
        gray.denoise(x, read_noise="auto")
    src = tmp_path / "raw.npy"
    np.save(src, x)
    assert main([str(src), "-o", str(tmp_path / "out"), "--poisson", "auto", "--read-noise", "auto", "--quiet"]) == 0
    assert np.allclose(np.load(tmp_path / "out" / "raw.npy"), gray.denoise(x, poisson=photons, read_noise=read),
                       atol=1e-6)
    for args, message in [(["--read-noise", "auto"], "error: --read-noise ('auto') is the Gaussian part of photon "
                                                     "noise: it goes with --poisson"),
                          (["--poisson", "30", "--read-noise", "low"], "argument --read-noise: expected the read "
                                                                       "noise (a number) or 'auto', got 'low'")]:
        assert main([str(src), "-o", str(tmp_path / "bad"), *args]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


@pytest.fixture(scope="module")
def video():
    return xmodal.load("video")


def _photon_clip(peak: float, frames: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth pattern panning across 64 x 80 frames, in [0.05, 0.95], and one draw of photon noise on it."""
    yy, xx = np.mgrid[0:64, 0:80] / 64.0
    clean = np.stack([0.5 + 0.45 * np.sin(3 * (xx + 0.05 * t) + 1) * np.cos(2 * yy) for t in range(frames)])
    return clean, np.random.default_rng(seed).poisson(peak * clean) / peak


def test_video_through_the_transform_beats_taking_photon_noise_as_it_is(video):
    clean, noisy = _photon_clip(20.0)
    x = noisy.astype(np.float32)
    vst = video.denoise(x, poisson=20.0)
    assert vst.dtype == np.float32 and vst.shape == x.shape and (vst >= 0).all()

    def psnr(y):
        return 10 * np.log10(1 / np.mean((np.clip(y, 0, 1) - clean) ** 2))

    assert psnr(vst) > psnr(video.denoise(x)) + 1.5  # measured 41.8 against 38.6 dB on a 96 x 128 version
    # in value_range's units, and channels last, the same
    scaled = video.denoise(x[..., None] * 1000, poisson=20.0, value_range=(0, 1000), channels_last=True)
    assert np.allclose(scaled[..., 0] / 1000, vst, atol=1e-5)


def test_video_photon_noise_is_estimated_from_its_sampled_frames(video):
    _, noisy = _photon_clip(20.0, frames=4, seed=1)
    x = noisy.astype(np.float32)  # 4 frames: all of them sampled, pooled
    assert np.array_equal(video.denoise(x, poisson="auto"), video.denoise(x, poisson=estimate_photon_noise(x)))
    photons, read = estimate_poisson_gaussian(x)
    assert np.array_equal(video.denoise(x, poisson="auto", read_noise="auto"),
                          video.denoise(x, poisson=photons, read_noise=read))
    with pytest.raises(ValueError, match="`poisson` and `sigma` cannot both be given"):
        video.denoise(x, poisson=20.0, sigma="auto")
    with pytest.raises(ValueError, match=r"`read_noise` \(0.01\) is the Gaussian part of photon noise"):
        video.denoise(x, read_noise=0.01)


def test_cli_poisson_denoises_a_time_lapse_of_16_bit_frames_as_the_api_does(tmp_path, video, capsys):
    _, noisy = _photon_clip(30.0, frames=4, seed=2)
    frames = tmp_path / "timelapse"
    frames.mkdir()
    counts = np.rint(noisy * 30).astype(np.uint16)  # raw photon counts
    for t, frame in enumerate(counts):
        tifffile.imwrite(frames / f"t{t:03d}.tif", frame)
    assert main([str(frames), "-o", str(tmp_path / "out"), "--modality", "video", "--poisson", "65535",
                 "--quiet"]) == 0
    out = np.stack([tifffile.imread(tmp_path / "out" / "timelapse" / f"t{t:03d}.tif") for t in range(4)])
    expected = video.denoise(counts.astype(np.float32) / 65535, poisson=65535.0)
    assert np.abs(out.astype(np.float64) - np.clip(np.rint(expected * 65535), 0, 65535)).max() <= 1
    # raw counts in a float .npy clip: taken as they are (poisson=1), not auto-ranged
    np.save(tmp_path / "counts.npy", counts.astype(np.float32))
    assert main([str(tmp_path / "counts.npy"), "-o", str(tmp_path / "out2"), "--modality", "video",
                 "--poisson", "1", "--quiet"]) == 0
    assert np.allclose(np.load(tmp_path / "out2" / "counts.npy"), video.denoise(counts.astype(np.float32), poisson=1.0),
                       atol=1e-5)
    assert main([str(frames), "-o", str(tmp_path / "bad"), "--modality", "video", "--poisson", "1e-300"]) == 1
    assert "timelapse: `poisson` 1e-300: the clip's Anscombe transform spans" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_evaluate_images_with_photon_noise_scores_what_the_command_writes(tmp_path):
    from xmodal.evaluate import evaluate_images

    clean, noisy = _photon_image(30.0, seed=6)
    for folder, image in (("clean", clean), ("noisy", noisy)):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(tmp_path / folder / "a.tif", np.rint(np.clip(image, 0, 1) * 65535).astype(np.uint16))
    result = evaluate_images(tmp_path / "clean", tmp_path / "noisy", denoiser="gray", poisson=30.0)
    assert main([str(tmp_path / "noisy" / "a.tif"), "-o", str(tmp_path / "den"), "--poisson", "30", "--quiet"]) == 0
    written = evaluate_images(tmp_path / "clean", tmp_path / "noisy", enhanced_dir=tmp_path / "den")
    assert result["mean"]["enhanced"]["psnr"] == pytest.approx(written["mean"]["enhanced"]["psnr"], abs=1e-6)
    assert result["mean"]["enhanced"]["psnr"] > result["mean"]["noisy"]["psnr"] + 8
