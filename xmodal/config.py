"""Typed, strict configuration: one frozen dataclass per component, composed into :class:`Config`.

Recipes are YAML files read with ``yaml.safe_load``. Every key is checked against the dataclasses: an unknown key,
a value of the wrong type or a section that is not a mapping raises :class:`ConfigError` naming the file, the dotted
key and, for unknown keys, the closest valid key. Command-line overrides ``key.sub=value`` go through the same checks.

Defaults live only here. Components receive their own sub-config (``config.model``, ``config.optim``...), never the
whole config.

Example:
    >>> cfg = load_config("recipes/speech.yaml", ["train.max_steps=10", "optim.lr=1e-3"])
    >>> cfg.train.max_steps
    10
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from xmodal.noise import NoiseSpec

__all__ = [
    "AudioConfig",
    "Config",
    "ConfigError",
    "JointConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "SpeechDataConfig",
    "TrainConfig",
    "bundled_recipes",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "load_config",
    "parse_overrides",
]


class ConfigError(ValueError):
    """A recipe or override is invalid. The message names the source, the dotted key and what was expected."""


@dataclass(frozen=True)
class AudioConfig:
    """Audio adapter: waveform <-> compressed complex STFT.

    Attributes:
        sample_rate: rate the model works at; inputs at other rates are resampled to it.
        n_fft: FFT size (frequency bins F = n_fft // 2 + 1).
        hop_length: hop between frames in samples.
        win_length: window length; ``None`` means ``n_fft``.
        compress: magnitude compression exponent c in ``|X|^c e^{i angle X}`` (1.0 = no compression).
        normalize_rms: scale each input to ``target_rms`` before the STFT and undo it after the iSTFT (the whole
            signal's RMS: offline only).
        target_rms: RMS the input is normalised to.
        running_rms_seconds: causal level normalisation, for streaming models (with ``normalize_rms: false``): when
            > 0, each STFT frame is scaled by ``target_rms`` over the input's RMS in the last
            ``running_rms_seconds`` (the frames ending at this one; fewer at the start of a signal) and the network's
            output frame is divided by the same gain, so the network sees every signal near ``target_rms`` and the
            output keeps the input's level. 0 = off.
    """

    sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 128
    win_length: int | None = None
    compress: float = 0.3
    normalize_rms: bool = True
    target_rms: float = 0.1
    running_rms_seconds: float = 0.0


@dataclass(frozen=True)
class ModelConfig:
    """Network: per-modality stem and head around one shared trunk.

    Attributes:
        arch: ``unet`` (the shared U-Net trunk) or ``cnn`` (the seed guide's plain CNN baseline).
        widths: channel width of each U-Net level; ``len(widths) - 1`` 2x downsamplings. ``cnn`` uses ``widths[0]``.
        blocks: residual blocks per U-Net level (encoder and decoder each): one count for all levels, or a list with
            one count per level (as many as ``widths``; the last is the bottom level's).
        cnn_depth: number of 3x3 conv layers of the ``cnn`` trunk.
        norm: ``layer`` (per-position channel LayerNorm, local so chunked inference stays exact) or ``none``.
        mask_bound: upper bound of the complex mask magnitude (speech head).
        causal: speech only: a network that never looks ahead in time, for streaming with a fixed latency
            (:meth:`xmodal.Denoiser.stream`): causal time convolutions with dilation ``2**i`` at level ``i``,
            frequency-only downsampling. Pair with ``audio.normalize_rms: false`` (a stream cannot know the RMS of
            a signal that has not arrived yet; ``audio.running_rms_seconds`` normalises by the level so far).
    """

    arch: Literal["unet", "cnn"] = "unet"
    widths: tuple[int, ...] = (16, 32, 64, 96)
    blocks: int | tuple[int, ...] = 1
    cnn_depth: int = 8
    norm: Literal["layer", "none"] = "layer"
    mask_bound: float = 1.0
    causal: bool = False


@dataclass(frozen=True)
class SpeechDataConfig:
    """Speech training data.

    Either ``pairs_dir`` (folders ``noisy/`` and ``clean/`` with matching file names, the VoiceBank+DEMAND layout) or
    ``clean_dir`` + ``noise_dir`` (mixed on the fly at a random SNR). With neither, a demo corpus is generated.

    Attributes:
        clean_dir: folder(s) of clean speech.
        noise_dir: folder(s) of noise recordings.
        pairs_dir: folder holding ``noisy/`` and ``clean/``.
        valid_pairs_dir: optional separate validation pairs folder (else ``valid_fraction`` of ``pairs_dir``).
        valid_clean: clean file names held out for validation (else ``valid_fraction`` of the files).
        valid_noise: noise file names held out for validation (else ``valid_fraction`` of the files).
        valid_fraction: share of files held out when no explicit list is given.
        valid_snrs: SNRs (dB) of the validation mixtures (every held-out clean x noise x SNR).
        valid_max_seconds: validation clips are cut to at most this long (0 = whole files).
        segment_seconds: length of random training crops.
        snr_range: training SNR range in dB, drawn uniformly.
        gain_range: random gain of the mixture in dB, drawn uniformly.
        epoch_size: ``len()`` of the training dataset when it is used on its own (a PyTorch DataLoader's epoch).
            Training has no epochs: it counts ``train.max_steps`` and draws mixture ``step * batch + i``, so this
            does not change what a run sees (kept so that older recipes and checkpoints load).
        num_workers: DataLoader worker processes.
        seed: seed of every random choice in the data (crops, SNRs, noise segments, split).
    """

    clean_dir: tuple[str, ...] = ()
    noise_dir: tuple[str, ...] = ()
    pairs_dir: str | None = None
    valid_pairs_dir: str | None = None
    valid_clean: tuple[str, ...] = ()
    valid_noise: tuple[str, ...] = ()
    valid_fraction: float = 0.1
    valid_snrs: tuple[float, ...] = (0.0, 5.0, 10.0)
    valid_max_seconds: float = 0.0
    segment_seconds: float = 2.0
    snr_range: tuple[float, float] = (-5.0, 20.0)
    gain_range: tuple[float, float] = (-6.0, 6.0)
    epoch_size: int = 1000
    num_workers: int = 2
    seed: int = 0


# noise kinds with a `sigma` (what image.curriculum_start ramps)
_SIGMA_KINDS = ("gaussian", "poisson_gaussian", "speckle", "stripe", "rician", "camera")


_N2N_GAMMA = 2.0  # Neighbor2Neighbor's regulariser weight (Huang et al. 2021)


@dataclass(frozen=True)
class ImageDataConfig:
    """Image, band-stack and video training data (modalities ``image``, ``multispectral`` and ``video``).

    ``image``: ``train_dir`` holds clean images (PNG, JPEG, BMP, WebP, TIFF, npy; noise is synthesised with
    ``noise``), or
    ``pairs_dir`` holds ``noisy/`` and ``clean/`` with matching names. Validation: ``valid_dir`` (clean images,
    noise from ``valid_noise`` with a fixed seed), else ``valid_pairs_dir``, else ``valid_fraction`` of the files.

    ``multispectral``: ``train_dir`` lists stacks, each a multi-band GeoTIFF file, a folder of single-band TIFFs or
    a list of single-band files (e.g. the 20 m bands of a Sentinel-2 tile), read with ``scaling``; the bottom
    ``valid_rows`` of every stack's rows is held out for validation (the same rows of every band), the rest is
    cropped for training.

    ``video``: with ``clips: false`` (default) ``train_dir``/``valid_dir`` hold clean still images, and every training
    item is a clip of ``frames_per_item`` frames cut from one image along a random camera path (a straight integer
    translation of up to ``motion`` pixels per frame on each axis, plus up to ``jitter`` pixels of shake); validation
    clips are ``valid_frames`` frames long, on fixed paths. With ``clips: true`` every item of ``train_dir`` and
    ``valid_dir`` is a real clip: a folder of frames (natural name order) or a ``.npy`` file ``(T, H, W)`` /
    ``(T, H, W, C)``; training items are the same window cut from ``frames_per_item`` consecutive frames.

    Attributes:
        train_dir: clean images (files or folders) or stacks.
        pairs_dir: folder holding ``noisy/`` and ``clean/`` (image only).
        valid_dir: clean validation images (files or folders).
        valid_pairs_dir: folder of validation pairs.
        valid_fraction: share of ``train_dir`` files held out when no validation source is given.
        valid_rows: multispectral: bottom fraction of each stack's rows held out for validation.
        valid_crop: validation images are centre-cropped to at most this size (0 = whole images).
        channels: image channels the model works on (1 gray, 3 colour); files are converted (colour -> luma,
            gray -> replicated).
        context_bands: multispectral: spectral neighbours on each side of the denoised band given as context
            (the network sees ``2 * context_bands + 1`` bands and denoises the middle one).
        bands_per_item: multispectral: contiguous bands per training item.
        context_frames: video: frames on each side of the denoised frame given as context (the network sees
            ``2 * context_frames + 1`` frames, mirrored at the ends of a clip, and denoises the middle one).
        frames_per_item: video: consecutive frames per training item.
        valid_frames: video: frames per validation clip made from a still image.
        motion: video from stills: largest camera speed in pixels per frame on each axis.
        jitter: video from stills: largest random shake in pixels added to each frame's position.
        local_motion: video from stills: share of training clips (0 to 1) that also show an object moving on its own
            path over the scene (local motion the global alignment cannot undo).
        mixed_channels: video from stills, colour models: share of training clips (0 to 1) whose channels after the
            first come from other training images, filmed along the same camera path: colours with no correlation
            between channels (graphics, false colour), which natural images never show.
        align_range: video: motion compensation: every neighbour frame is translated onto the denoised frame by the
            integer shift (at most this many pixels per axis) that best aligns them (:mod:`xmodal.align`), before
            the network sees them; 0 turns it off (the network alone then has to find moved content).
        clips: video: ``train_dir``/``valid_dir`` items are real clips (frame folders or ``(T, H, W[, C])`` .npy
            files), not still images.
        scaling: multispectral per-band scaling (``dtype``, ``band_minmax``, ``band_percentile``, ``stack_minmax``).
        patch_size: side of the random training crops.
        augment: random flips and 90-degree rotations (and spectral order reversal for stacks).
        saturation: colour models trained on clean images or clips: ``[low, high]`` range of a factor drawn per item
            that scales each pixel's distance from its luma (BT.601) before the noise is added, the result clipped
            to [0, 1]: 1 keeps the colours, 0 makes them gray, 1.6 makes them more vivid. For training sets short of
            saturated colours (birds, flowers, signage, stage lights). ``null`` (default): colours as they are.
        noise: training noise model (a range of levels: the model is blind to the level).
        noise_mix: more training noise models: each training item draws its model uniformly from ``noise`` and these
            (e.g. camera noise and white Gaussian noise for a model that takes both). Empty (default): ``noise`` only.
        noise_then: noise models applied after the item's one (``noise`` or a ``noise_mix`` draw), in order, to
            every training item: a composition, such as the "complex" noise of hyperspectral benchmarks (per-band
            Gaussian, then stripes, then salt-and-pepper). Empty (default): none. The curriculum ramps ``noise``
            only.
        valid_noise: validation noise (a fixed level is usual: ``sigma: [0.098, 0.098]`` is 25/255).
        valid_noise_then: noise models applied after ``valid_noise``, in order (as ``noise_then``).
        curriculum_start: progressive noise: the ``noise.sigma`` range at step 0, ramped (cosine) to ``noise.sigma``
            over the first ``curriculum_fraction`` of ``train.max_steps`` (with ``noise_mix``, to the ``sigma`` of the
            model each item draws). ``null`` = no curriculum.
        curriculum_fraction: share of the run spent ramping.
        noise_map: give the network the per-pixel noise standard deviation as an extra input channel (non-blind);
            ``false`` (default) trains a blind model.
        self_supervised: ``neighbor2neighbor``: train without clean images (:mod:`xmodal.selfsup`): ``train_dir``
            holds the noisy images or stacks themselves (set ``noise.sigma: [0, 0]`` to add nothing), and the
            network learns from pairs of neighbouring pixels. For noise independent from pixel to pixel. Images and
            stacks; validation needs clean references (``valid_dir`` or ``valid_pairs_dir`` for images), so
            nothing of ``train_dir`` is held out. ``null`` (default): supervised.
        self_supervised_gamma: Neighbor2Neighbor's regulariser weight, reached at the end of the run (linear ramp
            from 0).
        epoch_size: ``len()`` of the training dataset when it is used on its own (a PyTorch DataLoader's epoch).
            Training has no epochs: it counts ``train.max_steps`` and draws item ``step * batch + i``, so this
            does not change what a run sees (kept so that older recipes and checkpoints load).
        num_workers: DataLoader worker processes.
        seed: seed of every random choice (crops, flips, noise, split).
    """

    train_dir: tuple[Union[str, tuple[str, ...]], ...] = ()
    pairs_dir: str | None = None
    valid_dir: tuple[str, ...] = ()
    valid_pairs_dir: str | None = None
    valid_fraction: float = 0.1
    valid_rows: float = 0.25
    valid_crop: int = 0
    channels: int = 1
    context_bands: int = 2
    bands_per_item: int = 5
    context_frames: int = 2
    frames_per_item: int = 5
    valid_frames: int = 8
    motion: int = 3
    jitter: int = 1
    local_motion: float = 0.0
    mixed_channels: float = 0.0
    align_range: int = 8
    clips: bool = False
    scaling: Literal["dtype", "band_minmax", "band_percentile", "stack_minmax"] = "band_minmax"
    patch_size: int = 64
    augment: bool = True
    saturation: tuple[float, float] | None = None
    noise: NoiseSpec = field(default_factory=NoiseSpec)
    noise_mix: tuple[NoiseSpec, ...] = ()
    noise_then: tuple[NoiseSpec, ...] = ()
    valid_noise: NoiseSpec = field(default_factory=lambda: NoiseSpec(sigma=(25.0 / 255.0, 25.0 / 255.0)))
    valid_noise_then: tuple[NoiseSpec, ...] = ()
    curriculum_start: tuple[float, float] | None = None
    curriculum_fraction: float = 0.3
    noise_map: bool = False
    self_supervised: Union[Literal["neighbor2neighbor"], None] = None
    self_supervised_gamma: float = _N2N_GAMMA
    epoch_size: int = 1000
    num_workers: int = 2
    seed: int = 0

    def __post_init__(self) -> None:  # checked here, not in a DataLoader worker at the first batch
        if self.curriculum_start is not None:
            low, high = self.curriculum_start
            if not 0.0 <= low <= high:
                raise ValueError(f"image.curriculum_start must be a (low, high) range with 0 <= low <= high, got "
                                 f"{list(self.curriculum_start)}")
            if self.pairs_dir is not None:
                raise ValueError("image.curriculum_start ramps the level of the noise xmodal adds: it cannot apply "
                                 "to noisy/clean pairs (image.pairs_dir)")
            for key, spec in [("image.noise", self.noise)] + [(f"image.noise_mix[{i}]", m)
                                                               for i, m in enumerate(self.noise_mix)]:
                if spec.kind not in _SIGMA_KINDS:
                    raise ValueError(f"image.curriculum_start ramps the noise's sigma, and `{key}` of kind "
                                     f"{spec.kind!r} has none (kinds with a sigma: {', '.join(_SIGMA_KINDS)})")
        if not 0.0 <= self.curriculum_fraction <= 1.0:
            raise ValueError(f"image.curriculum_fraction must be in [0, 1], got {self.curriculum_fraction}")
        if self.self_supervised is not None:
            if self.pairs_dir is not None:
                raise ValueError("image.self_supervised trains without clean images; image.pairs_dir has them: "
                                 "train supervised (image.self_supervised: null)")
            if self.noise_map:
                raise ValueError("image.self_supervised cannot give the network a noise-level map (image.noise_map): "
                                 "the level of real noise is not known")
            if self.patch_size % 2:
                raise ValueError(f"image.self_supervised splits crops into 2 x 2 cells: image.patch_size must be "
                                 f"even, got {self.patch_size}")
        if self.self_supervised_gamma < 0:
            raise ValueError(f"image.self_supervised_gamma must be >= 0, got {self.self_supervised_gamma}")
        if self.self_supervised is None and self.self_supervised_gamma != _N2N_GAMMA:
            raise ValueError(f"image.self_supervised_gamma ({self.self_supervised_gamma:g}) weighs Neighbor2Neighbor's "
                             "regulariser: it needs image.self_supervised: neighbor2neighbor")
        if self.pairs_dir is not None and self.noise_then:
            raise ValueError("image.noise_then adds to the noise xmodal synthesises: it cannot apply to noisy/clean "
                             "pairs (image.pairs_dir)")
        models = [("image.noise", self.noise), ("image.valid_noise", self.valid_noise)] + [
            (f"image.{key}[{i}]", m) for key in ("noise_mix", "noise_then", "valid_noise_then")
            for i, m in enumerate(getattr(self, key))]
        for key, spec in models:  # additive noise in units of full scale: 25/255 is 0.098
            if spec.kind in _SIGMA_KINDS and spec.kind != "speckle" and max(spec.sigma) > 1:
                raise ValueError(f"`{key}.sigma` is a fraction of full scale (pixels and bands run 0-1: 25/255 is "
                                 f"0.098), got {list(spec.sigma)}: a level on the 0-255 scale?")
        for key in ("context_frames", "motion", "jitter", "align_range"):
            if getattr(self, key) < 0:
                raise ValueError(f"image.{key} must be >= 0, got {getattr(self, key)}")
        for key in ("local_motion", "mixed_channels"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"image.{key} must be in [0, 1], got {getattr(self, key)}")
        for key in ("frames_per_item", "valid_frames"):
            if getattr(self, key) < 1:
                raise ValueError(f"image.{key} must be at least 1, got {getattr(self, key)}")
        if self.saturation is not None:
            low, high = self.saturation
            if not 0.0 <= low <= high:
                raise ValueError(f"image.saturation must be a [low, high] range with 0 <= low <= high, got "
                                 f"{list(self.saturation)}")
            if self.channels != 3:
                raise ValueError(f"image.saturation changes colours: it needs image.channels 3, got {self.channels}")
            if self.pairs_dir is not None:
                raise ValueError("image.saturation changes the clean images before the noise is added: it cannot "
                                 "apply to noisy/clean pairs (image.pairs_dir)")


@dataclass(frozen=True)
class ImageLossConfig:
    """Image / stack loss weights (0 disables a term). See :mod:`xmodal.losses`.

    Attributes:
        l1: L1 (``charbonnier_eps`` = 0) or Charbonnier ``sqrt(d^2 + eps^2)`` distance.
        charbonnier_eps: Charbonnier epsilon (0 = plain L1).
        mse: mean squared error, the distance PSNR scores (for a PSNR-driven last stage after L1 training).
        ssim: ``1 - SSIM`` (pytorch-msssim, 11x11 Gaussian window, sigma 1.5).
        ms_ssim: ``1 - MS-SSIM`` (pytorch-msssim; needs patches larger than 160 pixels).
        perceptual: VGG-16 feature L1; needs ``perceptual_weights``.
        perceptual_weights: a torchvision VGG-16 state dict (``.pth``/``.safetensors``) supplied by the user;
            nothing is downloaded.
        perceptual_layers: VGG-16 ``features`` indices whose outputs are compared (ReLU1_2, 2_2, 3_3 by default).
        lpips: LPIPS distance (:class:`xmodal.perceptual.LPIPS`; gray and RGB images as they are, other channel
            counts channel by channel as gray).
        lpips_weights: the LPIPS backbone's torchvision ImageNet state dict, supplied by the user (``None``: the file
            in torchvision's hub cache).
        lpips_net: LPIPS backbone: ``alex``, ``vgg`` or ``squeeze``.
        lpips_linear: the LPIPS v0.1 linear layers (``None``: from the installed ``lpips`` package).
    """

    l1: float = 1.0
    charbonnier_eps: float = 0.0
    mse: float = 0.0
    ssim: float = 0.0
    ms_ssim: float = 0.0
    perceptual: float = 0.0
    perceptual_weights: str | None = None
    perceptual_layers: tuple[int, ...] = (3, 8, 15)
    lpips: float = 0.0
    lpips_weights: str | None = None
    lpips_net: str = "alex"
    lpips_linear: str | None = None


@dataclass(frozen=True)
class LossConfig:
    """Speech loss weights (0 disables a term). See :mod:`xmodal.losses`.

    Attributes:
        magnitude: compressed-magnitude MSE.
        complex: compressed complex (real/imag) MSE.
        waveform: waveform L1.
        mrstft: multi-resolution STFT (spectral convergence + log magnitude).
        si_sdr: negative SI-SDR.
        mrstft_ffts: FFT sizes of the multi-resolution STFT loss (hop = n_fft / 4).
    """

    magnitude: float = 0.9
    complex: float = 0.1
    waveform: float = 0.2
    mrstft: float = 0.0
    si_sdr: float = 0.0
    mrstft_ffts: tuple[int, ...] = (512, 1024, 256)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with cosine schedule and linear warmup.

    Attributes:
        lr: peak learning rate.
        weight_decay: AdamW decoupled weight decay.
        betas: AdamW betas.
        warmup_steps: linear warmup from 0 to ``lr``.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        grad_clip: max global gradient norm (0 disables clipping).
    """

    lr: float = 1e-3
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 200
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """Training loop.

    Attributes:
        run_dir: where weights, config, logs and the resumable state go.
        max_steps: optimisation steps in total (global batches).
        batch_size: global batch size (split evenly across DDP ranks).
        precision: ``fp32``, ``bf16`` (autocast, CPU and GPU) or ``fp16`` (autocast + gradient scaler, GPU only).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        log_every: steps between log lines / TensorBoard scalars.
        eval_every: steps between validations (0 = only at the end).
        save_every: steps between checkpoints (0 = at validations and at the end only).
        resume: continue from ``run_dir`` when it holds a checkpoint.
        tensorboard: write TensorBoard event files to ``run_dir/tb``.
        progress: show a progress bar (rank 0).
        threads: torch intra-op threads (0 = leave torch's default).
        seed: seed of the model initialisation.
        init_from: start a fresh run from these weights (a run directory, a ``.safetensors`` file or a bundled
            model's name such as ``gray``): every tensor whose name and shape match is copied (e.g. a trunk trained
            on another modality; a fine-tune). Ignored when the run resumes.
    """

    run_dir: str = "runs/speech"
    max_steps: int = 20000
    batch_size: int = 8
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    log_every: int = 50
    eval_every: int = 1000
    save_every: int = 500
    resume: bool = True
    tensorboard: bool = True
    progress: bool = True
    threads: int = 0
    seed: int = 0
    init_from: str | None = None


@dataclass(frozen=True)
class JointConfig:
    """Joint training (``modality: [speech, image]``): one shared trunk, a stem and a head per modality, every step
    one batch of each modality and the weighted sum of their losses.

    Attributes:
        weights: loss weight of each modality, in ``modality`` order (empty: 1 each).
        batch_size: global batch size of each modality, in ``modality`` order (empty: ``train.batch_size`` each).
    """

    weights: tuple[float, ...] = ()
    batch_size: tuple[int, ...] = ()


_Modality = Literal["speech", "image", "multispectral", "video"]


@dataclass(frozen=True)
class Config:
    """A whole recipe.

    ``modality`` picks the sections that matter: ``speech`` uses ``audio``, ``data`` and ``loss``; ``image`` and
    ``multispectral`` and ``video`` use ``image`` and ``image_loss``. ``model``, ``optim`` and ``train`` are shared. A
    list of modalities (``[speech, image]``) trains them jointly through one trunk (see :class:`JointConfig`);
    ``image``, ``multispectral`` and ``video`` all read the ``image`` section, so at most one of them can be in a list.
    """

    modality: _Modality | tuple[_Modality, ...] = "speech"
    audio: AudioConfig = field(default_factory=AudioConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: SpeechDataConfig = field(default_factory=SpeechDataConfig)
    image: ImageDataConfig = field(default_factory=ImageDataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    image_loss: ImageLossConfig = field(default_factory=ImageLossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    joint: JointConfig = field(default_factory=JointConfig)

    def __post_init__(self) -> None:
        if isinstance(self.modality, tuple):
            names = list(self.modality)
            if not names:
                raise ValueError("`modality` must name at least one modality, got []")
            if len(set(names)) != len(names):
                raise ValueError(f"`modality` lists a modality twice: {names}")
            pixels = [m for m in names if m in ("image", "multispectral", "video")]
            if len(pixels) > 1:
                raise ValueError(f"`modality` {names}: {' and '.join(pixels)} "
                                 f"{'both' if len(pixels) == 2 else 'all'} read the `image` section, so they cannot be "
                                 "trained in one run")
            if len(names) == 1:
                object.__setattr__(self, "modality", names[0])  # a one-item list is that modality
        if self.model.causal and self.modalities != ("speech",):
            raise ValueError(f"`model.causal` is for speech models (time runs along the spectrogram), got modality "
                             f"{' + '.join(self.modalities)}")
        n = len(self.modalities)
        for key, values in (("weights", self.joint.weights), ("batch_size", self.joint.batch_size)):
            if values and len(values) != n:
                raise ValueError(f"`joint.{key}` must have one value per modality ({n} for {list(self.modalities)}), "
                                 f"got {list(values)}")
        if any(w < 0 for w in self.joint.weights) or (self.joint.weights and not any(self.joint.weights)):
            raise ValueError(f"`joint.weights` must be >= 0 and not all 0, got {list(self.joint.weights)}")
        if any(b < 1 for b in self.joint.batch_size):
            raise ValueError(f"`joint.batch_size` must be at least 1 each, got {list(self.joint.batch_size)}")
        if any(m in ("image", "multispectral", "video") for m in self.modalities):  # caught before anything is written
            patch = self.image.patch_size
            if self.image_loss.ssim > 0 and patch < 11:
                raise ValueError(f"image_loss.ssim needs image.patch_size of at least 11 (its 11 x 11 window), got "
                                 f"{patch}")
            if self.image_loss.ms_ssim > 0 and patch <= 160:
                raise ValueError(f"image_loss.ms_ssim needs image.patch_size above 160 (5 scales), got {patch}; raise "
                                 "image.patch_size or use image_loss.ssim")
            if self.image.self_supervised is not None:
                if "video" in self.modalities:
                    raise ValueError("image.self_supervised is for the image and multispectral modalities, not video")
                terms = [k for k in ("ssim", "ms_ssim", "perceptual", "lpips") if getattr(self.image_loss, k) > 0]
                if terms:
                    raise ValueError(f"image.self_supervised trains with Neighbor2Neighbor's squared error against "
                                     f"noisy pixels; image_loss.{terms[0]} would compare with noise: set it to 0")

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities of this config: one, or several for a joint run."""
        return self.modality if isinstance(self.modality, tuple) else (self.modality,)

    @property
    def joint_run(self) -> bool:
        """Whether this config trains several modalities together."""
        return len(self.modalities) > 1

    def weight(self, modality: str) -> float:
        """Loss weight of ``modality`` (``joint.weights``, 1 by default)."""
        i = self.modalities.index(modality)
        return self.joint.weights[i] if self.joint.weights else 1.0

    def for_modality(self, modality: str) -> Config:
        """The single-modality view of this config: ``modality`` set to ``modality``, ``train.batch_size`` to its
        ``joint.batch_size``; the config itself when it has only that modality.

        Raises:
            ValueError: ``modality`` is not one of this config's.
        """
        if modality not in self.modalities:
            raise ValueError(f"this config has no modality {modality!r} (it has {', '.join(self.modalities)})")
        if not self.joint_run:
            return self
        i = self.modalities.index(modality)
        train = dataclasses.replace(self.train, batch_size=self.joint.batch_size[i]) if self.joint.batch_size \
            else self.train
        return dataclasses.replace(self, modality=modality, train=train, joint=JointConfig())


# ----------------------------------------------------------------------------------------------------------------
# Strict building from plain data


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} ({', '.join(_type_name(a) for a in args)})"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else type(value).__name__


class _Mismatch(Exception):
    pass


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it in canonical form (lists -> tuples)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: section `{key}` must be a mapping, got {_describe(value)}")
        return _build(tp, value, key, source)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key, source)
            except (_Mismatch, ConfigError):
                continue
        raise _Mismatch
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise _Mismatch
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and len(args) == 2 \
                and args[1] is Ellipsis:
            value = [value]  # a single value where a list is expected
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value))
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_coerce(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads `3e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        raise _Mismatch
    raise TypeError(f"unsupported config annotation {tp!r} at `{key}`")  # a bug in this module, not user input


def _unknown_key(source: str, prefix: str, key: str, names: list[str]) -> ConfigError:
    dotted = f"{prefix}.{key}" if prefix else str(key)
    close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
    hint = f" (did you mean `{prefix + '.' if prefix else ''}{close[0]}`?)" if close else \
        f" (valid keys: {', '.join(names)})"
    return ConfigError(f"{source}: unknown key `{dotted}`{hint}")


# Value ranges of the numeric fields, checked when a recipe or override is read (so that a bad value stops the run
# before anything is written, naming its key). Each rule: (test, what is expected). Tuples are checked item by item,
# except where a rule is on the whole tuple (the `(low, high)` ranges). The components keep their own checks for
# configs built in Python.


def _finite(v: float) -> bool:
    return math.isfinite(v)


_COUNT_1 = (lambda v: v >= 1, "at least 1")
_COUNT_0 = (lambda v: v >= 0, ">= 0")
_OFF_0 = (lambda v: v >= 0, ">= 0 (0 = off)")
_POSITIVE = (lambda v: _finite(v) and v > 0, "a finite number > 0")
_NON_NEGATIVE = (lambda v: _finite(v) and v >= 0, "a finite number >= 0")
_FRACTION = (lambda v: 0 <= v < 1, "in [0, 1)")
_PROBABILITY = (lambda v: 0 <= v <= 1, "in [0, 1]")
_FINITE = (_finite, "a finite number")
_LOW_HIGH = (lambda v: all(map(_finite, v)) and v[0] <= v[1], "a finite [low, high] range with low <= high")
_SEED = (lambda v: v >= 0, "an int >= 0")

_ITEMWISE = {"widths", "blocks", "valid_snrs", "mrstft_ffts", "perceptual_layers", "betas"}

_RANGES: dict[str, dict[str, tuple[Callable[[Any], bool], str]]] = {
    "AudioConfig": {
        "sample_rate": _COUNT_1, "n_fft": _COUNT_1, "hop_length": _COUNT_1, "win_length": _COUNT_1,
        "compress": (lambda v: _finite(v) and 0 < v <= 1, "in (0, 1]"), "target_rms": _POSITIVE,
        "running_rms_seconds": (lambda v: _finite(v) and v >= 0, "a finite number >= 0 (0 = off)"),
    },
    "ModelConfig": {"widths": _COUNT_1, "blocks": _COUNT_1, "cnn_depth": _COUNT_1, "mask_bound": _POSITIVE},
    "SpeechDataConfig": {
        "valid_fraction": _FRACTION, "valid_snrs": _FINITE,
        "valid_max_seconds": (lambda v: _finite(v) and v >= 0, "a finite number >= 0 (0 = whole files)"),
        "segment_seconds": _POSITIVE, "snr_range": _LOW_HIGH, "gain_range": _LOW_HIGH, "epoch_size": _COUNT_1,
        "num_workers": _COUNT_0, "seed": _SEED,
    },
    "ImageDataConfig": {
        "valid_fraction": _FRACTION, "valid_rows": _FRACTION,
        "valid_crop": (lambda v: v >= 0, ">= 0 (0 = whole images)"),
        "channels": _COUNT_1, "context_bands": _COUNT_0, "bands_per_item": _COUNT_1, "context_frames": _COUNT_0,
        "frames_per_item": _COUNT_1, "valid_frames": _COUNT_1, "motion": _COUNT_0, "jitter": _COUNT_0,
        "local_motion": _PROBABILITY, "mixed_channels": _PROBABILITY, "align_range": _OFF_0, "patch_size": _COUNT_1,
        "curriculum_fraction": _PROBABILITY, "epoch_size": _COUNT_1, "num_workers": _COUNT_0, "seed": _SEED,
    },
    "LossConfig": {
        "magnitude": _NON_NEGATIVE, "complex": _NON_NEGATIVE, "waveform": _NON_NEGATIVE, "mrstft": _NON_NEGATIVE,
        "si_sdr": _NON_NEGATIVE, "mrstft_ffts": (lambda v: v >= 4, "at least 4 (the hop is n_fft / 4)"),
    },
    "ImageLossConfig": {
        "l1": _NON_NEGATIVE, "charbonnier_eps": _NON_NEGATIVE, "mse": _NON_NEGATIVE, "ssim": _NON_NEGATIVE,
        "ms_ssim": _NON_NEGATIVE, "perceptual": _NON_NEGATIVE, "perceptual_layers": _COUNT_0, "lpips": _NON_NEGATIVE,
    },
    "OptimConfig": {
        "lr": _NON_NEGATIVE, "weight_decay": _NON_NEGATIVE, "betas": _FRACTION, "warmup_steps": _COUNT_0,
        "min_lr_ratio": _PROBABILITY, "grad_clip": (lambda v: _finite(v) and v >= 0, "a finite number >= 0 (0 = off)"),
    },
    "TrainConfig": {
        "max_steps": _COUNT_0, "batch_size": _COUNT_1, "log_every": _COUNT_1,
        "eval_every": (lambda v: v >= 0, ">= 0 (0 = only at the end)"),
        "save_every": (lambda v: v >= 0, ">= 0 (0 = at validations and at the end only)"),
        "threads": (lambda v: v >= 0, ">= 0 (0 = torch's default)"),
        "seed": _SEED,
    },
}


def _check_range(cls: type, key: str, value: Any, dotted: str, source: str) -> None:
    """Raise :class:`ConfigError` naming ``dotted`` when ``value`` is outside its field's range (see ``_RANGES``)."""
    rule = _RANGES.get(cls.__name__, {}).get(key)
    if rule is None or value is None:
        return
    ok, expected = rule
    items = [(f"{dotted}[{i}]", v) for i, v in enumerate(value)] if isinstance(value, tuple) and key in _ITEMWISE \
        else [(dotted, value)]
    for name, v in items:
        if not ok(v):
            shown = list(v) if isinstance(v, tuple) else v
            raise ConfigError(f"{source}: `{name}` must be {expected}, got {shown!r}")


def _build(cls: type, raw: dict, prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in raw.items():
        dotted = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            raise _unknown_key(source, prefix, k, names)
        try:
            kwargs[k] = _coerce(v, hints[k], dotted, source)
        except _Mismatch:
            raise ConfigError(
                f"{source}: `{dotted}` must be {_type_name(hints[k])}, got {_describe(v)}"
            ) from None
    for k, v in kwargs.items():
        _check_range(cls, k, v, f"{prefix}.{k}" if prefix else k, source)
    if cls is AudioConfig:  # the STFT's sizes against each other (defaults for the keys not given)
        n_fft = kwargs.get("n_fft", AudioConfig.n_fft)
        win = kwargs.get("win_length") or n_fft
        if win > n_fft:
            raise ConfigError(f"{source}: `{prefix}.win_length` must be at most `{prefix}.n_fft` ({n_fft}), got {win}")
        if kwargs.get("hop_length", AudioConfig.hop_length) > win:
            raise ConfigError(f"{source}: `{prefix}.hop_length` must be at most the window length ({win}), got "
                              f"{kwargs['hop_length']}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # a section's own checks (e.g. NoiseSpec ranges)
        raise ConfigError(f"{source}: `{prefix}`: {e}" if prefix else f"{source}: {e}") from None


def config_from_dict(raw: dict | None, source: str = "<dict>") -> Config:
    """Build a :class:`Config` from plain data (e.g. parsed YAML), strictly.

    Args:
        raw: nested mapping; missing keys take their defaults. ``None`` means all defaults.
        source: name used in error messages (a file name, or a description of the override).

    Raises:
        ConfigError: unknown key, wrong type or non-mapping section.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a recipe must be a mapping of sections, got {_describe(raw)}")
    return _build(Config, raw, "", source)


def config_to_dict(config: Any) -> dict:
    """Plain nested dict of a config dataclass (tuples become lists), ready for YAML."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return v

    return plain(config)


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """Parse ``key.sub=value`` strings; values are read as YAML (``1e-3``, ``[1, 2]``, ``true``, ``null``).

    Raises:
        ConfigError: an argument without ``=`` or with an empty key.
    """
    parsed = []
    for arg in overrides:
        key, sep, text = arg.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override `{arg}`: expected `key.sub=value`")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override `{arg}`: value is not valid YAML ({e.problem})") from None
        parsed.append((key, value))
    return parsed


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Return ``config`` with ``key.sub=value`` overrides applied, each checked like a recipe key.

    The config is checked after every override, so that a wrong key or value is named by its override; a check
    between keys (``image_loss.ms_ssim`` needs a larger ``image.patch_size``) that a later override satisfies does not
    stop the ones before it, so their order does not matter. What still fails after the last one is reported with
    the override from which on it failed that way.
    """
    raw = config_to_dict(config)
    reasons: list[str | None] = []  # per override: why the config built after it fails (None: it builds)
    for arg, (key, value) in zip(overrides, parse_overrides(overrides)):
        source = f"override `{arg}`"
        node, parts = raw, key.split(".")
        for i, part in enumerate(parts[:-1]):
            if part not in node:
                raise _unknown_key(source, ".".join(parts[:i]), part, list(node))
            node = node[part]
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: `{'.'.join(parts[: i + 1])}` is a value, not a section")
        node[parts[-1]] = value
        try:
            config = config_from_dict(raw, source)
            reasons.append(None)
        except ConfigError as e:
            reasons.append(str(e).removeprefix(f"{source}: "))
    if reasons and reasons[-1] is not None:
        first = len(reasons) - 1
        while first > 0 and reasons[first - 1] == reasons[-1]:
            first -= 1
        raise ConfigError(f"override `{overrides[first]}`: {reasons[-1]}")
    return config


def bundled_recipes() -> dict[str, Path]:
    """The recipes that come with xmodal, by name (``speech``, ``image``, ``tiny``...): ``xmodal/recipes`` in an
    installed wheel, the repository's ``recipes/`` folder in a source checkout."""
    package = Path(__file__).resolve().parent
    for folder, inside in ((package / "recipes", True), (package.parent / "recipes", False)):
        # beside the package only in a checkout (never another distribution's `recipes` in site-packages)
        if folder.is_dir() and (inside or (package.parent / "pyproject.toml").is_file()):
            return {p.stem: p for p in sorted(folder.glob("*.yaml"))}
    return {}


def load_config(path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML recipe strictly and apply dotted overrides.

    Args:
        path: recipe file, or the name of a bundled recipe (:func:`bundled_recipes`: ``speech``, ``image``...) when
            no file of that name exists; ``None`` starts from the defaults.
        overrides: ``key.sub=value`` strings applied in order.

    Returns:
        The resolved :class:`Config`.

    Raises:
        ConfigError: missing or unreadable file, invalid YAML, unknown key, wrong type, non-mapping section.
    """
    if path is None:
        config = Config()
    else:
        path = Path(path)
        named = len(path.parts) == 1 and not path.suffix and not path.exists()  # `speech`: a bundled recipe's name
        if named and path.name in bundled_recipes():
            path = bundled_recipes()[path.name]
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            hint, recipes = "", bundled_recipes()
            if named and recipes:
                names = [n for n in recipes if "_bundled" not in n]
                hint = f"; recipes that come with xmodal: {', '.join(names)} (and {len(recipes) - len(names)} " \
                    "*_bundled* recipes, those the bundled models were trained with)"
            raise ConfigError(f"{path}: recipe file not found{hint}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read recipe ({e})") from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
        config = config_from_dict(raw, str(path))
    return apply_overrides(config, list(overrides))


def dump_config(config: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (atomically: temp file, then rename)."""
    from xmodal._fs import atomic_write

    text = yaml.safe_dump(config_to_dict(config), sort_keys=False)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
