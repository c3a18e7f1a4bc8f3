"""MATLAB ``.mat`` and ENVI band stacks (:mod:`xmodal.stackio`): exact round trips against the reference readers and
writers (SciPy, h5py, the ``spectral`` package), what is kept of the source, and every error message."""

from __future__ import annotations

import gzip
import math
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
import tifffile

from xmodal.imageio import ImageReadError, read_stack, write_stack
from xmodal.stackio import check_container, envi_data_path, split_variable, write_container

h5py = pytest.importorskip("h5py")  # part of the dev extra, so CI runs these
envi = pytest.importorskip("spectral.io.envi")

H, W, S = 13, 11, 6  # odd sizes, bands fewer than both


def cube(dtype: str = "uint16", shape: tuple[int, ...] = (H, W, S), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.random(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def write_mat73(path: Path, variables: dict[str, np.ndarray]) -> None:
    """A MATLAB 7.3 file as MATLAB writes one: HDF5 after a 512-byte user block holding the MAT header, each array
    stored reversed (column-major) with its ``MATLAB_class``."""
    classes = {"float64": "double", "float32": "single", "uint16": "uint16", "uint8": "uint8", "int16": "int16"}
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, arr in variables.items():
            f.create_dataset(name, data=np.ascontiguousarray(arr.T), compression="gzip")
            f[name].attrs["MATLAB_class"] = np.bytes_(classes[arr.dtype.name])
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Dec  3 06:00:00 2026 HDF5 schema 1.00 ."
    with open(path, "r+b") as f:
        f.write(text.ljust(116) + b"\x00" * 8 + struct.pack("<H", 0x0200) + b"IM")


def roundtrip(src: Path | str, dst: Path, scaling: str = "band_minmax") -> tuple[np.ndarray, object]:
    stack, info = read_stack(src, scaling)
    write_stack(dst, stack, info)
    return stack, info


# --------------------------------------------------------------------------------------------------------------- .mat


@pytest.mark.parametrize("compressed", [True, False])
@pytest.mark.parametrize("dtype", ["uint16", "int16", "float32", "float64", "uint8"])
def test_mat_round_trip_keeps_the_array_and_every_other_variable(tmp_path, compressed, dtype):
    import scipy.sparse

    data = cube(dtype)
    others = {"wavelength": np.linspace(400.0, 1000.0, S)[None], "note": "AVIRIS-like",
              "meta": {"sensor": "x", "gain": np.array([[2.5]])}, "mask": cube("uint8", (H, W)) > 100,
              "weights": scipy.sparse.random(5, 4, 0.3, format="csc", random_state=0)}
    sio.savemat(tmp_path / "scene.mat", {"cube": data, **others}, do_compression=compressed)
    exact = "dtype" if data.dtype.kind == "f" else "band_minmax"  # floats: identity; integers: undone and rounded
    stack, info = roundtrip(tmp_path / "scene.mat", tmp_path / "out.mat", exact)
    assert stack.shape == (S, H, W) and info.interleaved and info.band_names[0] == "band_01"
    c = info.container
    assert (c.format, c.variable, c.mat_version, c.compressed) == ("mat", "cube", "5", compressed)
    out = sio.loadmat(tmp_path / "out.mat")
    src = sio.loadmat(tmp_path / "scene.mat")
    assert out["cube"].dtype == data.dtype and out["cube"].shape == (H, W, S)
    np.testing.assert_array_equal(out["cube"], data.astype(np.float32).astype(data.dtype))  # stacks are float32
    assert sorted(k for k in out if not k.startswith("__")) == ["cube", "mask", "meta", "note", "wavelength", "weights"]
    np.testing.assert_array_equal(out["wavelength"], src["wavelength"])
    # the other variables are copied as written: a logical mask stays logical (SciPy would rewrite it as uint8)
    assert sio.whosmat(tmp_path / "out.mat") == sio.whosmat(tmp_path / "scene.mat")
    np.testing.assert_array_equal(out["mask"], src["mask"])
    assert (out["weights"] != src["weights"]).nnz == 0
    assert out["note"][0] == "AVIRIS-like" and out["meta"]["gain"][0, 0][0, 0] == 2.5
    with open(tmp_path / "out.mat", "rb") as f:  # MATLAB 7's zlib elements (tag 15) only where the source had them
        assert (struct.unpack("<I", f.read(132)[128:])[0] == 15) == compressed


@pytest.mark.parametrize("shape", [(8, 8, 8), (100, 145, 200), (30, 60, 31), (145, 145, 200), (40, 119, 120),
                                   (10, 100, 200), (31, 512, 512)])
def test_mat_is_read_in_matlab_order(tmp_path, shape):
    """Always MATLAB's (rows, columns, bands): crops with few rows included (an audit found (100, 145, 200), an ICVL
    crop (30, 60, 31) and then (10, 100, 200) read with rows as bands). An array whose first axis is at most a third
    of both others may have been saved bands first from Python: read the same way, with a warning that says so. A
    stack xmodal writes to a new .mat reads back the same."""
    data = cube("uint16", shape)
    sio.savemat(tmp_path / "x.mat", {"x": data})
    thin = 3 * shape[0] <= min(shape[1:])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stack, info = read_stack(tmp_path / "x.mat", "dtype")
    np.testing.assert_array_equal(stack * 65535, data.transpose(2, 0, 1))
    assert info.interleaved  # bands last, as stored
    said = [str(w.message) for w in caught]
    assert said == ([f"{tmp_path / 'x.mat'}: 'x' of shape {shape} is read in MATLAB's order, (rows, columns, "
                     f"bands): {shape[2]} bands of {shape[0]} x {shape[1]}; if it was saved bands first from Python, "
                     "save it as (rows, columns, bands) (or as .npy) instead"] if thin else []), said
    np.save(tmp_path / "x.npy", data.transpose(2, 0, 1))  # the same bands from another format, into a new .mat
    roundtrip(tmp_path / "x.npy", tmp_path / "new.mat", "dtype")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(read_stack(tmp_path / "new.mat", "dtype")[0] * 65535, data.transpose(2, 0, 1))


def test_mat_2d_array_is_one_band(tmp_path):
    sio.savemat(tmp_path / "band.mat", {"x": cube("uint8", (9, 7)), "label": np.zeros((1, 1))})
    stack, _ = roundtrip(tmp_path / "band.mat", tmp_path / "band_out.mat", "dtype")
    assert stack.shape == (1, 9, 7)  # a 2-D array is one band, and stays 2-D
    assert sio.loadmat(tmp_path / "band_out.mat")["x"].shape == (9, 7)


def test_mat_variable_choice_and_its_errors(tmp_path):
    gt, noisy = cube("float32"), cube("float32", seed=1)
    sio.savemat(tmp_path / "pair.mat", {"gt": gt, "input": noisy, "name": "x", "bands": np.arange(S)[None]})
    with pytest.raises(ImageReadError, match=r"pair.mat: holds several arrays that could be the stack \(gt 13x11x6 "
                                             r"single, input 13x11x6 single\); name one: .*pair.mat:gt"):
        read_stack(tmp_path / "pair.mat")
    stack, info = read_stack(f"{tmp_path / 'pair.mat'}:input")
    np.testing.assert_array_equal(stack, noisy.transpose(2, 0, 1))
    assert info.container.variable == "input" and split_variable(f"{tmp_path}/pair.mat:input")[1] == "input"
    write_stack(tmp_path / "out.mat", stack * 0 + 0.5, info)  # the other arrays stay as they were
    out = sio.loadmat(tmp_path / "out.mat")
    np.testing.assert_array_equal(out["gt"], gt)
    assert (out["input"] == 0.5).all()
    with pytest.raises(ImageReadError, match=r"pair.mat: no variable 'nope' \(the file holds: gt 13x11x6 single, "
                                             r"input 13x11x6 single, name 1 char, bands 1x6 int64\)"):
        read_stack(f"{tmp_path / 'pair.mat'}:nope")
    with pytest.raises(ImageReadError, match=r"pair.mat: variable 'name' is 1 char; expected a non-empty numeric "
                                             r"2-D or 3-D array"):
        read_stack(f"{tmp_path / 'pair.mat'}:name")
    sio.savemat(tmp_path / "none.mat", {"name": "x", "v": np.arange(4)[None], "flag": np.array([[True]])})
    with pytest.raises(ImageReadError, match=r"none.mat: no numeric 3-D array \(or 2-D image\) to read as a stack "
                                             r"\(the file holds: name 1 char, v 1x4 int64, flag 1x1 logical\)"):
        read_stack(tmp_path / "none.mat")
    with pytest.raises(ImageReadError, match=r"missing.mat:gt: file or folder not found"):
        read_stack(f"{tmp_path / 'missing.mat'}:gt")


def test_mat_bad_files(tmp_path):
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(ImageReadError, match=r"junk.mat: not a MATLAB .mat file"):
        read_stack(tmp_path / "junk.mat")
    sio.savemat(tmp_path / "cut.mat", {"x": cube()}, do_compression=False)
    data = (tmp_path / "cut.mat").read_bytes()
    (tmp_path / "cut.mat").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"cut.mat: not readable as a MATLAB .mat file"):
        read_stack(tmp_path / "cut.mat")
    sio.savemat(tmp_path / "wide.mat", {"x": cube("uint32")})
    with pytest.raises(ImageReadError, match=r"wide.mat: unsupported dtype uint32 \(expected uint8, uint16, int8"):
        read_stack(tmp_path / "wide.mat", "band_minmax")
    bad = cube("float32")
    bad[1, 2, 3] = np.nan
    sio.savemat(tmp_path / "nan.mat", {"x": bad})
    with pytest.raises(ImageReadError, match=r"nan.mat: float data contains NaN or infinite values$"):
        read_stack(tmp_path / "nan.mat")


def test_mat73_read_and_write_back_in_place(tmp_path):
    data, other = cube("uint16", (20, 17, 9)), np.arange(12.0).reshape(3, 4)
    write_mat73(tmp_path / "v73.mat", {"rad": data, "other": other})
    stack, info = read_stack(tmp_path / "v73.mat", "dtype")
    np.testing.assert_array_equal(stack * 65535, data.transpose(2, 0, 1))
    assert info.container.mat_version == "7.3" and info.container.variable == "rad"
    write_stack(tmp_path / "out.mat", np.clip(stack + 0.01, 0, 1), info)
    assert sio.matlab.matfile_version(str(tmp_path / "out.mat"))[0] == 2  # still 7.3
    with h5py.File(tmp_path / "out.mat", "r") as f:
        np.testing.assert_array_equal(f["other"][()].T, other)  # untouched
        assert f["rad"].attrs["MATLAB_class"] == b"uint16" and f["rad"].compression == "gzip"
        expected = np.clip(np.rint(np.clip(stack + 0.01, 0, 1) * 65535), 0, 65535).astype(np.uint16)
        np.testing.assert_array_equal(f["rad"][()].T, expected.transpose(1, 2, 0))
    with pytest.raises(ValueError, match=r"crop.mat: the stack is 9 x 5 x 17 but .*v73.mat's 'rad' holds 20 x 17 x 9 "
                                         r"\(an array of a 7.3 file is replaced in place\); write it to a new file"):
        write_stack(tmp_path / "crop.mat", stack[:, :5], info)
    assert not (tmp_path / "crop.mat").exists()
    raw = (tmp_path / "v73.mat").read_bytes()
    (tmp_path / "cut73.mat").write_bytes(raw[:1024])  # the MAT header says 7.3; the HDF5 part is cut short
    with pytest.raises(ImageReadError, match=r"cut73.mat: not readable as a MATLAB 7.3 \(HDF5\) file"):
        read_stack(tmp_path / "cut73.mat")
    import sys

    with pytest.MonkeyPatch.context() as mp:  # h5py missing: the 7.3 file says what it needs
        mp.setitem(sys.modules, "h5py", None)
        with pytest.raises(ImportError, match=r"MATLAB 7.3 .mat files are HDF5 files and need h5py: pip install h5py"):
            read_stack(tmp_path / "v73.mat")
    write_mat73(tmp_path / "two.mat", {"a": data, "b": data})
    with pytest.raises(ImageReadError, match=r"two.mat: holds several arrays that could be the stack \(a 20x17x9 "
                                             r"uint16, b 20x17x9 uint16\)"):
        read_stack(tmp_path / "two.mat")


def test_mat_version_4_is_written_back_as_version_5_by_scipy(tmp_path, monkeypatch):
    band, other = cube("float64", (9, 7)), np.arange(6.0).reshape(2, 3)
    sio.savemat(tmp_path / "v4.mat", {"x": band, "other": other}, format="4")
    stack, info = read_stack(f"{tmp_path / 'v4.mat'}:x", "dtype")
    assert info.container.mat_version == "4" and stack.shape == (1, 9, 7)
    write_stack(tmp_path / "out.mat", stack, info)
    assert sio.matlab.matfile_version(str(tmp_path / "out.mat"))[0] == 1  # version 5
    out = sio.loadmat(tmp_path / "out.mat")
    np.testing.assert_array_equal(out["x"], band.astype(np.float32).astype(np.float64))
    np.testing.assert_array_equal(out["other"], other)

    def refuse(*args, **kwargs):
        raise ValueError("cannot write this")

    monkeypatch.setattr(sio, "savemat", refuse)
    with pytest.raises(ValueError, match=r"out2.mat: SciPy cannot write the other variables of .*v4.mat as a .mat "
                                         r"file \(cannot write this\); write a .hdr, .tif or .npy file instead"):
        write_stack(tmp_path / "out2.mat", stack, info)
    assert not (tmp_path / "out2.mat").exists()
    with pytest.raises(ValueError, match=r"o.png: expected a .mat, .hdr, .nii or .nii.gz destination, got '.png'"):
        write_container(tmp_path / "o.png", np.zeros((1, 2, 2), np.uint8), None)


def test_other_formats_to_mat_and_mat_to_others(tmp_path):
    data = cube("uint16", (S, H, W))
    tifffile.imwrite(tmp_path / "s.tif", data, photometric="minisblack", planarconfig="separate")
    roundtrip(tmp_path / "s.tif", tmp_path / "s.mat")
    out = sio.loadmat(tmp_path / "s.mat")  # a new file: `data`, MATLAB's (rows, columns, bands)
    np.testing.assert_array_equal(out["data"], data.transpose(1, 2, 0))
    roundtrip(tmp_path / "s.mat", tmp_path / "back.tif")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "back.tif").reshape(H, W, S), out["data"])
    roundtrip(tmp_path / "s.mat", tmp_path / "back.npy")  # stored bands last, written bands last
    np.testing.assert_array_equal(np.load(tmp_path / "back.npy"), out["data"])


# --------------------------------------------------------------------------------------------------------------- ENVI


@pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
@pytest.mark.parametrize("byteorder", [0, 1])
@pytest.mark.parametrize("dtype", ["uint16", "int16", "float32", "float64", "uint8"])
def test_envi_matches_the_spectral_package_both_ways(tmp_path, interleave, byteorder, dtype):
    data = cube(dtype)  # spectral's (rows, columns, bands)
    meta = {"wavelength": [f"{w:.1f}" for w in np.linspace(400, 900, S)], "description": "test scene",
            "band names": [f"B{i}" for i in range(S)], "map info": "{UTM, 1, 1, 500000, 4000000, 30, 30, 33, North}"}
    envi.save_image(str(tmp_path / "s.hdr"), data, interleave=interleave, byteorder=byteorder, ext=".dat",
                    metadata=meta)
    stack, info = roundtrip(tmp_path / "s.hdr", tmp_path / "o.hdr",
                            "dtype" if data.dtype.kind == "f" else "band_minmax")
    assert stack.shape == (S, H, W) and info.band_names == tuple(f"B{i}" for i in range(S))
    assert (info.container.interleave, info.container.big_endian) == (interleave, bool(byteorder))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.dat", "o.hdr", "s.dat", "s.hdr"]  # data suffix kept
    back, src = envi.open(str(tmp_path / "o.hdr")), envi.open(str(tmp_path / "s.hdr"))
    np.testing.assert_array_equal(np.asarray(back.load()), data.astype(np.float32).astype(data.dtype))  # exact
    assert back.metadata["interleave"] == interleave and back.metadata["byte order"] == str(byteorder)
    for key in ("wavelength", "description", "band names", "map info"):  # the source's fields, as spectral reads them
        assert back.metadata[key] == src.metadata[key], key


def test_envi_header_offset_data_without_extension_and_nodata(tmp_path):
    data = cube("int16", (S, H, W))
    data[:, 0, :3] = -9999
    (tmp_path / "scene").write_bytes(b"\x00" * 64 + data.astype("<i2").tobytes())  # BSQ after a 64-byte offset
    (tmp_path / "scene.hdr").write_text("ENVI\ndescription = {multi-line\n  description}\nsamples = 11\n"
                                        "lines = 13\nbands = 6\nheader offset = 64\nfile type = ENVI Standard\n"
                                        "data type = 2\ninterleave = bsq\nbyte order = 0\ndata ignore value = -9999\n"
                                        "wavelength = {\n 450, 550,\n 650, 750, 850, 950}\n")
    stack, info = read_stack(tmp_path / "scene.hdr", "band_minmax")
    assert info.nodata == (-9999.0,) * S and info.offset[0] == data[0][data[0] != -9999].min()  # left out
    assert info.container.data_suffix == ""
    write_stack(tmp_path / "out.hdr", stack, info)
    assert (tmp_path / "out").is_file() and (tmp_path / "out").stat().st_size == data.nbytes  # offset 0 now
    np.testing.assert_array_equal(np.fromfile(tmp_path / "out", "<i2").reshape(S, H, W), data)
    text = (tmp_path / "out.hdr").read_text()
    assert "header offset = 0\n" in text and "data ignore value = -9999\n" in text
    assert "wavelength = {\n 450, 550,\n 650, 750, 850, 950}\n" in text and "description = {multi-line\n" in text
    # scene.img.hdr names its data file scene.img
    (tmp_path / "two.img").write_bytes(data.astype("<i2").tobytes())
    (tmp_path / "two.img.hdr").write_text("ENVI\nsamples = 11\nlines = 13\nbands = 6\ndata type = 2\n")
    stack2, info2 = read_stack(tmp_path / "two.img.hdr", "band_minmax")
    np.testing.assert_array_equal(stack2, read_stack(tmp_path / "scene.hdr", "band_minmax")[0])
    assert envi_data_path(tmp_path / "x.img.hdr", info2.container) == tmp_path / "x.img"
    assert envi_data_path(tmp_path / "x.hdr", info2.container) == tmp_path / "x.img"


def test_stack_from_a_tiff_becomes_a_new_envi_raster(tmp_path):
    data = cube("float32", (S, H, W))
    folder = tmp_path / "bands"
    folder.mkdir()
    for i in range(S):
        tifffile.imwrite(folder / f"B{i + 1}.tif", data[i])
    roundtrip(folder, tmp_path / "new.hdr", "dtype")
    img = envi.open(str(tmp_path / "new.hdr"))
    np.testing.assert_array_equal(np.asarray(img.load()), data.transpose(1, 2, 0))
    assert img.metadata["band names"] == [f"B{i + 1}" for i in range(S)] and img.metadata["interleave"] == "bsq"
    assert (tmp_path / "new.img").is_file()
    stack, info = read_stack(folder, "dtype")
    with pytest.raises(ValueError, match=r"i8.hdr: an ENVI stack holds uint8, int16, uint16, float32, float64 bands, "
                                         r"not int8; write a .tif, .npy or .mat file instead"):
        write_stack(tmp_path / "i8.hdr", stack, type(info)(**{**info.__dict__, "dtype": ("int8",) * S}))
    assert not (tmp_path / "i8.hdr").exists() and not (tmp_path / "i8.img").exists()


def test_envi_write_is_all_or_nothing(tmp_path):
    data = cube("uint16", (S, H, W))
    np.save(tmp_path / "s.npy", data)
    stack, info = read_stack(tmp_path / "s.npy")
    (tmp_path / "o.img").mkdir()  # the data file cannot be written: no header may appear
    with pytest.raises(IsADirectoryError):
        write_stack(tmp_path / "o.hdr", stack, info)
    assert sorted(os.listdir(tmp_path)) == ["o.img", "s.npy"] and os.listdir(tmp_path / "o.img") == []


HEADER = "ENVI\nsamples = 4\nlines = 3\nbands = 2\ndata type = 12\n"


@pytest.mark.parametrize("header, data, message", [
    ("ENVX\n", 48, r"h.hdr: not an ENVI header \(its first line is not 'ENVI'\)"),
    ("ENVI\nlines = 3\nbands = 2\ndata type = 12\n", 48, r"h.hdr: the header has no 'samples' field"),
    (HEADER.replace("lines = 3", "lines = three"), 48, r"h.hdr: lines = 'three', expected an integer"),
    (HEADER.replace("bands = 2", "bands = 0"), 48, r"h.hdr: bands = 0, expected at least 1"),
    (HEADER.replace("= 12", "= 6"), 48, r"h.hdr: data type = 6 \(complex64\) cannot be read as a stack \(expected 1 "
                                        r"\(uint8\), 2 \(int16\), 12 \(uint16\), 4 \(float32\), 5 \(float64\); "
                                        r"complex data cannot be denoised\)"),
    (HEADER.replace("= 12", "= 3"), 96, r"h.hdr: data type = 3 \(int32\) cannot be read as a stack \(expected 1 .*5 "
                                        r"\(float64\); convert the raster to one of these first\)"),
    (HEADER.replace("= 12", "= 7"), 96, r"h.hdr: data type = 7 cannot be read as a stack \(expected 1 .*5 "
                                        r"\(float64\)\)$"),
    (HEADER + "interleave = bxx\n", 48, r"h.hdr: interleave = 'bxx', expected bsq, bil or bip"),
    (HEADER + "byte order = 2\n", 48, r"h.hdr: byte order = 2, expected 0 \(little endian\) or 1 \(big endian\)"),
    (HEADER + "wavelength = {1, 2,\n", 48, r"h.hdr: field 'wavelength' opens a '\{' list that is never closed"),
    (HEADER + "data ignore value = none\n", 48, r"h.hdr: data ignore value = 'none', expected a number"),
    (HEADER, 47, r"h.img: 47 bytes, but .*h.hdr describes 48 \(2 bands of 3 x 4 uint16 after a 0-byte offset\)"),
    (HEADER, None, r"h.hdr: no data file beside this ENVI header \(looked for h with extensions \(none\), .img"),
])
def test_envi_errors(tmp_path, header, data, message):
    """Every refusal of a header or data file, by read_stack and by the check run before any work (check_container),
    with the same message."""
    (tmp_path / "h.hdr").write_text(header)
    if data is not None:
        (tmp_path / "h.img").write_bytes(b"\x01" * data)
    with pytest.raises(ImageReadError, match=message):
        read_stack(tmp_path / "h.hdr", "band_minmax")
    with pytest.raises(ImageReadError, match=message):
        check_container(tmp_path / "h.hdr")


def test_envi_header_with_a_byte_order_mark_and_lower_case_magic(tmp_path):
    data = cube("uint16", (2, 3, 4))
    data.astype("<u2").tofile(tmp_path / "a.img")
    for text in ("\ufeffENVI\n", "envi\r\n"):  # a BOM, as some Windows tools write; CRLF lines
        (tmp_path / "a.hdr").write_text(text + "samples = 4\nlines = 3\nbands = 2\ndata type = 12\n",
                                       encoding="utf-8")
        np.testing.assert_array_equal(read_stack(tmp_path / "a.hdr", "dtype")[0] * 65535, data)


def test_container_in_a_list_of_band_files_is_refused(tmp_path):
    sio.savemat(tmp_path / "a.mat", {"x": cube()})
    with pytest.raises(ImageReadError, match=r"a.mat: a list of band files takes TIFFs; read a .mat, .hdr or NIfTI "
                                             r"stack on its own"):
        read_stack([tmp_path / "a.mat"])


# -------------------------------------------------------------------------------------------------------------- NIfTI


def nifti(path: Path, volume: np.ndarray, endianness: str = "<", slope: float | None = None) -> None:
    """A NIfTI-1 file written by nibabel, the reference implementation, with an affine, a description and an
    extension; ``slope``: stored scaling (set on the header bytes: nibabel resets it for in-memory arrays)."""
    nib = pytest.importorskip("nibabel")
    header = nib.Nifti1Header(endianness=endianness)
    header.set_data_dtype(volume.dtype)
    img = nib.Nifti1Image(volume, np.diag([0.9, 0.9, 3.0, 1.0]), header)
    img.header["descrip"] = b"test volume"
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"kept as written"))
    raw = img.to_bytes()
    if slope is not None:
        order = endianness
        raw = raw[:112] + struct.pack(order + "ff", slope, 5.0) + raw[120:]
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
@pytest.mark.parametrize("dtype, endianness", [("int16", "<"), ("uint8", "<"), ("float32", ">"), ("uint16", ">")])
def test_nifti_round_trip_keeps_the_header_bytes(tmp_path, name, dtype, endianness):
    nib = pytest.importorskip("nibabel")
    volume = cube(dtype, (11, 13, 6))  # (X, Y, Z): 6 slices, stack[k] = volume[:, :, k]
    nifti(tmp_path / name, volume, endianness, slope=2.0)
    stack, info = read_stack(tmp_path / name, "dtype" if dtype[0] in "uf" and dtype != "int16" else "band_minmax")
    assert stack.shape == (6, 11, 13) and info.band_names[:2] == ("slice_001", "slice_002")
    scaled = (volume.astype(np.float64) - np.array(info.offset)) / np.array(info.scale)  # per slice: (X, Y, Z)
    np.testing.assert_allclose(stack, scaled.transpose(2, 0, 1), rtol=1e-6, atol=1e-7)
    assert (info.container.slope, info.container.inter) == (2.0, 5.0)
    assert info.container.format == "nifti" and info.container.shape == (11, 13, 6)
    out = tmp_path / ("o" + name[1:])
    write_stack(out, stack, info)
    read = (lambda p: gzip.open(p).read()) if name.endswith(".gz") else (lambda p: p.read_bytes())
    src_bytes, out_bytes = read(tmp_path / name), read(out)
    offset = nib.load(str(tmp_path / name)).dataobj.offset
    assert out_bytes[:offset] == src_bytes[:offset]  # header, scaling (slope 2, intercept 5), extension, as written
    back = nib.load(str(out))
    np.testing.assert_array_equal(np.asanyarray(back.dataobj.get_unscaled()),
                                  volume.astype(np.float32).astype(dtype) if dtype == "float32" else volume)
    assert (back.dataobj.slope, back.dataobj.inter) == (2.0, 5.0)  # nibabel moves the scaling to the data proxy
    assert back.get_data_dtype() == np.dtype(dtype).newbyteorder(endianness)  # stored as the source stored them


def test_nifti_shapes_conversions_and_errors(tmp_path, monkeypatch):
    nib = pytest.importorskip("nibabel")
    nifti(tmp_path / "flat.nii", cube("int16", (11, 13)))  # one slice
    nifti(tmp_path / "single.nii", cube("int16", (11, 13, 4, 1)))  # a series of one volume
    nifti(tmp_path / "series.nii", cube("int16", (11, 13, 4, 3)))
    assert read_stack(tmp_path / "flat.nii", "band_minmax")[0].shape == (1, 11, 13)
    nifti(tmp_path / "five.nii", cube("uint8", (11, 13, 4, 1, 1)))  # trailing dimensions of 1
    assert read_stack(tmp_path / "five.nii", "dtype")[0].shape == (4, 11, 13)
    stack, info = roundtrip(tmp_path / "single.nii", tmp_path / "single_out.nii")
    assert nib.load(str(tmp_path / "single_out.nii")).shape == (11, 13, 4, 1)
    with pytest.raises(ImageReadError, match=r"series.nii: a volume of shape \(11, 13, 4, 3\); expected \(X, Y\) or "
                                             r"\(X, Y, Z\) \(trailing dimensions of 1 allowed\): split a series into "
                                             r"single volumes first \(nibabel's four_to_three, fslsplit\)"):
        read_stack(tmp_path / "series.nii")
    rgb = np.zeros((11, 13, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(tmp_path / "rgb.nii"))
    with pytest.raises(ImageReadError, match=r"rgb.nii: voxels of type .* \(RGB/RGBA NIfTI\); expected one value per "
                                             r"voxel: split the colour channels into volumes first"):
        read_stack(tmp_path / "rgb.nii")
    with pytest.raises(ValueError, match=r"crop.nii: the stack is 4 x 10 x 13 \(slices x X x Y\) but the header of "
                                         r".*single.nii describes 4 x 11 x 13; write it to a new .tif/.npy"):
        write_stack(tmp_path / "crop.nii", stack[:, :10], info)
    assert not (tmp_path / "crop.nii").exists()
    # .nii <-> .nii.gz keep the header; another format makes a new NIfTI-1 file (identity affine)
    roundtrip(tmp_path / "single.nii", tmp_path / "packed.nii.gz")
    assert gzip.open(tmp_path / "packed.nii.gz").read() == (tmp_path / "single_out.nii").read_bytes()
    np.save(tmp_path / "s.npy", cube("float32", (S, H, W)))
    roundtrip(tmp_path / "s.npy", tmp_path / "new.nii.gz", "dtype")
    new = nib.load(str(tmp_path / "new.nii.gz"))
    np.testing.assert_array_equal(new.get_fdata(dtype=np.float32), np.load(tmp_path / "s.npy").transpose(1, 2, 0))
    assert (new.affine == np.eye(4)).all()
    (tmp_path / "bad.nii").write_bytes(b"\x00" * 400)
    with pytest.raises(ImageReadError, match=r"bad.nii: not readable as NIfTI"):
        read_stack(tmp_path / "bad.nii")
    with pytest.raises(ImageReadError, match=r"bad.nii: not readable as NIfTI"):
        check_container(tmp_path / "bad.nii")
    data = (tmp_path / "single.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(data[:300])
    with pytest.raises(ImageReadError, match=r"cut.nii: not readable as NIfTI"):
        read_stack(tmp_path / "cut.nii")
    import sys

    monkeypatch.setitem(sys.modules, "nibabel", None)
    with pytest.raises(ImportError, match=r"NIfTI volumes \(.nii, .nii.gz\) are read with nibabel: pip install "
                                          r"nibabel \(or the \[medical\] extra\)"):
        read_stack(tmp_path / "single.nii")


def test_nifti_nan_mask_is_nodata_and_new_files_refuse_float16(tmp_path):
    nib = pytest.importorskip("nibabel")
    volume = cube("float32", (11, 13, 4))
    volume[:3] = np.nan  # outside the object, as FSL/SPM write masked maps
    nifti(tmp_path / "masked.nii.gz", volume)
    stack, info = read_stack(tmp_path / "masked.nii.gz", "band_minmax")
    assert all(math.isnan(n) for n in info.nodata)
    assert info.offset[0] == np.nanmin(volume[:, :, 0])  # NaN left out of the scaling
    write_stack(tmp_path / "out.nii.gz", stack, info)
    back = nib.load(str(tmp_path / "out.nii.gz")).get_fdata(dtype=np.float32)
    np.testing.assert_array_equal(np.isnan(back), np.isnan(volume))
    np.testing.assert_allclose(back[3:], volume[3:], rtol=1e-6)
    np.save(tmp_path / "h.npy", cube("float16", (S, H, W)))
    half, hinfo = read_stack(tmp_path / "h.npy")
    with pytest.raises(ValueError, match=r"h.nii: NIfTI has no float16 voxels; write a .tif, .npy or .mat file"):
        write_stack(tmp_path / "h.nii", half, hinfo)
    assert not (tmp_path / "h.nii").exists()


def test_analyze_and_nifti_pair_headers_are_named(tmp_path):
    nib = pytest.importorskip("nibabel")
    nib.save(nib.AnalyzeImage(cube("int16", (5, 6, 3)), np.eye(4)), str(tmp_path / "ana.hdr"))
    nib.save(nib.Nifti1Pair(cube("int16", (5, 6, 3)), np.eye(4)), str(tmp_path / "pair.hdr"))
    nib.save(nib.Nifti2Pair(cube("int16", (5, 6, 3)), np.eye(4)), str(tmp_path / "pair2.hdr"))  # a 540-byte header
    for name in ("ana", "pair", "pair2"):
        with pytest.raises(ImageReadError, match=rf"{name}.hdr: an Analyze 7.5 or NIfTI pair header \(binary\), not "
                                                 rf"an ENVI one; convert the pair to one .nii file first \(nibabel: "
                                                 rf"nib.save\(nib.load\('{name}.hdr'\), '{name}.nii'\)\)"):
            read_stack(tmp_path / f"{name}.hdr")


def test_stack_minmax_scales_every_band_alike(tmp_path):
    data = cube("uint16", (S, H, W)) // 4  # bands of different ranges
    data[0] = 7  # an empty slice: constant
    data[1, 0, 0] = 0
    np.save(tmp_path / "s.npy", data)
    stack, info = read_stack(tmp_path / "s.npy", "stack_minmax")
    lo, hi = float(data.min()), float(data.max())
    assert info.offset == (lo,) * S and info.scale == (hi - lo,) * S
    np.testing.assert_allclose(stack, (data - lo) / (hi - lo), rtol=1e-6)
    write_stack(tmp_path / "o.npy", stack, info)
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), data)  # exact
