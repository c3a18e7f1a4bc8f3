"""Image and band-stack datasets: clean images with synthetic noise, paired folders, band stacks; validation sets.

As for speech, every random choice of training item ``n`` (the global sample number) comes from
``numpy.random.default_rng((seed, n))``, so items do not depend on worker count, rank count or where a run resumed.
Progressive (curriculum) noise ramps the sigma range with the step ``n // batch_size``.

Items are ``(noisy, clean)``: ``(C, P, P)`` images (``noisy`` carries one more channel, the noise-level map, for
non-blind models) or ``(bands_per_item, P, P)`` stack windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from xmodal.config import ImageDataConfig
from xmodal.data.speech import ValidationClip
from xmodal.imageio import IMAGE_EXTENSIONS, natural_key, read_image, read_stack
from xmodal.stackio import split_variable
from xmodal.noise import NoiseSpec, apply_noise, curriculum_sigma
from xmodal.selfsup import NeighbourPairs

__all__ = ["ImageCorpus", "ImageCrops", "PairedImageCrops", "StackCrops", "image_files", "load_image",
           "noise_generator", "noisy_version", "resolve_image_data", "resolve_stack_data"]

_SELF_SUPERVISED = "noisy images, self-supervised (Neighbor2Neighbor)"
_NO_REFERENCE = " (none: no clean reference; image.valid_dir or image.valid_pairs_dir give one)"
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601


def image_files(items: tuple[str, ...] | list[str], what: str) -> list[Path]:
    """Image files named by ``items`` (files or folders, folders listed in natural order, hidden files skipped).

    Raises:
        FileNotFoundError: an item does not exist (named, with ``what`` = the config key).
        ValueError: a folder holds no image.
    """
    files: list[Path] = []
    for item in items:
        if not isinstance(item, (str, Path)):
            raise ValueError(f"{what}: expected files or folders, got a list {list(item)} (lists of band files are "
                             "for multispectral stacks)")
        p = Path(item)
        if p.is_dir():
            found = sorted((f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS
                            and not f.name.startswith(".")), key=lambda f: natural_key(f.name))
            if not found:
                raise ValueError(f"{what}: {p} holds no image ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{what}: {p} does not exist")
    return files


# Float image files hold [0, 1] values; noisy ones reach a little beyond. The bounds of the 0.1 and 99.9 percentiles
# (of an evenly strided subsample) are those xmodal.denoise uses to take a float file as it is.
_FLOAT_PERCENTILES, _FLOAT_BOUNDS, _FLOAT_SAMPLES = (0.1, 99.9), (-1.0, 2.0), 65536


def _check_float_scale(path: Path, image: np.ndarray, dtype: str) -> None:
    """Raise ``ValueError`` when a float image (``image: (C, H, W)`` as read) is not on the [0, 1] scale."""
    if not dtype.startswith("float"):
        return
    flat = image.reshape(-1)[:: max(1, image.size // _FLOAT_SAMPLES)]
    lo, hi = (float(q) for q in np.percentile(flat, _FLOAT_PERCENTILES))
    if lo < _FLOAT_BOUNDS[0] or hi > _FLOAT_BOUNDS[1]:
        raise ValueError(f"{path}: {dtype} image with values from {float(image.min()):.6g} to "
                         f"{float(image.max()):.6g}; float images must hold values in [0, 1] (noise a little "
                         "beyond: the 0.1 and 99.9 percentiles within [-1, 2]), integer images are scaled by "
                         "their dtype (uint8 / 255, uint16 / 65535): rescale the file to [0, 1] or store it as "
                         "uint8 / uint16")


def load_image(path: Path, channels: int) -> np.ndarray:
    """Read ``path`` as ``(channels, H, W) float32``: colour -> BT.601 luma for gray, gray -> replicated for colour,
    an alpha channel dropped.

    Integer files are scaled by their dtype (uint8 / 255, uint16 / 65535); float files must already hold [0, 1]
    values (noise a little beyond, as the denoise command allows: the 0.1 and 99.9 percentiles in [-1, 2]).

    Raises:
        ImageReadError: unreadable file; ValueError: a channel count that cannot be converted, or a float file whose
            values are not on the [0, 1] scale (0-255 floats, 12-bit counts).
    """
    image, info = read_image(path)
    _check_float_scale(path, image, info.dtype)
    C = image.shape[0]
    if C == channels:  # checked first: a 2- or 4-channel model keeps its last channel
        return image
    if C in (2, 4):  # LA, RGBA: drop alpha
        image, C = image[:-1], C - 1
    if C == channels:
        return image
    if channels == 1 and C == 3:
        return np.tensordot(_LUMA, image, axes=1)[None].astype(np.float32)
    if C == 1:
        return np.repeat(image, channels, axis=0)
    raise ValueError(f"{path}: has {C} channels; image.channels={channels} needs 1 or {channels}")


def _crop_window(H: int, W: int, P: int, rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(0, H - P + 1)), int(rng.integers(0, W - P + 1))


def _pad_to(x: np.ndarray, P: int) -> np.ndarray:
    """Reflect-pad ``(..., H, W)`` to at least ``P`` x ``P`` (symmetric padding never fails on tiny images)."""
    ph, pw = max(0, P - x.shape[-2]), max(0, P - x.shape[-1])
    if ph or pw:
        x = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, ph), (0, pw)], mode="symmetric")
    return x


def contiguous_run(count: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """``length`` consecutive indices out of ``count`` at a random start (bands of a stack, frames of a clip); fewer
    than ``length`` are mirrored out to it, as the adapters mirror their context."""
    from xmodal.adapters.image import spectral_neighbours

    if count >= length:
        start = int(rng.integers(0, count - length + 1))
        return np.arange(start, start + length)
    if count == 1:
        return np.zeros(length, dtype=np.int64)
    return spectral_neighbours(count, length, None)[0].numpy()[length:2 * length]


def _augment(arrays: list[np.ndarray], rng: np.random.Generator, spectral: bool = False) -> list[np.ndarray]:
    """The same random rotation by k * 90 degrees and flip (and, for stacks, band-order reversal) of every array."""
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    rev = spectral and bool(rng.integers(2))
    out = []
    for a in arrays:
        a = np.rot90(a, k, axes=(-2, -1))
        if flip:
            a = a[..., ::-1]
        if rev:
            a = a[::-1]
        out.append(np.ascontiguousarray(a))
    return out


def _saturate(x: np.ndarray, saturation: tuple[float, float] | None, rng: np.random.Generator) -> np.ndarray:
    """``x (..., 3, H, W)`` with each pixel's distance from its luma (BT.601) scaled by one factor drawn uniformly
    in ``saturation``, clipped to [0, 1] (``image.saturation``); ``x`` itself when ``saturation`` is ``None`` (and
    nothing is drawn from ``rng``)."""
    if saturation is None:
        return x
    factor = np.float32(rng.uniform(*saturation))
    luma = np.einsum("c,...chw->...hw", _LUMA, x)[..., None, :, :]  # (..., 1, H, W)
    return np.clip(luma + factor * (x - luma), 0.0, 1.0)


def noise_description(config: ImageDataConfig) -> str:
    """``noise gaussian sigma 0.0000..0.1961`` (and ``+ ...`` for each model of ``noise_mix``; then
    ``, saturation x1..x1.6`` with ``image.saturation``), for run logs."""
    def one(s: NoiseSpec) -> str:
        if s.kind in ("salt_and_pepper", "deadline"):
            return f"{s.kind} amount {s.amount[0]:.3f}..{s.amount[1]:.3f}"
        text = f"{s.kind} sigma {s.sigma[0]:.4f}..{s.sigma[1]:.4f}"
        if s.kind in ("poisson_gaussian", "camera"):
            text += f" peak {s.peak[0]:g}..{s.peak[1]:g}"
        if s.jpeg_quality is not None:
            text += f" JPEG q{s.jpeg_quality[0]}..{s.jpeg_quality[1]}"
        if s.h264_crf is not None:
            text += f" H.264 CRF {s.h264_crf[0]}..{s.h264_crf[1]}"
        return text

    models = (config.noise, *config.noise_mix)
    silent = not config.noise_then and all(s.kind == "gaussian" and max(s.sigma) == 0 and s.h264_crf is None
                                           for s in models)
    text = "no noise added" if silent else "noise " + " + ".join(one(s) for s in models)
    if config.noise_then:
        text += ", then " + ", then ".join(one(s) for s in config.noise_then)
    if config.saturation is not None:
        text += f", saturation x{config.saturation[0]:g}..x{config.saturation[1]:g}"
    return text


def check_channels(config: ImageDataConfig) -> None:
    """``image.channels`` at least 1, and 1 or 3 where a noise model codes with H.264 (checked before any data is
    read, not at the first training item)."""
    c = config
    if c.channels < 1:
        raise ValueError(f"image.channels must be at least 1, got {c.channels}")
    named = [("image.noise", c.noise), ("image.valid_noise", c.valid_noise),
             *((f"image.{key}[{i}]", s) for key in ("noise_mix", "noise_then", "valid_noise_then")
               for i, s in enumerate(getattr(c, key)))]
    for name, spec in named:
        if spec.h264_crf is not None and c.channels not in (1, 3):
            raise ValueError(f"{name}.h264_crf: H.264 codes gray or RGB images, but image.channels is {c.channels} "
                             f"(set 1 or 3, or remove h264_crf)")


def _noise_spec(config: ImageDataConfig, n: int, batch_size: int, max_steps: int,
                rng: np.random.Generator) -> NoiseSpec:
    """Item ``n``'s noise model: ``config.noise``, or with ``config.noise_mix`` one of ``noise`` and those drawn
    uniformly from ``rng`` (nothing is drawn without a mix, so the item's other draws do not move); its ``sigma``
    ramped by the curriculum if there is one."""
    spec = config.noise
    if config.noise_mix:
        specs = (config.noise, *config.noise_mix)
        spec = specs[int(rng.integers(len(specs)))]
    if config.curriculum_start is None:
        return spec
    from dataclasses import replace

    sigma = curriculum_sigma(n // max(1, batch_size), max(1, max_steps), tuple(config.curriculum_start),
                             tuple(spec.sigma), config.curriculum_fraction, "cosine")
    return replace(spec, sigma=sigma)


def noise_generator(seed: int | tuple[int, ...]) -> torch.Generator:
    """The generator of a noise draw from an integer ``seed`` or a tuple of them (hashed by NumPy's SeedSequence)."""
    seed = int(np.random.default_rng(seed).integers(2 ** 62)) if isinstance(seed, tuple) else int(seed)
    return torch.Generator().manual_seed(seed)


def noisy_version(clean: torch.Tensor, spec: NoiseSpec, seed: int | tuple[int, ...],
                  noise_map: bool = False, then: tuple[NoiseSpec, ...] = ()) -> torch.Tensor:
    """``clean (C, H, W)`` plus noise drawn from ``spec``, then from each model of ``then`` in turn (applied to the
    noisy image: salt-and-pepper after Gaussian replaces noisy pixels), with one generator seeded from ``seed``
    (reproducible); with ``noise_map`` the per-pixel sigma (RMS over channels; the models' variances summed) is
    appended as one more channel."""
    generator = noise_generator(seed)
    noisy, sigma_map = apply_noise(clean[None], spec, generator)
    for more in then:
        noisy, extra = apply_noise(noisy, more, generator)
        sigma_map = (sigma_map.pow(2) + extra.pow(2)).sqrt()
    noisy = noisy[0]
    if noise_map:
        noisy = torch.cat([noisy, sigma_map[0].pow(2).mean(dim=0, keepdim=True).sqrt()], dim=0)
    return noisy


class ImageCrops(Dataset):
    """Random crops of clean images (held in memory) with augmentation and synthetic noise drawn per item.

    Args:
        images: ``(C, H, W) float32`` clean images.
        config: patch size, augmentation, noise model, curriculum, noise map, seed.
        batch_size, max_steps: for the curriculum (step = ``n // batch_size``).
    """

    def __init__(self, images: list[np.ndarray], config: ImageDataConfig, batch_size: int = 1,
                 max_steps: int = 1) -> None:
        if not images:
            raise ValueError("image data: no training images")
        self.images = [_pad_to(im, config.patch_size) for im in images]
        self.config = config
        self.batch_size = batch_size
        self.max_steps = max_steps

    def __len__(self) -> int:
        return self.config.epoch_size

    def __getitem__(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        rng = np.random.default_rng((c.seed, n))
        image = self.images[int(rng.integers(len(self.images)))]
        i, j = _crop_window(image.shape[-2], image.shape[-1], c.patch_size, rng)
        crop = image[:, i:i + c.patch_size, j:j + c.patch_size]
        if c.augment:
            crop = _augment([crop], rng)[0]
        clean = torch.from_numpy(np.ascontiguousarray(_saturate(crop, c.saturation, rng)))
        noisy = noisy_version(clean, _noise_spec(c, n, self.batch_size, self.max_steps, rng),
                              int(rng.integers(2 ** 62)), c.noise_map, c.noise_then)
        return noisy, clean


class PairedImageCrops(Dataset):
    """The same random crop (and augmentation) of matching noisy/clean images."""

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], config: ImageDataConfig) -> None:
        if not pairs:
            raise ValueError("image data: no training pairs")
        self.pairs = [(_pad_to(a, config.patch_size), _pad_to(b, config.patch_size)) for a, b in pairs]
        self.config = config

    def __len__(self) -> int:
        return self.config.epoch_size

    def __getitem__(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        rng = np.random.default_rng((c.seed, n))
        noisy, clean = self.pairs[int(rng.integers(len(self.pairs)))]
        i, j = _crop_window(clean.shape[-2], clean.shape[-1], c.patch_size, rng)
        crops = [a[:, i:i + c.patch_size, j:j + c.patch_size] for a in (noisy, clean)]
        if c.augment:
            crops = _augment(crops, rng)
        return torch.from_numpy(crops[0]), torch.from_numpy(crops[1])


class StackCrops(Dataset):
    """Random ``bands_per_item`` x P x P windows of band stacks (the same window from every band), with noise.

    Stacks with fewer bands than ``bands_per_item`` are mirrored along the spectrum (as the adapter does).
    """

    def __init__(self, stacks: list[np.ndarray], config: ImageDataConfig, batch_size: int = 1,
                 max_steps: int = 1) -> None:
        if not stacks:
            raise ValueError("multispectral data: no training stacks")
        self.stacks = [_pad_to(s, config.patch_size) for s in stacks]
        self.config = config
        self.batch_size = batch_size
        self.max_steps = max_steps

    def __len__(self) -> int:
        return self.config.epoch_size

    def __getitem__(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        rng = np.random.default_rng((c.seed, n))
        stack = self.stacks[int(rng.integers(len(self.stacks)))]
        S, H, W = stack.shape
        L = c.bands_per_item
        bands = contiguous_run(S, L, rng)
        i, j = _crop_window(H, W, c.patch_size, rng)
        crop = stack[bands, i:i + c.patch_size, j:j + c.patch_size]
        if c.augment:
            crop = _augment([crop], rng, spectral=True)[0]
        clean = torch.from_numpy(np.ascontiguousarray(crop))
        spec = _noise_spec(c, n, self.batch_size, self.max_steps, rng)
        noisy = noisy_version(clean, spec, int(rng.integers(2 ** 62)), then=c.noise_then)
        return noisy, clean


@dataclass
class ImageCorpus:
    """Training dataset + fixed validation items (``ValidationClip`` with ``(C, H, W)`` tensors)."""

    train: Dataset
    valid: list[ValidationClip]
    description: str
    demo: bool = False


def _check_crop_fits(items, patch_size: int) -> None:
    """Self-supervised training: ``ValueError`` naming the first ``(source, (C, H, W) array)`` smaller than a crop.
    Mirror padding would put copies of a pixel (and of its noise) into both sub-images of a cell, and the network
    would learn to copy noise there."""
    for source, x in items:
        if min(x.shape[-2:]) < patch_size:
            raise ValueError(f"image.self_supervised: {source} is {x.shape[-2]} x {x.shape[-1]} pixels, smaller than "
                             f"image.patch_size {patch_size}: its mirrored padding would show the network the noise "
                             "of the pixels it learns to predict; lower image.patch_size (an even size) or leave the "
                             "file out")


def _centre_crop(x: np.ndarray, size: int) -> np.ndarray:
    if size <= 0:
        return x
    H, W = x.shape[-2:]
    i, j = max(0, (H - size) // 2), max(0, (W - size) // 2)
    return x[..., i:i + size, j:j + size]


def _validation(images: list[tuple[str, np.ndarray]], config: ImageDataConfig) -> list[ValidationClip]:
    clips = []
    for k, (name, image) in enumerate(images):
        clean = torch.from_numpy(np.ascontiguousarray(_centre_crop(image, config.valid_crop)))
        noisy = noisy_version(clean, config.valid_noise, (config.seed, 7919, k), config.noise_map,
                              config.valid_noise_then)
        clips.append(ValidationClip(name, noisy, clean))
    return clips


def _paired_images(root: str, channels: int,
                   key: str = "image.pairs_dir") -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, noisy, clean)`` of the pairs in ``root`` (``noisy/`` and ``clean/`` with matching names); errors
    name the config ``key`` it came from."""
    base = Path(root)
    noisy_dir, clean_dir = base / "noisy", base / "clean"
    for d in (noisy_dir, clean_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"{key}: {d} does not exist (expected `noisy/` and `clean/` in {base})")
    noisy = {f.stem: f for f in image_files([str(noisy_dir)], key)}
    clean = {f.stem: f for f in image_files([str(clean_dir)], key)}
    unmatched = sorted(set(noisy) ^ set(clean))
    if unmatched:
        raise ValueError(f"{key} {base}: files without a partner in noisy/ or clean/: "
                         f"{', '.join(unmatched[:5])}{' ...' if len(unmatched) > 5 else ''}")
    out = []
    for name in sorted(noisy, key=natural_key):
        a, b = load_image(noisy[name], channels), load_image(clean[name], channels)
        if a.shape != b.shape:
            raise ValueError(f"{key}: {noisy[name]} is {a.shape[1:]} but {clean[name]} is {b.shape[1:]}")
        out.append((name, a, b))
    return out


def resolve_image_data(config: ImageDataConfig, demo_root: str | Path, batch_size: int = 1,
                       max_steps: int = 1) -> ImageCorpus:
    """Training dataset and validation images of the ``image`` modality (a synthetic demo set when no data is
    configured).

    Raises:
        ValueError, FileNotFoundError: conflicting or missing sources, unreadable images (named).
    """
    c = config
    check_channels(c)
    if c.pairs_dir and c.train_dir:
        raise ValueError("image: give either `train_dir` (clean images) or `pairs_dir`, not both")
    if c.noise_map and (c.pairs_dir or (c.valid_pairs_dir and not c.valid_dir)):
        raise ValueError("image.noise_map needs synthetic noise (the noise-level map is known only for noise xmodal "
                         "adds): use `train_dir`/`valid_dir`, not `pairs_dir`/`valid_pairs_dir`")
    demo = not (c.pairs_dir or c.train_dir)
    if c.pairs_dir:
        pairs = _paired_images(c.pairs_dir, c.channels)
        valid_clean: list[tuple[str, np.ndarray]] = []
        if c.valid_dir:  # clean validation images (synthetic noise) come first, as documented
            valid_clean = [(f.stem, load_image(f, c.channels)) for f in image_files(c.valid_dir, "image.valid_dir")]
            valid_pairs = []
        elif c.valid_pairs_dir:
            valid_pairs = _paired_images(c.valid_pairs_dir, c.channels, "image.valid_pairs_dir")
        else:
            order = np.random.default_rng(c.seed).permutation(len(pairs))
            n_valid = math.ceil(c.valid_fraction * len(pairs)) if len(pairs) > 1 else 0
            valid_pairs = [pairs[i] for i in sorted(order[:n_valid])]
            pairs = [pairs[i] for i in sorted(order[n_valid:])]
        train = PairedImageCrops([(a, b) for _, a, b in pairs], c)
        valid = [ValidationClip(n, torch.from_numpy(_centre_crop(a, c.valid_crop).copy()),
                                torch.from_numpy(_centre_crop(b, c.valid_crop).copy())) for n, a, b in valid_pairs]
        valid += _validation(valid_clean, c)
        return ImageCorpus(train, valid, f"paired folders {c.pairs_dir}: {len(pairs)} training pairs, "
                                         f"{len(valid)} validation pairs")
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
    elif not c.valid_pairs_dir and c.valid_fraction > 0 and len(files) > 1 and not c.self_supervised:
        order = np.random.default_rng(c.seed).permutation(len(files))
        n_valid = math.ceil(c.valid_fraction * len(files))
        valid_files = [files[i] for i in sorted(order[:n_valid])]
        files = [files[i] for i in sorted(order[n_valid:])]
    images = [load_image(f, c.channels) for f in files]
    if c.self_supervised:
        _check_crop_fits(zip(files, images), c.patch_size)
    train = ImageCrops(images, c, batch_size, max_steps)
    if c.self_supervised:
        train = NeighbourPairs(train, c.seed)
    if c.valid_pairs_dir and not c.valid_dir:
        valid = [ValidationClip(n, torch.from_numpy(_centre_crop(a, c.valid_crop).copy()),
                                torch.from_numpy(_centre_crop(b, c.valid_crop).copy()))
                 for n, a, b in _paired_images(c.valid_pairs_dir, c.channels, "image.valid_pairs_dir")]
    else:
        valid = _validation([(f.stem, load_image(f, c.channels)) for f in valid_files], c)
    what = "DEMO images (synthetic shapes and textures, not photographs)" if demo else \
        _SELF_SUPERVISED if c.self_supervised else "clean images + synthetic noise"
    return ImageCorpus(train, valid, f"{what}: {len(files)} training images, {len(valid)} validation images"
                                     f"{_NO_REFERENCE if c.self_supervised and not valid else ''}, "
                                     f"{noise_description(c)}",
                       demo=demo)


def resolve_stack_data(config: ImageDataConfig, demo_root: str | Path, batch_size: int = 1,
                       max_steps: int = 1) -> ImageCorpus:
    """Training windows and validation stacks of the ``multispectral`` modality: the bottom ``valid_rows`` of every
    stack (all bands) is validation, the rest training.

    Raises:
        ValueError, FileNotFoundError: missing stacks, bands of different sizes, a split that leaves nothing.
    """
    c = config
    if c.pairs_dir:
        raise ValueError("multispectral: `image.pairs_dir` is not supported for stacks; use `image.train_dir`")
    if not 0.0 <= c.valid_rows < 1.0:
        raise ValueError(f"image.valid_rows must be in [0, 1), got {c.valid_rows}")
    valid_rows = 0.0 if c.self_supervised else c.valid_rows  # noisy stacks: held-out rows have no clean reference
    if c.bands_per_item < 1:
        raise ValueError(f"image.bands_per_item must be at least 1, got {c.bands_per_item}")
    if c.noise_map:
        raise ValueError("image.noise_map is supported for the image modality only (stacks are denoised blind)")
    demo = not c.train_dir
    if demo:
        from xmodal.data.synthetic import make_demo_stack

        sources = [str(make_demo_stack(Path(demo_root) / "stack", bands=8, size=128, seed=c.seed))]
    else:
        sources = list(c.train_dir)
    train_parts, valid = [], []
    for src in sources:
        for part in ([src] if isinstance(src, str) else list(src)):
            if not split_variable(part)[0].exists():  # scene.mat:variable is scene.mat
                raise FileNotFoundError(f"image.train_dir: {part} does not exist")
        stack, _ = read_stack(src if isinstance(src, str) else list(src), c.scaling)
        src = src if isinstance(src, str) else str(Path(src[0]).parent)
        H = stack.shape[1]
        cut = H - int(round(valid_rows * H))
        if cut < 1:
            raise ValueError(f"image.valid_rows={valid_rows} leaves no training rows in {src} ({H} rows)")
        train_parts.append(np.ascontiguousarray(stack[:, :cut]))
        if cut < H:
            clean = torch.from_numpy(np.ascontiguousarray(_centre_crop(stack[:, cut:], c.valid_crop)))
            noisy = noisy_version(clean, c.valid_noise, (c.seed, 7919, len(valid)), then=c.valid_noise_then)
            valid.append(ValidationClip(Path(src).stem, noisy, clean))
    if c.self_supervised:
        _check_crop_fits(zip(sources, train_parts), c.patch_size)
    train = StackCrops(train_parts, c, batch_size, max_steps)
    if c.self_supervised:
        train = NeighbourPairs(train, c.seed)
    what = "DEMO stack (synthetic, not a real scene)" if demo else \
        _SELF_SUPERVISED if c.self_supervised else "band stacks + synthetic noise"
    bands = ", ".join(str(s.shape[0]) for s in train_parts)
    split = "no validation rows (noisy stacks: no clean reference)" if c.self_supervised else \
        f"bottom {c.valid_rows:g} of the rows for validation"
    return ImageCorpus(train, valid, f"{what}: {len(train_parts)} stacks ({bands} bands), {split}, scaling "
                                     f"{c.scaling}, {noise_description(c)}", demo=demo)
