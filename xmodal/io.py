"""Reading and writing files in their natural domain.

Audio: ``wave (C, T) float32 in [-1, 1]`` at the file's sample rate, read and written with soundfile (libsndfile:
WAV, FLAC, OGG Vorbis/Opus, MP3, AIFF), and ``.m4a`` (AAC or ALAC in MP4: phone voice memos, meeting recordings)
and audio-only video containers (``.webm`` from browsers, ``.mp4``...) through PyAV (``pip install
"xmodal[video]"``). Tags (title, artist, date...) go along. Writing is atomic: a temp file in the destination
folder, then a rename, so a failure never leaves a half-written file.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xmodal._fs import atomic_write

__all__ = ["AUDIO_EXTENSIONS", "AV_CONTAINERS", "PYAV_AUDIO_EXTENSIONS", "AudioReadError", "audio_metadata",
           "av_streams", "container_tags", "copy_tags", "decode_av_audio", "encode_av_audio", "import_av",
           "list_audio_files", "read_audio", "read_av_audio", "resample", "write_audio"]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aif", ".aiff")
# containers read and written through PyAV, not libsndfile: extension -> (FFmpeg muxer, audio codecs it is written
# with, the default first). .m4a is audio; the video containers hold audio alone too (browser recordings in .webm)
AV_CONTAINERS = {".m4a": ("ipod", ("aac", "alac")), ".mp4": ("mp4", ("aac", "alac")),
                 ".mov": ("mov", ("aac", "alac")), ".mkv": ("matroska", ("flac", "opus", "aac", "alac", "pcm_s16le")),
                 ".webm": ("webm", ("opus",)), ".avi": ("avi", ("pcm_s16le",))}
PYAV_AUDIO_EXTENSIONS = tuple(AV_CONTAINERS)
_ENCODERS = {"opus": "libopus"}  # FFmpeg encoder of a codec, where the names differ
_MUXER_TAGS = ("encoder", "major_brand", "minor_version", "compatible_brands", "duration")  # written by the muxer
_SNDFILE_TAGS = ("title", "copyright", "software", "artist", "comment", "date", "album", "license", "tracknumber",
                 "genre")  # libsndfile's strings


class AudioReadError(ValueError):
    """A file could not be read as audio; the message names the file and the reason."""


def import_av(what: str, hint: str = "") -> Any:
    """PyAV, or an ImportError saying that ``what`` needs it and how to install it (then ``hint``)."""
    try:
        import av
    except ImportError:
        raise ImportError(f'{what} needs PyAV: pip install "xmodal[video]" (or pip install av){hint}') from None
    return av


def _import_av(path: Path) -> Any:
    return import_av(f"{path}: {path.suffix} audio")


def container_tags(container: Any) -> dict[str, str]:
    """The tags of an open PyAV container (title, artist, creation_time...), lower-cased, without those its muxer
    writes itself (encoder, brands, duration)."""
    return {k.lower(): str(v) for k, v in container.metadata.items() if v and k.lower() not in _MUXER_TAGS}


def decode_av_audio(container: Any, stream: Any) -> tuple[np.ndarray, float]:
    """A whole audio stream as ``(C, T) float32`` and the time of its first sample in seconds."""
    import av

    resampler = av.AudioResampler(format="fltp", layout=stream.codec_context.layout, rate=stream.codec_context.rate)
    start, chunks = None, []
    for frame in container.decode(stream):
        if start is None and frame.pts is not None:
            start = float(frame.pts * frame.time_base)
        chunks += [f.to_ndarray() for f in resampler.resample(frame)]
    chunks += [f.to_ndarray() for f in resampler.resample(None)]
    channels = stream.codec_context.channels
    wave = np.concatenate(chunks, axis=1) if chunks else np.zeros((channels, 0), np.float32)
    return np.ascontiguousarray(wave, dtype=np.float32), start or 0.0


def encode_av_audio(out: Any, codec: str, wave: np.ndarray, rate: int, layout: Any, start: float) -> list[Any]:
    """Add a ``codec`` stream to ``out`` and encode ``wave`` (``(C, T)``, first sample at ``start`` seconds) into
    it; returns its packets (for the caller to mux, interleaved with any other streams)."""
    import av

    codec = _ENCODERS.get(codec, codec)
    rates = av.Codec(codec, "w").audio_rates
    out_rate = rate if not rates or rate in rates else max(rates)  # Opus: 48 kHz
    stream = out.add_stream(codec, rate=out_rate, layout=layout)
    if codec == "aac":
        stream.bit_rate = 96_000 * wave.shape[0]
    skip = max(0, round(-start * rate))  # samples before time 0 are cut (in a video: before its first frame)
    pts = max(0, round(start * rate))
    packets: list[Any] = []
    block = 4096
    for a in range(skip, wave.shape[1], block):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, a:a + block]), format="fltp", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, pts, Fraction(1, rate)
        pts += frame.samples
        packets += stream.encode(frame)
    packets += stream.encode(None)
    return packets


def av_streams(path: str | os.PathLike) -> tuple[int, int]:
    """``(pictures, audio streams)`` of a file PyAV reads, from its header (a cover image, ``attached_pic``, is no
    picture); ``(0, 0)`` when it cannot be opened (the reader then says why)."""
    path = Path(path)
    av = _import_av(path)
    try:
        with av.open(str(path)) as container:
            cover = av.stream.Disposition.attached_pic
            return (sum(1 for s in container.streams.video if not s.disposition & cover),
                    len(container.streams.audio))
    except Exception:
        return 0, 0


def read_av_audio(path: str | os.PathLike) -> tuple[np.ndarray, int, str]:
    """The first audio stream of a file PyAV reads (``.m4a``, or a video container): ``(wave (C, T) float32,
    sample_rate, codec)``, cut to the stream's duration (no encoder delay or padding: the samples that were
    encoded).

    Raises:
        AudioReadError: unreadable, no audio stream, zero length.
        ImportError: no PyAV.
    """
    path = Path(path)
    av = _import_av(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioReadError(f"{path}: holds no audio stream")
            stream = container.streams.audio[0]
            rate, codec = int(stream.codec_context.rate), str(stream.codec_context.name)
            wave, start = decode_av_audio(container, stream)
            duration = stream.duration * stream.time_base if stream.duration and stream.time_base else None
    except AudioReadError:
        raise
    except Exception as e:  # PyAV raises its own error classes for corrupt or unknown files
        raise AudioReadError(f"{path}: not readable as audio ({e})") from None
    wave = wave[:, max(0, round(-start * rate)):]  # samples before time 0 (decoder priming) are not part of it
    if duration is not None:
        wave = wave[:, :round(float(duration) * rate)]
    if wave.shape[1] == 0:
        raise AudioReadError(f"{path}: zero-length audio")
    if not np.isfinite(wave).all():
        raise AudioReadError(f"{path}: contains NaN or infinite samples")
    return np.ascontiguousarray(wave), rate, codec


def _write_av_audio(path: str, muxer: str, wave: np.ndarray, sample_rate: int, codec: str,
                    metadata: dict[str, str]) -> None:
    """Encode ``wave (C, T)`` as ``codec`` into the ``muxer`` file ``path`` (an audio-only container), with the
    container tags ``metadata``."""
    av = _import_av(Path(path))
    layout = {1: "mono", 2: "stereo"}.get(wave.shape[0], f"{wave.shape[0]}c")
    with av.open(path, "w", format=muxer) as out:
        out.metadata.update({"track" if k == "tracknumber" else k: v for k, v in metadata.items()})
        for packet in encode_av_audio(out, codec, wave, sample_rate, layout, 0.0):
            out.mux(packet)


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
        path: any format libsndfile reads, or ``.m4a`` and the video containers (their first audio stream,
            through PyAV: :func:`read_av_audio`).

    Returns:
        ``(wave, sample_rate)`` with ``wave: (C, T) float32 in [-1, 1]``.

    Raises:
        AudioReadError: missing, unreadable, not audio, zero length, or NaN/inf samples.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioReadError(f"{path}: file not found")
    if path.suffix.lower() in PYAV_AUDIO_EXTENSIONS:
        wave, sr, _ = read_av_audio(path)
        return wave, sr
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
                subtype: str | None = None, metadata: dict[str, str] | None = None) -> None:
    """Write ``wave: (C, T) or (T,) float`` atomically (temp file in the same folder, then rename).

    Args:
        path: destination; the format follows the extension.
        wave: samples in [-1, 1] (clipped for integer subtypes).
        sample_rate: rate in Hz.
        subtype: libsndfile subtype (``PCM_16``, ``PCM_24``, ``FLOAT``...); ``None`` = the format's default.
            For the PyAV containers (:data:`AV_CONTAINERS`) the codec: ``AAC`` (default) or ``ALAC`` for
            ``.m4a``/``.mp4``/``.mov``, ``FLAC`` (default), ``OPUS``, ``AAC``, ``ALAC`` or ``PCM_S16LE`` for ``.mkv``,
            ``OPUS`` for ``.webm``, ``PCM_S16LE`` for ``.avi``.
        metadata: tags to write (:func:`audio_metadata` of a source: title, artist, date...); those the format
            cannot hold are left out.
    """
    if isinstance(wave, torch.Tensor):
        wave = wave.detach().cpu().float().numpy()
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 1:
        wave = wave[None]
    if wave.ndim != 2:
        raise ValueError(f"Expected `wave` of shape (T,) or (C, T), got {tuple(wave.shape)}")
    if subtype is None or not subtype.startswith(("FLOAT", "DOUBLE")):
        wave = np.clip(wave, -1.0, 1.0)
    suffix = Path(path).suffix.lower()
    if suffix in AV_CONTAINERS:
        muxer, codecs = AV_CONTAINERS[suffix]
        codec = codecs[0] if subtype is None else subtype.lower()
        if codec not in codecs:
            raise ValueError(f"{path}: a {suffix} file is written with {', '.join(c.upper() for c in codecs)}, got "
                             f"subtype {subtype!r}")
        atomic_write(path, lambda tmp: _write_av_audio(tmp, muxer, np.clip(wave, -1.0, 1.0), sample_rate, codec,
                                                       metadata or {}))
        return

    def write(tmp: str) -> None:
        import soundfile as sf

        fmt = "OGG" if suffix == ".opus" else None  # libsndfile knows Opus files as OGG
        with sf.SoundFile(tmp, "w", sample_rate, wave.shape[0], subtype=subtype or ("OPUS" if fmt else None),
                          format=fmt) as out:
            copy_tags(metadata or {}, out)
            out.write(wave.T)  # (C, T) -> (T, C)

    atomic_write(path, write)


def audio_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The tags of an audio file (title, artist, album, date, comment, genre, ...), for :func:`write_audio` or
    :func:`copy_tags`: libsndfile's strings, or a PyAV container's tags (less those its muxer writes itself);
    ``{}`` when there are none or the file cannot be read."""
    path = Path(path)
    try:
        if path.suffix.lower() in AV_CONTAINERS:
            with _import_av(path).open(str(path)) as container:
                return container_tags(container)
        import soundfile as sf

        with sf.SoundFile(str(path)) as f:
            return {k: v for k, v in f.copy_metadata().items() if v}
    except ImportError:
        raise
    except Exception:
        return {}


def copy_tags(metadata: dict[str, str], out: Any) -> None:
    """Set ``metadata`` on an open libsndfile ``SoundFile`` for writing: the tags libsndfile has a string for
    (``track`` is its ``tracknumber``); one the format cannot hold is left out."""
    for key, value in metadata.items():
        key = {"track": "tracknumber"}.get(key, key)
        if key in _SNDFILE_TAGS:
            try:
                setattr(out, key, value)
            except Exception:  # a string this format has no field for
                pass


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
