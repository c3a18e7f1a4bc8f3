"""The video modality: adapter, clip I/O, camera-path clips, training, VideoDenoiser, CLI, evaluation, export.

Tiny untrained U-Nets (recipes/tiny_video.yaml, tiny_image.yaml) on small random clips, on CPU: the tests check
shapes, equivalences, formats and errors, not quality.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import xmodal
import xmodal.pretrained
from xmodal.adapters import VideoAdapter
from xmodal.adapters.image import spectral_neighbours
from xmodal.checkpoint import init_from, save_weights
from xmodal.config import dump_config, load_config
from xmodal.data.video import ClipCrops, StillMotionClips, camera_path, resolve_video_data, still_clip
from xmodal.denoise import VideoDenoiser, load, main
from xmodal.evaluate import detect_modality, evaluate_videos
from xmodal.evaluate import main as evaluate_main
from xmodal.imageio import ImageReadError, read_image, write_image
from xmodal.inference import enhance
from xmodal.metrics import MetricAccumulator, psnr_score, temporal_psnr_score, video_metrics
from xmodal.modalities import modality_io
from xmodal.models import build_model
from xmodal.videoio import ClipInfo, ClipReader, ClipWriter, read_clip, write_clip

ROOT = Path(__file__).resolve().parents[1]
TINY_VIDEO = ROOT / "recipes" / "tiny_video.yaml"
TINY_IMAGE = ROOT / "recipes" / "tiny_image.yaml"


def make_run(folder: Path, recipe: Path, overrides: list[str], seed: int = 0) -> Path:
    cfg = load_config(recipe, overrides)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = build_model(cfg.model, {cfg.modality: modality_io(cfg.modality, cfg)})
    save_weights(model, folder / "model.safetensors", cfg)
    dump_config(cfg, folder / "config.yaml")
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("video_runs")
    return {"gray": make_run(root / "gray", TINY_VIDEO, []),
            "color": make_run(root / "color", TINY_VIDEO, ["image.channels=3"]),
            "k2": make_run(root / "k2", TINY_VIDEO, ["image.context_frames=2"])}


@pytest.fixture(scope="module")
def gray(runs: dict[str, Path]) -> VideoDenoiser:
    return load(runs["gray"])


def random_clip(T: int, C: int, H: int, W: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((T, C, H, W), dtype=np.float32)


# ------------------------------------------------------------------------------------------------------- adapter


@pytest.mark.parametrize("M, C", [(1, 1), (1, 3), (3, 3), (3, 1)])
@pytest.mark.parametrize("T", [1, 2, 7])
def test_adapter_round_trip_and_neighbours(M: int, C: int, T: int) -> None:
    k = 2
    adapter = VideoAdapter(M, k)
    x = torch.rand(2, T, C, 6, 5)
    feats, ctx = adapter.encode(x)
    items = 2 * T * (C if M == 1 and C > 1 else 1)
    assert feats.shape == (items, (2 * k + 1) * M, 6, 5)
    middle = feats[:, k * M:(k + 1) * M]  # the denoised frame's channels
    y = adapter.decode(middle, ctx)
    if C == M or M == 1:
        assert torch.equal(y, x)
    else:  # a gray clip through a colour model: the mean of the (identical) replicated channels
        assert torch.allclose(y, x, atol=1e-6)
    # frame 0's context is mirrored: frames 2, 1, 0, 1, 2 (T >= 3), all frame 0 for a 1-frame clip
    first = feats.reshape(-1, T, 2 * k + 1, M, 6, 5)[0, 0, :, 0]  # (2k+1, H, W) of item 0, frame 0, channel 0
    src = x[0, :, 0] if C == M or M == 1 else x[0, :, 0]
    expected = spectral_neighbours(T, k)[0]
    assert torch.equal(first, src[expected])


def test_adapter_unbatched_and_encode_middle_matches_encode() -> None:
    for M, C in [(1, 1), (1, 3), (3, 3), (3, 1)]:
        adapter = VideoAdapter(M, 2)
        x = torch.rand(7, C, 8, 9)
        feats, ctx = adapter.encode(x)
        assert adapter.decode(feats[:, 2 * M:3 * M], ctx).shape == x.shape
        window = x[spectral_neighbours(7, 2)[3]]  # frame 3's window
        mid, mctx = adapter.encode_middle(window)
        items = feats.reshape(C, 7, 5 * M, 8, 9)[:, 3] if ctx.mode == "fold" else feats[3:4]
        assert torch.equal(mid, items)
        assert adapter.decode(mid[:, 2 * M:3 * M], mctx).shape == (1, C, 8, 9)


@pytest.mark.parametrize("x, error, message", [
    (torch.rand(4, 8, 8), ValueError, r"Expected `video` of shape \(T, C, H, W\) or \(B, T, C, H, W\), got "
                                      r"\(4, 8, 8\)"),
    (torch.rand(0, 1, 8, 8), ValueError, r"Expected a non-empty `video`, got shape \(0, 1, 8, 8\)"),
    (torch.ones(3, 1, 8, 8, dtype=torch.uint8), TypeError, r"Expected a floating-point `video` \(scaled to \[0, 1\]\)"),
    (np.zeros((3, 1, 8, 8), np.float32), TypeError, r"Expected `video` to be a torch.Tensor, got ndarray"),
    (torch.rand(3, 2, 8, 8), ValueError, r"this model denoises 3-channel videos; got frames with 2 channels"),
])
def test_adapter_errors(x, error, message) -> None:
    with pytest.raises(error, match=message):
        VideoAdapter(3, 1).encode(x)


def test_adapter_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"image.context_frames must be >= 0, got -1"):
        VideoAdapter(1, -1)
    with pytest.raises(ValueError, match=r"image.channels must be at least 1, got 0"):
        VideoAdapter(0, 1)
    adapter = VideoAdapter(1, 2)
    with pytest.raises(ValueError, match=r"Expected a window of shape \(5, C, H, W\), got \(3, 1, 8, 8\)"):
        adapter.encode_middle(torch.rand(3, 1, 8, 8))
    _, ctx = adapter.encode(torch.rand(4, 1, 8, 8))
    with pytest.raises(ValueError, match=r"`ctx` was made for videos of shape \(1, 4, 1, 8, 8\), got "
                                         r"\(1, 5, 1, 8, 8\)"):
        adapter.encode(torch.rand(5, 1, 8, 8), ctx)


# ---------------------------------------------------------------------------------------------------- camera paths


def test_camera_path_static_and_bounded() -> None:
    assert camera_path(6, 0, 0, np.random.default_rng(0)).tolist() == [[0, 0]] * 6
    for seed in range(20):
        path = camera_path(8, 3, 1, np.random.default_rng(seed))
        assert path.shape == (8, 2) and path.dtype == np.int64
        assert path.min(axis=0).tolist() == [0, 0]
        step = np.abs(np.diff(path, axis=0))
        assert step.max() <= 3 + 2 * 1 + 1  # speed + shake of two frames + rounding


def test_still_motion_clips_are_shifted_crops() -> None:
    H = W = 60
    # every pixel holds its own position: a crop's first pixel tells where it was cut
    image = (np.arange(H * W, dtype=np.float32).reshape(1, H, W)) / (H * W)
    cfg = load_config(TINY_VIDEO, ["image.patch_size=16", "image.frames_per_item=5", "image.motion=3",
                                   "image.jitter=0", "image.augment=false",
                                   "image.noise={kind: gaussian, sigma: [0.0, 0.0]}"]).image
    data = StillMotionClips([image], cfg)
    for n in range(10):
        noisy, clean = data[n]
        assert noisy.shape == clean.shape == (5, 1, 16, 16)
        assert torch.equal(noisy, clean)  # sigma 0
        pos = np.rint(clean[:, 0, 0, 0].numpy() * H * W).astype(int)  # (T,) flat index of each frame's corner
        rows, cols = pos // W, pos % W
        for x in (rows, cols):  # a straight path at a constant speed, rounded to whole pixels
            step = np.diff(x)
            assert np.abs(step).max() <= 3 and step.max() - step.min() <= 1
        for t in range(5):  # each frame is the exact crop at its position
            assert torch.equal(clean[t, 0], torch.from_numpy(image[0, rows[t]:rows[t] + 16, cols[t]:cols[t] + 16]))
    a, b = data[3], data[3]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # items are reproducible


def test_still_motion_clips_one_noise_level_per_clip() -> None:
    cfg = load_config(TINY_VIDEO, ["image.patch_size=32", "image.frames_per_item=4",
                                   "image.noise={kind: gaussian, sigma: [0.02, 0.2]}"]).image
    data = StillMotionClips([np.full((1, 64, 64), 0.5, np.float32)], cfg)
    for n in range(5):
        noisy, clean = data[n]
        stds = (noisy - clean).std(dim=(1, 2, 3))  # (T,)
        assert 0.02 * 0.8 < float(stds.mean()) < 0.2 * 1.2
        assert float(stds.max() / stds.min()) < 1.25  # the same level in every frame


def test_still_motion_clips_with_camera_noise_film_each_clip_with_one_camera() -> None:
    """Camera noise on colour clips: the frames' noise has one level (one camera's settings per clip), each frame its
    own draw, JPEG on the 8-bit grid; a noise mix draws Gaussian clips too."""
    noise = "image.noise={kind: camera, peak: [30, 10000], sigma: [0, 0.01], jpeg_quality: [60, 100]}"
    cfg = load_config(TINY_VIDEO, ["image.patch_size=32", "image.frames_per_item=4", "image.channels=3",
                                   "image.augment=false", noise]).image
    data = StillMotionClips([np.full((3, 64, 64), 0.4, np.float32)], cfg)
    levels = []
    for n in range(6):
        noisy, clean = data[n]
        assert noisy.shape == clean.shape == (4, 3, 32, 32)
        assert torch.allclose(noisy * 255, (noisy * 255).round(), atol=1e-4)  # JPEG-coded frames
        err = (noisy - clean).pow(2).mean(dim=(1, 2, 3))  # (T,)
        assert float(err.max() / err.min()) < 1.5 and not torch.equal(noisy[0], noisy[1])
        levels.append(float(err.mean()))
    assert max(levels) > 3 * min(levels)  # cameras differ between clips
    mixed = StillMotionClips([np.full((3, 64, 64), 0.4, np.float32)], load_config(
        TINY_VIDEO, ["image.patch_size=32", "image.channels=3", noise,
                     "image.noise_mix=[{kind: gaussian, sigma: [0.1, 0.1]}]"]).image)
    on_grid = [bool(torch.allclose(x * 255, (x * 255).round(), atol=1e-4)) for x, _ in (mixed[n] for n in range(12))]
    assert 0 < sum(on_grid) < 12  # camera (JPEG) clips and Gaussian clips


@pytest.mark.parametrize("spec", [{"kind": "salt_and_pepper", "amount": (0.0, 0.2)},
                                  {"kind": "gaussian", "sigma": (0.0, 0.2), "per_channel": True},
                                  {"kind": "poisson_gaussian", "peak": (5.0, 50.0), "sigma": (0.0, 0.05)}])
def test_clip_noise_one_level_per_clip_independent_frames(spec) -> None:
    """One level per clip (per channel with per_channel), a new draw in every frame: salt-and-pepper hit the same
    pixels of every frame, and per-channel levels changed from frame to frame, when frames were an image's channels."""
    from xmodal.data.video import _noisy_clip
    from xmodal.noise import NoiseSpec

    clean = torch.full((6, 3, 48, 48), 0.5)
    noise = _noisy_clip(clean, NoiseSpec(**spec), 11) - clean  # (T, C, H, W)
    for t in range(1, 6):
        assert not torch.equal(noise[t], noise[0])
    hits = noise.abs() > 1e-6
    if spec["kind"] == "salt_and_pepper":  # a pixel's channels are hit together, frames apart
        assert torch.equal(hits, hits[:, :1].expand_as(hits))
        share = hits[:, 0].float().mean((1, 2))  # (T,) one amount for the clip: shares within sampling error
        assert share.max() - share.min() < 0.05 and share.mean() > 0
        assert (hits[1:, 0] & hits[:-1, 0]).float().mean() < 1.5 * share.mean() ** 2 + 0.01  # independent frames
    else:
        std = noise.std(dim=(2, 3))  # (T, C): the same level in every frame
        assert ((std.max(0).values - std.min(0).values) / std.mean(0)).max() < 0.15
        if spec.get("per_channel"):
            assert std.mean(0).max() / std.mean(0).min() > 1.2  # channels drawn apart


def test_still_motion_clips_coded_as_h264_video() -> None:
    """``h264_crf``: each clip is coded as one video after its noise (8-bit frames, a CRF per clip); without it a
    clip's noise is the draw of one image: the clip's frames stacked into one tall image."""
    from xmodal.data.images import noise_generator
    from xmodal.data.video import _noisy_clip
    from xmodal.noise import NoiseSpec, apply_noise, h264

    clean = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    spec = NoiseSpec(kind="gaussian", sigma=(0.05, 0.05))
    tall = clean.permute(1, 0, 2, 3).reshape(1, 3, 128, 32)
    before = apply_noise(tall, spec, noise_generator(7))[0][0].reshape(3, 4, 32, 32).permute(1, 0, 2, 3)
    assert torch.equal(_noisy_clip(clean, spec, 7), before)
    generator = noise_generator(7)
    apply_noise(tall, spec, generator)  # the noise draws, then the CRF draw
    coded = h264(before, (20, 30), generator, frames=4)
    assert torch.equal(_noisy_clip(clean, NoiseSpec(kind="gaussian", sigma=(0.05, 0.05), h264_crf=(20, 30)), 7), coded)
    noise = "image.noise={kind: camera, peak: [30, 10000], sigma: [0, 0.01], h264_crf: [15, 32]}"
    cfg = load_config(TINY_VIDEO, ["image.patch_size=32", "image.frames_per_item=4", "image.channels=3",
                                   "image.augment=false", noise]).image
    data = StillMotionClips([np.full((3, 64, 64), 0.4, np.float32)], cfg)
    for n in range(3):
        noisy, clean = data[n]
        assert noisy.shape == clean.shape == (4, 3, 32, 32)
        assert torch.allclose(noisy * 255, (noisy * 255).round(), atol=1e-4)  # decoded 8-bit video


def test_still_motion_clips_saturation_from_a_recipe() -> None:
    """``image.saturation: [low, high]`` in a recipe: every frame of a clip gets the same factor (the colours of an
    object do not flicker), the clean clip is the vivid one."""
    from xmodal.data.images import _LUMA

    y, x = np.mgrid[0:64, 0:64] / 64.0
    image = np.stack([0.3 + 0.4 * x, 0.5 - 0.2 * y, 0.4 + 0.1 * x * y]).astype(np.float32)  # mild colours
    args = ["image.patch_size=16", "image.frames_per_item=3", "image.channels=3", "image.jitter=0",
            "image.noise={kind: gaussian, sigma: [0.0, 0.0]}"]
    plain = StillMotionClips([image], load_config(TINY_VIDEO, args).image)
    vivid = StillMotionClips([image], load_config(TINY_VIDEO, [*args, "image.saturation=[1.2, 1.8]"]).image)
    assert vivid.config.saturation == (1.2, 1.8)
    factors = []
    for n in range(6):
        (_, a), (noisy, b) = plain[n], vivid[n]
        luma = torch.einsum("c,tchw->thw", torch.from_numpy(_LUMA), a)[:, None]
        ratio = (b - luma) / (a - luma)  # (T, C, H, W) where the colour is clear of gray
        ratio = ratio[(a - luma).abs() > 0.02]
        assert float(ratio.max() - ratio.min()) < 1e-3  # one factor for the whole clip
        factors.append(float(ratio.mean()))
        assert torch.equal(noisy, b)  # sigma 0: the noisy clip is the vivid clean one
    assert all(1.2 - 1e-3 < f < 1.8 + 1e-3 for f in factors) and max(factors) - min(factors) > 0.1


def test_moving_object_is_local_motion() -> None:
    from xmodal.data.video import add_moving_object

    clip = np.zeros((6, 1, 40, 50), np.float32)
    texture = np.ones((1, 12, 16), np.float32)
    out = add_moving_object(clip, texture, 3, np.random.default_rng(0))
    assert np.array_equal(clip, np.zeros_like(clip))  # the input is not changed
    centres = []
    for t in range(6):
        ys, xs = np.nonzero(out[t, 0])
        assert abs(len(ys) - np.pi * 6 * 8) < 0.15 * np.pi * 6 * 8  # an ellipse of the texture's size
        centres.append((ys.mean(), xs.mean()))
    steps = np.abs(np.diff(np.array(centres), axis=0))
    assert steps.max() <= 3 + 1e-9 and steps.sum() > 0  # it moves, at most 3 px per frame per axis


def test_local_motion_share_of_training_clips(monkeypatch: pytest.MonkeyPatch) -> None:
    import xmodal.data.video as video_data

    calls = []
    real = video_data.add_moving_object

    def counted(clip, texture, speed, rng):
        calls.append((texture.shape, speed))
        return real(clip, texture, speed, rng)

    monkeypatch.setattr(video_data, "add_moving_object", counted)
    image = np.random.default_rng(0).random((1, 80, 80), dtype=np.float32)
    for share, low, high in ((0.0, 0, 0), (1.0, 200, 200), (0.5, 70, 130)):
        calls.clear()
        cfg = load_config(TINY_VIDEO, ["image.patch_size=32", f"image.local_motion={share}", "image.motion=2"]).image
        data = StillMotionClips([image], cfg)
        for n in range(200):
            data[n]
        assert low <= len(calls) <= high
    assert all(8 <= shape[1] <= 16 and shape[1] == shape[2] and speed == 5 for shape, speed in calls)


def test_mixed_channels_take_other_images_along_the_same_path() -> None:
    """``image.mixed_channels``: that share of the clips takes channels 1.. from other images; every channel follows
    the clip's camera path (the same frame-to-frame motion)."""
    H = W = 80
    pos = (np.arange(H)[:, None] * W + np.arange(W)[None, :]) / 1e4  # a position code in [0, 0.64)
    images = [np.stack([k + 10 * c + pos for c in range(3)]).astype(np.float32) for k in range(3)]
    for share, low, high in ((0.0, 0, 0), (1.0, 150, 200), (0.5, 60, 120)):
        cfg = load_config(TINY_VIDEO, ["image.patch_size=32", f"image.mixed_channels={share}", "image.motion=2",
                                       "image.channels=3"]).image
        data = StillMotionClips(images, cfg)
        mixed = 0
        for n in range(200):
            _, clean = data[n]
            clean = clean.numpy().astype(np.float64)
            whole = np.floor(clean + 1e-6)
            assert np.array_equal(whole // 10, np.broadcast_to(np.arange(3)[None, :, None, None], whole.shape))
            source = whole % 10  # which image each pixel came from: one per channel
            assert all(len(np.unique(source[:, ch])) == 1 for ch in range(3))
            mixed += len(np.unique(source)) > 1
            motion = np.diff(clean - whole, axis=0)  # frame-to-frame change of the position code, per channel
            np.testing.assert_allclose(motion, np.broadcast_to(motion[:, :1], motion.shape), atol=1e-5)
        # channels 1 and 2 draw their image at random: with share 1 about 8 clips in 9 mix images
        assert low <= mixed <= high, (share, mixed)


def test_clip_crops_consecutive_frames_and_short_clips() -> None:
    clip = np.broadcast_to(np.arange(9, dtype=np.float32)[:, None, None, None], (9, 1, 40, 40)) / 10
    cfg = load_config(TINY_VIDEO, ["image.clips=true", "image.patch_size=16", "image.frames_per_item=4",
                                   "image.augment=false", "image.noise={kind: gaussian, sigma: [0.0, 0.0]}"]).image
    noisy, clean = ClipCrops([np.ascontiguousarray(clip)], cfg)[0]
    frames = np.rint(clean[:, 0, 0, 0].numpy() * 10).astype(int)
    assert clean.shape == (4, 1, 16, 16) and np.all(np.diff(frames) == 1)
    short = np.ascontiguousarray(clip[:2])
    _, clean = ClipCrops([short], cfg)[1]
    assert np.rint(clean[:, 0, 0, 0].numpy() * 10).astype(int).tolist() == [0, 1, 0, 1]  # mirrored in time


def test_still_clip_is_as_large_as_the_path_allows() -> None:
    image = np.random.default_rng(0).random((1, 50, 70), dtype=np.float32)
    clip, path = still_clip(image, 6, 2, 1, 0)
    ext = path.max(axis=0)
    assert clip.shape == (6, 1, 50 - ext[0], 70 - ext[1])
    for t, (i, j) in enumerate(path):
        assert np.array_equal(clip[t], image[:, i:i + clip.shape[2], j:j + clip.shape[3]])


# ------------------------------------------------------------------------------------------------------------ data


def write_frames(folder: Path, clip: np.ndarray, dtype: str = "uint8", ext: str = ".png") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(clip):
        write_image(folder / f"frame{t + 1}{ext}", frame, dtype)
    return folder


def test_resolve_video_data_from_stills_and_clips(tmp_path: Path) -> None:
    stills = tmp_path / "stills"
    stills.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        write_image(stills / f"s{i}.png", rng.random((1, 48, 56), dtype=np.float32), "uint8")
    cfg = load_config(TINY_VIDEO, [f"image.train_dir=[{stills}]", f"image.valid_dir=[{stills / 's0.png'}]",
                                   "image.valid_crop=0"]).image
    corpus = resolve_video_data(cfg, tmp_path / "demo")
    assert isinstance(corpus.train, StillMotionClips) and len(corpus.valid) == 1
    v = corpus.valid[0]
    assert v.name == "s0" and v.clean.shape[:2] == (4, 1) and v.noisy.shape == v.clean.shape
    assert "3 training images, 1 validation clips of 4 frames" in corpus.description
    again = resolve_video_data(cfg, tmp_path / "demo").valid[0]
    assert torch.equal(again.noisy, v.noisy)  # fixed path and noise

    write_frames(tmp_path / "clipA", rng.random((6, 3, 40, 44), dtype=np.float32))
    np.save(tmp_path / "clipB.npy", rng.random((5, 40, 44), dtype=np.float32))
    cfg = load_config(TINY_VIDEO, ["image.clips=true", f"image.train_dir=[{tmp_path / 'clipA'}]",
                                   f"image.valid_dir=[{tmp_path / 'clipB.npy'}]"]).image
    corpus = resolve_video_data(cfg, tmp_path / "demo")
    assert isinstance(corpus.train, ClipCrops)
    assert corpus.train.items[0].shape == (6, 1, 40, 44)  # colour frames -> luma for a gray model
    assert corpus.valid[0].clean.shape == (4, 1, 40, 40)  # valid_frames 4, valid_crop 40


@pytest.mark.parametrize("overrides, error, message", [
    (["image.pairs_dir=x"], ValueError, r"video: `image.pairs_dir`/`valid_pairs_dir` are not supported"),
    (["image.noise_map=true"], ValueError, r"image.noise_map is supported for the image modality only"),
    (["image.noise_then=[{kind: salt_and_pepper}]"], ValueError, r"image.noise_then / valid_noise_then compose "
                                                                 r"noise for images and stacks; video clips take one "
                                                                 r"model per item"),
    (["image.clips=true"], ValueError, r"video: image.clips=true needs image.train_dir"),
    (["image.clips=true", "image.train_dir=[/no/such/clip]"], FileNotFoundError,
     r"image.train_dir: /no/such/clip does not exist"),
    (["image.channels=5", "image.valid_noise={kind: gaussian, sigma: [0.1, 0.1], h264_crf: [23, 23]}"], ValueError,
     r"image.valid_noise.h264_crf: H.264 codes gray or RGB images, but image.channels is 5"),
])
def test_resolve_video_data_errors(tmp_path: Path, overrides, error, message) -> None:
    with pytest.raises(error, match=message):
        resolve_video_data(load_config(TINY_VIDEO, overrides).image, tmp_path)


@pytest.mark.parametrize("override, message", [
    ("image.motion=-1", r"`image.motion` must be >= 0, got -1"),
    ("image.align_range=-1", r"`image.align_range` must be >= 0 \(0 = off\), got -1"),
    ("image.local_motion=1.5", r"`image.local_motion` must be in \[0, 1\], got 1.5"),
    ("image.mixed_channels=-0.1", r"`image.mixed_channels` must be in \[0, 1\], got -0.1"),
    ("image.context_frames=-2", r"`image.context_frames` must be >= 0, got -2"),
    ("image.frames_per_item=0", r"`image.frames_per_item` must be at least 1, got 0"),
    ("image.valid_frames=0", r"`image.valid_frames` must be at least 1, got 0"),
    ("modality=[speech, image, video]", r"image and video both read the `image` section"),
    ("modality=[image, multispectral, video]", r"image and multispectral and video all read the `image` section"),
    ("modality=[video, multispectral]", r"video and multispectral both read the `image` section"),
])
def test_config_errors(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(TINY_VIDEO, [override])


# ----------------------------------------------------------------------------------------------------------- clip io


@pytest.mark.parametrize("dtype, ext", [("uint8", ".png"), ("uint16", ".png"), ("uint16", ".tif"),
                                        ("float32", ".tif"), ("uint8", ".npy")])
def test_frame_folder_round_trip(tmp_path: Path, dtype: str, ext: str) -> None:
    C = 1 if dtype == "uint16" and ext == ".png" else 3
    clip = random_clip(4, C, 12, 17)
    src = write_frames(tmp_path / "src", clip, dtype, ext)
    got, info = read_clip(src)
    assert info.kind == "frames" and info.dtype == dtype and info.shape == (4, C, 12, 17)
    assert info.names == tuple(f"frame{t + 1}{ext}" for t in range(4))
    levels = {"uint8": 255, "uint16": 65535}.get(dtype)
    expected = np.rint(clip.astype(np.float64) * levels) / levels if levels else clip
    np.testing.assert_allclose(got, expected, atol=1e-6)
    write_clip(tmp_path / "dst", got, info)
    assert sorted(os.listdir(tmp_path / "dst")) == sorted(os.listdir(src))
    again, info2 = read_clip(tmp_path / "dst")
    assert np.array_equal(again, got) and info2.dtype == dtype


def test_natural_frame_order(tmp_path: Path) -> None:
    clip = np.stack([np.full((1, 4, 4), t * 10 / 255, np.float32) for t in range(12)])
    write_frames(tmp_path / "c", clip)  # frame1 ... frame12: frame10 sorts after frame9
    got, _ = read_clip(tmp_path / "c")
    assert np.rint(got[:, 0, 0, 0] * 255).tolist() == [t * 10 for t in range(12)]


@pytest.mark.parametrize("shape, layout, C", [((5, 9, 11), "THW", 1), ((5, 9, 11, 3), "THWC", 3)])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_npy_clip_round_trip(tmp_path: Path, shape, layout: str, C: int, dtype: str) -> None:
    rng = np.random.default_rng(1)
    arr = (rng.random(shape) * (255 if dtype == "uint8" else 65535 if dtype == "uint16" else 1)).astype(dtype)
    np.save(tmp_path / "c.npy", arr)
    reader = ClipReader(tmp_path / "c.npy")
    assert reader.info == ClipInfo("npy", (5, C, 9, 11), dtype, layout=layout) and len(reader) == 5
    clip, info = read_clip(tmp_path / "c.npy")
    write_clip(tmp_path / "d.npy", clip, info)
    back = np.load(tmp_path / "d.npy")
    assert back.dtype == arr.dtype and np.array_equal(back, arr)


def test_clip_read_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match=r"nope: clip not found \(a folder of frames, a .npy file, a multi-page "
                                             r"TIFF or a video file\)"):
        ClipReader(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ImageReadError, match=r"empty: holds no frame"):
        ClipReader(tmp_path / "empty")
    write_frames(tmp_path / "mixed", random_clip(2, 1, 8, 8))
    write_image(tmp_path / "mixed" / "frame3.png", random_clip(1, 1, 8, 9)[0], "uint8")
    reader = ClipReader(tmp_path / "mixed")
    with pytest.raises(ImageReadError, match=r"frame3.png: frame of shape \(1, 8, 9\) \(C, H, W\) in a clip whose "
                                             r"first frame \(frame1.png\) is \(1, 8, 8\)"):
        reader[2]
    write_frames(tmp_path / "depth", random_clip(2, 1, 8, 8))
    write_image(tmp_path / "depth" / "frame3.png", random_clip(1, 1, 8, 8)[0], "uint16")
    with pytest.raises(ImageReadError, match=r"frame3.png: uint16 frame in a clip whose first frame "
                                             r"\(frame1.png\) is uint8"):
        read_clip(tmp_path / "depth")
    write_frames(tmp_path / "corrupt", random_clip(2, 1, 8, 8))
    (tmp_path / "corrupt" / "frame2.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageReadError, match=r"frame2.png"):
        read_clip(tmp_path / "corrupt")
    np.save(tmp_path / "flat.npy", np.zeros((8, 8), np.float32))
    with pytest.raises(ImageReadError, match=r"flat.npy: a clip array is \(T, H, W\) or \(T, H, W, C\) with C <= 4, "
                                             r"got shape \(8, 8\)"):
        ClipReader(tmp_path / "flat.npy")
    np.save(tmp_path / "empty.npy", np.zeros((0, 8, 8), np.float32))
    with pytest.raises(ImageReadError, match=r"empty.npy: empty clip of shape \(0, 8, 8\)"):
        ClipReader(tmp_path / "empty.npy")
    np.save(tmp_path / "int.npy", np.zeros((2, 8, 8), np.int64))
    with pytest.raises(ImageReadError, match=r"int.npy: unsupported dtype int64 \(expected uint8, uint16, "):
        ClipReader(tmp_path / "int.npy")
    nan = np.zeros((2, 8, 8), np.float32)
    nan[1, 2, 2] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(ImageReadError, match=r"nan.npy: frame 1 holds NaN or infinite values"):
        read_clip(tmp_path / "nan.npy")
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(ImageReadError, match=r"junk.npy: not readable as .npy"):
        ClipReader(tmp_path / "junk.npy")
    (tmp_path / "clip.gif").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"clip.gif: a clip is a folder of frames, a .npy file, a multi-page TIFF "
                                             r"or a video file \(.mp4, .mov, .mkv, .avi, .webm\), got '.gif'"):
        ClipReader(tmp_path / "clip.gif")


def test_clip_writer_is_atomic(tmp_path: Path) -> None:
    clip = random_clip(3, 1, 8, 8)
    dst = tmp_path / "out"
    with pytest.raises(ValueError, match=r"frame 1 has shape \(1, 8, 9\), expected \(1, 8, 8\)"):
        with ClipWriter(dst, None, (3, 1, 8, 8)) as w:
            w.write(0, clip[0])
            w.write(1, np.zeros((1, 8, 9), np.float32))
    assert os.listdir(tmp_path) == []  # neither the destination nor a temporary folder
    with pytest.raises(RuntimeError, match=r"1 of 3 frames written"):
        w = ClipWriter(tmp_path / "c.npy", None, (3, 1, 8, 8))
        w.write(0, clip[0])
        w.commit()
    w.abort()
    assert os.listdir(tmp_path) == []
    write_clip(dst, clip)
    with pytest.raises(FileExistsError, match=r"out: exists \(pass overwrite=True / --overwrite to replace it\)"):
        write_clip(dst, clip)
    with pytest.raises(ValueError, match=r"a .npy clip holds 1 channel \(T, H, W\) or up to 4 \(T, H, W, C\), got 5"):
        write_clip(tmp_path / "five.npy", random_clip(2, 5, 8, 8))
    assert sorted(os.listdir(tmp_path)) == ["out"]


# -------------------------------------------------------------------------------------------------------- training


def test_tiny_video_training_runs_and_reports_video_metrics(tmp_path: Path) -> None:
    from xmodal.train import train

    cfg = load_config(TINY_VIDEO, [f"train.run_dir={tmp_path / 'run'}"])
    result = train(cfg)
    assert len(result.losses) == 4 and all(math.isfinite(v) for v in result.losses)
    assert set(result.validation["enhanced"]) == {"psnr", "ssim", "tpsnr"} and result.failures == 0
    den = load(tmp_path / "run")
    assert isinstance(den, VideoDenoiser) and den.context_frames == 1


@pytest.mark.parametrize("channels", [1, 3])
def test_init_from_image_model_is_the_image_model_frame_by_frame(tmp_path: Path, channels: int) -> None:
    image_run = make_run(tmp_path / "image", TINY_IMAGE, [f"image.channels={channels}"], seed=3)
    cfg = load_config(TINY_VIDEO, [f"image.channels={channels}", "image.context_frames=2"])
    net = build_model(cfg.model, {"video": modality_io("video", cfg)})
    loaded, fresh = init_from(net, image_run)
    assert fresh == []
    image_den = load(image_run)
    clip = torch.from_numpy(random_clip(5, channels, 20, 28, seed=4))
    with torch.no_grad():
        from xmodal.modalities import make_adapter

        video = enhance(net.eval(), make_adapter("video", cfg), clip, "video")
        frames = enhance(image_den.model, image_den.adapter, clip, "image")
    assert torch.allclose(video, frames, atol=1e-5)


# ------------------------------------------------------------------------------------------------------ denoiser


@pytest.mark.parametrize("run, C, T", [("gray", 1, 6), ("gray", 3, 2), ("color", 3, 5), ("color", 1, 4),
                                       ("k2", 1, 1), ("k2", 1, 7)])
def test_denoise_equals_whole_clip_forward(runs: dict[str, Path], run: str, C: int, T: int) -> None:
    den = load(runs[run])
    clip = random_clip(T, C, 21, 30, seed=T)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a gray clip through the colour model warns (tested elsewhere)
        out = den.denoise(clip)
    assert out.shape == clip.shape and out.dtype == np.float32
    with torch.no_grad():
        ref = enhance(den.model, den.adapter, torch.from_numpy(clip), "video").numpy()
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_denoise_shapes_types_and_tiling(gray: VideoDenoiser) -> None:
    clip = random_clip(4, 1, 40, 52)
    a = gray.denoise(clip)
    b = gray.denoise(clip[:, 0])  # (T, H, W)
    np.testing.assert_allclose(b, a[:, 0], atol=1e-6)
    t = gray.denoise(torch.from_numpy(clip).double())
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64
    np.testing.assert_allclose(gray.denoise(clip, tile=64, overlap=8), a, atol=1e-6)  # the frame fits one tile
    tiled = gray.denoise(clip, tile=24, overlap=8)
    assert tiled.shape == a.shape and np.isfinite(tiled).all()


@pytest.mark.parametrize("clip, error, message", [
    (np.zeros((4, 8, 8), np.uint8), TypeError, r"Expected `clip` to be a float array \(values in \[0, 1\]\)"),
    (np.zeros((8, 8), np.float32), ValueError, r"Expected `clip` of shape \(T, H, W\) or \(T, C, H, W\) with no "
                                               r"empty axis, got \(8, 8\)"),
    (np.full((2, 8, 8), np.nan, np.float32), ValueError, r"`clip` contains NaN or infinite values"),
])
def test_denoise_errors(gray: VideoDenoiser, clip, error, message) -> None:
    with pytest.raises(error, match=message):
        gray.denoise(clip)


def test_channels_last_clip_equals_channels_first(runs: dict[str, Path], gray: VideoDenoiser) -> None:
    colour = load(runs["color"])
    clip = random_clip(3, 3, 16, 19)
    thwc = np.moveaxis(clip, 1, -1).copy()  # (T, C, H, W) -> (T, H, W, C)
    for den in (gray, colour):
        out = den.denoise(thwc, channels_last=True)
        assert out.shape == thwc.shape
        np.testing.assert_array_equal(out, np.moveaxis(den.denoise(clip), 1, -1))
    with pytest.raises(ValueError, match=r"Expected `clip` of shape \(T, H, W, C\) \(channels_last=True\) with no "
                                         r"empty axis, got \(3, 16, 19\)"):
        gray.denoise(clip[:, 0], channels_last=True)
    with pytest.warns(UserWarning, match=r"`clip` of shape \(3, 16, 19, 3\) is read as \(T, C, H, W\): frames of "
                                         r"19 x 3 pixels; for a channels-last clip pass channels_last=True"):
        gray.denoise(thwc)
    with pytest.warns(UserWarning, match=r"read as \(T, H, W\): frames of 19 x 3 pixels"):
        gray.denoise(thwc[0])  # one (H, W, C) image given as a clip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gray.denoise(clip)


def test_colour_model_refuses_other_channel_counts(runs: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=r"this model denoises 3-channel \(or gray\) videos; `clip` has 2 channels "
                                         r"\(shape \(3, 2, 16, 16\)\); use a gray video model, which takes any "
                                         r"channel count$"):  # no channels-last hint for this shape
        load(runs["color"]).denoise(random_clip(3, 2, 16, 16))
    gray_in_colour = r"a colour model given a gray clip copies it into its three channels.*use a gray model " \
                     r"\('video' or 'video_gray_real'\)"
    for clip in (random_clip(3, 1, 16, 16), random_clip(3, 1, 16, 16)[:, 0]):  # (T, 1, H, W) and (T, H, W)
        with pytest.warns(UserWarning, match=gray_in_colour):
            assert load(runs["color"]).denoise(clip).shape == clip.shape


def test_colour_model_given_a_channels_last_clip_says_channels_last(runs: dict[str, Path]) -> None:
    """A (T, H, W, 3) clip without channels_last=True: the error names the shape and the flag, as for images (the
    gray model alone would denoise it as 32 channels of 40 x 3 pixels)."""
    thwc = np.moveaxis(random_clip(3, 3, 32, 40), 1, -1).copy()  # (T, C, H, W) -> (T, H, W, C)
    message = (r"this model denoises 3-channel \(or gray\) videos; `clip` has 32 channels \(shape \(3, 32, 40, 3\)\); "
               r"use a gray video model, which takes any channel count; for a channels-last clip pass "
               r"channels_last=True$")
    with pytest.raises(ValueError, match=message):
        load(runs["color"]).denoise(thwc)


def test_denoise_file_streams_equal_to_memory(gray: VideoDenoiser, tmp_path: Path) -> None:
    clip = random_clip(5, 3, 24, 30)
    src = write_frames(tmp_path / "clip", clip, "uint16", ".tif")
    stored, _ = read_clip(src)
    out = gray.denoise_file(src, tmp_path / "out")
    got, info = read_clip(out)
    assert info.dtype == "uint16" and info.names == tuple(f"frame{t + 1}.tif" for t in range(5))
    expected = np.clip(np.rint(gray.denoise(stored).astype(np.float64) * 65535), 0, 65535) / 65535
    np.testing.assert_allclose(got, expected, atol=1.01 / 65535)  # float32 outputs may round to the next level
    assert np.mean(np.abs(got - expected) < 1e-7) > 0.99
    np.save(tmp_path / "c.npy", (clip[:, 0] * 255).astype(np.uint8))
    gray.denoise_file(tmp_path / "c.npy", tmp_path / "d.npy")
    d = np.load(tmp_path / "d.npy")
    assert d.dtype == np.uint8 and d.shape == (5, 24, 30)
    frames = gray.denoise_file(tmp_path / "c.npy", tmp_path / "frames")  # .npy clip -> frame folder
    assert sorted(os.listdir(frames)) == [f"frame_{t:05d}.png" for t in range(5)]
    assert np.array_equal(read_clip(frames)[0][:, 0] * 255, d.astype(np.float32))


def test_denoise_file_errors_write_nothing(gray: VideoDenoiser, tmp_path: Path) -> None:
    src = write_frames(tmp_path / "clip", random_clip(3, 1, 16, 16))
    with pytest.raises(ValueError, match=r"refusing to write the output over its input folder"):
        gray.denoise_file(src, src)
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError, match=r"exists: output folder already exists"):
        gray.denoise_file(src, tmp_path / "exists")
    with pytest.raises(ImageReadError, match=r"missing: clip not found"):
        gray.denoise_file(tmp_path / "missing", tmp_path / "o1")
    (src / "frame3.png").write_bytes(b"corrupt")  # the last frame is read last: the first two are denoised
    with pytest.raises(ImageReadError, match=r"frame3.png"):
        gray.denoise_file(src, tmp_path / "o2")
    assert sorted(os.listdir(tmp_path)) == ["clip", "exists"]  # nothing half-written


def test_value_range_maps_clips_to_unit_and_back(gray: VideoDenoiser) -> None:
    clip = random_clip(4, 1, 16, 20, seed=3)
    ref = gray.denoise(clip)
    np.testing.assert_allclose(gray.denoise(clip * 4000 + 100, value_range=(100, 4100)), ref * 4000 + 100,
                               rtol=0, atol=4000 * 2e-6)
    auto = gray.denoise(clip, value_range="auto")
    assert np.abs(auto - ref).max() > 1e-4  # the clip's own percentiles are not exactly (0, 1)
    np.testing.assert_allclose(gray.denoise(torch.from_numpy(clip * 0.01), value_range="auto").numpy(), auto * 0.01,
                               rtol=0, atol=0.01 * 2e-6)
    with pytest.warns(UserWarning, match=r"`clip` values span \[.*\] \(0.1-99.9 percentiles\), but the model "
                                         r"denoises \[0, 1\] data; pass value_range="):
        gray.denoise(clip * 255)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gray.denoise(clip * 255, value_range=(0, 255))
    with pytest.raises(ValueError, match=r"`value_range` \(lo, hi\) must be finite with lo < hi, got \(1, 0\)"):
        gray.denoise(clip, value_range=(1, 0))


def test_denoise_file_value_range(gray: VideoDenoiser, runs: dict[str, Path], tmp_path: Path) -> None:
    clip = random_clip(5, 1, 16, 20, seed=4)[:, 0]
    np.save(tmp_path / "counts.npy", clip * 4000)  # float counts: auto-ranged by default, as an image file is
    gray.denoise_file(tmp_path / "counts.npy", tmp_path / "a.npy")
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), gray.denoise(clip * 4000, value_range="auto"),
                               rtol=0, atol=4000 * 2e-6)
    np.save(tmp_path / "u16.npy", np.rint(clip * 4095).astype(np.uint16))  # 12-bit data in 16-bit samples
    gray.denoise_file(tmp_path / "u16.npy", tmp_path / "b.npy", value_range=(0, 4095))  # in the file's units
    expected = gray.denoise(np.rint(clip * 4095).astype(np.float32), value_range=(0, 4095))
    np.testing.assert_allclose(np.load(tmp_path / "b.npy"), np.clip(np.rint(expected), 0, 65535), atol=1.0)
    assert main([str(tmp_path / "u16.npy"), "-o", str(tmp_path / "cli"), "--model", str(runs["gray"]), "--quiet",
                 "--value-range", "0,4095"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "cli" / "u16.npy"), np.load(tmp_path / "b.npy"))
    with pytest.raises(ValueError, match=r"u16.npy: `value_range` must be None, 'auto' or \(lo, hi\), got 'max'"):
        gray.denoise_file(tmp_path / "u16.npy", tmp_path / "c.npy", value_range="max")
    assert not (tmp_path / "c.npy").exists()


def test_noise_above_the_training_range_lowers_the_clip_contrast(gray: VideoDenoiser, tmp_path: Path) -> None:
    """Given ``sigma`` (a level or "auto": the root mean square of up to 8 evenly spaced frames' estimates), a clip
    whose noise is above 0.9 x the model's range is denoised at one lower contrast about those frames' mean: the
    same as a ``value_range`` that maps it so; in memory and from a file alike."""
    from xmodal.noise import estimate_sigma

    assert gray.max_sigma == pytest.approx(50 / 255)
    clip = random_clip(12, 1, 24, 28)  # uniform noise: above the range
    picks = np.unique(np.linspace(0, 11, 8).round().astype(int))
    assert len(picks) == 8

    def as_range(level: float) -> tuple[float, float]:  # the value_range equal to lowering the contrast for `level`
        gain = 0.9 * (50 / 255) / level
        lo = float(clip[picks].mean()) * (1 - 1 / gain)
        return lo, lo + 1 / gain

    got = gray.denoise(clip, sigma=0.4)
    np.testing.assert_allclose(got, gray.denoise(clip, value_range=as_range(0.4)), atol=1e-5)
    assert not np.allclose(got, gray.denoise(clip), atol=1e-3)
    levels = [np.sqrt(np.mean(estimate_sigma(clip[t], max_patches=16_384) ** 2)) for t in picks]
    level = float(np.sqrt(np.mean(np.square(levels))))
    assert level > 0.9 * 50 / 255
    auto = gray.denoise(clip, sigma="auto")
    np.testing.assert_allclose(auto, gray.denoise(clip, value_range=as_range(level)), atol=1e-5)
    for low in (0.0, 0.1):  # within the range: as it is
        np.testing.assert_array_equal(gray.denoise(clip, sigma=low), gray.denoise(clip))
    smooth = np.broadcast_to(np.linspace(0.2, 0.8, 28, dtype=np.float32), (3, 1, 24, 28)).copy()
    np.testing.assert_array_equal(gray.denoise(smooth, sigma="auto"), gray.denoise(smooth))  # no noise read
    # in the clip's units with value_range; from a file (the same 8 frames)
    np.testing.assert_allclose(gray.denoise(clip * 1000, sigma=400.0, value_range=(0, 1000)), got * 1000, atol=1e-2)
    np.save(tmp_path / "clip.npy", clip[:, 0])  # (T, H, W) float: used as [0, 1] data
    gray.denoise_file(tmp_path / "clip.npy", tmp_path / "auto.npy", sigma="auto")
    np.testing.assert_allclose(np.load(tmp_path / "auto.npy"), auto[:, 0], atol=1e-6)
    # errors name the file and write nothing
    with pytest.raises(ValueError, match=r"`sigma` must be a float or 'auto' \(None: the image as it is\), "
                                         r"got 'loud'"):
        gray.denoise(clip, sigma="loud")
    with pytest.raises(TypeError, match=r"Expected `sigma` to be a float or 'auto' for this blind model"):
        gray.denoise(clip, sigma=np.full((24, 28), 0.1, np.float32))
    with pytest.raises(ValueError, match=r"clip.npy: `sigma` must be finite and >= 0 \(a noise standard deviation\), "
                                         r"got -1"):
        gray.denoise_file(tmp_path / "clip.npy", tmp_path / "bad.npy", sigma=-1.0)
    with pytest.raises(TypeError, match=r"clip.npy: Expected `sigma` to be a float or 'auto' for this blind model"):
        gray.denoise_file(tmp_path / "clip.npy", tmp_path / "bad.npy", sigma=np.zeros((24, 28), np.float32))
    assert not (tmp_path / "bad.npy").exists()


def test_load_and_repr(runs: dict[str, Path]) -> None:
    den = xmodal.load(runs["k2"])
    assert isinstance(den, xmodal.VideoDenoiser)
    assert repr(den).startswith("VideoDenoiser(") and "context_frames=2" in repr(den)
    with pytest.raises(ValueError, match=r"is a video model \(config.modality\); ImageDenoiser takes image models"):
        xmodal.ImageDenoiser(den.model, den.config)


# ------------------------------------------------------------------------------------------------------------- cli


def test_cli_denoises_clips(runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    src = write_frames(tmp_path / "in" / "walk", random_clip(4, 1, 20, 24))
    np.save(tmp_path / "in" / "pan.npy", random_clip(3, 1, 20, 24)[:, 0])
    write_image(tmp_path / "in" / "still.png", random_clip(1, 1, 20, 24)[0], "uint8")
    code = main([str(src), str(tmp_path / "in" / "pan.npy"), str(tmp_path / "in" / "still.png"),
                 "-o", str(tmp_path / "out"), "--model", str(runs["gray"]), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert re.search(r"still.png: the model is a video model; a clip must be a folder of frames, a .npy file "
                     r"\(T, H, W\) / \(T, H, W, C\), a multi-page TIFF or a video file \(.mp4, .mov, .mkv, .avi, "
                     r"\.webm\), got '.png'", err)
    assert sorted(os.listdir(tmp_path / "out")) == ["pan.npy", "walk"]
    assert len(os.listdir(tmp_path / "out" / "walk")) == 4
    code = main([str(src), "-o", str(tmp_path / "out2"), "--modality", "image", "--model", str(runs["gray"]),
                 "--quiet"])
    assert code == 2 and "--modality image does not match the model" in capsys.readouterr().err
    # --format: a .npy clip written as a lossless video file; a folder of frames keeps its name and frame files
    code = main([str(src), str(tmp_path / "in" / "pan.npy"), "-o", str(tmp_path / "out3"), "--model",
                 str(runs["gray"]), "--quiet", "--format", "mkv"])
    assert code == 0 and sorted(os.listdir(tmp_path / "out3")) == ["pan.mkv", "walk"]
    clip, _ = read_clip(tmp_path / "out3" / "pan.mkv")
    # a float clip in [0, 1] goes into 16-bit FFV1 (lossless): within half a code of 65535
    expected = np.clip(np.rint(np.load(tmp_path / "out" / "pan.npy") * 65535), 0, 65535) / 65535
    np.testing.assert_allclose(clip[:, 0], expected, atol=1e-6)


def test_cli_picks_the_colour_or_gray_video_model_per_clip(runs: dict[str, Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Without --model, camera footage (video files, folders of JPEG frames) goes to the bundled models trained on
    camera noise, `video_color_real` (RGB) and `video_gray_real` (gray); (T, H, W, 3) arrays and folders of PNG frames
    to `video_color` (RGB) and `video_gray`; each model is loaded once and each output is that model's."""
    import xmodal.denoise as den_mod

    root = tmp_path / "pretrained"
    shutil.copytree(runs["gray"], root / "video_gray")
    shutil.copytree(runs["color"], root / "video_color")
    shutil.copytree(runs["color"], root / "video_color_real")
    shutil.copytree(runs["gray"], root / "video_gray_real")
    monkeypatch.setattr(xmodal.pretrained, "_HERE", root)
    loaded: list[str | None] = []
    real_load = den_mod.load
    monkeypatch.setattr(den_mod, "load", lambda name, device="cpu", precision="fp32":
                        loaded.append(name) or real_load(name, device, precision))
    inp = tmp_path / "in"
    rgb, gray = random_clip(3, 3, 20, 24, seed=1), random_clip(3, 1, 20, 24, seed=2)
    write_frames(inp / "rgb_frames", rgb)
    write_frames(inp / "gray_frames", gray)
    np.save(inp / "rgb.npy", rgb.transpose(0, 2, 3, 1))  # (T, H, W, 3)
    np.save(inp / "gray.npy", gray[:, 0])  # (T, H, W)
    (inp / "junk.npy").write_bytes(b"not an array")  # unreadable: the gray model's reader says why
    files = ["rgb_frames", "gray_frames", "rgb.npy", "gray.npy", "junk.npy"]
    code = main([*(str(inp / f) for f in files), "-o", str(tmp_path / "out"), "--modality", "video", "--quiet"])
    assert code == 1 and re.search(r"junk.npy: not readable as .npy", capsys.readouterr().err)
    assert sorted(loaded) == ["video_color", "video_gray"]  # each once
    assert sorted(os.listdir(tmp_path / "out")) == ["gray.npy", "gray_frames", "rgb.npy", "rgb_frames"]
    color, mono = load(runs["color"]), load(runs["gray"])
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "rgb.npy"),  # with the command line's --sigma auto
                                  color.denoise(np.load(inp / "rgb.npy"), channels_last=True, sigma="auto"))
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "gray.npy"),
                                  mono.denoise(np.load(inp / "gray.npy"), sigma="auto"))
    assert den_mod._default_video_model(inp / "rgb_frames") == "video_color"
    assert den_mod._default_video_model(inp / "gray_frames") == "video_gray"
    write_frames(inp / "jpeg_frames", rgb, ext=".jpg")  # frames a camera wrote, or extracted from its video
    write_frames(inp / "gray_jpeg_frames", gray, ext=".jpg")
    assert den_mod._default_video_model(inp / "jpeg_frames") == "video_color_real"
    assert den_mod._default_video_model(inp / "gray_jpeg_frames") == "video_gray_real"
    write_clip(inp / "rgb.mkv", rgb)
    write_clip(inp / "gray.mkv", gray)  # a gray stream
    assert den_mod._default_video_model(inp / "rgb.mkv") == "video_color_real"
    assert den_mod._default_video_model(inp / "gray.mkv") == "video_gray_real"
    # gray footage stored as colour goes to the gray models; a black first frame does not make a colour clip gray
    mono = np.repeat(gray, 3, axis=1)  # (T, 3, H, W), equal channels
    write_clip(inp / "mono.mkv", mono)
    write_frames(inp / "mono_frames", mono)
    np.save(inp / "mono.npy", mono.transpose(0, 2, 3, 1))
    fade_in = rgb.copy()
    fade_in[0] = 0.0
    np.save(inp / "fade_in.npy", fade_in.transpose(0, 2, 3, 1))
    for name, model in (("mono.mkv", "video_gray_real"), ("mono_frames", "video_gray"), ("mono.npy", "video_gray"),
                        ("fade_in.npy", "video_color")):
        assert den_mod._default_video_model(inp / name) == model, name
    loaded.clear()
    assert main([str(inp / "rgb.mkv"), str(inp / "gray.mkv"), "-o", str(tmp_path / "out2"), "--quiet"]) == 0
    assert sorted(loaded) == ["video_color_real", "video_gray_real"]
    assert read_clip(tmp_path / "out2" / "rgb.mkv")[1].shape == (3, 3, 20, 24)
    assert read_clip(tmp_path / "out2" / "gray.mkv")[1].shape == (3, 1, 20, 24)


@pytest.mark.parametrize("key, colours", [("color", 3), ("gray", 1)])
def test_alpha_of_frames_is_copied(runs: dict[str, Path], tmp_path: Path, key: str, colours: int) -> None:
    """RGBA / gray+alpha frames: the colour channels are denoised as the clip without alpha, the alpha is copied."""
    rng = np.random.default_rng(3)
    clip = random_clip(4, colours + 1, 20, 24, seed=4)
    clip[:, -1] = rng.integers(0, 256, (4, 20, 24)) / 255.0  # any alpha, to the exact 8-bit level
    write_frames(tmp_path / "alpha", clip)
    assert read_image(tmp_path / "alpha" / "frame1.png")[1].mode == ("RGBA" if colours == 3 else "LA")
    write_frames(tmp_path / "plain", clip[:, :colours])
    den = load(runs[key])
    den.denoise_file(tmp_path / "alpha", tmp_path / "out_alpha")
    den.denoise_file(tmp_path / "plain", tmp_path / "out_plain")
    for t in range(4):
        got, info = read_image(tmp_path / "out_alpha" / f"frame{t + 1}.png")
        assert info.mode == ("RGBA" if colours == 3 else "LA")
        np.testing.assert_array_equal(got[-1], read_image(tmp_path / "alpha" / f"frame{t + 1}.png")[0][-1])
        np.testing.assert_array_equal(got[:colours], read_image(tmp_path / "out_plain" / f"frame{t + 1}.png")[0])
    if colours == 3:  # the command line sends RGBA frames to the colour model
        import xmodal.denoise as den_mod

        assert den_mod._default_video_model(tmp_path / "alpha") == "video_color"


# -------------------------------------------------------------------------------------------------------- metrics


def test_temporal_psnr_values() -> None:
    rng = np.random.default_rng(0)
    ref = rng.random((6, 1, 64, 64))
    static = ref + rng.normal(0, 0.05, (1, 1, 64, 64))  # the same error in every frame: no flicker
    assert temporal_psnr_score(ref, static) > 200  # identical changes up to float rounding
    noise = rng.normal(0, 0.05, ref.shape)
    e = noise[1:] - noise[:-1]
    assert math.isclose(temporal_psnr_score(ref, ref + noise), -10 * math.log10(np.mean(e ** 2)), rel_tol=1e-9)
    flicker = temporal_psnr_score(ref, ref + noise)
    assert abs(psnr_score(ref.reshape(6, 64, 64), (ref + noise).reshape(6, 64, 64)) - 3.01 - flicker) < 0.1
    with pytest.raises(ValueError, match=r"tpsnr: needs at least 2 frames, got 1"):
        temporal_psnr_score(ref[:1], ref[:1])
    with pytest.raises(ValueError, match=r"tpsnr: `ref` and `deg` must have the same shape"):
        temporal_psnr_score(ref, ref[:3])


def test_video_metrics_record_failures() -> None:
    acc = MetricAccumulator()
    ref = np.random.default_rng(1).random((1, 1, 8, 8))
    scores = video_metrics(acc, "noisy", "clip", ref, ref * 0.5)
    assert set(scores) == {"psnr"}  # ssim: frames smaller than 11 x 11; tpsnr: one frame
    reasons = sorted(f[1] + ": " + f[3] for f in acc.failures)
    assert reasons[0].startswith("ssim: ssim: images must be at least 11 x 11")
    assert reasons[1] == "tpsnr: tpsnr: needs at least 2 frames, got 1"
    acc = MetricAccumulator()
    clip = np.random.default_rng(2).random((2, 3, 16, 16))
    assert video_metrics(acc, "noisy", "clip", clip, clip.reshape(3, 2, 16, 16)) == {}  # same count, other frames
    assert sorted(f[1] for f in acc.failures) == ["psnr", "ssim", "tpsnr"]
    assert all("`ref` and `deg` must have the same shape, got (2, 3, 16, 16) and (3, 2, 16, 16)" in f[3]
               for f in acc.failures)


def test_evaluate_videos(runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(2)
    for name in ("a", "b"):
        clean = rng.random((4, 1, 24, 24), dtype=np.float32)
        noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1).astype(np.float32)
        write_frames(tmp_path / "clean" / name, clean)
        write_frames(tmp_path / "noisy" / name, noisy)
    assert detect_modality(tmp_path / "clean") == "video"
    same = evaluate_videos(tmp_path / "clean", tmp_path / "noisy", enhanced_dir=tmp_path / "clean")
    assert same["mean"]["enhanced"]["psnr"] == math.inf and same["mean"]["enhanced"]["ssim"] == pytest.approx(1.0)
    clean, _ = read_clip(tmp_path / "clean" / "a")
    noisy, _ = read_clip(tmp_path / "noisy" / "a")
    assert same["files"][0]["noisy"]["psnr"] == pytest.approx(psnr_score(clean.reshape(4, 24, 24),
                                                                          noisy.reshape(4, 24, 24)))
    result = evaluate_videos(tmp_path / "clean", tmp_path / "noisy", denoiser=runs["gray"],
                             figures_dir=tmp_path / "fig", figure_files=1)
    assert result["modality"] == "video" and len(result["files"]) == 2 and result["files"][0]["shape"] == [4, 1, 24, 24]
    written = np.clip(np.rint(load(runs["gray"]).denoise(noisy, sigma="auto") * 255), 0, 255) / 255  # as the CLI
    assert result["files"][0]["enhanced"]["psnr"] == pytest.approx(psnr_score(clean.reshape(4, 24, 24),
                                                                             written.reshape(4, 24, 24)), abs=1e-4)
    assert result["figures"] == [str(tmp_path / "fig" / "a.png")]
    code = evaluate_main(["--clean", str(tmp_path / "clean"), "--noisy", str(tmp_path / "noisy"),
                          "--model", str(runs["gray"]), "--quiet"])
    assert code == 0 and "tPSNR" in capsys.readouterr().out
    (tmp_path / "noisy" / "b").rename(tmp_path / "noisy" / "c")
    with pytest.raises(ValueError, match=r"do not hold the same clip names \(only in --clean: b; only in --noisy: c\)"):
        evaluate_videos(tmp_path / "clean", tmp_path / "noisy", enhanced_dir=tmp_path / "clean")
    with pytest.raises(ValueError, match=r"it denoises modality 'image', but the evaluation is of 'video'"):
        evaluate_videos(tmp_path / "clean", tmp_path / "clean", denoiser=make_run(tmp_path / "img", TINY_IMAGE, []))


# --------------------------------------------------------------------------------------------------------- export


def test_onnx_export_of_a_video_model(runs: dict[str, Path], tmp_path: Path) -> None:
    from xmodal.export import export_onnx

    report = export_onnx(runs["k2"], tmp_path / "v.onnx")
    assert report.max_abs_diff < 1e-4
    onnx_den = xmodal.load(tmp_path / "v.onnx")
    assert isinstance(onnx_den, VideoDenoiser) and onnx_den.context_frames == 2
    clip = random_clip(4, 2, 19, 26)
    np.testing.assert_allclose(onnx_den.denoise(clip), load(runs["k2"]).denoise(clip), atol=1e-5)


# ------------------------------------------------------------------------------------------------------ alignment


def textured(H: int, W: int, seed: int = 0) -> torch.Tensor:
    """A smooth random texture (a blurred noise field): the content alignment has to find."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 1, H, W, generator=g)
    return torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2)[0, 0] * 4 - 1.5


def test_shift_frames_semantics() -> None:
    from xmodal.align import shift_frames

    x = torch.arange(20.0).reshape(1, 1, 4, 5)
    out = shift_frames(x, torch.tensor([[1, -2]]))
    # out[y, x] = x[y - 1, x + 2], clamped to the frame (edges replicated)
    expected = torch.tensor([[2.0, 3, 4, 4, 4], [2, 3, 4, 4, 4], [7, 8, 9, 9, 9], [12, 13, 14, 14, 14]])
    assert torch.equal(out[0, 0], expected)
    assert shift_frames(x, torch.zeros(1, 2, dtype=torch.long)) is x


@pytest.mark.parametrize("H, W, R", [(64, 64, 8), (150, 200, 16), (300, 280, 24)])
def test_estimate_shifts_recovers_translations_in_noise(H: int, W: int, R: int) -> None:
    from xmodal.align import estimate_shifts, shift_frames

    g = torch.Generator().manual_seed(1)
    big = textured(H + 2 * R, W + 2 * R, seed=H)
    true = torch.randint(-R, R + 1, (6, 2), generator=g)
    true[0] = torch.tensor([0, 0])
    ref = big[R:R + H, R:R + W].expand(6, H, W)
    mov = torch.stack([big[R + dy:R + dy + H, R + dx:R + dx + W] for dy, dx in true.tolist()])
    noisy = lambda x: x + 0.1 * torch.randn(x.shape, generator=g)  # noqa: E731
    found = estimate_shifts(noisy(ref), noisy(mov), R)
    # mov[y] = big[y + d] = ref[y + d]: aligning mov onto ref takes the shift d (out[y] = mov[y - d])
    assert torch.equal(found, true)
    aligned = shift_frames(mov, found)
    assert torch.allclose(aligned[:, R:-R, R:-R], ref[:, R:-R, R:-R])
    assert torch.equal(estimate_shifts(ref, mov, 0), torch.zeros(6, 2, dtype=torch.long))


def test_adapter_aligns_neighbours_onto_each_frame() -> None:
    base = textured(70, 90, seed=5)
    clip = torch.stack([base.roll((2 * t, -t), (0, 1)) for t in range(6)])[:, None]  # panning camera
    g = torch.Generator().manual_seed(0)
    clip = clip + 0.05 * torch.randn(clip.shape, generator=g)
    for align, most in ((8, 0.07), (0, None)):
        feats, _ = VideoAdapter(1, 2, align_range=align).encode(clip)
        window = feats[3, :, 12:-12, 12:-12]  # frame 3 and its neighbours, away from the wrapped edges
        diff = (window - window[2]).abs().mean(dim=(1, 2))
        if most is not None:  # aligned: the neighbours differ from the frame by their noise only
            assert float(diff.max()) < most
        else:
            assert float(diff[[0, 1, 3, 4]].min()) > 2 * 0.07


def test_align_range_setting(gray: VideoDenoiser) -> None:
    assert gray.align_range == 8 and "align_range=8" in repr(gray)
    clip = random_clip(4, 1, 40, 40)
    gray.align_range = 0
    try:
        off = gray.denoise(clip)
        with torch.no_grad():
            ref = enhance(gray.model, VideoAdapter(1, 1, 0), torch.from_numpy(clip), "video").numpy()
        np.testing.assert_allclose(off, ref, atol=1e-5)
        with pytest.raises(ValueError, match=r"`align_range` must be an integer >= 0, got -1"):
            gray.align_range = -1
    finally:
        gray.align_range = 8


def test_demo_clips_and_a_folder_of_clips_on_the_cli(runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    from xmodal.data.synthetic import main as synthetic_main

    assert synthetic_main([str(tmp_path / "demo"), "--kind", "video", "--pairs", "2"]) == 0
    clean, info = read_clip(tmp_path / "demo" / "clean" / "clip_01")
    noisy, _ = read_clip(tmp_path / "demo" / "noisy" / "clip_01")
    assert clean.shape == (8, 1, 128, 160) and info.dtype == "uint8"
    assert 20 / 255 < float((noisy - clean).std()) < 30 / 255  # sigma 25, rounded to 8 bits
    # a folder of clips (no frames of its own) expands to its clips
    code = main([str(tmp_path / "demo" / "noisy"), "-o", str(tmp_path / "out"), "--model", str(runs["gray"]),
                 "--quiet"])
    assert code == 0 and sorted(os.listdir(tmp_path / "out")) == ["clip_00", "clip_01"]
    (tmp_path / "nothing").mkdir()
    assert main([str(tmp_path / "nothing"), "-o", str(tmp_path / "o2"), "--model", str(runs["gray"]), "--quiet"]) == 1
    assert "nothing: holds no frames and no clips (sub-folders of frames, .npy, multi-page TIFF or video files)" \
        in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------- video files


def smooth_clip(T: int, C: int, H: int, W: int) -> np.ndarray:
    """A smooth panning clip (video codecs are made for it; random pixels would test the codec, not xmodal)."""
    base = textured(H + 2 * T, W + 3 * T, seed=7).numpy()
    base = (base - base.min()) / (base.max() - base.min())
    frames = np.stack([base[t:t + H, 2 * t:2 * t + W] for t in range(T)])[:, None]
    return np.repeat(frames, C, axis=1).astype(np.float32)


@pytest.mark.parametrize("ext, C, C_back, tol", [(".mkv", 1, 1, 0.0), (".mkv", 3, 3, 0.0), (".avi", 3, 3, 0.0),
                                                 (".webm", 3, 3, 1.01 / 255), (".mp4", 3, 3, 0.06),
                                                 (".mp4", 1, 3, 0.06), (".mov", 3, 3, 0.06)])
def test_video_file_round_trip(tmp_path: Path, ext: str, C: int, C_back: int, tol: float) -> None:
    clip = smooth_clip(6, C, 40, 54)
    write_clip(tmp_path / f"c{ext}", clip, ClipInfo("video", (6, C, 40, 54), "uint8", fps=30.0))
    got, info = read_clip(tmp_path / f"c{ext}")
    assert info.kind == "video" and info.shape == (6, C_back, 40, 54) and info.dtype == "uint8"
    assert info.fps == pytest.approx(30.0)
    expected = np.rint(clip.astype(np.float64) * 255) / 255
    assert np.abs(got - expected).max() <= tol + 1e-7  # FFV1 lossless, VP9 lossless up to the YUV rounding
    assert sorted(os.listdir(tmp_path)) == [f"c{ext}"]  # no temporary file left


def test_video_file_reader_goes_back_and_odd_sizes(tmp_path: Path) -> None:
    clip = smooth_clip(20, 3, 33, 47)  # odd size: H.264 in 4:4:4
    write_clip(tmp_path / "c.mkv", clip)
    reader = ClipReader(tmp_path / "c.mkv")
    late, early = reader[19], reader[0]  # the second read decodes again from the start
    assert np.array_equal(late, np.rint(clip[19] * 255) / 255) and np.array_equal(early, np.rint(clip[0] * 255) / 255)
    reader.close()
    write_clip(tmp_path / "odd.mp4", clip)
    assert read_clip(tmp_path / "odd.mp4")[1].shape == (20, 3, 33, 47)


def test_video_file_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all")
    with pytest.raises(ImageReadError, match=r"junk.mp4: not readable as a video"):
        ClipReader(tmp_path / "junk.mp4")
    write_clip(tmp_path / "c.mkv", smooth_clip(3, 1, 16, 16))
    data = (tmp_path / "c.mkv").read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageReadError, match=r"cut.mkv: not readable as a video"):
        read_clip(tmp_path / "cut.mkv")
    write_clip(tmp_path / "noise.mkv", random_clip(3, 1, 16, 16))  # large frames: a third holds the header only
    data = (tmp_path / "noise.mkv").read_bytes()
    (tmp_path / "noise.mkv").write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageReadError, match=r"noise.mkv: empty video \(0 frames of 16 x 16\)"):
        read_clip(tmp_path / "noise.mkv")
    with pytest.raises(ValueError, match=r"a video file holds 1 or 3 channels, got 2"):
        write_clip(tmp_path / "two.mp4", random_clip(2, 2, 16, 16))
    with pytest.raises(ValueError, match=r"a video file is written in order; frame 1 came after 0 frames"):
        w = ClipWriter(tmp_path / "order.mkv", None, (2, 1, 16, 16))
        try:
            w.write(1, np.zeros((1, 16, 16), np.float32))
        finally:
            w.abort()
    assert sorted(os.listdir(tmp_path)) == ["c.mkv", "cut.mkv", "junk.mp4", "noise.mkv"]
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError: PyAV not installed
    with pytest.raises(ImportError, match=r'reading and writing video files needs PyAV: pip install "xmodal\[video\]"'):
        ClipReader(tmp_path / "c.mkv")


class _Frame:
    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def to_ndarray(self, format: str) -> np.ndarray:  # noqa: A002 (PyAV's argument name)
        return self.array


def _broken(*items):
    for item in items:
        if isinstance(item, Exception):
            raise item
        yield item


@pytest.mark.parametrize("decoded, message", [
    ((), r"c.mkv: the video ended after 0 of 3 frames"),
    ((RuntimeError("bad packet"),), r"c.mkv: frame 0 could not be decoded \(bad packet\)"),
    ((_Frame(np.zeros((8, 8), np.uint8)),), r"c.mkv: frame 0 has shape \(1, 8, 8\), the stream says \(1, 16, 16\)"),
])
def test_video_decoding_errors(tmp_path: Path, decoded, message: str) -> None:
    write_clip(tmp_path / "c.mkv", smooth_clip(3, 1, 16, 16))
    reader = ClipReader(tmp_path / "c.mkv")
    reader._decoder = _broken(*decoded)  # what a damaged stream gives PyAV's decoder
    with pytest.raises(ImageReadError, match=message):
        reader[0]


def test_cli_and_evaluate_on_video_files(runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    clip = smooth_clip(5, 3, 32, 40)
    rng = np.random.default_rng(0)
    write_clip(tmp_path / "clean" / "pan.mkv", clip)
    noisy = np.clip(clip + rng.normal(0, 0.1, clip.shape), 0, 1).astype(np.float32)
    write_clip(tmp_path / "noisy" / "pan.mkv", noisy)
    assert main([str(tmp_path / "noisy" / "pan.mkv"), "-o", str(tmp_path / "out"), "--model", str(runs["gray"]),
                 "--quiet"]) == 0
    got, info = read_clip(tmp_path / "out" / "pan.mkv")
    den = load(runs["gray"])
    expected = np.rint(np.clip(den.denoise(read_clip(tmp_path / "noisy" / "pan.mkv")[0]), 0, 1) * 255) / 255
    assert info.codec == "ffv1" and np.abs(got - expected).max() <= 1.01 / 255
    den.denoise_file(tmp_path / "noisy" / "pan.mkv", tmp_path / "frames")  # a video file -> a folder of frames
    assert len(os.listdir(tmp_path / "frames")) == 5
    assert detect_modality(tmp_path / "clean") == "video"
    result = evaluate_videos(tmp_path / "clean", tmp_path / "noisy", enhanced_dir=tmp_path / "out")
    assert result["files"][0]["name"] == "pan" and result["mean"]["enhanced"]["psnr"] is not None
    # an image model given a video file, and a video model given an audio file
    assert main([str(tmp_path / "noisy" / "pan.mkv"), "-o", str(tmp_path / "o2"), "--model",
                 str(make_run(tmp_path / "img", TINY_IMAGE, [])), "--quiet"]) == 1
    assert ("pan.mkv: the model is an image model; this is a video file (use a video model, e.g. video_photo for "
            "phone and camera footage, or leave --model and --modality out)") in capsys.readouterr().err


def test_subsample_denoises_the_sub_clips_of_every_other_pixel(runs: dict[str, Path], tmp_path: Path) -> None:
    """Without motion compensation, ``subsample=2`` is the model on each of the 4 sub-clips of every other pixel,
    interleaved back; a file and the CLI get the same; a stride larger than the frames is a clear error."""
    den = load(runs["gray"])
    clip = random_clip(5, 1, 22, 30)
    den.align_range = 0  # (sub-clips would be aligned on their own, not with the whole frame's shifts)
    expected = np.empty_like(clip)
    for i in range(2):
        for j in range(2):
            expected[..., i::2, j::2] = den.denoise(clip[..., i::2, j::2])
    got = den.denoise(clip, subsample=2)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert not np.allclose(got, den.denoise(clip), atol=1e-3)
    np.save(tmp_path / "clip.npy", clip[:, 0])  # (T, H, W)
    den.denoise_file(tmp_path / "clip.npy", tmp_path / "out.npy", subsample=2)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), got[:, 0], atol=1e-6)
    with pytest.raises(ValueError, match=r"`subsample` \(40\) must be at most the image's smaller side \(22 "
                                         r"pixels\)"):
        den.denoise(clip, subsample=40)
    with pytest.raises(ValueError, match=r"`subsample` must be an integer >= 1, got 0"):
        den.denoise_file(tmp_path / "clip.npy", tmp_path / "bad.npy", subsample=0)
    assert not (tmp_path / "bad.npy").exists()
    # the command line passes --subsample to video models (with motion compensation, as configured)
    assert main([str(tmp_path / "clip.npy"), "-o", str(tmp_path / "cli"), "--model", str(runs["gray"]),
                 "--modality", "video", "--subsample", "2", "--quiet"]) == 0
    den_aligned = load(runs["gray"])
    den_aligned.denoise_file(tmp_path / "clip.npy", tmp_path / "aligned.npy", subsample=2, sigma="auto")  # the CLI's
    np.testing.assert_allclose(np.load(tmp_path / "cli" / "clip.npy"), np.load(tmp_path / "aligned.npy"), atol=1e-6)
