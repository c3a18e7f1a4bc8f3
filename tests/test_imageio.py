"""Image and band-stack I/O: exact round trips per format and bit depth, per-band scaling, every error message.

All files are generated in ``tmp_path``. Originals are written with Pillow / tifffile / numpy directly, so the reader
is checked against the reference writers and the writer against the reference readers.
"""

from __future__ import annotations

import dataclasses
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, ImageCms

from xmodal import imageio
from xmodal.imageio import (
    IMAGE_EXTENSIONS,
    ImageInfo,
    ImageReadError,
    alpha_channels,
    natural_key,
    read_image,
    read_stack,
    write_image,
    write_stack,
)

H, W = 37, 31  # odd sizes
GEO_TAGS = [(33550, 12, 3, (30.0, 30.0, 0.0), True), (33922, 12, 6, (0.0, 0.0, 0.0, 5e5, 4e6, 0.0), True),
            (34735, 3, 8, (1, 1, 0, 1, 1024, 0, 1, 1), True), (34737, 2, 0, "WGS 84|", True)]


def ints(shape: tuple[int, ...], dtype: str, seed: int = 0) -> np.ndarray:
    """Random integers over the full range of ``dtype`` (extremes included)."""
    info = np.iinfo(dtype)
    a = np.random.default_rng(seed).integers(info.min, int(info.max) + 1, size=shape, dtype=dtype)
    a.flat[0], a.flat[-1] = info.min, info.max
    return a


def floats(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """float32 values beyond [0, 1] too (float files are kept as they are)."""
    return (np.random.default_rng(seed).standard_normal(shape) * 3).astype(np.float32)


def pil_save(path: Path, arr: np.ndarray, mode: str, **kwargs) -> Path:
    """Save ``(H, W)`` or ``(H, W, C)`` with Pillow."""
    data = arr.astype("<u2") if mode == "I;16" else arr
    Image.frombytes(mode, (arr.shape[1], arr.shape[0]), np.ascontiguousarray(data).tobytes()).save(path, **kwargs)
    return path


def pil_load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im)


def png16(path: Path, arr: np.ndarray, colour_type: int) -> Path:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit colour)."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[i].astype(">u2").tobytes() for i in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


def smooth_rgb() -> np.ndarray:
    """``(H, W, 3)`` uint8 gradients: JPEG keeps them within a few levels."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([x * 255 // (W - 1), y * 255 // (H - 1), (x + y) * 255 // (H + W - 2)], -1).astype(np.uint8)


# ------------------------------------------------------------------------------------------------------------- PNG


@pytest.mark.parametrize("channels, mode", [(1, "L"), (2, "LA"), (3, "RGB"), (4, "RGBA")])
def test_png_8bit_round_trip(tmp_path, channels, mode):
    stored = ints((H, W) if channels == 1 else (H, W, channels), "uint8")
    src = pil_save(tmp_path / "a.png", stored, mode)
    image, info = read_image(src)
    assert image.shape == (channels, H, W) and image.dtype == np.float32
    chw = stored[None] if channels == 1 else stored.transpose(2, 0, 1)
    np.testing.assert_array_equal(image, chw.astype(np.float32) / 255)
    assert info == ImageInfo("png", "uint8", 8, channels, mode, stored.shape, "HW" if channels == 1 else "HWC")
    write_image(tmp_path / "b.png", image, info)
    np.testing.assert_array_equal(pil_load(tmp_path / "b.png"), stored)  # exact integers
    again, info2 = read_image(tmp_path / "b.png")
    np.testing.assert_array_equal(again, image)
    assert info2 == info


def test_png_16bit_gray_round_trip(tmp_path):
    stored = ints((H, W), "uint16")
    src = pil_save(tmp_path / "a.png", stored, "I;16")
    image, info = read_image(src)
    assert (info.dtype, info.bit_depth, info.channels, info.mode) == ("uint16", 16, 1, "L")
    np.testing.assert_array_equal(image[0], stored.astype(np.float32) / 65535)  # not reduced to 8 bits
    assert len(np.unique(image)) > 256
    write_image(tmp_path / "b.png", image, info)
    with Image.open(tmp_path / "b.png") as im:
        assert im.mode.startswith("I;16")
        np.testing.assert_array_equal(np.array(im), stored)
    np.testing.assert_array_equal(read_image(tmp_path / "b.png")[0], image)
    write_image(tmp_path / "c.png", torch.from_numpy(image), "uint16")  # a dtype instead of an info, torch input
    np.testing.assert_array_equal(pil_load(tmp_path / "c.png"), stored)


def test_png_palette_and_1bit_are_expanded(tmp_path):
    rgb = smooth_rgb()
    pal = Image.frombytes("RGB", (W, H), rgb.tobytes()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(tmp_path / "p.png")
    image, info = read_image(tmp_path / "p.png")
    assert info.mode == "RGB" and image.shape == (3, H, W)
    np.testing.assert_array_equal(image, np.array(pal.convert("RGB")).transpose(2, 0, 1) / np.float32(255))
    bits = np.random.default_rng(0).integers(0, 2, (H, W)).astype(bool)
    Image.fromarray(bits).save(tmp_path / "b.png")
    image, info = read_image(tmp_path / "b.png")
    assert info.mode == "L" and info.dtype == "uint8"
    np.testing.assert_array_equal(image[0], bits.astype(np.float32))


# ------------------------------------------------------------------------------------------------------------ JPEG


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_round_trip_is_close(tmp_path, channels):
    stored = smooth_rgb() if channels == 3 else smooth_rgb()[..., 0]
    src = pil_save(tmp_path / "a.jpg", stored, "RGB" if channels == 3 else "L", quality=95)
    image, info = read_image(src)
    assert image.shape == (channels, H, W) and image.dtype == np.float32
    assert (info.format, info.dtype, info.bit_depth) == ("jpeg", "uint8", 8)
    chw = (stored[None] if channels == 1 else stored.transpose(2, 0, 1)) / 255
    assert np.abs(image - chw).mean() < 0.01 and np.abs(image - chw).max() < 0.1  # lossy
    write_image(tmp_path / "b.jpeg", image, info)
    again, info2 = read_image(tmp_path / "b.jpeg")
    assert again.shape == image.shape and info2.format == "jpeg"
    assert np.abs(again - image).mean() < 0.01


def test_jpeg_cmyk_keeps_four_channels(tmp_path):
    cmyk = np.concatenate([smooth_rgb(), smooth_rgb()[..., :1]], axis=-1)
    src = pil_save(tmp_path / "a.jpg", cmyk, "CMYK", quality=95)
    image, info = read_image(src)
    assert info.mode == "CMYK" and image.shape == (4, H, W)
    write_image(tmp_path / "b.jpg", image, info)
    with Image.open(tmp_path / "b.jpg") as im:
        assert im.mode == "CMYK"
    write_image(tmp_path / "c.tif", image, info)  # a CMYK (separated) TIFF, exact
    with tifffile.TiffFile(tmp_path / "c.tif") as tif:
        assert int(tif.pages[0].photometric) == 5 and tif.series[0].shape == (H, W, 4)
    again, info2 = read_image(tmp_path / "c.tif")
    assert (info2.mode, info2.channels, info2.format) == ("CMYK", 4, "tiff")
    np.testing.assert_array_equal(again, image)
    for ext in ("png", "bmp", "webp"):  # no CMYK mode: refused rather than written as RGBA
        with pytest.raises(ValueError, match=rf"d.{ext}: a CMYK image cannot be stored as {ext.upper()} \(no CMYK "
                                             r"mode\); write .jpg or .tif"):
            write_image(tmp_path / f"d.{ext}", image, info)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "b.jpg", "c.tif"]


# ------------------------------------------------------------------------------------------------------ BMP, WebP


@pytest.mark.parametrize("ext, channels, mode", [(".bmp", 1, "L"), (".bmp", 3, "RGB"), (".webp", 3, "RGB"),
                                                 (".webp", 4, "RGBA")])
def test_bmp_and_lossless_webp_round_trip(tmp_path, ext, channels, mode):
    stored = ints((H, W) if channels == 1 else (H, W, channels), "uint8")
    src = pil_save(tmp_path / f"a{ext}", stored, mode, **({"lossless": True, "exact": True} if ext == ".webp" else {}))
    image, info = read_image(src)
    chw = stored[None] if channels == 1 else stored.transpose(2, 0, 1)
    np.testing.assert_array_equal(image, chw.astype(np.float32) / 255)
    with Image.open(src) as im:  # Pillow writes BMPs with a resolution (96 dpi), WebPs without
        meta = (("dpi", tuple(float(v) for v in im.info["dpi"])),) if ext == ".bmp" else ()
    assert info == ImageInfo(ext[1:], "uint8", 8, channels, mode, stored.shape, "HW" if channels == 1 else "HWC",
                             metadata=meta)
    write_image(tmp_path / f"b{ext}", image, info)  # WebP is written lossless: the same integers come back
    with Image.open(tmp_path / f"b{ext}") as im:
        assert im.format == ext[1:].upper() and im.mode == mode
        np.testing.assert_array_equal(np.array(im), stored)
    again, info2 = read_image(tmp_path / f"b{ext}")
    np.testing.assert_array_equal(again, image)
    assert info2 == info


def test_lossy_webp_and_palette_bmp_are_read(tmp_path):
    rgb = smooth_rgb()
    pil_save(tmp_path / "a.webp", rgb, "RGB", quality=90)  # lossy, as most WebP files are
    image, info = read_image(tmp_path / "a.webp")
    assert (info.format, info.mode, image.shape) == ("webp", "RGB", (3, H, W))
    np.testing.assert_array_equal(image, pil_load(tmp_path / "a.webp").transpose(2, 0, 1) / np.float32(255))
    assert np.abs(image - rgb.transpose(2, 0, 1) / 255).mean() < 0.02
    pal = Image.frombytes("RGB", (W, H), rgb.tobytes()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(tmp_path / "p.bmp")
    image, info = read_image(tmp_path / "p.bmp")
    assert (info.format, info.mode) == ("bmp", "RGB")
    np.testing.assert_array_equal(image, np.array(pal.convert("RGB")).transpose(2, 0, 1) / np.float32(255))


# -------------------------------------------------------------------------------------------------------- metadata


def test_icc_exif_and_dpi_are_written_back(tmp_path):
    """A phone photo keeps its colour profile and its EXIF orientation (viewers rotate by it), in any format that can
    hold them."""
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to show
    exif[0x010F] = "xmodal test camera"  # make
    src = pil_save(tmp_path / "photo.jpg", smooth_rgb(), "RGB", quality=95, icc_profile=icc, exif=exif.tobytes(),
                   dpi=(300, 300))
    image, info = read_image(src)
    meta = dict(info.metadata)
    assert meta["icc_profile"] == icc and meta["dpi"] == (300.0, 300.0)
    for name, kept in (("a.jpg", ("icc", "exif", "dpi")), ("a.png", ("icc", "exif", "dpi")),
                       ("a.webp", ("icc", "exif")), ("a.bmp", ("dpi",)), ("a.tif", ("icc", "dpi", "orientation"))):
        write_image(tmp_path / name, image, info)
        if name.endswith(".tif"):  # the ICC profile, the dpi and the orientation as TIFF tags (not the camera make)
            with tifffile.TiffFile(tmp_path / name) as tif:
                tags = tif.pages[0].tags
                assert tags[34675].value == icc and tags[274].value == 6 and int(tags[296].value) == 2
                assert tags[282].value[0] / tags[282].value[1] == 300 and tags[283].value[0] / tags[283].value[1] == 300
            tif_info = read_image(tmp_path / name)[1]
            tif_meta = dict(tif_info.metadata)
            assert tif_meta["icc_profile"] == icc and tif_meta["dpi"] == (300.0, 300.0)
            exif_back = Image.Exif()
            exif_back.load(tif_meta["exif"])
            assert dict(exif_back) == {0x0112: 6}
            write_image(tmp_path / "from_tif.jpg", image, tif_info)  # TIFF -> JPEG keeps what the TIFF had
            with Image.open(tmp_path / "from_tif.jpg") as im:
                assert im.getexif().get(0x0112) == 6 and round(im.info["dpi"][0]) == 300
            continue
        with Image.open(tmp_path / name) as im:
            assert (im.info.get("icc_profile") == icc) == ("icc" in kept), name
            assert (im.getexif().get(0x0112), im.getexif().get(0x010F)) == \
                ((6, "xmodal test camera") if "exif" in kept else (None, None)), name
            assert ("dpi" in im.info and round(im.info["dpi"][0]) == 300) == ("dpi" in kept), name
        assert dict(read_image(tmp_path / name)[1].metadata).get("icc_profile") == (icc if "icc" in kept else None)
    write_image(tmp_path / "plain.tif", image, "uint8")  # a dtype instead of an info: nothing to carry
    assert read_image(tmp_path / "plain.tif")[1].metadata == ()
    write_image(tmp_path / "plain.png", image, "uint8")
    with Image.open(tmp_path / "plain.png") as im:
        assert "icc_profile" not in im.info and not len(im.getexif())
    # 16-bit colour PNGs (imagecodecs writes the pixels, xmodal the chunks) keep them too, and read them back
    info16 = dataclasses.replace(info, dtype="uint16", bit_depth=16)
    write_image(tmp_path / "deep.png", image, info16)
    assert imageio._png_header((tmp_path / "deep.png").read_bytes()[:26]) == (16, 2)
    with Image.open(tmp_path / "deep.png") as im:
        assert im.info["icc_profile"] == icc and im.getexif().get(0x0112) == 6 and round(im.info["dpi"][0]) == 300
    again, info2 = read_image(tmp_path / "deep.png")
    np.testing.assert_allclose(again, image, atol=0.5 / 65535)
    meta2 = dict(info2.metadata)
    assert meta2["icc_profile"] == icc and round(meta2["dpi"][0]) == 300
    exif2 = Image.Exif()
    exif2.load(meta2["exif"])
    assert exif2.get(0x0112) == 6 and exif2.get(0x010F) == "xmodal test camera"
    write_image(tmp_path / "deep2.png", again, info2)  # and once more: unchanged
    assert dict(read_image(tmp_path / "deep2.png")[1].metadata) == meta2


# ------------------------------------------------------------------------------------------------------------ TIFF


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("channels", [1, 3, 5, 31])
def test_tiff_round_trip(tmp_path, dtype, channels):
    shape = (H, W) if channels == 1 else (channels, H, W)
    stored = floats(shape) if dtype == "float32" else ints(shape, dtype)
    if channels == 3:  # RGB, samples last
        stored = np.ascontiguousarray(np.moveaxis(stored, 0, -1))
        tifffile.imwrite(tmp_path / "a.tif", stored, photometric="rgb")
    elif channels == 1:
        tifffile.imwrite(tmp_path / "a.tif", stored)
    else:  # bands as planes of one page
        tifffile.imwrite(tmp_path / "a.tif", stored, photometric="minisblack", planarconfig="separate")
    image, info = read_image(tmp_path / "a.tif")
    chw = np.moveaxis(stored, -1, 0) if channels == 3 else stored.reshape(channels, H, W)
    scale = {"uint8": 255, "uint16": 65535, "float32": 1}[dtype]
    np.testing.assert_array_equal(image, chw.astype(np.float32) / np.float32(scale))
    assert (info.format, info.dtype, info.channels, info.shape) == ("tiff", dtype, channels, stored.shape)
    assert info.mode == {1: "L", 3: "RGB"}.get(channels, "multiband")
    write_image(tmp_path / "b.tiff", image, info)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "b.tiff"), stored)  # same integers, same layout
    again, info2 = read_image(tmp_path / "b.tiff")
    np.testing.assert_array_equal(again, image)
    assert info2 == info


def test_tiff_pages_become_channels(tmp_path):
    pages = ints((5, H, W), "uint16")
    tifffile.imwrite(tmp_path / "p.tif", pages, metadata=None)  # 5 pages, no tifffile shape metadata: axes IYX
    image, info = read_image(tmp_path / "p.tif")
    np.testing.assert_array_equal(image, pages / np.float32(65535))
    assert info.layout == "CHW" and info.channels == 5
    rgb_pages = ints((2, H, W, 3), "uint8")
    tifffile.imwrite(tmp_path / "q.tif", rgb_pages, photometric="rgb", metadata=None)  # axes IYXS
    image, info = read_image(tmp_path / "q.tif")
    np.testing.assert_array_equal(image, rgb_pages.transpose(0, 3, 1, 2).reshape(6, H, W) / np.float32(255))


def test_tiff_float64_and_float16(tmp_path):
    for dtype in ("float64", "float16"):
        stored = floats((4, H, W)).astype(dtype)
        tifffile.imwrite(tmp_path / f"{dtype}.tif", stored, photometric="minisblack", planarconfig="separate")
        image, info = read_image(tmp_path / f"{dtype}.tif")
        assert image.dtype == np.float32 and info.dtype == dtype and info.bit_depth == np.dtype(dtype).itemsize * 8
        write_image(tmp_path / f"{dtype}_out.tif", image, info)
        np.testing.assert_array_equal(tifffile.imread(tmp_path / f"{dtype}_out.tif"), stored.astype(np.float32))


def tiff_codes(path: Path) -> tuple[int, int]:
    with tifffile.TiffFile(path) as tif:
        return int(tif.pages[0].compression), int(tif.pages[0].predictor)


@pytest.mark.parametrize("compression, predictor, dtype, channels", [
    ("lzw", 2, "uint16", 1), ("lzw", 1, "uint8", 3), ("zlib", 3, "float32", 5), ("zstd", 2, "uint16", 31),
    ("packbits", 1, "uint8", 1), ("lzma", 1, "uint16", 4)])
def test_tiff_compression_is_kept(tmp_path, compression, predictor, dtype, channels):
    stored = floats((channels, H, W)) if dtype == "float32" else ints((channels, H, W), dtype)
    kwargs = {"photometric": "rgb", "planarconfig": "separate"} if channels == 3 else \
        {"photometric": "minisblack", "planarconfig": "separate"}
    tifffile.imwrite(tmp_path / "a.tif", stored[0] if channels == 1 else stored, compression=compression,
                     predictor=predictor if predictor != 1 else None, **kwargs)
    codes = tiff_codes(tmp_path / "a.tif")
    assert codes[0] != 1 and codes[1] == predictor
    image, info = read_image(tmp_path / "a.tif")
    assert info.tiff_compression == codes
    write_image(tmp_path / "b.tif", image, info)
    assert tiff_codes(tmp_path / "b.tif") == codes  # same codec and predictor
    scale = 1 if dtype == "float32" else np.float32(np.iinfo(dtype).max)
    np.testing.assert_array_equal(image, stored / scale)
    np.testing.assert_array_equal(read_image(tmp_path / "b.tif")[0], image)
    if dtype != "float32":  # stacks keep it too, in one file and in a folder of bands
        stack, sinfo = read_stack(tmp_path / "a.tif")
        assert sinfo.tiff_compression == codes
        write_stack(tmp_path / "c.tif", stack, sinfo)
        write_stack(tmp_path / "bands", stack, sinfo)
        assert tiff_codes(tmp_path / "c.tif") == codes and tiff_codes(tmp_path / "bands" / "band_01.tif") == codes
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "c.tif").reshape(stored.shape), stored)
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "bands" / "band_01.tif"), stored[0])


def tiff_tile(path: Path) -> tuple[int, int] | None:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        return (int(page.tilelength), int(page.tilewidth)) if page.is_tiled else None


@pytest.mark.parametrize("dtype, channels, planar", [("uint16", 1, None), ("uint8", 3, "contig"),
                                                     ("uint16", 5, "separate"), ("float32", 4, "contig")])
def test_tiled_tiff_is_written_back_tiled(tmp_path, dtype, channels, planar):
    """Tiled rasters (Cloud-Optimized GeoTIFFs, most large ones) come back tiled the same way, images and stacks;
    stripped ones stay stripped."""
    stored = floats((channels, H, W)) if dtype == "float32" else ints((channels, H, W), dtype)
    data = stored[0] if channels == 1 else stored.transpose(1, 2, 0) if planar == "contig" else stored
    extra = {"photometric": "rgb" if channels == 3 else "minisblack"}
    if planar:
        extra["planarconfig"] = planar
    tifffile.imwrite(tmp_path / "a.tif", data, tile=(16, 32), compression="zlib", **extra)
    image, info = read_image(tmp_path / "a.tif") if channels <= 4 else (None, None)
    if info is not None:
        assert info.tiff_tile == (16, 32)
        write_image(tmp_path / "b.tif", image, info)
        assert tiff_tile(tmp_path / "b.tif") == (16, 32) and tiff_codes(tmp_path / "b.tif")[0] == 8
        np.testing.assert_array_equal(read_image(tmp_path / "b.tif")[0], image)
    if dtype != "float32":
        stack, sinfo = read_stack(tmp_path / "a.tif")
        assert sinfo.tiff_tile == (16, 32)
        write_stack(tmp_path / "c.tif", stack, sinfo)
        write_stack(tmp_path / "bands", stack, sinfo)
        assert tiff_tile(tmp_path / "c.tif") == (16, 32) and tiff_tile(tmp_path / "bands" / "band_01.tif") == (16, 32)
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "c.tif"), data)
    tifffile.imwrite(tmp_path / "s.tif", data, **extra)  # strips in, strips out
    image, info = read_stack(tmp_path / "s.tif") if channels > 4 else read_image(tmp_path / "s.tif")
    assert info.tiff_tile is None
    (write_stack if channels > 4 else write_image)(tmp_path / "t.tif", image, info)
    assert tiff_tile(tmp_path / "t.tif") is None


def overview_levels(path: Path) -> list[tuple[int, ...]]:
    with tifffile.TiffFile(path) as tif:
        assert all(int(p.subfiletype) == (i > 0) for i, p in enumerate(tif.pages))  # reduced-resolution pages
        return [lvl.shape for lvl in tif.series[0].levels]


@pytest.mark.parametrize("channels", [1, 3, 6])
def test_cog_overviews_are_rebuilt_from_the_output(tmp_path, channels):
    """A Cloud-Optimized GeoTIFF's pyramid comes back at the same factors, tiled and compressed like the image, each
    level the area average of what was written (nodata left out; an area of nodata only stays nodata)."""
    data = ints((channels, 64, 80), "uint16")
    data[:, :8, :8] = 0  # nodata corner: whole 8 x 8 blocks, and a partial one
    data[:, 8:10, 8:12] = 0
    stored = data[0] if channels == 1 else data.transpose(1, 2, 0) if channels == 3 else data
    extra = {"photometric": "rgb"} if channels == 3 else {"photometric": "minisblack", "planarconfig": "separate"}
    extra = extra if channels > 1 else {"photometric": "minisblack"}
    nodata = [(42113, 2, 0, "0", True)]
    with tifffile.TiffWriter(tmp_path / "cog.tif") as tif:
        tif.write(stored, tile=(16, 16), compression="zlib", extratags=nodata, **extra)
        for f in (2, 4, 8):
            tif.write(np.ascontiguousarray(stored[::f, ::f] if channels != 6 else stored[:, ::f, ::f]), tile=(16, 16),
                      compression="zlib", subfiletype=1, **extra)
    out = tmp_path / "out.tif"
    if channels == 6:
        stack, info = read_stack(tmp_path / "cog.tif", "band_minmax")
        assert info.tiff_overviews == (2, 4, 8)
        nodata = stack[:, :1, :1]  # the scaled nodata value of each band, kept
        write_stack(out, np.where(stack == nodata, stack, stack * 0.5), info)  # the pyramid must be the output's
        written = tifffile.imread(out).astype(np.float64)
    else:
        image, info = read_image(tmp_path / "cog.tif")
        assert info.tiff_overviews == (2, 4, 8)
        write_image(out, image * 0.5, info)
        written = read_image(out)[0].astype(np.float64) * 65535
    written = np.rint(written).reshape(channels, 64, 80)  # file values
    levels = overview_levels(out)
    spatial = [lvl[-2:] if channels != 3 else lvl[:2] for lvl in levels]
    assert spatial == [(64, 80), (32, 40), (16, 20), (8, 10)] and tiff_tile(out) == (16, 16)
    with tifffile.TiffFile(out) as tif:
        assert {int(p.compression) for p in tif.pages} == {8} and all(p.is_tiled for p in tif.pages)
        for f, lvl in zip((2, 4, 8), tif.series[0].levels[1:]):
            got = lvl.asarray().astype(np.float64)
            got = got[None] if channels == 1 else got.transpose(2, 0, 1) if channels == 3 else got
            blocks = written.reshape(channels, 64 // f, f, 80 // f, f)
            valid = (blocks != 0).sum(axis=(2, 4))
            mean = np.where(valid > 0, blocks.sum(axis=(2, 4)) / np.maximum(valid, 1), 0)
            np.testing.assert_array_equal(got, np.floor(mean + 0.5))  # halves up, as GDAL rounds
            assert (got[:, : 8 // f, : 8 // f] == 0).all()  # nodata only: nodata
    tifffile.imwrite(tmp_path / "plain.tif", stored, **extra)  # no pyramid in, none out
    image, info = read_stack(tmp_path / "plain.tif") if channels == 6 else read_image(tmp_path / "plain.tif")
    assert info.tiff_overviews == ()
    (write_stack if channels == 6 else write_image)(tmp_path / "plain_out.tif", image, info)
    assert len(overview_levels(tmp_path / "plain_out.tif")) == 1


def test_lossy_tiff_is_written_back_lossless(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", smooth_rgb(), photometric="rgb", compression="jpeg")
    image, info = read_image(tmp_path / "a.tif")
    assert info.tiff_compression[0] == 7 and info.mode == "RGB"
    write_image(tmp_path / "b.tif", image, info)
    assert tiff_codes(tmp_path / "b.tif") == (8, 1)  # Deflate: no second lossy encoding
    np.testing.assert_array_equal(read_image(tmp_path / "b.tif")[0], image)
    assert read_image(tmp_path / "b.tif")[1].tiff_compression == (8, 1)


def test_geotiff_tags_survive_read_and_write(tmp_path):
    stored = ints((3, H, W), "uint16")
    tifffile.imwrite(tmp_path / "g.tif", stored, photometric="minisblack", planarconfig="separate",
                     extratags=GEO_TAGS)
    image, info = read_image(tmp_path / "g.tif")
    assert {t[0] for t in info.tiff_tags} == {33550, 33922, 34735, 34737}
    assert info.mode == "multiband"  # 3 bands, not RGB
    write_image(tmp_path / "h.tif", image, info)
    with tifffile.TiffFile(tmp_path / "h.tif") as tif:
        tags = tif.pages[0].tags
        assert tags[33550].value == (30.0, 30.0, 0.0) and tags[34737].value == "WGS 84|"
        assert tags[34735].value == (1, 1, 0, 1, 1024, 0, 1, 1)
        np.testing.assert_array_equal(tif.asarray(), stored)


# ------------------------------------------------------------------------------------------------------------- npy


@pytest.mark.parametrize("shape, layout", [((H, W), "HW"), ((H, W, 3), "HWC"), ((H, W, 4), "HWC"),
                                           ((5, H, W), "CHW"), ((31, H, W), "CHW"), ((3, 4, 4), "CHW"),
                                           ((H, W, 8), "HWC"), ((H, W, 13), "HWC"), ((31, 20, 18), "CHW"),
                                           ((60, 32, 24), "CHW")])
@pytest.mark.parametrize("dtype", ["float32", "uint16", "uint8", "float64"])
def test_npy_round_trip_and_layout_rule(tmp_path, shape, layout, dtype):
    stored = floats(shape).astype(dtype) if dtype.startswith("float") else ints(shape, dtype)
    np.save(tmp_path / "a.npy", stored)
    image, info = read_image(tmp_path / "a.npy")
    chw = {"HW": lambda a: a[None], "HWC": lambda a: a.transpose(2, 0, 1), "CHW": lambda a: a}[layout](stored)
    scale = {"uint8": 255, "uint16": 65535}.get(dtype, 1)
    np.testing.assert_array_equal(image, chw.astype(np.float32) / np.float32(scale))
    assert (info.layout, info.shape, info.dtype, info.format) == (layout, shape, dtype, "npy")
    write_image(tmp_path / "b.npy", image, info)
    out = np.load(tmp_path / "b.npy")
    assert out.dtype == dtype and out.shape == shape  # same layout back
    np.testing.assert_array_equal(out, stored if dtype != "float64" else stored.astype(np.float32))


def test_npy_big_endian_is_read(tmp_path):
    stored = ints((H, W), "uint16")
    np.save(tmp_path / "be.npy", stored.astype(">u2"))
    image, info = read_image(tmp_path / "be.npy")
    np.testing.assert_array_equal(image[0], stored / np.float32(65535))
    assert info.dtype == "uint16"


def test_write_rounds_and_clips(tmp_path):
    image = np.array([[[-0.2, 0.0, 0.4 / 255, 0.6 / 255, 1.0, 1.3]]], dtype=np.float32)  # (1, 1, 6)
    write_image(tmp_path / "a.npy", image, "uint8")
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy")[0, 0], [0, 0, 0, 1, 255, 255])
    write_image(tmp_path / "b.npy", image, np.float32)  # float: kept unclipped
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), image)
    write_image(tmp_path / "c.tif", torch.from_numpy(image).bfloat16(), "uint16")
    assert tifffile.imread(tmp_path / "c.tif").tolist() == [[0, 0, 103, 154, 65535, 65535]]


def test_write_is_atomic(tmp_path, monkeypatch):
    write_image(tmp_path / "a.npy", np.zeros((1, 2, 2), np.float32), "uint8")
    monkeypatch.setattr(np, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        write_image(tmp_path / "a.npy", np.ones((1, 2, 2), np.float32), "uint8")
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.zeros((1, 2, 2)))  # old file intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]  # no temp file left


# ---------------------------------------------------------------------------------------------------------- stacks


def test_natural_key():
    names = ["l8_B10.tif", "l8_B2.tif", "l8_b1.tif", "l8_B11.tif", "l8_B9.tif", "l8_BQA.tif"]
    assert sorted(names, key=natural_key) == ["l8_b1.tif", "l8_B2.tif", "l8_B9.tif", "l8_B10.tif", "l8_B11.tif",
                                              "l8_BQA.tif"]


@pytest.mark.parametrize("scaling", ["dtype", "band_minmax", "band_percentile"])
@pytest.mark.parametrize("bands", [1, 5, 31])
def test_multiband_tiff_stack_round_trip(tmp_path, scaling, bands):
    stored = ints((bands, H, W), "uint16")
    stored //= np.arange(1, bands + 1, dtype=np.uint16)[:, None, None]  # bands of different ranges
    if bands == 1:
        tifffile.imwrite(tmp_path / "s.tif", stored[0])
    else:
        tifffile.imwrite(tmp_path / "s.tif", stored, photometric="minisblack", planarconfig="separate",
                         extratags=GEO_TAGS)
    stack, info = read_stack(tmp_path / "s.tif", scaling)
    assert stack.shape == (bands, H, W) and stack.dtype == np.float32 and info.shape == (bands, H, W)
    assert info.band_names[0] == "band_01" and len(info.band_names) == bands and info.dtype == ("uint16",) * bands
    np.testing.assert_allclose(stack * np.array(info.scale)[:, None, None] + np.array(info.offset)[:, None, None],
                               stored, atol=1e-2)
    if scaling == "band_minmax":
        np.testing.assert_allclose(stack.min(axis=(1, 2)), 0)
        np.testing.assert_allclose(stack.max(axis=(1, 2)), 1)
    write_stack(tmp_path / "out.tif", stack, info)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), stored.squeeze(0) if bands == 1 else stored)
    write_stack(tmp_path / "out.npy", torch.from_numpy(stack), info)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), stored)
    if bands > 1:
        with tifffile.TiffFile(tmp_path / "out.tif") as tif:
            assert tif.pages[0].tags[33550].value == (30.0, 30.0, 0.0)


def test_pages_stack(tmp_path):
    stored = ints((6, H, W), "uint8")
    tifffile.imwrite(tmp_path / "p.tif", stored, metadata=None)  # bands as pages
    stack, info = read_stack(tmp_path / "p.tif")
    np.testing.assert_array_equal(stack, stored / np.float32(255))
    assert info.offset == (0.0,) * 6 and info.scale == (255.0,) * 6


def make_band_folder(folder: Path, n: int = 11, dtype: str = "uint16") -> dict[str, np.ndarray]:
    """``l8_B1.tif`` ... ``l8_B{n}.tif`` written in a shuffled order; band k holds values around k * 1000."""
    folder.mkdir()
    bands = {}
    for k in np.random.default_rng(0).permutation(np.arange(1, n + 1)):
        band = (ints((H, W), "uint8", seed=int(k)).astype(np.int64) + int(k) * 1000).astype(dtype)
        tifffile.imwrite(folder / f"l8_B{k}.tif", band, extratags=GEO_TAGS)
        bands[f"l8_B{k}"] = band
    return bands


@pytest.mark.parametrize("scaling", ["dtype", "band_minmax", "band_percentile"])
def test_folder_of_bands_natural_order_and_round_trip(tmp_path, scaling):
    bands = make_band_folder(tmp_path / "scene")
    (tmp_path / "scene" / "notes.txt").write_text("not a band")
    (tmp_path / "scene" / ".l8_B1.x.part.tif").write_bytes(b"leftover temp file")  # hidden: skipped
    stack, info = read_stack(tmp_path / "scene", scaling)
    names = [f"l8_B{k}" for k in range(1, 12)]
    assert list(info.band_names) == names  # B10 and B11 after B9
    assert [Path(f).stem for f in info.files] == names
    original = np.stack([bands[n] for n in names])  # (S, H, W)
    restored = stack * np.array(info.scale)[:, None, None] + np.array(info.offset)[:, None, None]
    np.testing.assert_allclose(restored, original, atol=1e-2)
    write_stack(tmp_path / "out", stack, info)  # a folder: one file per band, same names
    for n in names:
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / f"{n}.tif"), bands[n])
    again, info2 = read_stack(tmp_path / "out", scaling)
    np.testing.assert_array_equal(again, stack)
    assert info2.offset == info.offset and info2.scale == info.scale


def test_list_of_band_files_keeps_the_given_order(tmp_path):
    bands = make_band_folder(tmp_path / "scene", n=3)
    files = [tmp_path / "scene" / f"l8_B{k}.tif" for k in (3, 1, 2)]
    stack, info = read_stack(files, "band_minmax")
    assert info.band_names == ("l8_B3", "l8_B1", "l8_B2")
    for i, k in enumerate((3, 1, 2)):
        band = bands[f"l8_B{k}"].astype(np.float64)
        np.testing.assert_allclose(stack[i], (band - band.min()) / (band.max() - band.min()), atol=1e-6)


def test_percentile_scaling_is_robust_and_exact(tmp_path):
    band = np.random.default_rng(0).integers(1000, 2001, (64, 64)).astype(np.uint16)
    band[0, 0], band[0, 1] = 65535, 0  # hot and dead pixels
    tifffile.imwrite(tmp_path / "b.tif", band)
    stack, info = read_stack(tmp_path / "b.tif", "band_percentile", percentiles=(2.0, 98.0))
    lo, hi = np.percentile(band, (2.0, 98.0))
    assert info.offset == (lo,) and info.scale == (hi - lo,) and info.percentiles == (2.0, 98.0)
    assert stack[0, 0, 0] > 10 and stack[0, 0, 1] < 0  # outliers outside [0, 1], not clipped
    assert 0.9 < np.mean((stack >= 0) & (stack <= 1))
    write_stack(tmp_path / "o.tif", stack, info)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "o.tif"), band)


def test_constant_band_and_signed_and_float_bands(tmp_path):
    const = np.full((H, W), 7, np.int16)
    signed = (ints((H, W), "int16"))
    flt = floats((H, W))
    for name, band in (("c", const), ("s", signed)):
        tifffile.imwrite(tmp_path / f"{name}.tif", band)
    stack, info = read_stack([tmp_path / "c.tif", tmp_path / "s.tif"], "band_minmax")
    assert info.scale[0] == 1.0 and info.offset[0] == 7.0 and not stack[0].any()  # constant: scale 1, maps to 0
    assert info.dtype == ("int16", "int16")
    write_stack(tmp_path / "out.tif", stack, info)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), np.stack([const, signed]))
    np.save(tmp_path / "f.npy", flt)
    stack, info = read_stack(tmp_path / "f.npy", "dtype")
    np.testing.assert_array_equal(stack[0], flt)
    stack, info = read_stack(tmp_path / "f.npy", "band_minmax")
    write_stack(tmp_path / "f_out.npy", stack, info)
    np.testing.assert_allclose(np.load(tmp_path / "f_out.npy")[0], flt, rtol=0, atol=1e-6)  # float32 rounding


def test_nodata_is_left_out_of_band_statistics(tmp_path):
    band = np.random.default_rng(0).integers(100, 201, (H, W)).astype(np.int16)
    band[:5] = -9999
    tifffile.imwrite(tmp_path / "n.tif", band, extratags=[*GEO_TAGS, (42113, 2, 0, "-9999", True)])
    stack, info = read_stack(tmp_path / "n.tif", "band_minmax")
    assert info.nodata == (-9999.0,)
    assert info.offset == (float(band[5:].min()),) and info.scale == (float(band[5:].max() - band[5:].min()),)
    write_stack(tmp_path / "o.tif", stack, info)
    with tifffile.TiffFile(tmp_path / "o.tif") as tif:
        np.testing.assert_array_equal(tif.asarray(), band)  # nodata pixels restored exactly
        assert tif.pages[0].tags[42113].value == "-9999"
    tifffile.imwrite(tmp_path / "all.tif", np.full((4, 4), -9999, np.int16), extratags=[(42113, 2, 0, "-9999", True)])
    _, info = read_stack(tmp_path / "all.tif", "band_percentile")
    assert info.offset == (0.0,) and info.scale == (1.0,)  # nothing but nodata: identity
    tifffile.imwrite(tmp_path / "odd.tif", band, extratags=[(42113, 2, 0, "none", True)])
    assert read_stack(tmp_path / "odd.tif", "band_minmax")[1].nodata == (None,)  # unparsable nodata: ignored


def test_stack_with_mixed_dtypes_writes_to_a_folder_only(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", ints((H, W), "uint8"))
    tifffile.imwrite(tmp_path / "b.tif", ints((H, W), "uint16"))
    stack, info = read_stack([tmp_path / "a.tif", tmp_path / "b.tif"])
    assert info.scale == (255.0, 65535.0)
    with pytest.raises(ValueError, match=r"one file holds one dtype, but the bands have \['uint16', 'uint8'\]; "
                                         r"write to a folder instead"):
        write_stack(tmp_path / "o.tif", stack, info)
    write_stack(tmp_path / "dir", stack, info)
    assert tifffile.imread(tmp_path / "dir" / "b.tif").dtype == np.uint16


# ---------------------------------------------------------------------------------------------------- read errors


def test_read_errors_missing_and_extension(tmp_path):
    with pytest.raises(ImageReadError, match=r"nope.png: file not found"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "a.gif").write_bytes(b"GIF89a")
    with pytest.raises(ImageReadError, match=r"a.gif: unsupported extension '.gif' \(expected one of .png, .jpg, "
                                             r".jpeg, .bmp, .webp, .tif, .tiff, .npy, .heic, .heif, .avif\)"):
        read_image(tmp_path / "a.gif")
    assert issubclass(ImageReadError, ValueError)


def test_read_errors_corrupt_files(tmp_path):
    good = pil_save(tmp_path / "good.png", smooth_rgb(), "RGB")
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ImageReadError, match=r"trunc.png: not readable as PNG, JPEG, BMP, WebP or AVIF \(.*truncated"):
        read_image(tmp_path / "trunc.png")
    for name in ("text.jpg", "text.bmp", "text.webp"):
        (tmp_path / name).write_text("hello")
        with pytest.raises(ImageReadError, match=rf"{name}: not readable as PNG, JPEG, BMP, WebP or AVIF "
                                                 r"\(cannot identify"):
            read_image(tmp_path / name)
    (tmp_path / "text.tif").write_text("hello")
    with pytest.raises(ImageReadError, match=r"text.tif: not readable as TIFF \(not a TIFF file"):
        read_image(tmp_path / "text.tif")
    tifffile.imwrite(tmp_path / "t.tif", ints((31, H, W), "uint16"), photometric="minisblack",
                     planarconfig="separate")
    data = (tmp_path / "t.tif").read_bytes()
    (tmp_path / "t.tif").write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageReadError, match=r"t.tif: not readable as TIFF"):
        read_image(tmp_path / "t.tif")
    (tmp_path / "text.npy").write_text("hello")
    with pytest.raises(ImageReadError, match=r"text.npy: not readable as .npy"):
        read_image(tmp_path / "text.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ImageReadError, match=r"obj.npy: not readable as .npy \(Object arrays cannot be loaded"):
        read_image(tmp_path / "obj.npy")


@pytest.mark.parametrize("colour_type, channels, mode", [(2, 3, "RGB"), (4, 2, "LA"), (6, 4, "RGBA")])
def test_png_16bit_colour_round_trip(tmp_path, colour_type, channels, mode):
    """Pillow would reduce these to 8 bits; they are decoded and encoded through imagecodecs, all 16 bits kept."""
    stored = ints((H, W, channels), "uint16", seed=colour_type)
    png16(tmp_path / "a.png", stored, colour_type)  # written by hand: an independent encoder
    image, info = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(image, stored.transpose(2, 0, 1) / np.float32(65535))
    assert info == ImageInfo("png", "uint16", 16, channels, mode, stored.shape, "HWC")
    write_image(tmp_path / "b.png", image, info)
    assert imageio._png_header((tmp_path / "b.png").read_bytes()[:26]) == (16, colour_type)
    again, info2 = read_image(tmp_path / "b.png")
    np.testing.assert_array_equal(again, image)
    assert info2 == info
    with Image.open(tmp_path / "b.png") as im:  # a valid PNG for other readers too (Pillow: 8-bit view of it)
        assert im.size == (W, H) and im.format == "PNG"
    data = (tmp_path / "b.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"trunc.png: not readable as PNG \("):
        read_image(tmp_path / "trunc.png")


def test_png_16bit_colour_unexpected_decode(tmp_path, monkeypatch):
    import imagecodecs

    png16(tmp_path / "a.png", ints((H, W, 3), "uint16"), 2)
    monkeypatch.setattr(imagecodecs, "png_decode", lambda data: np.zeros((H, W, 3), np.uint8))
    with pytest.raises(ImageReadError, match=rf"a.png: 16-bit PNG decoded as uint8 \({H}, {W}, 3\); expected "
                                             r"\(H, W, 3\) uint16"):
        read_image(tmp_path / "a.png")


def test_png_16bit_hand_written_gray(tmp_path):
    png16(tmp_path / "g16.png", ints((H, W), "uint16", seed=3), 0)
    image, _ = read_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(image[0], ints((H, W), "uint16", seed=3) / np.float32(65535))


def test_read_errors_unexpected_pillow_modes(tmp_path, monkeypatch):
    pil_save(tmp_path / "a.png", smooth_rgb()[..., 0], "L")
    png16(tmp_path / "g16.png", ints((H, W), "uint16"), 0)

    def fake_open(mode):
        def open_(*args, **kwargs):
            im = Image.new(mode, (W, H))
            im.format = "PNG"
            return im
        return open_

    monkeypatch.setattr(Image, "open", fake_open("F"))
    with pytest.raises(ImageReadError, match=r"a.png: unsupported image mode 'F' \(expected L, LA, RGB, RGBA, "
                                             r"CMYK or 16-bit gray\)"):
        read_image(tmp_path / "a.png")
    monkeypatch.setattr(Image, "open", fake_open("L"))
    with pytest.raises(ImageReadError, match=r"g16.png: 16-bit PNG decoded by Pillow as mode 'L' \(uint8\); "
                                             r"expected 16-bit gray samples"):
        read_image(tmp_path / "g16.png")


@pytest.mark.parametrize("array, message", [
    (np.zeros((0, 5), np.float32), r"empty array of shape \(0, 5\)"),
    (np.zeros((3, 0, 4), np.uint8), r"empty array of shape \(3, 0, 4\)"),
    (np.zeros((4, 4), np.complex64), r"unsupported dtype complex64 \(expected uint8, uint16, float16, float32, "
                                     r"float64\)"),
    (np.zeros((4, 4), bool), r"unsupported dtype bool"),
    (np.zeros((4, 4), np.int64), r"unsupported dtype int64"),
    (np.full((2, 4, 4), np.nan, np.float32), r"float data contains NaN or infinite values"),
    (np.array([[0.0, np.inf]]), r"float data contains NaN or infinite values"),
    (np.full((2, 2), 1e300), r"float data exceeds the float32 range"),
    (np.zeros((2, 3, 4, 5), np.float32), r"expected 2 or 3 dims \(\(H, W\), \(H, W, C\) or \(C, H, W\)\), got 4 "
                                         r"dims \(2, 3, 4, 5\)"),
    (np.zeros(5, np.float32), r"expected 2 or 3 dims .* got 1 dims \(5,\)"),
])
def test_read_errors_npy_content(tmp_path, array, message):
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(ImageReadError, match=r"x.npy: " + message):
        read_image(tmp_path / "x.npy")


def test_read_errors_tiff_content(tmp_path):
    tifffile.imwrite(tmp_path / "nan.tif", np.full((4, 4), np.nan, np.float32))
    with pytest.raises(ImageReadError, match=r"nan.tif: float data contains NaN or infinite values"):
        read_image(tmp_path / "nan.tif")
    tifffile.imwrite(tmp_path / "i32.tif", np.zeros((4, 4), np.int32))
    with pytest.raises(ImageReadError, match=r"i32.tif: unsupported dtype int32"):
        read_image(tmp_path / "i32.tif")
    with tifffile.TiffWriter(tmp_path / "two.tif") as tif:
        tif.write(np.zeros((4, 5), np.uint8))
        tif.write(np.zeros((6, 7), np.uint8))
    with pytest.raises(ImageReadError, match=r"two.tif: holds 2 image series of shapes \(4, 5\), \(6, 7\) and dtypes "
                                             r"uint8; expected one, or 2-D pages of one size and dtype \(the bands "
                                             r"of a stack\)$"):
        read_image(tmp_path / "two.tif")
    bands = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:  # one series per page: the bands of a stack
        for band in bands:
            tif.write(band)
    stack, info = read_stack(tmp_path / "pages.tif")
    np.testing.assert_array_equal(stack * 65535, bands)
    assert info.shape == (3, 4, 5)


def test_missing_optional_packages(tmp_path, monkeypatch):
    pil = sys.modules["PIL"]
    pil_save(tmp_path / "a.png", smooth_rgb(), "RGB")
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((4, 4), np.uint8))
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"PNG, JPEG, BMP, WebP and AVIF files need Pillow: pip install Pillow"):
        read_image(tmp_path / "a.png")
    monkeypatch.setitem(sys.modules, "tifffile", None)
    with pytest.raises(ImportError, match=r"TIFF files need tifffile: pip install tifffile"):
        read_image(tmp_path / "a.tif")
    png16(tmp_path / "rgb16.png", ints((H, W, 3), "uint16"), 2)
    monkeypatch.setitem(sys.modules, "PIL", pil)  # Pillow back (it reads the PNG's chunks); imagecodecs gone
    monkeypatch.setitem(sys.modules, "imagecodecs", None)
    with pytest.raises(ImportError, match=r"16-bit colour PNG files need imagecodecs: pip install imagecodecs"):
        read_image(tmp_path / "rgb16.png")
    with pytest.raises(ImportError, match=r"16-bit colour PNG files need imagecodecs"):
        write_image(tmp_path / "b.png", IMG, "uint16")
    assert not (tmp_path / "b.png").exists()


def test_unhandled_format_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(IMAGE_EXTENSIONS, ".gif", "gif")  # a table entry without a reader/writer
    (tmp_path / "a.gif").write_bytes(b"GIF89a")
    with pytest.raises(ImageReadError, match=r"a.gif: unsupported format 'gif'"):
        read_image(tmp_path / "a.gif")
    with pytest.raises(ValueError, match=r"b.gif: unsupported format 'gif'"):
        write_image(tmp_path / "b.gif", np.zeros((1, 2, 2), np.float32), "uint8")


# --------------------------------------------------------------------------------------------------- write errors


IMG = np.zeros((3, 4, 5), np.float32)


@pytest.mark.parametrize("name, image, dtype, exc, message", [
    ("a.png", [[[0.0]]], "uint8", TypeError, r"Expected `image` to be a numpy array or torch tensor, got list"),
    ("a.png", np.zeros((1, 4, 4), np.uint8), "uint8", TypeError,
     r"Expected `image` to be float \(scaled values\), got uint8"),
    ("a.png", np.zeros((4, 4), np.float32), "uint8", ValueError,
     r"Expected `image` of shape \(C, H, W\) \(non-empty\), got \(4, 4\)"),
    ("a.png", np.zeros((1, 0, 4), np.float32), "uint8", ValueError,
     r"Expected `image` of shape \(C, H, W\) \(non-empty\), got \(1, 0, 4\)"),
    ("a.png", np.full((1, 2, 2), np.nan, np.float32), "uint8", ValueError, r"`image` contains NaN or infinite"),
    ("a.gif", IMG, "uint8", ValueError, r"a.gif: unsupported extension '.gif' \(expected one of .png"),
    ("a.bmp", IMG[:2], "uint8", ValueError, r"a.bmp: BMP stores 8-bit images with 1 or 3 channels, got uint8 with "
                                            r"2 channels \(write .png, .tif or .npy\)"),
    ("a.bmp", np.zeros((4, 4, 5), np.float32), "uint8", ValueError, r"BMP stores .* got uint8 with 4 channels"),
    ("a.bmp", IMG, "uint16", ValueError, r"a.bmp: BMP stores .* got uint16 with 3 channels"),
    ("a.webp", IMG[:1], "uint8", ValueError, r"a.webp: WebP stores 8-bit images with 3 or 4 channels, got uint8 "
                                             r"with 1 channel \(write .png, .tif or .npy\)"),
    ("a.webp", IMG, "float32", ValueError, r"a.webp: WebP stores .* got float32 with 3 channels"),
    ("a.tif", IMG, "int32", ValueError, r"a.tif: cannot write dtype int32 \(expected uint8, uint16, float16, "
                                        r"float32, float64\)"),
    ("a.tif", IMG, 5, ValueError, r"`info_or_dtype` must be an ImageInfo or a dtype, got 5"),
    ("a.tif", IMG, None, ValueError, r"`info_or_dtype` must be an ImageInfo or a dtype, got None"),
    ("a.tif", IMG, "foo", ValueError, r"`info_or_dtype` must be an ImageInfo or a dtype, got 'foo'"),
    ("a.jpg", IMG, "uint16", ValueError, r"a.jpg: JPEG stores 8-bit images with 1 or 3 channels \(4 for CMYK\), "
                                         r"got uint16 with 3 channels \(write .png, .tif or .npy\)"),
    ("a.jpg", IMG[:2], "uint8", ValueError, r"a.jpg: JPEG stores 8-bit images .* got uint8 with 2 channels"),
    ("a.jpg", np.zeros((4, 4, 5), np.float32), "uint8", ValueError, r"got uint8 with 4 channels"),
    ("a.png", IMG, "float32", ValueError, r"a.png: PNG stores uint8 or uint16 with 1-4 channels, got float32 with 3 "
                                          r"channels \(write .tif or .npy\)"),
    ("a.png", np.zeros((5, 4, 4), np.float32), "uint16", ValueError, r"PNG stores .* got uint16 with 5 channels"),
    ("a.png", np.zeros((5, 4, 4), np.float32), "uint8", ValueError, r"PNG stores .* got uint8 with 5 channels"),
])
def test_write_errors(tmp_path, name, image, dtype, exc, message):
    with pytest.raises(exc, match=message):
        write_image(tmp_path / name, image, dtype)
    assert not any(tmp_path.iterdir())  # nothing written


def test_write_errors_with_info(tmp_path):
    with pytest.raises(ValueError, match=r"`quality` must be in \[1, 100\], got 0"):
        write_image(tmp_path / "a.jpg", IMG, "uint8", quality=0)
    np.save(tmp_path / "hw.npy", np.zeros((4, 5), np.float32))
    _, info = read_image(tmp_path / "hw.npy")
    with pytest.raises(ValueError, match=r"b.npy: layout 'HW' of `info` holds one channel, got 3"):
        write_image(tmp_path / "b.npy", IMG, info)


# --------------------------------------------------------------------------------------------------- stack errors


def test_read_stack_errors(tmp_path):
    with pytest.raises(ValueError, match=r"`scaling` must be one of \('dtype', 'band_minmax', 'band_percentile', "
                                         r"'stack_minmax'\), got 'minmax'"):
        read_stack(tmp_path, "minmax")
    for p in ((5.0, 5.0), (-1.0, 50.0), (10.0, 101.0)):
        with pytest.raises(ValueError, match=r"`percentiles` must be \(low, high\) with 0 <= low < high <= 100"):
            read_stack(tmp_path, "band_percentile", percentiles=p)
    with pytest.raises(ValueError, match=r"`path_or_paths` is an empty list of band files"):
        read_stack([])
    with pytest.raises(ImageReadError, match=r"nowhere: file or folder not found"):
        read_stack(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty: no TIFF files \(.tif, .tiff\) in this folder"):
        read_stack(tmp_path / "empty")


def test_read_stack_band_errors(tmp_path):
    d = tmp_path / "scene"
    d.mkdir()
    tifffile.imwrite(d / "l8_B1.tif", np.zeros((32, 40), np.uint16))
    tifffile.imwrite(d / "l8_B2.tif", np.zeros((30, 40), np.uint16))
    with pytest.raises(ValueError, match=r"l8_B2.tif: shape \(30, 40\) differs from .*l8_B1.tif: \(32, 40\); "
                                         r"all bands must have the same size"):
        read_stack(d)
    tifffile.imwrite(d / "l8_B2.tif", np.zeros((3, 32, 40), np.uint16), photometric="minisblack",
                     planarconfig="separate")
    with pytest.raises(ImageReadError, match=r"l8_B2.tif: has 3 bands; a folder or list of band files needs "
                                             r"single-band files"):
        read_stack(d)
    tifffile.imwrite(d / "l8_B2.tif", np.zeros((32, 40), np.int16))
    with pytest.raises(ImageReadError, match=r"l8_B2.tif: dtype int16 has no natural \[0, 1\] scale; use "
                                             r"scaling='band_minmax', 'band_percentile' or 'stack_minmax'"):
        read_stack(d, "dtype")
    tifffile.imwrite(d / "l8_B2.tif", np.zeros((32, 40), np.uint32))
    with pytest.raises(ImageReadError, match=r"l8_B2.tif: unsupported dtype uint32 \(expected uint8, uint16, int8, "
                                             r"int16, float16, float32, float64\)"):
        read_stack(d, "band_minmax")


def test_write_stack_errors(tmp_path):
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((3, 4, 5), np.uint16), photometric="minisblack",
                     planarconfig="separate")
    stack, info = read_stack(tmp_path / "s.tif")
    with pytest.raises(ValueError, match=r"`stack` has 2 bands but `info` describes 3"):
        write_stack(tmp_path / "o.tif", stack[:2], info)
    with pytest.raises(ValueError, match=r"o.png: expected a .tif/.tiff/.npy/.mat/.hdr/.nii/.nii.gz file or a "
                                         r"folder \(no extension\), got '.png'"):
        write_stack(tmp_path / "o.png", stack, info)
    with pytest.raises(ValueError, match=r"Expected `stack` of shape \(S, H, W\) \(non-empty\), got \(4, 5\)"):
        write_stack(tmp_path / "o.tif", stack[0], info)
    with pytest.raises(TypeError, match=r"Expected `stack` to be float \(scaled values\), got uint16"):
        write_stack(tmp_path / "o.tif", stack.astype(np.uint16), info)
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    for d in ("x", "y"):
        tifffile.imwrite(tmp_path / d / "B1.tif", np.zeros((4, 5), np.uint8))
    stack, info = read_stack([tmp_path / "x" / "B1.tif", tmp_path / "y" / "B1.tif"])
    with pytest.raises(ValueError, match=r"out: band names \['B1'\] repeat, so their files would overwrite each "
                                         r"other; write one .tif or .npy file instead"):
        write_stack(tmp_path / "out", stack, info)
    write_stack(tmp_path / "out.npy", stack, info)


def test_module_imports_no_optional_package():
    assert "PIL" not in imageio.__dict__ and "tifffile" not in imageio.__dict__


def test_tiff_resolution_units_and_damaged_exif(tmp_path):
    gray = np.zeros((4, 5), np.uint8)
    tifffile.imwrite(tmp_path / "cm.tif", gray, resolution=(100, 50), resolutionunit="CENTIMETER")
    assert dict(read_image(tmp_path / "cm.tif")[1].metadata) == {"dpi": (254.0, 127.0)}
    tifffile.imwrite(tmp_path / "none.tif", gray, resolution=(72, 72), resolutionunit="NONE")  # no physical size
    image, info = read_image(tmp_path / "none.tif")
    assert info.metadata == (("tiff_resolution", (72.0, 72.0)),)  # kept for TIFF outputs, not a dpi
    write_image(tmp_path / "none_out.tif", image, info)
    with tifffile.TiffFile(tmp_path / "none_out.tif") as tif:
        assert tif.pages[0].resolution == (72.0, 72.0) and tif.pages[0].resolutionunit == 1
    write_image(tmp_path / "none_out.png", image, info)
    assert "dpi" not in Image.open(tmp_path / "none_out.png").info
    image, info = read_image(tmp_path / "cm.tif")
    bad = dataclasses.replace(info, metadata=(("exif", b"Exif\x00\x00garbage"),))
    write_image(tmp_path / "bad.tif", image, bad)  # a damaged EXIF block carries nothing, and does not fail
    with tifffile.TiffFile(tmp_path / "bad.tif") as tif:
        assert 274 not in tif.pages[0].tags


# ------------------------------------------------------------------------------------------------------------ HEIC


@pytest.mark.parametrize("ext, fmt", [(".heic", "heif"), (".avif", "avif")])
@pytest.mark.parametrize("channels, mode", [(1, "L"), (3, "RGB"), (4, "RGBA")])
def test_lossy_photo_formats_8bit_round_trip_is_close(tmp_path, ext, fmt, channels, mode):
    """HEIC (HEVC) and AVIF (AV1): lossy at quality 95 with 4:4:4 chroma, close to the source; quality is passed on."""
    rgb = smooth_rgb()
    arr = {1: rgb[..., 0], 3: rgb, 4: np.dstack([rgb, rgb[..., :1]])}[channels]
    image = arr.reshape(H, W, -1).transpose(2, 0, 1).astype(np.float32) / 255  # (C, H, W)
    write_image(tmp_path / f"a{ext}", image, "uint8")
    back, info = read_image(tmp_path / f"a{ext}")
    assert (info.format, info.dtype, info.mode, info.channels, back.shape) == (fmt, "uint8", mode, channels,
                                                                                 image.shape)
    assert dict(info.metadata).get("heif_bit_depth") == (8 if fmt == "heif" else None)
    assert np.abs(back - image).max() <= 6 / 255
    write_image(tmp_path / f"q{ext}", image, "uint8", quality=30)
    assert (tmp_path / f"q{ext}").stat().st_size < (tmp_path / f"a{ext}").stat().st_size


@pytest.mark.parametrize("depth", [10, 12])
def test_heic_high_bit_depth_is_read_at_16_bits_and_written_back_at_its_depth(tmp_path, depth):
    """10- and 12-bit HEIC (HDR phone photos) are never reduced to 8 bits: read as uint16 with the format's white at
    65535 (every level exact in a losslessly coded gray file), and written back at the same depth."""
    import pillow_heif as heif  # a [dev] dependency: a missing install fails here, not skips
    y, x = np.mgrid[0:32, 0:48]
    levels = ((x * 20 + y * 30) % 2 ** depth).astype(np.uint16)
    levels[0, 0] = 2 ** depth - 1
    top = 2 ** depth - 1
    rgb = np.stack([x * top // 47, y * top // 31, np.full_like(x, top)], -1).astype(np.uint16)  # smooth: 4:2:0 safe
    heif.options.SAVE_HDR_TO_12_BIT = depth == 12
    try:
        for name, mode, arr in (("gray.heic", "L;16", levels), ("rgb.heic", "RGB;16", rgb)):
            heif.from_bytes(mode, (48, 32), (arr << (16 - depth)).astype("<u2").tobytes()).save(tmp_path / name,
                                                                                              quality=-1)
    finally:
        heif.options.SAVE_HDR_TO_12_BIT = False
    image, info = read_image(tmp_path / "gray.heic")
    assert (info.dtype, info.mode, dict(info.metadata)["heif_bit_depth"]) == ("uint16", "L", depth)
    np.testing.assert_allclose(image[0] * (2 ** depth - 1), levels, atol=0.05)  # white is 1.0, levels exact
    colour, cinfo = read_image(tmp_path / "rgb.heic")
    assert cinfo.dtype == "uint16" and cinfo.mode == "RGB" and len(np.unique(colour[0])) > 256
    assert np.abs(colour - rgb.transpose(2, 0, 1) / (2 ** depth - 1)).max() < 0.03  # colour through YCbCr 4:2:0
    for back, src_info in ((image, info), (colour, cinfo)):
        write_image(tmp_path / "out.heic", back, src_info)
        again, info2 = read_image(tmp_path / "out.heic")
        assert info2.dtype == "uint16" and dict(info2.metadata)["heif_bit_depth"] == depth
        assert np.abs(again - back).max() < 0.01  # lossy HEVC at quality 95, far below an 8-bit step


def test_heic_keeps_icc_and_exif_reads_upright_and_converts_to_other_formats(tmp_path):
    """A JPEG shown turned by its EXIF orientation becomes a HEIC that carries the turn (as a HEIF rotation); HEIC
    pixels are read upright, with the EXIF orientation set to 1 so that no viewer turns them twice."""
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    exif[0x010F] = "xmodal test camera"
    src = pil_save(tmp_path / "photo.jpg", smooth_rgb(), "RGB", quality=95, icc_profile=icc, exif=exif.tobytes())
    image, info = read_image(src)
    write_image(tmp_path / "photo.heic", image, info)  # JPEG -> HEIC keeps the profile, the EXIF and the turn
    back, heic_info = read_image(tmp_path / "photo.heic")
    assert back.shape == (3, W, H)
    np.testing.assert_allclose(back, np.rot90(image, -1, axes=(1, 2)), atol=6 / 255)  # shown as a viewer shows it
    meta = dict(heic_info.metadata)
    assert meta["icc_profile"] == icc
    exif_back = Image.Exif()
    exif_back.load(meta["exif"])
    assert exif_back.get(0x0112) == 1 and exif_back.get(0x010F) == "xmodal test camera"
    write_image(tmp_path / "again.heic", back, heic_info)  # upright pixels, orientation 1: not turned again
    assert read_image(tmp_path / "again.heic")[0].shape == (3, W, H)
    for name in ("b.png", "b.tif", "b.jpg"):  # and HEIC -> the others
        write_image(tmp_path / name, back, heic_info)
        assert dict(read_image(tmp_path / name)[1].metadata)["icc_profile"] == icc


def test_heic_errors(tmp_path, monkeypatch):
    (tmp_path / "bad.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 40)
    with pytest.raises(ImageReadError, match=r"bad\.heic: not readable as HEIF"):
        read_image(tmp_path / "bad.heic")
    with pytest.raises(ValueError, match=r"x\.heic: HEIC stores 8-bit or 10/12-bit images with 1, 3 or 4 channels, "
                                         r"got float32 with 3 channels \(write \.png, \.tif or \.npy\)"):
        write_image(tmp_path / "x.heic", np.zeros((3, 8, 8), np.float32), "float32")
    with pytest.raises(ValueError, match=r"got uint8 with 2 channels"):
        write_image(tmp_path / "x.heic", np.zeros((2, 8, 8), np.float32), "uint8")
    with pytest.raises(ValueError, match=r"`quality` must be in \[1, 100\], got 0"):
        write_image(tmp_path / "x.heic", np.zeros((3, 8, 8), np.float32), "uint8", quality=0)
    assert not (tmp_path / "x.heic").exists()
    write_image(tmp_path / "ok.heic", np.zeros((3, 8, 8), np.float32), "uint8")
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # not installed
    with pytest.raises(ImageReadError, match=r"ok\.heic: HEIC/HEIF files need pillow-heif: pip install "
                                             r"'xmodal\[heif\]'"):
        read_image(tmp_path / "ok.heic")
    with pytest.raises(ValueError, match=r"y\.heic: HEIC/HEIF files need pillow-heif"):
        write_image(tmp_path / "y.heic", np.zeros((3, 8, 8), np.float32), "uint8")
    assert not (tmp_path / "y.heic").exists()


# ------------------------------------------------------------------------------------------------------------ AVIF


def test_avif_keeps_icc_exif_and_orientation(tmp_path):
    """Pillow keeps AVIF pixels as stored and shows the file's rotation as the EXIF orientation, as for JPEG: a JPEG
    turned by its orientation becomes an AVIF with the same pixels and the same turn, and back."""
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "xmodal test camera"
    src = pil_save(tmp_path / "photo.jpg", smooth_rgb(), "RGB", quality=95, icc_profile=icc, exif=exif.tobytes())
    image, info = read_image(src)
    write_image(tmp_path / "photo.avif", image, info)
    back, avif_info = read_image(tmp_path / "photo.avif")
    assert back.shape == image.shape and np.abs(back - image).max() <= 6 / 255
    meta = dict(avif_info.metadata)
    exif_back = Image.Exif()
    exif_back.load(meta["exif"])
    assert meta["icc_profile"] == icc and exif_back.get(0x0112) == 6 and exif_back.get(0x010F) == "xmodal test camera"
    write_image(tmp_path / "b.jpg", back, avif_info)  # and back to JPEG with the turn
    assert Image.open(tmp_path / "b.jpg").getexif().get(0x0112) == 6


def test_avif_errors(tmp_path, monkeypatch):
    write_image(tmp_path / "ok.avif", np.zeros((3, 8, 8), np.float32), "uint8")
    data = bytearray((tmp_path / "ok.avif").read_bytes())
    i = data.find(b"pixi")
    assert data[i + 8:i + 12] == bytes([3, 8, 8, 8])  # 3 channels of 8 bits
    data[i + 9:i + 12] = bytes([10, 10, 10])  # what a 10-bit (HDR) AVIF declares; Pillow would decode it to 8 bits
    (tmp_path / "ten.avif").write_bytes(bytes(data))
    (tmp_path / "ten_named.png").write_bytes(bytes(data))  # the content decides, not the name
    for name in ("ten.avif", "ten_named.png"):
        with pytest.raises(ImageReadError, match=rf"{name}: a 10-bit AVIF; Pillow decodes AVIF to 8 bits, which would "
                                                 r"lose precision \(convert it to a 16-bit PNG or TIFF first"):
            read_image(tmp_path / name)
    (tmp_path / "bad.avif").write_bytes(b"\x00\x00\x00\x1cftypavif" + b"\x00" * 40)
    with pytest.raises(ImageReadError, match=r"bad\.avif: not readable as PNG, JPEG, BMP, WebP or AVIF"):
        read_image(tmp_path / "bad.avif")
    with pytest.raises(ValueError, match=r"x\.avif: AVIF stores 8-bit images with 1, 3 or 4 channels, got uint16 "
                                         r"with 3 channels \(write \.png, \.tif or \.npy\)"):
        write_image(tmp_path / "x.avif", np.zeros((3, 8, 8), np.float32), "uint16")
    with pytest.raises(ValueError, match=r"got uint8 with 2 channels"):
        write_image(tmp_path / "x.avif", np.zeros((2, 8, 8), np.float32), "uint8")
    with pytest.raises(ValueError, match=r"`quality` must be in \[1, 100\], got 101"):
        write_image(tmp_path / "x.avif", np.zeros((3, 8, 8), np.float32), "uint8", quality=101)
    monkeypatch.setattr(imageio, "pillow_formats", lambda: ["PNG", "JPEG", "BMP", "WEBP"])  # a Pillow before 11.3
    with pytest.raises(ImageReadError, match=r"ok\.avif: AVIF files need Pillow 11\.3 or later built with libavif"):
        read_image(tmp_path / "ok.avif")
    with pytest.raises(ValueError, match=r"x\.avif: AVIF files need Pillow 11\.3 or later built with libavif"):
        write_image(tmp_path / "x.avif", np.zeros((3, 8, 8), np.float32), "uint8")
    assert not (tmp_path / "x.avif").exists()


def test_palette_miniswhite_and_bilevel_tiffs_are_read_as_they_show(tmp_path: Path) -> None:
    """A palette TIFF is read as its colours (Pillow's RGB of it, exactly; a 16-bit palette as 16-bit RGB), a
    MinIsWhite one inverted to MinIsBlack (the written output then shows as the input did), a 1-bit one as 0/255 in
    8 bits; a float MinIsWhite TIFF, whose white TIFF does not define, is refused."""
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).convert(
        "P", palette=Image.Palette.ADAPTIVE, colors=16).save(tmp_path / "pal.tif")
    x, info = read_image(tmp_path / "pal.tif")
    expected = np.array(Image.open(tmp_path / "pal.tif").convert("RGB")).transpose(2, 0, 1)
    assert info.mode == "RGB" and info.dtype == "uint8" and np.array_equal(np.rint(x * 255), expected)
    cmap = rng.integers(0, 65536, (3, 256)).astype(np.uint16)  # a 16-bit palette
    index = rng.integers(0, 256, (20, 24), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "pal16.tif", index, photometric="palette", colormap=cmap)
    x, info = read_image(tmp_path / "pal16.tif")
    assert info.dtype == "uint16" and np.array_equal(np.rint(x * 65535), cmap[:, index])
    gray = rng.integers(0, 65536, (20, 24)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "mw.tif", gray, photometric="miniswhite")
    x, info = read_image(tmp_path / "mw.tif")
    assert info.mode == "L" and np.array_equal(np.rint(x[0] * 65535), 65535 - gray)
    write_image(tmp_path / "mw_out.tif", x, info)
    with tifffile.TiffFile(tmp_path / "mw_out.tif") as tif:  # MinIsBlack, the same picture
        assert tif.pages[0].photometric == 1 and np.array_equal(tif.asarray(), 65535 - gray)
    bits = rng.random((20, 24)) > 0.5
    tifffile.imwrite(tmp_path / "fax.tif", bits, photometric="miniswhite")
    x, info = read_image(tmp_path / "fax.tif")
    assert info.dtype == "uint8" and np.array_equal(np.rint(x[0] * 255), np.where(bits, 0, 255))
    tifffile.imwrite(tmp_path / "mwf.tif", rng.random((20, 24), dtype=np.float32), photometric="miniswhite")
    with pytest.raises(ImageReadError, match=r"mwf.tif: a float TIFF stored MinIsWhite \(inverted\), whose white "
                                             r"level TIFF does not define; store it MinIsBlack"):
        read_image(tmp_path / "mwf.tif")


def test_gray_alpha_tiffs_are_la_and_alpha_kinds_are_kept(tmp_path: Path) -> None:
    """A gray TIFF with an alpha extra sample is mode LA (its alpha then copied, not denoised, as a PNG's), written
    back interleaved with its alpha tagged as alpha; an associated (premultiplied) alpha stays associated."""
    rng = np.random.default_rng(4)
    ga = rng.integers(0, 256, (20, 24, 2), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "ga.tif", ga, photometric="minisblack", extrasamples=[2])
    x, info = read_image(tmp_path / "ga.tif")
    assert info.mode == "LA" and alpha_channels(info.mode) == 1 and x.shape == (2, 20, 24)
    write_image(tmp_path / "ga_out.tif", x, info)
    with tifffile.TiffFile(tmp_path / "ga_out.tif") as tif:
        page = tif.pages[0]
        assert page.photometric == 1 and page.planarconfig == 1 and tuple(page.extrasamples) == (2,)
        assert np.array_equal(tif.asarray(), ga)
    rgba = rng.integers(0, 256, (20, 24, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "pre.tif", rgba, photometric="rgb", extrasamples=[1])
    x, info = read_image(tmp_path / "pre.tif")
    write_image(tmp_path / "pre_out.tif", x, info)
    with tifffile.TiffFile(tmp_path / "pre_out.tif") as tif:
        assert tuple(tif.pages[0].extrasamples) == (1,) and np.array_equal(tif.asarray(), rgba)


def test_a_single_imagej_image_keeps_its_calibration_and_display(tmp_path: Path) -> None:
    """A single ImageJ image (a microscope frame): its resolution without unit (pixels per micron, ImageJ's unit in
    its description) and its description (unit, display range) are written back as they came."""
    data = np.random.default_rng(6).integers(0, 4096, (30, 40)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, resolution=(10.0, 10.0),
                     metadata={"unit": "um", "min": 0.0, "max": 4095.0})
    x, info = read_image(tmp_path / "ij.tif")
    write_image(tmp_path / "out.tif", x, info)
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        assert tif.is_imagej and tif.pages[0].resolution == (10.0, 10.0) and tif.pages[0].resolutionunit == 1
        meta = tif.imagej_metadata
        assert (meta["unit"], meta["min"], meta["max"]) == ("um", 0.0, 4095.0) and np.array_equal(tif.asarray(), data)


def test_planar_colour_tiffs_stay_planar(tmp_path: Path) -> None:
    """An RGB TIFF stored one plane per colour is written back so (contiguous ones stay contiguous)."""
    rng = np.random.default_rng(7)
    for name, data, options, planar in (
            ("planar.tif", rng.integers(0, 65536, (3, 20, 24)).astype(np.uint16), {"planarconfig": "separate"}, 2),
            ("contig.tif", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8), {}, 1)):
        tifffile.imwrite(tmp_path / name, data, photometric="rgb", **options)
        x, info = read_image(tmp_path / name)
        write_image(tmp_path / f"out_{name}", x, info)
        with tifffile.TiffFile(tmp_path / f"out_{name}") as tif:
            page = tif.pages[0]
            assert (page.planarconfig, page.photometric) == (planar, 2) and np.array_equal(tif.asarray(), data)


def test_jpeg_chroma_subsampling_is_kept(tmp_path: Path) -> None:
    """A 4:4:4 JPEG is written back 4:4:4 (full-resolution colour), a 4:2:0 one 4:2:0."""
    from PIL import JpegImagePlugin

    rgb = np.random.default_rng(8).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    for sampling in (0, 2):
        Image.fromarray(rgb).save(tmp_path / f"s{sampling}.jpg", quality=100, subsampling=sampling)
        x, info = read_image(tmp_path / f"s{sampling}.jpg")
        write_image(tmp_path / f"out{sampling}.jpg", x, info)
        with Image.open(tmp_path / f"out{sampling}.jpg") as im:
            assert JpegImagePlugin.get_sampling(im) == sampling
