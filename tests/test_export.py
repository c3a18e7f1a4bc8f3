"""ONNX export: the graph equals PyTorch at any size, ONNX Runtime-backed denoisers equal the PyTorch ones, errors."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import xmodal
from tests.conftest import REPO
from xmodal import checkpoint as ckpt
from xmodal.config import dump_config, load_config
from xmodal.export import OnnxRuntimeNet, export_onnx, load_onnx, main
from xmodal.modalities import modality_io
from xmodal.models import build_model



def _run(tmp_path: Path, recipe: str, overrides: list[str] = (), name: str = "run", seed: int = 0) -> Path:
    """A run directory with untrained (seeded) weights of ``recipe``."""
    config = load_config(REPO / "recipes" / recipe, list(overrides))
    torch.manual_seed(seed)
    model = build_model(config.model, {m: modality_io(m, config) for m in config.modalities})
    with torch.no_grad():  # a non-trivial network: the residual heads start near zero
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    run = tmp_path / name
    run.mkdir()
    ckpt.save_weights(model, run / ckpt.WEIGHTS, config)
    dump_config(config, run / ckpt.CONFIG)
    return run


def _noisy_pngs(folder: Path, n: int = 3, size: tuple[int, int] = (40, 52)) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    paths = []
    for i in range(n):
        yy, xx = np.mgrid[:size[0], :size[1]]
        clean = 0.5 + 0.3 * np.sin(xx / (3 + i)) * np.cos(yy / 5)
        noisy = np.clip(clean + 0.1 * rng.standard_normal(size), 0, 1)
        Image.fromarray(np.rint(noisy * 255).astype(np.uint8)).save(folder / f"n{i}.png")
        paths.append(folder / f"n{i}.png")
    return paths


@pytest.fixture(scope="module")
def image_export(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export_image")
    run = _run(tmp, "tiny_image.yaml", ["model.widths=[8, 16, 16]"])
    return run, export_onnx(run, tmp / "out" / "gray.onnx", int8=True, calibration=_noisy_pngs(tmp / "calib"))


def test_image_export_matches_pytorch_at_any_size(image_export):
    import onnx
    import onnxruntime as ort

    run, report = image_export
    assert report.path.is_file() and report.modality == "image"
    assert report.input_shape == ("batch", 1, "height", "width") and report.max_abs_diff < 1e-4
    proto = onnx.load(str(report.path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["xmodal.modality"] == "image" and meta["xmodal.size_multiple"] == "4"
    assert load_config(REPO / "recipes" / "tiny_image.yaml").image == \
        xmodal.config.config_from_dict(__import__("yaml").safe_load(meta["xmodal.config"])).image
    net, _ = ckpt.load_run(run)
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    for shape in [(1, 1, 1, 1), (3, 1, 17, 9), (1, 1, 64, 40)]:  # sizes the export never saw
        x = rng.random(shape, dtype=np.float32)
        with torch.no_grad():
            expected = net(torch.from_numpy(x), "image").numpy()
        got = session.run(None, {"noisy": x})[0]
        assert got.shape == shape
        np.testing.assert_allclose(got, expected, atol=1e-5)
    # the int8 file: int8 convolutions in the trunk, the stem and head in float; close to fp32 but not equal
    assert report.int8_path == report.path.with_name("gray.int8.onnx") and report.int8_path.is_file()
    assert report.calibration_inputs == 3  # one network input per calibration image (each fits one tile)
    q = onnx.load(str(report.int8_path))
    quantized = {n.name for n in q.graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in q.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert quantized and all(any(i.endswith("_DequantizeLinear_Output") or "dequant" in i.lower() for i in c.input)
                             == c.name.startswith("/trunk/") for c in convs)
    assert 0 < report.int8_max_abs_diff < 0.5
    int8 = load_onnx(report.int8_path)
    image = np.random.default_rng(12).random((1, 33, 41), dtype=np.float32)
    assert 0 < np.abs(int8.denoise(image) - xmodal.load(run).denoise(image)).max() < 0.5


def test_onnx_runtime_denoiser_equals_the_pytorch_one(image_export, tmp_path):
    run, report = image_export
    den, ort_den = xmodal.load(run), load_onnx(report.path)
    assert type(ort_den).__name__ == "ImageDenoiser" and isinstance(ort_den.model, OnnxRuntimeNet)
    image = np.random.default_rng(6).random((3, 45, 70), dtype=np.float32)  # 3 channels through a gray model
    for kw in ({}, {"tile": 32, "overlap": 8}):
        np.testing.assert_allclose(ort_den.denoise(image, **kw), den.denoise(image, **kw), atol=1e-5)
    from PIL import Image

    src = tmp_path / "a.png"
    Image.fromarray((image[0] * 255).astype(np.uint8)).save(src)
    ort_den.denoise_file(src, tmp_path / "ort.png")
    den.denoise_file(src, tmp_path / "pt.png")
    a, b = np.asarray(Image.open(tmp_path / "ort.png")), np.asarray(Image.open(tmp_path / "pt.png"))
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # 8-bit rounding of values equal to 1e-5


def test_speech_export_chunked_denoising_equals_pytorch(tmp_path, run_dir):
    report = export_onnx(run_dir, tmp_path / "speech.onnx")
    assert report.input_shape == ("batch", 2, 129, "frames")  # tiny recipe: n_fft 256
    den, ort_den = xmodal.load(run_dir), load_onnx(report.path)
    assert ort_den.receptive_field == den.receptive_field > 0  # stored in the file: ONNX has no gradients
    wave = (0.1 * np.random.default_rng(7).standard_normal((2, 16000 * 3))).astype(np.float32)
    np.testing.assert_allclose(ort_den.denoise(wave, 16000, chunk_seconds=1.0),
                               den.denoise(wave, 16000, chunk_seconds=1.0), atol=1e-5)


def test_stack_export(tmp_path):
    run = _run(tmp_path, "tiny_image.yaml", ["modality=multispectral", "image.context_bands=1"])
    report = export_onnx(run, tmp_path / "ms.onnx")
    assert report.modality == "multispectral" and report.input_shape == ("batch", 3, "height", "width")
    stack = np.random.default_rng(8).random((6, 21, 30), dtype=np.float32)
    np.testing.assert_allclose(load_onnx(report.path).denoise(stack), xmodal.load(run).denoise(stack), atol=1e-5)
    png = _noisy_pngs(tmp_path / "calib", n=1)[0]
    with pytest.raises(ValueError, match=r"n0.png: a calibration stack of this multispectral model must be a "
                                         r"\.tif/\.tiff/\.npy/.* file or a folder of single-band TIFFs, got '\.png'"):
        export_onnx(run, tmp_path / "ms8.onnx", int8=True, calibration=[png])


def test_joint_model_exports_one_modality_at_a_time(tmp_path, capsys):
    run = _run(tmp_path, "tiny_joint.yaml")
    with pytest.raises(ValueError, match=r"a model trained jointly on speech and image: say which modality to "
                                         r"export \(--modality\)"):
        export_onnx(run, tmp_path / "j.onnx")
    assert main([str(run), "-o", str(tmp_path / "img.onnx"), "--modality", "image"]) == 0
    assert "wrote" in capsys.readouterr().out
    image = np.random.default_rng(9).random((1, 19, 23), dtype=np.float32)
    np.testing.assert_allclose(load_onnx(tmp_path / "img.onnx").denoise(image),
                               xmodal.load(run, modality="image").denoise(image), atol=1e-5)
    with pytest.raises(ValueError, match=r"a model of speech and image, not 'multispectral'"):
        export_onnx(run, tmp_path / "m.onnx", modality="multispectral")


def test_errors(image_export, tmp_path, capsys, monkeypatch):
    run, report = image_export
    with pytest.raises(ValueError, match=r"x.onx: the output must be a .onnx file, got '.onx'"):
        export_onnx(run, tmp_path / "x.onx")
    with pytest.raises(ValueError, match=r"`opset` must be between 11 and 21, got 9"):
        export_onnx(run, tmp_path / "x.onnx", opset=9)
    with pytest.raises(ValueError, match=r"int8 needs calibration inputs \(--calibrate FILE ...\)"):
        export_onnx(run, tmp_path / "x.onnx", int8=True)
    with pytest.raises(ValueError, match=r"gone.png: calibration file not found"):
        export_onnx(run, tmp_path / "x.onnx", int8=True, calibration=[tmp_path / "gone.png"])
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"bad.png: "):
        export_onnx(run, tmp_path / "x.onnx", int8=True, calibration=[tmp_path / "bad.png"])
    sf.write(tmp_path / "talk.wav", np.zeros(1600, np.float32), 16000)
    with pytest.raises(ValueError, match=r"talk.wav: a calibration file of this image model must be one it denoises, "
                                         r"this is an audio file$"):
        export_onnx(run, tmp_path / "x.onnx", int8=True, calibration=[tmp_path / "talk.wav"])
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "x.int8.onnx").exists()  # nothing half-written
    assert main([str(run), "-o", str(tmp_path / "x.onnx"), "--calibrate", str(tmp_path / "a.png")]) == 2
    assert "--calibrate is for --int8" in capsys.readouterr().err
    assert main([str(run), "-o", str(tmp_path / "x.onnx"), "--int8"]) == 2
    assert "int8 needs calibration inputs" in capsys.readouterr().err
    assert main([str(tmp_path / "missing"), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "unknown model" in capsys.readouterr().err
    # a graph that differs from PyTorch by more than the tolerance is not written
    import xmodal.export as export_mod

    monkeypatch.setattr(export_mod, "TOLERANCE", -1.0)
    with pytest.raises(ValueError, match=r"y.onnx: the ONNX graph differs from PyTorch by .* nothing was written"):
        export_onnx(run, tmp_path / "y.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.png", "talk.wav"]  # no file, no temp folder
    monkeypatch.undo()
    # missing packages are named with the install command
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(ImportError, match=r"needs the `onnxruntime` package: pip install \"xmodal\[export\]\""):
        export_onnx(run, tmp_path / "z.onnx")
    monkeypatch.undo()
    # loading: not ONNX, or ONNX without xmodal's metadata
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"junk.onnx: not a loadable ONNX file"):
        load_onnx(tmp_path / "junk.onnx")
    import onnx

    proto = onnx.load(str(report.path))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "plain.onnx"))
    with pytest.raises(ValueError, match=r"plain.onnx: not an xmodal export \(no xmodal.modality in its metadata\)"):
        load_onnx(tmp_path / "plain.onnx")
    net = OnnxRuntimeNet(report.path)
    with pytest.raises(KeyError, match=r"gray.onnx is the image network, not 'speech'"):
        net(torch.zeros(1, 1, 4, 4), "speech")


def test_calibration_takes_one_path_and_folders_and_outputs_are_named(image_export, tmp_path, monkeypatch):
    """One calibration path is a path (not its characters); a folder gives an image model its image files (other
    files skipped); an int8 twin's name as the output, a read-only destination and a full disk are said plainly."""
    run, _ = image_export
    folder = tmp_path / "calib"
    pngs = _noisy_pngs(folder, n=2)
    (folder / "notes.txt").write_text("not an image")
    single = export_onnx(run, tmp_path / "one.ONNX", int8=True, calibration=str(pngs[0]))
    assert single.path.exists() and single.int8_path.name == "one.int8.onnx"
    from_folder = export_onnx(run, tmp_path / "folder.onnx", int8=True, calibration=[folder])
    listed = export_onnx(run, tmp_path / "listed.onnx", int8=True, calibration=pngs)
    assert from_folder.calibration_inputs == listed.calibration_inputs == 2
    assert from_folder.int8_path.read_bytes() == listed.int8_path.read_bytes()  # the same ranges, the same file
    from PIL import Image

    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tmp_path / "dot.png")
    with pytest.warns(UserWarning, match=r"tiny.onnx: int8 ranges measured on only \d+ input positions \(pixels or "
                                         r"time-frequency bins; 65536 or more recommended\)"):
        export_onnx(run, tmp_path / "tiny.onnx", int8=True, calibration=tmp_path / "dot.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: a calibration folder of this image model holds no image file"):
        export_onnx(run, tmp_path / "x.onnx", int8=True, calibration=[tmp_path / "empty"])
    with pytest.raises(ValueError, match=r"x.int8.onnx: name the float model's file; with int8 its quantised twin is "
                                         r"written beside it as <name>.int8.onnx \(x.int8.onnx for x.onnx\)"):
        export_onnx(run, tmp_path / "x.int8.onnx", int8=True, calibration=pngs)
    import tempfile

    def refused(*args, **kwargs):
        raise OSError(30, "Read-only file system", str(tmp_path / ".xmodal-export-abc"))

    monkeypatch.setattr(tempfile, "TemporaryDirectory", refused)
    with pytest.raises(OSError) as e:
        export_onnx(run, tmp_path / "ro.onnx")
    assert str(e.value) == f"{tmp_path / 'ro.onnx'}: cannot write the file (Read-only file system); nothing was written"
    assert e.value.errno == 30
    monkeypatch.undo()
    import onnx

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx, "save", full)
    with pytest.raises(OSError, match=r"full.onnx: cannot write the file \(No space left on device\); nothing was "
                                      r"written"):
        export_onnx(run, tmp_path / "full.onnx")
    assert not (tmp_path / "full.onnx").exists() and not list(tmp_path.glob(".xmodal-export-*"))


def test_xmodal_load_and_the_cli_take_an_export(image_export, tmp_path, capsys):
    from PIL import Image

    from xmodal.denoise import main as denoise_main
    from xmodal.denoise import model_modalities

    run, report = image_export
    den = xmodal.load(report.path)
    assert isinstance(den.model, OnnxRuntimeNet) and den.modality == "image"
    assert model_modalities(report.path) == ("image",) and model_modalities(run) == ("image",)
    assert xmodal.load(str(report.path), modality="image", precision="auto").modality == "image"
    with pytest.raises(ValueError, match=r"gray.onnx: an export of the image network, not 'speech'"):
        xmodal.load(report.path, modality="speech")
    with pytest.raises(ValueError, match=r"gray.onnx: an ONNX export runs on the CPU \(ONNX Runtime\), not on 'cuda'"):
        xmodal.load(report.path, device="cuda")
    with pytest.raises(ValueError, match=r"`precision` must be 'fp32' or 'auto', got 'bf16'"):
        xmodal.load(report.path, precision="bf16")
    with pytest.raises(ValueError, match=r"nope.onnx: no such ONNX file"):
        xmodal.load(tmp_path / "nope.onnx")
    image = (np.random.default_rng(10).random((26, 31)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    assert denoise_main([str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", str(report.path),
                         "--quiet"]) == 0
    assert denoise_main([str(tmp_path / "a.png"), "-o", str(tmp_path / "ref"), "--model", str(run), "--quiet"]) == 0
    a = np.asarray(Image.open(tmp_path / "out" / "a.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "ref" / "a.png")).astype(int)
    assert np.abs(a - b).max() <= 1
    assert denoise_main([str(tmp_path / "a.png"), "-o", str(tmp_path / "o2"), "--model",
                         str(tmp_path / "no.onnx")]) == 2
    assert "no.onnx: no such ONNX file" in capsys.readouterr().err


def test_video_int8_export_calibrates_on_npy_clips(tmp_path, capsys):
    run = _run(tmp_path, "tiny_video.yaml", ["image.channels=3"])
    clip = (np.random.default_rng(13).random((4, 24, 30, 3)) * 255).astype(np.uint8)  # (T, H, W, C), as denoise reads
    np.save(tmp_path / "clip.npy", clip)
    assert main([str(run), "-o", str(tmp_path / "v.onnx"), "--int8", "--calibrate", str(tmp_path / "clip.npy")]) == 0
    assert "calibrated on 4 network inputs" in capsys.readouterr().out  # one per frame
    assert (tmp_path / "v.onnx").is_file() and (tmp_path / "v.int8.onnx").is_file()
    # a .npy that is no clip is named by the clip reader; an image file is refused as before
    np.save(tmp_path / "flat.npy", np.zeros((24, 30), np.float32))
    with pytest.raises(ValueError, match=r"flat.npy: a clip array is \(T, H, W\) or \(T, H, W, C\)"):
        export_onnx(run, tmp_path / "w.onnx", int8=True, calibration=[tmp_path / "flat.npy"])
    _noisy_pngs(tmp_path / "png", n=1)
    with pytest.raises(ValueError, match=r"n0.png: a calibration file of this video model must be one it denoises, "
                                         r"this is an image file$"):
        export_onnx(run, tmp_path / "w.onnx", int8=True, calibration=[tmp_path / "png" / "n0.png"])
    assert not (tmp_path / "w.onnx").exists() and not (tmp_path / "w.int8.onnx").exists()


def test_existing_outputs_need_overwrite(image_export, tmp_path, capsys):
    run, _ = image_export
    calib = [str(p) for p in _noisy_pngs(tmp_path / "calib", n=1)]
    (tmp_path / "x.onnx").write_bytes(b"old")
    with pytest.raises(FileExistsError, match=r"x.onnx: output file already exists \(pass overwrite=True, or "
                                              r"--overwrite\)"):
        export_onnx(run, tmp_path / "x.onnx")
    assert main([str(run), "-o", str(tmp_path / "x.onnx")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'x.onnx'}: output file already exists (pass --overwrite)\n"
    assert (tmp_path / "x.onnx").read_bytes() == b"old"
    # the int8 file too: refused before any work, the fp32 file not written either
    (tmp_path / "y.int8.onnx").write_bytes(b"old")
    with pytest.raises(FileExistsError, match=r"y.int8.onnx: output file already exists"):
        export_onnx(run, tmp_path / "y.onnx", int8=True, calibration=calib)
    assert main([str(run), "-o", str(tmp_path / "y.onnx"), "--int8", "--calibrate", *calib]) == 2
    assert "y.int8.onnx: output file already exists (pass --overwrite)" in capsys.readouterr().err
    assert not (tmp_path / "y.onnx").exists() and (tmp_path / "y.int8.onnx").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib", "x.onnx", "y.int8.onnx"]  # no temp folder
    # without --int8 an existing .int8.onnx is not an output; with --overwrite both are replaced
    assert main([str(run), "-o", str(tmp_path / "y.onnx")]) == 0
    assert main([str(run), "-o", str(tmp_path / "x.onnx"), "--overwrite"]) == 0
    assert main([str(run), "-o", str(tmp_path / "y.onnx"), "--int8", "--calibrate", *calib, "--overwrite"]) == 0
    capsys.readouterr()
    for name in ("x.onnx", "y.onnx", "y.int8.onnx"):
        assert load_onnx(tmp_path / name).modality == "image"
