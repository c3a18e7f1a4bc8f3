"""Multi-page TIFF clips (microscope time-lapses and z-stacks, ImageJ and OME stacks): read one page per frame
(memory-mapped, or page by page when compressed or written so), written back at the source's dtype with its axes and
calibration, denoised from the command line with --modality video (photon noise included) and evaluated."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import tifffile

import xmodal
from xmodal.denoise import _default_video_model, main
from xmodal.evaluate import evaluate_videos
from xmodal.imageio import ImageReadError
from xmodal.metrics import psnr_score
from xmodal.videoio import ClipReader, ClipWriter, is_clip, read_clip, write_clip


def _clip(shape: tuple[int, ...], dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype.startswith("float"):
        return rng.random(shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize("shape, dtype, compression", [((5, 12, 16), "uint16", None), ((4, 12, 16, 3), "uint8", None),
                                                       ((3, 12, 16), "float32", None), ((4, 12, 16), "uint16", "zlib"),
                                                       ((3, 12, 16, 2), "uint16", None)])
def test_tiff_clips_read_a_frame_per_page_and_write_back_the_same(tmp_path, shape, dtype, compression):
    data = _clip(shape, dtype)
    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, data, compression=compression, photometric="rgb" if shape[-1] == 3 else "minisblack",
                     metadata={"axes": "TYX" if len(shape) == 3 else "TYXS"})
    assert is_clip(src)
    clip, info = read_clip(src)
    assert info.kind == "tiff" and info.dtype == dtype and info.layout == ("THW" if len(shape) == 3 else "THWC")
    scale = np.iinfo(dtype).max if dtype.startswith("uint") else 1
    channels_first = data[:, None] if len(shape) == 3 else data.transpose(0, 3, 1, 2)
    assert clip.shape == channels_first.shape and np.array_equal(clip, channels_first.astype(np.float32) / scale)
    dst = write_clip(tmp_path / "back.tif", clip, info)
    with tifffile.TiffFile(dst) as tif:
        assert tif.series[0].shape == shape and tif.series[0].dtype == np.dtype(dtype)
        # ImageJ opens gray uint8/uint16/float32 and 8-bit RGB stacks as stacks (T frames)
        assert tif.is_imagej == (len(shape) == 3 or (shape[-1] == 3 and dtype == "uint8"))
        assert np.array_equal(tif.asarray(), data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.tif", "stack.tif"]  # no temporary file left


def test_tiff_that_is_not_a_clip_is_refused_with_the_reason(tmp_path):
    cases = {"one.tif": (np.zeros((12, 16), np.uint16), {}, "series is YX (12, 16): one image, not a clip"),
             "rgb.tif": (np.zeros((12, 16, 3), np.uint8), {"photometric": "rgb"},
                     "series is YXS (12, 16, 3): one image, not a clip"),
             "channels.tif": (np.zeros((3, 12, 16), np.uint16), {"imagej": True, "metadata": {"axes": "CYX"}},
                              "series is CYX (3, 12, 16): its pages are channels, not frames"),
             "hyper.tif": (np.zeros((2, 3, 12, 16), np.uint16),
                           {"photometric": "minisblack", "metadata": {"axes": "ZTYX"}},
                           "series is ZTYX (2, 3, 12, 16): split it into one clip per position, depth or "
                           "time point")}
    for name, (data, options, reason) in cases.items():
        tifffile.imwrite(tmp_path / name, data, **options)
        assert not is_clip(tmp_path / name)
        with pytest.raises(ImageReadError) as e:
            ClipReader(tmp_path / name)
        assert str(e.value) == (f"{tmp_path / name}: a TIFF clip holds one frame per page, (T, H, W) or (T, H, W, S) "
                                f"with at most 4 samples, (T, C, H, W) with a channel axis, or (T, Z[, C], H, W), a "
                                f"depth stack per time point; this one's {reason}")
    tifffile.imwrite(tmp_path / "planar.tif", np.zeros((3, 12, 16), np.uint8), photometric="rgb",
                     planarconfig="separate")
    with pytest.raises(ImageReadError, match=r"series is SYX \(3, 12, 16\): one image of 3 planar samples \(colours\), "
                                             "not a clip"):
        ClipReader(tmp_path / "planar.tif")
    with tifffile.TiffWriter(tmp_path / "positions.ome.tif", ome=True) as tw:  # a multi-position acquisition
        for _ in range(2):
            tw.write(np.zeros((3, 12, 16), np.uint16), metadata={"axes": "TYX"})
    assert not is_clip(tmp_path / "positions.ome.tif")
    with pytest.raises(ImageReadError, match=r"positions.ome.tif: a TIFF clip is one series of frames; this one "
                                             r"holds 2 series \(TYX \(3, 12, 16\), TYX \(3, 12, 16\): positions or "
                                             r"acquisitions\): split them into one file each"):
        ClipReader(tmp_path / "positions.ome.tif")
    tifffile.imwrite(tmp_path / "int16.tif", np.zeros((4, 12, 16), np.int16), photometric="minisblack")
    assert not is_clip(tmp_path / "int16.tif")
    with pytest.raises(ImageReadError, match=r"int16.tif: unsupported dtype int16 \(expected uint8, uint16, float16, "
                                             r"float32, float64\)"):
        ClipReader(tmp_path / "int16.tif")
    tifffile.imwrite(tmp_path / "zlib.tif", _clip((3, 16, 16), "uint16"), compression="zlib",
                     photometric="minisblack")
    with tifffile.TiffFile(tmp_path / "zlib.tif") as tif:  # the second page's compressed data zeroed
        start, length = tif.pages[1].dataoffsets[0], tif.pages[1].databytecounts[0]
    raw = bytearray((tmp_path / "zlib.tif").read_bytes())
    raw[start:start + length] = bytes(length)
    (tmp_path / "zlib.tif").write_bytes(bytes(raw))
    reader = ClipReader(tmp_path / "zlib.tif")  # read a page at a time: the first frame is fine
    assert reader[0].shape == (1, 16, 16)
    with pytest.raises(ImageReadError, match=r"zlib.tif: frame 1 \(page 2 of 3\) cannot be read \("):
        reader[1]
    reader.close()
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ImageReadError, match=r"broken.tif: a TIFF that holds no image \(corrupt or truncated\)"):
        ClipReader(tmp_path / "broken.tif")
    (tmp_path / "text.tif").write_text("not a TIFF at all")
    with pytest.raises(ImageReadError, match=r"text.tif: not readable as TIFF \("):
        ClipReader(tmp_path / "text.tif")


def test_tiff_writer_aborts_cleanly(tmp_path):
    writer = ClipWriter(tmp_path / "out.tif", None, (2, 1, 8, 8))
    writer.write(0, np.zeros((1, 8, 8), np.float32))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_cli_denoises_a_photon_time_lapse_in_one_tiff(tmp_path, capsys):
    yy, xx = np.mgrid[0:48, 0:64] / 48.0
    lam = np.stack([30 * (0.5 + 0.45 * np.sin(3 * xx + 0.2 * t) * np.cos(2 * yy)) for t in range(6)])
    counts = np.random.default_rng(0).poisson(lam).astype(np.uint16)
    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, counts, imagej=True, metadata={"axes": "TYX"})
    assert _default_video_model(src) == "video_gray"
    assert main([str(src), "-o", str(tmp_path / "out"), "--modality", "video", "--poisson", "65535", "--quiet"]) == 0
    with tifffile.TiffFile(tmp_path / "out" / "cells.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "TYX"
        out = tif.asarray()
    assert out.dtype == np.uint16 and out.shape == counts.shape
    expected = xmodal.load("video").denoise(counts.astype(np.float32) / 65535, poisson=65535.0)
    assert np.abs(out.astype(np.float64) - np.clip(np.rint(expected * 65535), 0, 65535)).max() <= 1
    assert np.sqrt(np.mean((out - lam) ** 2)) < 0.3 * np.sqrt(np.mean((counts - lam) ** 2))
    # without --modality a multi-page TIFF is a band stack, which --poisson does not take: the message says what to do
    assert main([str(src), "-o", str(tmp_path / "bad"), "--poisson", "65535"]) == 1
    assert (f"{src}: --poisson applies to images and video, not to a band stack (a time-lapse or z-stack in one "
            "TIFF: --modality video)") in capsys.readouterr().err
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, _clip((2, 8, 8, 3), "uint8"), photometric="rgb")
    assert _default_video_model(rgb) == "video_color"
    tifffile.imwrite(rgb, np.zeros((2, 8, 8, 3), np.uint8), photometric="rgb")  # gray pictures stored as RGB
    assert _default_video_model(rgb) == "video_gray"


def test_a_folder_of_tiff_stacks_is_a_folder_of_clips_and_one_of_single_tiffs_one_clip(tmp_path):
    video = xmodal.load("video")
    stacks, frames = tmp_path / "stacks", tmp_path / "frames"
    stacks.mkdir(), frames.mkdir()
    for k in range(2):
        tifffile.imwrite(stacks / f"well{k}.tif", _clip((3, 24, 24), "uint16", seed=k), imagej=True,
                         metadata={"axes": "TYX"})
    for t in range(3):
        tifffile.imwrite(frames / f"t{t}.tif", _clip((24, 24), "uint16", seed=t))
    assert main([str(stacks), "-o", str(tmp_path / "out"), "--modality", "video", "--sigma", "none", "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["well0.tif", "well1.tif"]
    clip = tifffile.imread(stacks / "well1.tif").astype(np.float32) / 65535
    expected = np.clip(np.rint(video.denoise(clip) * 65535), 0, 65535)
    assert np.abs(tifffile.imread(tmp_path / "out" / "well1.tif") - expected).max() <= 1
    assert main([str(frames), "-o", str(tmp_path / "out2"), "--modality", "video", "--sigma", "none", "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "out2" / "frames").iterdir()) == ["t0.tif", "t1.tif", "t2.tif"]


def test_tiff_clips_are_evaluated_as_clips(tmp_path):
    for folder in ("clean", "noisy"):
        (tmp_path / folder).mkdir()
    clean = _clip((3, 20, 24), "uint16")
    noisy = np.clip(clean.astype(np.int64) + np.random.default_rng(1).integers(-2000, 2000, clean.shape), 0, 65535)
    tifffile.imwrite(tmp_path / "clean" / "cells.tif", clean, imagej=True, metadata={"axes": "TYX"})
    tifffile.imwrite(tmp_path / "noisy" / "cells.tif", noisy.astype(np.uint16), imagej=True, metadata={"axes": "TYX"})
    for folder in ("clean", "noisy"):  # a single image where a clip was expected: reported by name, not skipped
        tifffile.imwrite(tmp_path / folder / "note.tif", clean[0])
    result = evaluate_videos(tmp_path / "clean", tmp_path / "noisy", enhanced_dir=tmp_path / "clean")
    assert [f["name"] for f in result["files"]] == ["cells"] and result["files"][0]["shape"] == [3, 1, 20, 24]
    assert [e["file"] for e in result["errors"]] == ["note"]
    assert "one image, not a clip" in result["errors"][0]["reason"]
    assert result["files"][0]["noisy"]["psnr"] == pytest.approx(psnr_score(clean / 65535, noisy / 65535), abs=1e-4)
    assert result["files"][0]["enhanced"]["psnr"] == np.inf


def test_pages_written_one_at_a_time_are_frames(tmp_path):
    """tifffile's TiffWriter.write in a loop stores one series per page (Fiji opens it as a stack): its pages are the
    frames, read one at a time."""
    data = _clip((4, 10, 12), "uint16")
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tw:
        for frame in data:
            tw.write(frame)
    assert is_clip(tmp_path / "pages.tif")
    clip, info = read_clip(tmp_path / "pages.tif")
    assert clip.shape == (4, 1, 10, 12) and np.array_equal(clip[:, 0], data / np.float32(65535))
    folder = tmp_path / "wells"
    folder.mkdir()
    (tmp_path / "pages.tif").rename(folder / "a.tif")
    tifffile.imwrite(folder / "b.tif", data, imagej=True, metadata={"axes": "TYX"})
    assert main([str(folder), "-o", str(tmp_path / "out"), "--modality", "video", "--sigma", "none", "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.tif", "b.tif"]  # two clips, not two frames
    assert np.array_equal(tifffile.imread(tmp_path / "out" / "a.tif"), tifffile.imread(tmp_path / "out" / "b.tif"))


def test_tiff_clips_keep_their_axis_pixel_size_and_calibration(tmp_path):
    data = _clip((4, 10, 12), "uint16")
    tifffile.imwrite(tmp_path / "z.tif", data, imagej=True, resolution=(1 / 0.108, 1 / 0.108),
                     metadata={"axes": "ZYX", "spacing": 0.3, "unit": "um"})
    clip, z_info = read_clip(tmp_path / "z.tif")
    write_clip(tmp_path / "z_out.tif", clip, z_info)
    with tifffile.TiffFile(tmp_path / "z_out.tif") as tif:
        assert tif.series[0].axes == "ZYX" and tif.pages[0].resolution == pytest.approx((1 / 0.108, 1 / 0.108))
        assert tif.imagej_metadata["spacing"] == 0.3 and tif.imagej_metadata["unit"] == "um"
        assert np.array_equal(tif.asarray(), data)
    calibration = {"PhysicalSizeX": 0.108, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": 0.108,
                   "PhysicalSizeYUnit": "µm", "TimeIncrement": 2.5, "TimeIncrementUnit": "s"}
    tifffile.imwrite(tmp_path / "t.ome.tif", data, ome=True, metadata={"axes": "TYX", **calibration})
    clip, info = read_clip(tmp_path / "t.ome.tif")
    write_clip(tmp_path / "t_out.ome.tif", clip, info)
    with tifffile.TiffFile(tmp_path / "t_out.ome.tif") as tif:
        assert tif.is_ome and tif.series[0].axes == "TYX" and np.array_equal(tif.asarray(), data)
        for key, value in calibration.items():
            assert f'{key}="{value}"' in tif.ome_metadata
    # one frame: ImageJ would store a single image; written so that it reads back as a 1-frame clip
    write_clip(tmp_path / "one.tif", clip[:1], z_info)
    assert is_clip(tmp_path / "one.tif") and read_clip(tmp_path / "one.tif")[0].shape == (1, 1, 10, 12)


def test_format_turns_npy_and_tiff_clips_into_each_other(tmp_path):
    data = _clip((3, 16, 16), "float32")
    np.save(tmp_path / "a.npy", data)
    assert main([str(tmp_path / "a.npy"), "-o", str(tmp_path / "out"), "--modality", "video", "--format", "tif",
                 "--sigma", "none", "--quiet"]) == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.tif"]
    expected = xmodal.load("video").denoise(data)
    assert np.allclose(tifffile.imread(tmp_path / "out" / "a.tif"), expected, atol=1e-6)
    tifffile.imwrite(tmp_path / "b.ome.tif", data, ome=True, metadata={"axes": "TYX"})
    assert main([str(tmp_path / "b.ome.tif"), "-o", str(tmp_path / "out"), "--modality", "video", "--format", "npy",
                 "--sigma", "none", "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.tif", "b.npy"]  # not b.ome.npy


@pytest.mark.parametrize("options", [{"imagej": True}, {"ome": True}, {}])
def test_a_truncated_tiff_stack_is_reported_as_truncated(tmp_path, options, capsys):
    """A stack cut short (a copy that stopped) names the page where it breaks, as a clip and as a band stack, and
    tifffile's own log lines are not printed on top."""
    src = tmp_path / "cut.tif"
    tifffile.imwrite(src, _clip((5, 32, 32), "uint16"), photometric="minisblack", metadata={"axes": "TYX"}, **options)
    with open(src, "r+b") as f:
        f.truncate(int(src.stat().st_size * 0.6))
    message = "truncated or corrupt TIFF: 1 page(s) can be read, then the offset of page 2 points outside the file"
    assert not is_clip(src)
    with pytest.raises(ImageReadError) as e:
        ClipReader(src)
    assert str(e.value) == f"{src}: {message}"
    with pytest.raises(ImageReadError) as e:
        xmodal.imageio.read_image(src)
    assert str(e.value) == f"{src}: {message}"
    assert capsys.readouterr().err == ""


def test_a_failed_tiff_writer_leaves_nothing(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tifffile, "memmap", full)
    with pytest.raises(OSError, match=r"out.tif: cannot write the file \(No space left on device\)"):
        ClipWriter(tmp_path / "out.tif", None, (3, 1, 8, 8))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".npy", ".tif"])
def test_a_clip_that_does_not_fit_on_the_disk_is_refused_before_any_frame(tmp_path, monkeypatch, suffix):
    """Memory-mapped clips are created sparse: their blocks are allocated up front, so a full disk is an OSError
    naming the clip (a page written into a full disk would be a SIGBUS that kills the process), and nothing stays."""
    import os

    calls = []

    def full(fd, offset, length):
        calls.append(length)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    with pytest.raises(OSError, match=rf"clip{suffix}: cannot write the file \(No space left on device\)"):
        ClipWriter(tmp_path / f"clip{suffix}", None, (3, 1, 64, 64))
    assert calls and calls[0] >= 3 * 64 * 64 * 4 and list(tmp_path.iterdir()) == []


def test_clip_estimate_errors_name_the_clip():
    video = xmodal.load("video")
    tiny = np.random.default_rng(0).random((3, 8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match=r"`clip` \(3 of its frames\) of 8 x 8 pixels is too small to estimate its "
                                         "noise"):
        video.denoise(tiny, poisson="auto")


def test_multichannel_time_lapses_keep_their_channel_axis(tmp_path):
    """ImageJ hyperstacks with a channel axis (two fluorophores over time): each frame's channels are denoised (the
    gray video model takes any channel count), the axes written back as they came."""
    data = _clip((4, 2, 24, 24), "uint16")
    src = tmp_path / "two_colour.tif"
    tifffile.imwrite(src, data, imagej=True, metadata={"axes": "TCYX"})
    clip, info = read_clip(src)
    assert info.layout == "TCHW" and clip.shape == (4, 2, 24, 24) and np.array_equal(clip, data / np.float32(65535))
    assert main([str(src), "-o", str(tmp_path / "out"), "--modality", "video", "--sigma", "none", "--quiet"]) == 0
    with tifffile.TiffFile(tmp_path / "out" / "two_colour.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "TCYX" and tif.series[0].shape == (4, 2, 24, 24)
        out = tif.asarray()
    expected = np.clip(np.rint(xmodal.load("video").denoise(clip) * 65535), 0, 65535)
    assert np.abs(out - expected).max() <= 1
    write_clip(tmp_path / "five.tif", np.zeros((2, 5, 8, 8), np.float32))  # more than 4 channels: a channel axis
    assert read_clip(tmp_path / "five.tif")[1].layout == "TCHW"
    write_clip(tmp_path / "two.npy", clip, info)  # .npy keeps channels last
    assert np.load(tmp_path / "two.npy").shape == (4, 24, 24, 2)


def test_depth_stacks_over_time_are_clips_of_planes(tmp_path):
    """A ``TZYX`` hyperstack (a z-stack per time point): each plane is denoised over time, the axes, the slice spacing
    and the frame interval written back as they came, and into OME as physical sizes."""
    data = _clip((3, 4, 20, 20), "uint16")
    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, data, imagej=True, resolution=(1 / 0.2, 1 / 0.2),
                     metadata={"axes": "TZYX", "spacing": 0.5, "finterval": 30.0, "unit": "um"})
    assert is_clip(src) and _default_video_model(src) == "video_gray"
    clip, info = read_clip(src)
    assert info.layout == "TCHW" and clip.shape == (3, 4, 20, 20) and dict(info.tiff)["planes"] == "Z"
    assert main([str(src), "-o", str(tmp_path / "out"), "--modality", "video", "--sigma", "none", "--quiet"]) == 0
    with tifffile.TiffFile(tmp_path / "out" / "cells.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "TZYX" and tif.series[0].shape == (3, 4, 20, 20)
        assert (tif.imagej_metadata["spacing"], tif.imagej_metadata["finterval"]) == (0.5, 30.0)
        out = tif.asarray()
    # each plane denoised over time as a channel (motion found once per time point, on the planes' mean)
    expected = xmodal.load("video").denoise(clip)
    assert np.abs(out - np.clip(np.rint(expected * 65535), 0, 65535)).max() <= 1
    write_clip(tmp_path / "cells.ome.tif", clip, info)
    with tifffile.TiffFile(tmp_path / "cells.ome.tif") as tif:
        assert tif.is_ome and tif.series[0].axes == "TZYX" and np.array_equal(tif.asarray(), data)
        for key, value in {"PhysicalSizeZ": 0.5, "PhysicalSizeX": 0.2, "TimeIncrement": 30.0}.items():
            assert f'{key}="{value}"' in tif.ome_metadata


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_depth_and_channel_hyperstacks_are_clips_of_their_planes(tmp_path, compression):
    """ImageJ's full hyperstack (``TZCYX``): each time point's depth x channel planes are its frame's channels, in
    storage order, and are written back with the same axes."""
    data = _clip((3, 2, 3, 16, 16), "uint8")
    tifffile.imwrite(tmp_path / "h.tif", data, imagej=True, compression=compression, metadata={"axes": "TZCYX"})
    clip, info = read_clip(tmp_path / "h.tif")
    assert clip.shape == (3, 6, 16, 16) and np.array_equal(clip, data.reshape(3, 6, 16, 16) / np.float32(255))
    assert dict(info.tiff)["planes"] == "ZC" and dict(info.tiff)["plane_shape"] == (2, 3)
    write_clip(tmp_path / "back.tif", clip, info)
    with tifffile.TiffFile(tmp_path / "back.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "TZCYX" and np.array_equal(tif.asarray(), data)
    write_clip(tmp_path / "five.tif", clip[:, :5], info)  # not the source's depth x channels: a channel axis
    with tifffile.TiffFile(tmp_path / "five.tif") as tif:
        assert tif.series[0].axes == "TCYX" and np.array_equal(tif.asarray(), data.reshape(3, 6, 16, 16)[:, :5])


def test_tiff_clips_keep_their_display_and_channel_names(tmp_path):
    """What Fiji shows a two-colour time-lapse with (composite mode, each channel's display range and LUT, slice
    labels) and OME's channel names, colours and wavelengths come through denoising; a clip of another channel count
    leaves the per-channel ones out."""
    data = _clip((3, 2, 16, 16), "uint16")
    green, magenta = np.zeros((3, 256), np.uint8), np.zeros((3, 256), np.uint8)
    green[1], magenta[0], magenta[2] = np.arange(256), np.arange(256), np.arange(256)
    labels = [f"t{t}c{c}" for t in range(3) for c in range(2)]
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True,
                     metadata={"axes": "TCYX", "mode": "composite", "Ranges": (100.0, 3000.0, 50.0, 9000.0),
                               "LUTs": [green, magenta], "Labels": labels})
    assert main([str(tmp_path / "ij.tif"), "-o", str(tmp_path / "out"), "--modality", "video", "--sigma", "none",
                 "--quiet"]) == 0
    with tifffile.TiffFile(tmp_path / "out" / "ij.tif") as tif:
        meta = tif.imagej_metadata
        assert (meta["mode"], meta["Ranges"], meta["Labels"]) == ("composite", (100.0, 3000.0, 50.0, 9000.0), labels)
        assert np.array_equal(meta["LUTs"][0], green) and np.array_equal(meta["LUTs"][1], magenta)
    clip, info = read_clip(tmp_path / "ij.tif")
    write_clip(tmp_path / "three.tif", np.concatenate([clip, clip[:, :1]], axis=1), info)
    with tifffile.TiffFile(tmp_path / "three.tif") as tif:
        assert tif.imagej_metadata["mode"] == "composite"
        assert not {"Ranges", "LUTs", "Labels"} & set(tif.imagej_metadata)
    channel = {"Name": ["DAPI", "GFP"], "Color": [-16776961, 16711935], "EmissionWavelength": [461.0, 510.0]}
    tifffile.imwrite(tmp_path / "o.ome.tif", data, ome=True, metadata={"axes": "TCYX", "Channel": channel})
    clip, info = read_clip(tmp_path / "o.ome.tif")
    write_clip(tmp_path / "o_out.ome.tif", clip, info)
    with tifffile.TiffFile(tmp_path / "o_out.ome.tif") as tif:
        for n in range(2):
            assert (f'Name="{channel["Name"][n]}"' in tif.ome_metadata and f'Color="{channel["Color"][n]}"'
                    in tif.ome_metadata and f'EmissionWavelength="{channel["EmissionWavelength"][n]}"'
                    in tif.ome_metadata)
    write_clip(tmp_path / "one.ome.tif", clip[:, :1], info)
    with tifffile.TiffFile(tmp_path / "one.ome.tif") as tif:
        assert "DAPI" not in tif.ome_metadata


def test_evaluate_denoises_photon_data_as_the_denoise_command_does(tmp_path, capsys):
    from xmodal.evaluate import main as evaluate_main

    for folder in ("clean", "noisy"):
        (tmp_path / folder).mkdir()
    yy, xx = np.mgrid[0:32, 0:40] / 32.0
    lam = np.stack([30 * (0.5 + 0.45 * np.sin(3 * xx + 0.2 * t) * np.cos(2 * yy)) for t in range(4)])
    counts = np.random.default_rng(3).poisson(lam).astype(np.uint16)
    tifffile.imwrite(tmp_path / "clean" / "c.tif", np.rint(lam).astype(np.uint16), imagej=True,
                     metadata={"axes": "TYX"})
    tifffile.imwrite(tmp_path / "noisy" / "c.tif", counts, imagej=True, metadata={"axes": "TYX"})
    result = evaluate_videos(tmp_path / "clean", tmp_path / "noisy", denoiser="video", poisson=65535.0)
    assert main([str(tmp_path / "noisy" / "c.tif"), "-o", str(tmp_path / "den"), "--modality", "video", "--poisson",
                 "65535", "--quiet"]) == 0
    by_cli = evaluate_videos(tmp_path / "clean", tmp_path / "noisy", enhanced_dir=tmp_path / "den")
    assert result["files"][0]["enhanced"]["psnr"] == pytest.approx(by_cli["files"][0]["enhanced"]["psnr"], abs=1e-6)
    assert result["mean"]["enhanced"]["psnr"] > result["mean"]["noisy"]["psnr"] + 10
    with pytest.raises(ValueError, match=r"`poisson` sets how the model denoises \(`denoiser`, --model\), not with "
                                         r"the enhanced files \(`enhanced_dir`, --enhanced\)"):
        evaluate_videos(tmp_path / "clean", tmp_path / "noisy", enhanced_dir=tmp_path / "den", poisson=30.0)
    for args, message in [(["--enhanced", str(tmp_path / "den"), "--poisson", "30"],
                           "error: --poisson sets how the model denoises (--model), not with the enhanced files "
                           "(--enhanced)"),
                          (["--model", "video", "--read-noise", "0.01"],
                           "error: --read-noise (0.01) is the Gaussian part of photon noise: it goes with --poisson"),
                          (["--model", "video", "--poisson", "lots"],
                           "argument --poisson: expected the photons at full scale (a number) or 'auto', got 'lots'")]:
        assert evaluate_main(["--clean", str(tmp_path / "clean"), "--noisy", str(tmp_path / "noisy"), "--modality",
                              "video", "--quiet", *args]) == 2
        assert message in capsys.readouterr().err
    assert evaluate_main(["--clean", str(tmp_path / "clean"), "--noisy", str(tmp_path / "noisy"), "--modality", "video",
                          "--model", "video", "--poisson", "65535", "--quiet", "--json", str(tmp_path / "r.json")]) == 0
    assert evaluate_main(["--noisy", str(tmp_path / "noisy"), "--model", "gray", "--read-noise", "0.01"]) == 2
    assert "error: --read-noise need(s) --clean" in capsys.readouterr().err
    assert evaluate_main(["--clean", str(tmp_path / "clean"), "--noisy", str(tmp_path / "noisy"), "--modality",
                          "speech", "--model", "speech", "--poisson", "30"]) == 2
    assert "error: --poisson do(es) not apply to speech evaluation" in capsys.readouterr().err
    reported = json.loads((tmp_path / "r.json").read_text())
    assert reported["mean"]["enhanced"]["psnr"] == pytest.approx(result["mean"]["enhanced"]["psnr"], abs=1e-6)


def test_evaluate_scores_a_float_clip_as_the_denoise_command_writes_it(tmp_path):
    """A float clip of photon counts (not [0, 1] data): the model denoises it in the range its reader finds, as the
    denoise command does (it was given the raw values as [0, 1] data: 4.7 dB against 43.1)."""
    for folder in ("clean", "noisy"):
        (tmp_path / folder).mkdir()
    yy, xx = np.mgrid[0:32, 0:40] / 32.0
    lam = np.stack([150 + 100 * np.sin(3 * xx + 0.2 * t) * np.cos(2 * yy) for t in range(4)]).astype(np.float32)
    noisy = np.random.default_rng(4).poisson(lam).astype(np.float32)
    tifffile.imwrite(tmp_path / "clean" / "c.tif", lam, imagej=True, metadata={"axes": "TYX"})
    tifffile.imwrite(tmp_path / "noisy" / "c.tif", noisy, imagej=True, metadata={"axes": "TYX"})
    result = evaluate_videos(tmp_path / "clean", tmp_path / "noisy", denoiser="video", data_range=300.0)
    assert main([str(tmp_path / "noisy" / "c.tif"), "-o", str(tmp_path / "den"), "--modality", "video", "--quiet"]) == 0
    by_cli = evaluate_videos(tmp_path / "clean", tmp_path / "noisy", enhanced_dir=tmp_path / "den", data_range=300.0)
    assert result["mean"]["enhanced"]["psnr"] == pytest.approx(by_cli["mean"]["enhanced"]["psnr"], abs=1e-4)
    assert result["mean"]["enhanced"]["psnr"] > result["mean"]["noisy"]["psnr"]


def test_a_stray_image_among_tiff_stacks_is_reported_on_its_own(tmp_path, capsys):
    folder = tmp_path / "wells"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", _clip((16, 16), "uint16"))  # a single image, first in name order
    tifffile.imwrite(folder / "b.tif", _clip((3, 16, 16), "uint16"), imagej=True, metadata={"axes": "TYX"})
    assert main([str(folder), "-o", str(tmp_path / "out"), "--modality", "video", "--sigma", "none", "--quiet"]) == 1
    assert "a.tif: a TIFF clip holds one frame per page" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["b.tif"]


def test_ome_outputs_carry_an_imagej_source_s_calibration_and_refuse_clearly(tmp_path):
    data = _clip((4, 8, 8), "uint16")
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, resolution=(1 / 0.65, 1 / 0.65),
                     metadata={"axes": "TYX", "finterval": 2.5, "unit": "um"})
    clip, info = read_clip(tmp_path / "ij.tif")
    write_clip(tmp_path / "ij.ome.tif", clip, info)
    with tifffile.TiffFile(tmp_path / "ij.ome.tif") as tif:
        assert tif.is_ome and np.array_equal(tif.asarray(), data)
        for text in ('PhysicalSizeX="0.649999', 'PhysicalSizeXUnit="µm"', 'TimeIncrement="2.5"',
                     'TimeIncrementUnit="s"'):
            assert text in tif.ome_metadata
    two = _clip((3, 8, 8, 2), "float32")  # 2 channels last: an OME channel axis
    write_clip(tmp_path / "two.ome.tif", two.transpose(0, 3, 1, 2))
    with tifffile.TiffFile(tmp_path / "two.ome.tif") as tif:
        assert tif.series[0].axes == "TCYX" and np.array_equal(tif.asarray(), two.transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match=r"half.ome.tif: a float16 clip of 1 channel\(s\) cannot be written as an "
                                         r"OME-TIFF \("):
        ClipWriter(tmp_path / "half.ome.tif", replace(info, dtype="float16", tiff=()), (2, 1, 8, 8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ij.ome.tif", "ij.tif", "two.ome.tif"]


def test_twelve_bit_clips_in_16_bit_files_are_denoised_in_their_own_range(tmp_path):
    """A time-lapse from a 12-bit camera in a 16-bit TIFF (values below a quarter of 65535) is mapped from its own
    percentiles, as a 16-bit image is; ``evaluate --model`` denoises it the same way."""
    from xmodal.denoise import sampled_clip_range

    yy, xx = np.mgrid[:32, :32] / 32
    clean = np.stack([2048 + 1500 * np.sin(6 * xx + 0.3 * t) * np.cos(4 * yy) for t in range(4)])
    noisy = np.clip(np.rint(clean + np.random.default_rng(5).normal(0, 150, clean.shape)), 0, 4095).astype(np.uint16)
    for folder, data in (("clean", np.rint(clean).astype(np.uint16)), ("noisy", noisy)):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(tmp_path / folder / "cells.tif", data, imagej=True, metadata={"axes": "TYX"})
    clip, _ = read_clip(tmp_path / "noisy" / "cells.tif")
    lo, hi = sampled_clip_range(clip, "uint16")
    assert 0 <= lo < hi < 4096 / 65535
    assert main([str(tmp_path / "noisy" / "cells.tif"), "-o", str(tmp_path / "out"), "--modality", "video",
                 "--sigma", "none", "--quiet"]) == 0
    expected = np.clip(np.rint(xmodal.load("video").denoise(clip, value_range=(lo, hi)) * 65535), 0, 65535)[:, 0]
    out = tifffile.imread(tmp_path / "out" / "cells.tif").astype(np.float64)
    assert np.abs(out - expected).max() <= 1
    assert np.sqrt(np.mean((out - clean) ** 2)) < 0.5 * np.sqrt(np.mean((noisy - clean) ** 2))
    assert main([str(tmp_path / "noisy" / "cells.tif"), "-o", str(tmp_path / "den"), "--modality", "video",
                 "--quiet"]) == 0
    by_model = evaluate_videos(tmp_path / "clean", tmp_path / "noisy", denoiser="video")
    by_cli = evaluate_videos(tmp_path / "clean", tmp_path / "noisy", enhanced_dir=tmp_path / "den")
    assert by_model["files"][0]["enhanced"]["psnr"] == pytest.approx(by_cli["files"][0]["enhanced"]["psnr"], abs=1e-6)


def test_ensemble_is_said_not_to_apply_to_clips(tmp_path):
    data = _clip((3, 16, 16), "float32")
    np.save(tmp_path / "a.npy", data)
    argv = [str(tmp_path / "a.npy"), "--modality", "video", "--sigma", "none", "--quiet"]
    assert main([*argv, "-o", str(tmp_path / "plain")]) == 0
    with pytest.warns(UserWarning, match=r"a.npy: --ensemble does not apply to a clip: not used for it"):
        assert main([*argv, "-o", str(tmp_path / "ens"), "--ensemble"]) == 0
    assert np.array_equal(np.load(tmp_path / "ens" / "a.npy"), np.load(tmp_path / "plain" / "a.npy"))


def test_a_time_lapse_keeps_its_pace_in_a_video_file(tmp_path):
    """A time-lapse's frame interval (ImageJ) or time increment (OME, any unit) is its frame rate: a video file
    written from it plays at that pace; a z-stack has none."""
    import av  # a [dev] dependency: a missing install fails, it does not skip
    data = _clip((4, 16, 16), "uint8")
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, metadata={"axes": "TYX", "finterval": 0.5})
    tifffile.imwrite(tmp_path / "ome.ome.tif", data, ome=True,
                     metadata={"axes": "TYX", "TimeIncrement": 250, "TimeIncrementUnit": "ms"})
    tifffile.imwrite(tmp_path / "z.tif", data, imagej=True, metadata={"axes": "ZYX", "spacing": 0.5})
    assert [read_clip(tmp_path / n)[1].fps for n in ("ij.tif", "ome.ome.tif", "z.tif")] == [2.0, 4.0, None]
    clip, info = read_clip(tmp_path / "ij.tif")
    write_clip(tmp_path / "ij.mkv", clip, info)
    with av.open(str(tmp_path / "ij.mkv")) as container:
        assert container.streams.video[0].average_rate == 2
