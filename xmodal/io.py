"""Reading and writing files in their natural domain.

Audio: ``wave (C, T) float32 in [-1, 1]`` at the file's sample rate, read and written with soundfile (libsndfile:
WAV, FLAC, OGG...). Writing is atomic: a temp file in the destination folder, then a rename, so a failure never leaves
a half-written file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from xmodal._fs import atomic_write

__all__ = ["AUDIO_EXTENSIONS", "AudioReadError", "list_audio_files", "read_audio", "resample", "write_audio"]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")


class AudioReadError(ValueError):
    """A file could not be read as audio; the message names the file and the reason."""


def list_audio_files(folder: str | os.PathLike) -> list[Path]:
    """Audio files directly inside ``folder`` (sorted by name).

    Raises:
        FileNotFoundError: ``folder`` does not exist or is not a directory.
        ValueError: it holds no audio file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: audio folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise ValueError(f"{folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder")
    return files


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read an audio file.

    Args:
        path: any format libsndfile reads.

    Returns:
        ``(wave, sample_rate)`` with ``wave: (C, T) float32 in [-1, 1]``.

    Raises:
        AudioReadError: missing, unreadable, not audio, zero length, or NaN/inf samples.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioReadError(f"{path}: file not found")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (T, C)
    except Exception as e:  # libsndfile raises several types (LibsndfileError, RuntimeError, ...)
        raise AudioReadError(f"{path}: not readable as audio ({e})") from None
    if sr <= 0:
        raise AudioReadError(f"{path}: sample rate {sr} is not valid")
    if data.shape[0] == 0:
        raise AudioReadError(f"{path}: zero-length audio")
    if not np.isfinite(data).all():
        raise AudioReadError(f"{path}: contains NaN or infinite samples")
    return np.ascontiguousarray(data.T), int(sr)  # (T, C) -> (C, T)


def write_audio(path: str | os.PathLike, wave: np.ndarray | torch.Tensor, sample_rate: int,
                subtype: str | None = None) -> None:
    """Write ``wave: (C, T) or (T,) float`` atomically (temp file in the same folder, then rename).

    Args:
        path: destination; the format follows the extension.
        wave: samples in [-1, 1] (clipped for integer subtypes).
        sample_rate: rate in Hz.
        subtype: libsndfile subtype (``PCM_16``, ``PCM_24``, ``FLOAT``...); ``None`` = the format's default.
    """
    import soundfile as sf

    if isinstance(wave, torch.Tensor):
        wave = wave.detach().cpu().float().numpy()
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 1:
        wave = wave[None]
    if wave.ndim != 2:
        raise ValueError(f"Expected `wave` of shape (T,) or (C, T), got {tuple(wave.shape)}")
    if subtype is None or not subtype.startswith(("FLOAT", "DOUBLE")):
        wave = np.clip(wave, -1.0, 1.0)
    atomic_write(path, lambda tmp: sf.write(tmp, wave.T, sample_rate, subtype=subtype))  # (C, T) -> (T, C)


def resample(wave: torch.Tensor | np.ndarray, orig_freq: int, new_freq: int) -> torch.Tensor:
    """Band-limited resampling along the last axis (torchaudio's windowed sinc).

    Args:
        wave: ``(..., T)`` float.
        orig_freq: input rate in Hz.
        new_freq: output rate in Hz.

    Returns:
        ``(..., T')`` float tensor with ``T' = ceil(T * new_freq / orig_freq)``.
    """
    import torchaudio.functional as AF

    wave = torch.as_tensor(wave, dtype=torch.float32)
    if orig_freq == new_freq:
        return wave
    return AF.resample(wave, int(orig_freq), int(new_freq))


def load_audio(path: str | os.PathLike, sample_rate: int) -> torch.Tensor:
    """Read ``path`` and resample it to ``sample_rate``; returns ``(C, T) float32``."""
    wave, sr = read_audio(path)
    return resample(torch.from_numpy(wave), sr, sample_rate)
