"""Atomic file writes: a temp file in the destination folder, then ``os.replace``. A failure leaves nothing behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "usual_permissions"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def usual_permissions(path: str | os.PathLike) -> None:
    """Give a file (``rw-``) or folder (``rwx``) made by ``tempfile`` (0600 / 0700) the permissions ``open`` and
    ``mkdir`` would have given it under the current umask."""
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~_umask())


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename the temp file to ``path``.

    The temp file sits in ``path``'s folder (same file system, so the rename is atomic) and keeps ``path``'s suffix
    (libraries that pick a format from the extension still work). On any exception it is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f"{path.suffix}.part{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        usual_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
