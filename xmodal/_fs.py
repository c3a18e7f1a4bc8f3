"""Atomic file writes: a temp file in the destination folder, then ``os.replace``. A failure leaves nothing behind.

Destinations that are not regular files are respected: a symlink keeps pointing where it did (its target gets the new
content, atomically), a FIFO, device or socket (``/dev/stdout``, a named pipe) is written straight into, and a
directory is an error.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_all", "usual_permissions", "write_error"]


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
        OSError: what ``write``, the folder's creation or the rename raise, naming ``path`` (:func:`write_error`).
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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f"{path.suffix}.part{path.suffix}",
                                   dir=path.parent)
    except OSError as e:
        raise write_error(path, e, e.filename) from None  # the temporary file it could not make
    os.close(fd)
    try:
        write(tmp)
        usual_permissions(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) or (isinstance(e, Exception) and _disk_full(path)):
            raise write_error(path, e, tmp) from None
        raise


def atomic_write_all(items: list[tuple[str | os.PathLike, Callable[[str], None]]]) -> None:
    """Write several files as one: every ``write(tmp_path)`` of ``items`` (``(path, write)`` pairs, regular files)
    into a temp file beside its ``path`` first, then all renamed, in order, only once all are written. A failure
    while writing (a full disk) leaves every ``path`` as it was and no temp file; the renames themselves cannot run
    out of space (only a kill between two of them can split the set, which readers check: a checkpoint's files carry
    their step).

    Raises:
        OSError: as :func:`atomic_write`, naming the file that failed (a library's own error on a full disk, such as
            safetensors' or torch's, becomes an ``OSError`` ENOSPC).
    """
    temps: list[tuple[Path, str]] = []
    try:
        for path, write in items:
            path = Path(path)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f"{path.suffix}.part{path.suffix}",
                                           dir=path.parent)
            except OSError as e:
                raise write_error(path, e, e.filename) from None
            os.close(fd)
            temps.append((path, tmp))
            try:
                write(tmp)
                usual_permissions(tmp)
            except Exception as e:
                if isinstance(e, OSError) or _disk_full(path):
                    raise write_error(path, e, tmp) from None
                raise
        for path, tmp in temps:
            os.replace(tmp, path)
    except BaseException:
        for _, tmp in temps:
            Path(tmp).unlink(missing_ok=True)
        raise


def _disk_full(path: str | os.PathLike) -> bool:
    """Whether the file system of ``path``'s folder has (almost) no free space left."""
    try:
        return shutil.disk_usage(Path(path).parent).free < _FULL_DISK
    except OSError:
        return False


#: free space under which a write error without an errno (numpy's "N requested and M written") is a full disk
_FULL_DISK = 1 << 20


def write_error(path: str | os.PathLike, error: Exception, tmp: str | os.PathLike | None = None) -> OSError:
    """``error`` (raised while writing ``path``, through the temporary file ``tmp``) as an ``OSError`` of the same
    built-in class that names ``path``, says why in words (a full disk where a library's own message hides it; the
    other file it concerns, where it is not ``tmp``) and that nothing was written; ``error`` itself when it is an
    ``OSError`` that already names ``path``. Its ``errno`` is ``error``'s (``ENOSPC`` for a full disk)."""
    if isinstance(error, OSError) and str(path) in str(error):
        return error
    code = getattr(error, "errno", None)
    reason = getattr(error, "strerror", None) or str(error)
    filename = getattr(error, "filename", None)
    if getattr(error, "strerror", None) and filename and str(filename) not in (str(path), str(tmp)):
        reason += f": {filename}"  # a companion file (an ENVI header's data file), or a folder
    if code is None and _disk_full(path):
        code, reason = errno.ENOSPC, f"no space left on the device: {reason}"
    kind = type(error) if isinstance(error, OSError) and type(error).__module__ == "builtins" else OSError
    named = kind(f"{path}: cannot write the file ({reason}); nothing was written")
    named.errno = code  # only the number: strerror and filename would make str() "[Errno N] ..."
    return named
