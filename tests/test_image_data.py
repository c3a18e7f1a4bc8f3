"""Image and band-stack datasets: determinism, crops, noise statistics, curriculum, augmentation, file loading and
conversion, paired folders, validation splits and their errors."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from xmodal.config import ImageDataConfig
from xmodal.data.images import (ImageCrops, PairedImageCrops, StackCrops, image_files, load_image, noisy_version,
                                resolve_image_data, resolve_stack_data)
from xmodal.data.synthetic import make_demo_images, make_demo_stack, synth_image, synth_stack
from xmodal.imageio import read_image, write_image
from xmodal.noise import NoiseSpec

FIXED = NoiseSpec(sigma=(0.1, 0.1))


def cfg(**kw) -> ImageDataConfig:
    base = dict(patch_size=16, noise=FIXED, augment=False, num_workers=0, epoch_size=50)
    base.update(kw)
    return ImageDataConfig(**base)


def images(n=3, H=40, W=36, C=1, seed=0):
    rng = np.random.default_rng(seed)
    return [synth_image(H, W, C, rng) for _ in range(n)]


def find_window(big: np.ndarray, crop: np.ndarray) -> list[tuple[int, int]]:
    """Every (i, j) where ``crop (C, P, P)`` equals ``big[:, i:i+P, j:j+P]`` exactly."""
    P = crop.shape[-1]
    return [(i, j) for i in range(big.shape[-2] - P + 1) for j in range(big.shape[-1] - P + 1)
            if np.array_equal(big[:, i:i + P, j:j + P], crop)]


def dihedral(x: np.ndarray) -> list[np.ndarray]:
    out = []
    for k in range(4):
        r = np.rot90(x, k, axes=(-2, -1))
        out += [r, r[..., ::-1]]
    return out


# ------------------------------------------------------------------------------------------------------ ImageCrops


def test_image_crops_deterministic_and_independent():
    ims = images()
    ds = ImageCrops(ims, cfg(augment=True))
    a, b = ds[7], ds[7]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    again = ImageCrops(ims, cfg(augment=True))[7]  # a fresh dataset (another worker, a resumed run)
    assert torch.equal(a[0], again[0])
    # item n does not depend on which items were drawn before
    ds2 = ImageCrops(ims, cfg(augment=True))
    for n in (3, 0, 12):
        ds2[n]
    assert torch.equal(ds2[7][0], a[0])
    assert not torch.equal(ds[8][0], a[0])
    # the seed changes everything
    assert not torch.equal(ImageCrops(ims, cfg(augment=True, seed=1))[7][0], a[0])
    assert len(ds) == 50


@pytest.mark.parametrize("C", [1, 3])
def test_image_crops_shapes_and_window(C):
    ims = images(C=C)
    ds = ImageCrops(ims, cfg())
    for n in range(4):
        noisy, clean = ds[n]
        assert noisy.shape == clean.shape == (C, 16, 16)
        assert noisy.dtype == clean.dtype == torch.float32
        # the clean item is a crop of one of the images
        assert any(find_window(im, clean.numpy()) for im in ims)


def test_noise_statistics_for_a_fixed_sigma():
    ds = ImageCrops(images(H=80, W=80), cfg(patch_size=64))
    for n in range(3):
        noisy, clean = ds[n]
        d = (noisy - clean).flatten()
        assert float(d.std()) == pytest.approx(0.1, rel=0.05)  # 4096 samples: std of the estimate ~1.1 %
        assert abs(float(d.mean())) < 0.01
    zero = ImageCrops(images(), cfg(noise=NoiseSpec(sigma=(0.0, 0.0))))
    noisy, clean = zero[0]
    assert torch.equal(noisy, clean)


def test_curriculum_ramps_the_sigma_range():
    c = cfg(patch_size=32, noise=NoiseSpec(sigma=(0.2, 0.2)), curriculum_start=(0.02, 0.02),
            curriculum_fraction=0.5)
    ds = ImageCrops(images(H=48, W=48), c, batch_size=4, max_steps=10)

    def std(n):
        noisy, clean = ds[n]
        return float((noisy - clean).std())

    # step = n // batch_size: items 0..3 are step 0 (sigma 0.02), from step 5 (n >= 20) sigma is 0.2
    for n in range(4):
        assert std(n) == pytest.approx(0.02, rel=0.1)
    for n in (20, 27, 39, 100):
        assert std(n) == pytest.approx(0.2, rel=0.1)
    # in between: cosine ramp, strictly between the two
    mid = std(10)  # step 2 of a 5-step ramp: w = (1 - cos(0.4 pi)) / 2 = 0.345
    assert mid == pytest.approx(0.02 + 0.345 * 0.18, rel=0.1)
    # without a curriculum every step draws from noise.sigma
    flat = ImageCrops(images(H=48, W=48), replace(c, curriculum_start=None), batch_size=4, max_steps=10)
    noisy, clean = flat[0]
    assert float((noisy - clean).std()) == pytest.approx(0.2, rel=0.1)


def test_noise_mix_draws_a_model_per_item():
    """Each item draws its noise model uniformly from ``noise`` and ``noise_mix``; the crop does not depend on the
    mix (the model is drawn after it), and a curriculum ramps whichever model is drawn."""
    ims = images(H=48, W=48)
    plain = ImageCrops(ims, cfg(patch_size=32, noise=NoiseSpec(sigma=(0.2, 0.2))))
    mixed = ImageCrops(ims, cfg(patch_size=32, noise=NoiseSpec(sigma=(0.2, 0.2)),
                                noise_mix=(NoiseSpec(sigma=(0.0, 0.0)), NoiseSpec(kind="camera", peak=(50.0, 50.0),
                                                                                 sigma=(0.0, 0.0)))))
    kinds = []
    for n in range(60):
        noisy, clean = mixed[n]
        assert torch.equal(clean, plain[n][1])
        d = noisy - clean
        if torch.equal(noisy, clean):
            kinds.append("none")
        elif float(d.std()) == pytest.approx(0.2, rel=0.15) and float(d.abs().max()) > 0.5:  # unclipped Gaussian
            kinds.append("gaussian")
        else:
            assert noisy.min() >= 0 and noisy.max() <= 1  # the camera pipeline clips
            kinds.append("camera")
    counts = {k: kinds.count(k) for k in ("none", "gaussian", "camera")}
    assert all(8 <= c <= 32 for c in counts.values()), counts  # 60 draws of 1/3: 20 +- 3.7 each
    ramp = ImageCrops(ims, cfg(patch_size=32, noise=NoiseSpec(sigma=(0.2, 0.2)), curriculum_start=(0.02, 0.02),
                               noise_mix=(NoiseSpec(sigma=(0.3, 0.3)),)), batch_size=4, max_steps=10)
    first = {round(float((ramp[n][0] - ramp[n][1]).std()), 2) for n in range(4)}
    assert first == {0.02}  # step 0: both models start the ramp at 0.02


def test_noise_mix_in_a_recipe():
    from xmodal.config import load_config
    from xmodal.data.images import noise_description

    c = load_config("recipes/image_color_real_bundled.yaml").image
    assert [s.kind for s in (c.noise, *c.noise_mix)] == ["camera", "gaussian"]
    assert noise_description(c) == ("noise camera sigma 0.0000..0.0120 peak 30..10000 JPEG q60..100 + gaussian sigma "
                                    "0.0000..0.1961")
    c = load_config("recipes/tiny_image.yaml", ["image.noise_mix=[{kind: rician, sigma: [0.0, 0.1]}]"]).image
    assert c.noise_mix == (NoiseSpec(kind="rician", sigma=(0.0, 0.1)),)
    c = load_config("recipes/video_color_real_bundled_stage2.yaml").image
    assert noise_description(c) == ("noise camera sigma 0.0000..0.0120 peak 30..10000 H.264 CRF 15..32 + camera sigma "
                                    "0.0000..0.0120 peak 30..10000 JPEG q60..100 + gaussian sigma 0.0000..0.1961")


def test_noise_then_composes_models_on_every_item():
    """``noise_then`` applies after the item's model, to the noisy image: Gaussian then salt-and-pepper leaves about
    ``amount`` of the pixels at 0 or 1 and the others with the Gaussian's deviation; the composition is the two
    draws of one generator in turn; the noise map sums the variances."""
    from xmodal.data.images import noise_description, noise_generator
    from xmodal.noise import apply_noise

    flat = torch.full((4, 64, 64), 0.5)
    gauss, sp = NoiseSpec(sigma=(0.05, 0.05)), NoiseSpec(kind="salt_and_pepper", amount=(0.1, 0.1))
    noisy = noisy_version(flat, gauss, 7, then=(sp,))
    hit = (noisy == 0) | (noisy == 1)
    assert abs(float(hit.float().mean()) - 0.1) < 0.01
    assert float(noisy[~hit].std()) == pytest.approx(0.05, rel=0.03)
    generator = noise_generator(7)
    first, _ = apply_noise(flat[None], gauss, generator)
    torch.testing.assert_close(noisy, apply_noise(first, sp, generator)[0][0])
    with_map = noisy_version(flat, gauss, 7, noise_map=True, then=(NoiseSpec(sigma=(0.12, 0.12)),))
    torch.testing.assert_close(with_map[-1], torch.full((64, 64), (0.05 ** 2 + 0.12 ** 2) ** 0.5))
    c = cfg(noise=gauss, noise_then=(NoiseSpec(kind="stripe", sigma=(0.02, 0.02)), sp))
    assert noise_description(c) == ("noise gaussian sigma 0.0500..0.0500, then stripe sigma 0.0200..0.0200, then "
                                    "salt_and_pepper amount 0.100..0.100")
    stacks = StackCrops([synth_stack(8, 48, 48, np.random.default_rng(0))], replace(c, patch_size=32, bands_per_item=5))
    plain = StackCrops(stacks.stacks, replace(stacks.config, noise_then=()))
    noisy_item, clean_item = stacks[3]
    assert torch.equal(clean_item, plain[3][1]) and not torch.equal(noisy_item, plain[3][0])
    assert float(((noisy_item == 0) | (noisy_item == 1)).float().mean()) > 0.05  # the impulses are there


def test_augmentation_keeps_content():
    ims = images(n=2)
    plain, aug = ImageCrops(ims, cfg()), ImageCrops(ims, cfg(augment=True))
    transformed = 0
    for n in range(12):
        _, a = plain[n]
        _, b = aug[n]
        # the same window (the same random draws pick it), then one of the 8 rotations/flips
        candidates = dihedral(a.numpy())
        assert any(np.array_equal(b.numpy(), c) for c in candidates)
        transformed += not np.array_equal(b.numpy(), a.numpy())
    assert transformed >= 6  # 7 of 8 transforms change a textured crop


def test_saturation_scales_the_distance_from_luma():
    from xmodal.data.images import _LUMA, _saturate

    rng = np.random.default_rng(0)
    x = (0.25 + 0.5 * rng.random((2, 3, 8, 9))).astype(np.float32)  # (T, C, H, W) in [0.25, 0.75]
    luma = np.einsum("c,tchw->thw", _LUMA, x)[:, None]
    assert _saturate(x, None, rng) is x
    state = rng.bit_generator.state
    np.testing.assert_allclose(_saturate(x, (1.0, 1.0), rng), x, atol=1e-6)
    np.testing.assert_allclose(_saturate(x, (0.0, 0.0), rng), np.broadcast_to(luma, x.shape), atol=1e-6)  # gray
    y = _saturate(x, (1.4, 1.4), rng)  # no clipping at this factor for these values
    np.testing.assert_allclose(y - luma, 1.4 * (x - luma), atol=1e-6)
    np.testing.assert_allclose(np.einsum("c,tchw->thw", _LUMA, y), luma[:, 0], atol=1e-6)  # brightness kept
    vivid = _saturate(x, (10.0, 10.0), rng)
    assert vivid.min() == 0.0 and vivid.max() == 1.0 and vivid.dtype == np.float32  # clipped to [0, 1]
    assert rng.bit_generator.state != state  # one factor drawn per call
    one = _saturate(x[0], (0.5, 2.0), np.random.default_rng(3))  # (C, H, W) too
    factor = np.random.default_rng(3).uniform(0.5, 2.0)
    np.testing.assert_allclose(one, np.clip(luma[0] + factor * (x[0] - luma[0]), 0, 1), atol=1e-6)


def test_saturation_of_training_crops():
    """``image.saturation`` changes the clean crop (the one the noise is added to), nothing else about it."""
    from xmodal.data.images import _LUMA, noise_description

    plain = ImageCrops(images(C=3), cfg(channels=3, augment=True))
    vivid = ImageCrops(images(C=3), cfg(channels=3, augment=True, saturation=(2.0, 2.0)))
    for n in range(4):
        (_, a), (noisy, b) = plain[n], vivid[n]
        a, b = a.numpy(), b.numpy()
        luma = np.einsum("c,chw->hw", _LUMA, a)
        np.testing.assert_allclose(b, np.clip(luma + 2.0 * (a - luma), 0, 1), atol=1e-6)  # the same window
        assert 0.08 < float((noisy - torch.from_numpy(b)).std()) < 0.12  # sigma 0.1 on the saturated crop
    assert noise_description(vivid.config).endswith(", saturation x2..x2")
    assert "saturation" not in noise_description(plain.config)


@pytest.mark.parametrize("kw, message", [
    (dict(channels=3, saturation=(1.5, 1.0)), r"image.saturation must be a \[low, high\] range with 0 <= low <= "
                                              r"high, got \[1.5, 1.0\]"),
    (dict(channels=3, saturation=(-0.5, 1.0)), r"image.saturation must be a \[low, high\] range"),
    (dict(channels=1, saturation=(1.0, 1.5)), r"image.saturation changes colours: it needs image.channels 3, got 1"),
    (dict(channels=3, saturation=(1.0, 1.5), pairs_dir="pairs"),
     r"image.saturation changes the clean images before the noise is added: it cannot apply to noisy/clean pairs "
     r"\(image.pairs_dir\)")])
def test_saturation_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        cfg(**kw)


@pytest.mark.parametrize("kw, message", [
    (dict(curriculum_start=(0.0, 0.05), pairs_dir="pairs"),
     r"image.curriculum_start ramps the level of the noise xmodal adds: it cannot apply to noisy/clean pairs "
     r"\(image.pairs_dir\)"),
    (dict(curriculum_start=(0.0, 0.0), noise=NoiseSpec(kind="salt_and_pepper")),
     r"image.curriculum_start ramps the noise's sigma, and `image.noise` of kind 'salt_and_pepper' has none \(kinds "
     r"with a sigma: gaussian, poisson_gaussian, speckle, stripe, rician, camera\)"),
    (dict(curriculum_start=(0.0, 0.0), noise_mix=(NoiseSpec(kind="gaussian"), NoiseSpec(kind="gamma_speckle"))),
     r"`image.noise_mix\[1\]` of kind 'gamma_speckle' has none")])
def test_curriculum_errors(kw, message):
    """A curriculum that would be silently ignored (pairs carry their own noise; these kinds have no sigma) is an
    error; with a sigma it is accepted."""
    with pytest.raises(ValueError, match=message):
        cfg(**kw)
    assert cfg(curriculum_start=(0.0, 0.0), noise=NoiseSpec(kind="rician")).curriculum_start == (0.0, 0.0)


def test_images_smaller_than_the_patch_are_padded():
    small = images(n=1, H=10, W=13)[0]
    ds = ImageCrops([small], cfg(patch_size=32))
    noisy, clean = ds[0]
    assert clean.shape == (1, 32, 32)
    assert np.array_equal(clean[:, :10, :13].numpy(), small)  # the image sits at the top left
    # symmetric padding: row 10 repeats row 9, column 13 repeats column 12
    assert np.array_equal(clean[:, 10, :13].numpy(), small[:, 9])
    assert np.array_equal(clean[:, :10, 13].numpy(), small[:, :, 12])


def test_noise_map_channel():
    ds = ImageCrops(images(C=3), cfg(noise_map=True, noise=NoiseSpec(sigma=(0.05, 0.15))))
    for n in range(4):
        noisy, clean = ds[n]
        assert noisy.shape == (4, 16, 16) and clean.shape == (3, 16, 16)
        sigma = noisy[3]
        assert torch.all(sigma == sigma[0, 0]) and 0.05 <= float(sigma[0, 0]) <= 0.15
        # the map is the sigma actually used (within sampling error on 768 samples)
        assert float((noisy[:3] - clean).std()) == pytest.approx(float(sigma[0, 0]), rel=0.15)


def test_noisy_version_is_reproducible():
    clean = torch.rand(2, 8, 8)
    a = noisy_version(clean, FIXED, (0, 7919, 1))
    assert torch.equal(a, noisy_version(clean, FIXED, (0, 7919, 1)))
    assert not torch.equal(a, noisy_version(clean, FIXED, (0, 7919, 2)))
    assert noisy_version(clean, FIXED, 5, noise_map=True).shape == (3, 8, 8)


def test_image_crops_errors():
    with pytest.raises(ValueError, match="image data: no training images"):
        ImageCrops([], cfg())
    with pytest.raises(ValueError, match="image data: no training pairs"):
        PairedImageCrops([], cfg())
    with pytest.raises(ValueError, match="multispectral data: no training stacks"):
        StackCrops([], cfg())


# ------------------------------------------------------------------------------------------------------ files


def test_load_image_conversions(tmp_path):
    rng = np.random.default_rng(1)
    rgb = np.round(synth_image(20, 24, 3, rng) * 255) / 255
    write_image(tmp_path / "rgb.png", rgb, "uint8")
    gray = load_image(tmp_path / "rgb.png", 1)
    assert gray.shape == (1, 20, 24) and gray.dtype == np.float32
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]  # ITU-R BT.601
    np.testing.assert_allclose(gray[0], luma, atol=1e-6)
    assert np.array_equal(load_image(tmp_path / "rgb.png", 3), rgb.astype(np.float32))

    g = np.round(synth_image(20, 24, 1, rng) * 255) / 255
    write_image(tmp_path / "gray.png", g, "uint8")
    rep = load_image(tmp_path / "gray.png", 3)
    assert rep.shape == (3, 20, 24)
    for c in range(3):
        assert np.array_equal(rep[c], g[0].astype(np.float32))

    alpha = np.full((1, 20, 24), 0.5)
    write_image(tmp_path / "rgba.png", np.concatenate([rgb, alpha]), "uint8")
    assert np.array_equal(load_image(tmp_path / "rgba.png", 3), rgb.astype(np.float32))
    np.testing.assert_allclose(load_image(tmp_path / "rgba.png", 1)[0], luma, atol=1e-6)
    write_image(tmp_path / "la.png", np.concatenate([g, alpha]), "uint8")
    assert np.array_equal(load_image(tmp_path / "la.png", 1), g.astype(np.float32))

    five = rng.random((5, 8, 9)).astype(np.float32)
    np.save(tmp_path / "five.npy", five)
    with pytest.raises(ValueError, match=r"five.npy: has 5 channels; image.channels=3 needs 1 or 3"):
        load_image(tmp_path / "five.npy", 3)
    with pytest.raises(ValueError, match=r"rgb.png: has 3 channels; image.channels=5 needs 1 or 5"):
        load_image(tmp_path / "rgb.png", 5)
    assert np.array_equal(load_image(tmp_path / "five.npy", 5), five)


def test_load_image_refuses_float_images_off_the_unit_scale(tmp_path):
    """Float files must hold [0, 1] values (noise a little beyond is fine); 12-bit counts stored as float32 are
    refused naming the file and its range; integer files are scaled by their dtype."""
    rng = np.random.default_rng(3)
    counts = np.round(rng.random((1, 16, 18)) * 4095).astype(np.float32)
    counts[0, 0, :2] = (0.0, 4095.0)
    write_image(tmp_path / "counts.tif", counts, "float32")
    with pytest.raises(ValueError, match=r"counts.tif: float32 image with values from 0 to 4095; float images must "
                                         r"hold values in \[0, 1\] .*integer images are scaled by their dtype"):
        load_image(tmp_path / "counts.tif", 1)
    noisy = (synth_image(16, 18, 1, rng) + 0.2 * rng.standard_normal((1, 16, 18))).astype(np.float32)
    assert noisy.min() < 0 and noisy.max() > 1  # noise beyond [0, 1]: accepted as it is
    write_image(tmp_path / "noisy.tif", noisy, "float32")
    assert np.array_equal(load_image(tmp_path / "noisy.tif", 1), noisy)
    write_image(tmp_path / "counts16.png", counts / 65535, "uint16")
    np.testing.assert_allclose(load_image(tmp_path / "counts16.png", 1), counts / 65535, atol=1e-6)
    np.save(tmp_path / "bytes.npy", (counts / 16).astype(np.float64))  # 0-255 floats
    with pytest.raises(ValueError, match=r"bytes.npy: float64 image with values from 0 to 255.9"):
        resolve_image_data(cfg(train_dir=(str(tmp_path / "bytes.npy"),)), tmp_path / "demo")


@pytest.mark.parametrize("C", [2, 4])
def test_load_image_keeps_every_channel_of_a_model_with_that_many(tmp_path, C):
    """A 4-channel image on a 4-channel model (or 2 on 2) is taken as it is; alpha is dropped only to convert."""
    x = np.random.default_rng(2).random((C, 8, 9)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert np.array_equal(load_image(tmp_path / "x.npy", C), x)


def test_image_files_order_and_errors(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for name in ("img10.png", "img2.png", "img1.png", ".hidden.png", "notes.txt"):
        (d / name).write_bytes(b"")
    assert [f.name for f in image_files([str(d)], "image.train_dir")] == ["img1.png", "img2.png", "img10.png"]
    assert image_files([str(d / "img2.png")], "image.train_dir") == [d / "img2.png"]
    with pytest.raises(FileNotFoundError, match=r"image.valid_dir: .*nope does not exist"):
        image_files([str(tmp_path / "nope")], "image.valid_dir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"image.train_dir: .*empty holds no image \(.*\.png"):
        image_files([str(tmp_path / "empty")], "image.train_dir")


# ------------------------------------------------------------------------------------------------------ pairs


def write_pairs(root: Path, n=3, size=(30, 34), seed=0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    (root / "noisy").mkdir(parents=True)
    (root / "clean").mkdir(parents=True)
    out = []
    for i in range(n):
        clean = np.round(synth_image(*size, 1, rng) * 255) / 255
        noisy = 1 - clean  # a pixel-wise relation that holds for any common window
        write_image(root / "clean" / f"p{i}.png", clean, "uint8")
        write_image(root / "noisy" / f"p{i}.png", noisy, "uint8")
        out.append((noisy.astype(np.float32), clean.astype(np.float32)))
    return out


@pytest.mark.parametrize("augment", [False, True])
def test_paired_crops_take_the_same_window(tmp_path, augment):
    pairs = write_pairs(tmp_path)
    ds = PairedImageCrops(pairs, cfg(augment=augment))
    for n in range(6):
        noisy, clean = ds[n]
        assert noisy.shape == clean.shape == (1, 16, 16)
        np.testing.assert_allclose(noisy.numpy(), 1 - clean.numpy(), atol=1e-6)
        assert torch.equal(ds[n][0], noisy)  # deterministic
        if not augment:
            assert any(find_window(c, clean.numpy()) for _, c in pairs)


def test_resolve_pairs_dir_split_and_errors(tmp_path):
    write_pairs(tmp_path / "pairs", n=5)
    corpus = resolve_image_data(cfg(pairs_dir=str(tmp_path / "pairs"), valid_fraction=0.4), tmp_path / "demo")
    assert not corpus.demo
    assert len(corpus.train.pairs) == 3 and len(corpus.valid) == 2  # ceil(0.4 * 5)
    names = {clip.name for clip in corpus.valid}
    assert names <= {f"p{i}" for i in range(5)}
    for clip in corpus.valid:  # validation pairs are the files themselves, not synthetic noise
        np.testing.assert_allclose(clip.noisy.numpy(), 1 - clip.clean.numpy(), atol=1e-6)
    assert "paired folders" in corpus.description and "3 training pairs" in corpus.description
    # valid_pairs_dir: no split
    write_pairs(tmp_path / "vpairs", n=2, seed=1)
    corpus = resolve_image_data(cfg(pairs_dir=str(tmp_path / "pairs"), valid_pairs_dir=str(tmp_path / "vpairs")),
                                tmp_path / "demo")
    assert len(corpus.train.pairs) == 5 and [c.name for c in corpus.valid] == ["p0", "p1"]

    # unmatched names
    bad = tmp_path / "bad"
    write_pairs(bad, n=2)
    (bad / "clean" / "p1.png").rename(bad / "clean" / "other.png")
    with pytest.raises(ValueError, match=r"image.pairs_dir .*bad: files without a partner in noisy/ or clean/: "
                                         r"other, p1"):
        resolve_image_data(cfg(pairs_dir=str(bad)), tmp_path / "demo")
    with pytest.raises(ValueError, match=r"image.valid_pairs_dir .*bad: files without a partner"):  # its own key
        resolve_image_data(cfg(pairs_dir=str(tmp_path / "pairs"), valid_pairs_dir=str(bad)), tmp_path / "demo")
    # shape mismatch
    mism = tmp_path / "mism"
    write_pairs(mism, n=1)
    write_image(mism / "clean" / "p0.png", np.zeros((1, 20, 20)), "uint8")
    with pytest.raises(ValueError, match=r"image.pairs_dir: .*p0.png is \(30, 34\) but .*p0.png is \(20, 20\)"):
        resolve_image_data(cfg(pairs_dir=str(mism)), tmp_path / "demo")
    # missing noisy/ or clean/
    (tmp_path / "half" / "noisy").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"image.pairs_dir: .*half/clean does not exist \(expected `noisy/` "
                                                r"and `clean/`"):
        resolve_image_data(cfg(pairs_dir=str(tmp_path / "half")), tmp_path / "demo")
    # pairs and clean images together
    with pytest.raises(ValueError, match=r"image: give either `train_dir` \(clean images\) or `pairs_dir`, not both"):
        resolve_image_data(cfg(pairs_dir=str(tmp_path / "pairs"), train_dir=(str(tmp_path),)), tmp_path / "demo")
    # a noise-level map needs synthetic noise
    with pytest.raises(ValueError, match=r"image.noise_map needs synthetic noise"):
        resolve_image_data(cfg(pairs_dir=str(tmp_path / "pairs"), noise_map=True), tmp_path / "demo")
    with pytest.raises(ValueError, match=r"image.noise_map needs synthetic noise"):
        resolve_image_data(cfg(train_dir=(str(tmp_path / "pairs" / "clean"),),
                               valid_pairs_dir=str(tmp_path / "vpairs"), noise_map=True), tmp_path / "demo")


def test_pairs_dir_with_valid_dir_validates_on_the_clean_images(tmp_path):
    """``valid_dir`` comes first for paired training too (it used to be ignored, and pairs were split off)."""
    write_pairs(tmp_path / "pairs", n=4)
    vdir = make_demo_images(tmp_path / "valid", n=2, size=24)
    corpus = resolve_image_data(cfg(pairs_dir=str(tmp_path / "pairs"), valid_dir=(str(vdir),)), tmp_path / "demo")
    assert len(corpus.train.pairs) == 4
    assert [c.name for c in corpus.valid] == ["demo_00", "demo_01"]
    clip = corpus.valid[0]
    assert torch.equal(clip.clean, torch.from_numpy(load_image(vdir / "demo_00.png", 1)))
    assert float((clip.noisy - clip.clean).std()) == pytest.approx(25 / 255, rel=0.15)


# ------------------------------------------------------------------------------------------------------ resolve


def test_resolve_train_and_valid_dirs(tmp_path):
    train_dir = make_demo_images(tmp_path / "train", n=3, size=40, seed=1)
    valid_dir = make_demo_images(tmp_path / "valid", n=2, size=40, seed=2)
    c = cfg(train_dir=(str(train_dir),), valid_dir=(str(valid_dir),), valid_crop=24)
    corpus = resolve_image_data(c, tmp_path / "demo", batch_size=2, max_steps=5)
    assert not corpus.demo and not (tmp_path / "demo").exists()
    assert len(corpus.train.images) == 3 and [v.name for v in corpus.valid] == ["demo_00", "demo_01"]
    assert corpus.train.batch_size == 2 and corpus.train.max_steps == 5
    clip = corpus.valid[1]
    full = load_image(valid_dir / "demo_01.png", 1)
    assert np.array_equal(clip.clean.numpy(), full[:, 8:32, 8:32])  # centre crop
    assert clip.noisy.shape == (1, 24, 24)
    assert float((clip.noisy - clip.clean).std()) == pytest.approx(25 / 255, rel=0.1)  # valid_noise default
    again = resolve_image_data(c, tmp_path / "demo")
    assert torch.equal(again.valid[1].noisy, clip.noisy)  # fixed validation noise
    assert "clean images + synthetic noise: 3 training images, 2 validation images" in corpus.description
    # valid_dir takes precedence over valid_pairs_dir (documented order)
    write_pairs(tmp_path / "vpairs", n=1)
    both = resolve_image_data(replace(c, valid_pairs_dir=str(tmp_path / "vpairs")), tmp_path / "demo")
    assert [v.name for v in both.valid] == ["demo_00", "demo_01"]
    only_pairs = resolve_image_data(replace(c, valid_dir=(), valid_pairs_dir=str(tmp_path / "vpairs")),
                                    tmp_path / "demo")
    assert [v.name for v in only_pairs.valid] == ["p0"] and len(only_pairs.train.images) == 3


def test_resolve_valid_fraction_split(tmp_path):
    train_dir = make_demo_images(tmp_path / "train", n=10, size=32)
    c = cfg(train_dir=(str(train_dir),), valid_fraction=0.25)
    corpus = resolve_image_data(c, tmp_path / "demo")
    assert len(corpus.train.images) == 7 and len(corpus.valid) == 3  # ceil(2.5)
    valid_names = {v.name for v in corpus.valid}
    order = np.random.default_rng(0).permutation(10)
    assert valid_names == {f"demo_{i:02d}" for i in order[:3]}
    # training and validation images are disjoint
    train_arrays = corpus.train.images
    for v in corpus.valid:
        assert not any(np.array_equal(v.clean.numpy(), t) for t in train_arrays)
    assert len(resolve_image_data(replace(c, valid_fraction=0.0), tmp_path / "demo").valid) == 0
    one = make_demo_images(tmp_path / "one", n=1, size=32)
    assert len(resolve_image_data(replace(c, train_dir=(str(one),)), tmp_path / "demo").valid) == 0


def test_resolve_missing_and_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"image.train_dir: .*nothere does not exist"):
        resolve_image_data(cfg(train_dir=(str(tmp_path / "nothere"),)), tmp_path / "demo")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"image.train_dir: .*empty holds no image"):
        resolve_image_data(cfg(train_dir=(str(tmp_path / "empty"),)), tmp_path / "demo")
    train_dir = make_demo_images(tmp_path / "train", n=2, size=32)
    with pytest.raises(FileNotFoundError, match=r"image.valid_dir: .*novalid does not exist"):
        resolve_image_data(cfg(train_dir=(str(train_dir),), valid_dir=(str(tmp_path / "novalid"),)),
                           tmp_path / "demo")
    with pytest.raises(FileNotFoundError, match=r"image.pairs_dir: .*nopairs/noisy does not exist"):
        resolve_image_data(cfg(pairs_dir=str(tmp_path / "nopairs")), tmp_path / "demo")
    with pytest.raises(ValueError, match=r"image.channels must be at least 1, got 0"):
        resolve_image_data(cfg(channels=0), tmp_path / "demo")
    coded = NoiseSpec(kind="gaussian", h264_crf=(20, 30))
    with pytest.raises(ValueError, match=r"image.noise_mix\[0\].h264_crf: H.264 codes gray or RGB images, but "
                                         r"image.channels is 4 \(set 1 or 3, or remove h264_crf\)"):
        resolve_image_data(cfg(channels=4, noise_mix=(coded,)), tmp_path / "demo")
    with pytest.raises(ValueError, match=r"image.train_dir: expected files or folders, got a list"):
        resolve_image_data(cfg(train_dir=(("a.png", "b.png"),)), tmp_path / "demo")


@pytest.mark.parametrize("channels", [1, 3])
def test_resolve_demo_fallback(tmp_path, channels):
    c = cfg(channels=channels, valid_crop=32)
    corpus = resolve_image_data(c, tmp_path / "demo")
    assert corpus.demo and "DEMO images" in corpus.description
    files = sorted((tmp_path / "demo" / "images").glob("*.png"))
    assert len(files) == 24
    assert read_image(files[0])[0].shape == (channels, 96, 96)
    assert len(corpus.train.images) + len(corpus.valid) == 24 and len(corpus.valid) == 3  # ceil(0.1 * 24)
    assert corpus.valid[0].clean.shape == (channels, 32, 32)
    noisy, clean = corpus.train[0]
    assert clean.shape == (channels, 16, 16)
    # the demo folder is reused as it is
    again = resolve_image_data(c, tmp_path / "demo")
    assert torch.equal(again.valid[0].noisy, corpus.valid[0].noisy)


def test_synthetic_images_and_stacks():
    rng = np.random.default_rng(0)
    im = synth_image(17, 23, 3, rng)
    assert im.shape == (3, 17, 23) and im.dtype == np.float32 and 0 <= im.min() and im.max() <= 1
    assert im.std() > 0.05  # content, not a flat field
    st = synth_stack(6, 20, 24, np.random.default_rng(0))
    assert st.shape == (6, 20, 24) and st.dtype == np.float32 and 0 <= st.min() and st.max() <= 1
    assert np.array_equal(st, synth_stack(6, 20, 24, np.random.default_rng(0)))
    # neighbouring bands are correlated (smooth signatures), the point of spectral context
    a, b = st[2].ravel(), st[3].ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.5


def test_make_demo_stack_writes_band_files(tmp_path):
    root = make_demo_stack(tmp_path / "s", bands=5, size=24, seed=3)
    names = sorted(p.name for p in root.iterdir())
    assert names == [f"band_{b:02d}.tif" for b in range(1, 6)]
    band, info = read_image(root / "band_02.tif")
    assert band.shape == (1, 24, 24) and info.dtype == "uint16"
    expected = synth_stack(5, 24, 24, np.random.default_rng((3, 3)))[1]
    np.testing.assert_allclose(band[0], expected, atol=1 / 65535)


# ------------------------------------------------------------------------------------------------------ stacks


def stack_cfg(**kw) -> ImageDataConfig:
    return cfg(**{"scaling": "dtype", "bands_per_item": 4, **kw})


def test_stack_crops_same_window_in_every_band():
    rng = np.random.default_rng(4)
    stack = synth_stack(7, 30, 26, rng)
    ds = StackCrops([stack], stack_cfg())
    for n in range(6):
        noisy, clean = ds[n]
        assert noisy.shape == clean.shape == (4, 16, 16)
        c = clean.numpy()
        hits = [(s, i, j) for s in range(4) for i in range(15) for j in range(11)
                if np.array_equal(stack[s:s + 4, i:i + 16, j:j + 16], c)]
        assert len(hits) == 1  # contiguous bands, one spatial window for all of them
        assert float((noisy - clean).std()) == pytest.approx(0.1, rel=0.1)
    assert torch.equal(ds[3][0], ds[3][0])


def test_stack_crops_augment_keeps_the_bands_together():
    stack = synth_stack(6, 30, 26, np.random.default_rng(5))
    plain, aug = StackCrops([stack], stack_cfg()), StackCrops([stack], stack_cfg(augment=True))
    for n in range(8):
        a, b = plain[n][1].numpy(), aug[n][1].numpy()
        candidates = dihedral(a) + [d[::-1] for d in dihedral(a)]  # spatial, and spectral order reversed
        assert any(np.array_equal(b, c) for c in candidates)


@pytest.mark.parametrize("S", [1, 2, 3])
def test_stack_crops_short_stacks_are_mirrored(S):
    stack = synth_stack(S, 20, 20, np.random.default_rng(S))
    ds = StackCrops([stack], stack_cfg(bands_per_item=5))
    noisy, clean = ds[0]
    assert clean.shape == (5, 16, 16)
    expected = {1: [0, 0, 0, 0, 0], 2: [0, 1, 0, 1, 0], 3: [0, 1, 2, 1, 0]}[S]
    hits = [(i, j) for i in range(5) for j in range(5)
            if np.array_equal(stack[expected, i:i + 16, j:j + 16], clean.numpy())]
    assert hits


def write_stack_npy(path: Path, stack: np.ndarray) -> Path:
    np.save(path, stack.astype(np.float32))
    return path


def test_resolve_stack_split_rows(tmp_path):
    stack = synth_stack(6, 40, 30, np.random.default_rng(6))
    src = write_stack_npy(tmp_path / "scene.npy", stack)
    c = stack_cfg(train_dir=(str(src),), valid_rows=0.25)
    corpus = resolve_stack_data(c, tmp_path / "demo", batch_size=2, max_steps=3)
    assert not corpus.demo
    assert len(corpus.valid) == 1 and corpus.valid[0].name == "scene"
    clip = corpus.valid[0]
    assert np.array_equal(clip.clean.numpy(), stack[:, 30:])  # exactly the bottom 10 rows, every band
    assert clip.noisy.shape == (6, 10, 30)
    assert float((clip.noisy - clip.clean).std()) == pytest.approx(25 / 255, rel=0.1)
    (train_part,) = corpus.train.stacks
    assert np.array_equal(train_part, stack[:, :30])  # the rest (30 >= patch: no padding)
    assert corpus.train.batch_size == 2 and corpus.train.max_steps == 3
    # no training crop reaches into the validation rows
    for n in range(10):
        _, cl = corpus.train[n]
        assert any(np.array_equal(stack[s:s + 4, i:i + 16, j:j + 16], cl.numpy())
                   for s in range(3) for i in range(15) for j in range(15))
    # valid_rows = 0: no validation clip, the whole stack trains
    none = resolve_stack_data(replace(c, valid_rows=0.0), tmp_path / "demo")
    assert none.valid == [] and none.train.stacks[0].shape == (6, 40, 30)
    # valid_crop centre-crops the validation rows
    cropped = resolve_stack_data(replace(c, valid_crop=8), tmp_path / "demo")
    assert np.array_equal(cropped.valid[0].clean.numpy(), stack[:, 31:39, 11:19])


def test_resolve_stack_folder_of_bands_and_demo(tmp_path):
    root = make_demo_stack(tmp_path / "bands", bands=5, size=32)
    corpus = resolve_stack_data(stack_cfg(train_dir=(str(root),), valid_rows=0.5), tmp_path / "demo")
    assert corpus.train.stacks[0].shape == (5, 16, 32) and corpus.valid[0].clean.shape == (5, 16, 32)
    demo = resolve_stack_data(cfg(), tmp_path / "demo")
    assert demo.demo and "DEMO stack" in demo.description
    assert len(list((tmp_path / "demo" / "stack").glob("band_*.tif"))) == 8
    assert demo.train.stacks[0].shape == (8, 96, 128) and demo.valid[0].clean.shape == (8, 32, 128)


def test_resolve_stack_errors(tmp_path):
    src = write_stack_npy(tmp_path / "s.npy", synth_stack(3, 8, 10, np.random.default_rng(7)))
    for rows in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=rf"image.valid_rows must be in \[0, 1\), got {rows}"):
            resolve_stack_data(stack_cfg(train_dir=(str(src),), valid_rows=rows), tmp_path / "demo")
    with pytest.raises(ValueError, match=r"image.valid_rows=0.95 leaves no training rows in .*s.npy \(8 rows\)"):
        resolve_stack_data(stack_cfg(train_dir=(str(src),), valid_rows=0.95), tmp_path / "demo")
    with pytest.raises(ValueError, match=r"image.noise_map is supported for the image modality only"):
        resolve_stack_data(stack_cfg(train_dir=(str(src),), noise_map=True), tmp_path / "demo")
    with pytest.raises(ValueError, match=r"multispectral: `image.pairs_dir` is not supported for stacks"):
        resolve_stack_data(stack_cfg(pairs_dir=str(tmp_path)), tmp_path / "demo")
    with pytest.raises(ValueError, match=r"image.bands_per_item must be at least 1, got 0"):
        resolve_stack_data(cfg(bands_per_item=0, train_dir=(str(src),)), tmp_path / "demo")
    with pytest.raises(FileNotFoundError, match=r"image.train_dir: .*missing.npy does not exist"):
        resolve_stack_data(stack_cfg(train_dir=(str(tmp_path / "missing.npy"),)), tmp_path / "demo")
