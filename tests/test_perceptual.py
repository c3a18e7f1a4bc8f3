"""LPIPS (xmodal.perceptual): equal to the `lpips` package's reference implementation for every backbone and weight
file layout, its properties (zero on identical images, symmetric, gray = replicated RGB, differentiable), every error
message, and LPIPS through image/video metrics, `evaluate_images`/`evaluate_videos` and `python -m xmodal.evaluate`.

The backbones are randomly initialised (nothing may be downloaded); the linear layers are the real v0.1 calibration
weights that ship inside the `lpips` package.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import lpips as lpips_ref  # the reference implementation (dev extra)
import numpy as np
import pytest
import torch

from xmodal.evaluate import evaluate_images, evaluate_videos, main
from xmodal.imageio import write_image
from xmodal.metrics import LPIPS, MetricAccumulator, image_metrics, lpips_score, video_metrics
from xmodal.perceptual import LPIPS_NETS, read_state_dict


def _reference(net: str) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation warning for `pretrained=`
        torch.manual_seed({"alex": 0, "vgg": 1, "squeeze": 2}[net])
        return lpips_ref.LPIPS(net=net, pnet_rand=True, verbose=False)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, dict]:
    """Per net: the reference model and its backbone saved as torchvision numbers it (``features.N...``, with a
    classifier entry that must be ignored) and as a whole lpips state dict."""
    d = tmp_path_factory.mktemp("lpips")
    out = {}
    for net in LPIPS_NETS:
        ref = _reference(net)
        tv = {"features." + k.split(".", 1)[1]: v.clone() for k, v in ref.net.state_dict().items()}
        tv["classifier.1.weight"] = torch.zeros(4, 4)
        torch.save(tv, d / f"{net}_tv.pth")
        torch.save(ref.state_dict(), d / f"{net}_full.pth")
        out[net] = {"ref": ref, "tv": d / f"{net}_tv.pth", "full": d / f"{net}_full.pth"}
    from safetensors.torch import save_file

    save_file(torch.load(d / "alex_tv.pth", weights_only=True), str(d / "alex_tv.safetensors"))
    out["alex"]["safetensors"] = d / "alex_tv.safetensors"
    return out


def _pair(shape: tuple[int, ...], seed: int = 0, sigma: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)
    return x, (x + sigma * torch.randn(shape, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("net", list(LPIPS_NETS))
def test_lpips_equals_reference_package(weights, net):
    w = weights[net]
    x, y = _pair((2, 3, 45, 52))
    expected = w["ref"](x, y, normalize=True).flatten().detach()
    for source in ("tv", "full"):
        got = LPIPS(w[source], net=net)(x, y)
        assert got.shape == (2,)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    assert float(expected.min()) > 0


def test_lpips_weight_files(weights):
    w = weights["alex"]
    m = LPIPS(w["tv"])
    pkg = Path(lpips_ref.__file__).parent / "weights" / "v0.1" / "alex.pth"
    assert m.linear_file == str(pkg)  # the linear layers come from the installed package
    assert LPIPS(w["full"]).linear_file == str(w["full"])  # ... or from a whole lpips state dict
    assert LPIPS(w["tv"], linear=pkg).linear_file == str(pkg)
    x, y = _pair((1, 3, 40, 40), seed=3)
    torch.testing.assert_close(LPIPS(w["safetensors"])(x, y), m(x, y))
    desc = m.description
    assert "LPIPS v0.1" in desc and "alex backbone from" in desc and str(w["tv"]) in desc and str(pkg) in desc


def test_lpips_properties(weights):
    m = LPIPS(weights["alex"]["tv"])
    x, y = _pair((3, 64, 48), seed=1)
    assert float(m(x, x)[0]) == 0.0
    torch.testing.assert_close(m(x, y), m(y, x))
    # more noise, larger distance
    _, far = _pair((3, 64, 48), seed=1, sigma=0.3)
    assert float(m(x, far)[0]) > float(m(x, y)[0])
    # gray is scored as the same image replicated to RGB
    g, h = x[:1], y[:1]
    torch.testing.assert_close(m(g, h), m(g.expand(3, -1, -1), h.expand(3, -1, -1)))
    # batched = one by one
    xb, yb = _pair((3, 3, 40, 41), seed=2)
    torch.testing.assert_close(m(xb, yb), torch.cat([m(xb[i], yb[i]) for i in range(3)]))
    # gradients reach the estimate, and the weights stay frozen
    est = y.clone().requires_grad_(True)
    m(est, x).sum().backward()
    assert est.grad is not None and float(est.grad.abs().sum()) > 0
    assert all(not p.requires_grad for p in m.parameters())


def test_lpips_score(weights):
    m = LPIPS(weights["alex"]["tv"])
    x, y = _pair((5, 3, 40, 40), seed=4)
    per_frame = m(y, x)
    assert lpips_score(x, y, m, batch=2) == pytest.approx(float(per_frame.mean()), rel=1e-6)
    assert lpips_score(x[0], y[0], m) == pytest.approx(float(per_frame[0]), rel=1e-6)
    assert lpips_score(x[0, 0].numpy(), y[0, 0].numpy(), m) == pytest.approx(float(m(y[0, :1], x[0, :1])[0]), rel=1e-6)
    assert lpips_score(255 * x[0], 255 * y[0], m, data_range=255) == pytest.approx(float(per_frame[0]), rel=1e-5)
    with pytest.raises(ValueError, match=r"lpips: `ref` and `deg` must have the same shape, got \(1, 3, 40, 40\) and "
                                         r"\(1, 3, 40, 39\)"):
        lpips_score(x[0], y[0, :, :, :39], m)


def test_lpips_input_errors(weights):
    m = LPIPS(weights["alex"]["tv"])
    x, y = _pair((2, 40, 40))
    with pytest.raises(ValueError, match=r"lpips: `est` must be \(C, H, W\) or \(B, C, H, W\) with 1 \(gray\) or 3 "
                                         r"\(RGB\) channels, got shape \(2, 40, 40\)"):
        m(x, y)
    small = torch.rand(1, 30, 64)
    with pytest.raises(ValueError, match=r"lpips \(alex\): images must be at least 31 x 31, got \(30, 64\)"):
        m(small, small)
    with pytest.raises(ValueError, match=r"lpips: `est` and `ref` must have the same shape"):
        m(x[:1], y[:1, :, :39])
    # the stated minimum sizes are the real ones: min passes, min - 1 fails inside the backbone
    for net, spec in LPIPS_NETS.items():
        features = LPIPS(weights[net]["tv"], net=net).features
        with torch.no_grad():
            features(torch.zeros(1, 3, spec.min_size, spec.min_size))
            with pytest.raises(RuntimeError):
                features(torch.zeros(1, 3, spec.min_size - 1, spec.min_size - 1))


def test_lpips_weight_errors(weights, tmp_path, monkeypatch):
    w = weights["alex"]
    with pytest.raises(ValueError, match=r"LPIPS net must be one of alex, vgg, squeeze, got 'resnet'"):
        LPIPS(w["tv"], net="resnet")
    with pytest.raises(FileNotFoundError, match=r"LPIPS backbone: .*missing.pth does not exist"):
        LPIPS(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"LPIPS backbone: .*junk.pth is not a readable state dict"):
        LPIPS(tmp_path / "junk.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"LPIPS backbone: .*list.pth holds a list, not a state dict"):
        LPIPS(tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"(?s)LPIPS backbone: .*vgg_tv.pth is not a torchvision alexnet state dict "
                                         r"\(Missing key\(s\) in state_dict: \"3.weight\""):
        LPIPS(weights["vgg"]["tv"], net="alex")
    with pytest.raises(ValueError, match=r"LPIPS linear layers: .*alex.pth is not the LPIPS v0.1 vgg file: "
                                         r"lin1.model.1.weight should be \(1, 128, 1, 1\), shape \(1, 192, 1, 1\)"):
        LPIPS(weights["vgg"]["tv"], linear=Path(lpips_ref.__file__).parent / "weights/v0.1/alex.pth", net="vgg")
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, tmp_path / "lin_short.pth")
    with pytest.raises(ValueError, match=r"lin_short.pth is not the LPIPS v0.1 alex file: lin1.model.1.weight should "
                                         r"be \(1, 192, 1, 1\), missing"):
        LPIPS(w["tv"], linear=tmp_path / "lin_short.pth")
    # defaults: torchvision's hub cache for the backbone, the lpips package for the linear layers
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match=r"LPIPS \(alex\) needs torchvision's ImageNet alexnet weights "
                                                r"\(alexnet-owt-7be5be79.pth\); not found at .*hub/checkpoints/"
                                                r"alexnet-owt-7be5be79.pth.*xmodal downloads nothing"):
        LPIPS()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth").write_bytes(w["tv"].read_bytes())
    x, y = _pair((1, 3, 40, 40))
    torch.testing.assert_close(LPIPS()(x, y), LPIPS(w["tv"])(x, y))
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lpips" else real(name, *a))
    with pytest.raises(FileNotFoundError, match=r"LPIPS needs its linear calibration weights \(v0.1\): they ship in "
                                                r"the `lpips` package \(pip install lpips\)"):
        LPIPS(w["tv"])
    LPIPS(w["full"])  # a whole lpips state dict needs no package


def test_read_state_dict_unwraps_checkpoints(tmp_path):
    torch.save({"state_dict": {"a": torch.ones(2)}}, tmp_path / "ckpt.pth")
    assert list(read_state_dict(tmp_path / "ckpt.pth", "x")) == ["a"]
    torch.save({"a": torch.ones(2), "step": 3}, tmp_path / "mixed.pth")
    with pytest.raises(ValueError, match=r"x: .*mixed.pth holds a dict, not a state dict \(a dict of tensors\)"):
        read_state_dict(tmp_path / "mixed.pth", "x")


def test_lpips_in_image_and_video_metrics(weights):
    m = LPIPS(weights["alex"]["tv"])
    x, y = _pair((3, 40, 44), seed=5)
    acc = MetricAccumulator()
    scores = image_metrics(acc, "enhanced", "a", x, y, ("psnr", "lpips"), lpips=m)
    assert scores["lpips"] == pytest.approx(float(m(y, x)[0]), rel=1e-6)
    # a 5-band stack has no LPIPS: recorded as a failure, not raised
    s, t = _pair((5, 40, 44))
    scores = image_metrics(acc, "enhanced", "stack", s, t, ("psnr", "lpips"), lpips=m)
    assert "lpips" not in scores and "psnr" in scores
    assert acc.failures[-1][:3] == ("enhanced", "lpips", "stack") and "1 (gray) or 3 (RGB)" in acc.failures[-1][3]
    with pytest.raises(ValueError, match=r"metric 'lpips' needs an LPIPS model: pass lpips="):
        image_metrics(acc, "enhanced", "a", x, y, ("psnr", "lpips"))
    clip, noisy = _pair((4, 1, 40, 40), seed=6)
    scores = video_metrics(MetricAccumulator(), "noisy", "c", clip, noisy, ("psnr", "lpips"), lpips=m)
    assert scores["lpips"] == pytest.approx(float(m(noisy, clip).mean()), rel=1e-5)
    with pytest.raises(ValueError, match=r"metric 'lpips' needs an LPIPS model"):
        video_metrics(MetricAccumulator(), "noisy", "c", clip, noisy, ("lpips",))


def _image_folders(root: Path, n: int = 2) -> tuple[Path, Path, Path]:
    clean, noisy, enh = root / "clean", root / "noisy", root / "enhanced"
    for d in (clean, noisy, enh):
        d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        c = rng.random((3, 40, 48)).astype(np.float32)
        write_image(clean / f"im{i}.png", c, "uint8")
        for folder, sigma in ((noisy, 0.2), (enh, 0.05)):
            x = np.clip(c + sigma * rng.standard_normal(c.shape), 0, 1).astype(np.float32)
            write_image(folder / f"im{i}.png", x, "uint8")
    return clean, noisy, enh


def test_evaluate_images_with_lpips(weights, tmp_path):
    clean, noisy, enh = _image_folders(tmp_path)
    m = LPIPS(weights["alex"]["tv"])
    result = evaluate_images(clean, noisy, enh, lpips=m, figures_dir=tmp_path / "fig", figure_files=1)
    assert result["metrics"] == ["psnr", "ssim", "lpips"]
    assert result["lpips_implementation"] == m.description
    from xmodal.imageio import read_image

    first = result["files"][0]
    c, e = read_image(clean / "im0.png")[0], read_image(enh / "im0.png")[0]
    assert first["enhanced"]["lpips"] == pytest.approx(lpips_score(c, e, m), rel=1e-6)
    mean = result["mean"]
    assert mean["enhanced"]["lpips"] < mean["noisy"]["lpips"]  # less noise, closer
    # a path gives the same numbers
    again = evaluate_images(clean, noisy, enh, lpips=weights["alex"]["tv"])
    assert again["mean"] == mean
    with pytest.raises(ValueError, match=r"metric 'lpips' needs LPIPS weights: pass `lpips` \(--lpips\)"):
        evaluate_images(clean, noisy, enh, metrics=("psnr", "lpips"))
    without = evaluate_images(clean, noisy, enh)
    assert "lpips_implementation" not in without and without["metrics"] == ["psnr", "ssim"]


def test_evaluate_videos_with_lpips(weights, tmp_path):
    rng = np.random.default_rng(1)
    dirs = {k: tmp_path / k for k in ("clean", "noisy", "enhanced")}
    for d in dirs.values():
        d.mkdir()
    c = rng.random((3, 36, 40)).astype(np.float32)  # (T, H, W): gray frames
    np.save(dirs["clean"] / "clip.npy", c)
    np.save(dirs["noisy"] / "clip.npy", (c + 0.2 * rng.standard_normal(c.shape)).astype(np.float32))
    np.save(dirs["enhanced"] / "clip.npy", (c + 0.05 * rng.standard_normal(c.shape)).astype(np.float32))
    m = LPIPS(weights["alex"]["tv"])
    result = evaluate_videos(dirs["clean"], dirs["noisy"], dirs["enhanced"], lpips=m)
    assert result["metrics"] == ["psnr", "ssim", "tpsnr", "lpips"]
    noisy = np.load(dirs["noisy"] / "clip.npy")
    assert result["files"][0]["noisy"]["lpips"] == pytest.approx(lpips_score(c[:, None], noisy[:, None], m), rel=1e-6)


def test_cli_lpips(weights, tmp_path, capsys):
    clean, noisy, enh = _image_folders(tmp_path)
    out = tmp_path / "r.json"
    rc = main(["--clean", str(clean), "--noisy", str(noisy), "--enhanced", str(enh), "--lpips",
               str(weights["alex"]["tv"]), "--json", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "LPIPS" in text.splitlines()[0] and "LPIPS: LPIPS v0.1 (Zhang et al. 2018), alex backbone" in text
    result = json.loads(out.read_text())
    direct = evaluate_images(clean, noisy, enh, lpips=weights["alex"]["tv"])
    assert result["mean"]["enhanced"]["lpips"] == pytest.approx(direct["mean"]["enhanced"]["lpips"])
    # --lpips-net and a whole lpips state dict
    rc = main(["--clean", str(clean), "--noisy", str(noisy), "--enhanced", str(enh), "--lpips",
               str(weights["squeeze"]["full"]), "--lpips-net", "squeeze", "--quiet"])
    assert rc == 0 and "squeeze backbone" in capsys.readouterr().out


def test_cli_lpips_errors(weights, tmp_path, capsys):
    clean, noisy, enh = _image_folders(tmp_path)
    base = ["--clean", str(clean), "--noisy", str(noisy), "--enhanced", str(enh), "--quiet"]
    assert main(base + ["--lpips", str(tmp_path / "none.pth")]) == 2
    assert "error: LPIPS backbone: " in capsys.readouterr().err
    assert main(base + ["--lpips-net", "vgg"]) == 2
    assert "error: --lpips-linear and --lpips-net need --lpips" in capsys.readouterr().err
    assert main(base + ["--lpips", str(weights["alex"]["tv"]), "--lpips-net", "vgg"]) == 2
    assert "is not a torchvision vgg16 state dict" in capsys.readouterr().err
    stack = tmp_path / "stack.npy"
    np.save(stack, np.zeros((4, 8, 8), np.float32))
    assert main(["--clean", str(stack), "--noisy", str(stack), "--enhanced", str(stack), "--lpips",
                 str(weights["alex"]["tv"])]) == 2
    assert "error: --lpips do(es) not apply to multispectral evaluation" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------------------
# LPIPS as a training loss term


def test_lpips_loss_term(weights, tmp_path):
    from xmodal.config import ImageLossConfig
    from xmodal.losses import ImageLoss

    alex = str(weights["alex"]["tv"])
    loss = ImageLoss(ImageLossConfig(l1=1.0, lpips=0.5, lpips_weights=alex))
    m = LPIPS(alex)
    ref, est = _pair((2, 3, 40, 40), seed=8)
    est.requires_grad_(True)
    total, terms = loss(est, ref)
    assert set(terms) == {"l1", "lpips"}
    torch.testing.assert_close(terms["lpips"], m(est, ref).mean())
    torch.testing.assert_close(total, terms["l1"] + 0.5 * terms["lpips"])
    total.backward()
    assert float(est.grad.abs().sum()) > 0
    assert not any(p.requires_grad for p in loss.parameters())  # nothing of LPIPS is trained
    ref5, est5 = _pair((2, 5, 40, 40), seed=9)  # a 5-band stack: band by band as gray
    _, terms = loss(est5, ref5)
    torch.testing.assert_close(terms["lpips"], m(est5.reshape(-1, 1, 40, 40), ref5.reshape(-1, 1, 40, 40)).mean())
    only = ImageLoss(ImageLossConfig(l1=0.0, lpips=1.0, lpips_weights=alex))
    with pytest.raises(ValueError, match=r"lpips_loss: `est` and `ref` must have the same shape"):
        only(est5, ref5[..., :39])
    with pytest.raises(FileNotFoundError, match=r"image_loss.lpips: LPIPS backbone: .*none.pth does not exist"):
        ImageLoss(ImageLossConfig(lpips=0.1, lpips_weights=str(tmp_path / "none.pth")))
    with pytest.raises(ValueError, match=r"image_loss.lpips: LPIPS net must be one of alex, vgg, squeeze, got 'res'"):
        ImageLoss(ImageLossConfig(lpips=0.1, lpips_weights=alex, lpips_net="res"))
    with pytest.raises(ValueError, match=r"image_loss.lpips must be >= 0, got -1"):
        ImageLoss(ImageLossConfig(lpips=-1, lpips_weights=alex))


def test_training_with_the_lpips_term(weights, tmp_path):
    from xmodal.config import load_config
    from xmodal.train import train

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "recipes" / "tiny_image.yaml",
                      [f"train.run_dir={tmp_path / 'run'}", "image.epoch_size=8", "train.max_steps=2",
                       "image_loss.lpips=0.2", f"image_loss.lpips_weights={weights['squeeze']['tv']}",
                       "image_loss.lpips_net=squeeze"])
    result = train(cfg)
    assert result.step == 2
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r.get("kind") == "train"]
    assert train_rows and all(r["lpips"] > 0 for r in train_rows)
