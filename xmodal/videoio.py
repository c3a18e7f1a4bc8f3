"""Reading and writing video clips frame by frame: a folder of frames or one ``.npy`` array.

A clip is ``(T, C, H, W) float32`` with the dtype-aware scaling of :mod:`xmodal.imageio` (uint8 / 255,
uint16 / 65535, floats as stored). Two containers:

- a **folder of frames**: every image file in it (PNG, JPEG, TIFF, ``.npy``; hidden files skipped), in natural name
  order (``frame2.png`` before ``frame10.png``); all frames must have the same size and channel count;
- a **``.npy`` file** ``(T, H, W)`` (gray) or ``(T, H, W, C)`` with ``C <= 4`` (channels last), memory-mapped so a
  long clip is never loaded whole.

:class:`ClipReader` reads one frame at a time (what the video denoiser keeps in memory is its temporal window), and
:class:`ClipWriter` writes one frame at a time into a temporary folder or file beside the destination that is renamed
into place only when every frame is written: nothing is half-written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from xmodal.imageio import IMAGE_EXTENSIONS, ImageInfo, ImageReadError, natural_key, read_image, write_image

__all__ = ["ClipInfo", "ClipReader", "ClipWriter", "clip_frames", "is_clip", "read_clip", "write_clip"]

PathLike = Union[str, os.PathLike]
_INT_MAX = {"uint8": 255.0, "uint16": 65535.0}
_DTYPES = ("uint8", "uint16", "float16", "float32", "float64")


@dataclass(frozen=True)
class ClipInfo:
    """What :class:`ClipReader` found; :class:`ClipWriter` writes the same kind of clip from it.

    Attributes:
        kind: ``"frames"`` (a folder of frame files) or ``"npy"``.
        shape: ``(T, C, H, W)`` of the clip as read.
        dtype: numpy name of the stored sample type.
        names: frame file names (``"frames"``), in clip order; empty for ``"npy"``.
        frame_info: the :class:`~xmodal.imageio.ImageInfo` of the first frame file (``"frames"``), else ``None``.
        layout: ``"THW"`` or ``"THWC"`` for ``"npy"``; ``""`` for ``"frames"``.
    """

    kind: str
    shape: tuple[int, int, int, int]
    dtype: str
    names: tuple[str, ...] = ()
    frame_info: ImageInfo | None = None
    layout: str = ""


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
    """Whether ``path`` can be read as a clip: a folder, or a ``.npy`` file with 3 or 4 dims (header only)."""
    path = Path(path)
    if path.is_dir():
        return True
    if path.suffix.lower() != ".npy" or not path.is_file():
        return False
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False).ndim in (3, 4)
    except Exception:
        return False


class ClipReader:
    """Frame-by-frame reader of a clip (see the module docstring for the containers).

    Args:
        path: a folder of frames or a ``.npy`` file.

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
            raise ImageReadError(f"{self.path}: clip not found (a folder of frames or a .npy file)")
        if self.path.is_dir():
            self._files = clip_frames(self.path)
            first, info = read_image(self._files[0])
            self.info = ClipInfo("frames", (len(self._files), *first.shape), info.dtype,
                                 tuple(f.name for f in self._files), info)
            self._first = first
            self._array = None
        else:
            if self.path.suffix.lower() != ".npy":
                raise ImageReadError(f"{self.path}: a clip is a folder of frames or a .npy file, got "
                                     f"{self.path.suffix!r}")
            try:
                arr = np.load(self.path, mmap_mode="r", allow_pickle=False)
            except Exception as e:
                raise ImageReadError(f"{self.path}: not readable as .npy ({e})") from None
            if arr.ndim == 3:
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
            self.info = ClipInfo("npy", tuple(int(n) for n in shape), arr.dtype.name, layout=layout)
            self._array = arr
            self._files = []
        self.frames = self.info.shape[0]

    def __len__(self) -> int:
        return self.frames

    def __getitem__(self, t: int) -> np.ndarray:
        """Frame ``t`` as ``(C, H, W) float32``."""
        if not 0 <= t < self.frames:
            raise IndexError(f"{self.path}: frame {t} of a {self.frames}-frame clip")
        if self._array is not None:
            raw = np.asarray(self._array[t])  # (H, W) or (H, W, C)
            raw = raw[None] if self.info.layout == "THW" else raw.transpose(2, 0, 1)  # -> (C, H, W)
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
    return np.stack([reader[t] for t in range(len(reader))]), reader.info


class ClipWriter:
    """Writes a clip frame by frame, atomically: into a temporary folder or file beside ``path``, renamed into
    place by :meth:`commit` (a context manager commits on success and removes the temporary data on error).

    Args:
        path: the destination: a folder (frames) or a ``.npy`` file.
        info: the source's :class:`ClipInfo` (container, dtype, frame names, layout), or ``None`` for float32
            frames named ``frame_00000.tif``... (folder) / a ``(T, H, W[, C])`` float32 array (``.npy``).
        shape: ``(T, C, H, W)`` of the clip to write.
        overwrite: replace an existing destination (a folder's frames are replaced one by one, its other files
            kept).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
        ValueError: a ``.npy`` destination for more than 4 channels or with a ``"THW"`` layout and several channels.
    """

    def __init__(self, path: PathLike, info: ClipInfo | None, shape: tuple[int, int, int, int],
                 overwrite: bool = False) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path}: exists (pass overwrite=True / --overwrite to replace it)")
        T, C, H, W = shape
        self.shape = shape
        self.info = info
        self.npy = self.path.suffix.lower() == ".npy"
        self.dtype = np.dtype(info.dtype if info is not None else "float32")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.npy:
            layout = info.layout if info is not None and info.layout else ("THW" if C == 1 else "THWC")
            if (layout == "THW" and C != 1) or C > 4:
                raise ValueError(f"{self.path}: a .npy clip holds 1 channel (T, H, W) or up to 4 (T, H, W, C), "
                                 f"got {C}")
            self.layout = layout
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part.npy", dir=self.path.parent)
            os.close(fd)
            self._tmp = Path(tmp)
            out_shape = (T, H, W) if layout == "THW" else (T, H, W, C)
            self._array = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=self.dtype, shape=out_shape)
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
        if self._array is not None:
            scale = _INT_MAX.get(self.dtype.name)
            data = frame.astype(np.float64) * scale if scale else frame
            if scale:
                info = np.iinfo(self.dtype)
                data = np.clip(np.rint(data), info.min, info.max)
            data = data.astype(self.dtype)
            self._array[t] = data[0] if self.layout == "THW" else data.transpose(1, 2, 0)
        else:
            frame_info: Any = self.info.frame_info if self.info is not None and self.info.frame_info is not None \
                else self.dtype.name
            write_image(self._tmp / self._name(t), frame, frame_info)
        self.written += 1

    def commit(self) -> Path:
        """Move the finished clip into place; returns the destination."""
        if self.written != self.shape[0]:
            raise RuntimeError(f"{self.path}: {self.written} of {self.shape[0]} frames written")
        if self._array is not None:
            self._array.flush()
            del self._array
            self._array = None
            os.replace(self._tmp, self.path)
        elif self.path.is_dir():  # overwrite: replace the frames, keep the folder's other files
            for f in sorted(self._tmp.iterdir()):
                os.replace(f, self.path / f.name)
            shutil.rmtree(self._tmp, ignore_errors=True)
        else:
            if self.path.exists():
                self.path.unlink()
            os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Remove the temporary data (the destination is left as it was)."""
        self._array = None
        if self._tmp.is_dir():
            shutil.rmtree(self._tmp, ignore_errors=True)
        elif self._tmp.exists():
            self._tmp.unlink()

    def __enter__(self) -> ClipWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.commit()
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
