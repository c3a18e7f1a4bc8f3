"""Band stacks in the containers hyperspectral and medical data come in: MATLAB ``.mat`` files, ENVI rasters
(``.hdr``) and NIfTI volumes (``.nii``, ``.nii.gz``).

:func:`xmodal.imageio.read_stack` and :func:`~xmodal.imageio.write_stack` call this module for these extensions; the
rest of xmodal sees ``(S, H, W)`` stacks as from any TIFF.

MATLAB (``scene.mat``): versions 4, 5/6/7 through SciPy and 7.3 (HDF5) through h5py (``pip install h5py``). The stack
is the file's one numeric 3-D array (or, with none, its one 2-D array of at least 2 x 2), read MATLAB's way: ``(rows,
columns, bands)``, always (a crop with few rows, ``(10, 100, 200)``, and an array saved bands first from Python,
``(31, 512, 512)``, have the same shape; a warning says which was assumed when the first axis is at most a third of
both others). A file holding several (``gt`` and ``input``) names the one to use: ``scene.mat:input``. Written back,
the ``.mat`` keeps every other variable of the file it was read from, the array's name, layout and dtype, and the
version: a 7.3 file is copied and its array replaced in place; in a version 5-7 file only the array's data element is
replaced (compressed if it was) and every other one copied byte for byte (logical masks, sparse matrices, objects stay
as MATLAB wrote them); version 4 and big-endian files are rewritten by SciPy as version 5. A stack from another format
becomes the variable ``data`` ``(rows, columns, bands)`` of a compressed version-5 file.

ENVI (``scene.hdr`` beside its data file ``scene``, ``scene.img``, ``.dat``, ``.raw``, ``.bsq``, ``.bil``, ``.bip``,
``.bin``, or ``scene.img.hdr`` beside ``scene.img``): BSQ, BIL and BIP interleaves, either byte order, a header
offset, data types 1, 2, 12, 4 and 5 (uint8, int16, uint16, float32, float64; 32/64-bit integers and complex data are
refused, naming the type). A header may start with a byte-order mark or ``envi`` in lower case. ``data ignore value`` is
the nodata value, ``band names`` name the bands. Written back, the header keeps every field of the one read
(wavelengths, map info, description...) with the size, type, interleave and byte order of the data written, and
``header offset = 0``; the data file keeps the source's extension. The data file is written first and the header
renamed into place last, both atomically, so a header never describes a half-written file.

NIfTI-1/2 single files (``brain.nii.gz``; through nibabel, ``pip install nibabel``): the slices along the third voxel
axis are the bands, ``(Z, X, Y)`` (``stack[k]`` is nibabel's ``volume[:, :, k]``), in the stored dtype
(``scl_slope``/``scl_inter`` stay in the header; evaluation applies them); NaN voxels of a float volume (masks) are
nodata, kept as they are; ``(X, Y)`` is one slice, trailing dimensions of 1 are dropped, a series of volumes is
refused. Written back, the source's bytes
before its voxels (header, extensions) are copied unchanged and the voxels written in its dtype and byte order; from
another format, a new NIfTI-1 file with an identity affine.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from xmodal._fs import atomic_write

__all__ = ["CONTAINER_EXTENSIONS", "NIFTI_EXTENSIONS", "StackContainer", "check_container", "check_envi_dtype",
           "check_nifti_dtype", "envi_data_path", "is_container", "read_container", "split_variable", "stack_stem",
           "stack_suffix", "write_container"]

NIFTI_EXTENSIONS = (".nii", ".nii.gz")
CONTAINER_EXTENSIONS = (".mat", ".hdr", *NIFTI_EXTENSIONS)
_ENVI_DATA_SUFFIXES = ("", ".img", ".dat", ".raw", ".bsq", ".bil", ".bip", ".bin")
_ENVI_TYPES = {1: "uint8", 2: "int16", 12: "uint16", 4: "float32", 5: "float64"}  # the stack dtypes ENVI has
_ENVI_OTHER = {3: "int32", 6: "complex64", 9: "complex128", 13: "uint32", 14: "int64", 15: "uint64"}
_ENVI_CODES = {v: k for k, v in _ENVI_TYPES.items()}
_ENVI_LIST = ", ".join(f"{c} ({t})" for c, t in _ENVI_TYPES.items())
_MAT_NUMERIC = ("double", "single", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")
_VARIABLE = re.compile(r"(.+\.mat):([A-Za-z]\w*)", re.IGNORECASE)


@dataclass(frozen=True)
class StackContainer:
    """What :func:`write_container` needs to write a stack back the way its ``.mat``, ENVI or NIfTI file held it.

    Attributes:
        format: ``"mat"``, ``"envi"`` or ``"nifti"``.
        source: the file read (the ``.mat``, the ENVI header, the ``.nii``/``.nii.gz``).
        variable: ``mat``: the array's name.
        mat_version: ``mat``: ``"4"``, ``"5"`` (5, 6 and 7) or ``"7.3"``.
        compressed: ``mat`` version 5: whether the file's variables were zlib-compressed (MATLAB 7's default).
        header: ``envi``: the header's ``(key, value)`` fields in order, as written (values of ``{...}`` lists
            included).
        interleave: ``envi``: ``"bsq"``, ``"bil"`` or ``"bip"``.
        big_endian: ``envi``: ``byte order = 1``.
        data_suffix: ``envi``: the data file's extension (``""``: none).
        raw_header: ``nifti``: the file's bytes before its voxels (header, extensions), written back as they are.
        file_dtype: ``nifti``: the voxels' numpy dtype as stored, byte order included (``"<i2"``).
        shape: ``nifti``: the volume's shape as stored (``(X, Y)``, ``(X, Y, Z)``, ``(X, Y, Z, 1)``...).
        slope, inter: ``nifti``: ``scl_slope``/``scl_inter`` (1 and 0 where the header has none): physical value =
            slope x stored value + inter. Kept in the header; :func:`xmodal.evaluate.evaluate_stacks` scores physical
            values.
    """

    format: Literal["mat", "envi", "nifti"]
    source: str
    variable: str = ""
    mat_version: str = ""
    compressed: bool = False
    header: tuple[tuple[str, str], ...] = ()
    interleave: str = "bsq"
    big_endian: bool = False
    data_suffix: str = ".img"
    raw_header: bytes = b""
    file_dtype: str = ""
    shape: tuple[int, ...] = ()
    slope: float = 1.0
    inter: float = 0.0


def _error(message: str) -> Exception:
    from xmodal.imageio import ImageReadError

    return ImageReadError(message)


def split_variable(path: str | os.PathLike) -> tuple[Path, str | None]:
    """``("scene.mat", "input")`` for ``"scene.mat:input"`` (when no file has that whole name), else ``(path,
    None)``."""
    text = os.fspath(path)
    m = _VARIABLE.fullmatch(text)
    if m and not os.path.exists(text):
        return Path(m[1]), m[2]
    return Path(text), None


def stack_suffix(path: str | os.PathLike) -> str:
    """``path``'s extension in lower case, ``.nii.gz`` counted as one (``Path.suffix`` says ``.gz``)."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def stack_stem(path: str | os.PathLike) -> str:
    """``path``'s name without :func:`stack_suffix` (``brain`` for ``brain.nii.gz``)."""
    name = Path(path).name
    return name[: len(name) - len(stack_suffix(name))]


def is_container(path: str | os.PathLike) -> bool:
    """Whether ``path`` (``scene.mat:input`` included) names a ``.mat`` file, an ENVI header or a NIfTI volume."""
    return stack_suffix(split_variable(path)[0]) in CONTAINER_EXTENSIONS


def read_container(path: str | os.PathLike) -> tuple[np.ndarray, StackContainer, float | None, tuple[str, ...]]:
    """``(stack (S, H, W) in the file's dtype, container, nodata or None, band names or ())`` of a ``.mat`` file
    (``scene.mat:variable`` allowed), an ENVI header or a NIfTI volume.

    Raises:
        ImageReadError: a missing or unreadable file, no (or an ambiguous) array, an unknown variable, a bad
            header, a data file missing or shorter than the header says.
    """
    file, variable = split_variable(path)
    if not file.is_file():
        raise _error(f"{file}: file not found")
    if file.suffix.lower() == ".mat":
        arr, container = _read_mat(file, variable)
        return arr, container, None, ()
    if stack_suffix(file) in NIFTI_EXTENSIONS:
        arr, container = _read_nifti(file)
        nan = arr.dtype.kind == "f" and bool(np.isnan(arr).any())  # NaN outside the object (FSL/SPM masks): nodata
        return arr, container, math.nan if nan else None, tuple(f"slice_{k + 1:03d}" for k in range(arr.shape[0]))
    return _read_envi(file)


def check_container(path: str | os.PathLike) -> None:
    """Check a ``.mat`` file, ENVI header or NIfTI volume from its table of contents or header alone (no array is
    read): the errors :func:`read_container` would raise for a missing file, an unknown or ambiguous variable, a bad
    header or a short data file, before any work is done on it."""
    file, variable = split_variable(path)
    if not file.is_file():
        raise _error(f"{file}: file not found")
    if file.suffix.lower() == ".mat":
        _mat_variable(file, variable)
    elif stack_suffix(file) in NIFTI_EXTENSIONS:
        _nifti_image(file)
    else:
        _envi_layout(file)


def write_container(path: str | os.PathLike, data: np.ndarray, container: StackContainer | None,
                    nodata: float | None = None, band_names: tuple[str, ...] = ()) -> None:
    """Write ``data: (S, H, W)`` (file dtype) to a ``.mat`` file, an ENVI header + data file or a NIfTI volume,
    atomically.

    ``container`` is that of the stack as read (``None`` or another format's: a new file; see the module
    docstring). ``nodata`` and ``band_names`` go into a new ENVI header.

    Raises:
        ValueError: another extension; a dtype the format cannot hold (ENVI: int8, float16; a new NIfTI: float16);
            other variables of the source ``.mat`` that SciPy cannot write back; a stack of another size than its
            7.3 ``.mat`` or NIfTI source, whose array is replaced in place.
        ImportError: a version 7.3 ``.mat`` without h5py, a NIfTI volume without nibabel.
    """
    path = Path(path)
    suffix = stack_suffix(path)
    if suffix in NIFTI_EXTENSIONS:
        _write_nifti(path, data, container if container is not None and container.format == "nifti" else None)
    elif suffix == ".mat":
        _write_mat(path, data, container if container is not None and container.format == "mat" else None)
    elif suffix == ".hdr":
        _write_envi(path, data, container if container is not None and container.format == "envi" else None,
                    nodata, band_names)
    else:
        raise ValueError(f"{path}: expected a .mat, .hdr, .nii or .nii.gz destination, got {suffix!r}")


# -------------------------------------------------------------------------------------------------------------- MATLAB


def _looks_bands_first(shape: tuple[int, ...]) -> bool:
    """Whether a 3-D array read in MATLAB's order may have been saved bands first from Python: its first axis is at
    most a third of both others (``(31, 512, 512)``; a thin crop ``(10, 100, 200)`` looks the same)."""
    return 3 * shape[0] <= min(shape[1], shape[2])


def _pick(file: Path, arrays: list[tuple[str, tuple[int, ...], str]], variable: str | None) -> str:
    """The name of the stack among ``(name, MATLAB shape, class)`` entries."""
    def describe(entries: list[tuple[str, tuple[int, ...], str]]) -> str:
        return ", ".join(f"{n} {'x'.join(map(str, s))} {c}" for n, s, c in entries) or "none"

    numeric = [a for a in arrays if a[2] in _MAT_NUMERIC and 0 not in a[1]]
    if variable is not None:
        found = [a for a in arrays if a[0] == variable]
        if not found:
            raise _error(f"{file}: no variable {variable!r} (the file holds: {describe(arrays)})")
        name, shape, cls = found[0]
        if found[0] not in numeric or len(shape) not in (2, 3):
            raise _error(f"{file}: variable {variable!r} is {'x'.join(map(str, shape))} {cls}; expected a non-empty "
                         "numeric 2-D or 3-D array")
        return name
    cubes = [a for a in numeric if len(a[1]) == 3]
    candidates = cubes or [a for a in numeric if len(a[1]) == 2 and min(a[1]) > 1]
    if len(candidates) == 1:
        return candidates[0][0]
    if not candidates:
        raise _error(f"{file}: no numeric 3-D array (or 2-D image) to read as a stack (the file holds: "
                     f"{describe(arrays)})")
    raise _error(f"{file}: holds several arrays that could be the stack ({describe(candidates)}); name one: "
                 f"{file}:{candidates[0][0]}")


def _mat_version(file: Path) -> str:
    from scipy.io.matlab import matfile_version

    try:
        major, _ = matfile_version(str(file))
    except Exception as e:  # scipy raises ValueError / MatReadError for files that are not .mat
        raise _error(f"{file}: not a MATLAB .mat file ({e})") from None
    return {0: "4", 1: "5", 2: "7.3"}.get(int(major), str(major))


def _mat5_compressed(file: Path) -> bool:
    """Whether a version-5 file's first variable is a zlib-compressed element (``miCOMPRESSED``, 15)."""
    with open(file, "rb") as f:
        head = f.read(136)
    if len(head) < 136:
        return False
    order = "<" if head[126:128] == b"IM" else ">"
    return struct.unpack(order + "I", head[128:132])[0] == 15


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as e:
        raise ImportError("MATLAB 7.3 .mat files are HDF5 files and need h5py: pip install h5py") from e
    return h5py


def _h5_class(ds: Any) -> str:
    """A MATLAB 7.3 dataset's ``MATLAB_class`` attribute (``"double"``, ``"uint16"``, ``"cell"``...)."""
    cls = ds.attrs.get("MATLAB_class", b"")
    return cls.decode() if isinstance(cls, bytes) else str(cls)


_UNREADABLE = (ValueError, TypeError, OSError, EOFError, NotImplementedError, struct.error, KeyError)


def _mat_variable(file: Path, variable: str | None) -> tuple[str, str]:
    """``(version, name of the stack's array)`` from the file's table of contents (no array is read)."""
    version = _mat_version(file)
    try:
        if version == "7.3":
            h5py = _h5py()
            with h5py.File(file, "r") as f:
                arrays = [(name, tuple(reversed(ds.shape)), _h5_class(ds))
                          for name, ds in f.items() if isinstance(ds, h5py.Dataset) and not name.startswith("#")]
        else:
            from scipy.io import whosmat

            arrays = [(n, tuple(int(d) for d in s), c) for n, s, c in whosmat(str(file))]
    except _UNREADABLE as e:
        raise _error(f"{file}: not readable as a MATLAB {'7.3 (HDF5)' if version == '7.3' else '.mat'} file "
                     f"({e})") from None
    return version, _pick(file, arrays, variable)


def _read_mat(file: Path, variable: str | None) -> tuple[np.ndarray, StackContainer]:
    version, name = _mat_variable(file, variable)
    try:
        if version == "7.3":
            with _h5py().File(file, "r") as f:
                arr = np.asarray(f[name][()]).T  # HDF5 keeps MATLAB's column-major array reversed
        else:
            from scipy.io import loadmat

            arr = loadmat(str(file), variable_names=[name])[name]
    except _UNREADABLE as e:
        raise _error(f"{file}: not readable as a MATLAB {'7.3 (HDF5)' if version == '7.3' else '.mat'} file "
                     f"({e})") from None
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[:, :, None]  # one band: (H, W) -> (H, W, 1)
    if _looks_bands_first(arr.shape):
        import warnings

        warnings.warn(f"{file}: {name!r} of shape {arr.shape} is read in MATLAB's order, (rows, columns, bands): "
                      f"{arr.shape[2]} bands of {arr.shape[0]} x {arr.shape[1]}; if it was saved bands first from "
                      "Python, save it as (rows, columns, bands) (or as .npy) instead", stacklevel=2)
    stack = arr.transpose(2, 0, 1)  # (H, W, S) -> (S, H, W)
    container = StackContainer("mat", str(file), variable=name, mat_version=version,
                               compressed=version == "5" and _mat5_compressed(file))
    return np.ascontiguousarray(stack, dtype=stack.dtype.newbyteorder("=")), container


def _write_mat(path: Path, data: np.ndarray, container: StackContainer | None) -> None:
    if container is None:  # from another format: a new file, MATLAB's layout
        _savemat(path, {"data": data.transpose(1, 2, 0)}, compressed=True)
        return
    stored = data.transpose(1, 2, 0)  # (S, H, W) -> (rows, columns, bands), as read
    if stored.shape[-1] == 1:
        stored = stored[:, :, 0]  # one band was a 2-D array
    if container.mat_version == "7.3":
        h5py = _h5py()

        def write(tmp: str) -> None:
            shutil.copyfile(container.source, tmp)
            with h5py.File(tmp, "r+") as f:
                dataset = f[container.variable]
                if dataset.shape != stored.T.shape:
                    raise ValueError(f"{path}: the stack is {' x '.join(map(str, data.shape))} but "
                                     f"{container.source}'s {container.variable!r} holds "
                                     f"{' x '.join(map(str, dataset.shape[::-1]))} (an array of a 7.3 file is "
                                     "replaced in place); write it to a new file instead")
                dataset[...] = np.ascontiguousarray(stored.T)  # MATLAB's order, as stored

        atomic_write(path, write)
        return
    source = Path(container.source)
    if container.mat_version == "5" and _rewrite_mat5(path, source, container.variable, stored):
        return
    from scipy.io import loadmat  # version 4 and big-endian files: every variable through SciPy

    variables = {k: v for k, v in loadmat(container.source).items() if not k.startswith("__")}
    variables[container.variable] = stored
    _savemat(path, variables, compressed=container.compressed, source=container.source)


def _matrix_name(m: bytes, order: str) -> str:
    """The array name of an ``miMATRIX`` element's content (after its tag): the subelement after the array flags
    and the dimensions, in the small (4-byte) format or the normal one."""
    p = 16  # array flags: an 8-byte tag and 8 bytes
    n = struct.unpack(order + "I", m[p + 4:p + 8])[0]
    p += 8 + n + (-n % 8)  # dimensions, padded to 8 bytes
    first, second = struct.unpack(order + "II", m[p:p + 8])
    if first >> 16:  # small data element: size in the upper half of the tag, data in its last 4 bytes
        return m[p + 4:p + 4 + (first >> 16)].decode("latin-1")
    return m[p + 8:p + 8 + second].decode("latin-1")


def _mat5_elements(raw: bytes) -> list[tuple[int, int, str | None, bool]]:
    """``(offset, end, variable name or None, compressed)`` of each top-level data element of a version-5 file."""
    order = "<" if raw[126:128] == b"IM" else ">"
    elements, pos = [], 128
    while pos + 8 <= len(raw):
        mdtype, nbytes = struct.unpack(order + "II", raw[pos:pos + 8])
        end = pos + 8 + nbytes
        if nbytes == 0 or end > len(raw):
            raise ValueError(f"element at byte {pos} runs past the end of the file")
        body, compressed = raw[pos + 8:end], mdtype == 15
        if compressed:  # miCOMPRESSED: a zlib stream holding one miMATRIX element; its start names it
            body = zlib.decompressobj().decompress(body, 4096)
            mdtype, body = struct.unpack(order + "I", body[:4])[0], body[8:]
        elements.append((pos, end, _matrix_name(body, order) if mdtype == 14 else None, compressed))
        pos = end
    return elements


def _rewrite_mat5(path: Path, source: Path, variable: str, stored: np.ndarray) -> bool:
    """Write ``source`` to ``path`` with only ``variable``'s element replaced (compressed if it was), every other
    element copied byte for byte (logical, sparse, objects... as MATLAB wrote them) and the subsystem offset moved
    with its element. ``False`` (nothing written) for a big-endian file, which SciPy cannot add an element to."""
    import io

    from scipy.io import savemat

    raw = source.read_bytes()
    if raw[126:128] != b"IM":
        return False
    try:
        elements = _mat5_elements(raw)
    except (ValueError, struct.error, zlib.error, UnicodeDecodeError):
        return False
    target = [e for e in elements if e[2] == variable]
    if len(target) != 1:
        return False
    buf = io.BytesIO()
    savemat(buf, {variable: stored}, format="5", do_compression=target[0][3], long_field_names=True,
            oned_as="column")
    new = buf.getvalue()[128:]
    parts, moved, pos = [], {}, 128
    for start, end, name, _ in elements:
        moved[start] = pos
        chunk = new if name == variable else raw[start:end]
        parts.append(chunk)
        pos += len(chunk)
    header = raw[:128]
    subsys = struct.unpack("<Q", header[116:124])[0]  # offset of MATLAB's subsystem data (objects), if any
    if subsys in moved:
        header = header[:116] + struct.pack("<Q", moved[subsys]) + header[124:]
    tail = raw[elements[-1][1]:] if elements else raw[128:]
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(header + b"".join(parts) + tail))
    return True


def _savemat(path: Path, variables: dict[str, Any], compressed: bool, source: str | None = None) -> None:
    from scipy.io import savemat

    def write(tmp: str) -> None:
        try:
            savemat(tmp, variables, format="5", do_compression=compressed, long_field_names=True, oned_as="column")
        except (ValueError, TypeError) as e:
            what = f"the other variables of {source}" if source else "the stack"
            raise ValueError(f"{path}: SciPy cannot write {what} as a .mat file ({e}); write a .hdr, .tif or .npy "
                             "file instead") from None

    atomic_write(path, write)


# ---------------------------------------------------------------------------------------------------------------- ENVI


def _parse_header(file: Path) -> list[tuple[str, str]]:
    """The ``(key, value)`` fields of an ENVI header, in order (``{...}`` values may span lines)."""
    try:
        raw = file.read_bytes()
    except OSError as e:
        raise _error(f"{file}: not readable ({e.strerror})") from None
    if raw[:4] in {struct.pack(o + "i", n) for o in "<>" for n in (348, 540)}:  # Analyze / NIfTI-1 / NIfTI-2 sizes
        raise _error(f"{file}: an Analyze 7.5 or NIfTI pair header (binary), not an ENVI one; convert the pair to "
                     f"one .nii file first (nibabel: nib.save(nib.load('{file.name}'), '{file.stem}.nii'))")
    text = raw.decode("utf-8", errors="replace")
    lines = text.lstrip("\ufeff").splitlines()  # a byte-order mark, as some Windows tools write
    if not lines or not lines[0].strip().upper().startswith("ENVI"):
        raise _error(f"{file}: not an ENVI header (its first line is not 'ENVI')")
    fields: list[tuple[str, str]] = []
    i = 1
    while i < len(lines):
        line = lines[i]
        i += 1
        if "=" not in line or line.lstrip().startswith(";"):
            continue
        key, value = (s.strip() for s in line.split("=", 1))
        if value.startswith("{"):
            while "}" not in value and i < len(lines):
                value += "\n" + lines[i]
                i += 1
            if "}" not in value:
                raise _error(f"{file}: field {key!r} opens a '{{' list that is never closed")
        fields.append((key, value))
    return fields


def _field(fields: list[tuple[str, str]], key: str) -> str | None:
    return next((v for k, v in fields if k.lower() == key), None)


def _int_field(file: Path, fields: list[tuple[str, str]], key: str, default: int | None = None,
               minimum: int = 1) -> int:
    value = _field(fields, key)
    if value is None:
        if default is None:
            raise _error(f"{file}: the header has no {key!r} field")
        return default
    try:
        number = int(value)
    except ValueError:
        raise _error(f"{file}: {key} = {value!r}, expected an integer") from None
    if number < minimum:
        raise _error(f"{file}: {key} = {number}, expected at least {minimum}")
    return number


def _list_field(value: str | None) -> list[str]:
    if value is None:
        return []
    return [s.strip() for s in value.strip().lstrip("{").rstrip("}").split(",") if s.strip()]


def _data_file(header: Path) -> Path:
    """The data file beside ``header``: ``scene.hdr`` -> ``scene`` / ``scene.img`` / ...; ``scene.img.hdr`` ->
    ``scene.img``."""
    base = header.with_suffix("")
    names = {p.name.lower(): p for p in header.parent.iterdir() if p.is_file()}
    for suffix in _ENVI_DATA_SUFFIXES:
        found = names.get((base.name + suffix).lower())
        if found is not None and found != header:
            return found
    raise _error(f"{header}: no data file beside this ENVI header (looked for {base.name} with extensions "
                 f"{', '.join(s or '(none)' for s in _ENVI_DATA_SUFFIXES)})")


def check_nifti_dtype(path: str | os.PathLike, dtype: str) -> None:
    """``ValueError`` naming ``path`` when a new NIfTI file cannot hold ``dtype`` voxels (float16)."""
    if dtype == "float16":
        raise ValueError(f"{path}: NIfTI has no float16 voxels; write a .tif, .npy or .mat file instead")


def check_envi_dtype(path: str | os.PathLike, dtype: str) -> None:
    """``ValueError`` naming ``path`` when an ENVI stack cannot hold ``dtype`` bands (int8, float16)."""
    if dtype not in _ENVI_CODES:
        raise ValueError(f"{path}: an ENVI stack holds {', '.join(_ENVI_CODES)} bands, not {dtype}; write a .tif, "
                         ".npy or .mat file instead")


def envi_data_path(header: str | os.PathLike, container: StackContainer | None) -> Path:
    """The data file :func:`write_container` writes beside the ENVI ``header``: ``scene.img.hdr`` -> ``scene.img``,
    else the header's name with the ENVI source's data extension (``container``; ``.img`` for other sources)."""
    header = Path(header)
    if Path(header.stem).suffix.lower() in _ENVI_DATA_SUFFIXES[1:]:
        return header.with_suffix("")
    envi = container is not None and container.format == "envi"
    return header.with_suffix(container.data_suffix if envi else ".img")


def _envi_layout(header: Path) -> tuple[StackContainer, tuple[int, int, int], int, np.dtype, Path, float | None,
                                         tuple[str, ...]]:
    """``(container, (bands, lines, samples), header offset, dtype in file order, data file, nodata, band names)`` of
    an ENVI header, every field checked and the data file's size with it (no pixel is read)."""
    fields = _parse_header(header)
    samples, lines, bands = (_int_field(header, fields, k) for k in ("samples", "lines", "bands"))
    offset = _int_field(header, fields, "header offset", 0, minimum=0)
    code = _int_field(header, fields, "data type")
    if code not in _ENVI_TYPES:
        what = f" ({_ENVI_OTHER[code]})" if code in _ENVI_OTHER else ""
        raise _error(f"{header}: data type = {code}{what} cannot be read as a stack (expected {_ENVI_LIST}"
                     + ("; complex data cannot be denoised" if code in (6, 9) else
                        "; convert the raster to one of these first" if what else "") + ")")
    interleave = (_field(fields, "interleave") or "bsq").lower()
    if interleave not in ("bsq", "bil", "bip"):
        raise _error(f"{header}: interleave = {interleave!r}, expected bsq, bil or bip")
    order = _int_field(header, fields, "byte order", 0, minimum=0)
    if order not in (0, 1):
        raise _error(f"{header}: byte order = {order}, expected 0 (little endian) or 1 (big endian)")
    ignore = _field(fields, "data ignore value")
    try:
        nodata = None if ignore is None else float(ignore)
    except ValueError:
        raise _error(f"{header}: data ignore value = {ignore!r}, expected a number") from None
    dtype = np.dtype(_ENVI_TYPES[code]).newbyteorder(">" if order else "<")
    data = _data_file(header)
    need = offset + samples * lines * bands * dtype.itemsize
    size = data.stat().st_size
    if size < need:
        raise _error(f"{data}: {size} bytes, but {header} describes {need} ({bands} bands of {lines} x {samples} "
                     f"{dtype.name} after a {offset}-byte offset)")
    names = _list_field(_field(fields, "band names"))
    container = StackContainer("envi", str(header), header=tuple(fields), interleave=interleave,
                               big_endian=bool(order), data_suffix=data.suffix)
    return (container, (bands, lines, samples), offset, dtype, data, nodata,
            tuple(names) if len(names) == bands else ())


def _read_envi(header: Path) -> tuple[np.ndarray, StackContainer, float | None, tuple[str, ...]]:
    container, (bands, lines, samples), offset, dtype, data, nodata, names = _envi_layout(header)
    shape = {"bsq": (bands, lines, samples), "bil": (lines, bands, samples), "bip": (lines, samples, bands)}
    raw = np.fromfile(data, dtype=dtype, count=samples * lines * bands, offset=offset)
    raw = raw.reshape(shape[container.interleave])
    stack = {"bsq": raw, "bil": raw.transpose(1, 0, 2), "bip": raw.transpose(2, 0, 1)}[container.interleave]
    return np.ascontiguousarray(stack, dtype=dtype.newbyteorder("=")), container, nodata, names  # (S, H, W)


def _write_envi(path: Path, data: np.ndarray, container: StackContainer | None, nodata: float | None,
                band_names: tuple[str, ...]) -> None:
    check_envi_dtype(path, data.dtype.name)
    code = _ENVI_CODES[data.dtype.name]
    S, H, W = data.shape
    interleave = container.interleave if container else "bsq"
    big_endian = container.big_endian if container else False
    data_path = envi_data_path(path, container)
    sizes = {"samples": str(W), "lines": str(H), "bands": str(S), "header offset": "0", "data type": str(code),
             "interleave": interleave, "byte order": str(int(big_endian))}
    if container is not None:
        fields = [(k, sizes.pop(k.lower(), v)) for k, v in container.header]
        fields += list(sizes.items())  # required fields the source lacked
    else:
        fields = [("description", "{written by xmodal}"), *sizes.items(), ("file type", "ENVI Standard")]
        if nodata is not None and not math.isnan(nodata):
            fields.append(("data ignore value", repr(float(nodata))))
        if len(band_names) == S:
            fields.append(("band names", "{" + ", ".join(band_names) + "}"))
    layout = {"bsq": data, "bil": data.transpose(1, 0, 2), "bip": data.transpose(1, 2, 0)}[interleave]
    raw = np.ascontiguousarray(layout, dtype=data.dtype.newbyteorder(">" if big_endian else "<"))
    text = "ENVI\n" + "".join(f"{k} = {v}\n" for k, v in fields)

    def write_header(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")
        atomic_write(data_path, raw.tofile)  # the data in place first: the header is renamed after it

    atomic_write(path, write_header)


# --------------------------------------------------------------------------------------------------------------- NIfTI


def _nibabel() -> Any:
    try:
        import nibabel
    except ImportError as e:
        raise ImportError("NIfTI volumes (.nii, .nii.gz) are read with nibabel: pip install nibabel (or the "
                          "[medical] extra)") from e
    return nibabel


def _nifti_image(file: Path) -> Any:
    """The nibabel image of a NIfTI-1/2 single file, its shape checked (no voxel is read)."""
    nib = _nibabel()
    try:
        img = nib.load(str(file))
    except Exception as e:  # nibabel raises ImageFileError, HeaderDataError, OSError, EOFError... for bad files
        raise _error(f"{file}: not readable as NIfTI ({e})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise _error(f"{file}: a {type(img).__name__}, expected a single-file NIfTI-1 or NIfTI-2 volume")
    shape = tuple(int(n) for n in img.shape)
    if len(shape) < 2 or any(n != 1 for n in shape[3:]):
        raise _error(f"{file}: a volume of shape {shape}; expected (X, Y) or (X, Y, Z) (trailing dimensions of 1 "
                     "allowed): split a series into single volumes first (nibabel's four_to_three, fslsplit)")
    if img.get_data_dtype().fields is not None:
        raise _error(f"{file}: voxels of type {img.get_data_dtype()} (RGB/RGBA NIfTI); expected one value per voxel: "
                     "split the colour channels into volumes first")
    return img


def _read_nifti(file: Path) -> tuple[np.ndarray, StackContainer]:
    """Slices along the third voxel axis as bands, ``(Z, X, Y)`` (``stack[k]`` is nibabel's ``volume[:, :, k]``),
    in the stored dtype (``scl_slope``/``scl_inter`` stay in the header, recorded in the container)."""
    import gzip

    img = _nifti_image(file)
    try:
        raw = np.asanyarray(img.dataobj.get_unscaled())
        offset = int(img.dataobj.offset)  # where the voxels start (the header's vox_offset as nibabel reads it)
        slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)  # 1 and 0 where the header has none
        with (gzip.open if stack_suffix(file) == ".nii.gz" else open)(file, "rb") as f:
            head = f.read(offset)
    except Exception as e:  # a cut file: nibabel and gzip raise OSError, EOFError, ValueError...
        raise _error(f"{file}: not readable as NIfTI ({e})") from None
    volume = raw.reshape(raw.shape[:2] + (raw.shape[2] if raw.ndim > 2 else 1,))  # (X, Y, Z)
    container = StackContainer("nifti", str(file), raw_header=head, file_dtype=img.get_data_dtype().str,
                               shape=tuple(int(n) for n in img.shape), slope=slope, inter=inter)
    stack = volume.transpose(2, 0, 1)  # (X, Y, Z) -> (Z, X, Y): slice k is volume[:, :, k]
    return np.ascontiguousarray(stack, dtype=stack.dtype.newbyteorder("=")), container


def _write_nifti(path: Path, data: np.ndarray, container: StackContainer | None) -> None:
    """The source's header bytes (every field, extensions, scaling) then the voxels in its dtype and byte order, in
    NIfTI's order (X fastest); gzip for ``.nii.gz``. From another format: a new NIfTI-1 file with an identity
    affine."""
    import gzip

    volume = data.transpose(1, 2, 0)  # (Z, X, Y) -> (X, Y, Z)
    if container is not None:
        xyz = container.shape[:2] + (container.shape[2] if len(container.shape) > 2 else 1,)
        if volume.shape != xyz:
            raise ValueError(f"{path}: the stack is {' x '.join(map(str, data.shape))} (slices x X x Y) but the "
                             f"header of {container.source} describes {' x '.join(map(str, xyz[2:] + xyz[:2]))}; "
                             "write it to a new .tif/.npy file instead")
        voxels = np.asarray(volume.reshape(container.shape), dtype=np.dtype(container.file_dtype))
        content = container.raw_header + voxels.tobytes(order="F")
    else:
        nib = _nibabel()
        img = nib.Nifti1Image(volume, np.eye(4))
        img.header.set_data_dtype(volume.dtype)
        content = img.to_bytes()
    if stack_suffix(path) == ".nii.gz":
        content = gzip.compress(content, compresslevel=6, mtime=0)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(content))
