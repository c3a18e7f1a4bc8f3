"""End to end: tiny image / colour / multispectral / non-blind runs from recipes/tiny_image.yaml, resume, what may
not change on resume, train.init_from across modalities, and a loss that goes down."""

import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO
from xmodal import checkpoint as ckpt
from xmodal.config import ConfigError, load_config
from xmodal.inference import enhance
from xmodal.modalities import make_adapter, modality_io
from xmodal.models import build_model
from xmodal.train import main, train

TINY_IMAGE = REPO / "recipes" / "tiny_image.yaml"

VARIANTS = {
    "gray": ([], ("psnr", "ssim")),
    "colour": (["image.channels=3"], ("psnr", "ssim")),
    "multispectral": (["modality=multispectral"], ("psnr", "mpsnr", "ssim", "sam")),  # ERGAS: evaluate, file values
    "noise_map": (["image.noise_map=true"], ("psnr", "ssim")),
}


def config(run_dir, *overrides):
    return load_config(TINY_IMAGE, [f"train.run_dir={run_dir}", "image.epoch_size=64", *overrides])


def weights(run_dir):
    return load_file(str(run_dir / "model.safetensors"))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_tiny_runs_save_validate_and_resume(tmp_path, variant):
    overrides, metrics = VARIANTS[variant]
    cfg = config(tmp_path / "run", *overrides)
    first = train(cfg, stop_after=2)
    run = tmp_path / "run"
    assert first.step == 2 and len(first.losses) == 2 and all(np.isfinite(first.losses))
    for name in ("model.safetensors", "config.yaml", "train_state.pt", "log.txt"):
        assert (run / name).is_file(), name
    assert not (run / "validation.json").exists()  # eval_every 0: validation only at the end
    assert load_config(run / "config.yaml") == cfg
    w2 = weights(run)

    second = train(cfg)
    assert second.resumed_from == 2 and second.step == 4 and len(second.losses) == 2
    assert f"resumed from {run} at step 2" in (run / "log.txt").read_text()
    assert any(not torch.equal(w2[k], v) for k, v in weights(run).items())  # the run went on
    assert set(second.validation) == {"noisy", "enhanced"}
    for row in ("noisy", "enhanced"):
        assert tuple(second.validation[row]) == metrics
        assert all(np.isfinite(v) for v in second.validation[row].values()), second.validation
    assert second.failures == 0
    # the noisy row is the validation noise itself: 25 / 255 gives about 20.2 dB
    assert second.validation["noisy"]["psnr"] == pytest.approx(20 * np.log10(255 / 25), abs=0.3)
    saved = json.loads((run / "validation.json").read_text())
    assert saved["step"] == 4 and saved["report"]["enhanced"]["psnr"] == pytest.approx(
        second.validation["enhanced"]["psnr"])

    # the run loads on its own and denoises an odd-sized input of its modality
    model, loaded_cfg = ckpt.load_run(run)
    assert loaded_cfg == cfg
    adapter = make_adapter(cfg.modality, cfg)
    C = {"gray": 1, "colour": 3, "multispectral": 6, "noise_map": 2}[variant]
    x = torch.rand(C, 21, 19)
    out = enhance(model, adapter, x, cfg.modality)
    assert out.shape == (C - int(variant == "noise_map"), 21, 19) and torch.isfinite(out).all()
    second.model.eval()
    assert torch.equal(out, enhance(second.model, adapter, x, cfg.modality))


def test_cli_main_runs_the_tiny_image_recipe(tmp_path, capsys):
    run = tmp_path / "cli"
    assert main([str(TINY_IMAGE), f"train.run_dir={run}", "train.max_steps=2", "image.epoch_size=8"]) == 0
    assert "done: 2 steps" in capsys.readouterr().out
    assert (run / "model.safetensors").is_file()
    assert main([str(TINY_IMAGE), f"train.run_dir={run}", "image.noise.sigma=[0.3,0.1]"]) == 2
    assert "`image.noise`: `NoiseSpec.sigma` range must have low <= high" in capsys.readouterr().err


@pytest.mark.parametrize("modality", ["image", "video"])
def test_validation_scores_outputs_clipped_as_files_hold_them(tmp_path, monkeypatch, modality):
    """An output beyond [0, 1] is scored as written (clipped), as evaluate scores it and as best.safetensors should
    be chosen; the noisy row stays unclipped (the float protocol)."""
    import xmodal.train as train_mod
    from xmodal.distributed import DistInfo
    from xmodal.metrics import psnr_score
    from xmodal.modalities import make_corpus
    from xmodal.train import _Validator

    overrides = ["modality=video", "image.frames_per_item=3"] if modality == "video" else []
    cfg = config(tmp_path / "run", *overrides)
    clips = make_corpus(modality, cfg, tmp_path / "demo").valid
    monkeypatch.setattr(train_mod, "enhance", lambda model, adapter, noisy, *a: noisy + 0.5)
    report, failures, _, reasons = _Validator(clips, cfg, DistInfo(0, 1, 0, torch.device("cpu")))(torch.nn.Identity(),
                                                                                                  None)
    def psnr(ref, est):  # a video's PSNR over its frames' pixels, as an image's
        return psnr_score(ref.reshape(-1, *ref.shape[-2:]), est.reshape(-1, *est.shape[-2:]))

    expected = np.mean([psnr(c.clean, (c.noisy + 0.5).clamp(0, 1)) for c in clips])
    unclipped = np.mean([psnr(c.clean, c.noisy + 0.5) for c in clips])
    assert failures == 0 and reasons == [] and report["enhanced"]["psnr"] == pytest.approx(expected, abs=1e-3)
    assert abs(expected - unclipped) > 0.5
    assert report["noisy"]["psnr"] == pytest.approx(np.mean([psnr(c.clean, c.noisy) for c in clips]), abs=1e-3)


@pytest.mark.parametrize("base, change, what", [
    ([], "image.channels=3", "whose image network input/output differs (image.channels 1 -> 3)"),
    ([], "image.noise_map=true", "whose image network input/output differs (image.noise_map False -> True)"),
    (["modality=multispectral"], "image.context_bands=1",
     "whose multispectral network input/output differs (image.context_bands 2 -> 1)"),
    (["modality=video", "image.frames_per_item=3"], "image.context_frames=0",
     "whose video network input/output differs (image.context_frames 2 -> 0)"),
    ([], "model.widths=[8,24]", "with a different `model` config"),
])
def test_resume_refuses_a_different_network_io(tmp_path, base, change, what):
    run = tmp_path / "run"
    train(config(run, *base), stop_after=1)
    with pytest.raises(ConfigError) as e:
        train(config(run, *base, change))
    assert str(e.value).startswith(f"{run}: holds a run {what}")
    assert str(e.value).endswith("; use another train.run_dir, or train.resume=false to start over")
    # what does not touch the network may change (more steps, other noise)
    resumed = train(config(run, *base, "train.max_steps=2", "image.noise.sigma=[0.05,0.05]"))
    assert resumed.resumed_from == 1 and resumed.step == 2


def test_init_from_moves_the_trunk_between_modalities(tmp_path):
    gray_run = tmp_path / "gray"
    train(config(gray_run, "train.max_steps=3"))
    gray = weights(gray_run)

    # lr 0: the first step changes nothing, so the saved weights are the initialisation itself
    frozen = ["modality=multispectral", "train.max_steps=1", "optim.lr=0", "image_loss.ssim=0"]
    init = train(config(tmp_path / "ms", *frozen, f"train.init_from={gray_run}"))
    train(config(tmp_path / "fresh", *frozen))
    a, b = weights(tmp_path / "ms"), weights(tmp_path / "fresh")
    trunk = [k for k in a if k.startswith("trunk.")]
    assert trunk and set(trunk) == {k for k in gray if k.startswith("trunk.")}
    for k in trunk:
        assert torch.equal(a[k], gray[k]), k
    assert any(not torch.equal(a[k], b[k]) for k in trunk)
    others = [k for k in a if not k.startswith("trunk.")]
    assert sorted({k.split(".")[0] + "." + k.split(".")[1] for k in others}) == \
        ["heads.multispectral", "stems.multispectral"]
    # stem and head grown from the gray model's: the stem filter on the middle band, zero on the context bands,
    # the head copied; the new model starts as the gray model applied band by band
    k = 2  # image.context_bands of the tiny recipe's default
    stem, gray_stem = a["stems.multispectral.conv.weight"], gray["stems.image.conv.weight"]
    assert torch.equal(stem[:, k:k + 1], gray_stem) and not stem[:, :k].any() and not stem[:, k + 1:].any()
    assert torch.equal(a["heads.multispectral.conv.weight"], gray["heads.image.conv.weight"])
    assert any(not torch.equal(a[k2], b[k2]) for k2 in others)
    ms_model, ms_cfg = ckpt.load_run(tmp_path / "ms")
    gray_model, gray_cfg = ckpt.load_run(gray_run)
    stack = torch.rand(6, 24, 20)
    with torch.no_grad():
        ms_out = enhance(ms_model, make_adapter("multispectral", ms_cfg), stack, "multispectral")
        gray_out = enhance(gray_model, make_adapter("image", gray_cfg), stack, "image")  # bands folded as channels
    assert torch.allclose(ms_out, gray_out, atol=1e-6)
    log = (tmp_path / "ms" / "log.txt").read_text()
    assert f"initialised {len(a)} of {len(a)} tensors from {gray_run}\n" in log
    assert init.step == 1

    # a single weights file works too, and a resumed run is not initialised again
    cfg = config(tmp_path / "ms2", "modality=multispectral", "train.max_steps=2",
                 f"train.init_from={gray_run / 'model.safetensors'}")
    train(cfg, stop_after=1)
    train(cfg)
    log = (tmp_path / "ms2" / "log.txt").read_text()
    assert log.count("initialised ") == 1 and "resumed from" in log


def test_init_from_a_bundled_name(tmp_path, monkeypatch):
    import shutil

    import xmodal.pretrained

    gray_run = tmp_path / "gray_run"
    train(config(gray_run, "train.max_steps=1"))
    shutil.copytree(gray_run, tmp_path / "pretrained" / "image_gray")
    monkeypatch.setattr(xmodal.pretrained, "_HERE", tmp_path / "pretrained")
    monkeypatch.chdir(tmp_path)  # no ./gray here: the name is the bundled model's
    train(config(tmp_path / "ms", "modality=multispectral", "train.max_steps=1", "train.init_from=gray"))
    assert re.search(r"initialised (\d+) of \1 tensors from gray\n", (tmp_path / "ms" / "log.txt").read_text())


def test_init_from_errors(tmp_path):
    gray_run = tmp_path / "gray"
    train(config(gray_run, "train.max_steps=1"))
    with pytest.raises(ckpt.CheckpointError, match=r"missing.safetensors: train.init_from weights file not found"):
        train(config(tmp_path / "a", f"train.init_from={tmp_path / 'missing.safetensors'}"))
    (tmp_path / "not_a_run").mkdir()
    with pytest.raises(ckpt.CheckpointError, match=r"not_a_run/model.safetensors: train.init_from weights file not "
                                                   r"found"):
        train(config(tmp_path / "a", f"train.init_from={tmp_path / 'not_a_run'}"))
    with pytest.raises(ckpt.CheckpointError, match=r"train.init_from shares no tensor \(name and shape\) with this "
                                                   r"model; is it the same model.arch and model.widths\?"):
        train(config(tmp_path / "b", "modality=multispectral", "model.widths=[4,8]", f"train.init_from={gray_run}"))
    with pytest.raises(ckpt.CheckpointError, match=r"gray/model.safetensors: train.init_from trunk does not match "
                                                   r"this model \(22 tensors: shape mismatch trunk.dec.0.0.conv1.bias "
                                                   r"\(8,\) vs \(4,\), .* \.\.\.\); is it the same model.arch, "
                                                   r"model.widths, model.blocks and model.norm\?"):
        train(config(tmp_path / "b2", "model.widths=[4,8]", f"train.init_from={gray_run}"))  # only a head bias fits
    # a trunk that matches only in part (the first levels of a deeper U-Net) is refused, not half copied
    with pytest.raises(ckpt.CheckpointError, match=r"train.init_from trunk does not match this model \(\d+ tensors: "
                                                   r"(missing|shape mismatch) trunk\."):
        train(config(tmp_path / "c", "model.widths=[8,16,32]", f"train.init_from={gray_run}"))
    (tmp_path / "bad.safetensors").write_bytes(b"not weights")
    with pytest.raises(ckpt.CheckpointError, match=r"bad.safetensors: not a readable safetensors file"):
        train(config(tmp_path / "d", f"train.init_from={tmp_path / 'bad.safetensors'}"))
    # each refused before the run directory (demo data, config, logs) was made
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors", "gray", "not_a_run"]


def test_init_from_function_reports_loaded_and_fresh(tmp_path):
    gray_run = tmp_path / "gray"
    train(config(gray_run, "train.max_steps=1"))
    cfg = config(tmp_path / "x", "image.channels=3")
    model = build_model(cfg.model, {"image": modality_io("image", cfg)})
    loaded, fresh = ckpt.init_from(model, gray_run)
    # same modality, other channel count: the trunk moves as it is, the stem and head are grown from the gray ones
    assert fresh == [] and loaded == sorted(model.state_dict())
    state = weights(gray_run)
    for k in loaded:
        if k.startswith("trunk.") or k == "stems.image.conv.bias":
            assert torch.equal(model.state_dict()[k], state[k]), k
    assert torch.equal(model.state_dict()["stems.image.conv.weight"], state["stems.image.conv.weight"].expand(
        -1, 3, -1, -1) / 3)
    assert torch.equal(model.state_dict()["heads.image.conv.bias"], state["heads.image.conv.bias"].expand(3))
    # so a gray image replicated to RGB comes out as the gray model's output in every channel
    gray_model, gray_cfg = ckpt.load_run(gray_run)
    image = torch.rand(1, 20, 28)
    with torch.no_grad():
        rgb = enhance(model.eval(), make_adapter("image", cfg), image.expand(3, -1, -1), "image")
        ref = enhance(gray_model, make_adapter("image", gray_cfg), image, "image")
    assert torch.allclose(rgb, ref.expand(3, -1, -1), atol=1e-6)


def test_init_from_grows_nothing_from_a_multi_modality_or_speech_source(tmp_path):
    """Stems/heads are grown only from a single single-channel source modality; a speech model's 2-channel stem is
    never stretched onto an image model (the trunk widths differ anyway, so only the error path is reachable)."""
    from xmodal.checkpoint import _transfer_io

    cfg = config(tmp_path / "x")
    model = build_model(cfg.model, {"image": modality_io("image", cfg)})
    target = model.state_dict()
    two = {"stems.a.conv.weight": torch.zeros(8, 1, 3, 3), "stems.b.conv.weight": torch.zeros(8, 1, 3, 3)}
    assert _transfer_io(model, two, target, set()) == {}
    speech_like = {"stems.speech.conv.weight": torch.zeros(8, 3, 3, 3), "heads.speech.conv.weight":
                   torch.zeros(2, 8, 3, 3)}
    assert _transfer_io(model, speech_like, target, set()) == {}


def test_training_loss_decreases(tmp_path):
    cfg = config(tmp_path / "run", "train.max_steps=30", "train.save_every=0", "train.log_every=100",
                 "image_loss.ssim=0", "image.noise.sigma=[0.1,0.1]")
    result = train(cfg)
    losses = result.losses
    assert len(losses) == 30
    first, last = float(np.mean(losses[:5])), float(np.mean(losses[-5:]))
    assert last < 0.8 * first, losses
    # and the denoiser already beats its input on the validation images
    assert result.validation["enhanced"]["psnr"] > result.validation["noisy"]["psnr"]


@pytest.mark.parametrize("overrides", [["image.noise_map=true"], ["modality=multispectral"]])
def test_tensorboard_logs_a_validation_image(tmp_path, overrides):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = config(tmp_path / "run", "train.max_steps=2", "train.tensorboard=true", *overrides)
    train(cfg)
    events = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"images": 0, "scalars": 0}).Reload()
    assert events.Tags()["images"] == ["valid/enhanced_0"]
    assert {"train/loss", "train/l1", "valid/enhanced/psnr", "valid/noisy/ssim"} <= set(events.Tags()["scalars"])
    image = events.Images("valid/enhanced_0")[0]
    # valid_crop 48: a demo image is 48 x 48; the demo stack's validation part is its bottom 32 rows x 48
    expected = (32, 48) if "modality=multispectral" in overrides else (48, 48)
    assert (image.height, image.width) == expected
