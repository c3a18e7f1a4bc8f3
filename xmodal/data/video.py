"""Video training data: clips cut from still images along random camera paths, or windows of real clips.

There is no clean video in the project's data, and clean video is rare everywhere; what is plentiful is clean still
images. A training clip is therefore cut from one still image along a random **camera path**: a straight translation
of ``v`` pixels per frame (``v`` uniform in ``[-motion, motion]`` on each axis, so static scenes are included) plus
up to ``jitter`` pixels of shake per frame, rounded to whole pixels so every frame is an exact crop of the image (no
interpolation blur that would tell frames apart). With ``image.local_motion`` a share of the clips also carries an
object (an elliptic patch of another image) moving on its own path, up to ``2 * motion + 1`` pixels per frame: the
local motion that the adapter's global alignment cannot undo, so the network learns to tell aligned neighbours from
mismatched ones. With ``image.mixed_channels`` (colour models) a share of the clips takes each channel after the
first from another image, along the same path: colours whose channels are unrelated, which natural photographs never
show, so the network does not learn to rely on the channels' correlation alone. Real clips (``image.clips: true``)
can be used instead or to fine-tune.

As for images, every random choice of item ``n`` comes from ``numpy.random.default_rng((seed, n))``.
Items are ``(noisy, clean)`` clips ``(frames_per_item, C, P, P)``; one noise level is drawn per clip (one camera).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from xmodal.config import ImageDataConfig
from xmodal.data.images import (_LUMA, ImageCorpus, _augment, _centre_crop, _noise_spec, _pad_to, _saturate,
                                check_channels, contiguous_run, image_files, load_image, noise_description,
                                noise_generator)
from xmodal.data.speech import ValidationClip
from xmodal.noise import NoiseSpec, apply_noise, camera, h264

__all__ = ["ClipCrops", "StillMotionClips", "add_moving_object", "camera_path", "load_clip", "resolve_video_data"]


def camera_path(frames: int, motion: int, jitter: int, rng: np.random.Generator) -> np.ndarray:
    """``(frames, 2)`` integer (row, column) offsets of a random camera path, shifted so the smallest is 0.

    Example:
        >>> camera_path(4, 0, 0, np.random.default_rng(0)).tolist()
        [[0, 0], [0, 0], [0, 0], [0, 0]]
    """
    v = rng.uniform(-motion, motion, size=2)
    shake = rng.integers(-jitter, jitter + 1, size=(frames, 2))
    pos = np.rint(np.arange(frames)[:, None] * v[None] + shake).astype(np.int64)
    return pos - pos.min(axis=0)


def _moving_crop(image: np.ndarray, path: np.ndarray, size: tuple[int, int], origin: tuple[int, int]) -> np.ndarray:
    """``(T, C, h, w)``: the ``size`` window at ``origin + path[t]`` of ``image (C, H, W)`` for every frame."""
    h, w = size
    i0, j0 = origin
    return np.stack([image[:, i0 + di:i0 + di + h, j0 + dj:j0 + dj + w] for di, dj in path])


def add_moving_object(clip: np.ndarray, texture: np.ndarray, speed: int, rng: np.random.Generator) -> np.ndarray:
    """``clip (T, C, H, W)`` with an elliptic object cut from ``texture (C, h, w)`` moving over it on its own
    straight path (up to ``speed`` pixels per frame per axis, integer, kept inside the frame): local motion that a
    global translation cannot align. Returns a new array."""
    T, C, H, W = clip.shape
    h, w = min(texture.shape[-2], H), min(texture.shape[-1], W)
    yy, xx = np.mgrid[:h, :w]
    mask = ((yy + 0.5 - h / 2) / (h / 2)) ** 2 + ((xx + 0.5 - w / 2) / (w / 2)) ** 2 <= 1.0  # (h, w)
    v = rng.uniform(-speed, speed, size=2)
    start = rng.uniform([0, 0], [H - h + 1e-9, W - w + 1e-9])
    out = clip.copy()
    for t in range(T):
        y, x = np.clip(np.rint(start + t * v), 0, [H - h, W - w]).astype(int)
        region = out[t, :, y:y + h, x:x + w]
        out[t, :, y:y + h, x:x + w] = np.where(mask, texture[:, :h, :w], region)
    return out


def _noisy_clip(clean: torch.Tensor, spec: NoiseSpec, seed) -> torch.Tensor:
    """One noise draw (one level; for camera noise one camera's settings) for the whole clip ``(T, C, H, W)``,
    then, with ``spec.h264_crf``, the clip coded as one video."""
    T, C, H, W = clean.shape
    generator = noise_generator(seed)
    if spec.kind == "camera":
        noisy = camera(clean, spec.peak, spec.sigma, generator, jpeg_quality=spec.jpeg_quality, frames=T)
    else:  # the frames stacked into one tall image: one level for the clip (per channel with `per_channel`), every
        # frame's noise drawn on its own pixels (salt-and-pepper hits too, shared by the channels of a pixel as in
        # an image); vertical stripes run down the whole stack: a sensor's column pattern stays from frame to frame
        tall = clean.permute(1, 0, 2, 3).reshape(1, C, T * H, W)  # (T, C, H, W) -> (1, C, T*H, W)
        noisy = apply_noise(tall, replace(spec, h264_crf=None), generator)[0]
        noisy = noisy[0].reshape(C, T, H, W).permute(1, 0, 2, 3).contiguous()
    if spec.h264_crf is not None:
        noisy = h264(noisy, spec.h264_crf, generator, frames=T)
    return noisy


class _ClipItems(Dataset):
    """What both video datasets share: the items, the epoch, and the end of an item (augmentation, noise)."""

    def __init__(self, items: list[np.ndarray], config: ImageDataConfig, batch_size: int, max_steps: int,
                 what: str, side: int) -> None:
        if not items:
            raise ValueError(f"video data: no training {what}")
        self.items = [_pad_to(x, side) for x in items]
        self.config = config
        self.batch_size = batch_size
        self.max_steps = max_steps

    def __len__(self) -> int:
        return self.config.epoch_size

    def _pair(self, clip: np.ndarray, rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(noisy, clean)`` of ``clip (L, C, P, P)``: the same rotation/flip of every frame and time reversal,
        then one noise draw for the whole clip."""
        c = self.config
        if c.augment:
            clip = _augment([clip], rng, spectral=True)[0]
        clean = torch.from_numpy(np.ascontiguousarray(_saturate(clip, c.saturation, rng)))
        noisy = _noisy_clip(clean, _noise_spec(c, n, self.batch_size, self.max_steps, rng), int(rng.integers(2 ** 62)))
        return noisy, clean


class StillMotionClips(_ClipItems):
    """Clips of ``frames_per_item`` frames cut from still images along random camera paths (module docstring)."""

    def __init__(self, images: list[np.ndarray], config: ImageDataConfig, batch_size: int = 1,
                 max_steps: int = 1) -> None:
        c = config
        reach = (c.frames_per_item - 1) * c.motion + 2 * c.jitter + 1  # the largest path extent, plus rounding
        super().__init__(images, config, batch_size, max_steps, "images", c.patch_size + reach)

    def __getitem__(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        rng = np.random.default_rng((c.seed, n))
        image = self.items[int(rng.integers(len(self.items)))]
        path = camera_path(c.frames_per_item, c.motion, c.jitter, rng)
        P = c.patch_size
        H, W = image.shape[-2:]
        ext_i, ext_j = path.max(axis=0)
        origin = int(rng.integers(0, H - P - ext_i + 1)), int(rng.integers(0, W - P - ext_j + 1))
        clip = _moving_crop(image, path, (P, P), origin)  # (L, C, P, P)
        if c.mixed_channels > 0 and rng.random() < c.mixed_channels:  # uncorrelated colours, on the same path
            for ch in range(1, clip.shape[1]):
                other = self.items[int(rng.integers(len(self.items)))]
                H2, W2 = other.shape[-2:]
                start = int(rng.integers(0, H2 - P - ext_i + 1)), int(rng.integers(0, W2 - P - ext_j + 1))
                clip[:, ch] = _moving_crop(other[ch:ch + 1], path, (P, P), start)[:, 0]
        if c.local_motion > 0 and rng.random() < c.local_motion:  # an object moving on its own over the scene
            other = self.items[int(rng.integers(len(self.items)))]
            side = int(rng.integers(P // 4, P // 2 + 1))
            i, j = (int(rng.integers(0, size - side + 1)) for size in other.shape[-2:])
            clip = add_moving_object(clip, other[:, i:i + side, j:j + side], 2 * c.motion + 1, rng)
        return self._pair(clip, rng, n)


class ClipCrops(_ClipItems):
    """The same random window of ``frames_per_item`` consecutive frames of real clips ``(T, C, H, W)`` (clips
    shorter than that are mirrored in time, as the adapter does)."""

    def __init__(self, clips: list[np.ndarray], config: ImageDataConfig, batch_size: int = 1,
                 max_steps: int = 1) -> None:
        super().__init__(clips, config, batch_size, max_steps, "clips", config.patch_size)

    def __getitem__(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        rng = np.random.default_rng((c.seed, n))
        clip = self.items[int(rng.integers(len(self.items)))]
        T, _, H, W = clip.shape
        frames = contiguous_run(T, c.frames_per_item, rng)
        P = c.patch_size
        i, j = int(rng.integers(0, H - P + 1)), int(rng.integers(0, W - P + 1))
        return self._pair(clip[frames, :, i:i + P, j:j + P], rng, n)


def load_clip(path: str | Path, channels: int) -> np.ndarray:
    """Read a clip (frame folder or ``.npy``) as ``(T, channels, H, W) float32`` (colour -> BT.601 luma for gray,
    gray -> replicated for colour, alpha dropped)."""
    from xmodal.videoio import read_clip

    clip, _ = read_clip(path)
    C = clip.shape[1]
    if C in (2, 4) and C != channels:
        clip, C = clip[:, :-1], C - 1
    if C == channels:
        return clip
    if channels == 1 and C == 3:
        return np.einsum("c,tchw->thw", _LUMA, clip)[:, None].astype(np.float32)
    if C == 1:
        return np.repeat(clip, channels, axis=1)
    raise ValueError(f"{path}: frames have {C} channels; image.channels={channels} needs 1 or {channels}")


def _clip_items(items: tuple, what: str) -> list[Path]:
    out = []
    for item in items:
        p = Path(item)
        if not p.exists():
            raise FileNotFoundError(f"{what}: {p} does not exist")
        out.append(p)
    return out


def resolve_video_data(config: ImageDataConfig, demo_root: str | Path, batch_size: int = 1,
                       max_steps: int = 1) -> ImageCorpus:
    """Training clips and validation clips of the ``video`` modality (a synthetic demo set when no data is
    configured). Validation clips from stills: ``valid_frames`` frames on a fixed camera path per image.

    Raises:
        ValueError, FileNotFoundError: unsupported options, missing sources, unreadable images or clips (named).
    """
    c = config
    check_channels(c)
    if c.pairs_dir or c.valid_pairs_dir:
        raise ValueError("video: `image.pairs_dir`/`valid_pairs_dir` are not supported; give clean stills or clips "
                         "in `image.train_dir` (noise is synthesised)")
    if c.noise_map:
        raise ValueError("image.noise_map is supported for the image modality only (videos are denoised blind)")
    if c.noise_then or c.valid_noise_then:
        raise ValueError("image.noise_then / valid_noise_then compose noise for images and stacks; video clips take "
                         "one model per item (image.noise, image.noise_mix)")
    demo = not c.train_dir
    if demo and c.clips:
        raise ValueError("video: image.clips=true needs image.train_dir (folders of frames or .npy clips)")
    if c.clips:
        sources = _clip_items(c.train_dir, "image.train_dir")
        valid_sources = _clip_items(c.valid_dir, "image.valid_dir")
        if not valid_sources and c.valid_fraction > 0 and len(sources) > 1:
            order = np.random.default_rng(c.seed).permutation(len(sources))
            n_valid = math.ceil(c.valid_fraction * len(sources))
            valid_sources = [sources[i] for i in sorted(order[:n_valid])]
            sources = [sources[i] for i in sorted(order[n_valid:])]
        train = ClipCrops([load_clip(p, c.channels) for p in sources], c, batch_size, max_steps)
        valid = []
        for k, p in enumerate(valid_sources):
            clean = torch.from_numpy(np.ascontiguousarray(
                _centre_crop(load_clip(p, c.channels)[:c.valid_frames], c.valid_crop)))
            valid.append(ValidationClip(p.stem, _noisy_clip(clean, c.valid_noise, (c.seed, 7919, k)), clean))
        return ImageCorpus(train, valid, f"clips + synthetic noise: {len(sources)} training clips, {len(valid)} "
                                         f"validation clips, {noise_description(c)}")
    if demo:
        from xmodal.data.synthetic import make_demo_images

        size = max(96, c.patch_size)  # every crop of the recipe fits (self-supervised crops are not padded)
        train_dirs = (str(make_demo_images(Path(demo_root) / "images", n=24, size=size, channels=c.channels,
                                           seed=c.seed)),)
    else:
        train_dirs = c.train_dir
    files = image_files(train_dirs, "image.train_dir")
    valid_files: list[Path] = []
    if c.valid_dir:
        valid_files = image_files(c.valid_dir, "image.valid_dir")
    elif c.valid_fraction > 0 and len(files) > 1:
        order = np.random.default_rng(c.seed).permutation(len(files))
        n_valid = math.ceil(c.valid_fraction * len(files))
        valid_files = [files[i] for i in sorted(order[:n_valid])]
        files = [files[i] for i in sorted(order[n_valid:])]
    train = StillMotionClips([load_image(f, c.channels) for f in files], c, batch_size, max_steps)
    valid = [still_clip_item(f.stem, load_image(f, c.channels), c, k) for k, f in enumerate(valid_files)]
    what = "DEMO images (synthetic shapes and textures, not photographs)" if demo else "still images"
    return ImageCorpus(train, valid, f"{what} moved along random camera paths (up to {c.motion} px/frame, shake "
                                     f"{c.jitter} px) + synthetic noise: {len(files)} training images, {len(valid)} "
                                     f"validation clips of {c.valid_frames} frames, {noise_description(c)}",
                       demo=demo)


def still_clip(image: np.ndarray, frames: int, motion: int, jitter: int,
               seed: int | tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A ``(frames, C, h, w)`` clip of ``image (C, H, W)`` on the camera path drawn from ``seed``, as large as the
    path allows (``h = H - extent``), and the path ``(frames, 2)``."""
    rng = np.random.default_rng(seed)
    path = camera_path(frames, motion, jitter, rng)
    ext_i, ext_j = path.max(axis=0)
    H, W = image.shape[-2:]
    if ext_i >= H or ext_j >= W:
        image = _pad_to(image, max(H, W) + int(max(ext_i, ext_j)) + 1)
        H, W = image.shape[-2:]
    return _moving_crop(image, path, (H - int(ext_i), W - int(ext_j)), (0, 0)), path


def still_clip_item(name: str, image: np.ndarray, config: ImageDataConfig, k: int) -> ValidationClip:
    """Validation clip ``k`` made from a still image: fixed path and noise (seeded by ``config.seed`` and ``k``)."""
    c = config
    clip, _ = still_clip(image, c.valid_frames, c.motion, c.jitter, (c.seed, 104729, k))
    clean = torch.from_numpy(np.ascontiguousarray(_centre_crop(clip, c.valid_crop)))
    return ValidationClip(name, _noisy_clip(clean, c.valid_noise, (c.seed, 7919, k)), clean)
