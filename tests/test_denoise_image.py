"""Image and band-stack denoising for users: ImageDenoiser / StackDenoiser, load() dispatch, bundled names, the CLI.

Everything runs tiny untrained U-Nets (recipes/tiny_image.yaml) on small random images (<= 64 x 64), on CPU: the
tests check shapes, dtypes, formats, errors and tiled == untiled equivalences, not quality.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import tifffile
import torch
from PIL import Image

import xmodal
import xmodal.pretrained
from xmodal.checkpoint import save_weights
from xmodal.config import dump_config, load_config
from xmodal.denoise import (Denoiser, ImageDenoiser, StackDenoiser, file_value_range, load, main,
                            plausible_unit_range)
from xmodal.imageio import ImageReadError, read_image, read_stack, write_image
from xmodal.inference import enhance
from xmodal.modalities import modality_io
from xmodal.models import build_model
from xmodal.noise import estimate_sigma
from xmodal.pretrained import bundled_names

ROOT = Path(__file__).resolve().parents[1]
TINY_IMAGE = ROOT / "recipes" / "tiny_image.yaml"


def make_run(folder: Path, overrides: list[str]) -> Path:
    """An untrained tiny image/stack model saved as a run directory."""
    cfg = load_config(TINY_IMAGE, overrides)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = build_model(cfg.model, {cfg.modality: modality_io(cfg.modality, cfg)})
    save_weights(model, folder / "model.safetensors", cfg)
    dump_config(cfg, folder / "config.yaml")
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("image_runs")
    return {"gray": make_run(root / "gray", []), "color": make_run(root / "color", ["image.channels=3"]),
            "stack": make_run(root / "stack", ["modality=multispectral"]),
            "nonblind": make_run(root / "nonblind", ["image.noise_map=true"]),
            "camera": make_run(root / "camera", ["image.noise.kind=camera"])}


@pytest.fixture(scope="module")
def gray(runs: dict[str, Path]) -> ImageDenoiser:
    return load(runs["gray"])


@pytest.fixture(scope="module")
def color(runs: dict[str, Path]) -> ImageDenoiser:
    return load(runs["color"])


@pytest.fixture(scope="module")
def stack_den(runs: dict[str, Path]) -> StackDenoiser:
    return load(runs["stack"])


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# load, bundled names, public names


def test_load_dispatches_on_modality(runs: dict[str, Path], run_dir: Path) -> None:
    assert type(load(runs["gray"])) is ImageDenoiser and type(load(runs["color"])) is ImageDenoiser
    assert type(load(runs["stack"])) is StackDenoiser
    assert type(load(run_dir)) is Denoiser
    assert xmodal.ImageDenoiser is ImageDenoiser and xmodal.StackDenoiser is StackDenoiser
    assert load(runs["gray"]).channels == 1 and load(runs["color"]).channels == 3


def test_denoiser_classes_refuse_other_modalities(runs: dict[str, Path], run_dir: Path) -> None:
    from xmodal.checkpoint import load_run

    model, cfg = load_run(runs["gray"])
    with pytest.raises(ValueError, match=r"the model is an image model \(config.modality\); StackDenoiser takes "
                                         r"multispectral models: use xmodal.load"):
        StackDenoiser(model, cfg)
    with pytest.raises(ValueError, match=r"is an image model .*Denoiser takes speech models"):
        Denoiser(model, cfg)
    model, cfg = load_run(run_dir)
    with pytest.raises(ValueError, match=r"is a speech model .*ImageDenoiser takes image models"):
        ImageDenoiser(model, cfg)


@pytest.mark.parametrize(("name", "folder"), [("image_gray", "image_gray"), ("gray", "image_gray"),
                                              ("image", "image_gray"), ("image_color", "image_color"),
                                              ("color", "image_color"), ("colour", "image_color"),
                                              ("multispectral", "multispectral"), ("stack", "multispectral")])
def test_bundled_image_names(name: str, folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert name in bundled_names()
    assert (ROOT / "xmodal" / "pretrained" / folder).is_dir()
    monkeypatch.setattr(xmodal.pretrained, "_HERE", tmp_path)
    canonical = {"image_gray": "image_gray", "image_color": "image_color", "multispectral": "multispectral"}[folder]
    with pytest.raises(FileNotFoundError, match=rf"bundled model '{canonical}' is not installed at .*{folder} "
                                                r"\(missing config.yaml, model.safetensors\)"):
        load(name)


def test_bundled_image_models_load_when_installed(runs: dict[str, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for key, folder in (("gray", "image_gray"), ("color", "image_color"), ("stack", "multispectral")):
        shutil.copytree(runs[key], tmp_path / folder)
    monkeypatch.setattr(xmodal.pretrained, "_HERE", tmp_path)
    assert type(load("gray")) is ImageDenoiser and load("colour").channels == 3
    assert type(load("stack")) is StackDenoiser and load("stack").name == "stack"


# ----------------------------------------------------------------------------------------------------------------
# ImageDenoiser on arrays


@pytest.mark.parametrize("shape", [(40, 37), (1, 40, 37), (3, 40, 37), (5, 40, 37), (2, 1, 40, 37), (2, 3, 33, 20),
                                   (2, 5, 17, 31)])
@pytest.mark.parametrize("kind", ["numpy32", "numpy64", "numpy16", "torch32", "torch64", "bf16"])
def test_gray_model_types_shapes_dtypes_kept(gray: ImageDenoiser, shape: tuple[int, ...], kind: str) -> None:
    x = rand(*shape).astype(np.float64)
    image = {"numpy32": lambda: x.astype(np.float32), "numpy64": lambda: x, "numpy16": lambda: x.astype(np.float16),
             "torch32": lambda: torch.from_numpy(x).float(), "torch64": lambda: torch.from_numpy(x),
             "bf16": lambda: torch.from_numpy(x).to(torch.bfloat16)}[kind]()
    out = gray.denoise(image)
    assert type(out) is type(image) and out.dtype == image.dtype and tuple(out.shape) == shape


def test_gray_model_folds_channels_and_batch(gray: ImageDenoiser) -> None:
    x = rand(2, 3, 30, 27)
    out = gray.denoise(x)
    for b in range(2):
        for c in range(3):
            np.testing.assert_allclose(out[b, c], gray.denoise(x[b, c]), atol=1e-6)


@pytest.mark.parametrize("batch", [False, True])
def test_channels_last_equals_channels_first(gray: ImageDenoiser, color: ImageDenoiser, batch: bool) -> None:
    chw = rand(2, 3, 30, 27) if batch else rand(3, 30, 27)
    hwc = np.moveaxis(chw, -3, -1).copy()  # (..., C, H, W) -> (..., H, W, C)
    for den in (gray, color):
        ref = np.moveaxis(den.denoise(chw), -3, -1)
        out = den.denoise(hwc, channels_last=True)
        assert out.shape == hwc.shape
        np.testing.assert_array_equal(out, ref)
        out_t = den.denoise(torch.from_numpy(hwc), channels_last=True, sigma=None, tile=16, overlap=4)
        torch.testing.assert_close(out_t, torch.from_numpy(np.moveaxis(den.denoise(chw, tile=16, overlap=4), -3, -1)),
                                   atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"Expected `image` of shape \(H, W, C\) or \(B, H, W, C\) "
                                         r"\(channels_last=True\) with no empty axis, got \(30, 27\)"):
        gray.denoise(chw[..., 0, :, :] if not batch else chw[0, 0], channels_last=True)


def test_channels_last_looking_image_warns_or_hints(gray: ImageDenoiser, color: ImageDenoiser) -> None:
    hwc = rand(20, 30, 3)
    with pytest.warns(UserWarning, match=r"`image` of shape \(20, 30, 3\) is read as \(C, H, W\): 20 images of "
                                         r"30 x 3 pixels; for a channels-last image pass channels_last=True"):
        gray.denoise(hwc)
    with pytest.raises(ValueError, match=r"`image` has 20 channels \(shape \(20, 30, 3\)\); use a gray model, "
                                         r"which takes any channel count; for a channels-last image pass "
                                         r"channels_last=True"):
        color.denoise(hwc)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # channels first, or ambiguous only when nothing suggests channels last
        gray.denoise(rand(3, 20, 30))
        gray.denoise(rand(4, 3, 3))
        gray.denoise(hwc, channels_last=True)


def test_value_range_maps_to_unit_and_back(gray: ImageDenoiser, color: ImageDenoiser, runs: dict[str, Path]) -> None:
    x = rand(3, 30, 27)
    for den in (gray, color):
        ref = den.denoise(x)
        np.testing.assert_allclose(den.denoise(x * 4000 + 100, value_range=(100, 4100)), ref * 4000 + 100, rtol=1e-5,
                                   atol=2e-3)
        lo, hi = np.percentile(x * 255, [0.1, 99.9])  # "auto": the image's own percentiles, all channels together
        np.testing.assert_allclose(den.denoise(x * 255, value_range="auto"),
                                   den.denoise((x * 255 - lo) / (hi - lo)) * (hi - lo) + lo, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(gray.denoise(torch.from_numpy(x * 0.01), value_range=(0, 0.01)),
                               torch.from_numpy(gray.denoise(x) * 0.01), rtol=1e-5, atol=1e-8)
    nonblind = load(runs["nonblind"])  # sigma is in the image's units too
    np.testing.assert_allclose(nonblind.denoise(x * 255, sigma=25.0, value_range=(0, 255)),
                               nonblind.denoise(x, sigma=25 / 255) * 255, rtol=1e-5, atol=1e-3)
    flat = np.full((1, 8, 8), 7.0, np.float32)
    np.testing.assert_allclose(gray.denoise(flat, value_range="auto"), gray.denoise(flat - 7.0) + 7.0, atol=1e-6)


@pytest.mark.parametrize("value_range, message", [
    ("minmax", r"`value_range` must be None, 'auto' or \(lo, hi\), got 'minmax'"),
    ((0, 1, 2), r"`value_range` must be None, 'auto' or \(lo, hi\), got \(0, 1, 2\)"),
    ((1, 1), r"`value_range` \(lo, hi\) must be finite with lo < hi, got \(1, 1\)"),
    ((0, float("inf")), r"`value_range` \(lo, hi\) must be finite with lo < hi"),
])
def test_value_range_errors(gray: ImageDenoiser, value_range, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gray.denoise(rand(1, 8, 8), value_range=value_range)


def test_values_far_from_unit_range_warn(gray: ImageDenoiser) -> None:
    x = rand(1, 20, 20)
    for scale, span in ((255, r"\[0\.\d+, 25\d\.?\d*\]"), (0.01, r"\[[\d.e-]+, 0\.009\d+\]")):
        with pytest.warns(UserWarning, match=rf"`image` values span {span} \(0.1-99.9 percentiles\), but the "
                                             r"model denoises \[0, 1\] data; pass value_range=\(lo, hi\) .* "
                                             r"\(command line: --value-range LO,HI or auto\)"):
            gray.denoise(x * scale)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gray.denoise(x)
        gray.denoise(x + np.random.default_rng(1).normal(0, 75 / 255, x.shape))  # noisy [0, 1] data overshoots
        gray.denoise(np.zeros((8, 8), np.float32))  # constant
        gray.denoise(x * 255, value_range=(0, 255))
    assert plausible_unit_range(x) and not plausible_unit_range(x * 255) and not plausible_unit_range(x * 0.01)


def test_denoise_file_value_range(gray: ImageDenoiser, tmp_path: Path) -> None:
    x = rand(1, 30, 27)
    # the rule every file path uses: the file's units in, read_image's units out
    assert file_value_range(x, "uint16") is None and file_value_range(x * 0.3, "uint16") is None
    # 16-bit files below a quarter of the range (12-bit sensors, dark scenes): their own percentiles
    assert file_value_range(x * 4095 / 65535, "uint16") == "auto" and file_value_range(x * 0.01, "uint8") is None
    assert file_value_range(x, "float32") is None and file_value_range(x * 4000, "float32") == "auto"
    assert file_value_range(x, "uint16", (0, 4095)) == (0.0, 4095 / 65535)
    assert file_value_range(x, "uint8", "auto") == "auto" and file_value_range(x, "float32", (1, 2)) == (1.0, 2.0)
    tifffile.imwrite(tmp_path / "f.tif", x[0] * 4000)  # float counts, not [0, 1]: "auto" by default
    gray.denoise_file(tmp_path / "f.tif", tmp_path / "f_out.tif")
    np.testing.assert_allclose(tifffile.imread(tmp_path / "f_out.tif"), gray.denoise(x * 4000, value_range="auto")[0],
                               rtol=1e-6, atol=1e-3)
    tifffile.imwrite(tmp_path / "u.tif", np.rint(x[0] * 4095).astype(np.uint16))  # 12-bit data in a 16-bit file
    gray.denoise_file(tmp_path / "u.tif", tmp_path / "u_out.tif", value_range=(0, 4095))  # in the file's units
    image, _ = read_image(tmp_path / "u.tif")
    expected = np.clip(gray.denoise(image, value_range=(0, 4095 / 65535)) * 65535, 0, 65535)
    np.testing.assert_allclose(tifffile.imread(tmp_path / "u_out.tif"), expected[0], atol=0.5 + 1e-3)  # rounded
    gray.denoise_file(tmp_path / "u.tif", tmp_path / "u_auto.tif")  # 12 bits of 16: its own range by default
    expected = np.clip(gray.denoise(image, value_range="auto") * 65535, 0, 65535)
    np.testing.assert_allclose(tifffile.imread(tmp_path / "u_auto.tif"), expected[0], atol=0.5 + 1e-3)
    gray.denoise_file(tmp_path / "u.tif", tmp_path / "u_dtype.tif", value_range=(0, 65535))  # the dtype's scale
    expected = np.clip(gray.denoise(image) * 65535, 0, 65535)
    np.testing.assert_allclose(tifffile.imread(tmp_path / "u_dtype.tif"), expected[0], atol=0.5 + 1e-3)
    assert np.abs(tifffile.imread(tmp_path / "u_dtype.tif") - tifffile.imread(tmp_path / "u_out.tif")).max() > 100
    with pytest.raises(ValueError, match=r"u.tif: `value_range` \(lo, hi\) must be finite with lo < hi"):
        gray.denoise_file(tmp_path / "u.tif", tmp_path / "bad.tif", value_range=(5, 1))
    assert not (tmp_path / "bad.tif").exists()


def test_evaluate_model_ranges_float_files_as_the_denoise_command(runs: dict[str, Path], gray: ImageDenoiser,
                                                                  tmp_path: Path) -> None:
    """``evaluate --model`` scores what ``python -m xmodal.denoise`` writes (its value range and ``--sigma auto``)."""
    from xmodal.evaluate import evaluate_images

    x = rand(1, 30, 27)
    for folder, image in (("clean", x[0]), ("noisy", x[0] + np.random.default_rng(1).normal(0, 0.1, x[0].shape))):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(tmp_path / folder / "a.tif", (image * 4000).astype(np.float32))  # counts, not [0, 1]
    assert main([str(tmp_path / "noisy" / "a.tif"), "-o", str(tmp_path / "written"), "--model", str(runs["gray"]),
                 "--quiet"]) == 0
    by_model = evaluate_images(tmp_path / "clean", tmp_path / "noisy", denoiser=gray, data_range=4000.0)
    by_files = evaluate_images(tmp_path / "clean", tmp_path / "noisy", tmp_path / "written", data_range=4000.0)
    assert by_model["files"][0]["enhanced"] == pytest.approx(by_files["files"][0]["enhanced"], abs=1e-9)


def test_cli_value_range(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    x = rand(1, 30, 27)
    tifffile.imwrite(tmp_path / "u.tif", np.rint(x[0] * 4095).astype(np.uint16))
    argv = [str(tmp_path / "u.tif"), "-o", str(tmp_path / "out"), "--model", str(runs["gray"]), "--quiet"]
    assert main(argv + ["--value-range", "0,4095"]) == 0
    gray = load(runs["gray"])
    gray.denoise_file(tmp_path / "u.tif", tmp_path / "ref.tif", value_range=(0, 4095), sigma="auto")  # the CLI's
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "u.tif"), tifffile.imread(tmp_path / "ref.tif"))
    for bad in ("4095", "a,b", "3,1", "auto,1"):
        assert main(argv + ["--overwrite", "--value-range", bad]) == 2
        assert f"--value-range: expected 'auto' or LO,HI with LO < HI (e.g. 0,4095), got '{bad}'" in \
            capsys.readouterr().err


def test_one_tile_equals_the_adapter_path(gray: ImageDenoiser, color: ImageDenoiser) -> None:
    for den, x in ((gray, torch.from_numpy(rand(2, 3, 33, 29))), (color, torch.from_numpy(rand(1, 3, 33, 29)))):
        ref = enhance(den.model, den.adapter, x, "image")
        torch.testing.assert_close(den.denoise(x), ref, atol=0, rtol=0)


def test_tiled_close_to_untiled(gray: ImageDenoiser, color: ImageDenoiser) -> None:
    """Tolerance measured in tests/test_tiling.py (tile 48, overlap 16 on the tiny U-Net)."""
    for den, x in ((gray, rand(2, 64, 63)), (color, rand(3, 64, 63))):
        whole = den.denoise(x)
        tiled = den.denoise(x, tile=48, overlap=16)
        diff = np.abs(whole - tiled)
        assert tiled.shape == x.shape and diff.max() < 1e-2 and diff.mean() < 1e-3


def test_color_model_channels(color: ImageDenoiser) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # colour images: no warning
        assert color.denoise(rand(3, 20, 21)).shape == (3, 20, 21)
    gray_in_colour = r"a colour model given a gray image copies it into its three channels, where the noise is then " \
                     r"the same in all three.*use a gray model \('gray'\)"
    with pytest.warns(UserWarning, match=gray_in_colour):  # gray: replicated, outputs averaged
        out = color.denoise(rand(20, 21))
    x = torch.from_numpy(rand(20, 21))
    feats = x.expand(1, 3, 20, 21)  # the model on the gray image copied to its channels, the outputs averaged
    expected = enhance(color.model, color.adapter, feats, "image").mean(dim=1)[0]
    torch.testing.assert_close(torch.from_numpy(out), expected, atol=1e-6, rtol=0)
    with pytest.warns(UserWarning, match=gray_in_colour):
        assert color.denoise(rand(2, 1, 20, 21)).shape == (2, 1, 20, 21)
    with pytest.raises(ValueError, match=r"this model denoises 3-channel \(or gray\) images; `image` has 5 channels "
                                         r"\(shape \(5, 20, 21\)\); use a gray model"):
        color.denoise(rand(5, 20, 21))


def test_non_blind_model_sigma(runs: dict[str, Path], gray: ImageDenoiser) -> None:
    den = load(runs["nonblind"])
    x = rand(2, 3, 24, 20)
    with pytest.raises(ValueError, match=r"this model is non-blind \(config.image.noise_map is true\): pass `sigma`"):
        den.denoise(x)
    a = den.denoise(x, sigma=0.1)
    b = den.denoise(x, sigma=np.full((24, 20), 0.1, np.float32))
    c = den.denoise(x, sigma=torch.full((2, 1, 24, 20), 0.1))
    assert a.shape == x.shape
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, den.denoise(x, sigma=0.3))  # the map reaches the network
    feats = torch.cat([torch.from_numpy(x), torch.full((2, 1, 24, 20), 0.1)], dim=1)  # (B, C + 1, H, W)
    torch.testing.assert_close(torch.from_numpy(a), enhance(den.model, den.adapter, feats, "image"), atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"Expected `sigma` of shape \(H, W\), \(1, H, W\) or \(B, 1, H, W\) with "
                                         r"B=2, H=24, W=20 .*got \(3, 24, 20\)"):
        den.denoise(x, sigma=np.full((3, 24, 20), 0.1, np.float32))
    with pytest.raises(ValueError, match=r"`sigma` must be finite and >= 0 .*got -0.1"):
        den.denoise(x, sigma=-0.1)
    with pytest.raises(ValueError, match=r"`sigma` contains NaN or infinite values"):
        den.denoise(x, sigma=np.full((24, 20), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"`sigma` must be a float, a per-pixel map or 'auto', got '0.1'"):
        den.denoise(x, sigma="0.1")
    with pytest.raises(TypeError, match=r"Expected `sigma` to be a float or a per-pixel map .*got list"):
        den.denoise(x, sigma=[0.1])
    # "auto": each image's own level, estimated
    clean = np.broadcast_to(np.linspace(0.2, 0.8, 64, dtype=np.float32), (2, 3, 64, 64))
    noisy = clean + np.random.default_rng(1).normal(0, 1, clean.shape).astype(np.float32) * np.array(
        [0.05, 0.2], np.float32).reshape(2, 1, 1, 1)
    levels = [float(np.sqrt(np.mean(estimate_sigma(noisy[b]) ** 2))) for b in range(2)]
    assert levels == pytest.approx([0.05, 0.2], rel=0.1)
    maps = torch.tensor(levels).view(2, 1, 1, 1).expand(2, 1, 64, 64)
    np.testing.assert_array_equal(den.denoise(noisy, sigma="auto"), den.denoise(noisy, sigma=maps))
    np.testing.assert_allclose(den.denoise(noisy * 255, sigma="auto", value_range=(0, 255)),  # in [0, 1] units
                               den.denoise(noisy, sigma=maps) * 255, rtol=1e-5, atol=1e-3)


# a blind model's message for sigma="loud"
LOUD = r"`sigma` must be a float or 'auto' \(None: the image as it is\), got 'loud'"


def test_noise_above_the_training_range_is_denoised_at_a_lower_contrast(runs: dict[str, Path],
                                                                           gray: ImageDenoiser) -> None:
    """Given ``sigma`` (a level or "auto"), an image whose noise is above 0.9 x the largest level the model was
    trained on is denoised at its contrast times ``0.9 * max_sigma / level`` about its mean, scaled back after."""
    assert gray.max_sigma == pytest.approx(50 / 255)  # the default training range, [0, 50] / 255
    x = torch.from_numpy(rand(2, 3, 40, 36))

    def lowered(den: ImageDenoiser, x: torch.Tensor, level: float, **kwargs: object) -> torch.Tensor:
        mean = x.mean(dim=(-3, -2, -1), keepdim=True)
        gain = 0.9 * den.max_sigma / level
        return (den.denoise((x - mean) * gain + mean, **kwargs) - mean) / gain + mean

    torch.testing.assert_close(gray.denoise(x, sigma=0.4), lowered(gray, x, 0.4), atol=1e-5, rtol=0)
    assert not torch.allclose(gray.denoise(x, sigma=0.4), gray.denoise(x), atol=1e-3)
    torch.testing.assert_close(gray.denoise(x, sigma=0.4, ensemble=True, tile=24, overlap=8),
                               lowered(gray, x, 0.4, ensemble=True, tile=24, overlap=8), atol=1e-5, rtol=0)
    for level in (0.0, 0.1, 0.9 * 50 / 255):  # at or below 0.9 x the range: the image as it is
        torch.testing.assert_close(gray.denoise(x, sigma=level), gray.denoise(x), atol=0, rtol=0)
    # in the image's units with value_range
    torch.testing.assert_close(gray.denoise(x * 255, sigma=0.4 * 255, value_range=(0, 255)),
                               gray.denoise(x, sigma=0.4) * 255, atol=2e-3, rtol=0)
    # "auto": each image's level from the quick estimate (at most 16,384 patches per channel)
    levels = [float(np.sqrt(np.mean(estimate_sigma(x[b], max_patches=16_384) ** 2))) for b in range(2)]
    assert min(levels) > 0.9 * 50 / 255  # uniform noise reads high
    torch.testing.assert_close(gray.denoise(x, sigma="auto"),
                               torch.cat([lowered(gray, x[b:b + 1], levels[b]) for b in range(2)]), atol=1e-5, rtol=0)
    smooth = torch.linspace(0.2, 0.8, 40).expand(1, 40, 40).contiguous()  # noiseless: reads 0
    torch.testing.assert_close(gray.denoise(smooth, sigma="auto"), gray.denoise(smooth), atol=0, rtol=0)
    tiny = torch.from_numpy(rand(1, 10, 40))  # too small to estimate (136 patches of 7 x 7): as it is
    torch.testing.assert_close(gray.denoise(tiny, sigma="auto"), gray.denoise(tiny), atol=0, rtol=0)
    # a non-blind model: the image and its noise map alike (here by the map's largest level, 0.5)
    nonblind = load(runs["nonblind"])
    maps = torch.full((2, 1, 40, 36), 0.3)
    maps[:, :, :10] = 0.5
    mean = x.mean(dim=(-3, -2, -1), keepdim=True)
    gain = 0.9 * (50 / 255) / 0.5
    torch.testing.assert_close(nonblind.denoise(x, sigma=maps),
                               (nonblind.denoise((x - mean) * gain + mean, sigma=maps * gain) - mean) / gain + mean,
                               atol=1e-5, rtol=0)
    # models trained on no white Gaussian noise have no range: sigma is checked, then has no effect
    camera = load(runs["camera"])
    assert camera.max_sigma is None
    torch.testing.assert_close(camera.denoise(x, sigma=0.4), camera.denoise(x), atol=0, rtol=0)
    for den in (gray, camera):  # a blind model's sigma: one level per image
        with pytest.raises(TypeError, match=r"Expected `sigma` to be a float or 'auto' for this blind model "
                                            r"\(per-pixel maps are for non-blind models\), got ndarray"):
            den.denoise(x, sigma=np.full((40, 36), 0.1, np.float32))
        with pytest.raises(ValueError, match=LOUD):
            den.denoise(x, sigma="loud")
        for bad in (-0.1, float("nan"), float("inf")):
            with pytest.raises(ValueError, match=r"`sigma` must be finite and >= 0 \(a noise standard deviation\)"):
                den.denoise(x, sigma=bad)
    # a level above the whole range of the data is a level in the wrong units (25 meant as 25/255)
    for den, kwargs in ((gray, {}), (nonblind, {}), (gray, {"value_range": (0, 255)})):
        span = 255 if kwargs else 1
        with pytest.raises(ValueError, match=rf"`sigma` \({span + 1}\) is above the whole range of the data \({span} "
                                             r"in its units\): it is a standard deviation in the image's units"):
            den.denoise(x * span, sigma=span + 1.0, **kwargs)
    with pytest.raises(ValueError, match=r"`sigma` \(1.5\) is above the whole range of the data"):
        nonblind.denoise(x, sigma=maps * 3)  # a map's largest value
    torch.testing.assert_close(gray.denoise(x, sigma=torch.tensor(0.4)), gray.denoise(x, sigma=0.4), atol=0, rtol=0)
    # in a batch, the images within the range are exactly as without sigma
    batch = torch.stack([torch.linspace(0.2, 0.8, 36).expand(3, 40, 36), x[1]])
    torch.testing.assert_close(gray.denoise(batch, sigma="auto")[0], gray.denoise(batch)[0], atol=0, rtol=0)
    assert not torch.allclose(gray.denoise(batch, sigma="auto")[1], gray.denoise(batch)[1], atol=1e-3)
    # a non-blind model cannot take "auto" on an image too small to estimate: it says what to do
    with pytest.raises(ValueError, match=r"sigma='auto': an image of 10 x 40 pixels is too small to estimate its "
                                         r"noise level \(20 x 20 pixels at least\); pass the level as a number"):
        nonblind.denoise(tiny, sigma="auto")


@pytest.mark.parametrize(("image", "kwargs", "error", "match"), [
    ([[0.1, 0.2]], {}, TypeError, r"Expected `image` to be a numpy array or a torch tensor, got list"),
    (np.zeros((8, 8), np.uint8), {}, TypeError, r"Expected `image` to be a float array \(values in \[0, 1\]\), got "
                                                r"dtype uint8"),
    (torch.zeros(8, 8, dtype=torch.int32), {}, TypeError, r"Expected `image` to be a float tensor .*torch.int32"),
    (np.zeros(8, np.float32), {}, ValueError, r"Expected `image` of shape \(H, W\), \(C, H, W\) or \(B, C, H, W\) "
                                              r"with no empty axis, got \(8,\)"),
    (np.zeros((1, 1, 1, 8, 8), np.float32), {}, ValueError, r"with no empty axis, got \(1, 1, 1, 8, 8\)"),
    (np.zeros((3, 0, 8), np.float32), {}, ValueError, r"with no empty axis, got \(3, 0, 8\)"),
    (np.array([[0.0, np.nan]], np.float32), {}, ValueError, r"`image` contains NaN or infinite values"),
    (np.array([[0.0, np.inf]], np.float32), {}, ValueError, r"`image` contains NaN or infinite values"),
    (np.zeros((8, 8), np.float32), {"tile": 16, "overlap": 8}, ValueError, r"`tile` \(16\) must exceed 2 \* "
                                                                           r"`overlap` \(16\)"),
    (np.zeros((8, 8), np.float32), {"tile": 0}, ValueError, r"`tile` must be an integer >= 1, got 0"),
])
def test_image_argument_errors(gray: ImageDenoiser, image, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        gray.denoise(image, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# StackDenoiser on arrays


@pytest.mark.parametrize("bands", [1, 5, 31])
def test_stack_shapes_and_adapter_path(stack_den: StackDenoiser, bands: int) -> None:
    x = torch.from_numpy(rand(2, bands, 21, 19))
    out = stack_den.denoise(x, bands_per_batch=4)
    assert out.shape == x.shape and out.dtype == x.dtype
    ref = enhance(stack_den.model, stack_den.adapter, x, "multispectral")
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    np.testing.assert_allclose(stack_den.denoise(x[1].numpy()), ref[1].numpy(), atol=1e-6)  # (S, H, W), numpy


def test_stack_tiled_close_to_untiled(stack_den: StackDenoiser) -> None:
    x = rand(6, 64, 63)
    diff = np.abs(stack_den.denoise(x) - stack_den.denoise(x, tile=48, overlap=16, bands_per_batch=3))
    assert diff.max() < 1e-2 and diff.mean() < 1e-3


def test_stack_memory_is_bounded_by_groups_and_tiles(stack_den: StackDenoiser, monkeypatch: pytest.MonkeyPatch) -> None:
    """200 bands: the network never sees more than bands_per_batch items or a tile larger than `tile`."""
    seen: list[tuple[int, ...]] = []
    forward = stack_den.model.forward

    def spy(x: torch.Tensor, modality: str) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return forward(x, modality)

    monkeypatch.setattr(stack_den.model, "forward", spy)
    out = stack_den.denoise(rand(200, 40, 30), tile=24, overlap=8, bands_per_batch=8)
    assert out.shape == (200, 40, 30)
    assert max(s[0] for s in seen) == 8 and max(max(s[-2:]) for s in seen) <= 24
    assert len(seen) == 25 * 2 * 2  # 25 band groups in each of 2 x 2 tiles


def test_stack_argument_errors(stack_den: StackDenoiser) -> None:
    with pytest.raises(ValueError, match=r"Expected `stack` of shape \(S, H, W\) or \(B, S, H, W\) with no empty "
                                         r"axis, got \(8, 8\)"):
        stack_den.denoise(rand(8, 8))
    with pytest.raises(ValueError, match=r"no empty axis, got \(0, 8, 8\)"):
        stack_den.denoise(np.zeros((0, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"`stack` contains NaN or infinite values"):
        stack_den.denoise(np.full((2, 8, 8), np.nan, np.float32))
    with pytest.raises(TypeError, match=r"Expected `stack` to be a float array"):
        stack_den.denoise(np.zeros((2, 8, 8), np.uint16))
    with pytest.raises(ValueError, match=r"`bands_per_batch` must be a positive integer, got 0"):
        stack_den.denoise(rand(2, 8, 8), bands_per_batch=0)


# ----------------------------------------------------------------------------------------------------------------
# Files


def write_images(folder: Path) -> dict[str, tuple[str, str, tuple[int, ...]]]:
    """Write one file per supported kind; returns name -> (format, dtype, shape of the read image (C, H, W))."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (37, 31), dtype=np.uint8), "L").save(folder / "gray8.png")
    Image.fromarray(rng.integers(0, 256, (30, 41, 3), dtype=np.uint8), "RGB").save(folder / "rgb8.png")
    Image.fromarray(rng.integers(0, 256, (20, 22, 4), dtype=np.uint8), "RGBA").save(folder / "rgba8.png")
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8), "RGB").save(folder / "photo.jpg", quality=90)
    write_image(folder / "gray16.png", rng.random((1, 33, 29)), "uint16")
    tifffile.imwrite(folder / "gray16.tif", rng.integers(0, 65536, (35, 27), dtype=np.uint16))
    tifffile.imwrite(folder / "float32.tif", rng.random((26, 28)).astype(np.float32))
    np.save(folder / "hw.npy", rng.random((25, 23)).astype(np.float32))
    np.save(folder / "hwc.npy", rng.integers(0, 256, (21, 19, 3), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 256, (19, 23), dtype=np.uint8), "L").save(folder / "gray8.bmp")
    Image.fromarray(rng.integers(0, 256, (18, 21, 4), dtype=np.uint8), "RGBA").save(folder / "rgba8.webp",
                                                                                    lossless=True)
    Image.fromarray(rng.integers(0, 256, (17, 26, 3), dtype=np.uint8), "RGB").save(folder / "phone.avif")
    return {"gray8.bmp": ("bmp", "uint8", (1, 19, 23)), "rgba8.webp": ("webp", "uint8", (4, 18, 21)),
            "phone.avif": ("avif", "uint8", (3, 17, 26)),
            "gray8.png": ("png", "uint8", (1, 37, 31)), "rgb8.png": ("png", "uint8", (3, 30, 41)),
            "rgba8.png": ("png", "uint8", (4, 20, 22)), "photo.jpg": ("jpeg", "uint8", (3, 24, 24)),
            "gray16.png": ("png", "uint16", (1, 33, 29)), "gray16.tif": ("tiff", "uint16", (1, 35, 27)),
            "float32.tif": ("tiff", "float32", (1, 26, 28)), "hw.npy": ("npy", "float32", (1, 25, 23)),
            "hwc.npy": ("npy", "uint8", (3, 21, 19))}


def test_cli_images_keep_format_bit_depth_and_shape(runs: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    kinds = write_images(tmp_path / "in")
    out = tmp_path / "out"
    assert main([str(tmp_path / "in"), "-o", str(out), "--model", str(runs["gray"]), "--tile", "24",
                 "--overlap", "8"]) == 0
    assert f"denoised {len(kinds)} file(s)" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == sorted(kinds)
    for name, (fmt, dtype, shape) in kinds.items():
        src, src_info = read_image(tmp_path / "in" / name)
        image, info = read_image(out / name)
        assert (info.format, info.dtype, image.shape, info.layout, info.mode) == \
               (fmt, dtype, shape, src_info.layout, src_info.mode), name
        if name in ("rgba8.png", "rgba8.webp"):  # alpha copied
            np.testing.assert_array_equal(image[3], src[3])
    # numpy layout kept exactly
    assert np.load(out / "hwc.npy").shape == (21, 19, 3) and np.load(out / "hw.npy").shape == (25, 23)


def test_denoise_file_equals_in_memory_and_format_follows_dst(gray: ImageDenoiser, color: ImageDenoiser,
                                                               tmp_path: Path) -> None:
    write_images(tmp_path / "in")
    src = tmp_path / "in" / "float32.tif"
    gray.denoise_file(src, tmp_path / "a.tif", tile=24, overlap=8)
    image, _ = read_image(src)
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif")[0], gray.denoise(image, tile=24, overlap=8))
    gray.denoise_file(tmp_path / "in" / "gray8.png", tmp_path / "b.tif")  # PNG in, TIFF out, still 8-bit
    _, info = read_image(tmp_path / "b.tif")
    assert (info.format, info.dtype) == ("tiff", "uint8")
    color.denoise_file(tmp_path / "in" / "rgb8.png", tmp_path / "c.npy")
    assert np.load(tmp_path / "c.npy").shape == (30, 41, 3)
    with pytest.raises(ValueError, match=r"x.png: PNG stores uint8 or uint16 with 1-4 channels, got float32"):
        gray.denoise_file(src, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"y.gif: unsupported output extension '.gif'"):
        gray.denoise_file(src, tmp_path / "y.gif")
    assert sorted(os.listdir(tmp_path)) == ["a.tif", "b.tif", "c.npy", "in"]


def test_denoise_file_refuses_input_and_existing_outputs(gray: ImageDenoiser, color: ImageDenoiser,
                                                         tmp_path: Path) -> None:
    write_images(tmp_path / "in")
    src = tmp_path / "in" / "gray8.png"
    before = src.read_bytes()
    with pytest.raises(ValueError, match=r"gray8.png: refusing to write the output over its input file"):
        gray.denoise_file(src, src, overwrite=True)
    assert src.read_bytes() == before
    dst = gray.denoise_file(src, tmp_path / "o.png")
    with pytest.raises(FileExistsError, match=r"o.png: output file already exists \(pass overwrite=True"):
        gray.denoise_file(src, dst)
    gray.denoise_file(src, dst, overwrite=True)
    (tmp_path / "d.png").mkdir()
    with pytest.raises(ValueError, match=r"d.png: `dst` is a directory, expected a file path"):
        gray.denoise_file(src, tmp_path / "d.png", overwrite=True)
    with pytest.raises(ImageReadError, match=r"nope.png: file not found"):
        gray.denoise_file(tmp_path / "nope.png", tmp_path / "n.png")
    with pytest.raises(ImageReadError, match=r"in: a folder; denoise_file takes one image file \(python -m "
                                             r"xmodal.denoise in -o OUT denoises a folder\)"):
        gray.denoise_file(tmp_path / "in", tmp_path / "n.png")
    tifffile.imwrite(tmp_path / "in" / "five.tif", np.zeros((5, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"five.tif: this model denoises 3-channel \(or gray\) images; `image` has 5"):
        color.denoise_file(tmp_path / "in" / "five.tif", tmp_path / "five.tif")
    assert not (tmp_path / "five.tif").exists()


def test_no_partial_output_when_the_network_fails(gray: ImageDenoiser, stack_den: StackDenoiser, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    write_images(tmp_path / "in")
    bands = write_band_folder(tmp_path / "scene", 3)

    def boom(*args, **kwargs):
        raise RuntimeError("network failed")

    monkeypatch.setattr(gray.model, "forward", boom)
    monkeypatch.setattr(stack_den.model, "forward", boom)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RuntimeError, match="network failed"):
        gray.denoise_file(tmp_path / "in" / "gray8.png", out / "gray8.png")
    with pytest.raises(RuntimeError, match="network failed"):
        stack_den.denoise_file(bands, out / "scene")
    assert os.listdir(out) == []


# ----------------------------------------------------------------------------------------------------------------
# Stacks on disk


def write_band_folder(folder: Path, bands: int, size: tuple[int, int] = (23, 19), suffix: str = ".tif") -> Path:
    """Single-band uint16 TIFFs B1..B{bands} (natural order)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(bands)
    for b in range(bands):
        tifffile.imwrite(folder / f"B{b + 1}{suffix}", rng.integers(100, 4000, size, dtype=np.uint16))
    return folder


@pytest.mark.parametrize("bands", [1, 5, 31])
def test_cli_stack_file_and_folder(runs: dict[str, Path], tmp_path: Path, bands: int,
                                   capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(0)
    cube = rng.integers(0, 65536, (bands, 24, 21), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "cube.tif", cube[0] if bands == 1 else cube, photometric="minisblack",
                     planarconfig=None if bands == 1 else "separate")
    np.save(tmp_path / "cube.npy", rng.random((bands, 20, 18)).astype(np.float32))
    write_band_folder(tmp_path / "scene", bands, suffix=".tiff")
    out = tmp_path / "out"
    argv = [str(tmp_path / "cube.tif"), str(tmp_path / "cube.npy"), str(tmp_path / "scene"), "-o", str(out),
            "--model", str(runs["stack"]), "--tile", "16", "--overlap", "4", "--quiet"]
    assert main(argv) == 0
    assert sorted(os.listdir(out)) == ["cube.npy", "cube.tif", "scene"]
    stack, info = read_stack(out / "cube.tif", "dtype")
    assert stack.shape == (bands, 24, 21) and info.dtype == ("uint16",) * bands
    assert np.load(out / "cube.npy").shape == (bands, 20, 18) and np.load(out / "cube.npy").dtype == np.float32
    assert sorted(os.listdir(out / "scene")) == sorted(os.listdir(tmp_path / "scene"))  # same band file names
    stack, info = read_stack(out / "scene", "dtype")
    assert stack.shape == (bands, 23, 19) and info.band_names == tuple(f"B{b + 1}" for b in range(bands))
    if bands > 1:  # a value range is an image's; a stack is scaled band by band, and says so rather than ignore it
        assert main([*argv[:1], "-o", str(tmp_path / "vr"), *argv[5:], "--value-range", "0,4095"]) == 1
        assert (f"{tmp_path / 'cube.tif'}: --value-range applies to images and clips; a band stack is scaled band "
                "by band (--scaling)") in capsys.readouterr().err
        assert not (tmp_path / "vr" / "cube.tif").exists()
        # image-only options are said not to apply, and the stack is denoised as without them
        with pytest.warns(UserWarning, match=r"cube.tif: --ensemble and --subsample do not apply to a band stack: "
                                             r"not used for it"):
            assert main([*argv[:1], "-o", str(tmp_path / "ens"), *argv[5:], "--ensemble", "--subsample", "2"]) == 0
        assert np.array_equal(tifffile.imread(tmp_path / "ens" / "cube.tif"), tifffile.imread(out / "cube.tif"))


def test_stack_value_range_maps_raw_stacks_to_the_model_s_scale(stack_den: StackDenoiser) -> None:
    """A stack in its own units (reflectance x 10000, digital numbers) warns as it is, and with value_range is
    denoised as the per-band scaled stack would be: "auto" band by band (0.1-99.9 percentiles), (lo, hi) for all;
    a sigma given in the stack's units reaches each band in its scaled units."""
    unit = rand(2, 4, 23, 19, seed=5) * np.linspace(0.5, 1.0, 4, dtype=np.float32)[:, None, None]
    raw = unit * 10000 + 100
    with pytest.warns(UserWarning, match=r"`stack` values span \[.*\] \(0.1-99.9 percentiles\), but the model denoises "
                                         r"\[0, 1\] data; pass value_range"):
        stack_den.denoise(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning once the range is said
        fixed = stack_den.denoise(raw, value_range=(100, 10100))
        auto = stack_den.denoise(raw, value_range="auto")
    np.testing.assert_allclose(fixed, stack_den.denoise(unit) * 10000 + 100, rtol=1e-5, atol=0.05)
    flat = torch.from_numpy(raw.reshape(8, -1)).double()
    q = torch.quantile(flat, torch.tensor([0.001, 0.999], dtype=torch.float64), dim=1).float().numpy()  # (2, 8)
    lo, span = q[0].reshape(2, 4, 1, 1), (q[1] - q[0]).reshape(2, 4, 1, 1)
    np.testing.assert_allclose(auto, stack_den.denoise((raw - lo) / span) * span + lo, rtol=1e-4, atol=0.5)
    strong = stack_den.denoise(unit, sigma=0.3)  # above the model's range: lowered contrast, band by band
    np.testing.assert_allclose(stack_den.denoise(raw, value_range=(100, 10100), sigma=3000.0),
                               strong * 10000 + 100, rtol=1e-5, atol=0.05)
    with pytest.raises(ValueError, match=r"`value_range` \(lo, hi\) must be finite with lo < hi, got \(5, 1\)"):
        stack_den.denoise(unit, value_range=(5, 1))


def test_stack_denoise_file_equals_in_memory(stack_den: StackDenoiser, tmp_path: Path) -> None:
    write_band_folder(tmp_path / "scene", 5)
    dst = stack_den.denoise_file(tmp_path / "scene", tmp_path / "clean", scaling="band_minmax")
    stack, info = read_stack(tmp_path / "scene", "band_minmax")
    expected = stack_den.denoise(stack) * np.array(info.scale, np.float32)[:, None, None] \
        + np.array(info.offset, np.float32)[:, None, None]  # back to file units
    got, _ = read_stack(dst, "dtype")
    np.testing.assert_allclose(got * 65535, np.clip(np.rint(expected), 0, 65535), atol=1)
    # a multi-band file into a folder and a folder into one file
    stack_den.denoise_file(tmp_path / "scene", tmp_path / "one.tif")
    assert read_stack(tmp_path / "one.tif")[0].shape == (5, 23, 19)
    with pytest.raises(ValueError, match=r"x.png: a stack is written to a .tif/.tiff/.npy/.mat/.hdr/.nii/.nii.gz file "
                                         r"or a folder"):
        stack_den.denoise_file(tmp_path / "one.tif", tmp_path / "x.png")


@pytest.mark.parametrize("trained", ["dtype", "band_percentile"])
def test_stack_scaling_defaults_to_the_models_own(tmp_path: Path, trained: str) -> None:
    """A model trained on `dtype` (or percentile) scaled bands gets its input scaled that way, not band_minmax."""
    den = load(make_run(tmp_path / "run", ["modality=multispectral", f"image.scaling={trained}"]))
    write_band_folder(tmp_path / "scene", 5)
    den.denoise_file(tmp_path / "scene", tmp_path / "default.tif")
    den.denoise_file(tmp_path / "scene", tmp_path / "trained.tif", scaling=trained)
    den.denoise_file(tmp_path / "scene", tmp_path / "minmax.tif", scaling="band_minmax")
    default = tifffile.imread(tmp_path / "default.tif")
    np.testing.assert_array_equal(default, tifffile.imread(tmp_path / "trained.tif"))
    assert not np.array_equal(default, tifffile.imread(tmp_path / "minmax.tif"))
    # the command line follows the model too, unless --scaling is given
    out = tmp_path / "out"
    assert main([str(tmp_path / "default.tif"), "-o", str(out), "--model", str(tmp_path / "run"), "--quiet"]) == 0
    den.denoise_file(tmp_path / "default.tif", tmp_path / "again.tif", scaling=trained, sigma="auto")  # the CLI's
    np.testing.assert_array_equal(tifffile.imread(out / "default.tif"), tifffile.imread(tmp_path / "again.tif"))


def test_stack_bands_with_noise_above_the_training_range_are_lowered_band_by_band(runs: dict[str, Path],
                                                                                    stack_den: StackDenoiser,
                                                                                    tmp_path: Path) -> None:
    """Given ``sigma``, each band whose level (the float, or its own estimate) is above ``max_sigma`` is
    denoised at a contrast lowered about its mean, and scaled back; the other bands are untouched."""
    assert stack_den.max_sigma == pytest.approx(50 / 255)
    x = torch.from_numpy(rand(2, 5, 30, 28))
    x[0, 1] = torch.linspace(0.2, 0.8, 28)  # a clean band: no noise read

    def lowered(levels: torch.Tensor) -> torch.Tensor:  # (2, 5) levels -> the expected output
        gains = ((50 / 255) / levels.clamp_min(1e-12)).clamp(max=1.0).view(2, 5, 1, 1)
        mean = x.mean(dim=(-2, -1), keepdim=True)
        return (stack_den.denoise((x - mean) * gains + mean) - mean) / gains + mean

    torch.testing.assert_close(stack_den.denoise(x, sigma=0.4), lowered(torch.full((2, 5), 0.4)), atol=1e-5, rtol=0)
    assert not torch.allclose(stack_den.denoise(x, sigma=0.4), stack_den.denoise(x), atol=1e-3)
    levels = torch.tensor([[float(estimate_sigma(band, max_patches=16_384)[0]) for band in item] for item in x])
    assert levels[0, 1] < 0.01 and bool((levels[levels > 0.01] > 50 / 255).all())
    auto = stack_den.denoise(x, sigma="auto")
    torch.testing.assert_close(auto, lowered(levels), atol=1e-5, rtol=0)
    for level in (0.0, 0.1):
        torch.testing.assert_close(stack_den.denoise(x, sigma=level), stack_den.denoise(x), atol=0, rtol=0)
    # files: the command line's default is "auto"
    np.save(tmp_path / "s.npy", x[0].numpy())
    assert main([str(tmp_path / "s.npy"), "-o", str(tmp_path / "out"), "--model", str(runs["stack"]), "--quiet"]) == 0
    stack_den.denoise_file(tmp_path / "s.npy", tmp_path / "auto.npy", sigma="auto")
    stack_den.denoise_file(tmp_path / "s.npy", tmp_path / "plain.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "s.npy"), np.load(tmp_path / "auto.npy"))
    assert not np.allclose(np.load(tmp_path / "auto.npy"), np.load(tmp_path / "plain.npy"), atol=1e-3)
    for bad, error, match in (("loud", ValueError, LOUD),
                              (-1.0, ValueError, r"`sigma` must be finite and >= 0"),
                              (np.zeros((30, 28), np.float32), TypeError, r"per-pixel maps are for non-blind")):
        with pytest.raises(error, match=match):
            stack_den.denoise(x, sigma=bad)
    with pytest.raises(ValueError, match="s.npy: " + LOUD):
        stack_den.denoise_file(tmp_path / "s.npy", tmp_path / "bad.npy", sigma="loud")
    with pytest.raises(TypeError, match=r"s.npy: Expected `sigma` to be a float or 'auto' for this blind model"):
        stack_den.denoise_file(tmp_path / "s.npy", tmp_path / "bad.npy", sigma=np.zeros((30, 28), np.float32))
    assert not (tmp_path / "bad.npy").exists()
    # evaluate with the model scores it as the command line runs it
    from xmodal.evaluate import evaluate_stacks
    from xmodal.metrics import psnr_score

    clean = x[0].clone()
    clean[:, 0, :2] = torch.tensor([0.0, 1.0])  # every band spans [0, 1]: the clean scale is the identity
    np.save(tmp_path / "clean.npy", clean.numpy())
    report = evaluate_stacks(tmp_path / "clean.npy", tmp_path / "s.npy", denoiser=stack_den)
    expected = psnr_score(clean.numpy(), np.load(tmp_path / "out" / "s.npy"))  # the file the command line wrote
    assert report["files"][0]["enhanced"]["psnr"] == pytest.approx(expected, abs=1e-4)


def test_stack_folder_overwrite_rules(stack_den: StackDenoiser, tmp_path: Path) -> None:
    src = write_band_folder(tmp_path / "scene", 3)
    before = {f.name: f.read_bytes() for f in src.iterdir()}
    with pytest.raises(ValueError, match=r"scene: refusing to write the output over its input folder"):
        stack_den.denoise_file(src, src, overwrite=True)
    with pytest.raises(ValueError, match=r"B1.tif: refusing to write the output over an input band file"):
        stack_den.denoise_file(src, src / "B1.tif", overwrite=True)
    assert {f.name: f.read_bytes() for f in src.iterdir()} == before
    dst = stack_den.denoise_file(src, tmp_path / "out")
    (dst / "notes.txt").write_text("kept")
    with pytest.raises(FileExistsError, match=r"out: output folder already exists \(pass overwrite=True"):
        stack_den.denoise_file(src, dst)
    stack_den.denoise_file(src, dst, overwrite=True)
    assert sorted(os.listdir(dst)) == ["B1.tif", "B2.tif", "B3.tif", "notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"file: `dst` is a file, expected a folder"):
        stack_den.denoise_file(src, tmp_path / "file", overwrite=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_stack_nodata_pixels_are_kept(stack_den: StackDenoiser, tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(100, 4000, (3, 20, 20), dtype=np.uint16)
    data[:, :5, :5] = 0
    tifffile.imwrite(tmp_path / "geo.tif", data, photometric="minisblack", planarconfig="separate",
                     extratags=[(42113, 2, 0, "0", True)])
    stack_den.denoise_file(tmp_path / "geo.tif", tmp_path / "out.tif")
    out = tifffile.imread(tmp_path / "out.tif")
    assert (out[:, :5, :5] == 0).all() and out.shape == data.shape


def test_float_stack_nodata_pixels_are_kept_exactly(stack_den: StackDenoiser, tmp_path: Path) -> None:
    """A float band's nodata comes back as the exact sentinel, not -9999.001 (which GDAL reads as data)."""
    data = np.random.default_rng(0).uniform(100, 400, (5, 32, 32)).astype(np.float32)
    data[:, :, :8] = -9999.0
    tifffile.imwrite(tmp_path / "geo.tif", data, photometric="minisblack", planarconfig="separate",
                     extratags=[(42113, 2, 0, "-9999", True)])
    stack_den.denoise_file(tmp_path / "geo.tif", tmp_path / "out.tif")
    out = tifffile.imread(tmp_path / "out.tif")
    assert (out[:, :, :8] == -9999.0).all() and (out[:, :, 8:] != -9999.0).all()


def test_stack_nodata_value_does_not_leak_into_valid_pixels(stack_den: StackDenoiser, tmp_path: Path) -> None:
    """The sentinel (-9999 or 0) is never given to the network: valid pixels beside nodata ones denoise the same."""
    data = np.random.default_rng(0).uniform(100, 400, (5, 24, 24)).astype(np.float32)
    outs = []
    for nodata in ("-9999", "0"):
        x = data.copy()
        x[:, :, :6] = float(nodata)
        tifffile.imwrite(tmp_path / f"in{nodata}.tif", x, photometric="minisblack", planarconfig="separate",
                         extratags=[(42113, 2, 0, nodata, True)])
        stack_den.denoise_file(tmp_path / f"in{nodata}.tif", tmp_path / f"out{nodata}.tif")
        out = tifffile.imread(tmp_path / f"out{nodata}.tif")
        assert (out[:, :, :6] == float(nodata)).all()
        outs.append(out[:, :, 6:])
    np.testing.assert_allclose(outs[0], outs[1], rtol=0, atol=1e-3)


@pytest.mark.parametrize(("value", "dtype"), [("0", np.uint16), ("-9999", np.float32), ("nan", np.float32)])
def test_image_nodata_pixels_are_kept(gray: ImageDenoiser, tmp_path: Path, value: str, dtype: type) -> None:
    """A one-band GeoTIFF (a DEM...) through the image path: nodata pixels stay nodata (NaN too) and the sentinel
    does not reach the network: the valid pixels denoise as they do with the nodata block set to their mean."""
    rng = np.random.default_rng(0)
    data = (rng.uniform(0.2, 0.8, (32, 32)) * (65535 if dtype == np.uint16 else 1)).astype(dtype)
    x = data.copy()
    x[:8, :8] = float(value)
    tifffile.imwrite(tmp_path / "dem.tif", x, extratags=[(42113, 2, 0, value, True)])
    gray.denoise_file(tmp_path / "dem.tif", tmp_path / "out.tif", sigma=None)
    out = tifffile.imread(tmp_path / "out.tif")
    block = out[:8, :8]
    assert (np.isnan(block) if value == "nan" else block == float(value)).all()
    assert np.isfinite(out[8:]).all() and out.dtype == dtype
    filled = x.astype(np.float32) / np.float32(65535 if dtype == np.uint16 else 1)
    mask = np.zeros(x.shape, bool)
    mask[:8, :8] = True
    filled[mask] = filled[~mask].mean()
    ref = gray.denoise(filled[None])[0] * (65535 if dtype == np.uint16 else 1)
    ref = np.clip(np.rint(ref), 0, 65535) if dtype == np.uint16 else ref
    np.testing.assert_allclose(out[8:].astype(np.float64), ref[8:], atol=1.0 if dtype == np.uint16 else 1e-6)
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        assert tif.pages[0].tags[42113].value == value


def test_float_stack_with_nan_nodata(stack_den: StackDenoiser, tmp_path: Path) -> None:
    """NaN, the usual nodata of float reflectance products, is accepted where the GDAL tag says so, kept as NaN, and
    left out of band statistics; without the tag a NaN is still refused."""
    data = np.random.default_rng(0).uniform(0.1, 0.4, (6, 24, 24)).astype(np.float32)
    data[:, :4, :4] = np.nan
    tifffile.imwrite(tmp_path / "refl.tif", data, photometric="minisblack", planarconfig="separate",
                     extratags=[(42113, 2, 0, "nan", True)])
    stack, info = read_stack(tmp_path / "refl.tif", "band_minmax")
    assert np.isnan(info.nodata[0]) and np.isfinite(info.offset).all() and np.isfinite(info.scale).all()
    stack_den.denoise_file(tmp_path / "refl.tif", tmp_path / "out.tif")
    out = tifffile.imread(tmp_path / "out.tif")
    assert np.isnan(out[:, :4, :4]).all() and np.isfinite(out[:, 4:]).all() and np.isfinite(out[:, :, 4:]).all()
    tifffile.imwrite(tmp_path / "untagged.tif", data, photometric="minisblack", planarconfig="separate")
    with pytest.raises(ImageReadError, match=r"untagged.tif: float data contains NaN or infinite values \(NaN is "
                                             r"allowed as the GDAL nodata value\)"):
        stack_den.denoise_file(tmp_path / "untagged.tif", tmp_path / "out2.tif")
    assert not (tmp_path / "out2.tif").exists()


def test_stacks_stored_bands_last_come_back_bands_last(stack_den: StackDenoiser, tmp_path: Path) -> None:
    """An (H, W, 8) .npy and a pixel-interleaved RGB+NIR TIFF (extra sample "unspecified", not alpha) are stacks:
    every band is denoised (none copied as alpha) and the output keeps the input's layout."""
    rng = np.random.default_rng(1)
    clean = np.repeat(rng.uniform(0.2, 0.8, (1, 24, 20)), 8, axis=0).astype(np.float32)
    noisy = (clean + rng.normal(0, 0.05, clean.shape)).astype(np.float32)  # (8, 24, 20)
    np.save(tmp_path / "hwc.npy", noisy.transpose(1, 2, 0))
    stack, info = read_stack(tmp_path / "hwc.npy")
    assert stack.shape == (8, 24, 20) and info.interleaved
    np.save(tmp_path / "chw.npy", noisy)
    for name in ("hwc", "chw"):
        stack_den.denoise_file(tmp_path / f"{name}.npy", tmp_path / f"out_{name}.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "out_hwc.npy").transpose(2, 0, 1),
                                  np.load(tmp_path / "out_chw.npy"))
    four = np.clip(noisy[:4] * 65535, 0, 65535).astype(np.uint16).transpose(1, 2, 0)  # (H, W, 4)
    tifffile.imwrite(tmp_path / "rgbn.tif", four, photometric="rgb", extrasamples=[0])
    np.save(tmp_path / "four.npy", four.transpose(2, 0, 1))  # (4, H, W): no alpha in a .npy
    for name in ("rgbn.tif", "four.npy"):
        stack_den.denoise_file(tmp_path / name, tmp_path / f"out_{name}")
    with tifffile.TiffFile(tmp_path / "out_rgbn.tif") as tif:
        out = tif.asarray()
        assert tif.series[0].axes == "YXS" and out.shape == four.shape
        assert all(int(v) == 0 for v in tif.pages[0].tags[338].value)  # extra samples stay "unspecified"
    assert all((out[..., b] != four[..., b]).any() for b in range(4))
    np.testing.assert_array_equal(np.load(tmp_path / "out_four.npy"), out.transpose(2, 0, 1))
    assert read_image(tmp_path / "four.npy")[1].mode == "multiband"
    assert read_image(tmp_path / "rgbn.tif")[1].mode == "multiband"


# ----------------------------------------------------------------------------------------------------------------
# Command line: modality selection, bad inputs, overwrite


@pytest.fixture
def bundled(runs: dict[str, Path], run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every bundled model installed (untrained tiny copies) in a temporary pretrained folder."""
    root = tmp_path / "pretrained"
    for key, folder in (("gray", "image_gray"), ("color", "image_color"), ("color", "image_color_real"),
                        ("stack", "multispectral")):
        shutil.copytree(runs[key], root / folder)
    shutil.copytree(run_dir, root / "speech_default")
    monkeypatch.setattr(xmodal.pretrained, "_HERE", root)
    return root


def test_cli_auto_picks_modality_and_default_model(bundled: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import xmodal.denoise as den_mod

    loaded: list[str | None] = []
    real_load = den_mod.load
    monkeypatch.setattr(den_mod, "load", lambda name, device="cpu", precision="fp32":
                        loaded.append(name) or real_load(name, device, precision))
    folder = tmp_path / "in"
    write_images(folder)
    tifffile.imwrite(folder / "cube.tif", np.zeros((6, 16, 16), np.uint16) + 7, photometric="minisblack",
                     planarconfig="separate")
    sf.write(folder / "talk.wav", 0.1 * np.sin(np.arange(4000) / 5.0), 16000, subtype="PCM_16")
    (folder / "notes.txt").write_text("not an input")
    out = tmp_path / "out"
    assert main([str(folder), "-o", str(out), "--quiet", "--tile", "24", "--overlap", "8"]) == 0
    assert sorted(os.listdir(out)) == sorted([*write_images(tmp_path / "again"), "cube.tif", "talk.wav"])
    # each once; the colour photos in camera formats (photo.jpg, phone.avif) get the model trained on camera noise
    assert sorted(loaded) == ["image_color", "image_color_real", "image_gray", "multispectral", "speech"]
    assert tifffile.imread(out / "cube.tif").shape == (6, 16, 16)
    assert sf.info(str(out / "talk.wav")).frames == 4000


def test_cli_unknown_extension_names_what_is_read(bundled: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "cat.gif").write_bytes(b"GIF89a" + bytes(64))  # no reader: tried as audio, as libsndfile may know it
    assert main([str(tmp_path / "cat.gif"), "-o", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"cat.gif: not readable as audio \(.*\); '.gif' is none of the known extensions \(audio: "
                     r"\.wav, .*; images and stacks: \.png, .*\.bmp, \.webp, .*; video: \.mp4, .*; other audio "
                     r"formats libsndfile reads work too, as do folders of frames or band TIFFs with --modality\)",
                     err), err
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_cli_folder_is_one_stack_with_modality_multispectral(bundled: Path, tmp_path: Path) -> None:
    write_band_folder(tmp_path / "scene", 4)
    assert main([str(tmp_path / "scene"), "-o", str(tmp_path / "out"), "--modality", "multispectral", "--quiet"]) == 0
    assert sorted(os.listdir(tmp_path / "out" / "scene")) == ["B1.tif", "B2.tif", "B3.tif", "B4.tif"]
    # without it, a folder expands to its files: each single-band TIFF is a gray image
    assert main([str(tmp_path / "scene"), "-o", str(tmp_path / "out2"), "--quiet"]) == 0
    assert sorted(os.listdir(tmp_path / "out2")) == ["B1.tif", "B2.tif", "B3.tif", "B4.tif"]


def test_default_image_model_by_channels_and_format(tmp_path: Path) -> None:
    """Colour photos in a camera format (JPEG, HEIC, AVIF) -> the model trained on camera noise; other colour images
    -> the white-noise colour model; gray, CMYK and gray pictures saved as RGB (channels within 2 levels) -> the gray
    model; more than 4 channels in TIFF/npy, and 3 TIFF bands not tagged RGB -> stacks."""
    import xmodal.denoise as den_mod

    kinds = write_images(tmp_path)
    rng = np.random.default_rng(5)
    rgb = rng.random((3, 40, 48)).astype(np.float32)
    write_image(tmp_path / "IMG_0001.HEIC", rgb, "uint8")
    write_image(tmp_path / "photo.jpeg", rgb, "uint8")
    write_image(tmp_path / "gray.jpg", rgb[:1], "uint8")
    Image.new("CMYK", (8, 8)).save(tmp_path / "print.jpg")
    np.save(tmp_path / "cube.npy", np.zeros((6, 8, 8), np.float32))
    mono = np.repeat(rgb[:1], 3, axis=0)  # a gray picture with its noise, saved as colour
    write_image(tmp_path / "mono.jpg", mono, "uint8")  # JPEG: the channels within a level or two after decoding
    write_image(tmp_path / "mono.png", mono, "uint8")
    levels = np.rint(mono * 255).astype(np.uint8)
    for name, offset in (("near.png", 2), ("tinted.png", 3)):  # blue off by 2 levels (gray) or 3 (colour)
        tint = levels.copy()
        tint[2] = np.clip(tint[2].astype(int) + offset, 0, 255).astype(np.uint8)
        Image.fromarray(tint.transpose(1, 2, 0), "RGB").save(tmp_path / name)
    np.save(tmp_path / "hwc8.npy", np.zeros((20, 24, 8), np.float32))  # bands last: a stack, not 20 bands
    np.save(tmp_path / "four.npy", np.zeros((4, 8, 8), np.float32))  # .npy has no alpha: 4 bands
    np.save(tmp_path / "pair.npy", np.zeros((2, 8, 8), np.float32))  # a VV/VH pair: each band by the gray model
    four = rng.integers(0, 65536, (8, 8, 4), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "rgbn.tif", four, photometric="rgb", extrasamples=[0])  # RGB + near infrared
    tifffile.imwrite(tmp_path / "rgba.tif", four, photometric="rgb", extrasamples=[2])  # RGB + alpha
    tifffile.imwrite(tmp_path / "mono16.tif", np.repeat(np.rint(mono * 65535).astype(np.uint16), 3, axis=0)[:3]
                     .transpose(1, 2, 0), photometric="rgb")
    np.save(tmp_path / "mono.npy", np.rint(mono * 255).astype(np.uint8).transpose(1, 2, 0))
    three = rng.integers(0, 10000, (3, 8, 8)).astype(np.uint16)  # 3 bands not tagged RGB: a stack, not a photo
    tifffile.imwrite(tmp_path / "bands3.tif", three, photometric="minisblack", planarconfig="separate")
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).convert(
        "P", palette=Image.Palette.ADAPTIVE, colors=8).save(tmp_path / "palette.tif")  # read as its colours
    big = np.repeat(rng.integers(0, 256, (1, 1500, 1200), dtype=np.uint8), 3, axis=0)  # read at a reduced size
    Image.fromarray(big.transpose(1, 2, 0), "RGB").save(tmp_path / "big_mono.png")
    expected = {"photo.jpg": "image_color_real", "phone.avif": "image_color_real", "IMG_0001.HEIC": "image_color_real",
                "photo.jpeg": "image_color_real", "rgb8.png": "image_color", "rgba8.png": "image_color",
                "rgba8.webp": "image_color", "hwc.npy": "image_color", "gray.jpg": "image_gray",
                "print.jpg": "image_gray", "gray16.tif": "image_gray", "cube.npy": "multispectral",
                "mono.jpg": "image_gray", "mono.png": "image_gray", "near.png": "image_gray",
                "tinted.png": "image_color", "big_mono.png": "image_gray", "hwc8.npy": "multispectral",
                "four.npy": "multispectral", "pair.npy": "image_gray", "rgbn.tif": "multispectral",
                "rgba.tif": "image_color", "mono16.tif": "image_gray", "mono.npy": "image_gray",
                "bands3.tif": "multispectral", "palette.tif": "image_color"}
    assert set(expected) - {"IMG_0001.HEIC", "photo.jpeg", "gray.jpg", "print.jpg", "cube.npy", "mono.jpg",
                            "mono.png", "near.png", "tinted.png", "big_mono.png", "hwc8.npy", "four.npy", "pair.npy",
                            "rgbn.tif", "rgba.tif", "mono16.tif", "mono.npy", "bands3.tif",
                            "palette.tif"} <= set(kinds)
    for name, model in expected.items():
        assert den_mod._default_image_model(tmp_path / name, None)[1] == model, name
    assert den_mod._default_image_model(tmp_path / "cube.npy", "image") == ("image", "image_gray")  # --modality image
    assert den_mod._default_image_model(tmp_path / "bands3.tif", "image") == ("image", "image_gray")


def test_cli_missing_bundled_model_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(xmodal.pretrained, "_HERE", tmp_path / "empty")
    write_images(tmp_path / "in")
    assert main([str(tmp_path / "in" / "gray8.png"), "-o", str(tmp_path / "out"), "--quiet"]) == 2
    assert re.search(r"gray8.png: needs the bundled 'image_gray' model, which cannot be loaded: bundled model "
                     r"'image_gray' is not installed", capsys.readouterr().err)
    assert not (tmp_path / "out").exists()  # made for the outputs, removed when none came


def make_bad_images(folder: Path) -> dict[str, str]:
    """Broken image inputs; returns file name -> expected reason (a regex)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    (folder / "text.jpg").write_text("not an image\n" * 20)
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8), "L").save(folder / "full.png")
    data = (folder / "full.png").read_bytes()
    (folder / "full.png").unlink()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    np.save(folder / "bool.npy", np.zeros((8, 8), bool))
    np.save(folder / "complex.npy", np.zeros((8, 8), np.complex64))
    np.save(folder / "empty.npy", np.zeros((0, 5), np.float32))
    np.save(folder / "fourd.npy", np.zeros((2, 2, 8, 8), np.float32))
    nan = rng.random((8, 8)).astype(np.float32)
    nan[3, 3] = np.nan
    tifffile.imwrite(folder / "nan.tif", nan)
    tifffile.imwrite(folder / "int64.tif", np.zeros((8, 8), np.int64))
    return {
        "corrupt.png": r"not readable as PNG, JPEG, BMP, WebP or AVIF \(",
        "text.jpg": r"not readable as PNG, JPEG, BMP, WebP or AVIF \(",
        "truncated.png": r"not readable as PNG, JPEG, BMP, WebP or AVIF \(",
        "bool.npy": r"unsupported dtype bool",
        "complex.npy": r"unsupported dtype complex64",
        "empty.npy": r"empty array of shape \(0, 5\)",
        "fourd.npy": r"expected 2 or 3 dims",
        "nan.tif": r"float data contains NaN or infinite values",
        "int64.tif": r"unsupported dtype int64",
    }


@pytest.mark.parametrize("with_model", [True, False])
def test_cli_bad_images_reported_batch_continues(runs: dict[str, Path], bundled: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture, with_model: bool) -> None:
    bad = make_bad_images(tmp_path / "in")
    write_images(tmp_path / "good")
    shutil.copy(tmp_path / "good" / "gray8.png", tmp_path / "in" / "good.png")
    scene = write_band_folder(tmp_path / "scene", 3)
    tifffile.imwrite(scene / "B4.tif", np.zeros((10, 10), np.uint16))  # a band of another size
    out = tmp_path / "out"
    model = ["--model", str(runs["gray"])] if with_model else []
    assert main([str(tmp_path / "in"), str(tmp_path / "missing.png"), "-o", str(out), "--quiet", *model]) == 1
    err = capsys.readouterr().err
    for name, reason in bad.items():
        assert any(name in line and re.search(reason, line) for line in err.splitlines()), (name, err)
    assert "missing.png: file not found" in err
    assert os.listdir(out) == ["good.png"]  # no partial or hidden temp files
    assert main([str(scene), "-o", str(tmp_path / "out2"), "--modality", "multispectral", "--quiet"]) == 1
    assert re.search(r"B4.tif: shape \(10, 10\) differs from .*B1.tif: \(23, 19\); all bands must have the same size",
                     capsys.readouterr().err)
    assert not (tmp_path / "out2").exists()  # nothing written: no folder left behind


def test_cli_overwrite_rules(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_images(tmp_path / "in")
    src = tmp_path / "in" / "gray16.tif"
    before = src.read_bytes()
    base = ["-o", str(tmp_path / "out"), "--model", str(runs["gray"]), "--quiet"]
    assert main([str(src)] + base) == 0
    assert main([str(src)] + base) == 1
    assert "gray16.tif: output file already exists (pass --overwrite)\n" in capsys.readouterr().err
    assert main([str(src), "--overwrite"] + base) == 0
    assert main([str(src), "-o", str(tmp_path / "in"), "--model", str(runs["gray"]), "--quiet", "--overwrite"]) == 1
    assert "would overwrite the input file" in capsys.readouterr().err
    assert src.read_bytes() == before
    # a stack folder: its output folder would be the input folder
    scene = write_band_folder(tmp_path / "scene", 2)
    argv = [str(scene), "-o", str(tmp_path), "--model", str(runs["stack"]), "--quiet", "--overwrite"]
    assert main(argv) == 1
    assert "would overwrite the input folder" in capsys.readouterr().err
    argv = [str(scene), "-o", str(tmp_path / "s"), "--model", str(runs["stack"]), "--quiet"]
    assert main(argv) == 0 and main(argv) == 1
    assert "scene: output folder already exists" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0


def test_cli_format_changes_the_output_extension_per_kind(bundled: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "in"
    write_images(folder)
    sf.write(folder / "talk.wav", 0.1 * np.sin(np.arange(4000) / 5.0), 16000, subtype="PCM_24")
    tifffile.imwrite(folder / "cube.tif", np.zeros((6, 16, 16), np.uint16) + 7, photometric="minisblack",
                     planarconfig="separate")
    scene = write_band_folder(tmp_path / "scene", 3)
    out = tmp_path / "out"
    files = [str(folder / n) for n in ("photo.jpg", "gray8.bmp", "hwc.npy", "cube.tif", "talk.wav")]
    argv = [*files, "-o", str(out), "--quiet", "--tile", "24", "--overlap", "8"]
    assert main(argv + ["--format", "png", "--format", ".FLAC"]) == 1  # cube.tif: 6 bands do not fit a PNG
    err = capsys.readouterr().err
    assert re.search(r"cube.png: a stack is written to a .tif/.tiff/.npy/.mat/.hdr/.nii/.nii.gz file or a folder "
                     r"\(no extension\), got '.png'", err), err
    assert sorted(os.listdir(out)) == ["gray8.png", "hwc.png", "photo.png", "talk.flac"]
    for name, like in (("photo.png", "photo.jpg"), ("gray8.png", "gray8.bmp"), ("hwc.png", "hwc.npy")):
        image, info = read_image(out / name)
        src, src_info = read_image(folder / like)
        assert (info.format, info.dtype, image.shape) == ("png", src_info.dtype, src.shape), name
    assert (sf.info(str(out / "talk.flac")).format, sf.info(str(out / "talk.flac")).subtype) == ("FLAC", "PCM_24")
    assert main([*files[3:4], str(scene), "-o", str(out), "--quiet", "--modality", "multispectral",
                 "--format", "npy"]) == 0  # a stack file takes the image format; a folder keeps its name
    assert np.load(out / "cube.npy").shape == (6, 16, 16) and sorted(os.listdir(out / "scene")) == \
        ["B1.tif", "B2.tif", "B3.tif"]
    # two inputs that --format sends to one output: the second is refused, the first written
    shutil.copy(folder / "gray8.png", folder / "photo.png")
    assert main([str(folder / "photo.jpg"), str(folder / "photo.png"), "-o", str(tmp_path / "o2"), "--quiet",
                 "--format", "tif"]) == 1
    assert "photo.png: its output " in capsys.readouterr().err and os.listdir(tmp_path / "o2") == ["photo.tif"]


@pytest.mark.parametrize("formats, message", [
    (["gif"], r"--format gif: unknown extension \(audio: \.wav, .*; images and stacks: \.png, .*; video: \.mp4, .*\)"),
    (["png", "tif"], r"--format tif: image outputs are already \.png \(one --format per kind\)"),
    (["wav", "FLAC"], r"--format FLAC: audio outputs are already \.wav"),
])
def test_cli_format_errors(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture,
                           formats: list[str], message: str) -> None:
    write_images(tmp_path / "in")
    argv = [str(tmp_path / "in" / "gray8.png"), "-o", str(tmp_path / "out"), "--model", str(runs["gray"])]
    assert main(argv + [a for f in formats for a in ("--format", f)]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_cli_model_of_the_wrong_modality(runs: dict[str, Path], run_dir: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    write_images(tmp_path / "in")
    wav = tmp_path / "in" / "x.wav"
    sf.write(wav, np.zeros(1600), 16000)
    png = tmp_path / "in" / "gray8.png"
    out = tmp_path / "out"
    assert main([str(wav), str(png), "-o", str(out), "--model", str(runs["gray"]), "--quiet"]) == 1
    assert re.search(r"x.wav: the model is an image model; this is an audio file \(use a speech model",
                     capsys.readouterr().err)
    assert os.listdir(out) == ["gray8.png"]
    assert main([str(png), "-o", str(tmp_path / "o2"), "--model", str(run_dir), "--quiet"]) == 1
    assert re.search(r"gray8.png: the model is a speech model; this is an image file \(use an image or multispectral",
                     capsys.readouterr().err)
    assert main([str(png), "-o", str(tmp_path / "o3"), "--model", str(runs["stack"]), "--quiet"]) == 1
    assert re.search(r"gray8.png: the model is a multispectral model; a stack must be a "
                     r".tif/.tiff/.npy/.mat/.hdr/.nii/.nii.gz file or a folder of single-band TIFFs, got '.png'",
                     capsys.readouterr().err)
    assert main([str(wav), "-o", str(tmp_path / "o4"), "--modality", "image", "--quiet"]) == 1
    assert "x.wav: --modality image was given; this is an audio file" in capsys.readouterr().err
    assert main([str(png), "-o", str(tmp_path / "o5"), "--model", str(run_dir), "--modality", "image"]) == 2
    assert "--modality image does not match the model" in capsys.readouterr().err


def test_cli_usage_errors(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_images(tmp_path / "in")
    png = str(tmp_path / "in" / "gray8.png")
    assert main([png, "-o", str(tmp_path / "o"), "--model", str(runs["gray"]), "--tile", "16", "--overlap", "8"]) == 2
    assert "--tile (16) must exceed 2 * --overlap (16)" in capsys.readouterr().err
    assert main([png, "-o", str(tmp_path / "o"), "--modality", "radar"]) == 2
    assert "invalid choice: 'radar'" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "-o", str(tmp_path / "o"), "--model", str(runs["gray"]), "--quiet"]) == 1
    assert re.search(r"empty: no image files \(.png, .jpg", capsys.readouterr().err)


def test_cli_sigma_of_non_blind_and_blind_models(runs: dict[str, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    write_images(tmp_path / "in")
    png = str(tmp_path / "in" / "gray8.png")
    image = read_image(png)[0]
    base = ["-o", str(tmp_path / "out"), "--model", str(runs["nonblind"]), "--quiet"]
    assert main([png, "--sigma", "none"] + base) == 1
    assert "gray8.png: this model is non-blind" in capsys.readouterr().err
    assert main([png, "--sigma", "0.1"] + base) == 0
    assert os.listdir(tmp_path / "out") == ["gray8.png"]
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "gray8.png")[0],
                                  np.round(np.clip(load(runs["nonblind"]).denoise(image, sigma=0.1), 0, 1) * 255) / 255)
    assert main([png, "--overwrite"] + base) == 0  # --sigma auto by default
    auto = read_image(tmp_path / "out" / "gray8.png")[0]
    level = float(estimate_sigma(image)[0])
    expected = np.clip(load(runs["nonblind"]).denoise(image, sigma=level), 0, 1)
    assert np.abs(auto - expected).max() <= 0.5 / 255 + 1e-6  # the same level, up to the 8-bit rounding
    for bad in ("loud", "-1", "nan", "inf"):  # usage errors: nothing is denoised
        assert main([png, "--sigma", bad, "--overwrite"] + base) == 2
        assert f"--sigma: expected a number >= 0 (0.098 for 25/255), 'auto' or 'none', got '{bad}'" in \
            capsys.readouterr().err
    assert main([png, "--sigma", "25", "--overwrite"] + base) == 1  # 25 meant as 25/255: named, nothing written
    assert "gray8.png: `sigma` (25) is above the whole range of the data (1 in its units)" in capsys.readouterr().err
    # a blind model: 'auto' by default (its range check), 'none' = the image as it is
    gray = load(runs["gray"])
    with pytest.raises(TypeError, match=r"gray8.png: Expected `sigma` to be a float or 'auto' for this blind model"):
        gray.denoise_file(png, tmp_path / "bad.png", sigma=np.zeros(image.shape[1:], np.float32))
    assert not (tmp_path / "bad.png").exists()
    base[3] = str(runs["gray"])
    for flag, sigma in (([], "auto"), (["--sigma", "none"], None), (["--sigma", "0.3"], 0.3)):
        assert main([png, "--overwrite"] + flag + base) == 0
        np.testing.assert_array_equal(read_image(tmp_path / "out" / "gray8.png")[0],
                                      np.round(np.clip(gray.denoise(image, sigma=sigma), 0, 1) * 255) / 255)


def test_precision_bf16_close_to_fp32_and_errors(tmp_path):
    """bf16 autocast changes the output by a small fraction of the predicted noise; bad precisions are refused."""
    from xmodal.checkpoint import save_weights
    from xmodal.config import dump_config, load_config
    from xmodal.denoise import ImageDenoiser, load
    from xmodal.models import build_model
    from xmodal.modalities import modality_io

    cfg = load_config("recipes/tiny_image.yaml")
    torch.manual_seed(0)
    model = build_model(cfg.model, {"image": modality_io("image", cfg)})
    save_weights(model, tmp_path / "model.safetensors", cfg)
    dump_config(cfg, tmp_path / "config.yaml")
    image = np.random.default_rng(0).random((1, 40, 37)).astype(np.float32)
    a = load(tmp_path).denoise(image)
    b = load(tmp_path, precision="bf16").denoise(image)
    assert load(tmp_path).precision == "fp32" and load(tmp_path, precision="bf16").precision == "bf16"
    assert load(tmp_path, precision="auto").precision in ("fp32", "bf16")
    assert b.shape == a.shape and b.dtype == np.float32
    assert 0 < np.abs(a - b).max() < 0.02 * np.abs(a - image).max()  # bf16: 8-bit mantissa
    with pytest.raises(ValueError, match=r"`precision` must be 'fp32', 'bf16' or 'auto', got 'fp16'"):
        load(tmp_path, precision="fp16")
    with pytest.raises(ValueError, match=r"`precision` must be 'fp32', 'bf16' or 'auto', got 'half'"):
        ImageDenoiser(model, cfg, precision="half")


def test_self_ensemble_is_the_mean_over_the_eight_flips_and_rotations(tmp_path):
    from xmodal.checkpoint import save_weights
    from xmodal.config import dump_config, load_config
    from xmodal.denoise import load
    from xmodal.models import build_model
    from xmodal.modalities import modality_io

    cfg = load_config("recipes/tiny_image.yaml")
    torch.manual_seed(1)
    save_weights(build_model(cfg.model, {"image": modality_io("image", cfg)}), tmp_path / "model.safetensors", cfg)
    dump_config(cfg, tmp_path / "config.yaml")
    den = load(tmp_path)
    image = torch.rand(2, 1, 24, 37)  # not square: rotations swap H and W
    expected = torch.zeros_like(image)
    for k in range(4):
        for flip in (False, True):
            t = torch.rot90(image, k, dims=(-2, -1))
            t = t.flip(-1) if flip else t
            out = den.denoise(t)
            out = out.flip(-1) if flip else out
            expected += torch.rot90(out, -k, dims=(-2, -1))
    got = den.denoise(image, ensemble=True)
    assert got.shape == image.shape
    assert torch.allclose(got, expected / 8, atol=1e-6)
    assert not torch.allclose(got, den.denoise(image), atol=1e-4)  # an untrained net is not flip-equivariant
    # through a file and the CLI flag
    from xmodal.denoise import main
    from xmodal.imageio import read_image, write_image

    write_image(tmp_path / "in.png", image[0].numpy(), "uint8")
    assert main([str(tmp_path / "in.png"), "-o", str(tmp_path / "out"), "--model", str(tmp_path), "--ensemble",
                 "--quiet"]) == 0
    out, info = read_image(tmp_path / "out" / "in.png")
    ref = den.denoise(read_image(tmp_path / "in.png")[0], ensemble=True, sigma="auto")  # the CLI's default sigma
    assert info.dtype == "uint8" and np.abs(out - np.clip(np.round(ref * 255) / 255, 0, 1)).max() <= 1 / 255 + 1e-6


def test_subsample_denoises_the_sub_images_of_every_other_pixel(color: ImageDenoiser, runs: dict[str, Path],
                                                                  tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    """``subsample=2`` = the model on each of the 4 sub-images of every other pixel, interleaved back (also with
    tiles and the self-ensemble); the file API and ``--subsample`` write the same; bad values are clear errors."""
    x = torch.from_numpy(rand(3, 34, 27))  # odd width: the last column is repeated, then cropped
    padded = torch.nn.functional.pad(x[None], (0, 1, 0, 0), mode="replicate")[0]

    def interleaved(**kwargs: object) -> torch.Tensor:  # the model on each sub-image, put back in place
        out = torch.empty_like(padded)
        for i in range(2):
            for j in range(2):
                out[:, i::2, j::2] = color.denoise(padded[:, i::2, j::2], **kwargs)
        return out[..., :x.shape[-1]]

    y = color.denoise(x, subsample=2)
    assert y.shape == x.shape
    torch.testing.assert_close(y, interleaved(), atol=1e-6, rtol=0)
    assert not torch.allclose(y, color.denoise(x), atol=1e-3)
    torch.testing.assert_close(color.denoise(x, subsample=2, tile=16, overlap=4), interleaved(tile=16, overlap=4),
                               atol=1e-6, rtol=0)  # the sub-images are tiled
    ens = color.denoise(x, subsample=2, ensemble=True)
    expected = sum(torch.rot90(color.denoise(torch.rot90(x, k, (-2, -1)), subsample=2), -k, (-2, -1))
                   for k in range(4))
    flipped = sum(torch.rot90(color.denoise(torch.rot90(x, k, (-2, -1)).flip(-1), subsample=2).flip(-1), -k, (-2, -1))
                  for k in range(4))
    torch.testing.assert_close(ens, (expected + flipped) / 8, atol=1e-6, rtol=0)
    # the file API and the command line
    Image.fromarray(np.rint(x.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(tmp_path / "p.png")
    color.denoise_file(tmp_path / "p.png", tmp_path / "ref.png", subsample=2, sigma="auto")  # the CLI's default
    argv = [str(tmp_path / "p.png"), "-o", str(tmp_path / "out"), "--model", str(runs["color"]), "--quiet"]
    assert main(argv + ["--subsample", "2"]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "p.png")),
                                  np.asarray(Image.open(tmp_path / "ref.png")))
    assert main(argv + ["--overwrite", "--subsample", "0"]) == 2
    assert "--subsample must be an integer >= 1, got 0" in capsys.readouterr().err
    assert main(argv + ["--overwrite", "--subsample", "40"]) == 1  # larger than the 34 x 27 image: that file fails
    assert f"{tmp_path / 'p.png'}: `subsample` (40) must be at most the image's smaller side (27 pixels)" in \
        capsys.readouterr().err
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match=rf"`subsample` must be an integer >= 1, got {bad}"):
            color.denoise(x, subsample=bad)


def test_heic_photos_are_denoised_into_heic_at_their_depth(runs: dict[str, Path], tmp_path: Path) -> None:
    """A phone's HEIC photo (8-bit, or 10-bit HDR) comes out as HEIC at its bit depth with its EXIF, upright (a
    rotated photo is turned once); --format converts it."""
    import pillow_heif as heif  # a [dev] dependency: a missing install fails here, not skips
    from xmodal.imageio import read_image

    exif = Image.Exif()
    exif[0x0112] = 6
    y, x = np.mgrid[0:40, 0:56]
    rgb = np.stack([x * 4, y * 5, (x + y) * 2], -1).astype(np.uint8)
    heif.from_bytes("RGB", (56, 40), rgb.tobytes()).save(tmp_path / "IMG_1.heic", quality=95, exif=exif.tobytes())
    deep = (rgb.astype(np.uint16) * 4) << 6  # 10-bit levels
    heif.from_bytes("RGB;16", (56, 40), deep.astype("<u2").tobytes()).save(tmp_path / "IMG_2.heic", quality=95)
    out = tmp_path / "out"
    assert main([str(tmp_path / "IMG_1.heic"), str(tmp_path / "IMG_2.heic"), "-o", str(out), "--model",
                 str(runs["color"]), "--quiet"]) == 0
    for name, dtype, depth in (("IMG_1.heic", "uint8", 8), ("IMG_2.heic", "uint16", 10)):
        image, info = read_image(out / name)
        src = read_image(tmp_path / name)[0]
        assert (info.format, info.dtype, dict(info.metadata)["heif_bit_depth"], image.shape) == \
            ("heif", dtype, depth, src.shape)
        assert not np.allclose(image, src, atol=1e-3)  # it went through the model
    exif_back = Image.Exif()
    exif_back.load(dict(read_image(out / "IMG_1.heic")[1].metadata)["exif"])
    assert exif_back.get(0x0112) == 1 and read_image(out / "IMG_1.heic")[0].shape == (3, 56, 40)  # upright, once
    assert main([str(tmp_path / "IMG_2.heic"), "-o", str(tmp_path / "png"), "--model", str(runs["color"]),
                 "--format", "png", "--quiet"]) == 0
    assert read_image(tmp_path / "png" / "IMG_2.png")[1].dtype == "uint16"  # 10 bits kept as 16-bit PNG


def test_cli_matlab_and_envi_stacks(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A .mat array named after its file (``pair.mat:input``) and an ENVI raster: denoised as stacks, written back
    in their own format with everything else of the source kept; every refusal names the file."""
    import scipy.io as sio
    envi = pytest.importorskip("spectral.io.envi")

    rng = np.random.default_rng(0)
    gt = rng.random((20, 18, 7)).astype(np.float32)
    sio.savemat(tmp_path / "pair.mat", {"gt": gt, "input": gt + 0.05 * rng.standard_normal(gt.shape, np.float32)})
    cube = rng.integers(-500, 4000, (20, 18, 7)).astype(np.int16)
    envi.save_image(str(tmp_path / "scene.hdr"), cube, interleave="bil", ext=".img",
                    metadata={"wavelength": [1] * 7})
    out, pair = tmp_path / "out", f"{tmp_path / 'pair.mat'}:input"
    argv = [pair, str(tmp_path / "scene.hdr"), "-o", str(out), "--model", str(runs["stack"]), "--quiet"]
    assert main(argv) == 0
    assert sorted(os.listdir(out)) == ["pair.mat", "scene.hdr", "scene.img"]
    den = load(runs["stack"])
    stack, info = read_stack(pair, "band_minmax")
    expected = den.denoise(stack) * np.array(info.scale, np.float32)[:, None, None] \
        + np.array(info.offset, np.float32)[:, None, None]  # file units, (S, H, W)
    result = sio.loadmat(out / "pair.mat")
    np.testing.assert_array_equal(result["gt"], gt)  # the other array is kept
    np.testing.assert_allclose(result["input"], expected.transpose(1, 2, 0), atol=1e-5)
    denoised = envi.open(str(out / "scene.hdr"))
    assert denoised.metadata["interleave"] == "bil" and denoised.metadata["wavelength"] == ["1"] * 7
    assert np.dtype(denoised.dtype) == np.int16  # the file's type (spectral's load() gives float32)
    # refusals: the output exists (header, or the data file alone), several arrays unnamed, an image model
    assert main(argv) == 1
    assert "scene.hdr: output file already exists (pass --overwrite" in capsys.readouterr().err
    (out / "scene.hdr").unlink()
    assert main(argv[1:]) == 1
    assert f"{out / 'scene.img'}: output file already exists (pass --overwrite" in capsys.readouterr().err
    assert main([*argv[1:], "--overwrite"]) == 0 and (out / "scene.hdr").is_file()
    assert main([str(tmp_path / "pair.mat"), "-o", str(tmp_path / "o2"), *argv[4:]]) == 1
    assert "pair.mat: holds several arrays that could be the stack (gt 20x18x7 single, input 20x18x7 single); " \
           f"name one: {tmp_path / 'pair.mat'}:gt" in capsys.readouterr().err
    assert main([pair, "-o", str(tmp_path / "o3"), "--model", str(runs["gray"]), "--quiet"]) == 1
    assert f"{pair}: the model is an image model; a .mat, ENVI or NIfTI file is read as a band stack (use a " \
           "multispectral model" in capsys.readouterr().err
    assert main([pair, "-o", str(tmp_path / "o5"), "--modality", "speech", "--quiet"]) == 1
    assert f"{pair}: --modality speech was given; this is a multispectral stack (use an image or multispectral " \
           "model)" in capsys.readouterr().err
    assert main([pair, "-o", str(tmp_path), *argv[4:]]) == 1  # into the input's own folder: its own file
    assert "would overwrite the input file" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()  # no output: no folder left behind
    (tmp_path / "kept").mkdir()
    assert main([str(tmp_path / "pair.mat"), "-o", str(tmp_path / "kept"), *argv[4:]]) == 1
    assert (tmp_path / "kept").is_dir()  # a folder that was there stays
    np.testing.assert_array_equal(sio.loadmat(tmp_path / "pair.mat")["gt"], gt)
    # --format converts: the .mat array into a new ENVI raster (float32, BSQ; header of its own)
    assert main([pair, "-o", str(tmp_path / "o4"), "--format", "hdr", *argv[4:]]) == 0
    assert sorted(os.listdir(tmp_path / "o4")) == ["pair.hdr", "pair.img"]
    np.testing.assert_allclose(np.asarray(envi.open(str(tmp_path / "o4" / "pair.hdr")).load()), result["input"],
                               atol=1e-5)


def test_stack_container_problems_are_found_before_any_work(stack_den: StackDenoiser, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """An ambiguous .mat is named before the output question, and an output that cannot hold the bands (int8 into
    ENVI) before the denoising: nothing runs, nothing is written."""
    import scipy.io as sio

    rng = np.random.default_rng(0)
    sio.savemat(tmp_path / "two.mat", {"a": rng.random((20, 18, 7)), "b": rng.random((20, 18, 7))})
    sio.savemat(tmp_path / "i8.mat", {"x": rng.integers(-100, 100, (20, 18, 7)).astype(np.int8)})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "two.mat").write_bytes(b"existing")

    def fail(*args, **kwargs):
        raise AssertionError("the network ran")

    monkeypatch.setattr(stack_den, "denoise", fail)
    with pytest.raises(ImageReadError, match=r"two.mat: holds several arrays that could be the stack"):
        stack_den.denoise_file(tmp_path / "two.mat", tmp_path / "out" / "two.mat")  # exists, but that comes second
    with pytest.raises(ValueError, match=r"i8.hdr: an ENVI stack holds uint8, int16, uint16, float32, float64 bands, "
                                         r"not int8; write a .tif, .npy or .mat file instead"):
        stack_den.denoise_file(tmp_path / "i8.mat", tmp_path / "out" / "i8.hdr", scaling="band_minmax")
    assert sorted(os.listdir(tmp_path / "out")) == ["two.mat"]


def test_cli_nifti_volumes(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """NIfTI volumes are stacks of slices: no bundled model is offered for them (none is trained on MRI), a model
    given denoises them with the header kept byte for byte; --format converts without doubling the extension."""
    import gzip

    nib = pytest.importorskip("nibabel")
    from xmodal.evaluate import main as evaluate_main

    rng = np.random.default_rng(0)
    clean = (rng.random((24, 20, 6)) * 800).astype(np.int16)  # (X, Y, Z)
    noisy = np.clip(clean + rng.normal(0, 40, clean.shape), -32768, 32767).astype(np.int16)
    for name, volume in (("clean.nii.gz", clean), ("brain.nii.gz", noisy)):
        img = nib.Nifti1Image(volume, np.diag([0.9, 0.9, 3.0, 1.0]))
        img.header["descrip"] = b"volume"
        nib.save(img, str(tmp_path / name))
    src, out = tmp_path / "brain.nii.gz", tmp_path / "out"
    assert main([str(src), "-o", str(out), "--quiet"]) == 1
    assert f"{src}: no bundled model is trained on medical volumes (MRI magnitude noise is Rician" in \
        capsys.readouterr().err
    assert main([str(src), "-o", str(out), "--modality", "multispectral", "--quiet"]) == 1  # a modality is no model
    assert f"{src}: no bundled model is trained on medical volumes" in capsys.readouterr().err
    assert main([str(src), "-o", str(out), "--model", str(runs["stack"]), "--quiet"]) == 0
    assert os.listdir(out) == ["brain.nii.gz"]
    offset = nib.load(str(src)).dataobj.offset
    assert gzip.open(out / "brain.nii.gz").read()[:offset] == gzip.open(src).read()[:offset]
    den = load(runs["stack"])
    stack, info = read_stack(src, "band_minmax")
    expected = den.denoise(stack, sigma="auto") * np.array(info.scale, np.float32)[:, None, None] \
        + np.array(info.offset, np.float32)[:, None, None]  # (Z, X, Y) file units; --sigma auto is the default
    got = np.asanyarray(nib.load(str(out / "brain.nii.gz")).dataobj.get_unscaled())  # (X, Y, Z) int16
    np.testing.assert_allclose(got, np.clip(np.rint(expected), -32768, 32767).transpose(1, 2, 0), atol=1)
    assert main([str(src), "-o", str(tmp_path / "plain"), "--model", str(runs["stack"]), "--format", "nii",
                 "--quiet"]) == 0
    assert os.listdir(tmp_path / "plain") == ["brain.nii"]
    assert evaluate_main(["--clean", str(tmp_path / "clean.nii.gz"), "--noisy", str(src), "--enhanced",
                          str(out / "brain.nii.gz"), "--quiet"]) == 0
    assert "clean " in capsys.readouterr().out  # the stack's name, without .nii.gz
    # a folder of volumes with a multispectral model: each volume on its own (not one stack of band TIFFs)
    (tmp_path / "scans").mkdir()
    for name in ("a.nii.gz", "b.nii"):
        shutil.copy(src, tmp_path / "scans" / "tmp.nii.gz")
        nib.save(nib.load(str(tmp_path / "scans" / "tmp.nii.gz")), str(tmp_path / "scans" / name))
        (tmp_path / "scans" / "tmp.nii.gz").unlink()
    assert main([str(tmp_path / "scans"), "-o", str(tmp_path / "scans_out"), "--model", str(runs["stack"]),
                 "--quiet"]) == 0
    assert sorted(os.listdir(tmp_path / "scans_out")) == ["a.nii.gz", "b.nii"]
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "-o", str(tmp_path / "o6"), "--model", str(runs["stack"]), "--quiet"]) == 1
    assert "empty: holds no band TIFFs (one stack) and no stack files (.npy, .mat, .hdr, .nii, .nii.gz)" in \
        capsys.readouterr().err


def test_evaluate_scores_nifti_physical_values(tmp_path: Path) -> None:
    """Two volumes holding the same physical values with different scl_slope/scl_inter score as identical; with
    empty slices, stack_minmax (one scale for the volume) keeps them from dominating the scores."""
    import struct

    nib = pytest.importorskip("nibabel")
    from xmodal.evaluate import evaluate_stacks

    rng = np.random.default_rng(1)
    clean = rng.integers(100, 900, (24, 20, 6)).astype(np.int16)
    clean[:, :, 0] = 0  # an empty edge slice
    noisy = np.clip(clean + rng.normal(0, 30, clean.shape), 0, 32767).astype(np.int16)
    noisy[:, :, 0] = np.clip(rng.normal(0, 30, (24, 20)), 0, None).astype(np.int16)

    def save(name: str, stored: np.ndarray, slope: float = 1.0, inter: float = 0.0) -> Path:
        raw = nib.Nifti1Image(stored, np.eye(4)).to_bytes()
        (tmp_path / name).write_bytes(raw[:112] + struct.pack("<ff", slope, inter) + raw[120:])
        return tmp_path / name

    a, n = save("clean.nii", clean), save("noisy.nii", noisy)
    same = save("same.nii", (clean - 100).astype(np.int16), 1.0, 100.0)  # the same physical values, stored offset
    result = evaluate_stacks(a, n, same)
    assert result["files"][0]["enhanced"]["psnr"] == math.inf and result["files"][0]["enhanced"]["sam"] < 1e-6
    band = evaluate_stacks(a, n, n)["files"][0]["noisy"]["psnr"]
    whole = evaluate_stacks(a, n, n, scaling="stack_minmax")["files"][0]["noisy"]
    span = float(clean.max()) - float(clean.min())
    expected = 10 * np.log10(span ** 2 / ((noisy.astype(np.float64) - clean) ** 2).mean())
    assert whole["psnr"] == pytest.approx(expected, abs=1e-6)
    assert band < whole["psnr"] - 10  # the empty slice's scale of 1 (stored units) dominates per-slice scaling
