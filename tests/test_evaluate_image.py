"""xmodal.evaluate for images and multispectral stacks: PSNR/SSIM/SAM against skimage, pytorch-msssim and numpy;
shared stack scaling; JSON; comparison figures; the --model path with a fake denoiser; every error message."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import tifffile
import torch
from PIL import Image
from pytorch_msssim import ssim as ms_ssim
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import xmodal
import xmodal.denoise
from xmodal.evaluate import (detect_modality, evaluate_images, evaluate_images_no_reference, evaluate_stacks, main,
                             match_image_files, save_image_comparison, save_stack_comparison)
from xmodal.imageio import ImageReadError, read_image, write_image
from xmodal.metrics import SSIM_IMPLEMENTATION
from xmodal.noise import estimate_sigma

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
H, W = 29, 33  # odd, >= 11 (the SSIM window), <= 64


def smooth(channels: int, rng: np.random.Generator, h: int = H, w: int = W) -> np.ndarray:
    """``(C, H, W)`` float64 in [0.1, 0.9]: gradients and sines, so SSIM has structure to compare."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    out = [0.5 + 0.25 * np.sin(2 * np.pi * (x * (c + 1) + y * rng.uniform(0.5, 2))) + 0.15 * (x - y)
           for c in range(channels)]
    return np.clip(np.stack(out), 0.1, 0.9)


def noisy_version(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(clean + sigma * rng.standard_normal(clean.shape), 0.0, 1.0)


def write_png8(path: Path, image: np.ndarray) -> np.ndarray:
    """Write ``(C, H, W)`` [0, 1] as 8-bit PNG; return the [0, 1] values actually stored."""
    q = np.rint(image * 255).astype(np.uint8)
    Image.fromarray(q[0] if q.shape[0] == 1 else q.transpose(1, 2, 0)).save(path)
    return q.astype(np.float64) / 255


def write_png16(path: Path, image: np.ndarray) -> np.ndarray:
    """Write ``(1, H, W)`` [0, 1] as 16-bit gray PNG; return the stored values in [0, 1]."""
    q = np.rint(image[0] * 65535).astype(np.uint16)
    Image.fromarray(q).save(path)
    return q[None].astype(np.float64) / 65535


def write_tif16(path: Path, image: np.ndarray) -> np.ndarray:
    """Write ``(C, H, W)`` [0, 1] as a 16-bit TIFF (one plane per channel); return the stored values in [0, 1]."""
    q = np.rint(image * 65535).astype(np.uint16)
    tifffile.imwrite(path, q, photometric="minisblack")
    return q.astype(np.float64) / 65535


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    """``clean/ noisy/ enhanced/`` with an 8-bit RGB PNG, a 16-bit gray PNG and a 16-bit 3-channel TIFF (the
    enhanced RGB image as an 8-bit TIFF, to pair by stem); and the stored values ``{stem: {row: (C, H, W)}}``."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for sub in ("clean", "noisy", "enhanced"):
        (root / sub).mkdir()
    values: dict[str, dict[str, np.ndarray]] = {}
    specs = {"rgb8": (3, write_png8, ".png"), "gray16": (1, write_png16, ".png"), "tif16": (3, write_tif16, ".tif")}
    for stem, (channels, writer, ext) in specs.items():
        clean = smooth(channels, rng)
        rows = {"clean": clean, "noisy": noisy_version(clean, 0.1, rng), "enhanced": noisy_version(clean, 0.03, rng)}
        values[stem] = {}
        for row, x in rows.items():
            if stem == "rgb8" and row == "enhanced":
                q = np.rint(x * 255).astype(np.uint8)
                tifffile.imwrite(root / row / "rgb8.tif", q.transpose(1, 2, 0), photometric="rgb")
                values[stem][row] = q.astype(np.float64) / 255
            else:
                values[stem][row] = writer(root / row / f"{stem}{ext}", x)
    return root, values


def ref_ssim(ref: np.ndarray, deg: np.ndarray, data_range: float = 1.0) -> float:
    return float(structural_similarity(ref, deg, data_range=data_range, channel_axis=0, gaussian_weights=True,
                                       sigma=1.5, use_sample_covariance=False))


def assert_png(path: Path, size: tuple[int, int] | None = None) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
        if size is not None:
            assert im.size == size


# -------------------------------------------------------------------------------------------------------- images


def test_image_scores_equal_skimage_and_pytorch_msssim(images: tuple[Path, dict]) -> None:
    root, values = images
    result = evaluate_images(root / "clean", root / "noisy", root / "enhanced")
    assert [f["name"] for f in result["files"]] == ["gray16", "rgb8", "tif16"]
    assert result["errors"] == [] and result["failures"] == [] and result["warnings"] == []
    for f in result["files"]:
        v = values[f["name"]]
        assert f["shape"] == list(v["clean"].shape)
        for row in ("noisy", "enhanced"):
            want_psnr = peak_signal_noise_ratio(v["clean"], v[row], data_range=1.0)
            assert f[row]["psnr"] == pytest.approx(want_psnr, abs=1e-4)
            assert f[row]["ssim"] == pytest.approx(ref_ssim(v["clean"], v[row]), abs=1e-4)
            direct = float(ms_ssim(torch.from_numpy(v["clean"])[None], torch.from_numpy(v[row])[None], data_range=1.0))
            assert f[row]["ssim"] == pytest.approx(direct, abs=1e-5)
        assert f["enhanced"]["psnr"] > f["noisy"]["psnr"] + 5
    assert result["files"][1]["files"] == {"clean": "rgb8.png", "noisy": "rgb8.png", "enhanced": "rgb8.tif"}
    assert result["files"][0]["dtype"] == "uint16" and result["files"][1]["dtype"] == "uint8"
    for row in ("noisy", "enhanced"):
        for m in ("psnr", "ssim"):
            assert result["mean"][row][m] == pytest.approx(np.mean([f[row][m] for f in result["files"]]), abs=1e-12)


def test_data_range_scales_psnr_and_ssim(images: tuple[Path, dict]) -> None:
    root, values = images
    result = evaluate_images(root / "clean", root / "noisy", root / "enhanced", data_range=2.0)
    assert result["data_range"] == 2.0
    for f in result["files"]:
        v = values[f["name"]]
        assert f["noisy"]["psnr"] == pytest.approx(peak_signal_noise_ratio(v["clean"], v["noisy"], data_range=2.0),
                                                   abs=1e-4)
        assert f["noisy"]["ssim"] == pytest.approx(ref_ssim(v["clean"], v["noisy"], 2.0), abs=1e-4)


def test_cli_images_table_json_and_figures(images: tuple[Path, dict], tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    root, _ = images
    argv = ["--clean", str(root / "clean"), "--noisy", str(root / "noisy"), "--enhanced", str(root / "enhanced"),
            "--json", str(tmp_path / "out" / "scores.json"), "--figures", str(tmp_path / "figs"),
            "--figure-files", "2", "--quiet"]
    assert main(argv) == 0  # --modality auto: a folder of images
    table = capsys.readouterr().out
    assert "PSNR" in table and "SSIM" in table and "rgb8" in table and "mean (3)" in table
    assert f"PSNR/SSIM data range: 1; SSIM: {SSIM_IMPLEMENTATION}" in table
    data = json.loads((tmp_path / "out" / "scores.json").read_text())
    direct = evaluate_images(root / "clean", root / "noisy", root / "enhanced")
    assert data["modality"] == "image" and data["ssim_implementation"] == SSIM_IMPLEMENTATION
    assert data["data_range"] == 1.0 and data["metrics"] == ["psnr", "ssim"]
    assert data["enhanced"] == str(root / "enhanced")
    assert data["files"] == direct["files"] and data["mean"] == direct["mean"]
    assert sorted(os.listdir(tmp_path / "figs")) == ["gray16.png", "rgb8.png"]  # the first two; no temp files left
    assert data["figures"] == [str(tmp_path / "figs" / n) for n in ("gray16.png", "rgb8.png")]
    for name in ("gray16.png", "rgb8.png"):
        assert_png(tmp_path / "figs" / name)
    assert os.listdir(tmp_path / "out") == ["scores.json"]


def test_identical_images_give_infinite_psnr(images: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = images
    result = evaluate_images(root / "clean", root / "noisy", root / "clean")
    assert all(f["enhanced"]["psnr"] == math.inf and f["enhanced"]["ssim"] == pytest.approx(1.0)
               for f in result["files"])
    assert result["mean"]["enhanced"]["psnr"] == math.inf


def test_small_images_list_the_ssim_failure(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for sub in ("clean", "noisy", "enh"):
        (tmp_path / sub).mkdir()
    clean = smooth(1, rng, 8, 9)
    c = write_png8(tmp_path / "clean" / "tiny.png", clean)
    n = write_png8(tmp_path / "noisy" / "tiny.png", noisy_version(clean, 0.1, rng))
    write_png8(tmp_path / "enh" / "tiny.png", clean)
    result = evaluate_images(tmp_path / "clean", tmp_path / "noisy", tmp_path / "enh")
    assert result["files"][0]["noisy"] == {"psnr": pytest.approx(peak_signal_noise_ratio(c, n, data_range=1.0))}
    assert result["mean"]["noisy"]["ssim"] is None
    assert {(x["row"], x["metric"], x["file"]) for x in result["failures"]} == {("noisy", "ssim", "tiny"),
                                                                               ("enhanced", "ssim", "tiny")}
    assert "ssim: images must be at least 11 x 11 (the window), got (8, 9)" in result["failures"][0]["reason"]


def test_float_images_outside_the_data_range_warn(tmp_path: Path) -> None:
    for sub in ("clean", "noisy", "enh"):
        (tmp_path / sub).mkdir()
    clean = np.linspace(0.5, 3.5, H * W, dtype=np.float32).reshape(H, W)
    for sub in ("clean", "noisy", "enh"):
        np.save(tmp_path / sub / "f.npy", clean)
    result = evaluate_images(tmp_path / "clean", tmp_path / "noisy", tmp_path / "enh")
    assert len(result["warnings"]) == 1
    assert "f.npy: values span [0.5, 3.5], outside the data range [0, 1] used by PSNR and SSIM" in \
        result["warnings"][0]
    assert not evaluate_images(tmp_path / "clean", tmp_path / "noisy", tmp_path / "enh", data_range=3.5)["warnings"]


class FakeDenoiser:
    """Stands in for an ImageDenoiser / StackDenoiser: a 3 x 3 box blur, recording its inputs."""

    def __init__(self, modality: str, name: str = "fake") -> None:
        self.config = SimpleNamespace(modality=modality)
        self.name = name
        self.inputs: list[np.ndarray] = []

    def denoise(self, x: np.ndarray) -> np.ndarray:
        self.inputs.append(x.copy())
        return blur(x)


def blur(x: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` -> ``(C, H, W)`` 3 x 3 box blur with edge padding."""
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
    return sum(p[:, i:i + x.shape[1], j:j + x.shape[2]] for i in range(3) for j in range(3)) / 9.0


def test_model_path_with_a_fake_image_denoiser(images: tuple[Path, dict], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root, values = images
    fake = FakeDenoiser("image")
    calls = []
    monkeypatch.setattr(xmodal, "load", lambda path, device="cpu": calls.append((path, device)) or fake)
    assert main(["--clean", str(root / "clean"), "--noisy", str(root / "noisy"), "--model", "runs/img",
                 "--json", str(tmp_path / "s.json"), "--quiet"]) == 0
    assert calls == [("runs/img", "cpu")]
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["enhanced"] == "model runs/img" and len(fake.inputs) == 3
    for f, given in zip(data["files"], fake.inputs):
        v = values[f["name"]]
        np.testing.assert_allclose(given, v["noisy"], atol=1e-6)  # the noisy image, read in [0, 1]
        levels = {"uint8": 255, "uint16": 65535}[f["dtype"]]  # scored at the file's bit depth, as written
        est = np.clip(np.rint(blur(v["noisy"].astype(np.float32)).astype(np.float64) * levels), 0, levels) / levels
        assert f["enhanced"]["psnr"] == pytest.approx(peak_signal_noise_ratio(v["clean"], est, data_range=1.0),
                                                      abs=1e-4)
        assert f["enhanced"]["ssim"] == pytest.approx(ref_ssim(v["clean"], est), abs=1e-4)
        assert "files" in f and set(f["files"]) == {"clean", "noisy"}
    # the object itself, without xmodal.load
    direct = evaluate_images(root / "clean", root / "noisy", denoiser=FakeDenoiser("image"))
    assert direct["enhanced"] == "model fake" and direct["files"] == data["files"]


def test_model_output_is_scored_as_the_denoise_command_writes_it(images: tuple[Path, dict], tmp_path: Path) -> None:
    """--model equals denoising into files (rounded to the bit depth, clipped) and scoring them with --enhanced."""
    root, _ = images

    class OutOfRange(FakeDenoiser):
        def denoise(self, x: np.ndarray) -> np.ndarray:
            return x * 1.5 - 0.2 + 0.4 / 255  # values below 0, above 1 and between 8-bit levels

    fake = OutOfRange("image")
    (tmp_path / "written").mkdir()
    for noisy in sorted((root / "noisy").iterdir()):
        image, info = read_image(noisy)
        write_image(tmp_path / "written" / noisy.name, fake.denoise(image), info)
    by_model = evaluate_images(root / "clean", root / "noisy", denoiser=fake)
    by_files = evaluate_images(root / "clean", root / "noisy", tmp_path / "written")
    for a, b in zip(by_model["files"], by_files["files"]):
        assert a["enhanced"] == pytest.approx(b["enhanced"], abs=1e-9)


def test_model_errors(images: tuple[Path, dict]) -> None:
    root, _ = images
    c, n = root / "clean", root / "noisy"
    with pytest.raises(ValueError, match=r"model fake: it denoises modality 'speech', but the evaluation is of "
                                         r"'image' data \(--modality\)"):
        evaluate_images(c, n, denoiser=FakeDenoiser("speech"))
    with pytest.raises(TypeError, match=r"`denoiser` must have a `denoise` method, got SimpleNamespace"):
        evaluate_images(c, n, denoiser=SimpleNamespace(config=SimpleNamespace(modality="image")))
    bad = FakeDenoiser("image")
    bad.denoise = lambda x: x[:, :-1]  # type: ignore[method-assign]
    with pytest.raises(ValueError, match=r"gray16.png: the model returned shape \(1, 28, 33\) for an input of "
                                         r"shape \(1, 29, 33\); expected the same shape"):
        evaluate_images(c, n, denoiser=bad)


# ------------------------------------------------------------------------------------------------ image errors


def test_image_argument_errors(images: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root, _ = images
    c, n, e = root / "clean", root / "noisy", root / "enhanced"
    with pytest.raises(ValueError, match=r"pass either `enhanced` \(--enhanced\) or `denoiser` \(--model\), not both"):
        evaluate_images(c, n, e, denoiser=FakeDenoiser("image"))
    with pytest.raises(ValueError, match=r"image evaluation needs the enhanced files \(`enhanced_dir`, --enhanced\) "
                                         r"or a model \(`denoiser`, --model\); neither was given"):
        evaluate_images(c, n)
    with pytest.raises(ValueError, match=r"unknown metric\(s\) 'sam' \(known: psnr, ssim, lpips\)"):
        evaluate_images(c, n, e, metrics=("psnr", "sam"))
    with pytest.raises(ValueError, match=r"`data_range` \(--data-range\) must be a finite number > 0, got 0"):
        evaluate_images(c, n, e, data_range=0)
    with pytest.raises(ValueError, match=r"`figure_files` must be >= 0, got -2"):
        evaluate_images(c, n, e, figure_files=-2)
    assert main(["--clean", str(c), "--noisy", str(n), "--quiet"]) == 2  # images need --enhanced or --model
    assert "image evaluation needs the enhanced files" in capsys.readouterr().err
    assert main(["--clean", str(c), "--noisy", str(n), "--enhanced", str(e), "--scaling", "dtype",
                 "--rgb-bands", "1,2,3"]) == 2
    assert "error: --scaling, --rgb-bands do(es) not apply to image evaluation" in capsys.readouterr().err
    assert main(["--clean", str(c), "--noisy", str(n), "--enhanced", str(e), "--data-range", "-1", "--quiet"]) == 2
    assert "must be a finite number > 0, got -1.0" in capsys.readouterr().err


def test_missing_folder(images: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root, _ = images
    with pytest.raises(FileNotFoundError, match=r"missing: image folder not found \(--noisy\)"):
        evaluate_images(root / "clean", tmp_path / "missing", root / "enhanced")
    assert main(["--clean", str(root / "clean"), "--noisy", str(tmp_path / "missing"), "--enhanced",
                 str(root / "enhanced")]) == 2
    assert "missing: image folder not found (--noisy)" in capsys.readouterr().err
    assert main(["--clean", str(tmp_path / "nope"), "--noisy", str(root / "noisy"), "--enhanced",
                 str(root / "enhanced")]) == 2
    assert "nope: --clean file or folder not found" in capsys.readouterr().err


def link_all(src: Path, dst: Path, names: list[str]) -> None:
    dst.mkdir(exist_ok=True)
    for name in names:
        os.symlink(src / name, dst / name)


def test_unmatched_stems(images: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root, _ = images
    other = tmp_path / "other"
    other.mkdir()
    for i in range(12):
        Image.new("L", (W, H)).save(other / f"x{i:02d}.png")
    with pytest.raises(ValueError, match=r"do not hold the same image stems \(no file matches: only in --clean: "
                                         r"gray16.png, rgb8.png, tif16.tif; only in --noisy: x00.png, x01.png, .*"
                                         r"x09.png \.\.\. \(2 more\)\)"):
        match_image_files(root / "clean", noisy=other)
    partial = tmp_path / "partial"
    link_all(root / "noisy", partial, ["gray16.png", "rgb8.png"])
    with pytest.raises(ValueError, match=r"--clean .*clean and --enhanced .*partial do not hold the same image stems "
                                         r"\(only in --clean: tif16.tif\)"):
        match_image_files(root / "clean", noisy=root / "noisy", enhanced=partial)
    assert main(["--clean", str(root / "clean"), "--noisy", str(other), "--enhanced", str(root / "enhanced")]) == 2
    assert "no file matches" in capsys.readouterr().err
    pairs = match_image_files(root / "clean", noisy=root / "noisy", enhanced=root / "enhanced")
    assert pairs[1] == {"clean": root / "clean" / "rgb8.png", "noisy": root / "noisy" / "rgb8.png",
                        "enhanced": root / "enhanced" / "rgb8.tif"}


def test_folder_without_images_and_repeated_stems(images: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = images
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"empty: no image files \(\.png, \.jpg, .*\) in this folder \(--noisy\)"):
        evaluate_images(root / "clean", empty, root / "enhanced")
    twice = tmp_path / "twice"
    link_all(root / "noisy", twice, ["gray16.png", "rgb8.png", "tif16.tif"])
    os.symlink(root / "enhanced" / "rgb8.tif", twice / "rgb8.tif")
    with pytest.raises(ValueError, match=r"twice: files are matched by stem, but 2 files share the stem 'rgb8' "
                                         r"\(rgb8.png, rgb8.tif\) \(--enhanced\)"):
        evaluate_images(root / "clean", root / "noisy", twice)


def test_shape_mismatch_and_corrupt_files_are_listed(images: tuple[Path, dict], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    root, values = images
    enh = tmp_path / "enh"
    link_all(root / "enhanced", enh, ["gray16.png"])
    write_png8(enh / "rgb8.png", values["rgb8"]["enhanced"][:, :-2])  # 2 rows short
    (enh / "tif16.tif").write_bytes(b"this is not a TIFF file")
    argv = ["--clean", str(root / "clean"), "--noisy", str(root / "noisy"), "--enhanced", str(enh),
            "--json", str(tmp_path / "s.json"), "--quiet"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    want_shape = (f"{enh / 'rgb8.png'}: shape (3, 27, 33) differs from {root / 'clean' / 'rgb8.png'}: (3, 29, 33); "
                  "images must have the same (C, H, W)")
    assert f"error: {want_shape}" in captured.err
    assert f"{enh / 'tif16.tif'}: not readable as TIFF" in captured.err
    assert "skipped files (unreadable, shape mismatch or refused by the model) (2):" in captured.out
    data = json.loads((tmp_path / "s.json").read_text())
    assert [f["name"] for f in data["files"]] == ["gray16"]
    assert data["errors"][0] == {"file": "rgb8", "reason": want_shape}
    assert data["errors"][1]["file"] == "tif16"


# ------------------------------------------------------------------------------------------- without a reference


@pytest.fixture(scope="module")
def real_noisy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    """``noisy/`` and ``enhanced/`` without clean images (as real photos come): a 16-bit gray PNG and an 8-bit RGB
    PNG of 64 x 64 pixels, noise of standard deviation 0.04 and 0.06; the enhanced images are the clean ones."""
    root = tmp_path_factory.mktemp("real")
    rng = np.random.default_rng(5)
    values: dict[str, dict[str, np.ndarray]] = {}
    for stem, channels, sigma, writer in (("scan", 1, 0.04, write_png16), ("photo", 3, 0.06, write_png8)):
        clean = 0.5 + 0.3 * (smooth(channels, rng, 64, 64) - 0.5)  # in [0.26, 0.74]: no clipping of the noise
        values[stem] = {"clean": clean, "sigma": sigma}
        for row, x in (("noisy", clean + sigma * rng.standard_normal(clean.shape)), ("enhanced", clean)):
            (root / row).mkdir(exist_ok=True)
            values[stem][row] = writer(root / row / f"{stem}.png", x)
    return root, values


def test_no_reference_noise_levels(real_noisy: tuple[Path, dict], tmp_path: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    root, values = real_noisy
    argv = ["--noisy", str(root / "noisy"), "--enhanced", str(root / "enhanced"), "--json", str(tmp_path / "s.json"),
            "--figures", str(tmp_path / "figs"), "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "noise (of 255)" in out and "mean (2)" in out and "estimated from each image alone" in out
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["clean_dir"] is None and data["metrics"] == ["noise", "removed"] and data["noise_scale"] == 255
    assert [f["name"] for f in data["files"]] == ["photo", "scan"]
    for f in data["files"]:
        v = values[f["name"]]
        per_channel = {row: estimate_sigma(v[row]) * 255 for row in ("noisy", "enhanced")}
        for row in ("noisy", "enhanced"):
            np.testing.assert_allclose(f["noise_channels"][row], per_channel[row], rtol=1e-5)
            assert f[row]["noise"] == pytest.approx(np.sqrt(np.mean(per_channel[row] ** 2)), rel=1e-5)
        assert f["noisy"]["noise"] == pytest.approx(v["sigma"] * 255, rel=0.1)  # what was added
        assert f["enhanced"]["noise"] < 1.5  # the clean image: about its rounding
        assert f["enhanced"]["removed"] == pytest.approx(np.std(v["noisy"] - v["enhanced"]) * 255, rel=1e-5)
    means = data["mean"]
    assert means["noisy"]["noise"] == pytest.approx(np.mean([f["noisy"]["noise"] for f in data["files"]]))
    assert means["enhanced"]["removed"] == pytest.approx(np.mean([f["enhanced"]["removed"] for f in data["files"]]))
    assert data["figures"] == [str(tmp_path / "figs" / "photo.png"), str(tmp_path / "figs" / "scan.png")]
    for fig in data["figures"]:
        assert_png(Path(fig), (1200, 480))  # noisy / denoised / residual: three panels


def test_no_reference_with_a_model(real_noisy: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    root, values = real_noisy
    fake = FakeDenoiser("image")
    monkeypatch.setattr(xmodal, "load", lambda path, device="cpu": fake)
    by_model = evaluate_images_no_reference(root / "noisy", denoiser="runs/img")
    assert by_model["enhanced"] == "model runs/img" and len(fake.inputs) == 2
    for f in by_model["files"]:
        v = values[f["name"]]
        levels = 255 if f["dtype"] == "uint8" else 65535  # scored as written: at the file's bit depth
        est = np.clip(np.rint(blur(v["noisy"].astype(np.float32)).astype(np.float64) * levels), 0, levels) / levels
        assert f["enhanced"]["removed"] == pytest.approx(np.std(v["noisy"] - est) * 255, rel=1e-4)
        assert f["enhanced"]["noise"] < f["noisy"]["noise"]  # a blur takes some of it
        assert set(f["files"]) == {"noisy"}


def test_no_reference_errors(real_noisy: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root, values = real_noisy
    enh = tmp_path / "enh"
    enh.mkdir()
    write_png8(enh / "photo.png", values["photo"]["enhanced"][:, :-3])  # 3 rows short
    write_png16(enh / "scan.png", values["scan"]["enhanced"])
    (enh / "tiny.png").write_bytes(b"")  # one more stem than --noisy
    argv = ["--noisy", str(root / "noisy"), "--enhanced", str(enh), "--quiet"]
    assert main(argv) == 2
    assert (f"error: --noisy {root / 'noisy'} and --enhanced {enh} do not hold the same image stems (only in "
            f"--enhanced: tiny.png)") in capsys.readouterr().err
    (enh / "tiny.png").unlink()
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert (f"error: {enh / 'photo.png'}: shape (3, 61, 64) differs from {root / 'noisy' / 'photo.png'}: "
            f"(3, 64, 64); images must have the same (C, H, W)") in captured.err
    assert "skipped files (1):" in captured.out and "scan" in captured.out
    small = tmp_path / "small"
    small.mkdir()
    write_png8(small / "icon.png", np.full((1, 9, 9), 0.5))
    (small / "broken.png").write_bytes(b"not a png")
    result = evaluate_images_no_reference(small, small)
    assert result["files"] == [] and result["mean"]["noisy"]["noise"] is None
    assert [e["file"] for e in result["errors"]] == ["broken", "icon"]
    assert "broken.png" in result["errors"][0]["reason"]
    assert result["errors"][1]["reason"] == (f"{small / 'icon.png'}: `image` of 9 x 9 pixels is too small to "
                                             "estimate its noise from 7 x 7 patches (it holds 9, at least 196 are "
                                             "needed)")
    for extra, message in [(["--lpips"], "--lpips need(s) --clean"),
                           (["--data-range", "255"], "--data-range need(s) --clean"),
                           (["--modality", "video"], "video evaluation needs clean references (--clean)")]:
        assert main(["--noisy", str(root / "noisy"), "--enhanced", str(root / "enhanced"), *extra]) == 2
        assert message in capsys.readouterr().err
    sf.write(tmp_path / "talk.wav", np.zeros(1600), 16000)
    assert main(["--noisy", str(tmp_path), "--quiet"]) == 2
    assert "speech evaluation needs clean references (--clean)" in capsys.readouterr().err
    assert main(["--noisy", str(root / "noisy"), "--quiet"]) == 2
    assert "image evaluation needs the enhanced files" in capsys.readouterr().err
    assert main(["--noisy", str(tmp_path / "nowhere"), "--enhanced", str(root / "enhanced"), "--quiet"]) == 2
    assert f"error: {tmp_path / 'nowhere'}: image folder not found (--noisy)" in capsys.readouterr().err
    assert main(["--noisy", str(root / "noisy" / "scan.png"), "--enhanced", str(root / "enhanced"), "--quiet"]) == 2
    assert "multispectral evaluation needs clean references (--clean)" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"`figure_files` must be >= 0, got -1"):
        evaluate_images_no_reference(root / "noisy", root / "enhanced", figure_files=-1)


# -------------------------------------------------------------------------------------------------------- modality


def test_detect_modality(images: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = images
    assert detect_modality(root / "clean") == "image"
    assert detect_modality(root / "clean" / "tif16.tif") == "multispectral"
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "a.wav", np.zeros(160, np.float32), 16000)
    assert detect_modality(audio) == "speech"
    Image.new("L", (4, 4)).save(audio / "b.png")
    with pytest.raises(ValueError, match=r"audio: holds both audio and image files; pass --modality speech or "
                                         r"--modality image"):
        detect_modality(audio)
    (tmp_path / "none").mkdir()
    with pytest.raises(ValueError, match=r"none: no audio \(\.wav, .*\) or image \(\.png, .*\) files in this folder; "
                                         r"pass --modality"):
        detect_modality(tmp_path / "none")
    with pytest.raises(FileNotFoundError, match=r"gone: --clean file or folder not found"):
        detect_modality(tmp_path / "gone")


def test_speech_refuses_image_options_and_image_models(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for sub in ("c", "n"):
        (tmp_path / sub).mkdir()
        sf.write(tmp_path / sub / "a.wav", np.zeros(160, np.float32), 16000)
    assert main(["--clean", str(tmp_path / "c"), "--noisy", str(tmp_path / "n"), "--enhanced", str(tmp_path / "n"),
                 "--data-range", "2"]) == 2
    assert "--data-range do(es) not apply to speech evaluation" in capsys.readouterr().err
    fake = FakeDenoiser("image")
    fake.modality = "image"  # type: ignore[attr-defined]
    monkeypatch.setattr(xmodal, "load", lambda path, device="cpu": fake)
    assert main(["--clean", str(tmp_path / "c"), "--noisy", str(tmp_path / "n"), "--model", "img-run",
                 "--quiet"]) == 2
    assert "model img-run: it denoises modality 'image', but the evaluation is of 'speech' data" in \
        capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------- stacks

S, SH, SW = 5, 24, 21


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """Clean stack as one 5-band uint16 TIFF, noisy as a folder of single-band uint16 TIFFs, enhanced as a float32
    ``.npy`` in the same file units; and the file values ``{row: (S, H, W) float64}``."""
    root = tmp_path_factory.mktemp("stacks")
    rng = np.random.default_rng(3)
    clean = np.rint(smooth(S, rng, SH, SW) * 3000 + np.arange(S)[:, None, None] * 500).astype(np.uint16)
    noisy = np.clip(np.rint(clean + rng.normal(0, 120, clean.shape)), 0, 65535).astype(np.uint16)
    enhanced = (clean + rng.normal(0, 25, clean.shape)).astype(np.float32)
    tifffile.imwrite(root / "clean.tif", clean, photometric="minisblack")
    (root / "noisy").mkdir()
    for i in range(S):
        tifffile.imwrite(root / "noisy" / f"B{i + 1}.tif", noisy[i])
    np.save(root / "enhanced.npy", enhanced)
    return root, {"clean": clean.astype(np.float64), "noisy": noisy.astype(np.float64),
                  "enhanced": enhanced.astype(np.float64)}


def minmax_on_clean(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    lo = values["clean"].min(axis=(1, 2), keepdims=True)
    span = values["clean"].max(axis=(1, 2), keepdims=True) - lo
    return {row: (x - lo) / span for row, x in values.items()}


def sam_ref(ref: np.ndarray, deg: np.ndarray) -> float:
    """Mean spectral angle in degrees, straight numpy."""
    a, b = ref.reshape(ref.shape[0], -1), deg.reshape(deg.shape[0], -1)  # (S, H*W)
    cos = (a * b).sum(0) / (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0))
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))).mean())


def test_stack_scores_on_the_clean_scale(stacks: tuple[Path, dict]) -> None:
    root, values = stacks
    result = evaluate_stacks(root / "clean.tif", root / "noisy", root / "enhanced.npy")
    scaled = minmax_on_clean(values)
    ref = scaled["clean"]
    assert result["modality"] == "multispectral" and result["band_names"] == [f"band_{i:02d}" for i in range(1, 6)]
    assert result["scaling"]["rule"] == "band_minmax" and result["scaling"]["computed_on"] == "clean"
    assert result["scaling"]["offset"] == pytest.approx(values["clean"].min(axis=(1, 2)).tolist())
    assert result["rgb_bands"] == [4, 3, 2]  # the middle three, red = the higher band
    (entry,) = result["files"]
    assert entry["name"] == "clean" and entry["shape"] == [S, SH, SW]
    for row in ("noisy", "enhanced"):
        deg = scaled[row]
        assert entry[row]["psnr"] == pytest.approx(peak_signal_noise_ratio(ref, deg, data_range=1.0), abs=1e-4)
        assert entry[row]["ssim"] == pytest.approx(ref_ssim(ref, deg), abs=1e-4)
        # SAM on the file values themselves: the clean min/max scaling subtracts a per-band offset, changing angles
        assert entry[row]["sam"] == pytest.approx(sam_ref(values["clean"], values[row]), abs=1e-4)
        # MPSNR: per-band PSNRs on the clean scale, averaged; ERGAS on file values (band means of the clean stack)
        band_psnr = [peak_signal_noise_ratio(ref[i], deg[i], data_range=1.0) for i in range(S)]
        assert entry[row]["mpsnr"] == pytest.approx(np.mean(band_psnr), abs=1e-6)
        mse = ((values["clean"] - values[row]) ** 2).mean(axis=(1, 2))
        ergas = 100 * np.sqrt(np.mean(mse / values["clean"].mean(axis=(1, 2)) ** 2))
        assert entry[row]["ergas"] == pytest.approx(ergas, rel=1e-6)
        assert abs(entry[row]["sam"] - sam_ref(ref, deg)) > 0.5
        assert result["mean"][row] == entry[row]
        for i, band in enumerate(result["bands"]):
            assert band[row]["psnr"] == pytest.approx(peak_signal_noise_ratio(ref[i], deg[i], data_range=1.0),
                                                      abs=1e-4)
            assert band[row]["ssim"] == pytest.approx(ref_ssim(ref[i][None], deg[i][None]), abs=1e-4)
    assert entry["enhanced"]["psnr"] > entry["noisy"]["psnr"] + 5
    assert result["failures"] == [] and result["errors"] == []


def test_stack_nodata_pixels_are_left_out_of_every_metric(tmp_path: Path) -> None:
    """A GeoTIFF whose border is nodata (0, as Landsat scenes are) scores as its valid columns alone: every metric,
    per band too, equals the same stacks cut to those columns; a zero spectrum never reaches SAM whatever the
    scaling (file values are read as stored, not rebuilt from the scaled bands)."""
    rng = np.random.default_rng(4)
    clean = np.rint(smooth(S, rng, SH, SW) * 3000 + 700).astype(np.uint16)
    noisy = np.clip(np.rint(clean + rng.normal(0, 120, clean.shape)), 1, 65535).astype(np.uint16)
    enhanced = np.clip(np.rint(clean + rng.normal(0, 25, clean.shape)), 1, 65535).astype(np.uint16)
    nodata = [(42113, 2, 0, "0", True)]  # GDAL_NODATA
    for name, x in (("clean", clean), ("noisy", noisy), ("enhanced", enhanced)):
        border = x.copy()
        border[:, :, :5] = 0
        tifffile.imwrite(tmp_path / f"{name}.tif", border, photometric="minisblack", planarconfig="separate",
                         extratags=nodata)
        tifffile.imwrite(tmp_path / f"{name}_valid.tif", x[:, :, 5:], photometric="minisblack",
                         planarconfig="separate")
    for scaling in ("band_minmax", "band_percentile"):
        result = evaluate_stacks(*(tmp_path / f"{n}.tif" for n in ("clean", "noisy", "enhanced")), scaling=scaling)
        cut = evaluate_stacks(*(tmp_path / f"{n}_valid.tif" for n in ("clean", "noisy", "enhanced")),
                              scaling=scaling)
        assert result["files"][0]["scored_pixels"] == SH * (SW - 5) and result["failures"] == []
        for row in ("noisy", "enhanced"):
            assert result["files"][0][row] == pytest.approx(cut["files"][0][row], rel=1e-9)
            for band, band_cut in zip(result["bands"], cut["bands"]):
                assert band[row] == pytest.approx(band_cut[row], rel=1e-9)
        assert result["files"][0]["enhanced"]["sam"] < result["files"][0]["noisy"]["sam"]


def test_image_nan_nodata_is_left_out_and_json_stays_strict(tmp_path: Path) -> None:
    """A float GeoTIFF with NaN nodata scores over its data pixels (equal to the image cut to them), not as NaN
    means; an image wholly nodata is a recorded failure, and --json writes strict JSON (null, never NaN)."""
    rng = np.random.default_rng(5)
    for d in ("clean", "noisy", "enhanced"):
        (tmp_path / d).mkdir()
    clean = smooth(1, rng)[0].astype(np.float32)
    rows = {"clean": clean, "noisy": clean + rng.normal(0, 0.1, clean.shape).astype(np.float32),
            "enhanced": clean + rng.normal(0, 0.02, clean.shape).astype(np.float32)}
    for row, x in rows.items():
        holed = x.copy()
        holed[:, 20:] = np.nan
        tifffile.imwrite(tmp_path / row / "dem.tif", holed, extratags=[(42113, 2, 0, "nan", True)])
        tifffile.imwrite(tmp_path / row / "void.tif", np.full_like(x, np.nan), extratags=[(42113, 2, 0, "nan", True)])
    result = evaluate_images(tmp_path / "clean", tmp_path / "noisy", tmp_path / "enhanced")
    dem = next(f for f in result["files"] if f["name"] == "dem")
    assert dem["scored_pixels"] == H * 20
    for row in ("noisy", "enhanced"):
        ref, deg = clean[:, :20].astype(np.float64), rows[row][:, :20].astype(np.float64)
        assert dem[row]["psnr"] == pytest.approx(peak_signal_noise_ratio(ref, deg, data_range=1.0), abs=1e-6)
        assert dem[row]["ssim"] == pytest.approx(ref_ssim(ref[None], deg[None]), abs=1e-6)
        assert result["mean"][row] == pytest.approx(dem[row])
    assert {(f["row"], f["metric"], f["file"]) for f in result["failures"]} == {
        (row, metric, "void") for row in ("noisy", "enhanced") for metric in ("psnr", "ssim")}
    assert all(f["reason"].endswith("the mask leaves no pixel to score (all nodata)") for f in result["failures"])
    for folder, row in (("c1", "clean"), ("n1", "noisy")):  # the void image alone: no mean at all
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "void.tif").write_bytes((tmp_path / row / "void.tif").read_bytes())
    assert main(["--clean", str(tmp_path / "c1"), "--noisy", str(tmp_path / "n1"), "--enhanced", str(tmp_path / "n1"),
                 "--json", str(tmp_path / "s.json")]) == 0
    text = (tmp_path / "s.json").read_text()
    assert "NaN" not in text and json.loads(text)["mean"]["noisy"]["psnr"] is None


def test_stacks_in_one_mat_file_and_envi(stacks: tuple[Path, dict], tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    """The clean and noisy arrays of one .mat file (``scene.mat:gt`` / ``scene.mat:input``) and an ENVI raster score
    as the same stacks in TIFF/.npy files do."""
    import scipy.io as sio
    envi = pytest.importorskip("spectral.io.envi")

    root, values = stacks
    sio.savemat(tmp_path / "scene.mat", {"gt": values["clean"].astype(np.uint16).transpose(1, 2, 0),
                                         "input": values["noisy"].astype(np.uint16).transpose(1, 2, 0)})
    envi.save_image(str(tmp_path / "enh.hdr"), values["enhanced"].astype(np.float32).transpose(1, 2, 0))
    result = evaluate_stacks(f"{tmp_path / 'scene.mat'}:gt", f"{tmp_path / 'scene.mat'}:input", tmp_path / "enh.hdr")
    direct = evaluate_stacks(root / "clean.tif", root / "noisy", root / "enhanced.npy")
    for row in ("noisy", "enhanced"):
        for metric in ("psnr", "ssim", "sam"):
            assert result["files"][0][row][metric] == pytest.approx(direct["files"][0][row][metric], abs=1e-6)
    assert result["files"][0]["name"] == "scene"
    assert main(["--clean", f"{tmp_path / 'scene.mat'}:gt", "--noisy", f"{tmp_path / 'scene.mat'}:input",
                 "--enhanced", str(tmp_path / "enh.hdr"), "--quiet"]) == 0  # auto: a named .mat array is a stack
    assert "SAM" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match=r"nope.mat:gt: stack file or folder not found \(--clean\)"):
        evaluate_stacks(f"{tmp_path / 'nope.mat'}:gt", tmp_path / "enh.hdr", tmp_path / "enh.hdr")


def test_stacks_share_the_clean_scale(stacks: tuple[Path, dict], tmp_path: Path) -> None:
    """A denoiser output with a constant offset must score worse, not perfectly (as per-stack min/max would)."""
    root, values = stacks
    np.save(tmp_path / "shifted.npy", (values["clean"] + 300).astype(np.float32))
    result = evaluate_stacks(root / "clean.tif", root / "noisy", tmp_path / "shifted.npy")
    scaled = minmax_on_clean({"clean": values["clean"], "shifted": values["clean"] + 300})
    want = peak_signal_noise_ratio(scaled["clean"], scaled["shifted"], data_range=1.0)
    assert math.isfinite(result["files"][0]["enhanced"]["psnr"])
    assert result["files"][0]["enhanced"]["psnr"] == pytest.approx(want, abs=1e-4)
    # dtype scaling: every stack divided by 65535 (the clean dtype), floats included
    by_dtype = evaluate_stacks(root / "clean.tif", root / "noisy", root / "enhanced.npy", scaling="dtype")
    assert by_dtype["scaling"]["scale"] == [65535.0] * S and by_dtype["scaling"]["offset"] == [0.0] * S
    want = peak_signal_noise_ratio(values["clean"] / 65535, values["enhanced"] / 65535, data_range=1.0)
    assert by_dtype["files"][0]["enhanced"]["psnr"] == pytest.approx(want, abs=1e-4)
    pct = evaluate_stacks(root / "clean.tif", root / "noisy", root / "enhanced.npy", scaling="band_percentile")
    assert pct["scaling"]["percentiles"] == [1.0, 99.0]


def test_cli_stack_table_json_and_figure(stacks: tuple[Path, dict], tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    root, _ = stacks
    argv = ["--clean", str(root / "clean.tif"), "--noisy", str(root / "noisy"), "--enhanced",
            str(root / "enhanced.npy"), "--rgb-bands", "3,2,1", "--json", str(tmp_path / "s.json"),
            "--figures", str(tmp_path / "figs"), "--quiet"]
    assert main(argv) == 0  # auto: a --clean file is a stack
    out = capsys.readouterr().out
    assert "SAM" in out and "band_03" in out and "mean (1)" in out
    assert "scaling: band_minmax computed on the clean stack, applied to all stacks" in out
    data = json.loads((tmp_path / "s.json").read_text())
    direct = evaluate_stacks(root / "clean.tif", root / "noisy", root / "enhanced.npy")
    assert data["rgb_bands"] == [3, 2, 1] and data["ssim_implementation"] == SSIM_IMPLEMENTATION
    assert data["files"] == direct["files"] and data["bands"] == direct["bands"]
    assert data["data_range"] == 1.0 and data["scaling"]["rule"] == "band_minmax"
    assert os.listdir(tmp_path / "figs") == ["clean.png"] and data["figures"] == [str(tmp_path / "figs" / "clean.png")]
    assert_png(tmp_path / "figs" / "clean.png", (1600, 800))
    # a folder of single-band TIFFs as --clean needs the modality named
    assert main(["--clean", str(root / "noisy"), "--noisy", str(root / "noisy"), "--enhanced",
                 str(root / "enhanced.npy"), "--modality", "multispectral", "--quiet"]) == 0


def test_model_path_with_a_fake_stack_denoiser(stacks: tuple[Path, dict], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root, values = stacks
    fake = FakeDenoiser("multispectral")
    monkeypatch.setattr(xmodal, "load", lambda path, device="cpu": fake)
    assert main(["--clean", str(root / "clean.tif"), "--noisy", str(root / "noisy"), "--model", "ms-run",
                 "--json", str(tmp_path / "s.json"), "--quiet"]) == 0
    data = json.loads((tmp_path / "s.json").read_text())
    (given,) = fake.inputs
    lo = values["noisy"].min(axis=(1, 2), keepdims=True)
    span = values["noisy"].max(axis=(1, 2), keepdims=True) - lo
    # the noisy stack on its OWN per-band min/max scale, as python -m xmodal.denoise gives it (no clean leak)
    np.testing.assert_allclose(given, (values["noisy"] - lo) / span, atol=1e-6)
    written = np.clip(np.rint(blur(given).astype(np.float64) * span + lo), 0, 65535)  # uint16 bands: rounded
    scaled = minmax_on_clean({"clean": values["clean"], "enhanced": written})
    assert data["enhanced"] == "model ms-run"
    assert data["files"][0]["enhanced"]["psnr"] == pytest.approx(
        peak_signal_noise_ratio(scaled["clean"], scaled["enhanced"], data_range=1.0), abs=1e-4)
    assert data["files"][0]["enhanced"]["sam"] == pytest.approx(sam_ref(values["clean"], written), abs=1e-4)
    # the same as scoring those rounded values written to a file
    np.save(tmp_path / "written.npy", written.astype(np.uint16))
    by_file = evaluate_stacks(root / "clean.tif", root / "noisy", tmp_path / "written.npy")
    assert by_file["files"][0]["enhanced"] == pytest.approx(data["files"][0]["enhanced"], abs=1e-6)
    with pytest.raises(ValueError, match=r"model fake: it denoises modality 'image', but the evaluation is of "
                                         r"'multispectral' data"):
        evaluate_stacks(root / "clean.tif", root / "noisy", denoiser=FakeDenoiser("image"))


def test_stack_errors(stacks: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root, values = stacks
    clean = root / "clean.tif"
    # a different band count
    tifffile.imwrite(tmp_path / "four.tif", values["clean"][:4].astype(np.uint16), photometric="minisblack")
    with pytest.raises(ValueError, match=r"--noisy .*four.tif: 4 bands, but --clean .*clean.tif: 5 bands; the stacks "
                                         r"must hold the same bands"):
        evaluate_stacks(clean, tmp_path / "four.tif", root / "enhanced.npy")
    assert main(["--clean", str(clean), "--noisy", str(tmp_path / "four.tif"), "--enhanced",
                 str(root / "enhanced.npy")]) == 2
    assert "4 bands, but --clean" in capsys.readouterr().err
    # another size
    np.save(tmp_path / "small.npy", values["clean"][:, :-1].astype(np.float32))
    with pytest.raises(ValueError, match=r"--enhanced .*small.npy: bands of 23 x 21 pixels, but --clean .*clean.tif: "
                                         r"24 x 21; the stacks must have the same size"):
        evaluate_stacks(clean, root / "noisy", tmp_path / "small.npy")
    # bands of different sizes inside one folder
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    tifffile.imwrite(mixed / "B1.tif", values["noisy"][0].astype(np.uint16))
    tifffile.imwrite(mixed / "B2.tif", values["noisy"][1, :-3].astype(np.uint16))
    assert main(["--clean", str(clean), "--noisy", str(mixed), "--enhanced", str(root / "enhanced.npy")]) == 1
    assert "B2.tif: shape (21, 21) differs from" in capsys.readouterr().err
    with pytest.raises(ImageReadError, match=r"all bands must have the same size"):
        evaluate_stacks(clean, mixed, root / "enhanced.npy")
    # corrupt and missing stacks
    (tmp_path / "bad.tif").write_bytes(b"this is not a TIFF file")
    assert main(["--clean", str(clean), "--noisy", str(tmp_path / "bad.tif"), "--enhanced",
                 str(root / "enhanced.npy")]) == 1
    assert "bad.tif: not readable as TIFF" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match=r"gone.tif: stack file or folder not found \(--enhanced\)"):
        evaluate_stacks(clean, root / "noisy", tmp_path / "gone.tif")
    # options
    with pytest.raises(ValueError, match=r"`scaling` \(--scaling\) must be 'band_minmax', 'band_percentile', "
                                         r"'stack_minmax' or 'dtype', got 'zscore'"):
        evaluate_stacks(clean, root / "noisy", root / "enhanced.npy", scaling="zscore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"multispectral evaluation needs the enhanced files"):
        evaluate_stacks(clean, root / "noisy")
    with pytest.raises(ValueError, match=r"`rgb_bands` \(--rgb-bands\) 6,2,1: band 6 does not exist; the stack has "
                                         r"bands 1 to 5"):
        evaluate_stacks(clean, root / "noisy", root / "enhanced.npy", rgb_bands="6,2,1")
    assert main(["--clean", str(clean), "--noisy", str(root / "noisy"), "--enhanced", str(root / "enhanced.npy"),
                 "--rgb-bands", "red,green"]) == 2
    assert "--rgb-bands: expected three 1-based band numbers like '3,2,1', got 'red,green'" in \
        capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------- figures


def test_comparison_figures_directly(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    gray = smooth(1, rng)
    out = save_image_comparison(tmp_path / "sub" / "g.png", noisy_version(gray, 0.1, rng), gray, gray,
                                {"psnr": 20.0, "ssim": 0.5}, {"psnr": math.inf, "ssim": 1.0}, name="gray")
    assert out == tmp_path / "sub" / "g.png"
    assert_png(out)
    rgba = smooth(4, rng)
    assert_png(save_image_comparison(tmp_path / "rgba.png", rgba, rgba, rgba), (1600, 480))
    assert_png(save_image_comparison(tmp_path / "rgba3.png", rgba, rgba, None), (1200, 480))  # no clean image
    with pytest.raises(ValueError, match=r"`noisy`, `denoised` and `clean` must have the same shape, got "
                                         r"\(1, 29, 33\), \(4, 29, 33\) and \(4, 29, 33\)"):
        save_image_comparison(tmp_path / "x.png", gray, rgba, rgba)
    with pytest.raises(ValueError, match=r"Expected `noisy` of shape \(C, H, W\), got \(29, 33\)"):
        save_image_comparison(tmp_path / "x.png", gray[0], gray, gray)
    stack = smooth(2, rng)  # fewer than 3 bands: the composite repeats bands
    assert_png(save_stack_comparison(tmp_path / "s.png", stack, stack, stack, band_names=["a", "b"]))
    with pytest.raises(ValueError, match=r"`band_names` has 1 names for a stack of 2 bands"):
        save_stack_comparison(tmp_path / "s.png", stack, stack, stack, band_names=["a"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rgba.png", "rgba3.png", "s.png", "sub"]  # no temp files


def test_rgba_alpha_is_set_aside_and_a_refused_file_is_listed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(8)
    rgb = {k: np.clip(smooth(3, rng, 32, 30) + (0.05 if k == "noisy" else 0.02) * rng.standard_normal((3, 32, 30)),
                      0, 1) for k in ("clean", "noisy", "enhanced")}
    for k in rgb:
        (tmp_path / k).mkdir()
        alpha = np.full((1, 32, 30), 1.0 if k != "enhanced" else 0.2)  # an alpha the scores must not see
        rgba = np.rint(np.concatenate([rgb[k], alpha]) * 255).astype(np.uint8)
        Image.fromarray(rgba.transpose(1, 2, 0), "RGBA").save(tmp_path / k / "a.png")
        rgb[k] = rgba[:3].astype(np.float64) / 255
    Image.fromarray(np.rint(rgb["clean"][0] * 255).astype(np.uint8), "L").save(tmp_path / "clean" / "g.png")
    for k in ("noisy", "enhanced"):
        Image.fromarray(np.rint(rgb[k][0] * 255).astype(np.uint8), "L").save(tmp_path / k / "g.png")
    result = evaluate_images(tmp_path / "clean", tmp_path / "noisy", tmp_path / "enhanced")
    a = result["files"][0]
    assert a["name"] == "a" and a["shape"] == [3, 32, 30] and a["alpha"] == "set aside (not scored)"
    for row in ("noisy", "enhanced"):
        assert a[row]["psnr"] == pytest.approx(peak_signal_noise_ratio(rgb["clean"], rgb[row], data_range=1.0),
                                               abs=1e-6)
        assert a[row]["ssim"] == pytest.approx(ref_ssim(rgb["clean"], rgb[row]), abs=1e-4)

    class ColourOnly(FakeDenoiser):  # refuses what a 3-channel model refuses, as ImageDenoiser does
        def denoise(self, x: np.ndarray, **kwargs: object) -> np.ndarray:
            if x.shape[0] != 3:
                raise ValueError(f"this model denoises 3-channel images; `image` has {x.shape[0]} channels")
            self.inputs.append(x.copy())
            return blur(x)

    model = ColourOnly("image")
    result = evaluate_images(tmp_path / "clean", tmp_path / "noisy", denoiser=model)
    assert [f["name"] for f in result["files"]] == ["a"] and model.inputs[0].shape == (3, 32, 30)  # alpha not fed
    assert result["errors"] == [{"file": "g", "reason": f"{tmp_path / 'noisy' / 'g.png'}: the model cannot denoise "
                                                        "this file: this model denoises 3-channel images; `image` has "
                                                        "1 channels"}]
    assert result["mean_counts"] == {"psnr": 1, "ssim": 1}
    est = np.clip(np.rint(blur(rgb["noisy"]) * 255), 0, 255) / 255
    assert result["files"][0]["enhanced"]["psnr"] == pytest.approx(
        peak_signal_noise_ratio(rgb["clean"], est, data_range=1.0), abs=1e-4)
    no_ref = evaluate_images_no_reference(tmp_path / "noisy", denoiser=model)  # no clean: the same rules
    assert [f["name"] for f in no_ref["files"]] == ["a"] and no_ref["files"][0]["shape"] == [3, 32, 30]
    assert no_ref["errors"][0]["reason"].startswith(f"{tmp_path / 'noisy' / 'g.png'}: the model cannot denoise")
