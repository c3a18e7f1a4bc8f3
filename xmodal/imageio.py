"""Reading and writing images and band stacks in their natural domain.

Images: ``image (C, H, W) float32`` with dtype-aware scaling, never silently 8-bit:

============  =====================  ==============================================================
file dtype    value in ``image``     formats
============  =====================  ==============================================================
uint8         ``v / 255``            PNG (L, LA, RGB, RGBA; 1-bit and palette expanded), JPEG, BMP (L, RGB),
                                     WebP (RGB, RGBA; written lossless), AVIF (L, RGB, RGBA), TIFF, npy,
                                     HEIC (L, RGB, RGBA)
uint16        ``v / 65535``          PNG (L, LA, RGB, RGBA; colour through imagecodecs, as Pillow would
                                     reduce it to 8 bits), TIFF, npy, 10- and 12-bit HEIC (level
                                     ``v_d`` of a d-bit file as ``v_d * 65535 / (2**d - 1)``)
float16/32/64 ``v`` (kept as is)     TIFF, npy (NaN/inf refused)
============  =====================  ==============================================================

:func:`write_image` undoes the scaling at the file's dtype (rounding and clipping to the integer range), so
read -> write -> read returns the same integers.

Stacks (multispectral / hyperspectral): ``stack (S, H, W) float32`` with per-band scaling recorded in
:class:`StackInfo` (``file value = stack * scale + offset``), undone exactly by :func:`write_stack`.

PNG/JPEG/BMP/WebP/AVIF go through Pillow (AVIF: Pillow 11.3 or later, 8-bit files), TIFF through tifffile and
HEIC/HEIF (phone photos) through pillow-heif (``pip install "xmodal[heif]"``), each imported only when used; HEIC and
AVIF are written at the ``quality`` of :func:`write_image` with full-resolution (4:4:4) colour. GeoTIFF
georeferencing tags (ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory, GeoDouble/AsciiParams, GDAL
metadata and nodata) are kept in the info objects and written back, and so is a TIFF's compression: lossless ones
(LZW, Deflate, ZSTD, PackBits, LZMA..., with their predictor) as they were, lossy ones (JPEG...) as Deflate, so that
writing never degrades the data a second time, and its tiling (tiles of the same shape; strips stay strips) and
internal overviews (a COG's pyramid: rebuilt from the written data at the same reduction factors, by area average with
nodata left out, as GDAL's ``AVERAGE`` resampling). Writing is atomic (a temp file in the destination
folder, then a rename), as in :mod:`xmodal.io`.
"""

from __future__ import annotations

import logging
import math
import os
import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args

import numpy as np
import torch

from xmodal._fs import atomic_write
from xmodal.stackio import (CONTAINER_EXTENSIONS, NIFTI_EXTENSIONS, StackContainer, check_envi_dtype,
                             check_nifti_dtype, is_container, read_container, split_variable, stack_suffix,
                             write_container)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageInfo",
    "ImageReadError",
    "StackInfo",
    "check_stack_destination",
    "natural_key",
    "read_image",
    "read_stack",
    "write_image",
    "write_stack",
]

ImageFormat = Literal["png", "jpeg", "bmp", "webp", "avif", "tiff", "npy", "heif"]
Layout = Literal["HW", "HWC", "CHW"]
StackScaling = Literal["dtype", "band_minmax", "band_percentile", "stack_minmax"]
TiffTag = tuple[int, int, int, Any, bool]  # (code, TIFF datatype, count, value, writeonce): tifffile's extratags
PathLike = Union[str, os.PathLike]

IMAGE_EXTENSIONS: dict[str, ImageFormat] = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".bmp": "bmp",
                                            ".webp": "webp", ".tif": "tiff", ".tiff": "tiff", ".npy": "npy",
                                            ".heic": "heif", ".heif": "heif", ".avif": "avif"}
PILLOW_FORMATS = ("png", "jpeg", "bmp", "webp", "avif")  # through Pillow; the reader finds which from the bytes
TIFF_EXTENSIONS = (".tif", ".tiff")

_INT_MAX = {"uint8": 255.0, "uint16": 65535.0}  # dtype scaling of unsigned integers
_FLOATS = ("float16", "float32", "float64")
_IMAGE_DTYPES = (*_INT_MAX, *_FLOATS)
# Per-band scaling also takes signed 8/16-bit bands (common in remote sensing); 32-bit integers are refused because a
# float32 stack cannot hold them exactly, so the write-back would not be exact.
_STACK_DTYPES = ("uint8", "uint16", "int8", "int16", *_FLOATS)
_GEO_TAGS = (33550, 33922, 34264, 34735, 34736, 34737, 42112, 42113)
_GDAL_NODATA = 42113
_ICC_TAG = 34675  # InterColorProfile
# what each Pillow format can hold of ImageInfo.metadata
_PILLOW_METADATA = {"png": ("icc_profile", "exif", "dpi"), "jpeg": ("icc_profile", "exif", "dpi", "subsampling"),
                    "webp": ("icc_profile", "exif"), "avif": ("icc_profile", "exif"), "bmp": ("dpi",)}
_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
_FORMAT_NAMES = {"bmp": "BMP", "webp": "WebP", "avif": "AVIF"}
# TIFF compressions written back as read: none, LZW, Deflate (Adobe, old), PackBits, LZMA, ZSTD; lossy ones (JPEG,
# JPEG 2000, WebP, JPEG XL...) are written as Deflate instead.
_LOSSLESS_TIFF = (1, 5, 8, 32946, 32773, 34925, 50000)


class ImageReadError(ValueError):
    """A file could not be read as an image or band stack; the message names the file and the reason."""


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`read_image` found in the file; pass it to :func:`write_image` to write the same kind of file.

    Attributes:
        format: container read (``"png"``, ``"jpeg"``, ``"bmp"``, ``"webp"``, ``"avif"``, ``"tiff"``, ``"npy"``,
            ``"heif"``), detected from the content for the Pillow formats.
        dtype: numpy name of the stored sample type (``"uint8"``, ``"uint16"``, ``"float32"``...).
        bit_depth: bits per sample (8, 16, 32, 64).
        channels: ``C`` of the returned ``(C, H, W)`` image.
        mode: ``"L"``, ``"LA"``, ``"RGB"``, ``"RGBA"``, ``"CMYK"`` (JPEG) or ``"multiband"``.
        shape: the array shape as stored (before moving channels first).
        layout: axes of ``shape``: ``"HW"``, ``"HWC"`` (channels last) or ``"CHW"``.
        tiff_tags: GeoTIFF tags of a TIFF, written back as they are.
        tiff_compression: ``(compression, predictor)`` TIFF codes of a TIFF (``(1, 1)``: none), written back (lossy
            compressions as Deflate).
        tiff_tile: ``(rows, columns)`` of a tiled TIFF's tiles (Cloud-Optimized GeoTIFFs and most large rasters are
            tiled), written back tiled the same way; ``None``: strips.
        tiff_overviews: the reduction factors of a TIFF's internal overviews (``(2, 4, 8)`` for a COG's pyramid),
            rebuilt from the written data (area average, nodata left out) at the same factors.
        metadata: what the file says about how to show its pixels, written back where the output format can hold
            it: ``("icc_profile", bytes)`` (colour space; PNG, JPEG, WebP, AVIF, TIFF), ``("exif", bytes)``
            (camera data, including the orientation viewers rotate by; PNG, JPEG, WebP, AVIF; a TIFF keeps the
            orientation only, as its Orientation tag) and ``("dpi", (x, y))`` (PNG, JPEG, BMP, TIFF). 16-bit colour
            PNGs keep all three as well (xmodal writes their iCCP, eXIf and pHYs chunks). HEIC keeps the ICC profile
            and EXIF, and records ``("heif_bit_depth", 8 | 10 | 12)``: 10- and 12-bit images are read as uint16 and
            written back at their depth.
    """

    format: ImageFormat
    dtype: str
    bit_depth: int
    channels: int
    mode: str
    shape: tuple[int, ...]
    layout: Layout
    tiff_tags: tuple[TiffTag, ...] = ()
    tiff_compression: tuple[int, int] = (1, 1)
    metadata: tuple[tuple[str, Any], ...] = ()
    tiff_tile: tuple[int, int] | None = None
    tiff_overviews: tuple[int, ...] = ()


@dataclass(frozen=True)
class StackInfo:
    """Per-band scaling and origin of a stack read by :func:`read_stack`.

    ``file value = stack * scale + offset`` band by band (``stack = (value - offset) / scale``).

    Attributes:
        scaling: how ``offset``/``scale`` were chosen (see :func:`read_stack`).
        offset: ``S`` offsets, in file units.
        scale: ``S`` scales, in file units per stack unit (never 0).
        dtype: ``S`` numpy dtype names of the bands in the file(s).
        band_names: ``S`` names: file stems for a folder or list of files, ``band_01``... for one file.
        files: the file(s) read.
        shape: ``(S, H, W)``.
        percentiles: the ``(low, high)`` percentiles of ``"band_percentile"``, else ``None``.
        nodata: ``S`` GDAL nodata values (``None`` where the file has none); excluded from band statistics.
        tiff_tags: GeoTIFF tags of the (first) file, written back by :func:`write_stack`.
        interleaved: one file storing its bands last (``.npy`` ``(H, W, S)``, a pixel-interleaved TIFF), written
            back the same way by :func:`write_stack` (else bands first, one plane each).
        tiff_compression: ``(compression, predictor)`` of the (first) TIFF, written back by :func:`write_stack`
            (lossy compressions as Deflate).
        tiff_tile: ``(rows, columns)`` of the (first) TIFF's tiles when it is tiled, written back so; ``None``: strips.
        tiff_overviews: reduction factors of the (first) TIFF's internal overviews, rebuilt on writing (as
            :class:`ImageInfo`'s).
        container: a MATLAB ``.mat``, ENVI or NIfTI source's :class:`~xmodal.stackio.StackContainer` (variable,
            version, header...), written back by :func:`write_stack` to a destination of the same format; ``None``
            otherwise.
    """

    scaling: StackScaling
    offset: tuple[float, ...]
    scale: tuple[float, ...]
    dtype: tuple[str, ...]
    band_names: tuple[str, ...]
    files: tuple[str, ...]
    shape: tuple[int, int, int]
    percentiles: tuple[float, float] | None = None
    nodata: tuple[float | None, ...] = ()
    tiff_tags: tuple[TiffTag, ...] = ()
    tiff_compression: tuple[int, int] = (1, 1)
    interleaved: bool = False
    tiff_tile: tuple[int, int] | None = None
    tiff_overviews: tuple[int, ...] = ()
    container: StackContainer | None = None


# ---------------------------------------------------------------------------------------------------------- helpers


def _import_pil() -> Any:
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError("PNG, JPEG, BMP, WebP and AVIF files need Pillow: pip install Pillow") from e
    return Image


def pillow_formats() -> list[str]:
    """The Pillow format names of ``PILLOW_FORMATS`` this Pillow can open (AVIF needs Pillow 11.3 or later), for
    ``Image.open(..., formats=...)``."""
    Image = _import_pil()
    Image.init()
    return [f.upper() for f in PILLOW_FORMATS if f.upper() in Image.OPEN]


def _check_avif_support(path: Path, error: type[Exception]) -> None:
    """``error`` naming ``path`` when this Pillow cannot read and write AVIF."""
    if "AVIF" not in pillow_formats():
        raise error(f"{path}: AVIF files need Pillow 11.3 or later built with libavif (the PyPI wheels are): "
                    "pip install -U Pillow")


def _check_avif_depth(path: Path, start: bytes) -> None:
    """Refuse an AVIF file (whatever its extension; ``start``: its first bytes) whose samples have more than 8 bits
    (declared in its ``pixi`` box): Pillow would reduce them to 8 bits."""
    if start[4:8] != b"ftyp" or start[8:12] not in (b"avif", b"avis"):
        return
    with open(path, "rb") as f:
        head = f.read(1 << 16)  # the meta box, with the item properties, comes first
    i = head.find(b"pixi")
    if i >= 4 and len(head) > i + 8:  # box: size, "pixi", version and flags (4 bytes), channel count, bits per channel
        bits = tuple(head[i + 9:i + 9 + head[i + 8]])
        if any(b > 8 for b in bits):
            raise ImageReadError(f"{path}: a {max(bits)}-bit AVIF; Pillow decodes AVIF to 8 bits, which would lose "
                                 "precision (convert it to a 16-bit PNG or TIFF first, e.g. avifdec --depth 16)")


def _import_heif(path: Path, error: type[Exception]) -> Any:
    """pillow-heif, or ``error`` naming ``path`` and how to install it."""
    try:
        import pillow_heif
    except ImportError:
        raise error(f"{path}: HEIC/HEIF files need pillow-heif: pip install 'xmodal[heif]' (or pillow-heif)") from None
    return pillow_heif


def _upright_exif(exif: bytes) -> bytes:
    """``exif`` with its orientation set to 1 (upright). libheif hands over HEIF pixels already turned by the file's
    own rotation and mirroring (which the HEIF standard puts before any EXIF orientation), so an orientation tag left
    in place would turn them a second time in a viewer of the output."""
    e = _import_pil().Exif()
    try:
        e.load(exif)
    except Exception:  # a damaged EXIF block: carried as it is
        return exif
    if e.get(0x0112, 1) == 1:
        return exif
    e[0x0112] = 1
    return e.tobytes()


def _read_heif(path: Path) -> tuple[np.ndarray, str, tuple[tuple[str, Any], ...]]:
    """Array ``(H, W)`` or ``(H, W, C)`` (uint8, or uint16 for 10- and 12-bit images, scaled so that the format's
    white is 65535), upright (the file's rotation applied), mode and metadata (ICC, EXIF with an upright orientation,
    bit depth) of the primary image of a HEIC/HEIF file."""
    heif = _import_heif(path, ImageReadError)
    try:
        f = heif.open_heif(path, convert_hdr_to_8bit=False)
        arr, mode, info = np.asarray(f), f.mode.split(";")[0], f.info
        mode = "L" if mode == "I" else mode  # 16-bit gray is "I;16"
    except Exception as e:  # libheif errors for corrupt or unsupported files
        raise ImageReadError(f"{path}: not readable as HEIF ({e})") from None
    if mode not in ("L", "LA", "RGB", "RGBA"):
        raise ImageReadError(f"{path}: unsupported HEIF mode {f.mode!r} (expected L, RGB or RGBA)")
    depth = int(info.get("bit_depth") or 8)
    if arr.dtype == np.uint16:  # pillow-heif puts a d-bit value v at v << (16 - d): map white to 65535 exactly
        v = (arr >> (16 - depth)).astype(np.float64)
        arr = np.rint(v * (65535.0 / (2 ** depth - 1))).astype(np.uint16)
    meta: list[tuple[str, Any]] = []
    if info.get("icc_profile"):
        meta.append(("icc_profile", bytes(info["icc_profile"])))
    if info.get("exif"):
        meta.append(("exif", _upright_exif(bytes(info["exif"]))))
    meta.append(("heif_bit_depth", depth))
    return np.ascontiguousarray(arr), mode, tuple(meta)


def _check_quality(quality: int) -> None:
    if not 1 <= quality <= 100:
        raise ValueError(f"`quality` must be in [1, 100], got {quality}")


def _write_heif(path: Path, data: np.ndarray, info: ImageInfo | None, quality: int) -> None:
    """``data (C, H, W)`` uint8 or uint16 as HEIC (HEVC at ``quality``, 4:4:4 chroma; uint16 as 10 bits, or 12 when
    the source was 12-bit), with the source's ICC profile and EXIF."""
    C = data.shape[0]
    if data.dtype.name not in ("uint8", "uint16") or C not in (1, 3, 4):
        raise ValueError(f"{path}: HEIC stores 8-bit or 10/12-bit images with 1, 3 or 4 channels, got "
                         f"{data.dtype.name} with {C} channels (write .png, .tif or .npy)")
    _check_quality(quality)
    heif = _import_heif(path, ValueError)
    meta = dict(info.metadata) if info is not None else {}
    pixels = data[0] if C == 1 else data.transpose(1, 2, 0)  # (C, H, W) -> (H, W) or (H, W, C)
    mode = _MODES[C]
    options: dict[str, Any] = {"quality": quality, "chroma": 444}  # full-resolution colour: no 4:2:0 loss on top
    if data.dtype == np.uint16:
        depth = 12 if meta.get("heif_bit_depth") == 12 else 10
        v = np.rint(pixels.astype(np.float64) * ((2 ** depth - 1) / 65535.0)).astype(np.uint16)
        pixels, mode = (v << (16 - depth)).astype("<u2"), f"{mode};16"
        heif.options.SAVE_HDR_TO_12_BIT = depth == 12
    options.update((k, v) for k, v in meta.items() if k in ("icc_profile", "exif"))
    H, W = pixels.shape[:2]
    try:
        f = heif.from_bytes(mode, (W, H), np.ascontiguousarray(pixels).tobytes())
        atomic_write(path, lambda tmp: f.save(tmp, format="HEIF", **options))
    finally:
        heif.options.SAVE_HDR_TO_12_BIT = False


def _import_tifffile() -> Any:
    try:
        import tifffile
    except ImportError as e:
        raise ImportError("TIFF files need tifffile: pip install tifffile") from e
    return tifffile


def natural_key(name: str) -> list[Any]:
    """Sort key that orders digit runs by value: ``B2 < B9 < B10`` (case-insensitive)."""
    parts = re.split(r"(\d+)", name)  # alternates text and digits, so items compare like with like
    return [int(p) if i % 2 else p.lower() for i, p in enumerate(parts)]


def _format_of(path: Path) -> ImageFormat:
    fmt = IMAGE_EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise ImageReadError(f"{path}: unsupported extension {path.suffix!r} "
                             f"(expected one of {', '.join(IMAGE_EXTENSIONS)})")
    return fmt


def _mode_of(channels: int) -> str:
    return _MODES.get(channels, "multiband")


def alpha_channels(mode: str | None) -> int:
    """1 for an image mode with an alpha channel (gray+alpha ``LA``, ``RGBA``: the last channel), else 0."""
    return 1 if mode in ("LA", "RGBA") else 0


def _geotags(page: Any) -> tuple[TiffTag, ...]:
    tags = []
    for tag in page.tags.values():
        if tag.code in _GEO_TAGS:
            value = tag.value
            if isinstance(value, np.ndarray):
                value = tuple(value.tolist())
            count = 0 if int(tag.dtype) == 2 else int(tag.count)  # ASCII: tifffile counts the terminator itself
            tags.append((int(tag.code), int(tag.dtype), count, value, True))
    return tuple(tags)


def _nodata(tags: tuple[TiffTag, ...]) -> float | None:
    """The GDAL nodata value of a TIFF's tags (``nan`` possible), or ``None``."""
    for code, _, _, value, _ in tags:
        if code == _GDAL_NODATA:
            try:
                return float(str(value).strip("\x00 "))
            except ValueError:
                return None
    return None


def _png_header(head: bytes) -> tuple[int, int] | None:
    """``(bit_depth, colour_type)`` from a PNG's IHDR (in the file's first 26 bytes ``head``), or ``None`` when the
    file is not a PNG."""
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def _import_imagecodecs(what: str) -> Any:
    try:
        import imagecodecs
    except ImportError as e:
        raise ImportError(f"{what} need imagecodecs: pip install imagecodecs") from e
    return imagecodecs


def _read_png16_colour(path: Path, colour_type: int) -> np.ndarray:
    """``(H, W, C)`` uint16 samples of a 16-bit gray+alpha, RGB or RGBA PNG, decoded by imagecodecs."""
    imagecodecs = _import_imagecodecs("16-bit colour PNG files")
    channels = {2: 3, 4: 2, 6: 4}[colour_type]
    try:
        arr = imagecodecs.png_decode(path.read_bytes())
    except Exception as e:  # imagecodecs raises PngError (and others) for bad files
        raise ImageReadError(f"{path}: not readable as PNG ({e})") from None
    if arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[-1] != channels:
        raise ImageReadError(f"{path}: 16-bit PNG decoded as {arr.dtype} {arr.shape}; expected (H, W, {channels}) "
                             "uint16")
    return arr


def _pillow_metadata(im: Any) -> tuple[tuple[str, Any], ...]:
    """ICC profile, EXIF block and dpi of an open Pillow image (those it has)."""
    meta: list[tuple[str, Any]] = []
    if im.info.get("icc_profile"):
        meta.append(("icc_profile", bytes(im.info["icc_profile"])))
    exif = im.getexif()
    if len(exif):
        meta.append(("exif", exif.tobytes()))
    if im.info.get("dpi"):
        meta.append(("dpi", tuple(float(v) for v in im.info["dpi"])))
    if im.format == "JPEG" and im.mode in ("RGB", "YCbCr"):  # chroma resolution: 4:4:4 stays full
        from PIL import JpegImagePlugin

        sampling = JpegImagePlugin.get_sampling(im)
        if sampling in (0, 1, 2):
            meta.append(("subsampling", sampling))
    return tuple(meta)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _with_png_metadata(png: bytes, metadata: tuple[tuple[str, Any], ...]) -> bytes:
    """``png`` with iCCP, pHYs and eXIf chunks for ``metadata`` inserted right after its IHDR (all must come before
    the pixel data; ``png`` has none of them)."""
    meta = dict(metadata)
    chunks = b""
    if meta.get("icc_profile"):
        chunks += _png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(meta["icc_profile"]))
    if meta.get("dpi"):
        chunks += _png_chunk(b"pHYs", struct.pack(">IIB", *(round(v / 0.0254) for v in meta["dpi"]), 1))  # per metre
    if meta.get("exif"):
        exif = meta["exif"]
        chunks += _png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)
    end_of_ihdr = 8 + 8 + 13 + 4  # signature, IHDR length and type, IHDR data, CRC
    return png[:end_of_ihdr] + chunks + png[end_of_ihdr:]


def _read_pillow(path: Path) -> tuple[np.ndarray, str, str, tuple[tuple[str, Any], ...]]:
    """Stored array ``(H, W)`` or ``(H, W, C)``, format, mode and metadata of a PNG, JPEG, BMP, WebP or AVIF
    file."""
    with open(path, "rb") as f:
        start = f.read(26)
    header = _png_header(start)
    Image = _import_pil()
    if header is not None and header[0] == 16 and header[1] in (2, 4, 6):  # Pillow would reduce these to 8 bits
        arr = _read_png16_colour(path, header[1])
        with Image.open(path, formats=["PNG"]) as im:  # the chunks before the pixels, which are not decoded
            meta = _pillow_metadata(im)
        return arr, "png", {2: "RGB", 4: "LA", 6: "RGBA"}[header[1]], meta
    try:
        _check_avif_depth(path, start)
        with Image.open(path, formats=pillow_formats()) as im:
            im.load()
            fmt = im.format.lower()
            meta = _pillow_metadata(im)
            if im.mode == "1":
                im = im.convert("L")  # 1-bit: 0/255 in 8 bits
            elif im.mode in ("P", "PA"):
                im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
            mode = im.mode
            arr = np.array(im)
    except ImageReadError:
        raise
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, zlib.error... for bad files
        raise ImageReadError(f"{path}: not readable as PNG, JPEG, BMP, WebP or AVIF ({e})") from None
    if header is not None and header[0] == 16:  # 16-bit gray (colour was decoded above)
        # Pillow's "I;16" modes give uint16 in some byte order; older Pillow versions used "I" (int32)
        if mode not in ("I;16", "I;16L", "I;16B", "I") or arr.dtype.kind not in "ui":
            raise ImageReadError(f"{path}: 16-bit PNG decoded by Pillow as mode {mode!r} ({arr.dtype}); "
                                 "expected 16-bit gray samples")
        arr = arr.astype(np.uint16)  # within [0, 65535]: the PNG stores 16 bits
        mode = "L"
    elif mode not in ("L", "LA", "RGB", "RGBA", "CMYK"):
        raise ImageReadError(f"{path}: unsupported image mode {mode!r} "
                             "(expected L, LA, RGB, RGBA, CMYK or 16-bit gray)")
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("=")), fmt, mode, meta


class TiffPageErrors(logging.Handler):
    """Collects what tifffile logs as errors while it opens a file (a page offset past the end of a truncated file)
    instead of letting Python print them: the reader reports them, with the path, in its own error."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> TiffPageErrors:
        self._logger = logging.getLogger("tifffile")
        self._logger.addHandler(self)
        self._propagate, self._logger.propagate = self._logger.propagate, False
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.propagate = self._propagate

    def broken_chain(self, pages: int) -> str:
        """Why the file's pages end early (``""`` when they do not): after ``pages`` readable pages the offset of
        the next one points outside the file, or cannot be read."""
        if any("invalid page offset" in m or "invalid offset to page" in m for m in self.messages):
            return (f"truncated or corrupt TIFF: {pages} page(s) can be read, then the offset of page {pages + 1} "
                    "points outside the file")
        return ""


def _read_tiff(path: Path) -> tuple[np.ndarray, str, str, tuple[TiffTag, ...], tuple[int, int],
                                    tuple[tuple[str, Any], ...], tuple[int, int] | None, tuple[int, ...]]:
    """``(C, H, W)`` array in the stored dtype, axes of the stored array, mode, GeoTIFF tags, ``(compression,
    predictor)``, metadata (ICC profile), tile shape (``None``: strips) and overview reduction factors of a TIFF."""
    tifffile = _import_tifffile()
    try:
        with TiffPageErrors() as errors, tifffile.TiffFile(path) as tif:
            broken = errors.broken_chain(len(tif.pages))
            if broken:
                raise ImageReadError(f"{path}: {broken}")
            series = tif.series
            if len(series) > 1 and all(x.axes == "YX" and x.shape == series[0].shape and x.dtype == series[0].dtype
                                       for x in series):  # one 2-D page per band, written one at a time
                arr, axes = np.stack([x.asarray() for x in series]), "QYX"  # (C, H, W)
            elif len(series) != 1:
                shapes = ", ".join(str(x.shape) for x in series[:4]) + (", ..." if len(series) > 4 else "")
                raise ImageReadError(f"{path}: holds {len(series)} image series of shapes {shapes} and dtypes "
                                     f"{', '.join(sorted({str(x.dtype) for x in series}))}; expected one, or 2-D "
                                     "pages of one size and dtype (the bands of a stack)")
            else:
                arr = series[0].asarray()
                axes = series[0].axes
            levels = series[0].levels[1:] if len(series) == 1 else []  # internal overviews (reduced pages)
            overviews = tuple(max(1, round(arr.shape[axes.index("X")] / lvl.shape[lvl.axes.index("X")]))
                              for lvl in levels if "X" in lvl.axes)
            page = tif.pages[0]
            photometric = int(page.photometric)
            if photometric == 3 and axes == "YX" and page.colormap is not None:  # palette: as a palette PNG is read
                arr, axes, photometric = _palette_rgb(arr, page.colormap), "YXS", 2
            alpha = _tiff_alpha(page)
            tags = _geotags(page)
            compression = (int(page.compression), int(page.predictor))
            meta = _tiff_metadata(page)
            tile = (int(page.tilelength), int(page.tilewidth)) if page.is_tiled else None
    except ImageReadError:
        raise
    except Exception as e:  # tifffile raises TiffFileError, ValueError, OSError... for bad files
        raise ImageReadError(f"{path}: not readable as TIFF ({e})") from None
    if arr.dtype == bool:  # 1-bit (bilevel scans, fax): 0 / 255 in 8 bits, as a 1-bit PNG is read
        arr = arr.astype(np.uint8) * np.uint8(255)
    if photometric == 0:  # MinIsWhite: inverted to MinIsBlack (and written so), so that it shows as it did
        if arr.dtype.kind == "f":
            raise ImageReadError(f"{path}: a float TIFF stored MinIsWhite (inverted), whose white level TIFF does not "
                                 "define; store it MinIsBlack")
        arr, photometric = np.invert(arr), 1
    other = [i for i, a in enumerate(axes) if a not in "YX"]
    arr = arr.transpose(*other, axes.index("Y"), axes.index("X"))  # (..., Y, X): every other axis becomes a band
    arr = arr.reshape(-1, *arr.shape[-2:])  # (..., H, W) -> (C, H, W)
    C = arr.shape[0]
    if photometric == 6 and compression[0] == 7:  # YCbCr JPEG: tifffile decodes it to RGB
        photometric = 2
    return arr, axes, tiff_mode(photometric, C, alpha), tags, compression, meta, tile, overviews


def _palette_rgb(index: np.ndarray, colormap: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` colours of a palette TIFF's ``index`` ``(H, W)`` through its ``colormap`` ``(3, N)`` (16 bits per
    entry): 8-bit when every entry is an 8-bit value scaled by 257 or 256 (or stored unscaled), else 16-bit."""
    cmap = np.asarray(colormap).astype(np.uint16)
    if (cmap % 257 == 0).all():
        cmap = (cmap // 257).astype(np.uint8)
    elif (cmap % 256 == 0).all():
        cmap = (cmap >> 8).astype(np.uint8)
    elif cmap.max() <= 255:
        cmap = cmap.astype(np.uint8)
    index = np.minimum(index, cmap.shape[1] - 1)  # an index past the table (a damaged file): its last colour
    return np.ascontiguousarray(cmap[:, index].transpose(1, 2, 0))


def _extra_samples(page: Any) -> tuple[int, ...]:
    """A TIFF page's ExtraSamples codes (0 unspecified, 1 associated alpha, 2 unassociated alpha)."""
    extra = page.tags.get(338)
    values = extra.value if extra is not None else ()
    return tuple(int(v) for v in (values if isinstance(values, tuple) else (values,)))


def _tiff_alpha(page: Any) -> bool:
    """Whether a TIFF page's extra sample is alpha (ExtraSamples 1 or 2; 0, "unspecified", is a band: the NIR of
    an RGB+NIR scene)."""
    return any(v in (1, 2) for v in _extra_samples(page))


def tiff_mode(photometric: int, channels: int, alpha: bool) -> str:
    """Image mode of a TIFF: ``RGB``, ``RGBA`` / ``LA`` (an extra sample tagged alpha), ``CMYK``, ``L`` or
    ``multiband``."""
    if photometric in (0, 1) and channels == 2 and alpha:
        return "LA"
    if photometric == 2:
        return "RGB" if channels == 3 else "RGBA" if channels == 4 and alpha else "multiband"
    return "CMYK" if photometric == 5 and channels == 4 else ("L" if channels == 1 else "multiband")


def npy_channels_last(shape: tuple[int, ...]) -> bool:
    """Whether a 3-D ``.npy`` array of ``shape`` is read as ``(H, W, C)``: its last axis has at most 4 entries and
    its first more than 4, or at most 16 entries and fewer than both others (a ``(H, W, 13)`` Sentinel-2 stack);
    else ``(C, H, W)`` (so a hyperspectral ``(200, 128, 100)`` stays bands first)."""
    return len(shape) == 3 and (shape[2] <= 4 < shape[0] or shape[2] <= 16 and shape[2] < min(shape[0], shape[1]))


def _layout_npy(arr: np.ndarray, path: Path) -> tuple[np.ndarray, Layout]:
    """``(C, H, W)`` view of a 2-D or 3-D array (:func:`npy_channels_last`)."""
    if arr.ndim == 2:
        return arr[None], "HW"  # (H, W) -> (1, H, W)
    if arr.ndim == 3:
        if npy_channels_last(arr.shape):
            return arr.transpose(2, 0, 1), "HWC"  # (H, W, C) -> (C, H, W)
        return arr, "CHW"
    raise ImageReadError(f"{path}: expected 2 or 3 dims ((H, W), (H, W, C) or (C, H, W)), "
                         f"got {arr.ndim} dims {arr.shape}")


def _read_raw(path: PathLike, allowed: tuple[str, ...]) -> tuple[np.ndarray, ImageInfo]:
    """``(C, H, W)`` array in the file's own dtype and the file's :class:`ImageInfo`, all checks done."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found")
    fmt = _format_of(path)
    tags: tuple[TiffTag, ...] = ()
    compression, tile, overviews = (1, 1), None, ()
    meta: tuple[tuple[str, Any], ...] = ()
    if fmt in PILLOW_FORMATS:
        if fmt == "avif":
            _check_avif_support(path, ImageReadError)
        stored, fmt, mode, meta = _read_pillow(path)
        arr, layout = (stored[None], "HW") if stored.ndim == 2 else (stored.transpose(2, 0, 1), "HWC")
        # (H, W) -> (1, H, W); (H, W, C) -> (C, H, W)
    elif fmt == "tiff":
        arr, axes, mode, tags, compression, meta, tile, overviews = _read_tiff(path)
        stored_shape = {"YX": "HW", "YXS": "HWC"}
        layout = stored_shape.get(axes, "CHW")  # type: ignore[assignment]
        stored = arr if layout == "CHW" else (arr[0] if layout == "HW" else arr.transpose(1, 2, 0))
    elif fmt == "heif":
        stored, mode, meta = _read_heif(path)
        arr, layout = (stored[None], "HW") if stored.ndim == 2 else (stored.transpose(2, 0, 1), "HWC")
    elif fmt == "npy":
        try:
            stored = np.load(path, allow_pickle=False)
        except Exception as e:  # numpy raises ValueError, EOFError, OSError, UnpicklingError for bad files
            raise ImageReadError(f"{path}: not readable as .npy ({e})") from None
        arr, layout = _layout_npy(stored, path)
        mode = "L" if arr.shape[0] == 1 else "RGB" if arr.shape[0] == 3 else "multiband"  # .npy holds no alpha
    else:  # unreachable: _format_of only returns the formats above
        raise ImageReadError(f"{path}: unsupported format {fmt!r}")
    if arr.size == 0:
        raise ImageReadError(f"{path}: empty array of shape {stored.shape}")
    dtype = arr.dtype
    _check_values(path, arr, allowed, _nodata(tags) if fmt == "tiff" else None,
                  "" if fmt != "tiff" else " (NaN is allowed as the GDAL nodata value)")
    arr = np.ascontiguousarray(arr, dtype=dtype.newbyteorder("="))
    info = ImageInfo(format=fmt, dtype=dtype.name, bit_depth=dtype.itemsize * 8, channels=int(arr.shape[0]),
                     mode=mode, shape=tuple(int(n) for n in stored.shape), layout=layout, tiff_tags=tags,
                     tiff_compression=compression, metadata=meta, tiff_tile=tile, tiff_overviews=overviews)
    return arr, info


def _check_values(path: PathLike, arr: np.ndarray, allowed: tuple[str, ...], nodata: float | None,
                  nan_hint: str) -> None:
    """``ImageReadError`` for a dtype not in ``allowed`` or float data with NaN (unless ``nodata`` is NaN) or
    infinities."""
    if arr.dtype.name not in allowed:
        raise ImageReadError(f"{path}: unsupported dtype {arr.dtype.name} (expected {', '.join(allowed)})")
    nan_nodata = nodata is not None and math.isnan(nodata)  # nodata NaN: NaN pixels are nodata
    if arr.dtype.kind == "f" and not (np.isfinite(arr) | (nan_nodata & np.isnan(arr))).all():
        raise ImageReadError(f"{path}: float data contains NaN or infinite values{nan_hint}")


def _to_numpy(name: str, x: np.ndarray | torch.Tensor, ndim: int, axes: str, nan: bool = False) -> np.ndarray:
    """``x`` as a float numpy array of ``ndim`` dims, finite (NaN allowed with ``nan``)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = (x.float() if x.dtype == torch.bfloat16 else x).numpy()  # numpy has no bfloat16
    if not isinstance(x, np.ndarray):
        raise TypeError(f"Expected `{name}` to be a numpy array or torch tensor, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"Expected `{name}` to be float (scaled values), got {x.dtype}")
    if x.ndim != ndim or 0 in x.shape:
        raise ValueError(f"Expected `{name}` of shape {axes} (non-empty), got {tuple(x.shape)}")
    if not (np.isfinite(x) | (nan & np.isnan(x))).all():
        raise ValueError(f"`{name}` contains NaN or infinite values" if not nan else f"`{name}` contains infinite "
                         "values")
    return x


def _quantise(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip float ``values`` (file units) to an integer ``dtype``; floats are cast."""
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _tiff_metadata(page: Any) -> tuple[tuple[str, Any], ...]:
    """ICC profile, dpi (a resolution in inches or centimetres) and orientation (as an EXIF block holding it, as the
    other formats carry it) of a TIFF page."""
    meta: list[tuple[str, Any]] = []
    icc = page.tags.get(_ICC_TAG)
    if icc is not None and icc.value:
        meta.append(("icc_profile", bytes(icc.value)))
    x, y, unit = (page.tags.get(code) for code in (282, 283, 296))  # XResolution, YResolution, ResolutionUnit
    if x is not None and y is not None and (unit is None or int(unit.value) in (1, 2, 3)):
        (xn, xd), (yn, yd) = x.value, y.value
        if xn and xd and yn and yd and unit is not None and int(unit.value) in (2, 3):
            per_inch = 1.0 if int(unit.value) == 2 else 2.54
            meta.append(("dpi", (xn / xd * per_inch, yn / yd * per_inch)))
        elif xn and xd and yn and yd and (xn / xd, yn / yd) != (1.0, 1.0):  # no unit (ImageJ keeps its own,
            meta.append(("tiff_resolution", (xn / xd, yn / yd)))  # microns...): pixels per it; 1 x 1 says nothing
    description = page.description if isinstance(page.description, str) else ""
    if description.startswith("ImageJ=") and len(page.parent.pages) == 1:  # a single ImageJ image: unit, display
        meta.append(("imagej_description", description))
    orientation = page.tags.get(274)
    if orientation is not None and int(orientation.value) != 1:
        exif = _import_pil().Exif()
        exif[0x0112] = int(orientation.value)
        meta.append(("exif", exif.tobytes()))
    if 1 in _extra_samples(page):  # an associated (premultiplied) alpha stays one
        meta.append(("tiff_alpha", 1))
    return tuple(meta)


def _tiff_metadata_tags(metadata: tuple[tuple[str, Any], ...]) -> tuple[tuple[TiffTag, ...], dict[str, Any]]:
    """What a TIFF holds of ``metadata``: the ICC profile and the EXIF orientation as tags, the dpi (or a resolution
    without unit) and a single ImageJ image's description (its unit, display range) as ``tifffile`` write arguments
    (the kind of alpha, ``tiff_alpha``, goes to :func:`_write_tiff`)."""
    meta = dict(metadata)
    tags: list[TiffTag] = []
    if meta.get("icc_profile"):
        tags.append((_ICC_TAG, 7, len(meta["icc_profile"]), meta["icc_profile"], True))
    if meta.get("exif"):
        exif = _import_pil().Exif()
        try:
            exif.load(meta["exif"])
            orientation = int(exif.get(0x0112, 1))
        except Exception:  # a damaged EXIF block: nothing to carry
            orientation = 1
        if 2 <= orientation <= 8:
            tags.append((274, 3, 1, orientation, True))
    resolution = {"resolution": tuple(meta["dpi"]), "resolutionunit": "INCH"} if meta.get("dpi") else \
        {"resolution": tuple(meta["tiff_resolution"]), "resolutionunit": "NONE"} if meta.get("tiff_resolution") else {}
    if meta.get("imagej_description"):
        resolution.update(description=meta["imagej_description"], metadata=None)  # as it was: no tifffile JSON
    return tuple(tags), resolution


def _write_tiff(path: Path, data: np.ndarray, mode: str, tags: tuple[TiffTag, ...],
                compression: tuple[int, int] = (1, 1), resolution: dict[str, Any] | None = None,
                tile: tuple[int, int] | None = None, overviews: tuple[int, ...] = (), alpha: int = 2,
                planar: bool = False) -> None:
    """Write ``data: (C, H, W)``: 2-D for one band, contiguous RGB(A) (mode RGB or RGBA, 3 or 4 channels), gray +
    alpha (mode LA) or CMYK (mode CMYK, 4 channels), else one page of C planes; ``alpha``: the ExtraSamples code of
    an alpha (2 unassociated, 1 associated); ``planar``: RGB(A) / CMYK as one plane per colour (as a planar source
    stored it); ``compression``: ``(compression, predictor)`` TIFF codes, a
    lossy compression replaced by Deflate (no predictor); ``tile``: ``(rows, columns)`` tiles, else strips;
    ``overviews``: reduction factors of internal overviews (:func:`_overview`), written as reduced-resolution pages
    after the image, as GDAL writes them."""
    tifffile = _import_tifffile()
    codec, predictor = compression
    if codec not in _LOSSLESS_TIFF:
        codec, predictor = 8, 1  # Deflate (zlib), never a second lossy encoding
    pack = {} if codec == 1 else {"compression": codec, **({"predictor": predictor} if predictor != 1 else {})}
    if tile is not None:
        pack["tile"] = tile
    C = data.shape[0]
    if C == 1:
        out, kwargs = data[0], {"photometric": "minisblack"}  # (1, H, W) -> (H, W)
    elif (mode in ("RGB", "RGBA") and C in (3, 4)) or (mode == "CMYK" and C == 4):
        photometric = "separated" if mode == "CMYK" else "rgb"
        out, kwargs = (data, {"photometric": photometric, "planarconfig": "separate"}) if planar else \
            (data.transpose(1, 2, 0), {"photometric": photometric})  # (C, H, W) -> (H, W, C)
        if mode == "RGBA" and C == 4:
            kwargs["extrasamples"] = [alpha]
    elif mode == "LA" and C == 2:  # gray + alpha, interleaved as it is stored
        out, kwargs = data.transpose(1, 2, 0), {"photometric": "minisblack", "planarconfig": "contig",
                                                "extrasamples": [alpha]}
    elif mode == "interleaved":  # bands as samples of each pixel (extra samples "unspecified": bands, not alpha)
        out, kwargs = data.transpose(1, 2, 0), {"photometric": "minisblack", "planarconfig": "contig"}
    else:
        out, kwargs = data, {"photometric": "minisblack", "planarconfig": "separate"}
    layout = out.ndim == 3 and out.shape[-1] == C and C > 1 and out is not data  # channels last

    def write(tmp: str) -> None:
        # BigTIFF where the image and its pyramid (at most a third more) could pass the 4 GiB of classic TIFF, as
        # tifffile.imwrite decides for an image alone
        with tifffile.TiffWriter(tmp, bigtiff=data.nbytes * 4 / 3 > (1 << 32) - (1 << 25)) as tif:
            tif.write(np.ascontiguousarray(out), extratags=list(tags), **kwargs, **pack, **(resolution or {}))
            nodata = _nodata(tags)
            for factor in overviews:
                small = _overview(data, factor, nodata)  # (C, h, w)
                small = small[0] if C == 1 else small.transpose(1, 2, 0) if layout else small
                tif.write(np.ascontiguousarray(small), subfiletype=1, **kwargs, **pack)

    atomic_write(path, write)


def _overview(data: np.ndarray, factor: int, nodata: float | None) -> np.ndarray:
    """``(C, ceil(H / factor), ceil(W / factor))`` average of ``data: (C, H, W)`` over GDAL's ``AVERAGE`` windows
    (output pixel ``i`` averages source pixels ``int(0.5 + i r)`` to ``int(0.5 + (i + 1) r)``, ``r`` = source /
    output size): ``nodata`` pixels are left out and an area of nodata only stays nodata; integers are rounded (halves
    up) and clipped to their dtype. Checked against GDAL 3.10 (``build_overviews(..., average)``, uint16): the first
    level is identical; GDAL averages each further level from the previous, rounded one where every level here is
    averaged from the full image, so they differ by 1 where the factor divides the size and more where it does not."""
    x = data.astype(np.float64)
    valid = np.ones(x.shape, bool) if nodata is None else ~np.isnan(x) if math.isnan(nodata) else x != nodata
    total, count = np.where(valid, x, 0.0), valid.astype(np.float64)
    for axis in (1, 2):
        n = x.shape[axis]
        size = -(-n // factor)
        starts = np.unique(np.minimum((0.5 + np.arange(size) * (n / size)).astype(np.int64), n - 1))
        total, count = (np.add.reduceat(a, starts, axis=axis) for a in (total, count))
    mean = np.where(count > 0, total / np.maximum(count, 1), nodata if nodata is not None else 0.0)
    return _quantise(np.floor(mean + 0.5) if data.dtype.kind in "ui" else mean, data.dtype)  # GDAL: halves up


# ----------------------------------------------------------------------------------------------------------- images


def nodata_value(info: ImageInfo) -> float | None:
    """The GDAL nodata value of an image's TIFF tags in the units :func:`read_image` gives (``nan`` possible), or
    ``None``: pixels holding it are no data, not picture."""
    nodata = _nodata(info.tiff_tags)
    if nodata is None or math.isnan(nodata):
        return nodata
    return float(np.float32(nodata) / np.float32(_INT_MAX.get(info.dtype, 1.0)))  # as read_image computes it


def read_image(path: PathLike) -> tuple[np.ndarray, ImageInfo]:
    """Read an image (PNG, JPEG, BMP, WebP, AVIF, TIFF, ``.npy`` or HEIC) with dtype-aware scaling.

    ``.npy`` layout rule: ``(H, W)`` is one channel; a 3-D array is ``(H, W, C)`` when its last axis has at most 16
    entries and fewer than both others, or at most 4 and its first more than 4, otherwise ``(C, H, W)``. TIFF: every
    axis other than Y and X (pages, samples) becomes a channel, pages outermost.

    Args:
        path: the file; the format follows the extension (``.png``, ``.jpg``/``.jpeg``, ``.bmp``, ``.webp``,
            ``.avif``, ``.tif``/``.tiff``, ``.npy``, ``.heic``/``.heif``).

    Returns:
        ``(image, info)``: ``image: (C, H, W) float32``, in [0, 1] for integer files (uint8 / 255,
        uint16 / 65535), as stored for float files; ``info``: see :class:`ImageInfo`.

    Raises:
        ImageReadError: missing file, unknown extension, corrupt or truncated file, not an image, empty array,
            unsupported dtype (bool, complex, int64... in ``.npy``), NaN/inf in float data, wrong number of dims,
            several TIFF series, an AVIF of more than 8 bits or without a Pillow that reads AVIF.
        ImportError: Pillow (PNG/JPEG/BMP/WebP/AVIF), imagecodecs (16-bit colour PNG) or tifffile (TIFF) is not
            installed.

    Example:
        >>> image, info = read_image("scan.tif")  # doctest: +SKIP
        >>> write_image("denoised.tif", image, info)  # doctest: +SKIP
    """
    arr, info = _read_raw(path, _IMAGE_DTYPES)
    if info.dtype in _INT_MAX:
        image = arr.astype(np.float32) / np.float32(_INT_MAX[info.dtype])
    else:
        with np.errstate(over="ignore"):
            image = arr.astype(np.float32)
        if np.isinf(image).any():
            raise ImageReadError(f"{path}: float data exceeds the float32 range")
    return image, info


def write_image(path: PathLike, image: np.ndarray | torch.Tensor, info_or_dtype: ImageInfo | str | np.dtype | type,
                *, quality: int = 95) -> None:
    """Write ``image`` at a given bit depth, atomically; the format follows the extension.

    Integer files store ``round(image * 255)`` (uint8) or ``round(image * 65535)`` (uint16), clipped to the range;
    float files store the values unclipped. With an :class:`ImageInfo` the dtype is ``info.dtype``; ``.npy`` keeps
    ``info.layout`` and TIFF ``info.mode`` (RGB(A) or CMYK contiguous, or one plane per channel) and GeoTIFF tags.

    Args:
        path: destination (``.png``, ``.jpg``/``.jpeg``, ``.bmp``, ``.webp`` (lossless), ``.avif``,
            ``.tif``/``.tiff``, ``.npy``, ``.heic``/``.heif`` (with pillow-heif)).
        image: ``(C, H, W)`` float (numpy or torch), [0, 1] for integer dtypes.
        info_or_dtype: the :class:`ImageInfo` of the source file, or a dtype (``"uint8"``, ``"uint16"``,
            ``"float32"``...).
        quality: JPEG, HEIC and AVIF quality in [1, 100].

    Raises:
        TypeError: ``image`` not a float array/tensor.
        ValueError: ``image`` not ``(C, H, W)`` or not finite; unsupported extension or dtype; a combination the
            format cannot store (JPEG: 8-bit, 1 or 3 channels (4 for CMYK); PNG: 8 or 16-bit with 1-4 channels;
            BMP: 8-bit, 1 or 3 channels; WebP: 8-bit, 3 or 4 channels; AVIF: 8-bit, 1, 3 or 4 channels; HEIC: 8
            or 16-bit, 1, 3 or 4 channels;
            ``.npy`` ``"HW"`` layout with several channels); ``quality`` outside [1, 100]; HEIC without pillow-heif;
            AVIF without a Pillow that writes it.
    """
    path = Path(path)
    image = _to_numpy("image", image, 3, "(C, H, W)", nan=isinstance(info_or_dtype, ImageInfo)
                      and math.isnan(nodata_value(info_or_dtype) or 0.0))
    fmt = IMAGE_EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported extension {path.suffix!r} (expected one of "
                         f"{', '.join(IMAGE_EXTENSIONS)})")
    info = info_or_dtype if isinstance(info_or_dtype, ImageInfo) else None
    try:
        if info_or_dtype is None:  # np.dtype(None) would silently mean float64
            raise TypeError
        dtype = np.dtype(info.dtype if info is not None else info_or_dtype)
    except TypeError:
        raise ValueError(f"`info_or_dtype` must be an ImageInfo or a dtype, got {info_or_dtype!r}") from None
    if dtype.name not in _IMAGE_DTYPES:
        raise ValueError(f"{path}: cannot write dtype {dtype.name} (expected {', '.join(_IMAGE_DTYPES)})")
    C, H, W = image.shape
    scale = _INT_MAX.get(dtype.name, 1.0)
    data = _quantise(image.astype(np.float64) * scale, dtype) if scale != 1.0 else image.astype(dtype)
    if fmt in PILLOW_FORMATS:
        if info is not None and info.mode == "CMYK" and fmt != "jpeg":
            raise ValueError(f"{path}: a CMYK image cannot be stored as {fmt.upper()} (no CMYK mode); write .jpg or "
                             ".tif")
        if fmt == "jpeg":
            cmyk = C == 4 and info is not None and info.mode == "CMYK"
            if dtype.name != "uint8" or not (C in (1, 3) or cmyk):
                raise ValueError(f"{path}: JPEG stores 8-bit images with 1 or 3 channels (4 for CMYK), got "
                                 f"{dtype.name} with {C} channels (write .png, .tif or .npy)")
            _check_quality(quality)
            mode = "CMYK" if cmyk else _MODES[C]
        elif fmt in ("bmp", "webp", "avif"):
            channels = {"bmp": (1, 3), "webp": (3, 4), "avif": (1, 3, 4)}[fmt]  # what Pillow writes and reads back
            if dtype.name != "uint8" or C not in channels:
                raise ValueError(f"{path}: {_FORMAT_NAMES[fmt]} stores 8-bit images with "
                                 f"{', '.join(map(str, channels[:-1]))} or {channels[-1]} channels, got {dtype.name} "
                                 f"with {C} channel{'s' * (C != 1)} (write .png, .tif or .npy)")
            if fmt == "avif":
                _check_quality(quality)
                _check_avif_support(path, ValueError)
            mode = _MODES[C]
        elif dtype.name == "uint8" and C <= 4:
            mode = _MODES[C]
        elif dtype.name == "uint16" and C == 1:
            mode = "I;16"
        elif dtype.name == "uint16" and C <= 4:  # Pillow has no 16-bit colour modes
            imagecodecs = _import_imagecodecs("16-bit colour PNG files")
            encoded = imagecodecs.png_encode(np.ascontiguousarray(data.transpose(1, 2, 0)))  # (C, H, W) -> (H, W, C)
            encoded = _with_png_metadata(encoded, info.metadata if info is not None else ())
            atomic_write(path, lambda tmp: Path(tmp).write_bytes(encoded))
            return
        else:
            raise ValueError(f"{path}: PNG stores uint8 or uint16 with 1-4 channels, got {dtype.name} with {C} "
                             "channels (write .tif or .npy)")
        Image = _import_pil()
        pixels = data[0] if C == 1 else data.transpose(1, 2, 0)  # (C, H, W) -> (H, W) or (H, W, C)
        pixels = pixels.astype("<u2") if mode == "I;16" else pixels
        im = Image.frombytes(mode, (W, H), np.ascontiguousarray(pixels).tobytes())
        # WebP lossless and exact (colour kept under transparent alpha), so read -> write -> read is exact; AVIF
        # lossy as JPEG, with full-resolution colour (Pillow's default halves it)
        options = {"jpeg": {"quality": quality}, "webp": {"lossless": True, "exact": True},
                   "avif": {"quality": quality, "subsampling": "4:4:4" if C > 1 else "4:0:0"}}.get(fmt, {})
        if info is not None:
            options.update((k, v) for k, v in info.metadata if k in _PILLOW_METADATA[fmt])
        atomic_write(path, lambda tmp: im.save(tmp, format=fmt.upper(), **options))
    elif fmt == "tiff":
        if info is None:
            _write_tiff(path, data, _mode_of(C), ())
        else:
            tags, resolution = _tiff_metadata_tags(info.metadata)
            _write_tiff(path, data, info.mode, info.tiff_tags + tags, info.tiff_compression, resolution,
                        info.tiff_tile, info.tiff_overviews, alpha=dict(info.metadata).get("tiff_alpha", 2),
                        planar=info.format == "tiff" and info.layout == "CHW")
    elif fmt == "heif":
        _write_heif(path, data, info, quality)
    elif fmt == "npy":
        layout = info.layout if info is not None else "CHW"
        if layout == "HW" and C != 1:
            raise ValueError(f"{path}: layout 'HW' of `info` holds one channel, got {C}")
        out = data[0] if layout == "HW" else data.transpose(1, 2, 0) if layout == "HWC" else data
        # (1, H, W) -> (H, W); (C, H, W) -> (H, W, C)
        atomic_write(path, lambda tmp: np.save(tmp, np.ascontiguousarray(out)))
    else:  # unreachable: IMAGE_EXTENSIONS only maps to the formats above
        raise ValueError(f"{path}: unsupported format {fmt!r}")


# ----------------------------------------------------------------------------------------------------------- stacks


def _band_files(path_or_paths: PathLike | Sequence[PathLike]) -> tuple[list[Path], bool]:
    """The files to read and whether each is one band (a folder or a list) rather than one multi-band file."""
    if isinstance(path_or_paths, (str, os.PathLike)):
        path = Path(path_or_paths)
        if path.is_dir():
            files = sorted((p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                            and p.suffix.lower() in TIFF_EXTENSIONS), key=lambda p: natural_key(p.name))
            if not files:
                raise ImageReadError(f"{path}: no TIFF files ({', '.join(TIFF_EXTENSIONS)}) in this folder")
            return files, True
        if not split_variable(path)[0].exists():
            raise ImageReadError(f"{path}: file or folder not found")
        return [path], False
    files = [Path(p) for p in path_or_paths]
    if not files:
        raise ValueError("`path_or_paths` is an empty list of band files")
    return files, True


def _valid_values(band: np.ndarray, nodata: float | None) -> np.ndarray:
    """The pixels of ``band`` that are not ``nodata`` (nor NaN, where there is a nodata value)."""
    return band[(band != nodata) & ~np.isnan(band)] if nodata is not None else band


def _band_scaling(band: np.ndarray, name: str, scaling: str, percentiles: tuple[float, float],
                  nodata: float | None) -> tuple[float, float]:
    """``(offset, scale)`` of one band (file units); ``nodata`` pixels are left out of the statistics."""
    if scaling == "dtype":
        if band.dtype.name not in _IMAGE_DTYPES:
            raise ImageReadError(f"{name}: dtype {band.dtype.name} has no natural [0, 1] scale; use "
                                 "scaling='band_minmax', 'band_percentile' or 'stack_minmax'")
        return 0.0, _INT_MAX.get(band.dtype.name, 1.0)
    values = _valid_values(band, nodata)
    if values.size == 0:  # all nodata: identity
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    if scaling == "band_percentile":  # else "band_minmax" (read_stack checked the name)
        p_lo, p_hi = (float(v) for v in np.percentile(values, percentiles))
        if p_hi > p_lo:  # else (a nearly constant band) fall back to min/max
            lo, hi = p_lo, p_hi
    return lo, (hi - lo) if hi > lo else 1.0


def read_stack(path_or_paths: PathLike | Sequence[PathLike], scaling: StackScaling = "dtype", *,
               percentiles: tuple[float, float] = (1.0, 99.0)) -> tuple[np.ndarray, StackInfo]:
    """Read a multispectral stack with per-band scaling.

    Sources:

    - one file (GeoTIFF with bands as pages or samples, or any :func:`read_image` format): its channels are the
      bands;
    - a MATLAB ``.mat`` file (its one 3-D array, or ``"scene.mat:variable"``), an ENVI header ``scene.hdr`` (beside
      its data file) or a NIfTI volume (``.nii``, ``.nii.gz``; its slices), the containers of hyperspectral and
      medical data: see :mod:`xmodal.stackio`;
    - a folder: every ``.tif``/``.tiff`` in it (hidden files skipped), one band each, in natural order
      (``l8_B1.tif``, ``l8_B2.tif``, ..., ``l8_B9.tif``, ``l8_B10.tif``);
    - a list of single-band files, in the order given.

    Scaling (``stack = (value - offset) / scale`` per band; ``nodata`` pixels (GDAL tag) are left out of the
    statistics; no clipping, so :func:`write_stack` restores integer files exactly):

    - ``"dtype"``: offset 0, scale 255 (uint8), 65535 (uint16) or 1 (float): as :func:`read_image`;
    - ``"band_minmax"``: offset = band minimum, scale = maximum - minimum: each band spans [0, 1];
    - ``"stack_minmax"``: one offset and scale for all bands, from their minimum and maximum together: the bands keep
      their relative levels (slices of a volume; the whole-cube normalisation of hyperspectral benchmarks);
    - ``"band_percentile"``: offset and offset + scale = the band's ``percentiles``: robust to hot pixels; values
      beyond the percentiles fall outside [0, 1]. A band whose percentiles coincide falls back to min/max.

    A constant band gets scale 1 (its values map to 0).

    Args:
        path_or_paths: a file, a folder, or a list of files.
        scaling: one of the rules above.
        percentiles: ``(low, high)`` in [0, 100] for ``"band_percentile"``.

    Returns:
        ``(stack, info)``: ``stack: (S, H, W) float32``; ``info``: a :class:`StackInfo`.

    Raises:
        ImageReadError: anything :func:`read_image` refuses; a missing path; a folder without TIFF files; a
            multi-band file in a folder or list; bands of different sizes (naming both files and shapes);
            ``"dtype"`` scaling of signed integer bands; bands of 32/64-bit integers.
        ValueError: unknown ``scaling``, bad ``percentiles``, an empty list.

    Example:
        >>> stack, info = read_stack("scene/", scaling="band_percentile")  # doctest: +SKIP
        >>> write_stack("denoised/", denoised_stack, info)  # doctest: +SKIP
    """
    if scaling not in get_args(StackScaling):
        raise ValueError(f"`scaling` must be one of {get_args(StackScaling)}, got {scaling!r}")
    lo_p, hi_p = (float(v) for v in percentiles)
    if not 0.0 <= lo_p < hi_p <= 100.0:
        raise ValueError(f"`percentiles` must be (low, high) with 0 <= low < high <= 100, got {percentiles!r}")
    read = _read_bands(path_or_paths)
    bands, names, nodata, files, per_file = read.bands, read.names, read.nodata, read.files, read.per_file
    stack = np.empty((len(bands), *bands[0].shape), dtype=np.float32)  # (S, H, W)
    offsets, scales = [], []
    shared = None
    if scaling == "stack_minmax":  # one offset and scale for every band: their min and max together
        valid = [v for v in (_valid_values(b, n) for b, n in zip(bands, nodata)) if v.size]
        lo = min((float(v.min()) for v in valid), default=0.0)
        hi = max((float(v.max()) for v in valid), default=1.0)
        shared = (lo, (hi - lo) if hi > lo else 1.0)
    for i, band in enumerate(bands):
        offset, scale = shared or _band_scaling(band, str(files[i] if per_file else files[0]), scaling,
                                                (lo_p, hi_p), nodata[i])
        stack[i] = (band.astype(np.float64) - offset) / scale
        offsets.append(offset)
        scales.append(scale)
    info = StackInfo(scaling=scaling, offset=tuple(offsets), scale=tuple(scales),
                     dtype=tuple(b.dtype.name for b in bands), band_names=tuple(names),
                     files=tuple(str(f) for f in files), shape=(len(bands), *bands[0].shape),  # type: ignore[arg-type]
                     percentiles=(lo_p, hi_p) if scaling == "band_percentile" else None, nodata=tuple(nodata),
                     tiff_tags=read.tiff_tags, tiff_compression=read.compression, interleaved=read.interleaved,
                     tiff_tile=read.tile, tiff_overviews=read.overviews, container=read.container)
    return stack, info


def read_stack_values(path_or_paths: PathLike | Sequence[PathLike]) -> tuple[np.ndarray, tuple[float | None, ...]]:
    """The values a stack's files hold, unscaled: ``(values: (S, H, W) float64, nodata)``, ``nodata`` the bands'
    GDAL nodata values (``None`` where there is none). Sources and errors as :func:`read_stack`; a NIfTI volume's
    stored values (before ``scl_slope``/``scl_inter``)."""
    read = _read_bands(path_or_paths)
    return np.stack([band.astype(np.float64) for band in read.bands]), tuple(read.nodata)


@dataclass
class _Bands:
    """The bands of a stack as stored, with what :class:`StackInfo` keeps of their files."""

    bands: list[np.ndarray]
    names: list[str]
    nodata: list[float | None]
    files: list[Path]
    per_file: bool
    tiff_tags: tuple[TiffTag, ...]
    compression: tuple[int, int]
    tile: tuple[int, int] | None
    overviews: tuple[int, ...]
    interleaved: bool
    container: StackContainer | None


def _read_bands(path_or_paths: PathLike | Sequence[PathLike]) -> _Bands:
    """Read every band of a stack (see :func:`read_stack` for the sources and errors) in its stored dtype."""
    files, per_file = _band_files(path_or_paths)
    bands: list[np.ndarray] = []
    names: list[str] = []
    nodata: list[float | None] = []
    tiff_tags: tuple[TiffTag, ...] = ()
    compression, tile, overviews = (1, 1), None, ()
    interleaved = False
    container = None
    for f in files:
        if is_container(f):
            if per_file:
                raise ImageReadError(f"{f}: a list of band files takes TIFFs; read a .mat, .hdr or NIfTI stack on its "
                                     "own")
            arr, container, container_nodata, container_names = read_container(f)
            if arr.size == 0:
                raise ImageReadError(f"{f}: empty array of shape {arr.shape}")
            _check_values(f, arr, _STACK_DTYPES, container_nodata, "")
            bands.extend(arr)
            names.extend(container_names or [f"band_{i + 1:02d}" for i in range(arr.shape[0])])
            nodata.extend([container_nodata] * arr.shape[0])
            interleaved = container.format == "mat" or container.interleave == "bip"  # stored bands last
            continue
        arr, info = _read_raw(f, _STACK_DTYPES)
        if not bands:
            tiff_tags, compression, tile, overviews = (info.tiff_tags, info.tiff_compression, info.tiff_tile,
                                                       info.tiff_overviews)
            interleaved = not per_file and info.layout == "HWC" and arr.shape[0] > 1
        if per_file and arr.shape[0] != 1:
            raise ImageReadError(f"{f}: has {arr.shape[0]} bands; a folder or list of band files needs "
                                 "single-band files")
        if bands and arr.shape[-2:] != bands[0].shape[-2:]:
            raise ImageReadError(f"{f}: shape {arr.shape[-2:]} differs from {files[0]}: {bands[0].shape[-2:]}; "
                                 "all bands must have the same size")
        bands.extend(arr)  # (C, H, W) -> C bands of (H, W)
        names.extend([f.stem] if per_file else [f"band_{i + 1:02d}" for i in range(arr.shape[0])])
        nodata.extend([_nodata(info.tiff_tags)] * arr.shape[0])
    return _Bands(bands, names, nodata, list(files), per_file, tiff_tags, compression, tile, overviews, interleaved,
                  container)


def check_stack_destination(path: PathLike, info: StackInfo) -> None:
    """``ValueError`` naming ``path`` when :func:`write_stack` could not write ``info``'s bands there: bands of
    several dtypes into one file, a dtype an ENVI raster cannot hold. Cheap: call it before the work that makes the
    stack."""
    path = Path(path)
    suffix = stack_suffix(path)
    if suffix in (*TIFF_EXTENSIONS, ".npy", *CONTAINER_EXTENSIONS) and len(set(info.dtype)) != 1:
        raise ValueError(f"{path}: one file holds one dtype, but the bands have {sorted(set(info.dtype))}; "
                         "write to a folder instead")
    if suffix == ".hdr":
        check_envi_dtype(path, info.dtype[0])
    if suffix in NIFTI_EXTENSIONS and (info.container is None or info.container.format != "nifti"):
        check_nifti_dtype(path, info.dtype[0])  # a new file (a NIfTI source's own dtype always fits)


def write_stack(path_or_dir: PathLike, stack: np.ndarray | torch.Tensor, info: StackInfo) -> None:
    """Undo the scaling of :func:`read_stack` and write the bands in their original dtypes, atomically.

    ``value = stack * scale + offset`` per band, rounded and clipped for integer bands (so an unchanged stack
    writes back the original integers); in float bands, pixels holding the band's scaled GDAL ``nodata`` value (as
    :func:`read_stack` gives it) get exactly ``nodata``. The destination decides the layout:

    - ``*.tif``/``*.tiff``: one multi-band TIFF (one page, one plane per band; a 2-D TIFF for one band) with
      ``info``'s GeoTIFF tags and compression;
    - ``*.npy``: one ``(S, H, W)`` array (``(H, W, S)`` when the source stored its bands last);
    - ``*.mat``, ``*.hdr``: a MATLAB file or an ENVI raster (:mod:`xmodal.stackio`): a source of the same format
      is written back as it was (its other variables, its header fields...);
    - a path without extension: a folder with one ``{band_name}.tif`` per band (created if needed; other files in
      it are left alone).

    Args:
        path_or_dir: destination file or folder.
        stack: ``(S, H, W)`` float (numpy or torch) in the scaled domain of ``info``.
        info: the :class:`StackInfo` returned by :func:`read_stack`.

    Raises:
        TypeError: ``stack`` not a float array/tensor.
        ValueError: ``stack`` not ``(S, H, W)``, not finite, or ``S`` differs from the bands in ``info``; one
            file asked for bands of different dtypes; a folder asked for bands with the same name; unsupported
            extension.
    """
    path = Path(path_or_dir)
    nan_bands = [n is not None and math.isnan(n) for n in info.nodata]
    stack = _to_numpy("stack", stack, 3, "(S, H, W)", nan=any(nan_bands))
    if any(np.isnan(band).any() for band, nan in zip(stack, nan_bands) if not nan):
        raise ValueError("`stack` contains NaN in a band whose nodata value is not NaN")
    S = stack.shape[0]
    if S != len(info.offset):
        raise ValueError(f"`stack` has {S} bands but `info` describes {len(info.offset)}")
    bands = [_quantise(stack[i].astype(np.float64) * info.scale[i] + info.offset[i], np.dtype(info.dtype[i]))
             for i in range(S)]
    for i, nodata in enumerate(info.nodata):  # float bands: nodata exactly (integers are exact once rounded)
        if nodata is not None and len(info.nodata) == S and bands[i].dtype.kind == "f":
            bands[i][stack[i] == np.float32((nodata - info.offset[i]) / info.scale[i])] = nodata
    suffix = stack_suffix(path)
    check_stack_destination(path, info)
    if suffix in TIFF_EXTENSIONS or suffix in (".npy", *CONTAINER_EXTENSIONS):
        data = np.stack(bands)  # S x (H, W) -> (S, H, W)
        if suffix in CONTAINER_EXTENSIONS:
            shared = set(info.nodata)
            write_container(path, data, info.container, shared.pop() if len(shared) == 1 else None,
                            info.band_names)
        elif suffix == ".npy":
            out = data.transpose(1, 2, 0) if info.interleaved else data  # (S, H, W) -> (H, W, S) as read
            atomic_write(path, lambda tmp: np.save(tmp, np.ascontiguousarray(out)))
        else:
            _write_tiff(path, data, "interleaved" if info.interleaved else "multiband", info.tiff_tags,
                        info.tiff_compression, tile=info.tiff_tile, overviews=info.tiff_overviews)
    elif suffix == "":
        repeated = sorted({n for n in info.band_names if info.band_names.count(n) > 1})
        if repeated:
            raise ValueError(f"{path}: band names {repeated} repeat, so their files would overwrite each other; "
                             "write one .tif or .npy file instead")
        for name, band in zip(info.band_names, bands):
            # (H, W) -> (1, H, W)
            _write_tiff(path / f"{name}.tif", band[None], "L", info.tiff_tags, info.tiff_compression,
                        tile=info.tiff_tile, overviews=info.tiff_overviews)
    else:
        raise ValueError(f"{path}: expected a .tif/.tiff/.npy/.mat/.hdr/.nii/.nii.gz file or a folder (no extension), "
                         f"got {suffix!r}")
