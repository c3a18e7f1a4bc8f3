"""Reading and writing files in their natural domain.

Audio: ``wave (C, T) float32 in [-1, 1]`` at the file's sample rate, read and written with soundfile (libsndfile:
WAV, FLAC, OGG Vorbis/Opus, MP3, AIFF), and ``.m4a`` (AAC or ALAC in MP4: phone voice memos, meeting recordings)
and audio-only video containers (``.webm`` from browsers, ``.mp4``...) through PyAV (``pip install
"xmodal[video]"``). Tags (title, artist, date...) go along. Writing is atomic: a temp file in the destination
folder, then a rename, so a failure never leaves a half-written file.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xmodal._fs import atomic_write

__all__ = ["AUDIO_EXTENSIONS", "AV_CONTAINERS", "PYAV_AUDIO_EXTENSIONS", "AudioReadError", "AvAudioSource",
           "audio_metadata", "av_audio_stream", "av_streams", "container_tags", "copy_tags", "encode_av_audio",
           "import_av", "list_audio_files", "read_audio", "read_av_audio", "resample", "write_audio",
           "write_audio_blocks"]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aif", ".aiff")
# containers read and written through PyAV, not libsndfile: extension -> (FFmpeg muxer, audio codecs it is written
# with, the default first). .m4a is audio; the video containers hold audio alone too (browser recordings in .webm)
AV_CONTAINERS = {".m4a": ("ipod", ("aac", "alac")), ".mp4": ("mp4", ("aac", "alac")),
                 ".mov": ("mov", ("aac", "alac")), ".mkv": ("matroska", ("flac", "opus", "aac", "alac", "pcm_s16le")),
                 ".webm": ("webm", ("opus",)), ".avi": ("avi", ("pcm_s16le",))}
PYAV_AUDIO_EXTENSIONS = tuple(AV_CONTAINERS)
_FRAME = 4096  # samples per frame handed to an encoder
_FULL_DISK = 1 << 20  # free bytes under which libsndfile's "System error." on writing is taken for a full disk
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


class AvAudioSource:
    """One audio stream of a file PyAV reads (``.m4a``, a video container), decoded in order in bounded memory.

    Each :meth:`blocks` call decodes the stream afresh from its start and yields its samples as ``(C, L) float32``
    blocks (FFmpeg's frames, through ``fltp`` at the stream's layout and rate), never the whole stream at once. The
    header (rate, channels, codec) is read, and the first frame decoded, when the source is made, so a file that is
    not audio fails here, naming it.

    Args:
        path: the file.
        index: the stream's index in the container; ``None``: its first audio stream.
        trim: give the samples that were encoded: those before time 0 (decoder priming: AAC's encoder delay) and
            past the stream's duration (padding to a whole frame) are cut. Without it every decoded sample comes, the
            first at :attr:`start` seconds (what a soundtrack keeps its timing against the picture with).

    Attributes:
        name: how messages name it: the path, and ``audio stream N`` when ``index`` was given.
        rate, channels, layout, codec: the stream's sample rate (Hz), channel count, PyAV layout and codec name.
        lossless: whether the codec is lossless (ALAC, FLAC, PCM...).
        bits: the bits per sample a lossless copy needs (:func:`av_audio_stream`): 24 for a lossless stream of more
            than 16 bits (24-bit ALAC or FLAC, 24- or 32-bit or float PCM), else 16.
        start: the time of the first sample :meth:`blocks` gives, in seconds.

    Raises:
        AudioReadError: unreadable file, no audio stream (or no stream ``index``), or a stream that does not decode.
        ImportError: no PyAV.
    """

    def __init__(self, path: str | os.PathLike, index: int | None = None, *, trim: bool = True) -> None:
        self.path, self.index = Path(path), index
        self.name = str(self.path) if index is None else f"{self.path}: audio stream {index}"
        av = _import_av(self.path)
        try:
            with av.open(str(self.path)) as container:
                stream = self._stream(container)
                ctx = stream.codec_context
                self.rate, self.channels, self.codec = int(ctx.rate), int(ctx.channels), str(ctx.name)
                self.layout, self.lossless = ctx.layout, bool(ctx.codec.lossless)
                self.bits = 24 if self.lossless and ctx.format is not None and ctx.format.bytes > 2 else 16
                first = next(iter(container.decode(stream)), None)
                start = float(first.pts * first.time_base) if first is not None and first.pts is not None else 0.0
                duration = stream.duration * stream.time_base if stream.duration and stream.time_base else None
        except AudioReadError:
            raise
        except Exception as e:  # PyAV raises its own error classes for corrupt or unknown files
            raise AudioReadError(f"{self.name}: not readable as audio ({e})") from None
        self._skip = max(0, round(-start * self.rate)) if trim else 0  # priming samples cut at the start
        self._stop = round(float(duration) * self.rate) if trim and duration is not None else None  # samples kept
        self.start = start + self._skip / self.rate

    def _stream(self, container: Any) -> Any:
        if self.index is None:
            if not container.streams.audio:
                raise AudioReadError(f"{self.name}: holds no audio stream")
            return container.streams.audio[0]
        stream = next((s for s in container.streams.audio if s.index == self.index), None)
        if stream is None:
            raise AudioReadError(f"{self.name}: no such audio stream")
        return stream

    def blocks(self) -> Iterator[np.ndarray]:
        """The stream's samples from its start, as consecutive ``(C, L) float32`` blocks (a fresh decode).

        Raises:
            AudioReadError: the stream stops decoding part way (the message names the file and FFmpeg's reason).
        """
        av = _import_av(self.path)
        try:
            with av.open(str(self.path)) as container:
                stream = self._stream(container)
                resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
                decoded = (out.to_ndarray() for frame in _and_flush(container.decode(stream))
                           for out in resampler.resample(frame))
                for block in _cut(decoded, self._skip, self._stop):
                    yield np.ascontiguousarray(block, dtype=np.float32)
        except av.FFmpegError as e:
            raise AudioReadError(f"{self.name}: cannot be decoded ({e})") from None

    def whole(self) -> np.ndarray:
        """The stream's samples at once, ``(C, T) float32`` (``(C, 0)`` when it has none)."""
        blocks = list(self.blocks())
        return np.concatenate(blocks, axis=1) if blocks else np.zeros((self.channels, 0), np.float32)


def _and_flush(frames: Iterator[Any]) -> Iterator[Any]:
    """``frames``, then ``None`` (what flushes a resampler)."""
    yield from frames
    yield None


def _cut(blocks: Iterable[np.ndarray], skip: int, keep: int | None = None) -> Iterator[np.ndarray]:
    """Consecutive ``(C, L)`` blocks without their first ``skip`` samples and, with ``keep``, none past ``keep``
    samples after those; empty blocks are left out."""
    for block in blocks:
        cut = min(skip, block.shape[1])
        block, skip = block[:, cut:], skip - cut
        if keep is not None:
            block, keep = block[:, :keep], keep - min(keep, block.shape[1])
        if block.shape[1]:
            yield block


def av_audio_stream(out: Any, codec: str, rate: int, layout: Any, bits: int = 16) -> Any:
    """Add a ``codec`` audio stream to the PyAV output container ``out`` for samples at ``rate`` Hz (Opus: at
    48 kHz, which it is resampled to); AAC at 96 kb/s a channel; the lossless codecs (ALAC, FLAC, and PCM, given as
    ``pcm_s16le``) at ``bits`` (16 or 24) per sample."""
    import av

    if codec == "pcm_s16le" and bits > 16:
        codec = "pcm_s24le"
    codec = _ENCODERS.get(codec, codec)
    rates = av.Codec(codec, "w").audio_rates
    stream = out.add_stream(codec, rate=rate if not rates or rate in rates else max(rates), layout=layout)
    if codec == "aac":
        stream.bit_rate = 96_000 * stream.codec_context.channels
    if codec in ("alac", "flac"):  # FFmpeg codes 24-bit samples from 32-bit ones (FLAC: planar or not, as it takes)
        stream.format = ("s32" if bits > 16 else "s16") + ("p" if codec == "alac" else "")
    return stream


def encode_av_audio(stream: Any, blocks: Iterable[np.ndarray], rate: int, layout: Any,
                    start: float) -> Iterator[Any]:
    """Encode consecutive ``(C, L)`` blocks of samples at ``rate`` Hz, the first at ``start`` seconds, into the PyAV
    ``stream`` (:func:`av_audio_stream`); yields its packets as they come (for the caller to mux, interleaved with any
    other streams), so memory holds a block at a time. Samples before time 0 are cut (in a video: before its first
    frame)."""
    import av

    pts = max(0, round(start * rate))
    for block in _cut(blocks, max(0, round(-start * rate))):
        for a in range(0, block.shape[1], _FRAME):
            piece = np.ascontiguousarray(block[:, a:a + _FRAME], dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, pts, Fraction(1, rate)
            pts += frame.samples
            yield from stream.encode(frame)
    yield from stream.encode(None)


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
    """The first audio stream of a file PyAV reads (``.m4a``, or a video container) whole: ``(wave (C, T) float32,
    sample_rate, codec)``, cut to the samples that were encoded (no encoder delay or padding; see
    :class:`AvAudioSource`, which reads one in bounded memory).

    Raises:
        AudioReadError: unreadable, no audio stream, zero length, NaN or infinite samples.
        ImportError: no PyAV.
    """
    source = AvAudioSource(path)
    wave = source.whole()
    if wave.shape[1] == 0:
        raise AudioReadError(f"{path}: zero-length audio")
    if not np.isfinite(wave).all():
        raise AudioReadError(f"{path}: contains NaN or infinite samples")
    return wave, source.rate, source.codec


def _write_av_audio(path: str, muxer: str, blocks: Iterable[np.ndarray], sample_rate: int, channels: int, codec: str,
                    metadata: dict[str, str], bits: int) -> int:
    """Encode consecutive ``(C, L)`` blocks (clipped to [-1, 1]) as ``codec`` (lossless ones at ``bits`` per sample)
    into the ``muxer`` file ``path`` (an audio-only container), with the container tags ``metadata``; returns the
    samples written."""
    av = _import_av(Path(path))
    layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")
    written = 0

    def clipped() -> Iterator[np.ndarray]:
        nonlocal written
        for block in blocks:
            written += block.shape[1]
            yield np.clip(block, -1.0, 1.0)

    with av.open(path, "w", format=muxer) as out:
        out.metadata.update({"track" if k == "tracknumber" else k: v for k, v in metadata.items()})
        stream = av_audio_stream(out, codec, sample_rate, layout, bits)
        for packet in encode_av_audio(stream, clipped(), sample_rate, layout, 0.0):
            out.mux(packet)
    return written


def list_audio_files(folder: str | os.PathLike) -> list[Path]:
    """Audio files directly inside ``folder`` (sorted by name).

    Raises:
        FileNotFoundError: ``folder`` does not exist or is not a directory.
        ValueError: it holds no audio file.
    """
    folder = Path(folder)
    if folder.is_file():
        raise FileNotFoundError(f"{folder}: a file, where a folder of audio files is expected (give its folder)")
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
    write_audio_blocks(path, [wave], sample_rate, wave.shape[0], subtype=subtype, metadata=metadata,
                       clip=subtype is None or not subtype.startswith(("FLOAT", "DOUBLE")))


def write_audio_blocks(path: str | os.PathLike, blocks: Iterable[np.ndarray], sample_rate: int, channels: int, *,
                       subtype: str | None = None, metadata: dict[str, str] | None = None, clip: bool = True,
                       fmt: str | None = None, bits: int = 16) -> int:
    """Write consecutive ``(C, L) float32`` blocks as one file, atomically, holding one block at a time (e.g. the
    output of a chunked denoiser); returns the samples written.

    Args:
        path, sample_rate, subtype, metadata: as in :func:`write_audio`.
        blocks: ``(channels, L)`` arrays, in order.
        clip: clip to [-1, 1] (always done for the PyAV containers, whose codecs take no more).
        fmt: libsndfile format (``WAV``, ``FLAC``...); ``None``: the extension's.
        bits: 16 or 24: the bits per sample of the PyAV containers' lossless codecs (ALAC, FLAC, PCM); libsndfile
            files take theirs from ``subtype``.

    Raises:
        ValueError: a codec the PyAV container is not written with; ``bits`` not 16 or 24.
    """
    if bits not in (16, 24):
        raise ValueError(f"`bits` must be 16 or 24, got {bits!r}")
    suffix = Path(path).suffix.lower()
    if suffix in AV_CONTAINERS:
        muxer, codecs = AV_CONTAINERS[suffix]
        codec = codecs[0] if subtype is None else subtype.lower()
        if codec not in codecs:
            raise ValueError(f"{path}: a {suffix} file is written with {', '.join(c.upper() for c in codecs)}, got "
                             f"subtype {subtype!r}")
        written = 0

        def write_av(tmp: str) -> None:
            nonlocal written
            written = _write_av_audio(tmp, muxer, blocks, sample_rate, channels, codec, metadata or {}, bits)

        atomic_write(path, write_av)
        return written

    written = 0

    def write(tmp: str) -> None:
        nonlocal written
        import soundfile as sf

        form = fmt or ("OGG" if suffix == ".opus" else None)  # libsndfile knows Opus files as OGG
        try:
            with sf.SoundFile(tmp, "w", sample_rate, channels, format=form,
                              subtype=subtype or ("OPUS" if suffix == ".opus" else None)) as out:
                copy_tags(metadata or {}, out)
                for block in blocks:
                    out.write((np.clip(block, -1.0, 1.0) if clip else block).T)  # (C, L) -> (L, C)
                    written += block.shape[1]
        except sf.LibsndfileError as e:
            if e.code == 2 and shutil.disk_usage(Path(tmp).parent).free < _FULL_DISK:  # libsndfile: "System error."
                full = OSError(f"{path}: no space left on the device (libsndfile: {e}); nothing was written")
                full.errno = errno.ENOSPC
                raise full from None
            raise

    atomic_write(path, write)
    return written


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
