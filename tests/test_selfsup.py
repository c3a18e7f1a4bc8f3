"""Self-supervised training (Neighbor2Neighbor): the neighbour sub-sampler, the loss, the data path, config errors,
exact resume, and a tiny network that learns to denoise from noisy images alone (and does not when the two
sub-images are the same pixels)."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import xmodal.selfsup as selfsup
from tests.conftest import REPO
from xmodal.config import ConfigError, load_config
from xmodal.data.images import ImageCrops, load_image, resolve_image_data, resolve_stack_data
from xmodal.data.synthetic import make_demo_images, make_demo_stack
from xmodal.inference import enhance
from xmodal.modalities import make_adapter, make_loss
from xmodal.selfsup import (NEIGHBOUR_PAIRS, Neighbor2NeighborLoss, NeighbourPairs, gamma_at, neighbour_choices,
                            subsample)
from xmodal.train import train

TINY_IMAGE = REPO / "recipes" / "tiny_image.yaml"
SELF = ["image.self_supervised=neighbor2neighbor", "image_loss.ssim=0"]


def config(run_dir, *overrides):
    return load_config(TINY_IMAGE, [f"train.run_dir={run_dir}", "image.epoch_size=64", *SELF, *overrides])


def test_choices_are_edge_neighbours_drawn_uniformly():
    c = neighbour_choices(60, 70, np.random.default_rng(0))
    assert c.shape == (2, 60, 70) and c.dtype == np.int64
    r1, c1, r2, c2 = c[0] // 2, c[0] % 2, c[1] // 2, c[1] % 2
    assert (np.abs(r1 - r2) + np.abs(c1 - c2) == 1).all()  # share an edge: never the same pixel, never diagonal
    pair_ids = {tuple(p): i for i, p in enumerate(NEIGHBOUR_PAIRS)}
    counts = np.bincount([pair_ids[(a, b)] for a, b in zip(c[0].ravel(), c[1].ravel())], minlength=8)
    expected = c[0].size / 8
    assert np.abs(counts - expected).max() < 4 * np.sqrt(expected)
    assert np.array_equal(c, neighbour_choices(60, 70, np.random.default_rng(0)))


def test_subsample_takes_the_chosen_pixel_of_each_cell_for_every_channel():
    x = torch.randn(2, 3, 6, 8)
    choice = torch.from_numpy(np.random.default_rng(1).integers(4, size=(2, 3, 4)))
    out = subsample(x, choice)
    assert out.shape == (2, 3, 3, 4)
    for b in range(2):
        for i in range(3):
            for j in range(4):
                k = int(choice[b, i, j])
                assert torch.equal(out[b, :, i, j], x[b, :, 2 * i + k // 2, 2 * j + k % 2])


def test_subsample_errors():
    with pytest.raises(ValueError, match=r"subsample: H and W must be even \(2 x 2 cells\), got 5 x 8"):
        subsample(torch.zeros(1, 1, 5, 8), torch.zeros(1, 2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"subsample: expected `choice` of shape \(1, 3, 4\), got \(1, 4, 3\)"):
        subsample(torch.zeros(1, 1, 6, 8), torch.zeros(1, 4, 3, dtype=torch.int64))


def test_neighbour_sub_images_of_white_noise_are_independent():
    """On a flat image with white noise the two sub-images differ by noise alone: mean square 2 sigma^2, and their
    correlation is 0 (what makes one a target for the other)."""
    sigma = 0.1
    y = 0.5 + sigma * torch.randn(4, 1, 256, 256, generator=torch.Generator().manual_seed(0))
    rng = np.random.default_rng(2)
    choices = torch.from_numpy(np.stack([neighbour_choices(128, 128, rng) for _ in range(4)]))
    g1, g2 = subsample(y, choices[:, 0]), subsample(y, choices[:, 1])
    assert float((g1 - g2).square().mean()) == pytest.approx(2 * sigma ** 2, rel=0.02)
    a, b = (g1 - 0.5).flatten(), (g2 - 0.5).flatten()
    assert abs(float((a * b).mean() / (a.std() * b.std()))) < 0.01


def test_gamma_ramps_linearly_to_its_value():
    assert [gamma_at(s, 100, 2.0) for s in (0, 25, 50, 100, 150)] == [0.0, 0.5, 1.0, 2.0, 2.0]
    assert gamma_at(3, 0, 2.0) == 2.0


def test_loss_is_reconstruction_plus_weighted_regulariser():
    g = torch.Generator().manual_seed(3)
    est, target, f1, f2 = (torch.rand(2, 1, 5, 6, generator=g) for _ in range(4))
    total, terms = Neighbor2NeighborLoss()(est, target, f1, f2, 1.5)
    rec = float(((est - target) ** 2).mean())
    reg = float(((est - target - f1 + f2) ** 2).mean())
    assert float(terms["rec"]) == pytest.approx(rec, rel=1e-6)
    assert float(terms["reg"]) == pytest.approx(reg, rel=1e-6)
    assert float(total) == pytest.approx(rec + 1.5 * reg, rel=1e-6)
    assert float(Neighbor2NeighborLoss()(est, target, f1, f2, 0.0)[0]) == pytest.approx(rec, rel=1e-6)


def test_neighbour_pairs_keep_the_crop_and_draw_choices_from_the_item_number(tmp_path):
    cfg = config(tmp_path / "run", "image.noise.sigma=[0,0]").image
    images = [load_image(f, 1) for f in sorted(make_demo_images(tmp_path / "im", n=3, size=48, seed=0).iterdir())]
    crops = ImageCrops(images, cfg)
    pairs = NeighbourPairs(crops, seed=cfg.seed)
    noisy, choices = pairs[5]
    assert torch.equal(noisy, crops[5][0]) and torch.equal(noisy, crops[5][1])  # nothing added: noisy = the file
    assert choices.shape == (2, 16, 16) and choices.dtype == torch.int64
    assert torch.equal(pairs[5][1], choices) and not torch.equal(pairs[6][1], choices)
    assert len(pairs) == len(crops)


@pytest.mark.parametrize("overrides, message", [
    (["image.pairs_dir=/data/pairs"], "image.self_supervised trains without clean images; image.pairs_dir has them: "
                                      "train supervised"),
    (["image.noise_map=true"], "image.self_supervised cannot give the network a noise-level map"),
    (["image.patch_size=33"], "image.self_supervised splits crops into 2 x 2 cells: image.patch_size must be even, "
                              "got 33"),
    (["image.self_supervised_gamma=-1"], "image.self_supervised_gamma must be >= 0, got -1"),
    (["modality=video"], "image.self_supervised is for the image and multispectral modalities, not video"),
    (["image_loss.ssim=0.1"], "image_loss.ssim would compare with noise: set it to 0"),
    (["image.self_supervised=noise2void"], "`image.self_supervised` must be 'neighbor2neighbor' or null, got str "
                                           "'noise2void'"),
    (["image.self_supervised=null", "image.self_supervised_gamma=5"],
     "image.self_supervised_gamma (5) weighs Neighbor2Neighbor's regulariser: it needs image.self_supervised: "
     "neighbor2neighbor"),
])
def test_config_errors(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config(tmp_path / "run", *overrides)


def test_overrides_in_any_order_satisfy_checks_between_keys(tmp_path):
    """A check between keys waits for the overrides after it; an error that stays names the override that made it."""
    base = [f"train.run_dir={tmp_path}"]
    for order in (SELF, SELF[::-1]):
        assert load_config(TINY_IMAGE, base + order).image.self_supervised == "neighbor2neighbor"
    for order in (["image_loss.ms_ssim=1", "image.patch_size=192"], ["image.patch_size=192", "image_loss.ms_ssim=1"]):
        assert load_config(TINY_IMAGE, base + order).image_loss.ms_ssim == 1
    with pytest.raises(ConfigError, match=r"override `train.max_steps=abc`: `train.max_steps` must be int"):
        load_config(TINY_IMAGE, base + ["train.max_steps=abc", "train.batch_size=2"])
    with pytest.raises(ConfigError, match=r"override `image_loss.ms_ssim=1`: image_loss.ms_ssim needs image.patch_size "
                                          r"above 160"):
        load_config(TINY_IMAGE, base + ["image_loss.ms_ssim=1", "train.batch_size=2"])
    assert load_config(TINY_IMAGE, base + ["train.max_steps=abc", "train.max_steps=7"]).train.max_steps == 7
    # a first failure fixed later, a second one left: the second is reported, with the override that made it
    with pytest.raises(ConfigError, match=r"override `image.patch_size=33`: `image`: image.self_supervised splits "
                                          r"crops into 2 x 2 cells: image.patch_size must be even, got 33"):
        load_config(TINY_IMAGE, base + [SELF[0], "image.patch_size=33", SELF[1], "train.batch_size=2"])


def test_image_corpus_holds_nothing_out_without_a_clean_reference(tmp_path):
    folder = make_demo_images(tmp_path / "noisy", n=10, size=48, seed=1)
    cfg = config(tmp_path / "run", f"image.train_dir=[{folder}]", "image.noise.sigma=[0,0]").image
    corpus = resolve_image_data(cfg, tmp_path / "demo")
    assert isinstance(corpus.train, NeighbourPairs) and len(corpus.train.crops.images) == 10 and corpus.valid == []
    assert corpus.description == ("noisy images, self-supervised (Neighbor2Neighbor): 10 training images, 0 validation "
                                  "images (none: no clean reference; image.valid_dir or image.valid_pairs_dir give "
                                  "one), no noise added")
    clean = make_demo_images(tmp_path / "clean", n=2, size=48, seed=2)
    corpus = resolve_image_data(config(tmp_path / "run", f"image.train_dir=[{folder}]",
                                       f"image.valid_dir=[{clean}]").image, tmp_path / "demo")
    assert len(corpus.train.crops.images) == 10 and len(corpus.valid) == 2  # clean validation images, noise added
    assert not torch.equal(corpus.valid[0].noisy, corpus.valid[0].clean)


def test_stack_corpus_trains_on_every_row(tmp_path):
    stack = make_demo_stack(tmp_path / "stack", bands=6, size=64, seed=0)
    cfg = config(tmp_path / "run", "modality=multispectral", f"image.train_dir=[{stack}]", "image.noise.sigma=[0,0]")
    corpus = resolve_stack_data(cfg.image, tmp_path / "demo")
    assert isinstance(corpus.train, NeighbourPairs) and corpus.valid == []
    assert corpus.train.crops.stacks[0].shape[1] == 64  # no rows held out (valid_rows 0.25 would leave 48)
    assert "no clean reference" in corpus.description and "no noise added" in corpus.description
    assert isinstance(make_loss("multispectral", cfg), Neighbor2NeighborLoss)


@pytest.mark.parametrize("modality", ["image", "multispectral"])
def test_resume_equals_uninterrupted(tmp_path, modality):
    """The neighbour choices belong to the items: a run stopped and resumed steps exactly as one that was not."""
    extra = ["modality=multispectral", "image.bands_per_item=3", "image.context_bands=1"] \
        if modality == "multispectral" else []
    whole = train(config(tmp_path / "whole", *extra))
    train(config(tmp_path / "parts", *extra), stop_after=2)
    parts = train(config(tmp_path / "parts", *extra))
    assert parts.resumed_from == 2 and whole.step == parts.step == 4
    assert all(np.isfinite(whole.losses)) and whole.losses[2:] == parts.losses
    w1, w2 = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(tmp_path / "parts" /
                                                                                    "model.safetensors"))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    log = (tmp_path / "whole" / "log.txt").read_text()
    assert " rec " in log and " reg " in log and "self-supervised (Neighbor2Neighbor)" in log


def test_ddp_two_gloo_processes_equal_one_process(tmp_path):
    """The whole-crop pass runs on the unwrapped network, outside DDP's forward: two ranks still step as one process
    (measured: weights within 3e-8 after 6 steps)."""
    args = [*SELF, "train.max_steps=6", "image.epoch_size=64"]
    train(load_config(TINY_IMAGE, [f"train.run_dir={tmp_path / 'one'}", *args]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "xmodal.train",
           str(TINY_IMAGE), f"train.run_dir={tmp_path / 'two'}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    w1, w2 = (load_file(str(tmp_path / run / "model.safetensors")) for run in ("one", "two"))
    diffs, lr = torch.cat([(w2[k] - w1[k]).abs().flatten() for k in w1]), load_config(TINY_IMAGE).optim.lr
    assert diffs.max() < 0.05 * lr and diffs.mean() < 1e-4 * lr  # the bounds of tests/test_train.py's DDP test


def _trained_gain(tmp_path, name):
    """PSNR gain (dB) on fresh noisy demo images of a tiny network trained 100 steps on noisy images alone."""
    cfg = config(tmp_path / name, "image.patch_size=64", "image.noise.sigma=[0.1,0.1]", "train.max_steps=100",
                 "train.batch_size=8", "optim.warmup_steps=10", "train.save_every=0")
    result = train(cfg)
    adapter, model = make_adapter("image", cfg), result.model.eval()
    gains = []
    for f in sorted(make_demo_images(tmp_path / "test", n=3, size=96, seed=123).iterdir()):
        x = torch.from_numpy(load_image(f, 1))
        y = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
        out = enhance(model, adapter, y, "image")
        gains.append(10 * np.log10(float((y - x).square().mean()) / float((out - x).square().mean())))
    return float(np.mean(gains))


def test_learns_to_denoise_from_noisy_images_alone(tmp_path, monkeypatch):
    assert _trained_gain(tmp_path, "neighbours") > 3.0  # measured 3.9 dB
    # control: the same pixel in both sub-images makes the target the input, and the network learns the identity
    monkeypatch.setattr(selfsup, "NEIGHBOUR_PAIRS", np.array([(k, k) for k in range(4)], dtype=np.int64))
    assert abs(_trained_gain(tmp_path, "same_pixel")) < 1.0


def test_images_smaller_than_a_crop_are_refused(tmp_path):
    """Mirror padding would put copies of the target pixels' noise into the input sub-images."""
    folder = make_demo_images(tmp_path / "noisy", n=3, size=48, seed=1)
    cfg = config(tmp_path / "run", f"image.train_dir=[{folder}]", "image.patch_size=64").image
    with pytest.raises(ValueError, match=r"image.self_supervised: .*demo_00.png is 48 x 48 pixels, smaller than "
                                         r"image.patch_size 64: its mirrored padding would show the network the noise"):
        resolve_image_data(cfg, tmp_path / "demo")
    stack = make_demo_stack(tmp_path / "stack", bands=6, size=40, seed=0)
    cfg = config(tmp_path / "run", "modality=multispectral", f"image.train_dir=[{stack}]", "image.patch_size=64")
    with pytest.raises(ValueError, match=r"is 40 x 40 pixels, smaller than image.patch_size 64"):
        resolve_stack_data(cfg.image, tmp_path / "demo")


def test_the_recipe_s_documented_demo_run_trains(tmp_path, capsys):
    """`python -m xmodal.train self_supervised image.noise.sigma=[0.1,0.1]` (the recipe's header): the demo images
    are made as large as the recipe's 128 x 128 crops, which self-supervised training does not pad."""
    from xmodal.train import main as train_main

    assert train_main(["self_supervised", "image.noise.sigma=[0.1,0.1]", f"train.run_dir={tmp_path / 'r'}",
                       "train.max_steps=1", "train.batch_size=1", "train.precision=fp32", "train.threads=1"]) == 0
    assert "done: 1 steps" in capsys.readouterr().out
    from PIL import Image

    demo = sorted((tmp_path / "r" / "demo_data" / "images").iterdir())
    assert demo and all(min(Image.open(f).size) >= 128 for f in demo)
