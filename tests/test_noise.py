"""Noise models: statistics against their definitions, parameter draws, determinism, sigma maps, errors.

Tolerances: a statistic of N independent samples is checked to within ``Z = 5`` of its standard error, estimated from
the same samples (mean: ``sqrt(var / N)``; variance: ``sqrt((m4 - var^2) / N)`` with ``m4`` the fourth central
moment). Seeds are fixed, so the tests are deterministic; 5 standard errors leaves room for any seed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

from xmodal.noise import (
    NoiseModel,
    NoiseSpec,
    apply_noise,
    camera,
    can_estimate_sigma,
    curriculum_sigma,
    deadline,
    estimate_sigma,
    gaussian,
    h264,
    linear_to_srgb,
    poisson_gaussian,
    rician,
    rician_mean,
    rician_std,
    salt_and_pepper,
    salt_and_pepper_std,
    speckle,
    srgb_to_linear,
    stripe,
)

Z = 5.0
KINDS = ("gaussian", "poisson_gaussian", "speckle", "gamma_speckle", "salt_and_pepper", "stripe", "rician")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def const(value: float, shape: tuple[int, ...] = (1, 256, 256), dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.full(shape, value, dtype=dtype)


def check_moments(samples: torch.Tensor, mean: float, var: float) -> None:
    """Sample mean and variance of ``samples`` equal ``mean`` and ``var`` within Z standard errors."""
    e = samples.double().flatten()
    n = e.numel()
    m, v = e.mean().item(), e.var().item()
    m4 = ((e - m) ** 4).mean().item()
    se_mean, se_var = math.sqrt(v / n), math.sqrt(max(m4 - v * v, 0.0) / n)
    assert abs(m - mean) <= Z * se_mean + 1e-12, f"mean {m} vs {mean} (se {se_mean})"
    assert abs(v - var) <= Z * se_var + 1e-12, f"variance {v} vs {var} (se {se_var})"


def rice_mean_scipy(A: float, sigma: float) -> float:
    """``sigma sqrt(pi/2) L_{1/2}(-A^2 / 2 sigma^2)``, ``L_{1/2}(t) = e^{t/2} ((1 - t) I0(-t/2) - t I1(-t/2))``."""
    t = -A * A / (2 * sigma * sigma)
    lag = math.exp(t / 2) * ((1 - t) * scipy.special.i0(-t / 2) - t * scipy.special.i1(-t / 2))
    return sigma * math.sqrt(math.pi / 2) * lag


# ------------------------------------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("level", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("sigma", [0.01, 0.1, 0.5])
def test_gaussian_moments(level, sigma):
    x = const(level)
    check_moments(gaussian(x, sigma, gen()) - x, 0.0, sigma ** 2)


@pytest.mark.parametrize("level", [0.05, 0.3, 0.9])
@pytest.mark.parametrize("peak, sigma", [(5.0, 0.0), (30.0, 0.02), (200.0, 0.05)])
def test_poisson_gaussian_moments(level, peak, sigma):
    x = const(level)
    check_moments(poisson_gaussian(x, peak, sigma, gen(1)), level, level / peak + sigma ** 2)


def test_poisson_is_quantised_and_nonnegative_without_read_noise():
    x = const(0.2, (1, 64, 64))
    counts = poisson_gaussian(x, 10.0, 0.0, gen()) * 10.0
    assert torch.equal(counts, counts.round()) and counts.min() >= 0
    zero = poisson_gaussian(const(-0.5, (1, 8, 8)), 10.0, 0.0, gen())  # negative x: rate 0
    assert torch.equal(zero, torch.zeros_like(zero))


@pytest.mark.parametrize("level", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("sigma", [0.05, 0.3])
def test_gaussian_speckle_moments(level, sigma):
    x = const(level)
    check_moments(speckle(x, sigma, gen(2)) - x, 0.0, (level * sigma) ** 2)


@pytest.mark.parametrize("looks", [0.5, 1.0, 4.0, 10.5])
def test_gamma_speckle_is_gamma_with_mean_one(looks):
    x = const(1.0)
    G = speckle(x, generator=gen(3), kind="gamma", looks=looks)
    check_moments(G, 1.0, 1.0 / looks)
    assert G.min() >= 0
    # the whole distribution, not only two moments: Kolmogorov-Smirnov against Gamma(L, scale 1/L)
    sample = G.flatten()[:5000].numpy()
    assert scipy.stats.kstest(sample, "gamma", args=(looks, 0, 1 / looks)).pvalue > 1e-3
    level = 0.4  # multiplicative: the noise scales with x
    check_moments(speckle(const(level), generator=gen(4), kind="gamma", looks=looks), level, level ** 2 / looks)


@pytest.mark.parametrize("amount", [0.0, 0.05, 0.3, 1.0])
@pytest.mark.parametrize("salt_vs_pepper", [0.5, 0.8])
def test_salt_and_pepper_fraction(amount, salt_vs_pepper):
    x = const(0.5, (3, 128, 128))
    y = salt_and_pepper(x, amount, gen(5), salt_vs_pepper=salt_vs_pepper)
    hit = y != x  # (3, H, W); every replacement changes a 0.5 pixel
    assert torch.equal(hit[0], hit[1]) and torch.equal(hit[0], hit[2])  # whole pixels by default
    assert torch.equal(y[0], y[2])
    n = hit[0].numel()
    frac = hit[0].double().mean().item()
    assert abs(frac - amount) <= Z * math.sqrt(amount * (1 - amount) / n) + 1e-12
    assert set(torch.unique(y).tolist()) <= {0.0, 0.5, 1.0}
    if amount > 0:
        salt = (y[0][hit[0]] == 1.0).double()
        p = salt_vs_pepper
        assert abs(salt.mean().item() - p) <= Z * math.sqrt(p * (1 - p) / salt.numel())


def test_salt_and_pepper_per_channel_and_levels():
    x = const(0.5, (3, 64, 64))
    y = salt_and_pepper(x, 0.3, gen(6), per_channel=True, low=-1.0, high=2.0)
    hit = y != x
    assert not torch.equal(hit[0], hit[1])  # channels drawn independently
    assert set(torch.unique(y).tolist()) == {-1.0, 0.5, 2.0}


@pytest.mark.parametrize("direction", ["vertical", "horizontal"])
def test_stripes_constant_along_their_direction(direction):
    x = torch.rand(8, 2, 64, 64, generator=gen(7), dtype=torch.float64)
    sigma = 0.1
    e = stripe(x, sigma, gen(8), direction=direction) - x  # (B, C, H, W)
    axis = -2 if direction == "vertical" else -1
    torch.testing.assert_close(e, e.mean(dim=axis, keepdim=True).expand_as(e))  # constant down a column / row
    offsets = e.select(axis, 0)  # (B, C, W) or (B, C, H): one offset per column (row) and channel
    assert offsets.std(dim=-1).min() > 0  # they differ across columns
    check_moments(offsets, 0.0, sigma ** 2)
    assert not torch.equal(offsets[:, 0], offsets[:, 1])  # and across channels


@pytest.mark.parametrize("sigma", [0.05, 0.2])
@pytest.mark.parametrize("A", [0.0, 0.1, 0.3, 1.0])
def test_rician_bias_matches_closed_form(A, sigma):
    x = const(A)
    y = rician(x, sigma, gen(9))
    assert y.min() >= 0
    mean = rice_mean_scipy(A, sigma)
    var = A * A + 2 * sigma * sigma - mean * mean  # E[y^2] = A^2 + 2 sigma^2
    check_moments(y, mean, var)
    assert rician_mean(torch.tensor([A], dtype=torch.float64), sigma).item() == pytest.approx(mean, rel=1e-10)
    assert rician_std(torch.tensor([A], dtype=torch.float64), sigma).item() == pytest.approx(math.sqrt(var),
                                                                                               rel=1e-8)


def test_rician_closed_forms_are_stable_far_from_the_origin():
    """A / sigma up to 5000, where unscaled Bessel functions (and scipy.stats.rice.mean) overflow: compare against
    moments integrated numerically from scipy's (exponentially scaled, stable) Rice density."""
    import scipy.integrate

    sigma = 0.01
    A = torch.tensor([0.0, 0.5, 1.0, 50.0], dtype=torch.float64)
    for a, mean, std in zip(A.tolist(), rician_mean(A, sigma).tolist(), rician_std(A, sigma).tolist()):
        b = a / sigma
        pdf = scipy.stats.rice(b).pdf
        lo, hi = max(b - 40.0, 0.0), b + 40.0
        m = scipy.integrate.quad(lambda y: y * pdf(y), lo, hi, points=[b], epsabs=0, epsrel=1e-12, limit=200)[0]
        v = scipy.integrate.quad(lambda y: (y - m) ** 2 * pdf(y), lo, hi, points=[b], epsabs=0, epsrel=1e-12,
                                 limit=200)[0]
        assert mean == pytest.approx(sigma * m, rel=1e-9)
        assert std == pytest.approx(sigma * math.sqrt(v), rel=1e-6)
    assert rician_mean(A, 0.0).tolist() == A.tolist() and rician_std(A, 0.0).tolist() == [0.0] * 4


# ------------------------------------------------------------------------------------------- parameters and ranges


def test_range_is_drawn_per_image_and_per_channel():
    x = torch.full((64, 3, 32, 32), 0.5)
    spec = NoiseSpec(kind="gaussian", sigma=(0.02, 0.3))
    noisy, smap = apply_noise(x, spec, gen(10))
    per_image = smap[:, :, 0, 0]  # (B, C)
    assert torch.equal(smap, per_image[:, :, None, None].expand_as(smap))  # constant within an image
    assert torch.equal(per_image, per_image[:, :1].expand_as(per_image))  # same for every channel
    s = per_image[:, 0]
    assert s.min() >= 0.02 and s.max() <= 0.3 and s.std() > 0.05  # spread over the range
    assert scipy.stats.kstest(((s - 0.02) / 0.28).numpy(), "uniform").pvalue > 1e-3
    empirical = (noisy - x).flatten(2).std(dim=-1)  # (B, C, H, W) -> (B, C, H*W) -> (B, C)
    n = 32 * 32  # std of a Gaussian sample std: sigma / sqrt(2 (n - 1))
    assert ((empirical - per_image).abs() <= Z * per_image / math.sqrt(2 * (n - 1))).all()
    torch.testing.assert_close(gaussian(x, (0.02, 0.3), gen(10)), noisy, rtol=0, atol=0)  # same draws

    _, smap = apply_noise(x, NoiseSpec(kind="gaussian", sigma=(0.02, 0.3), per_channel=True), gen(11))
    per_channel = smap[:, :, 0, 0]  # (B, C)
    assert torch.equal(smap, per_channel[:, :, None, None].expand_as(smap))
    assert (per_channel.std(dim=1) > 0).all()  # independent sigma per channel


def test_per_channel_sigma_list():
    x = torch.zeros(3, 128, 128, dtype=torch.float64)
    sigmas = [0.0, 0.05, 0.2]
    e = gaussian(x, sigmas, gen(12))
    assert torch.equal(e[0], torch.zeros_like(e[0]))
    for c in (1, 2):
        check_moments(e[c], 0.0, sigmas[c] ** 2)
    torch.testing.assert_close(gaussian(x, torch.tensor(sigmas), gen(12)), e)  # a 1-D tensor works too
    two = gaussian(torch.zeros(2, 64, 64), [0.0, 0.1], gen(13))  # C = 2: a list is per channel, not a range
    assert two[0].abs().max() == 0 and two[1].std() > 0.05


def test_fixed_sigma_in_spec_and_peak_range():
    x = torch.full((16, 1, 32, 32), 0.5, dtype=torch.float64)
    _, smap = apply_noise(x, NoiseSpec(kind="gaussian", sigma=(0.1, 0.1)), gen())
    assert torch.equal(smap, torch.full_like(x, 0.1))
    _, smap = apply_noise(x, NoiseSpec(kind="poisson_gaussian", peak=(10.0, 100.0), sigma=(0.0, 0.0)), gen())
    peaks = 0.5 / smap[:, 0, 0, 0] ** 2  # sigma_map = sqrt(x / peak) -> peak
    assert peaks.min() >= 10.0 - 1e-9 and peaks.max() <= 100.0 + 1e-9 and peaks.std() > 5


# -------------------------------------------------------------------------------------------------------- sigma map


@pytest.mark.parametrize("kind", KINDS)
def test_sigma_map_is_the_noise_std(kind):
    """Over many draws of one image, the pixel-wise std of ``noisy - x`` equals ``sigma_map``."""
    levels = torch.tensor([0.0, 0.1, 0.4, 0.8, 1.0], dtype=torch.float64)
    x = levels.view(1, 1, 5, 1).expand(4096, 2, 5, 8).contiguous()  # (R, C, H, W): rows of constant level
    spec = NoiseSpec(kind=kind, sigma=(0.1, 0.1), peak=(20.0, 20.0), amount=(0.2, 0.2), looks=3.0)
    noisy, smap = apply_noise(x, spec, gen(14))
    assert smap.shape == x.shape and smap.dtype == x.dtype
    assert torch.equal(smap, smap[:1].expand_as(smap))  # fixed parameters: the same map for every draw
    e = noisy - x
    if kind == "stripe":  # one offset per column: average over draws and rows, not pixels of one column
        e = e.mean(dim=-2)  # (R, C, H, W) -> (R, C, W): still N(0, sigma^2)
        smap = smap[..., 0, :]
    empirical = e.std(dim=0)  # over the R draws
    expected = smap[0]
    R = e.shape[0]
    kurt = ((e - e.mean(0)) ** 4).mean(0) / empirical.clamp_min(1e-12) ** 4  # std error of a std needs kurtosis
    se = expected * torch.sqrt((kurt - 1).clamp_min(0) / (4 * R))
    assert ((empirical - expected).abs() <= Z * se + 1e-9).all(), (empirical - expected).abs().max()


def test_sigma_map_closed_forms():
    x = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64).view(1, 1, 3)
    _, smap = apply_noise(x, NoiseSpec(kind="poisson_gaussian", peak=(16.0, 16.0), sigma=(0.1, 0.1)), gen())
    torch.testing.assert_close(smap, torch.sqrt(x / 16 + 0.01))
    _, smap = apply_noise(x, NoiseSpec(kind="speckle", sigma=(0.2, 0.2)), gen())
    torch.testing.assert_close(smap, 0.2 * x)
    _, smap = apply_noise(x, NoiseSpec(kind="gamma_speckle", looks=4.0), gen())
    torch.testing.assert_close(smap, x / 2)
    _, smap = apply_noise(x, NoiseSpec(kind="salt_and_pepper", amount=(0.1, 0.1), salt_vs_pepper=1.0), gen())
    torch.testing.assert_close(smap, (1 - x) * math.sqrt(0.1 * 0.9))  # Bernoulli(0.1) times (1 - x)
    torch.testing.assert_close(salt_and_pepper_std(x, 0.0), torch.zeros_like(x))
    _, smap = apply_noise(x, NoiseSpec(kind="rician", sigma=(0.1, 0.1)), gen())
    assert smap[..., 0].item() == pytest.approx(0.1 * math.sqrt(2 - math.pi / 2), rel=1e-9)
    assert smap[..., 2].item() == pytest.approx(0.1, rel=0.01)


# ------------------------------------------------------------------------------------ determinism, shapes, dtypes


CALLS = [
    lambda x, g: gaussian(x, (0.0, 0.2), g),
    lambda x, g: poisson_gaussian(x, (5.0, 50.0), 0.01, g),
    lambda x, g: speckle(x, 0.1, g),
    lambda x, g: speckle(x, generator=g, kind="gamma", looks=2.5),
    lambda x, g: salt_and_pepper(x, 0.1, g),
    lambda x, g: stripe(x, 0.05, g, direction="horizontal"),
    lambda x, g: rician(x, 0.1, g),
    lambda x, g: camera(x, (50.0, 5000.0), (0.0, 0.01), g),
]


@pytest.mark.parametrize("call", CALLS)
def test_deterministic_shape_and_dtype(call):
    x = torch.rand(2, 3, 17, 23, generator=gen(15))
    a, b, c = call(x, gen(1)), call(x, gen(1)), call(x, gen(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype
    for y in (x[0], x[None]):  # (C, H, W) and (A, B, C, H, W) work too
        assert call(y, gen(1)).shape == y.shape
    assert call(x.double(), gen(1)).dtype == torch.float64
    assert call(x.half(), gen(1)).dtype == torch.float16
    torch.manual_seed(3)
    d = call(x, None)
    torch.manual_seed(3)
    assert torch.equal(d, call(x, None))  # generator=None: torch's global RNG


def test_batch_items_get_independent_noise():
    x = torch.zeros(2, 1, 16, 16)
    y = gaussian(x, 0.1, gen())
    assert not torch.equal(y[0], y[1])


@pytest.mark.parametrize("call", CALLS)
def test_x_errors(call):
    with pytest.raises(ValueError, match=r"Expected `x` of shape \(\.\.\., C, H, W\) \(at least 3 dims\), "
                                         r"got \(16, 16\); add a channel axis"):
        call(torch.zeros(16, 16), gen())
    with pytest.raises(TypeError, match=r"Expected `x` to be a floating-point tensor, got torch.uint8"):
        call(torch.zeros(1, 4, 4, dtype=torch.uint8), gen())
    with pytest.raises(TypeError, match=r"Expected `x` to be a torch.Tensor, got ndarray"):
        call(np.zeros((1, 4, 4), np.float32), gen())


# ------------------------------------------------------------------------------------------------- argument errors


X = torch.zeros(3, 8, 8)


@pytest.mark.parametrize("fn", [gaussian, stripe, rician, lambda x, s, g: speckle(x, s, g)])
def test_sigma_errors(fn):
    with pytest.raises(ValueError, match=r"`sigma` must be >= 0, got -0.1"):
        fn(X, -0.1, gen())
    with pytest.raises(ValueError, match=r"`sigma` must be >= 0, got nan"):
        fn(X, float("nan"), gen())
    with pytest.raises(ValueError, match=r"`sigma` range must have low <= high, got \(0.2, 0.1\)"):
        fn(X, (0.2, 0.1), gen())
    with pytest.raises(ValueError, match=r"`sigma` as a tuple is a \(low, high\) range: expected 2 numbers, "
                                         r"got \(0.1, 0.2, 0.3\) \(pass a list for per-channel values\)"):
        fn(X, (0.1, 0.2, 0.3), gen())
    with pytest.raises(ValueError, match=r"`sigma` has 2 per-channel values but `x` has 3 channels"):
        fn(X, [0.1, 0.2], gen())
    with pytest.raises(ValueError, match=r"`sigma` as a list must hold one number per channel, got \[\]"):
        fn(X, [], gen())
    with pytest.raises(ValueError, match=r"`sigma` as a tensor must be 1-D \(one value per channel\), got \(3, 1\)"):
        fn(X, torch.ones(3, 1), gen())
    with pytest.raises(TypeError, match=r"`sigma` must be a float, a \(low, high\) tuple or a per-channel list, "
                                        r"got str"):
        fn(X, "0.1", gen())


def test_per_channel_with_list_error():
    with pytest.raises(ValueError, match=r"per_channel=True draws one `sigma` per channel from a \(low, high\) "
                                         r"range; `sigma` is already a per-channel list"):
        gaussian(X, [0.1, 0.2, 0.3], gen(), per_channel=True)


def test_poisson_errors():
    for peak in (0.0, -3.0, (0.0, 10.0)):
        with pytest.raises(ValueError, match=r"`peak` must be > 0, got"):
            poisson_gaussian(X, peak, 0.0, gen())
    with pytest.raises(TypeError, match=r"`peak` must be a float or a \(low, high\) tuple, got list"):
        poisson_gaussian(X, [1.0, 2.0, 3.0], 0.0, gen())
    with pytest.raises(ValueError, match=r"`peak` as a tuple is a \(low, high\) range: expected 2 numbers, "
                                         r"got \(1.0,\)$"):
        poisson_gaussian(X, (1.0,), 0.0, gen())


def test_speckle_errors():
    with pytest.raises(ValueError, match=r"speckle\(kind='gaussian'\) needs `sigma`, got None"):
        speckle(X, generator=gen())
    with pytest.raises(ValueError, match=r"`looks` belongs to speckle\(kind='gamma'\); kind='gaussian' takes "
                                         r"`sigma`, got looks=2"):
        speckle(X, 0.1, gen(), looks=2)
    with pytest.raises(ValueError, match=r"speckle\(kind='gamma'\) needs `looks`, got None"):
        speckle(X, generator=gen(), kind="gamma")
    with pytest.raises(ValueError, match=r"`sigma` belongs to speckle\(kind='gaussian'\); kind='gamma' takes "
                                         r"`looks`, got sigma=0.1"):
        speckle(X, 0.1, gen(), kind="gamma", looks=2)
    with pytest.raises(ValueError, match=r"per_channel=True applies to sigma ranges; speckle\(kind='gamma'\) has "
                                         r"a fixed `looks`"):
        speckle(X, generator=gen(), kind="gamma", looks=2, per_channel=True)
    with pytest.raises(ValueError, match=r"`looks` must be > 0, got 0.0"):
        speckle(X, generator=gen(), kind="gamma", looks=0)
    with pytest.raises(ValueError, match=r"`kind` must be one of \('gaussian', 'gamma'\), got 'rayleigh'"):
        speckle(X, 0.1, gen(), kind="rayleigh")


def test_salt_and_pepper_errors():
    for amount in (1.5, -0.1, (0.2, 1.2)):
        with pytest.raises(ValueError, match=r"`amount` must be in \[0, 1\], got"):
            salt_and_pepper(X, amount, gen())
    with pytest.raises(ValueError, match=r"`amount` range must have low <= high, got \(0.5, 0.1\)"):
        salt_and_pepper(X, (0.5, 0.1), gen())
    with pytest.raises(ValueError, match=r"`salt_vs_pepper` must be in \[0, 1\], got 2.0"):
        salt_and_pepper(X, 0.1, gen(), salt_vs_pepper=2.0)
    with pytest.raises(ValueError, match=r"`low` and `high` must be finite with low <= high, got low=1.0, "
                                         r"high=0.0"):
        salt_and_pepper(X, 0.1, gen(), low=1.0, high=0.0)


@pytest.mark.parametrize("direction", ["vertical", "horizontal"])
def test_dead_lines_are_whole_lines_of_one_channel(direction):
    """Each column (row) of each channel is lost with probability ``amount``, all of it set to ``low``; the rest is
    untouched; channels lose different lines; the returned sigma map is the exact deviation of that loss."""
    x = torch.rand(16, 3, 48, 64, generator=gen(3), dtype=torch.float64) * 0.8 + 0.1  # never equal to low
    y = deadline(x, 0.1, gen(4), direction=direction, low=0.0)
    lost = y != x
    axis = -2 if direction == "vertical" else -1
    lines = lost.all(dim=axis)  # (B, C, W) or (B, C, H): a line is lost whole or not at all
    assert torch.equal(lost, lines.unsqueeze(axis).expand_as(lost)) and (y[lost] == 0).all()
    n = lines.numel()
    assert abs(lines.double().mean().item() - 0.1) < 3 * math.sqrt(0.1 * 0.9 / n)
    assert not torch.equal(lines[:, 0], lines[:, 1])  # each channel its own lines
    _, sigma_map = apply_noise(x, NoiseSpec(kind="deadline", amount=(0.1, 0.1), direction=direction))
    torch.testing.assert_close(sigma_map, math.sqrt(0.1 * 0.9) * x)  # |x - low| sqrt(p (1 - p))
    ranged = deadline(x, (0.0, 0.4), gen(5), per_channel=True)  # a fraction per image and channel
    fractions = (ranged != x).all(dim=-2).double().mean(dim=-1)  # (B, C)
    assert fractions.std() > 0.05 and fractions.max() <= 0.6
    with pytest.raises(ValueError, match=r"`direction` must be one of \('vertical', 'horizontal'\), got 'up'"):
        deadline(x, 0.1, gen(), direction="up")
    with pytest.raises(ValueError, match=r"`amount`.*1"):
        deadline(x, 1.5, gen())
    with pytest.raises(ValueError, match=r"`low` must be finite, got nan"):
        deadline(x, 0.1, gen(), low=float("nan"))


def test_stripe_direction_error():
    with pytest.raises(ValueError, match=r"`direction` must be one of \('vertical', 'horizontal'\), "
                                         r"got 'diagonal'"):
        stripe(X, 0.1, gen(), direction="diagonal")


# ------------------------------------------------------------------------------------------- spec, module, schedule


def test_spec_accepts_yaml_lists_and_module_wraps_apply_noise():
    spec = NoiseSpec(kind="stripe", sigma=[0.0, 0.1], direction="horizontal")
    assert spec.sigma == (0.0, 0.1) and hash(spec)
    model = NoiseModel(spec)
    x = torch.rand(2, 3, 8, 8, generator=gen())
    out, ref = model(x, gen(4)), apply_noise(x, spec, gen(4))
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])
    assert "stripe" in repr(model) and not list(model.parameters())


@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(kind="poisson"), ValueError, r"NoiseSpec.kind must be one of \('gaussian', 'poisson_gaussian', "
                                       r"'speckle', 'gamma_speckle', 'salt_and_pepper', 'stripe', 'deadline', "
                                       r"'rician', 'camera'\), "
                                       r"got 'poisson'"),
    (dict(direction="up"), ValueError, r"NoiseSpec.direction must be one of \('vertical', 'horizontal'\), "
                                       r"got 'up'"),
    (dict(sigma=0.1), TypeError, r"NoiseSpec.sigma must be a \(low, high\) tuple, got 0.1"),
    (dict(sigma=(0.3, 0.1)), ValueError, r"`NoiseSpec.sigma` range must have low <= high, got \(0.3, 0.1\)"),
    (dict(sigma=(-0.1, 0.1)), ValueError, r"`NoiseSpec.sigma` must be >= 0, got -0.1"),
    (dict(peak=(0.0, 10.0)), ValueError, r"`NoiseSpec.peak` must be > 0, got 0.0"),
    (dict(amount=(0.0, 1.5)), ValueError, r"`NoiseSpec.amount` must be in \[0, 1\], got 1.5"),
    (dict(looks=0.0), ValueError, r"`NoiseSpec.looks` must be > 0, got 0.0"),
    (dict(salt_vs_pepper=-1.0), ValueError, r"`NoiseSpec.salt_vs_pepper` must be in \[0, 1\], got -1.0"),
    (dict(low=1.0, high=0.0), ValueError, r"NoiseSpec.low and NoiseSpec.high must be finite with low <= high, "
                                          r"got low=1.0, high=0.0"),
    (dict(kind="camera", jpeg_quality=(0, 90)), ValueError,
     r"NoiseSpec.jpeg_quality must be integers with 1 <= low <= high <= 100, got \(0, 90\)"),
    (dict(kind="camera", jpeg_quality=(95, 90)), ValueError, r"1 <= low <= high <= 100, got \(95, 90\)"),
    (dict(kind="camera", jpeg_quality=(80.5, 90)), ValueError, r"must be integers .* got \(80.5, 90\)"),
    (dict(kind="camera", jpeg_quality=90), ValueError,
     r"NoiseSpec.jpeg_quality must be a \(low, high\) range of JPEG qualities, got 90"),
    (dict(kind="gaussian", jpeg_quality=(80, 90)), ValueError,
     r"NoiseSpec.jpeg_quality is for kind 'camera', got kind 'gaussian'"),
])
def test_spec_errors(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        NoiseSpec(**kwargs)


def test_apply_noise_and_module_need_a_spec():
    with pytest.raises(TypeError, match=r"Expected `spec` to be a NoiseSpec, got dict"):
        apply_noise(X, {"kind": "gaussian"}, gen())
    with pytest.raises(TypeError, match=r"Expected `spec` to be a NoiseSpec, got str"):
        NoiseModel("gaussian")


def test_apply_noise_rejects_a_spec_with_an_unknown_kind():
    spec = NoiseSpec()
    object.__setattr__(spec, "kind", "blur")  # bypasses __post_init__: the dispatch still refuses it
    with pytest.raises(ValueError, match=r"NoiseSpec.kind must be one of .*got 'blur'"):
        apply_noise(X, spec, gen())


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_curriculum_endpoints_and_monotonicity(kind):
    start, end = (0.0, 0.05), (0.01, 0.3)
    assert curriculum_sigma(0, 1000, start, end, 0.5, kind) == start
    for step in (500, 700, 1000, 5000):
        assert curriculum_sigma(step, 1000, start, end, 0.5, kind) == pytest.approx(end)
    values = [curriculum_sigma(s, 1000, start, end, 0.5, kind) for s in range(0, 1001, 10)]
    lows, highs = zip(*values)
    assert all(np.diff(lows) >= 0) and all(np.diff(highs) >= 0)
    assert len(set(highs[:51])) == 51  # strictly growing during the ramp
    assert curriculum_sigma(250, 1000, start, end, 0.5, kind) == pytest.approx((0.005, 0.175))  # half way
    assert curriculum_sigma(0, 1000, start, end, 0.0, kind) == end  # no warm-up: the end range at once
    assert curriculum_sigma(np.int64(100), 100, list(start), list(end), 1.0, kind) == pytest.approx(end)


def test_curriculum_shapes_of_the_ramp():
    lin = curriculum_sigma(100, 1000, (0.0, 0.0), (0.0, 1.0), 0.5, "linear")[1]
    cos = curriculum_sigma(100, 1000, (0.0, 0.0), (0.0, 1.0), 0.5, "cosine")[1]
    assert lin == pytest.approx(0.2) and cos == pytest.approx(0.5 * (1 - math.cos(math.pi * 0.2)))


@pytest.mark.parametrize("args, message", [
    ((-1, 100, (0, 0.1), (0, 0.2)), r"`step` must be an integer >= 0, got -1"),
    ((1.5, 100, (0, 0.1), (0, 0.2)), r"`step` must be an integer >= 0, got 1.5"),
    ((1, 0, (0, 0.1), (0, 0.2)), r"`max_steps` must be an integer > 0, got 0"),
    ((1, 100, 0.1, (0, 0.2)), r"`start` must be a \(low, high\) tuple, got 0.1"),
    ((1, 100, (0, 0.1), (0.3, 0.2)), r"`end` range must have low <= high, got \(0.3, 0.2\)"),
    ((1, 100, (-1, 0.1), (0, 0.2)), r"`start` must be >= 0, got -1.0"),
    ((1, 100, (0, 0.1), (0, 0.2), 1.5), r"`warmup_fraction` must be in \[0, 1\], got 1.5"),
    ((1, 100, (0, 0.1), (0, 0.2), 0.5, "step"), r"`kind` must be one of \('linear', 'cosine'\), got 'step'"),
])
def test_curriculum_errors(args, message):
    with pytest.raises(ValueError, match=message):
        curriculum_sigma(*args)


# ------------------------------------------------------------------------------------------------- camera pipeline


def test_srgb_curve_known_values_and_round_trip():
    v = torch.linspace(0, 1, 1001, dtype=torch.float64)
    torch.testing.assert_close(linear_to_srgb(srgb_to_linear(v)), v, atol=1e-12, rtol=0)
    assert srgb_to_linear(torch.tensor(0.5, dtype=torch.float64)).item() == pytest.approx(0.214041140, abs=1e-9)
    assert srgb_to_linear(torch.tensor(0.04045, dtype=torch.float64)).item() == pytest.approx(0.04045 / 12.92)
    assert linear_to_srgb(torch.tensor(1.0)).item() == pytest.approx(1.0)
    assert srgb_to_linear(torch.tensor([-0.5, 1.5])).tolist() == [0.0, 1.0]  # clipped


@pytest.mark.parametrize("channels", [3, 1])
def test_camera_without_noise_gives_flat_colours_back(channels):
    """Demosaicking (normalised at the borders) and white balance give a flat image back exactly, at any Bayer
    phase and size; only the noise changes it."""
    x = torch.tensor([0.2, 0.5, 0.8][:channels], dtype=torch.float64).view(1, -1, 1, 1).expand(6, -1, 5, 8)
    out = camera(x.contiguous(), 1e14, 0.0, gen(3))
    assert (out - x).abs().max() < 1e-5
    assert (camera(x.contiguous(), 100.0, 0.0, gen(3)) - x).abs().max() > 0.01


def test_camera_sigma_map_is_the_noise_std_and_the_noise_is_correlated():
    """Over many draws of a flat colour image the noise variance equals the mean of ``sigma_map**2`` (first order
    through the sRGB curve, exact through demosaicking: also at the borders and corners), red and blue are noisier
    than green (white balance), and neighbours are correlated (interpolation), unlike a monochrome sensor's."""
    R = 3000
    x = torch.tensor([0.3, 0.5, 0.7], dtype=torch.float64).view(1, 3, 1, 1).expand(R, 3, 6, 7).contiguous()
    noisy, smap = apply_noise(x, NoiseSpec(kind="camera", peak=(500.0, 500.0), sigma=(0.003, 0.003)), gen(5))
    e = noisy - x
    whole, top, corner, last = slice(None), slice(0, 1), slice(0, 1), slice(-1, None)
    for rows, cols in [(whole, whole), (top, whole), (corner, corner), (last, last)]:
        per_draw = e[:, :, rows, cols].pow(2).mean(dim=(2, 3))  # (R, 3): independent across draws
        emp, se = per_draw.mean(dim=0), per_draw.std(dim=0) / math.sqrt(R)
        pred = smap[:, :, rows, cols].pow(2).mean(dim=(0, 2, 3))
        assert ((emp - pred).abs() <= Z * se + 0.01 * pred).all(), (rows, cols, emp, pred, se)
    var = smap.pow(2).mean(dim=(0, 2, 3))
    assert var[0] > var[1] and var[2] > var[1]  # the red and blue gains amplify their noise
    g = e[:, 1, 1:-1, 1:-1]
    corr = (g[..., 1:] * g[..., :-1]).mean() / g.pow(2).mean()
    assert corr > 0.2, corr
    mono = camera(x[:, :1], 500.0, 0.003, gen(6)) - x[:, :1]
    corr_mono = (mono[..., 1:] * mono[..., :-1]).mean() / mono.pow(2).mean()
    assert abs(corr_mono) < 0.02, corr_mono


def test_camera_draws_phase_gains_and_levels_per_image():
    x = torch.rand(1, 3, 16, 16, generator=gen(7)).expand(8, 3, 16, 16).contiguous()
    _, smap = apply_noise(x, NoiseSpec(kind="camera", peak=(30.0, 10000.0), sigma=(0.0, 0.01)), gen(8))
    levels = smap.mean(dim=(1, 2, 3))
    assert len(set(levels.tolist())) == 8 and levels.max() > 2 * levels.min()


def test_camera_frames_share_one_camera_per_clip():
    """``frames``: settings (level, gains, mosaic phase, JPEG quality and grid) drawn once per clip, noise in every
    frame."""
    x = torch.rand(1, 3, 16, 16, generator=gen(7)).expand(6, 3, 16, 16).contiguous()
    # without noise what is left is the mosaic phase and the JPEG: the same within a clip, not between clips
    still = camera(x, 1e14, 0.0, gen(8), jpeg_quality=(30, 100), frames=3)
    assert torch.equal(still[0], still[1]) and torch.equal(still[0], still[2]) and torch.equal(still[3], still[5])
    assert not torch.equal(still[0], still[3])
    assert not torch.equal(*camera(x[:2], 1e14, 0.0, gen(8), jpeg_quality=(30, 100)))  # frames=1: one per image
    noisy = camera(x, 300.0, 0.002, gen(8), frames=3)
    assert not torch.equal(noisy[0], noisy[1]) and not torch.equal(noisy[1], noisy[2])  # a new draw in every frame
    spec = dict(peak=(30.0, 10000.0), sigma=(0.0, 0.01))  # frames=1 is the default's draws
    assert torch.equal(camera(x, **spec, generator=gen(8)), camera(x, **spec, generator=gen(8), frames=1))
    # a clip of a flat grey: the frames' noise has one level; the two clips' levels differ
    flat = torch.full((8, 3, 24, 24), 0.4)
    err = (camera(flat, (30.0, 10000.0), 0.0, gen(2), frames=4) - flat).pow(2).mean(dim=(1, 2, 3))
    assert float(err[:4].max() / err[:4].min()) < 1.3 and float(err[4:].max() / err[4:].min()) < 1.3
    assert max(err[:4].mean() / err[4:].mean(), err[4:].mean() / err[:4].mean()) > 1.5
    for bad, message in ((0, "`frames` must be a positive integer, got 0"), (2.5, "got 2.5"), (True, "got True"),
                         (4, r"`frames`=4 must divide the number of images, 6 \(shape \(6, 3, 16, 16\)\)")):
        with pytest.raises(ValueError, match=message):
            camera(x, 100.0, 0.0, gen(), frames=bad)


def test_camera_jpeg_is_on_the_8_bit_grid_and_deterministic():
    x = torch.rand(2, 3, 20, 27, generator=gen(9))
    a = camera(x, 300.0, 0.002, gen(1), jpeg_quality=(50, 90))
    assert a.shape == x.shape and torch.equal(a, camera(x, 300.0, 0.002, gen(1), jpeg_quality=(50, 90)))
    assert torch.allclose(a * 255, (a * 255).round(), atol=1e-4) and a.min() >= 0 and a.max() <= 1
    plain = camera(x, 300.0, 0.002, gen(1))
    assert not torch.allclose(a, plain, atol=1 / 255)  # JPEG changed it
    assert camera(x[:, :1], 300.0, 0.002, gen(1), jpeg_quality=(90, 90)).shape == (2, 1, 20, 27)  # gray JPEG
    spec = NoiseSpec(kind="camera", jpeg_quality=[70, 90])
    assert spec.jpeg_quality == (70, 90) and hash(spec)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (a.double() - b.double()).pow(2).mean()))


def smooth(n: int, c: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Random colours varying over about 16 pixels (white-noise pixels would be mostly lost to 4:2:0 chroma)."""
    coarse = torch.rand(n, c, h // 16 + 2, w // 16 + 2, generator=gen(seed))
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True).clamp(0, 1)


def test_h264_codes_clips_as_video():
    """H.264 noise: 8-bit output of the input's shape; more loss at a higher CRF; reproducible; a clip of several
    frames is coded with prediction between frames (the noise of a still scene stays put), a one-frame clip is a
    still (every frame coded on its own flickers)."""
    x = smooth(1, 3, 48, 64, 1)
    scene = (x + 0.02 * torch.randn(6, 3, 48, 64, generator=gen(2))).clamp(0, 1)  # a still scene, noise per frame
    coded = {crf: h264(scene, crf, frames=6) for crf in (12, 30, 45)}
    for out in coded.values():
        assert out.shape == scene.shape and out.dtype == scene.dtype and 0 <= out.min() and out.max() <= 1
        assert torch.allclose(out * 255, (out * 255).round(), atol=1e-4)
    assert psnr(coded[12], scene) > psnr(coded[30], scene) + 1.5 > psnr(coded[45], scene) + 3
    assert torch.equal(h264(scene, 30, frames=6), coded[30])

    def flicker(clip: torch.Tensor) -> float:
        return float((clip[1:] - clip[:-1]).pow(2).mean().sqrt())

    stills = h264(scene, 35)  # frames=1: six one-frame videos
    assert flicker(h264(scene, 35, frames=6)) < 0.25 * flicker(stills)
    assert flicker(stills) > 0.5 * flicker(scene)
    # gray and odd sizes (padded for 4:2:0 and cropped back); any leading dimensions
    gray = torch.rand(2, 2, 1, 17, 23, generator=gen(3))
    out = h264(gray, 20, frames=2)
    assert out.shape == gray.shape and psnr(out, gray) > 25


def test_h264_draws_one_crf_per_clip():
    x = torch.rand(12, 3, 24, 40, generator=gen(4))
    out = h264(x, (20, 35), gen(5), frames=4)
    assert torch.equal(out, h264(x, (20, 35), gen(5), frames=4))
    drawn = []
    for k in range(3):  # each clip is its own video at one CRF of the range
        clip = slice(4 * k, 4 * k + 4)
        drawn.append([crf for crf in range(20, 36) if torch.equal(h264(x[clip], crf, frames=4), out[clip])])
        assert len(drawn[-1]) >= 1
    assert len({tuple(d) for d in drawn}) > 1


def test_h264_in_noise_spec_and_apply_noise():
    spec = NoiseSpec(kind="gaussian", sigma=[0.05, 0.05], h264_crf=[18, 26])
    assert spec.h264_crf == (18, 26) and hash(spec) and NoiseSpec(h264_crf=23).h264_crf == (23, 23)
    x = smooth(2, 3, 32, 32, 6)
    noisy, sigma_map = apply_noise(x, spec, gen(7))
    plain, plain_map = apply_noise(x, NoiseSpec(kind="gaussian", sigma=(0.05, 0.05)), gen(7))
    assert torch.allclose(noisy * 255, (noisy * 255).round(), atol=1e-4) and not torch.equal(noisy, plain)
    assert torch.equal(sigma_map, plain_map)  # the map is the noise's, before coding
    assert psnr(noisy, plain) > 20  # coded, not replaced
    for bad, message in ((52, r"\(low, high\) range of them, integers with 0 <= low <= high <= 51, got 52"),
                         ((30, 20), r"got \(30, 20\)"), (2.5, "got 2.5"), ([18], r"got \[18\]")):
        with pytest.raises(ValueError, match="NoiseSpec.h264_crf must be an H.264 CRF or a .*" + message):
            NoiseSpec(h264_crf=bad)
    with pytest.raises(ValueError, match=r"H.264 noise needs 1 or 3 channels, got 5 \(shape \(1, 5, 8, 8\)\)"):
        apply_noise(torch.rand(1, 5, 8, 8), NoiseSpec(h264_crf=(20, 20)), gen())


def test_h264_errors(monkeypatch: pytest.MonkeyPatch):
    x = torch.rand(4, 3, 16, 16)
    with pytest.raises(ValueError, match=r"`crf` must be an H.264 CRF or a \(low, high\) range of them, integers "
                                         r"with 0 <= low <= high <= 51, got -1"):
        h264(x, -1)
    for bad in (True, 23.0, (10, 60)):
        with pytest.raises(ValueError, match="`crf` must be an H.264 CRF"):
            h264(x, bad)
    for bad, message in ((0, "`frames` must be a positive integer, got 0"),
                         (3, r"`frames`=3 must divide the number of images, 4 \(shape \(4, 3, 16, 16\)\)")):
        with pytest.raises(ValueError, match=message):
            h264(x, 23, frames=bad)
    with pytest.raises(ValueError, match=r"`preset` must be one of \('ultrafast', .*'veryslow'\), got 'quick'"):
        h264(x, 23, preset="quick")
    with pytest.raises(ValueError, match=r"H.264 noise needs 1 or 3 channels, got 2 \(shape \(4, 2, 16, 16\)\)"):
        h264(x[:, :2], 23)
    with pytest.raises(TypeError, match="Expected `x` to be a floating-point tensor"):
        h264(x.to(torch.uint8), 23)
    monkeypatch.setitem(__import__("sys").modules, "av", None)  # PyAV not installed
    with pytest.raises(ImportError, match=r'H.264 noise \(h264_crf\) needs PyAV: pip install "xmodal\[video\]"'):
        h264(x, 23)


def test_camera_errors():
    with pytest.raises(ValueError, match=r"JPEG \(jpeg_quality\) needs 1 or 3 channels, got 5 \(shape \(5, 8, 8\)\)"):
        camera(torch.rand(5, 8, 8), 100.0, 0.0, gen(), jpeg_quality=(80, 90))
    with pytest.raises(ValueError, match=r"`jpeg_quality` must be integers with 1 <= low <= high <= 100, "
                                         r"got \(80, 101\)"):
        camera(torch.rand(3, 8, 8), 100.0, 0.0, gen(), jpeg_quality=(80, 101))
    with pytest.raises(ValueError, match=r"`peak` must be > 0, got 0.0"):
        camera(torch.rand(3, 8, 8), 0.0, 0.0, gen())
    with pytest.raises(ValueError, match=r"`sigma` must be >= 0, got -0.1"):
        camera(torch.rand(3, 8, 8), 10.0, -0.1, gen())
    with pytest.raises(TypeError, match=r"Expected `x` to be a floating-point tensor"):
        camera(torch.zeros(3, 8, 8, dtype=torch.uint8), 10.0, 0.0, gen())
    with pytest.raises(ValueError, match=r"camera noise on a colour image needs at least 2 x 2 pixels \(one Bayer "
                                         r"quad\), got shape \(3, 1, 8\)"):
        camera(torch.rand(3, 1, 8), 10.0, 0.0, gen())
    assert camera(torch.rand(3, 2, 2), 10.0, 0.0, gen()).isfinite().all()  # the smallest: every colour present
    assert camera(torch.rand(1, 1, 1), 10.0, 0.0, gen()).shape == (1, 1, 1)  # a monochrome pixel needs no mosaic


def scene(h: int, w: int, seed: int) -> np.ndarray:
    """A gray test scene: smooth shading, sharp-edged discs and a grating, in [0.1, 0.9]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w] / max(h, w)
    img = 0.3 + 0.3 * xx + 0.1 * np.sin(6 * yy)
    for cy, cx, r, v in zip(rng.uniform(0, 1, 6), rng.uniform(0, 1, 6), rng.uniform(0.05, 0.2, 6),
                            rng.uniform(-0.25, 0.25, 6)):
        img += v * ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r)
    img[: h // 4, : w // 4] += 0.15 * np.sin(xx[: h // 4, : w // 4] * 150)  # a fine grating in one corner
    return np.clip(img, 0.1, 0.9)


@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.2])
def test_estimate_sigma_reads_the_added_noise(sigma: float) -> None:
    clean = scene(192, 160, 0)
    noisy = clean + np.random.default_rng(1).normal(0, sigma, clean.shape)
    (got,) = estimate_sigma(noisy)
    assert got == pytest.approx(sigma, rel=0.05)
    # in the image's own units: 255 times the values, 255 times the estimate
    assert estimate_sigma(noisy * 255)[0] == pytest.approx(255 * got, rel=1e-4)
    # numpy or torch, any float dtype; patches sampled on a coarser grid still read it
    assert estimate_sigma(torch.from_numpy(noisy).float())[0] == pytest.approx(got, rel=1e-3)
    assert estimate_sigma(noisy, max_patches=4000)[0] == pytest.approx(sigma, rel=0.1)


def test_estimate_sigma_per_channel_and_clean_images() -> None:
    clean = np.stack([scene(128, 128, s) for s in range(3)])  # (3, H, W)
    sigmas = np.array([0.02, 0.06, 0.12])
    noisy = clean + np.random.default_rng(2).normal(0, 1, clean.shape) * sigmas[:, None, None]
    got = estimate_sigma(noisy)
    assert got.shape == (3,) and got.dtype == np.float64
    np.testing.assert_allclose(got, sigmas, rtol=0.05)
    # an 8-bit clean image: about the rounding's 1/sqrt(12) of a step, far below any real noise
    assert estimate_sigma(np.round(clean[0] * 255) / 255)[0] < 1.0 / 255
    np.testing.assert_array_equal(estimate_sigma(np.full((2, 32, 32), 0.5)), [0.0, 0.0])  # flat: no noise at all
    small = 0.5 + np.random.default_rng(0).normal(0, 0.1, (14, 40))  # 272 patches: enough (196 are needed)
    assert estimate_sigma(small)[0] == pytest.approx(0.1, rel=0.3)


def test_can_estimate_sigma_is_the_size_estimate_sigma_takes() -> None:
    """196 patches of 7 x 7 (20 x 20 pixels) are the least; 3 x 3 patches need 36 (8 x 8 pixels)."""
    for (h, w), ok in (((20, 20), True), ((19, 20), False), ((12, 40), True), ((11, 40), False), ((200, 6), False)):
        assert can_estimate_sigma(h, w) is ok
        if ok:
            estimate_sigma(np.random.default_rng(0).random((h, w)))
        else:
            with pytest.raises(ValueError, match=r"too small to estimate its noise"):
                estimate_sigma(np.random.default_rng(0).random((h, w)))
    assert can_estimate_sigma(8, 8, patch_size=3) and not can_estimate_sigma(7, 8, patch_size=3)
    for args, match in (((20.5, 20), r"`height` must be an integer >= 0, got 20.5"),
                        ((20, "20"), r"`width` must be an integer >= 0, got '20'"),
                        ((20, -1), r"`width` must be an integer >= 0, got -1"),
                        ((10, 10, 2), r"`patch_size` must be an integer >= 3, got 2")):
        with pytest.raises(ValueError, match=match):
            can_estimate_sigma(*args)


def test_estimate_sigma_leaves_out_clipped_pixels() -> None:
    """Pixels at the image's lowest or highest value (clipped or saturated: no noise left) are not read as flat."""
    noisy = 0.5 + np.random.default_rng(3).normal(0, 0.05, (128, 128))
    noisy[:, 64:] = 1.0  # half the picture blown out
    assert estimate_sigma(noisy)[0] == pytest.approx(0.05, rel=0.05)


@pytest.mark.parametrize(("image", "kwargs", "error", "match"), [
    ([[0.1, 0.2]], {}, TypeError, r"Expected `image` to be a numpy array or torch tensor, got list"),
    (np.zeros((1, 1, 32, 32)), {}, ValueError, r"Expected `image` of shape \(H, W\) or \(C, H, W\), got "
                                               r"\(1, 1, 32, 32\)"),
    (np.zeros((10, 10)), {}, ValueError, r"`image` of 10 x 10 pixels is too small to estimate its noise from 7 x 7 "
                                         r"patches \(it holds 16, at least 196 are needed\)"),
    (np.full((32, 32), np.nan), {}, ValueError, r"`image` contains NaN or infinite values"),
    (np.zeros((32, 32)), {"patch_size": 2}, ValueError, r"`patch_size` must be an integer >= 3, got 2"),
    (np.zeros((32, 32)), {"max_patches": 0}, ValueError, r"`max_patches` must be an integer >= 1, got 0"),
])
def test_estimate_sigma_errors(image: object, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        estimate_sigma(image, **kwargs)
