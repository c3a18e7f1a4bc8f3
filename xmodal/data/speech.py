"""Speech datasets: paired folders, and clean speech + noise mixed on the fly; plus the fixed validation set.

Every random choice of a training item is drawn from ``numpy.random.default_rng((seed, n))`` where ``n`` is the
global sample number (``step * batch_size + position``). Items therefore do not depend on worker count, rank count or
on where a run was resumed: a resumed run sees exactly the batches an uninterrupted run would.

Items are ``(noisy, clean)``, each ``(1, L) float32`` at the recipe's sample rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from xmodal.config import SpeechDataConfig
from xmodal.io import list_audio_files, load_audio

__all__ = ["MixingDataset", "PairedDataset", "SpeechCorpus", "ValidationClip", "mix_at_snr", "resolve_speech_data"]

_CLEAN_RMS_DB = -25.0  # level of clean speech before the random gain


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``clean + g * noise`` with ``g`` chosen so that the SNR over the whole clip is ``snr_db``.

    Args:
        clean: ``(..., T)``.
        noise: ``(..., T)`` (same shape).
        snr_db: target SNR in dB.

    Raises:
        ValueError: shapes differ or the noise is silent.
    """
    if clean.shape != noise.shape:
        raise ValueError(f"mix_at_snr: clean and noise shapes differ: {clean.shape} vs {noise.shape}")
    pn = _rms(noise)
    if pn < 1e-9:
        raise ValueError("mix_at_snr: the noise segment is silent")
    gain = _rms(clean) / pn / (10 ** (snr_db / 20))
    return (clean + gain * noise).astype(np.float32)


def _crop_or_pad(x: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """Random ``length`` crop of ``(T,)``; shorter inputs are zero-padded at a random position."""
    T = x.shape[-1]
    if T >= length:
        start = int(rng.integers(0, T - length + 1))
        return x[start:start + length]
    out = np.zeros(length, dtype=np.float32)
    start = int(rng.integers(0, length - T + 1))
    out[start:start + T] = x
    return out


def _loop_crop(x: np.ndarray, length: int, start: int) -> np.ndarray:
    """``length`` samples of ``x`` from ``start``, wrapping around (noise shorter than the speech is looped)."""
    reps = math.ceil((start % len(x) + length) / len(x))
    return np.tile(x, reps + 1)[start % len(x):start % len(x) + length]


class _AudioCache:
    """Reads files at the target rate on first use and keeps them (mono, float32)."""

    def __init__(self, files: list[Path], sample_rate: int) -> None:
        self.files = files
        self.sample_rate = sample_rate
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.files)

    def get(self, i: int, rng: np.random.Generator | None = None) -> np.ndarray:
        if i not in self._cache:
            wave = load_audio(self.files[i], self.sample_rate)  # (C, T)
            self._cache[i] = wave.numpy()
        wave = self._cache[i]
        ch = int(rng.integers(wave.shape[0])) if rng is not None and wave.shape[0] > 1 else 0
        return wave[ch]


class MixingDataset(Dataset):
    """Clean speech mixed with noise on the fly: random clean file and crop, noise file and offset, SNR and gain.

    The dataset is indexed by global sample number ``n`` (any non-negative int); ``len()`` is ``epoch_size``.

    Args:
        clean_files: clean speech files.
        noise_files: noise files.
        sample_rate: output rate (files are resampled).
        segment_seconds: crop length.
        snr_range: ``(low, high)`` SNR in dB.
        gain_range: ``(low, high)`` gain in dB around a -25 dBFS speech level.
        epoch_size: nominal length.
        seed: base seed.
    """

    def __init__(self, clean_files: list[Path], noise_files: list[Path], sample_rate: int, segment_seconds: float,
                 snr_range: tuple[float, float], gain_range: tuple[float, float], epoch_size: int,
                 seed: int) -> None:
        if not clean_files:
            raise ValueError("MixingDataset: no clean files")
        if not noise_files:
            raise ValueError("MixingDataset: no noise files")
        if snr_range[0] > snr_range[1]:
            raise ValueError(f"data.snr_range must be (low, high) with low <= high, got {list(snr_range)}")
        if gain_range[0] > gain_range[1]:
            raise ValueError(f"data.gain_range must be (low, high) with low <= high, got {list(gain_range)}")
        if segment_seconds <= 0:
            raise ValueError(f"data.segment_seconds must be positive, got {segment_seconds}")
        self.clean = _AudioCache(clean_files, sample_rate)
        self.noise = _AudioCache(noise_files, sample_rate)
        self.length = int(round(segment_seconds * sample_rate))
        self.snr_range, self.gain_range = snr_range, gain_range
        self.epoch_size, self.seed = epoch_size, seed

    def __len__(self) -> int:
        return self.epoch_size

    def __getitem__(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.seed, int(n)))
        # A (nearly) silent crop would make the SNR meaningless: take the first of a few tries that holds speech.
        clean_wave = self.clean.get(int(rng.integers(len(self.clean))), rng)
        floor = 0.1 * _rms(clean_wave)
        for _ in range(4):
            clean = _crop_or_pad(clean_wave, self.length, rng)
            if _rms(clean) > floor:
                break
        noise_wave = self.noise.get(int(rng.integers(len(self.noise))), rng)
        noise = None
        for _ in range(4):  # sparse noises (wind gusts, clicks): avoid near-silent segments
            noise = _loop_crop(noise_wave, self.length, int(rng.integers(len(noise_wave))))
            if _rms(noise) > 1e-4:
                break
        snr = rng.uniform(*self.snr_range)
        gain_db = rng.uniform(*self.gain_range)
        clean = clean * (10 ** ((_CLEAN_RMS_DB + gain_db) / 20) / max(_rms(clean), 1e-5))
        noisy = mix_at_snr(clean, noise, snr) if _rms(noise) > 1e-9 else clean.copy()
        peak = max(float(np.abs(noisy).max()), float(np.abs(clean).max()))
        if peak > 0.99:  # keep the mixture in range, same factor on both
            noisy, clean = noisy * (0.99 / peak), clean * (0.99 / peak)
        return (torch.from_numpy(np.ascontiguousarray(noisy, dtype=np.float32))[None],
                torch.from_numpy(np.ascontiguousarray(clean, dtype=np.float32))[None])


class PairedDataset(Dataset):
    """Pre-mixed pairs: random crops of ``noisy/NAME`` and ``clean/NAME`` (the same crop from both).

    Indexed by global sample number ``n``: epoch ``n // len`` visits every pair once in a seeded random order.
    """

    def __init__(self, pairs: list[tuple[Path, Path]], sample_rate: int, segment_seconds: float, seed: int) -> None:
        if not pairs:
            raise ValueError("PairedDataset: no pairs")
        self.noisy = _AudioCache([p[0] for p in pairs], sample_rate)
        self.clean = _AudioCache([p[1] for p in pairs], sample_rate)
        self.length = int(round(segment_seconds * sample_rate))
        self.seed = seed

    def __len__(self) -> int:
        return len(self.noisy)

    def pair_index(self, n: int) -> int:
        """Which pair sample number ``n`` reads: epoch ``n // len`` is a seeded permutation of all pairs."""
        epoch, pos = divmod(int(n), len(self))
        return int(np.random.default_rng((self.seed, epoch, 0)).permutation(len(self))[pos])

    def __getitem__(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = self.pair_index(n)
        rng = np.random.default_rng((self.seed, int(n), 1))
        noisy, clean = self.noisy.get(i), self.clean.get(i)
        T = min(noisy.shape[-1], clean.shape[-1])
        both = np.stack([noisy[:T], clean[:T]])  # (2, T)
        if T >= self.length:
            start = int(rng.integers(0, T - self.length + 1))
            both = both[:, start:start + self.length]
        else:
            both = np.pad(both, ((0, 0), (0, self.length - T)))
        return torch.from_numpy(both[0:1].copy()), torch.from_numpy(both[1:2].copy())


@dataclass
class ValidationClip:
    """One validation mixture: ``noisy``/``clean`` ``(1, T) float32`` at the recipe rate."""

    name: str
    noisy: torch.Tensor
    clean: torch.Tensor


@dataclass
class SpeechCorpus:
    """Training dataset + fixed validation clips resolved from a :class:`SpeechDataConfig`."""

    train: Dataset
    valid: list[ValidationClip]
    description: str
    demo: bool = False


def _split(files: list[Path], held_out: tuple[str, ...], fraction: float, seed: int, what: str,
           key: str) -> tuple[list[Path], list[Path]]:
    if held_out:
        names = {f.name for f in files}
        missing = [n for n in held_out if n not in names]
        if missing:
            raise ValueError(f"data.{key}: {', '.join(missing)} not found among the {what} files")
        valid = [f for f in files if f.name in set(held_out)]
        return [f for f in files if f.name not in set(held_out)], valid
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"data.valid_fraction must be in [0, 1), got {fraction}")
    n_valid = math.ceil(fraction * len(files)) if len(files) > 1 and fraction > 0 else 0
    order = np.random.default_rng(seed).permutation(len(files))
    valid = sorted(files[i] for i in order[:n_valid])
    return sorted(files[i] for i in order[n_valid:]), valid


def _files(dirs: tuple[str, ...]) -> list[Path]:
    return sorted((f for d in dirs for f in list_audio_files(d)), key=lambda p: (p.name, str(p)))


def _pairs(root: str) -> list[tuple[Path, Path]]:
    noisy_dir, clean_dir = Path(root) / "noisy", Path(root) / "clean"
    for d in (noisy_dir, clean_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"{root}: paired data needs folders `noisy/` and `clean/`; {d} is missing")
    noisy = {p.name: p for p in list_audio_files(noisy_dir)}
    clean = {p.name: p for p in list_audio_files(clean_dir)}
    unmatched = sorted(set(noisy) ^ set(clean))
    if unmatched:
        raise ValueError(f"{root}: {len(unmatched)} file(s) without a partner in noisy/ and clean/: "
                         f"{', '.join(unmatched[:5])}{' ...' if len(unmatched) > 5 else ''}")
    return [(noisy[n], clean[n]) for n in sorted(noisy)]


def _validation_mixtures(clean_files: list[Path], noise_files: list[Path], snrs: tuple[float, ...],
                         sample_rate: int, max_seconds: float, seed: int) -> list[ValidationClip]:
    clips = []
    noises = [load_audio(nf, sample_rate)[0].numpy() for nf in noise_files]  # each file read once
    for ci, cf in enumerate(clean_files):
        clean = load_audio(cf, sample_rate)[0].numpy()
        if max_seconds > 0:
            clean = clean[: int(max_seconds * sample_rate)]
        for ni, (nf, noise_wave) in enumerate(zip(noise_files, noises)):
            offset = int(np.random.default_rng((seed, ci, ni)).integers(len(noise_wave)))
            noise = _loop_crop(noise_wave, len(clean), offset)
            if _rms(noise) < 1e-9:  # mix_at_snr would refuse it, naming neither file
                raise ValueError(f"{nf}: the validation noise segment mixed into {cf} at "
                                 f"{', '.join(f'{s:g}' for s in snrs)} dB SNR is silent (the SNR would be "
                                 "meaningless); remove the file from the validation noise (data.valid_noise, "
                                 "data.noise_dir) or give it some sound")
            for snr in snrs:
                noisy = mix_at_snr(clean, noise, snr)
                peak = float(np.abs(noisy).max())
                scale = 0.99 / peak if peak > 0.99 else 1.0
                clips.append(ValidationClip(f"{cf.stem}+{nf.stem}@{snr:g}dB",
                                            torch.from_numpy(noisy * scale)[None],
                                            torch.from_numpy((clean * scale).astype(np.float32))[None]))
    return clips


def resolve_speech_data(config: SpeechDataConfig, sample_rate: int, demo_root: str | Path) -> SpeechCorpus:
    """Build the training dataset and validation clips that ``config`` describes.

    With no ``pairs_dir`` and no ``clean_dir``/``noise_dir``, a synthetic demo corpus is written under ``demo_root``
    and used (the result says ``demo=True``).

    Raises:
        ValueError: both kinds of data given, only one of clean/noise given, missing folders, unmatched pairs.
    """
    if config.pairs_dir and (config.clean_dir or config.noise_dir):
        raise ValueError("data: give either `pairs_dir` or `clean_dir` + `noise_dir`, not both")
    if bool(config.clean_dir) != bool(config.noise_dir):
        raise ValueError("data: on-the-fly mixing needs both `clean_dir` and `noise_dir` "
                         f"(got clean_dir={list(config.clean_dir)}, noise_dir={list(config.noise_dir)})")
    if config.pairs_dir:
        pairs = _pairs(config.pairs_dir)
        if config.valid_pairs_dir:
            train_pairs, valid_pairs = pairs, _pairs(config.valid_pairs_dir)
        else:
            order = np.random.default_rng(config.seed).permutation(len(pairs))
            n_valid = math.ceil(config.valid_fraction * len(pairs)) if len(pairs) > 1 else 0
            valid_pairs = [pairs[i] for i in sorted(order[:n_valid])]
            train_pairs = [pairs[i] for i in sorted(order[n_valid:])]
        valid = []
        for noisy_f, clean_f in valid_pairs:
            noisy, clean = load_audio(noisy_f, sample_rate)[:1], load_audio(clean_f, sample_rate)[:1]
            T = min(noisy.shape[-1], clean.shape[-1])
            if config.valid_max_seconds > 0:
                T = min(T, int(config.valid_max_seconds * sample_rate))
            valid.append(ValidationClip(noisy_f.stem, noisy[:, :T], clean[:, :T]))
        train = PairedDataset(train_pairs, sample_rate, config.segment_seconds, config.seed)
        return SpeechCorpus(train, valid, f"paired folders {config.pairs_dir}: {len(train_pairs)} training pairs, "
                                          f"{len(valid)} validation pairs")
    demo = not config.clean_dir
    if demo:
        from xmodal.data.synthetic import make_demo_corpus

        clean_dir, noise_dir = make_demo_corpus(demo_root, sample_rate, seed=config.seed)
        clean_dirs, noise_dirs = (str(clean_dir),), (str(noise_dir),)
    else:
        clean_dirs, noise_dirs = config.clean_dir, config.noise_dir
    clean_train, clean_valid = _split(_files(clean_dirs), config.valid_clean, config.valid_fraction, config.seed,
                                      "clean", "valid_clean")
    noise_train, noise_valid = _split(_files(noise_dirs), config.valid_noise, config.valid_fraction,
                                      config.seed + 1, "noise", "valid_noise")
    if not clean_train or not noise_train:
        raise ValueError("data: every clean (or noise) file is held out for validation; nothing is left to train on")
    train = MixingDataset(clean_train, noise_train, sample_rate, config.segment_seconds, config.snr_range,
                          config.gain_range, config.epoch_size, config.seed)
    valid = _validation_mixtures(clean_valid, noise_valid, config.valid_snrs, sample_rate,
                                 config.valid_max_seconds, config.seed) if noise_valid else []
    what = "DEMO corpus (synthetic speech-like signals, not real speech)" if demo else "clean + noise mixed on the fly"
    return SpeechCorpus(train, valid, f"{what}: {len(clean_train)} clean / {len(noise_train)} noise files for "
                                      f"training, {len(clean_valid)} x {len(noise_valid)} x {len(config.valid_snrs)} "
                                      f"validation mixtures", demo=demo)

