"""Process-wide CPU runtime settings that make inference faster.

:func:`keep_freed_memory` asks glibc's ``malloc`` to keep large freed blocks for reuse. By default glibc serves every
block of 32 MiB or more (a 32-channel 512 x 512 float32 feature map is exactly 32 MiB) with a fresh ``mmap`` and hands
it back to the kernel on ``free``, so every such tensor pays for a page fault on each of its 4 KiB pages and for the
kernel zeroing them. On the 2-core machine of ``benchmarks/image_speed.py`` that is about a fifth of the gray model's
time on a 512 x 512 image. jemalloc or tcmalloc (``LD_PRELOAD``) fix the same thing from outside the process.

The cost: memory freed by tensors stays with the process (reused by the next tensors, not returned to the system),
so the resident size stays at its peak after a large job. The ``xmodal.denoise`` command line turns it on; a
library never changes its host process's allocator behind its back, so in your own program call it yourself.

Example:
    >>> import xmodal
    >>> xmodal.keep_freed_memory()  # doctest: +SKIP
    True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3
_LIMIT = 2 ** 31 - 1  # mallopt takes an int: blocks up to 2 GiB come from the heap and are reused


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None  # glibc only


def keep_freed_memory() -> bool:
    """Make glibc ``malloc`` reuse freed blocks of up to 2 GiB instead of unmapping them (see the module docstring).

    Returns:
        ``True`` when the setting was applied (Linux with glibc); ``False`` elsewhere (macOS, Windows, musl), where
        it does nothing. Calling it again is harmless.
    """
    libc = _libc()
    if libc is None:
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, _LIMIT) == 1
    return bool(libc.mallopt(_M_TRIM_THRESHOLD, _LIMIT) == 1 and ok)
