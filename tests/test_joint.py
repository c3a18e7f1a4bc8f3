"""Joint training: several modalities through one trunk (``modality: [speech, image]``), and loading such a model."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

import xmodal
from tests.conftest import REPO
from xmodal import checkpoint as ckpt
from xmodal.config import ConfigError, load_config
from xmodal.denoise import ModalityNeeded
from xmodal.inference import enhance
from xmodal.modalities import make_adapter, modality_io
from xmodal.models import build_model
from xmodal.train import train

TINY_JOINT = REPO / "recipes" / "tiny_joint.yaml"


@pytest.fixture
def joint_config(tmp_path, demo_corpus):
    """The tiny joint recipe: the session's speech demo corpus, demo images written by the run."""
    clean, noise = demo_corpus
    return load_config(TINY_JOINT, [f"train.run_dir={tmp_path / 'joint'}", f"data.clean_dir=[{clean}]",
                                    f"data.noise_dir=[{noise}]", "data.valid_fraction=0.25"])


@pytest.fixture(scope="module")
def joint_run(tmp_path_factory, demo_corpus):
    """A finished tiny joint run (speech + gray images), trained once for the loading and CLI tests."""
    clean, noise = demo_corpus
    run = tmp_path_factory.mktemp("joint_run")
    config = load_config(TINY_JOINT, [f"train.run_dir={run}", f"data.clean_dir=[{clean}]",
                                      f"data.noise_dir=[{noise}]", "data.valid_fraction=0.25"])
    return train(config)


def test_config_views_and_defaults():
    cfg = load_config(TINY_JOINT)
    assert cfg.modality == ("speech", "image") and cfg.modalities == ("speech", "image") and cfg.joint_run
    speech, image = cfg.for_modality("speech"), cfg.for_modality("image")
    assert (speech.modality, speech.train.batch_size) == ("speech", 2)
    assert (image.modality, image.train.batch_size) == ("image", 4)
    assert not speech.joint_run and speech.joint.weights == () and speech.audio == cfg.audio
    assert [cfg.weight(m) for m in cfg.modalities] == [1.0, 1.0]
    plain = load_config(TINY_JOINT, ["joint.weights=[]", "joint.batch_size=[]"])
    assert plain.weight("image") == 1.0 and plain.for_modality("image").train.batch_size == plain.train.batch_size
    one = load_config(TINY_JOINT, ["joint.weights=[]", "joint.batch_size=[]", "modality=[image]"])
    assert one.modality == "image" and not one.joint_run and one.for_modality("image") is one
    with pytest.raises(ValueError, match=r"this config has no modality 'multispectral' \(it has speech, image\)"):
        cfg.for_modality("multispectral")


@pytest.mark.parametrize("override, message", [
    ("modality=[]", r"`modality` must name at least one modality, got \[\]"),
    ("modality=[image, image]", r"`modality` lists a modality twice: \['image', 'image'\]"),
    ("modality=[image, multispectral]", r"image and multispectral both read the `image` section, so they cannot "
                                        r"be trained in one run"),
    ("joint.weights=[1]", r"`joint.weights` must have one value per modality \(2 for \['speech', 'image'\]\), "
                          r"got \[1.0\]"),
    ("joint.batch_size=[2, 4, 8]", r"`joint.batch_size` must have one value per modality \(2 for "
                                   r"\['speech', 'image'\]\), got \[2, 4, 8\]"),
    ("joint.weights=[1, -1]", r"`joint.weights` must be >= 0 and not all 0, got \[1.0, -1.0\]"),
    ("joint.weights=[0, 0]", r"`joint.weights` must be >= 0 and not all 0, got \[0.0, 0.0\]"),
    ("joint.batch_size=[2, 0]", r"`joint.batch_size` must be at least 1 each, got \[2, 0\]"),
    ("joint.weights=heavy", r"`joint.weights` must be a list of float, got str 'heavy'"),
    ("modality=[speech, radar]", r"`modality` must be 'speech' \| 'image' \| 'multispectral' \| 'video' or a list "
                                 r"of"),
])
def test_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY_JOINT, [override])


def test_a_zero_weight_modality_leaves_the_trunk_as_a_single_modality_run(joint_config, tmp_path):
    """One batch of each modality, losses weighted and summed: with the image weight at 0, the trunk, the speech
    stem and the speech head follow exactly the steps of a speech-only run from the same weights on the same data."""
    init = tmp_path / "init.safetensors"
    torch.manual_seed(0)
    ckpt.save_weights(build_model(joint_config.model, {m: modality_io(m, joint_config)
                                                       for m in joint_config.modalities}), init, joint_config)
    joint = replace(joint_config, joint=replace(joint_config.joint, weights=(1.0, 0.0)),
                    train=replace(joint_config.train, init_from=str(init), eval_every=0))
    speech = joint.for_modality("speech")
    speech = replace(speech, train=replace(speech.train, run_dir=str(tmp_path / "speech")))
    r_joint, r_speech = train(joint), train(speech)
    w_joint, w_speech = load_file(str(r_joint.run_dir / ckpt.WEIGHTS)), load_file(str(r_speech.run_dir / ckpt.WEIGHTS))
    assert set(w_speech) < set(w_joint)
    assert {k for k in w_joint if k not in w_speech} == {k for k in w_joint if ".image." in k}
    for k, v in w_speech.items():
        torch.testing.assert_close(w_joint[k], v, rtol=0, atol=1e-6, msg=k)
    init_w = load_file(str(init))
    assert not torch.equal(w_speech["trunk.mid.0.conv1.weight"], init_w["trunk.mid.0.conv1.weight"])  # it trained
    # the joint loss is the speech loss alone (logged per modality as well)
    assert r_joint.losses == pytest.approx(r_speech.losses, abs=1e-6)


def test_joint_run_reports_saves_and_loads(joint_run):
    run = joint_run.run_dir
    assert set(joint_run.validation) == {"speech/noisy", "speech/enhanced", "image/noisy", "image/enhanced"}
    assert set(joint_run.validation["speech/enhanced"]) == {"pesq", "stoi", "estoi", "si_sdr"}
    assert set(joint_run.validation["image/enhanced"]) == {"psnr", "ssim"}
    saved = json.loads((run / "validation.json").read_text())
    assert saved["report"]["image/enhanced"]["psnr"] == pytest.approx(joint_run.validation["image/enhanced"]["psnr"])
    log = (run / "log.txt").read_text()
    assert "xmodal train: speech + image (joint: speech batch 2 weight 1, image batch 4 weight 1)" in log
    assert "validation of speech at step 4" in log and "validation of image at step 4" in log
    assert "data (speech):" in log and "NOTE: no image data configured" in log
    train_line = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][0]
    assert {"loss", "speech/loss", "speech/magnitude", "image/loss", "image/l1"} <= set(train_line)
    assert train_line["loss"] == pytest.approx(train_line["speech/loss"] + train_line["image/loss"], rel=1e-5)
    assert sorted(p.name for p in (run / "demo_data").iterdir()) == ["image"]  # speech had data; demo images apart

    model, cfg = ckpt.load_run(run)
    assert cfg.modality == ("speech", "image") and sorted(model.modalities) == ["image", "speech"]
    joint_run.model.eval()
    wave = torch.randn(1, 1, 4000) * 0.1
    image = torch.rand(1, 1, 40, 36)
    for m, x in (("speech", wave), ("image", image)):
        adapter = make_adapter(m, cfg.for_modality(m))
        assert torch.equal(enhance(model, adapter, x, m), enhance(joint_run.model, adapter, x, m))

    speech = xmodal.load(run, modality="speech")
    images = xmodal.load(run, modality="image")
    assert type(speech).__name__ == "Denoiser" and type(images).__name__ == "ImageDenoiser"
    assert speech.config.modality == "speech" and images.config.train.batch_size == 4
    out = images.denoise(image[0, 0].numpy())
    expected = enhance(model, make_adapter("image", cfg.for_modality("image")), image, "image")[0, 0].numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)
    den = xmodal.Denoiser(model, cfg)  # a joint config given directly: the class's modality of it
    assert den.modality == "speech"


def test_load_errors(joint_run):
    run = joint_run.run_dir
    with pytest.raises(ModalityNeeded, match=r"a model trained jointly on speech and image: say which to load "
                                             r"\(modality='speech', ...\)"):
        xmodal.load(run)
    with pytest.raises(ValueError, match=r"a model of speech and image, not 'multispectral'"):
        xmodal.load(run, modality="multispectral")
    with pytest.raises(ValueError, match=r"a model of speech and image, not 'video'"):
        xmodal.load(run, modality="video")
    with pytest.raises(ValueError, match=r"`modality` must be one of 'speech', 'image', 'multispectral', 'video', "
                                         r"got 'radar'"):
        xmodal.load(run, modality="radar")
    with pytest.raises(ValueError, match=r"image_gray: a model of image, not 'speech'"):
        xmodal.load("gray", modality="speech")
    model, cfg = ckpt.load_run(run)
    with pytest.raises(ValueError, match=r"was trained jointly on speech and image; StackDenoiser takes "
                                         r"multispectral models"):
        xmodal.StackDenoiser(model, cfg)


def test_resume_equals_uninterrupted(joint_config, tmp_path):
    cfg = replace(joint_config, train=replace(joint_config.train, eval_every=0))
    whole = train(replace(cfg, train=replace(cfg.train, run_dir=str(tmp_path / "whole"))))
    parts = replace(cfg, train=replace(cfg.train, run_dir=str(tmp_path / "parts")))
    first = train(parts, stop_after=2)
    assert first.step == 2
    second = train(parts)
    assert second.resumed_from == 2 and second.step == 4
    assert first.losses + second.losses == pytest.approx(whole.losses, abs=1e-6)
    w1, w2 = load_file(str(tmp_path / "whole" / ckpt.WEIGHTS)), load_file(str(tmp_path / "parts" / ckpt.WEIGHTS))
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=0, atol=1e-6, msg=k)
    with pytest.raises(ConfigError, match=r"holds a run with a different `modality` config"):
        train(replace(cfg.for_modality("speech"), train=replace(cfg.train, run_dir=str(tmp_path / "parts"))))


def test_init_from_a_gray_model_moves_the_trunk_and_the_image_io_only(joint_config, tmp_path):
    gray = load_config(REPO / "recipes" / "tiny_image.yaml")
    torch.manual_seed(1)
    source = build_model(gray.model, {"image": modality_io("image", gray)})
    ckpt.save_weights(source, tmp_path / "gray.safetensors", gray)
    model = build_model(joint_config.model, {m: modality_io(m, joint_config) for m in joint_config.modalities})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loaded, fresh = ckpt.init_from(model, tmp_path / "gray.safetensors")
    assert sorted(fresh) == sorted(k for k in before if ".speech." in k)  # a spectrogram stem starts fresh
    state, src = model.state_dict(), source.state_dict()
    for k in loaded:
        assert torch.equal(state[k], src[k]), k
    for k in fresh:
        assert torch.equal(state[k], before[k]), k


def _wav(path: Path, seconds: float = 0.5, sample_rate: int = 16000) -> Path:
    rng = np.random.default_rng(0)
    sf.write(path, (0.1 * rng.standard_normal(int(seconds * sample_rate))).astype(np.float32), sample_rate)
    return path


def _png(path: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (30, 34), dtype=np.uint8)).save(path)
    return path


def test_cli_picks_the_modality_of_each_file(joint_run, tmp_path, capsys):
    from xmodal.denoise import main

    run = joint_run.run_dir
    wav, png = _wav(tmp_path / "a.wav"), _png(tmp_path / "b.png")
    stack = tmp_path / "c.npy"
    np.save(stack, np.random.default_rng(2).random((6, 20, 20), dtype=np.float32))
    out = tmp_path / "out"
    assert main([str(wav), str(png), str(stack), "-o", str(out), "--model", str(run), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"{stack}: the model {run} is a joint model of speech and image; this is a multispectral stack" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.wav", "b.png"]
    model, cfg = ckpt.load_run(run)
    from PIL import Image

    got = np.asarray(Image.open(out / "b.png"))
    image = xmodal.load(run, modality="image")
    expected = image.denoise(np.asarray(Image.open(png)) / 255.0, sigma="auto")  # the command line's default sigma
    np.testing.assert_array_equal(got, np.clip(np.rint(expected * 255), 0, 255).astype(np.uint8))
    speech, sr = sf.read(out / "a.wav", dtype="float32")
    assert sr == 16000 and speech.shape == (8000,)
    ref = xmodal.load(run, modality="speech").denoise(sf.read(wav, dtype="float32")[0], 16000)
    np.testing.assert_allclose(speech, ref, atol=1e-4)  # 16-bit PCM
    # --modality picks one of the model's modalities, and must be one of them
    assert main([str(png), "-o", str(tmp_path / "o2"), "--model", str(run), "--modality", "image", "--quiet"]) == 0
    assert main([str(wav), "-o", str(tmp_path / "o3"), "--model", str(run), "--modality", "multispectral"]) == 2
    assert (f"--modality multispectral does not match the model {run}: it is a joint model of speech and image"
            in capsys.readouterr().err)
    assert main([str(wav), "-o", str(tmp_path / "o4"), "--model", str(run), "--modality", "image"]) == 1
    assert "this is an audio file" in capsys.readouterr().err


def test_evaluate_takes_the_modality_it_scores(joint_run, tmp_path):
    from xmodal.evaluate import evaluate_images

    rng = np.random.default_rng(3)
    clean = rng.random((1, 24, 24)).astype(np.float32)
    for sub, x in (("clean", clean), ("noisy", np.clip(clean + 0.1 * rng.standard_normal(clean.shape), 0, 1))):
        (tmp_path / sub).mkdir()
        np.save(tmp_path / sub / "x.npy", x.astype(np.float32))
    report = evaluate_images(tmp_path / "clean", tmp_path / "noisy", denoiser=str(joint_run.run_dir),
                             progress=False)
    den = xmodal.load(joint_run.run_dir, modality="image")
    est = den.denoise(np.load(tmp_path / "noisy" / "x.npy"), sigma="auto")  # as python -m xmodal.denoise writes it
    from skimage.metrics import peak_signal_noise_ratio

    # a float file is scored as written: not clipped, not rounded
    expected = peak_signal_noise_ratio(clean.astype(np.float64), est.astype(np.float64), data_range=1)
    assert report["files"][0]["enhanced"]["psnr"] == pytest.approx(expected, abs=1e-3)


def test_ddp_two_gloo_processes_equal_one_process(joint_config, tmp_path):
    """The joint step is one forward call (every modality) per backward, as DDP needs."""
    single = replace(joint_config, train=replace(joint_config.train, run_dir=str(tmp_path / "one"), max_steps=3,
                                                 eval_every=0))
    train(single)
    d = joint_config.data
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "xmodal.train",
           str(TINY_JOINT), f"train.run_dir={tmp_path / 'two'}", "train.max_steps=3", "train.eval_every=0",
           f"data.clean_dir=[{d.clean_dir[0]}]", f"data.noise_dir=[{d.noise_dir[0]}]",
           f"data.valid_fraction={d.valid_fraction}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    w1, w2 = load_file(str(tmp_path / "one" / ckpt.WEIGHTS)), load_file(str(tmp_path / "two" / ckpt.WEIGHTS))
    lr = joint_config.optim.lr
    diffs = torch.cat([(w2[k] - w1[k]).abs().flatten() for k in w1])  # see tests/test_train.py for the bounds
    assert diffs.max() < 0.5 * lr
    assert (diffs > 0.05 * lr).float().mean() < 0.01


def test_speech_and_stacks_train_together(joint_config, tmp_path):
    cfg = replace(joint_config, modality=("multispectral", "speech"),
                  image=replace(joint_config.image, context_bands=1, bands_per_item=3),
                  joint=replace(joint_config.joint, batch_size=(2, 2)),
                  train=replace(joint_config.train, max_steps=2))
    result = train(cfg)
    assert result.step == 2 and len(result.losses) == 2 and all(np.isfinite(result.losses))
    assert set(result.validation) == {"multispectral/noisy", "multispectral/enhanced", "speech/noisy",
                                      "speech/enhanced"}
    assert set(result.validation["multispectral/enhanced"]) == {"psnr", "mpsnr", "ssim", "sam"}
    stacks = xmodal.load(result.run_dir, modality="multispectral")
    assert type(stacks).__name__ == "StackDenoiser"
    stack = np.random.default_rng(4).random((5, 20, 22), dtype=np.float32)
    assert stacks.denoise(stack).shape == (5, 20, 22)


def test_self_supervised_images_beside_supervised_speech(joint_config, tmp_path):
    """`image.self_supervised` changes the image track only: speech keeps its clean targets and its loss terms."""
    cfg = replace(joint_config, image=replace(joint_config.image, self_supervised="neighbor2neighbor"),
                  train=replace(joint_config.train, max_steps=2, log_every=1))
    result = train(cfg)
    assert result.step == 2 and all(np.isfinite(result.losses))
    log = (Path(cfg.train.run_dir) / "log.txt").read_text()
    assert "loss (image): self-supervised (Neighbor2Neighbor)" in log and "loss (speech)" not in log
    assert " image/rec " in log and " image/reg " in log and " speech/loss " in log and " image/l1 " not in log
    assert set(result.validation) == {"speech/noisy", "speech/enhanced"}  # the noisy images have no clean reference
