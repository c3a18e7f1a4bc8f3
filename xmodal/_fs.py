"""Atomic file writes: a temp file in the destination folder, then ``os.replace``. A failure leaves nothing behind.

Destinations that are not regular files are respected: a symlink keeps pointing where it did (its target gets the new
content, atomically), a FIFO, device or socket (``/dev/stdout``, a named pipe) is written straight into, and a
directory is an error.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "usual_permissions"]


def _umask_from_proc() -> int | None:
    """The process umask from ``/proc/self/status`` (Linux 4.7+), without changing it; ``None`` elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _umask_at_import() -> int:
    # Where /proc tells nothing, read the umask once, here, before any thread of ours runs: ``os.umask`` can only be
    # read by setting it, and a file another thread creates between the two calls would get mode 0666/0777.
    if _umask_from_proc() is not None:
        return 0o022  # unused on this system
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK_AT_IMPORT = _umask_at_import()


def _umask() -> int:
    """The current umask, read without changing it (where the system cannot tell, the umask at import)."""
    mask = _umask_from_proc()
    return _UMASK_AT_IMPORT if mask is None else mask


def usual_permissions(path: str | os.PathLike) -> None:
    """Give a file (``rw-``) or folder (``rwx``) made by ``tempfile`` (0600 / 0700) the permissions ``open`` and
    ``mkdir`` would have given it under the current umask."""
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~_umask())


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename the temp file to ``path``.

    The temp file sits in ``path``'s folder (same file system, so the rename is atomic) and keeps ``path``'s suffix
    (libraries that pick a format from the extension still work). On any exception it is removed.

    Where ``path`` is a symlink, the file it resolves to is written (atomically, as above) and the link stays. Where
    ``path`` exists and is not a regular file (a FIFO, a character or block device, a socket: ``/dev/stdout``),
    ``write(path)`` writes straight into it: no temp file, no rename.

    Raises:
        IsADirectoryError: ``path`` is a directory.
        OSError: what ``write``, the folder's creation or the rename raise.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode  # follows symlinks: what a write to `path` would reach
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if mode is not None and not stat.S_ISREG(mode):
        write(str(path))
        return
    if path.is_symlink():
        path = Path(os.path.realpath(path))
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
