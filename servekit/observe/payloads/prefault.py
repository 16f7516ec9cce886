"""Page-table population ahead of a writer: ``madvise(MADV_POPULATE_WRITE)`` through ctypes.

Why: the spool is written through a memory map, and each first write to one of its 4 KiB pages
traps into the kernel. On a virtual machine that trap cost about 20 µs here, close to 1 µs per
logged inference (24 small records share a page). Populating the pages beforehand, from
another thread, does the kernel's part without the traps; ctypes releases the GIL for the call,
so the event loop goes on meanwhile. Linux 5.14 or later; elsewhere ``populate_write`` says
it could not, and the writer takes its page faults as before.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from collections.abc import Callable

MADV_POPULATE_WRITE = 23
"""From <linux/mman.h> (Python's mmap module names it only from 3.13)."""
PAGE = mmap.PAGESIZE


def _libc_madvise() -> Callable[[int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_madvise = _libc_madvise()


def address_of(buffer: mmap.mmap) -> int:
    """The address of a writable mapping's first byte. The ctypes view that finds it is
    dropped at once: while it lives, the mapping could not be closed."""
    view = ctypes.c_char.from_buffer(buffer)
    address = ctypes.addressof(view)
    del view
    return address


def populate_write(address: int, length: int) -> bool:
    """Fault in ``length`` bytes from the page-aligned ``address`` as if written; False when
    the kernel cannot (too old, or not Linux)."""
    if _madvise is None or length <= 0:
        return _madvise is not None
    return _madvise(address, length, MADV_POPULATE_WRITE) == 0
