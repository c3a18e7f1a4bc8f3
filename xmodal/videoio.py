"""Reading and writing video clips frame by frame: a folder of frames, one ``.npy`` array, a multi-page TIFF, or a
video file.

A clip is ``(T, C, H, W) float32`` with the dtype-aware scaling of :mod:`xmodal.imageio` (uint8 / 255,
uint16 / 65535, floats as stored). Four containers:

- a **folder of frames**: every image file in it (PNG, JPEG, BMP, WebP, TIFF, ``.npy``; hidden files skipped), in
  natural name order (``frame2.png`` before ``frame10.png``); all frames must have the same size and channel count;
- a **``.npy`` file** ``(T, H, W)`` (gray) or ``(T, H, W, C)`` with ``C <= 4`` (channels last), memory-mapped so a
  long clip is never loaded whole;
- a **multi-page TIFF** (``.tif``/``.tiff``; a microscope's time-lapse or z-stack, an ImageJ stack): one frame per
  page, ``(T, H, W)`` or ``(T, H, W, S)`` with ``S <= 4`` samples (RGB), or ``(T, C, H, W)`` with a channel axis
  (fluorophores) or a depth stack per time point (``TZYX``, ``TZCYX``: its planes are the frames' channels);
  memory-mapped when uncompressed, else read
  a page at a time. Written back as an ImageJ-compatible stack (``TYX``; ``TYXS`` for 8-bit RGB; uint8, uint16 or
  float32; other dtypes and colour layouts as tifffile's shaped TIFF) at the source's dtype, memory-mapped;
- a **video file** (``.mp4``, ``.mov``, ``.mkv``, ``.avi``, ``.webm``) through PyAV (``pip install "xmodal[video]"``),
  decoded as 8-bit RGB (gray for gray streams; 16-bit, ``uint16``, for streams of more than 8 bits: 10-bit camera
  and HDR video, 16-bit FFV1) and read sequentially. Written back in the same container at the source's frame rate:
  H.264 at CRF 12 for ``.mp4``/``.mov`` (4:2:0 when the size is even, else 4:4:4; 10-bit for a 16-bit or float clip),
  lossless FFV1 for ``.mkv``/``.avi`` (16-bit for a 16-bit or float clip), lossless VP9 for ``.webm`` (8-bit only, a
  warning for a float clip). A float clip's :attr:`ClipInfo.value_range` (``(0, 1)``, or its own range when its
  values are in other units) is mapped to the codes (0..65535 at 16 bits). Only the first video stream is read. A
  variable frame rate (phones record it) is kept: frames are written at their source times.
  Colour tags are kept (:attr:`ClipInfo.color`): frames are decoded to RGB with the source's matrix and range and
  coded back with them, under the same tags; so is HDR10's mastering display and content light level in ``.mp4``/
  ``.mov`` (:attr:`ClipInfo.mastering`). A display rotation (phones) is applied on reading: frames come upright.

**Soundtracks and tags.** Writing a video file from a video file (:class:`ClipWriter`'s ``source``) keeps its
container tags (title, creation time, location...) and its audio streams: copied packet for packet when the
destination container can hold their codec, else re-encoded (AAC for ``.mp4``/``.mov``, FLAC for ``.mkv``, 16-bit
PCM for ``.avi``, Opus for ``.webm``), or decoded, processed (``audio``: the speech denoiser, a chunk at a time, or
a function of the whole stream) and encoded the same way, block by block as the muxer takes them. They keep their
timing against the video, so the picture and the sound stay in sync (an AVI file, whose streams all start
together, gets a soundtrack that starts before or after the first frame as PCM, cut or led by silence to start with
it). Subtitle streams are copied the same way when the destination container takes their codec (else left out with a
warning); data streams (timecodes, telemetry) are not copied.

:class:`ClipReader` reads one frame at a time (what the video denoiser keeps in memory is its temporal window), and
:class:`ClipWriter` writes one frame at a time into a temporary folder or file beside the destination that is renamed
into place only when every frame is written: nothing is half-written.
"""

from __future__ import annotations

import errno
import heapq
import io
import math
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Union

import numpy as np
import torch

from xmodal._fs import usual_permissions, write_error
from xmodal.io import AV_CONTAINERS, AvAudioSource, av_audio_stream, container_tags, encode_av_audio, import_av
from xmodal.imageio import (IMAGE_EXTENSIONS, ImageInfo, ImageReadError, TiffPageErrors, alpha_channels, natural_key,
                             read_image, write_image)

__all__ = ["VIDEO_EXTENSIONS", "AudioProcess", "ClipInfo", "ClipReader", "ClipWriter", "StreamedAudio", "clip_frames",
           "is_clip", "read_clip", "remux_with_source", "write_clip"]

PathLike = Union[str, os.PathLike]
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm")
_CACHE = 16  # decoded frames a video-file reader keeps (the denoiser's window reads back at most 2k frames)
_INT_MAX = {"uint8": 255.0, "uint16": 65535.0}
_DTYPES = ("uint8", "uint16", "float16", "float32", "float64")
TIFF_CLIP_EXTENSIONS = (".tif", ".tiff")
_TIME_BASE = Fraction(1, 90000)  # of frames written at their source times (variable frame rate)
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}  # AVCOL_SPC -> swscale's matrix (BT.709, FCC, BT.601...)
AudioProcess = Callable[[np.ndarray, int], np.ndarray]  # (wave (C, T) float32 in [-1, 1], rate) -> same shape
_NO_START_TIMES = ("avi",)  # muxers whose streams all start at 0: an offset between them must be in the samples
_SILENCE = 1 << 16  # samples per block of the silence put before a soundtrack that starts after the first frame


@dataclass(frozen=True)
class StreamedAudio:
    """A soundtrack process that runs in bounded memory (a speech :class:`~xmodal.Denoiser`'s, which
    ``VideoDenoiser.denoise_file(..., audio=speech)`` makes): ``run(source)`` takes an
    :class:`~xmodal.io.AvAudioSource` (which it may read more than once) and returns an iterator of the processed
    samples, ``(C, L)`` float32 blocks in order, as many samples as the source has."""

    run: Callable[[AvAudioSource], Iterator[np.ndarray]]


@dataclass(frozen=True)
class ClipInfo:
    """What :class:`ClipReader` found; :class:`ClipWriter` writes the same kind of clip from it.

    Attributes:
        kind: ``"frames"`` (a folder of frame files), ``"npy"``, ``"tiff"`` (a multi-page TIFF) or ``"video"`` (a
            video file).
        shape: ``(T, C, H, W)`` of the clip as read.
        dtype: numpy name of the stored sample type.
        names: frame file names (``"frames"``), in clip order; empty for ``"npy"``.
        frame_info: the :class:`~xmodal.imageio.ImageInfo` of the first frame file (``"frames"``), else ``None``.
        layout: ``"THW"`` or ``"THWC"`` for ``"npy"`` and ``"tiff"`` (and ``"TCHW"`` for a TIFF with a channel
            axis, a multi-channel time-lapse, or with the planes of a ``TZYX`` stack); ``""`` otherwise.
        fps: frames per second of a video file (the average one at a variable rate), or of a time-lapse TIFF with a
            frame interval (ImageJ) or time increment (OME); ``None`` for the others.
        codec: codec of a video file's stream.
        times: presentation time of each frame in seconds from the first, for a video file at a variable frame
            rate; ``()`` at a constant rate (frame ``t`` at ``t / fps``) and for the other containers.
        audio: codecs of a video file's audio streams (``()`` when it has none).
        color: ``(primaries, transfer, matrix, range)`` tags of a video file's stream (FFmpeg's ``AVCOL_*``
            numbers, e.g. ``(1, 1, 1, 1)`` for BT.709 limited range, ``(9, 16, 9, 1)`` for HDR10), ``()`` when it
            has none. A video file written from it carries the same tags and is converted to YUV with the same
            matrix and range, so it shows the source's colours (HDR stays HDR).
        rotation: the display rotation of a video file (counter-clockwise degrees, a multiple of 90: phones store
            portrait video as landscape frames with a rotation to show them with). Frames are read as they are
            shown, already rotated, so ``shape`` is the shown size and outputs need no rotation.
        mastering: the HDR10 mastering display of a video file (SMPTE ST 2086, from its first frame's side data):
            ``(Rx, Ry, Gx, Gy, Bx, By, Wx, Wy, min, max)``, the CIE 1931 xy of its red, green and blue primaries and
            white point and its luminance range in cd/m2; ``()`` when it has none.
        light_level: ``(MaxCLL, MaxFALL)`` of a video file in cd/m2 (the brightest pixel and the brightest frame
            average: CTA-861.3 content light level); ``()`` when it has none. A ``.mp4``/``.mov`` written from it
            carries both (in the H.264 stream, where players read them); other containers cannot (a warning says so).
        value_range: ``(lo, hi)``, the values of a float clip (``.npy``, float frames) that a video file written from
            it stores as its lowest and highest codes (0 and 65535 at 16 bits): ``(0, 1)`` when the clip looks like
            [0, 1] data, else the 0.1 and 99.9 percentiles of up to 8 evenly spaced frames; the range the denoiser
            maps such a clip to [0, 1] with when it is given none (``value_range=None``, auto-ranged). ``()`` for
            integer clips, which are [0, 1] by their dtype. Read from the frames, so not compared between infos.
        tiff: what a multi-page TIFF clip (``"tiff"``) written back as one keeps: ``(key, value)`` pairs of its frame
            axis (``"axis"``: ``"T"`` or ``"Z"``), the axes of a ``TZYX`` / ``TZCYX`` clip's planes (``"planes"``:
            ``"Z"`` / ``"ZC"``, with ``"plane_shape"`` ``(Z, C)`` for the latter), pixel size (``"resolution"``,
            ``"resolutionunit"``), ImageJ calibration (``"spacing"``, ``"finterval"``, ``"unit"``) and display
            (``"imagej_display"``), whether it is an OME-TIFF (``"ome"``) and its OME physical sizes and time
            increment (``"ome_pixels"``) and channels (``"ome_channels"``).
    """

    kind: str
    shape: tuple[int, int, int, int]
    dtype: str
    names: tuple[str, ...] = ()
    frame_info: ImageInfo | None = None
    layout: str = ""
    fps: float | None = None
    codec: str = ""
    times: tuple[float, ...] = ()
    audio: tuple[str, ...] = ()
    color: tuple[int, int, int, int] = ()
    rotation: int = 0
    mastering: tuple[float, ...] = ()
    light_level: tuple[int, ...] = ()
    value_range: tuple[float, ...] = field(default=(), compare=False)
    tiff: tuple[tuple[str, Any], ...] = ()


def _import_av() -> Any:
    return import_av("reading and writing video files", "; clips can also be folders of frames or .npy files")


def _hdr_metadata(side_data: Iterable[Any]) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """:attr:`ClipInfo.mastering` and :attr:`ClipInfo.light_level` from a decoded frame's side data: FFmpeg's
    ``AVMasteringDisplayMetadata`` (rationals: primaries R, G, B and white point as (x, y), then min and max luminance;
    then two flags, kept only when both are set) and ``AVContentLightMetadata`` (two unsigned ints)."""
    mastering: tuple[float, ...] = ()
    light: tuple[int, ...] = ()
    for item in side_data:
        name = getattr(item.type, "name", "")
        if name == "MASTERING_DISPLAY_METADATA" and item.buffer_size >= 88:
            v = np.frombuffer(bytes(item)[:88], dtype=np.int32)
            if v[20] and v[21] and (v[1:20:2] > 0).all():  # has primaries, has luminance
                xy = v[:16:2] / v[1:16:2]  # Rx Ry Gx Gy Bx By Wx Wy
                mastering = (*(round(float(c), 5) for c in xy), round(float(v[16] / v[17]), 4),
                             round(float(v[18] / v[19]), 4))
        elif name == "CONTENT_LIGHT_LEVEL" and item.buffer_size >= 8:
            light = tuple(int(n) for n in np.frombuffer(bytes(item)[:8], dtype=np.uint32))
    return mastering, light


def _x264_hdr(mastering: tuple[float, ...], light: tuple[int, ...]) -> str:
    """libx264's ``x264-params`` for :attr:`ClipInfo.mastering` and :attr:`ClipInfo.light_level` (its SEI
    messages): ``mastering-display=G(x,y)B(x,y)R(x,y)WP(x,y)L(max,min)`` in units of 0.00002 and 0.0001 cd/m2, and
    ``cll=MaxCLL,MaxFALL``."""
    params = []
    if mastering:
        rx, ry, gx, gy, bx, by, wx, wy, lo, hi = mastering
        xy = lambda x, y: f"({round(x * 50000)},{round(y * 50000)})"  # noqa: E731
        params.append(f"mastering-display=G{xy(gx, gy)}B{xy(bx, by)}R{xy(rx, ry)}WP{xy(wx, wy)}"
                      f"L({round(hi * 10000)},{round(lo * 10000)})")
    if light:
        params.append(f"cll={light[0]},{light[1]}")
    return ":".join(params)


def _stream_channels(stream: Any) -> int:
    """Channels a video stream is read with: 1 for a gray pixel format, else 3 (8-bit RGB)."""
    return 1 if str(stream.codec_context.pix_fmt or "").startswith("gray") else 3


def _frame_times(stamps: list[int | None], time_base: Fraction | None) -> tuple[float, ...]:
    """Presentation times (seconds from the first frame) of a stream's frames from their packets' timestamps, when
    they are at a variable rate; ``()`` when the rate is constant (steps within 1 % of a frame or one tick of the
    time base) or a timestamp is missing."""
    if len(stamps) < 3 or time_base is None or any(s is None for s in stamps) or len(set(stamps)) < len(stamps):
        return ()
    ordered = sorted(stamps)  # packets come in decoding order; frames are shown in timestamp order
    steps = np.diff(ordered)
    if steps.max() - steps.min() <= max(0.01 * steps.mean(), 1):  # 1 tick: 29.97 fps in milliseconds is 33/34
        return ()
    return tuple(float((s - ordered[0]) * time_base) for s in ordered)


def _stream_deep(stream: Any) -> bool:
    """Whether a video stream holds more than 8 bits per sample (10-bit camera or HDR video, 16-bit FFV1): read as
    16-bit then, not rounded to 8 bits."""
    fmt = stream.codec_context.format
    return fmt is not None and max((c.bits for c in fmt.components), default=8) > 8


def _stream_color(stream: Any) -> tuple[int, int, int, int]:
    """``(primaries, transfer, matrix, range)`` tags of a video stream, ``()`` when none is set."""
    ctx = stream.codec_context
    tags = tuple(int(getattr(ctx, name) or 0) for name in ("color_primaries", "color_trc", "colorspace",
                                                           "color_range"))
    return tags if tags[:3] != (2, 2, 2) or tags[3] else ()  # 2: unspecified, range 0: unspecified


def video_channels(path: PathLike) -> int:
    """Channels :class:`ClipReader` reads a video file with (1 gray, 3 RGB), from the header of its first video
    stream only (no packet is read); 0 when it holds none.

    Raises:
        ImportError: PyAV is not installed.
        Exception: whatever PyAV raises for a file it cannot open (``ClipReader`` names the file and the reason).
    """
    with _import_av().open(str(path)) as container:
        streams = container.streams.video
        return _stream_channels(streams[0]) if streams else 0


def clip_frames(folder: PathLike) -> list[Path]:
    """The frame files of a clip folder, in natural name order.

    Raises:
        ImageReadError: ``folder`` is not a folder or holds no frame.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageReadError(f"{folder}: not a folder of frames")
    frames = sorted((f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                     and not f.name.startswith(".")), key=lambda f: natural_key(f.name))
    if not frames:
        raise ImageReadError(f"{folder}: holds no frame ({', '.join(sorted(IMAGE_EXTENSIONS))} files)")
    return frames


def is_clip(path: PathLike) -> bool:
    """Whether ``path`` can be read as a clip: a folder, a video file (by extension), a ``.npy`` file with 3 or 4
    dims, or a TIFF whose first series is a clip (headers only)."""
    path = Path(path)
    if path.is_dir() or (path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS):
        return True
    if path.suffix.lower() not in (".npy", *TIFF_CLIP_EXTENSIONS) or not path.is_file():
        return False
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False).ndim in (3, 4)
        import tifffile

        with TiffPageErrors() as errors, tifffile.TiffFile(path) as tif:
            return not errors.broken_chain(len(tif.pages)) and _tiff_layout(tif)[3].name in _DTYPES
    except Exception:
        return False


def _tiff_layout(tif: Any) -> tuple[str, tuple[int, ...], bool, np.dtype]:
    """``(axes, shape, pagewise, dtype)`` of the clip in an open TIFF: its one series (``pagewise`` False), or the
    pages of a file written a page at a time (one series per page, all alike: ``pagewise``, axes ``I...``);
    ``ValueError`` saying why it is not a clip (one frame per page)."""
    series = tif.series
    if not series:
        raise ValueError("a TIFF that holds no image (corrupt or truncated)")
    first = series[0]
    if len(series) > 1:
        if len(tif.pages) == len(series) and first.axes in ("YX", "YXS") and all(
                s.shape == first.shape and s.dtype == first.dtype and s.axes == first.axes for s in series):
            axes, shape, pagewise = "I" + first.axes, (len(series), *first.shape), True
        else:
            listed = ", ".join(f"{s.axes} {tuple(s.shape)}" for s in series[:3]) + (", ..." if len(series) > 3 else "")
            raise ValueError(f"a TIFF clip is one series of frames; this one holds {len(series)} series ({listed}: "
                             "positions or acquisitions): split them into one file each")
    else:
        axes, shape, pagewise = first.axes, tuple(first.shape), False
    one = len(shape) == 3 and axes[-1] == "S" or len(shape) <= 2
    if axes[0] not in "CS" and ((len(shape) == 3 and not one) or (len(shape) == 4 and (
            (axes[-1] == "S" and shape[-1] <= 4) or ((axes[1] == "C" or axes[:2] == "TZ") and axes[-1] != "S")))
                                or axes == "TZCYX"):
        return axes, shape, pagewise, first.dtype
    what = ("one image, not a clip" if one else
            f"one image of {shape[0]} planar samples (colours), not a clip" if axes[0] == "S" else
            "its pages are channels, not frames" if axes[0] == "C" else
            "split it into one clip per position, depth or time point")
    raise ValueError(f"a TIFF clip holds one frame per page, (T, H, W) or (T, H, W, S) with at most 4 samples, "
                     f"(T, C, H, W) with a channel axis, or (T, Z[, C], H, W), a depth stack per time point; this "
                     f"one's series is {axes} {tuple(shape)}: {what}")


class _TiffPages:
    """The pages of a compressed (or written page by page) multi-page TIFF, read one at a time: ``[t]`` -> ``(H,
    W[, S])``."""

    def __init__(self, tif: Any, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.tif, self.path, self.shape, self.dtype = tif, path, shape, dtype
        self.ndim, self.size = len(shape), math.prod(shape)

    def __getitem__(self, t: int) -> np.ndarray:
        try:
            return self.tif.pages[t].asarray()
        except Exception as e:
            raise ImageReadError(f"{self.path}: frame {t} (page {t + 1} of {self.shape[0]}) cannot be read ({e})") \
                from None


_OME_CALIBRATION = ("PhysicalSizeX", "PhysicalSizeXUnit", "PhysicalSizeY", "PhysicalSizeYUnit", "PhysicalSizeZ",
                    "PhysicalSizeZUnit", "TimeIncrement", "TimeIncrementUnit")
_OME_CHANNEL = {"Name": str, "Fluor": str, "Color": int, "EmissionWavelength": float, "EmissionWavelengthUnit": str,
                "ExcitationWavelength": float, "ExcitationWavelengthUnit": str}  # what a channel keeps, as typed


def _tiff_metadata(tif: Any, axes: str) -> tuple[tuple[str, Any], ...]:
    """What a TIFF clip written back keeps of its source (:attr:`ClipInfo.tiff`): the frame axis (``T`` time or ``Z``
    depth), the axes of a ``TZYX`` or ``TZCYX`` clip's planes (``planes``: ``Z`` or ``ZC``, a channel axis
    otherwise; ``plane_shape``: ``(Z, C)`` of the latter), the pixel size (resolution tags), ImageJ's slice
    spacing, frame interval and unit and its display (``imagej_display``: mode, display range, channel ranges and
    LUTs, slice labels), and OME-ness with OME's physical sizes, time increment and channels (``ome_channels``:
    names, fluorophores, colours, wavelengths)."""
    meta: dict[str, Any] = {"axis": axes[0] if axes[0] in "TZ" else "T", "ome": bool(tif.is_ome)}
    if axes in ("TZYX", "TZCYX"):  # a depth stack per time point: its planes are the frames' channels
        meta["planes"] = axes[1:-2]
        if axes == "TZCYX":
            meta["plane_shape"] = tuple(int(n) for n in tif.series[0].shape[1:3])
    page = tif.pages[0]
    if "XResolution" in page.tags and "YResolution" in page.tags:
        meta["resolution"] = tuple(float(v) for v in page.resolution)
        meta["resolutionunit"] = int(page.resolutionunit)
    imagej = tif.imagej_metadata or {}
    meta.update({key: imagej[key] for key in ("spacing", "finterval", "unit") if key in imagej})
    display = {key: imagej[key] if key in ("mode", "min", "max") else tuple(imagej[key])
               for key in ("mode", "min", "max", "Ranges", "Labels") if key in imagej}
    if "LUTs" in imagej:  # as nested tuples: a ClipInfo compares and hashes
        display["LUTs"] = tuple(tuple(map(tuple, np.asarray(lut).tolist())) for lut in imagej["LUTs"])
    if display:
        meta["imagej_display"] = tuple(sorted(display.items()))
    if tif.is_ome:  # OME's physical sizes and time increment, from its first Pixels element
        import xml.etree.ElementTree as ElementTree

        try:
            pixels = next(e for e in ElementTree.fromstring(tif.ome_metadata).iter() if e.tag.endswith("Pixels"))
            meta["ome_pixels"] = tuple(sorted((key, value) for key, value in pixels.attrib.items()
                                              if key in _OME_CALIBRATION))
            channels = [e.attrib for e in pixels if e.tag.endswith("Channel")]
            kept = tuple((key, tuple(c[key] for c in channels)) for key in _OME_CHANNEL
                         if channels and all(key in c for c in channels))
            if kept:
                meta["ome_channels"] = kept
        except (ElementTree.ParseError, StopIteration, TypeError):
            pass  # no readable OME-XML: the pixels are read all the same
    return tuple(sorted(meta.items()))


_IMAGEJ_UNITS = {"micron": "µm", "um": "µm", "µm": "µm", "\\u00B5m": "µm", "nm": "nm", "mm": "mm", "cm": "cm",
                 "m": "m"}


def _ome_from_imagej(meta: dict[str, Any]) -> dict[str, Any]:
    """OME ``Pixels`` attributes for an ImageJ (or resolution-tagged) source's calibration: pixel size from its
    resolution (pixels per unit), slice spacing (``Z`` clips) and frame interval (``T`` clips, seconds)."""
    unit = _IMAGEJ_UNITS.get(meta.get("unit", ""))  # lengths only (ImageJ's "pixel": no physical size)
    pixels: dict[str, Any] = {}
    resolution = meta.get("resolution")
    if unit and resolution and all(r > 0 for r in resolution):
        pixels.update(PhysicalSizeX=1.0 / resolution[0], PhysicalSizeXUnit=unit, PhysicalSizeY=1.0 / resolution[1],
                      PhysicalSizeYUnit=unit)
    if unit and "Z" in (meta.get("axis"), meta.get("planes")) and meta.get("spacing"):
        pixels.update(PhysicalSizeZ=meta["spacing"], PhysicalSizeZUnit=unit)
    if meta.get("axis") == "T" and meta.get("finterval"):
        pixels.update(TimeIncrement=meta["finterval"], TimeIncrementUnit="s")
    return pixels


def _tiff_memmap(path: Path, shape: tuple[int, ...], dtype: np.dtype, meta: tuple[tuple[str, Any], ...] = (),
                 ome: bool = False, channel_axis: bool = False) -> np.memmap:
    """A new multi-page TIFF at ``path`` for a ``(T, H, W)`` / ``(T, H, W, S)`` clip (``(T, C, H, W)`` with
    ``channel_axis``: the source's planes, ``Z`` or ``Z x C`` stored as ``TZCYX``, else ``C``), memory-mapped for
    writing:
    OME-TIFF with ``ome`` (a ``.ome.tif`` destination) or for an OME source; else an ImageJ stack where ImageJ takes
    it (uint8, uint16 or float32 gray; 8-bit RGB; more than one frame, as ImageJ stores one frame as a single image),
    else tifffile's shaped TIFF (BigTIFF above 2 GiB); with the source's frame axis, pixel size, ImageJ
    calibration and display and OME channels (``meta``: :attr:`ClipInfo.tiff`; per-channel display and channels
    only where the clip has the source's channel count)."""
    import tifffile

    meta_ = dict(meta)
    samples = shape[3] if len(shape) == 4 and not channel_axis else 1
    planes = meta_.get("planes", "C") if channel_axis else ""
    if planes == "ZC" and math.prod(meta_.get("plane_shape", ())) != shape[1]:
        planes = "C"  # not the source's depth x channels
    axes = meta_.get("axis", "T") + (planes + "YX" if channel_axis else "YX" if len(shape) == 3 else "YXS")
    stored = (shape[0], *meta_["plane_shape"], *shape[2:]) if planes == "ZC" else shape
    ome = ome or bool(meta_.get("ome"))
    imagej = not ome and shape[0] > 1 and dtype.name in ("uint8", "uint16", "float32") and (
        samples == 1 or (samples == 3 and dtype.name == "uint8"))
    big = not imagej and math.prod(shape) * dtype.itemsize > 2 ** 31
    metadata: dict[str, Any] = {"axes": axes}
    channels = meta_["plane_shape"][1] if planes == "ZC" else shape[1] if planes == "C" else 1
    if ome:  # numbers as numbers, units as they came; from an ImageJ source, its calibration in OME's terms
        pixels = dict(meta_.get("ome_pixels", ())) or _ome_from_imagej(meta_)
        metadata.update({key: value if key.endswith("Unit") else float(value) for key, value in pixels.items()})
        named = dict(meta_.get("ome_channels", ()))
        if named and all(len(values) == channels for values in named.values()):  # the source's channels
            metadata["Channel"] = {key: [_OME_CHANNEL[key](v) for v in values] for key, values in named.items()}
    if imagej:
        metadata.update({key: meta_[key] for key in ("spacing", "finterval", "unit") if key in meta_})
        display = dict(meta_.get("imagej_display", ()))  # a channel's range and LUT only where it is the source's
        metadata.update({key: display[key] for key in ("mode", "min", "max") if key in display})
        if len(display.get("Ranges", ())) == 2 * channels:
            metadata["Ranges"] = display["Ranges"]
        if len(display.get("LUTs", ())) == channels:
            metadata["LUTs"] = [np.asarray(lut, np.uint8) for lut in display["LUTs"]]
        if len(display.get("Labels", ())) == math.prod(stored[:-2] if samples == 1 else stored[:1]):
            metadata["Labels"] = list(display["Labels"])
    extra: dict[str, Any] = {}
    if "resolution" in meta_:  # pixels per unit; ImageJ keeps its unit in the metadata
        extra["resolution"] = meta_["resolution"]
        if not imagej:
            extra["resolutionunit"] = meta_["resolutionunit"]
    return tifffile.memmap(path, shape=stored, dtype=dtype, imagej=imagej, ome=ome, bigtiff=big,
                           photometric="rgb" if samples in (3, 4) else "minisblack", metadata=metadata,
                           **extra).reshape(shape)  # (T, Z, C, H, W) stored: a view of the frames' planes


def _tiff_fps(meta: tuple[tuple[str, Any], ...]) -> float | None:
    """Frames per second of a time-lapse TIFF clip (:attr:`ClipInfo.tiff` ``meta``): from ImageJ's frame interval
    or OME's time increment (in seconds, or ms / min / h), ``None`` for a z-stack or without either."""
    meta_ = dict(meta)
    if meta_.get("axis", "T") != "T":
        return None
    ome = dict(meta_.get("ome_pixels", ()))
    scale = {"s": 1.0, "ms": 1e-3, "min": 60.0, "h": 3600.0}.get(ome.get("TimeIncrementUnit", "s"))
    seconds = meta_.get("finterval") or (float(ome["TimeIncrement"]) * scale
                                          if "TimeIncrement" in ome and scale else None)
    try:
        return 1.0 / float(seconds) if seconds and float(seconds) > 0 else None
    except (TypeError, ValueError):
        return None


def _reserve(path: Path) -> None:
    """Allocate the blocks of a new memory-mapped file (created sparse) now, so that a full disk raises ``OSError``
    (ENOSPC) before any frame is written instead of killing the process with SIGBUS when a mapped page is first
    written. Nothing is done where the platform has no ``posix_fallocate`` or the file system cannot allocate."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


def _open_tiff_clip(path: Path) -> tuple[Any, Any, tuple[tuple[str, Any], ...], str]:
    """``(frames, open TiffFile or None, metadata, layout)`` of a multi-page TIFF clip: a read-only memory map when
    its data is uncompressed and contiguous, else its pages one at a time (one page per frame), else the whole series;
    ``layout`` ``"TCHW"`` for a channel axis, else ``""`` (from the frames' shape)."""
    import tifffile

    with TiffPageErrors() as errors:
        try:
            tif = tifffile.TiffFile(path)
            broken = errors.broken_chain(len(tif.pages))
        except Exception as e:
            raise ImageReadError(f"{path}: not readable as TIFF ({e})") from None
    try:
        if broken:
            raise ImageReadError(f"{path}: {broken}")
        try:
            axes, shape, pagewise, dtype = _tiff_layout(tif)
        except ValueError as e:
            raise ImageReadError(f"{path}: {e}") from None
        meta = _tiff_metadata(tif, axes)
        layout = "TCHW" if len(shape) >= 4 and axes[1] in "CZ" else ""
        planes = (shape[0], shape[1] * shape[2], *shape[3:]) if len(shape) == 5 else shape  # TZCYX: Z x C planes
        if not pagewise:
            try:
                frames = tifffile.memmap(path, mode="r", series=0)
                tif.close()
                return frames.reshape(planes), None, meta, layout
            except ValueError:  # compressed or not contiguous
                pass
        if len(tif.pages) == shape[0]:
            return _TiffPages(tif, path, shape, dtype), tif, meta, layout
        frames = tif.series[0].asarray()
        tif.close()
        return frames.reshape(planes), None, meta, layout
    except ImageReadError:
        tif.close()
        raise
    except Exception as e:
        tif.close()
        raise ImageReadError(f"{path}: not readable as a TIFF clip ({e})") from None


class ClipReader:
    """Frame-by-frame reader of a clip (see the module docstring for the containers).

    Args:
        path: a folder of frames, a ``.npy`` file or a video file.

    Attributes:
        path, info (:class:`ClipInfo`), frames (``T``).

    Raises:
        ImageReadError: missing path, no frame, an unreadable or corrupt frame, an unsupported dtype, a ``.npy``
            that is not ``(T, H, W)``/``(T, H, W, C)``, an empty clip; frames of another size, channel count or dtype
            than the first are reported (with their file) when they are read.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise ImageReadError(f"{self.path}: clip not found (a folder of frames, a .npy file, a multi-page TIFF or "
                                 "a video file)")
        self._tif = None
        if self.path.is_dir():
            self._files = clip_frames(self.path)
            first, info = read_image(self._files[0])
            self.info = ClipInfo("frames", (len(self._files), *first.shape), info.dtype,
                                 tuple(f.name for f in self._files), info)
            self._first = first
            self._array = None
        elif self.path.suffix.lower() in VIDEO_EXTENSIONS:
            self._open_video()
            self._array = None
            self._files = []
        else:
            kind = "tiff" if self.path.suffix.lower() in TIFF_CLIP_EXTENSIONS else "npy"
            if self.path.suffix.lower() != ".npy" and kind != "tiff":
                raise ImageReadError(f"{self.path}: a clip is a folder of frames, a .npy file, a multi-page TIFF or "
                                     f"a video file ({', '.join(VIDEO_EXTENSIONS)}), got {self.path.suffix!r}")
            tiff_layout = ""
            if kind == "tiff":
                arr, self._tif, tiff_meta, tiff_layout = _open_tiff_clip(self.path)
            else:
                try:
                    arr = np.load(self.path, mmap_mode="r", allow_pickle=False)
                except Exception as e:
                    raise ImageReadError(f"{self.path}: not readable as .npy ({e})") from None
            if tiff_layout == "TCHW":  # a channel axis: frames are (C, H, W) as stored
                layout, shape = "TCHW", tuple(arr.shape)
            elif arr.ndim == 3:
                layout, shape = "THW", (arr.shape[0], 1, *arr.shape[1:])
            elif arr.ndim == 4 and arr.shape[-1] <= 4:
                layout, shape = "THWC", (arr.shape[0], arr.shape[3], *arr.shape[1:3])
            else:
                raise ImageReadError(f"{self.path}: a clip array is (T, H, W) or (T, H, W, C) with C <= 4, got "
                                     f"shape {arr.shape}")
            if arr.size == 0:
                raise ImageReadError(f"{self.path}: empty clip of shape {arr.shape}")
            if arr.dtype.name not in _DTYPES:
                raise ImageReadError(f"{self.path}: unsupported dtype {arr.dtype.name} (expected "
                                     f"{', '.join(_DTYPES)})")
            self.info = ClipInfo(kind, tuple(int(n) for n in shape), arr.dtype.name, layout=layout,
                                 tiff=tiff_meta if kind == "tiff" else (), fps=_tiff_fps(tiff_meta) if kind == "tiff"
                                 else None)
            self._array = arr
            self._files = []
        self.frames = self.info.shape[0]
        if self.info.dtype not in _INT_MAX:  # float frames: in their own units
            self.info = replace(self.info, value_range=self._value_range())

    def _value_range(self) -> tuple[float, float]:
        """:attr:`ClipInfo.value_range` of a float clip: what the denoiser maps to [0, 1] when given no range
        (:func:`xmodal.denoise.file_value_range` on up to 8 evenly spaced frames, alpha channels left out)."""
        from xmodal.denoise import _resolve_range, _sample_frames, file_value_range  # (denoise imports this module)

        mode = self.info.frame_info.mode if self.info.frame_info is not None else None
        colours = self.info.shape[1] - alpha_channels(mode)
        sample = torch.from_numpy(np.stack([self[int(t)][:colours] for t in _sample_frames(self.frames)]))
        lo, span = _resolve_range(sample, file_value_range(sample, self.info.dtype))
        return lo, lo + span

    # -------------------------------------------------------------------------------------------- video files

    def _open_video(self) -> None:
        av = _import_av()
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise ImageReadError(f"{self.path}: holds no video stream")
                stream = container.streams.video[0]
                ctx = stream.codec_context
                H, W = int(ctx.height), int(ctx.width)
                channels = _stream_channels(stream)
                deep = _stream_deep(stream)
                rate = stream.average_rate or stream.guessed_rate
                stamps = [packet.pts for packet in container.demux(stream) if packet.size]  # exact, no decoding
                frames = len(stamps)
                declared = float(stream.duration * stream.time_base) if stream.duration else \
                    (container.duration / 1e6 if container.duration and len(container.streams) == 1 else 0.0)
                # seconds, from the header: the stream's own, or the file's when it holds nothing else (a sound
                # track can outlast the picture)
                known = sorted(p for p in stamps if p is not None)
                if declared and len(known) > 1:  # a cut copy: its header still says the whole length
                    step = float(np.median(np.diff(known)) * stream.time_base)  # one frame's time
                    covered = float((known[-1] - known[0]) * stream.time_base) + step
                    if declared - covered > max(0.1 * declared, 2 * step):
                        warnings.warn(f"{self.path}: its header says {declared:.2f} s but the {frames} frames that "
                                      f"can be read cover {covered:.2f} s: the file looks truncated or damaged; only "
                                      "those are used", stacklevel=3)
                codec = ctx.name
                audio = tuple(str(a.codec_context.name) for a in container.streams.audio)
                color = _stream_color(stream)
                times = _frame_times(stamps, stream.time_base)
        except ImageReadError:
            raise
        except Exception as e:  # PyAV raises its own error classes for corrupt or unknown files
            raise ImageReadError(f"{self.path}: not readable as a video ({e})") from None
        if frames == 0 or H == 0 or W == 0:
            raise ImageReadError(f"{self.path}: empty video ({frames} frames of {W} x {H})")
        rotation, mastering, light_level = self._first_frame_metadata()
        self._turns = (rotation // 90) % 4  # np.rot90 turns (counter-clockwise) from stored to shown
        if self._turns % 2:
            H, W = W, H
        self._format = ("gray16le" if deep else "gray") if channels == 1 else ("rgb48le" if deep else "rgb24")
        dtype = "uint16" if deep else "uint8"
        self._scale = np.float32(_INT_MAX[dtype])
        self.info = ClipInfo("video", (frames, channels, H, W), dtype, fps=float(rate) if rate else None,
                             codec=codec, times=times, audio=audio, color=color,
                             rotation=rotation % 360 - (360 if rotation % 360 > 180 else 0),  # (-180, 180]
                             mastering=mastering, light_level=light_level)
        self._decoder = None
        self._decoded: dict[int, np.ndarray] = {}
        self._next = 0

    def _first_frame_metadata(self) -> tuple[int, tuple[float, ...], tuple[int, ...]]:
        """From the side data of a video file's first frame (which is decoded): its counter-clockwise display
        rotation rounded to 90 degrees, and its HDR mastering display and content light level
        (:attr:`ClipInfo.mastering`, :attr:`ClipInfo.light_level`)."""
        av = _import_av()
        try:
            with av.open(str(self.path)) as container:
                first = next(container.decode(container.streams.video[0]), None)
        except Exception as e:
            raise ImageReadError(f"{self.path}: frame 0 could not be decoded ({e})") from None
        rotation = int(round(float(getattr(first, "rotation", 0) or 0) / 90)) * 90
        return (rotation, *_hdr_metadata(first.side_data if first is not None else ()))

    def _video_frame(self, t: int) -> np.ndarray:
        av = _import_av()
        if t in self._decoded:
            return self._decoded[t]
        if t < self._next or self._decoder is None:  # behind the cache: decode again from the start
            if getattr(self, "_container", None) is not None:
                self._container.close()
            self._container = av.open(str(self.path))
            self._decoder = self._container.decode(self._container.streams.video[0])
            self._decoded.clear()
            self._next = 0
        try:
            while self._next <= t:
                frame = next(self._decoder).to_ndarray(format=self._format)  # (H, W) or (H, W, 3) uint8/16
                frame = frame[None] if frame.ndim == 2 else frame.transpose(2, 0, 1)
                if self._turns:  # shown upright
                    frame = np.rot90(frame, self._turns, axes=(1, 2))
                self._decoded[self._next] = frame.astype(np.float32) / self._scale
                self._next += 1
                for old in [i for i in self._decoded if i < self._next - _CACHE]:
                    del self._decoded[old]
        except StopIteration:
            raise ImageReadError(f"{self.path}: the video ended after {self._next} of {self.frames} frames") from None
        except Exception as e:
            raise ImageReadError(f"{self.path}: frame {self._next} could not be decoded ({e})") from None
        if self._decoded[t].shape != tuple(self.info.shape[1:]):
            raise ImageReadError(f"{self.path}: frame {t} has shape {self._decoded[t].shape}, the stream says "
                                 f"{tuple(self.info.shape[1:])}")
        return self._decoded[t]

    def close(self) -> None:
        """Release a video file's decoder or a TIFF's file (also done when the reader is garbage-collected)."""
        if getattr(self, "_tif", None) is not None:
            self._tif.close()
            self._tif = None
        if getattr(self, "_container", None) is not None:
            self._container.close()
            self._container = None
            self._decoder = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __len__(self) -> int:
        return self.frames

    def __getitem__(self, t: int) -> np.ndarray:
        """Frame ``t`` as ``(C, H, W) float32``."""
        if not 0 <= t < self.frames:
            raise IndexError(f"{self.path}: frame {t} of a {self.frames}-frame clip")
        if self.info.kind == "video":
            return self._video_frame(t)
        if self._array is not None:
            raw = np.asarray(self._array[t])  # (H, W) or (H, W, C)
            raw = raw[None] if self.info.layout == "THW" else raw if self.info.layout == "TCHW" else \
                raw.transpose(2, 0, 1)  # -> (C, H, W)
            if raw.dtype.name in _INT_MAX:
                return raw.astype(np.float32) / np.float32(_INT_MAX[raw.dtype.name])
            frame = raw.astype(np.float32)
            if not np.isfinite(frame).all():
                raise ImageReadError(f"{self.path}: frame {t} holds NaN or infinite values")
            return frame
        if t == 0 and self._first is not None:
            return self._first
        f = self._files[t]
        frame, info = read_image(f)
        if frame.shape != tuple(self.info.shape[1:]):
            raise ImageReadError(f"{f}: frame of shape {frame.shape} (C, H, W) in a clip whose first frame "
                                 f"({self._files[0].name}) is {tuple(self.info.shape[1:])}")
        if info.dtype != self.info.dtype:
            raise ImageReadError(f"{f}: {info.dtype} frame in a clip whose first frame ({self._files[0].name}) is "
                                 f"{self.info.dtype}")
        return frame


def read_clip(path: PathLike) -> tuple[np.ndarray, ClipInfo]:
    """The whole clip as ``(T, C, H, W) float32`` and its :class:`ClipInfo` (errors as :class:`ClipReader`)."""
    reader = ClipReader(path)
    try:
        return np.stack([reader[t] for t in range(len(reader))]), reader.info
    finally:
        reader.close()


class ClipWriter:
    """Writes a clip frame by frame, atomically: into a temporary folder or file beside ``path``, renamed into
    place by :meth:`commit` (a context manager commits on success and removes the temporary data on error).

    Args:
        path: the destination: a folder (frames), a ``.npy`` file or a video file (see the module docstring for
            the codecs; 1 or 3 channels; 16-bit when ``info.dtype`` is ``uint16`` or a float type, the frames of a
            float clip mapped from ``info.value_range`` (:attr:`ClipInfo.value_range`; ``(0, 1)`` when empty) to
            the codes; else 8-bit).
        info: the source's :class:`ClipInfo` (container, dtype, frame names, layout), or ``None`` for float32
            frames named ``frame_00000.tif``... (folder) / a ``(T, H, W[, C])`` float32 array (``.npy``).
        shape: ``(T, C, H, W)`` of the clip to write.
        overwrite: replace an existing destination (a folder's frames are replaced one by one, its other files
            kept).
        source: the video file the clip comes from: its container tags and audio streams go into the destination
            video file, the sound in sync with the frames (see the module docstring); ``None``: neither.
        audio: what becomes of ``source``'s audio streams: ``"copy"``, ``"drop"``, a :class:`StreamedAudio` run on
            each (decoded, processed and re-encoded a block at a time), or a function ``(wave (C, T) float32,
            sample_rate) -> wave`` applied to each (decoded whole, processed in memory, re-encoded).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
        ValueError: a ``.npy`` destination for more than 4 channels or with a ``"THW"`` layout and several channels;
            a video file for other than 1 or 3 channels; ``source`` for a destination that is not a video file.
        ImportError: a video file without PyAV.
    """

    def __init__(self, path: PathLike, info: ClipInfo | None, shape: tuple[int, int, int, int],
                 overwrite: bool = False, source: PathLike | None = None,
                 audio: str | AudioProcess | StreamedAudio = "copy") -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path}: exists (pass overwrite=True / --overwrite to replace it)")
        T, C, H, W = shape
        self.shape = shape
        self.info = info
        self.npy = self.path.suffix.lower() == ".npy"
        self.tiff = self.path.suffix.lower() in TIFF_CLIP_EXTENSIONS
        self.video = self.path.suffix.lower() in VIDEO_EXTENSIONS
        if source is not None and not self.video:
            raise ValueError(f"{self.path}: only a video file ({', '.join(VIDEO_EXTENSIONS)}) can take the audio and "
                             f"tags of {source}")
        if not callable(audio) and not isinstance(audio, StreamedAudio) and audio not in ("copy", "drop"):
            raise ValueError(f"`audio` must be 'copy', 'drop', a StreamedAudio or a function (wave, sample_rate) -> "
                             f"wave, got {audio!r}")
        self.source = Path(source) if source is not None else None
        self.audio = audio
        # video files: 16 bits (FFV1) or 10 (H.264) for a 16-bit or float source, except WebM (8-bit VP9 only); a
        # float clip's values are mapped from its value range (what the denoiser maps to [0, 1]) to the codes
        floating = info is not None and info.dtype not in _INT_MAX
        deep = self.video and info is not None and (info.dtype == "uint16" or floating) \
            and self.path.suffix.lower() != ".webm"
        self._range = tuple(info.value_range) if self.video and info is not None and info.value_range else (0.0, 1.0)
        if len(self._range) != 2 or not np.isfinite(self._range).all() or self._range[1] <= self._range[0]:
            raise ValueError(f"{self.path}: `info.value_range` must be (lo, hi) with finite lo < hi, got "
                             f"{info.value_range!r}")
        if self.video and info is not None and (floating or info.dtype == "uint16") and not deep:  # >8-bit, float
            steps = f", {self._range[0]:.6g}..{self._range[1]:.6g} in 255 steps" if floating else \
                " (a 10-bit or HDR source bands in smooth gradients)"
            warnings.warn(f"{self.path}: a {info.dtype} clip is stored at 8 bits in a .webm file (VP9 here is 8-bit "
                          f"only){steps}; write .mkv for 16-bit FFV1", stacklevel=2)
        self.dtype = np.dtype(("uint16" if deep else "uint8") if self.video else
                              info.dtype if info is not None else "float32")
        self._array = None
        self._container = None
        self._muxed: Path | None = None  # the video with its audio, before it is renamed into place
        if self.video:
            if C not in (1, 3):
                raise ValueError(f"{self.path}: a video file holds 1 or 3 channels, got {C}")
            av = _import_av()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.video:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=f".part{self.path.suffix}",
                                       dir=self.path.parent)
            os.close(fd)
            self._tmp = Path(tmp)
            suffix = self.path.suffix.lower()
            fps = info.fps if info is not None and info.fps else 25.0
            self._container = av.open(str(self._tmp), "w", format=AV_CONTAINERS[suffix][0])
            codec = {".mkv": "ffv1", ".avi": "ffv1", ".webm": "libvpx-vp9"}.get(suffix, "libx264")
            stream = self._container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = W, H
            # a variable frame rate is kept (AVI has none: its frames are evenly spaced)
            self._times = info.times if info is not None and len(info.times) == T and suffix != ".avi" else ()
            if self._times:
                stream.codec_context.time_base = _TIME_BASE
            self._color = info.color if info is not None else ()
            if self._color:  # the source's colour tags; YUV codecs also take its matrix (one swscale can code
                ctx = stream.codec_context  # with; an RGB source's is none) and range
                ctx.color_primaries, ctx.color_trc = self._color[:2]
                if codec != "ffv1":
                    if self._color[2] in _SWS_MATRIX:
                        ctx.colorspace = self._color[2]
                    if self._color[3]:
                        ctx.color_range = self._color[3]
            if codec == "ffv1":
                stream.pix_fmt = ("gray16le" if deep else "gray") if C == 1 else ("gbrp16le" if deep else "bgr0")
            elif codec == "libvpx-vp9":
                stream.pix_fmt, stream.options = "yuv444p", {"lossless": "1"}
            else:
                stream.pix_fmt = ("yuv420p" if H % 2 == 0 and W % 2 == 0 else "yuv444p") + ("10le" if deep else "")
                stream.options = {"crf": "12", "preset": "medium"}
            hdr = (info.mastering, info.light_level) if info is not None else ((), ())
            if any(hdr) and codec == "libx264":
                stream.options = {**stream.options, "x264-params": _x264_hdr(*hdr)}
            elif any(hdr):
                warnings.warn(f"{self.path}: the source's HDR mastering display and content light level cannot be "
                              f"stored in a {suffix} file ({codec}) and are left out (write .mp4 or .mov to keep "
                              "them)", stacklevel=2)
            self._stream = stream
            self.written = 0
            return
        if self.npy or self.tiff:
            layout = info.layout if info is not None and info.layout else ("THW" if C == 1 else "THWC")
            ome = self.tiff and (self.path.name.lower().endswith((".ome.tif", ".ome.tiff")) or bool(
                dict(info.tiff if info is not None else ()).get("ome")))
            if self.tiff and (C > 4 or (ome and layout == "THWC" and C not in (3, 4))) or (
                    self.npy and layout == "TCHW"):  # TIFF: a channel axis (OME: unless RGB); .npy: channels last
                layout = "TCHW" if self.tiff else "THWC" if C > 1 else "THW"
            if (layout == "THW" and C != 1) or (C > 4 and layout != "TCHW"):
                raise ValueError(f"{self.path}: a .npy clip holds 1 channel (T, H, W) or up to 4 (T, H, W, C), got {C}")
            self.layout = layout
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=f".part{self.path.suffix}",
                                       dir=self.path.parent)
            os.close(fd)
            self._tmp = Path(tmp)
            out_shape = (T, H, W) if layout == "THW" else (T, C, H, W) if layout == "TCHW" else (T, H, W, C)
            try:
                if self.npy:
                    self._array = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=self.dtype, shape=out_shape)
                else:
                    self._array = _tiff_memmap(self._tmp, out_shape, self.dtype, info.tiff if info is not None else (),
                                               ome, channel_axis=layout == "TCHW")
                _reserve(self._tmp)  # the disk space, now: a full disk is an OSError here, not a SIGBUS mid-clip
            except BaseException as e:
                self._array = None
                self._tmp.unlink(missing_ok=True)  # nothing is left behind
                if isinstance(e, OSError):
                    raise write_error(self.path, e, self._tmp) from None
                if isinstance(e, Exception):  # tifffile's refusals (an OME-TIFF of float16...)
                    raise ValueError(f"{self.path}: a {self.dtype.name} clip of {C} channel(s) cannot be written as "
                                     f"{'an OME-TIFF' if ome else 'a TIFF'} ({e})") from None
                raise
        else:
            self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent))
            self._array = None
        self.written = 0

    def _name(self, t: int) -> str:
        if self.info is not None and self.info.kind == "frames" and len(self.info.names) == self.shape[0]:
            return self.info.names[t]
        ext = ".png" if self.dtype.name in _INT_MAX and self.shape[1] in (1, 3, 4) \
            and (self.dtype.name == "uint8" or self.shape[1] == 1) else ".tif"
        return f"frame_{t:05d}{ext}"

    def write(self, t: int, frame: np.ndarray | torch.Tensor) -> None:
        """Write frame ``t`` (``(C, H, W)`` float, [0, 1] for integer dtypes)."""
        if isinstance(frame, torch.Tensor):
            frame = frame.detach().cpu().float().numpy()
        if tuple(frame.shape) != tuple(self.shape[1:]):
            raise ValueError(f"{self.path}: frame {t} has shape {tuple(frame.shape)}, expected {self.shape[1:]}")
        if self._container is not None:
            if t != self.written:
                raise ValueError(f"{self.path}: a video file is written in order; frame {t} came after "
                                 f"{self.written} frames")
            av = _import_av()
            top = _INT_MAX[self.dtype.name]
            lo, hi = self._range
            data = np.clip(np.rint((frame.astype(np.float64) - lo) * (top / (hi - lo))), 0, top).astype(self.dtype)
            deep = self.dtype.name == "uint16"
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(data[0] if data.shape[0] == 1 else
                                                                    data.transpose(1, 2, 0)),
                                               format=("gray16le" if deep else "gray") if data.shape[0] == 1 else
                                               ("rgb48le" if deep else "rgb24"))
            if self._color and self._stream.codec_context.name != "ffv1":  # RGB -> YUV as the source was coded
                primaries, trc, matrix, full = self._color
                image = image.reformat(format=self._stream.pix_fmt, dst_colorspace=_SWS_MATRIX.get(matrix),
                                       dst_color_range=full or None)
                image.color_primaries, image.color_trc = primaries, trc
                if matrix in _SWS_MATRIX:
                    image.colorspace = matrix
                if full:
                    image.color_range = full
            if self._times:
                image.pts, image.time_base = round(self._times[t] / _TIME_BASE), _TIME_BASE
            for packet in self._stream.encode(image):
                self._container.mux(packet)
            self.written += 1
            return
        if self._array is not None:
            scale = _INT_MAX.get(self.dtype.name)
            data = frame.astype(np.float64) * scale if scale else frame
            if scale:
                info = np.iinfo(self.dtype)
                data = np.clip(np.rint(data), info.min, info.max)
            data = data.astype(self.dtype)
            self._array[t] = data[0] if self.layout == "THW" else data if self.layout == "TCHW" else \
                data.transpose(1, 2, 0)
        else:
            frame_info: Any = self.info.frame_info if self.info is not None and self.info.frame_info is not None \
                else self.dtype.name
            write_image(self._tmp / self._name(t), frame, frame_info)
        self.written += 1

    def commit(self) -> Path:
        """Move the finished clip into place; returns the destination."""
        if self.written != self.shape[0]:
            raise RuntimeError(f"{self.path}: {self.written} of {self.shape[0]} frames written")
        if self._container is not None:
            for packet in self._stream.encode():  # flush the encoder
                self._container.mux(packet)
            self._container.close()
            self._container = None
            if self.source is not None:
                fd, muxed = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=f".mux{self.path.suffix}",
                                             dir=self.path.parent)
                os.close(fd)
                self._muxed = Path(muxed)
                remux_with_source(self._tmp, self.source, self._muxed, self.audio)
                self._tmp.unlink()
                self._tmp, self._muxed = self._muxed, None
            usual_permissions(self._tmp)
            os.replace(self._tmp, self.path)
        elif self._array is not None:
            self._array.flush()
            del self._array
            self._array = None
            usual_permissions(self._tmp)
            os.replace(self._tmp, self.path)
        elif self.path.is_dir():  # overwrite: replace the frames, keep the folder's other files
            for f in sorted(self._tmp.iterdir()):
                os.replace(f, self.path / f.name)
            shutil.rmtree(self._tmp, ignore_errors=True)
        else:
            if self.path.exists():
                self.path.unlink()
            usual_permissions(self._tmp)
            os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Remove the temporary data (the destination is left as it was)."""
        self._array = None
        if self._container is not None:
            try:
                self._container.close()
            except Exception:
                pass
            self._container = None
        if self._tmp.is_dir():
            shutil.rmtree(self._tmp, ignore_errors=True)
        elif self._tmp.exists():
            self._tmp.unlink()
        if self._muxed is not None and self._muxed.exists():
            self._muxed.unlink()

    def __enter__(self) -> ClipWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()


def write_clip(path: PathLike, clip: np.ndarray | torch.Tensor, info: ClipInfo | None = None, *,
               overwrite: bool = False) -> Path:
    """Write a whole ``(T, C, H, W)`` clip (see :class:`ClipWriter`); returns ``path``."""
    if isinstance(clip, torch.Tensor):
        clip = clip.detach().cpu().float().numpy()
    if not isinstance(clip, np.ndarray) or clip.ndim != 4 or 0 in clip.shape:
        raise ValueError(f"Expected `clip` of shape (T, C, H, W) (non-empty), got "
                         f"{getattr(clip, 'shape', type(clip).__name__)}")
    with ClipWriter(path, info, tuple(int(n) for n in clip.shape), overwrite=overwrite) as w:
        for t in range(clip.shape[0]):
            w.write(t, clip[t])
    return Path(path)


# ------------------------------------------------------------------------------------------------------- soundtracks


def _can_copy(stream: Any, muxer: str) -> bool:
    """Whether a ``muxer`` container takes ``stream``'s packets as they are (tried on an in-memory file: FFmpeg's
    list of a muxer's codecs is not the whole story, e.g. FLAC in MOV)."""
    av = _import_av()
    try:
        with av.open(io.BytesIO(), "w", format=muxer) as probe:
            probe.add_stream_from_template(stream)
            probe.start_encoding()
        return True
    except Exception:
        return False


def remux_with_source(video: PathLike, source: PathLike, dst: PathLike,
                      audio: str | AudioProcess | StreamedAudio = "copy") -> Path:
    """Write ``dst``: the first video stream of ``video`` (packets copied), the container tags of the video file
    ``source``, its audio streams: copied (``audio="copy"``) when ``dst``'s container takes their codec and
    re-encoded otherwise, left out (``"drop"``), or decoded, processed (a :class:`StreamedAudio`: a block at a time;
    a function ``(wave, rate) -> wave``: whole) and encoded; and its subtitle streams, copied when ``dst``'s container
    takes their codec (text subtitles: ``.mkv`` takes SubRip, ASS and WebVTT, ``.mp4``/``.mov`` only their own
    mov_text), else left out with a warning. Audio and subtitles keep their time against ``source``'s first video
    frame, which is ``video``'s first frame. Re-encoded audio is decoded, processed and encoded as the muxer needs
    it, so memory holds a block of it at a time (unless a function takes it whole). An AVI file has no start time per
    stream (every stream starts at 0, and FFmpeg's muxer would move them all, the video too, to make a negative time
    fit): there an audio stream is copied only when it starts with the first frame, else re-encoded (PCM) with its
    samples before the first frame cut (AAC's encoder priming too) or silence before its first sample. Returns
    ``dst``.

    Raises:
        ValueError: ``audio`` returns another shape or non-finite samples; an audio stream does not decode
            (:class:`~xmodal.io.AudioReadError`); a copied stream (subtitles) has a packet before the first frame
            and ``dst`` is an AVI file.
        ImportError: no PyAV.
    """
    av = _import_av()
    video, source, dst = Path(video), Path(source), Path(dst)
    muxer, codecs = AV_CONTAINERS[dst.suffix.lower()]
    offsets = muxer not in _NO_START_TIMES  # whether a stream of `dst` may start later or earlier than the video
    with av.open(str(video)) as vin, av.open(str(source)) as ain, av.open(str(dst), "w", format=muxer) as out:
        out.metadata.update(container_tags(ain))
        v_in = vin.streams.video[0]
        v_out = out.add_stream_from_template(v_in)
        first = ain.streams.video[0] if ain.streams.video else None
        t0 = float(first.start_time * first.time_base) if first is not None and first.start_time is not None else 0.0
        copied: dict[int, Any] = {}  # source stream index -> output stream
        encoded: list[Iterator[Any]] = []  # packets of each re-encoded stream, made as the muxer takes them
        for stream in ain.streams.audio if audio != "drop" else ():
            if audio == "copy" and _can_copy(stream, muxer) and (offsets or _starts_at(source, stream, t0)):
                copied[stream.index] = out.add_stream_from_template(stream)
                continue
            # each stream has its own readers: decoding one does not consume another's packets
            track = AvAudioSource(source, stream.index, trim=False)
            if isinstance(audio, StreamedAudio):
                blocks = audio.run(track)
            elif callable(audio):
                blocks = iter([_processed(track, audio)])
            else:
                blocks = track.blocks()
            # AAC, FLAC, Opus or PCM; FLAC and PCM at 24 bits from a lossless source of more than 16
            out_stream = av_audio_stream(out, codecs[0], track.rate, track.layout, track.bits)
            start = track.start - t0  # samples before the first frame are cut (encode_av_audio)
            if not offsets and start > 0:  # a late start: silence until then, as every stream of `dst` starts at 0
                blocks, start = _after_silence(blocks, round(start * track.rate), track.channels), 0.0
            encoded.append(encode_av_audio(out_stream, blocks, track.rate, track.layout, start))
        for stream in ain.streams.subtitles:
            if _can_copy(stream, muxer):
                copied[stream.index] = out.add_stream_from_template(stream)
            else:
                warnings.warn(f"{source}: subtitle stream {stream.index} ({stream.codec_context.name}) cannot be "
                              f"stored in a {dst.suffix} file and is left out (write .mkv to keep it)", stacklevel=2)

        def timed(packets: Iterator[Any], order: int) -> Iterator[tuple[float, int, Any]]:
            for packet in packets:
                if packet.dts is not None:
                    yield float(packet.dts * packet.time_base), order, packet

        def copies() -> Iterator[Any]:
            streams = [ain.streams[i] for i in copied]
            for packet in ain.demux(*streams) if streams else ():
                if packet.dts is None:
                    if packet.pts is None:  # the demuxer's empty end-of-stream packets
                        continue
                    packet.dts = packet.pts  # subtitles may carry only a presentation time
                shift = round(t0 / packet.time_base)
                packet.dts -= shift
                if packet.pts is not None:
                    packet.pts -= shift
                if not offsets and packet.dts < 0:  # the muxer would move every stream, the video too, to fit it
                    raise ValueError(f"{source}: stream {packet.stream.index} ({packet.stream.codec_context.name}) "
                                     f"has a packet at {float(packet.dts * packet.time_base):.3f} s, before the "
                                     f"first frame, which a {dst.suffix} file cannot hold (every stream starts "
                                     "with the picture); write .mkv or .mp4")
                packet.stream = copied[packet.stream.index]
                yield packet

        for _, order, packet in heapq.merge(timed(vin.demux(v_in), 0), timed(copies(), 1),
                                            *(timed(packets, 2) for packets in encoded), key=lambda item: item[:2]):
            if order == 0:
                packet.stream = v_out
            out.mux(packet)
    return dst


def _starts_at(path: Path, stream: Any, t0: float) -> bool:
    """Whether the audio ``stream`` of the file ``path`` starts at ``t0`` seconds (its first video frame's time): its
    first packet and its first decoded sample (after any decoder priming an edit list cuts, as AAC's) within half a
    sample (or half a tick of its time base, when that is longer) of ``t0``. What a container without per-stream
    start times (AVI) needs to take its packets as they are and keep them in sync."""
    av = _import_av()
    rate = int(stream.codec_context.sample_rate or 0)
    tick = float(stream.time_base) if stream.time_base else 0.0
    near = max(0.5 / rate if rate else 0.0, 0.5 * tick)
    try:
        with av.open(str(path)) as container:
            packet = next((p for p in container.demux(container.streams[stream.index]) if p.pts is not None), None)
        decoded = AvAudioSource(path, stream.index, trim=False).start
    except Exception:  # undecodable: re-encoding it reports why
        return False
    return packet is not None and abs(float(packet.pts * packet.time_base) - t0) <= near and abs(decoded - t0) <= near


def _after_silence(blocks: Iterable[np.ndarray], samples: int, channels: int) -> Iterator[np.ndarray]:
    """``samples`` samples of silence, as ``(channels, L)`` float32 blocks of at most ``_SILENCE`` samples, then the
    ``(channels, L)`` ``blocks``."""
    while samples > 0:
        n = min(samples, _SILENCE)
        yield np.zeros((channels, n), np.float32)
        samples -= n
    yield from blocks


def _processed(track: AvAudioSource, process: AudioProcess) -> np.ndarray:
    """``process`` applied to the whole of ``track``, checked: the input's shape, finite samples."""
    wave = track.whole()
    if not wave.shape[1]:
        return wave
    done = np.asarray(process(wave, track.rate), dtype=np.float32)
    if done.shape != wave.shape:
        raise ValueError(f"{track.path}: denoising audio stream {track.index} of shape {wave.shape} gave shape "
                         f"{done.shape}")
    if not np.isfinite(done).all():
        raise ValueError(f"{track.path}: denoising audio stream {track.index} gave NaN or infinite samples")
    return done
