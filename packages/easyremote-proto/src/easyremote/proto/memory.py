"""Allocator settings that decide large-payload speed on Linux.

With glibc's defaults every buffer above 128 KiB is a fresh ``mmap``: each
1 MiB protobuf message (de)serialised costs page faults, measured at 3.2 ms
per MiB instead of 0.4 ms, and each 64 MiB payload copy 120 ms instead of
30 ms. Raising the mmap threshold keeps such buffers in the heap, where freed
memory is reused; raising the trim threshold stops the heap from being given
back (and faulted in again) after every large call.

Threads other than the main one get their own glibc arenas, whose heaps cannot
hold a block above 64 MiB: there, every large payload (a worker thread
unpickling arguments, the sync client's loop thread joining a result) is a
fresh ``mmap`` again, measured at 50,000 page faults and ~0.2 s of CPU per
64 MiB echo. Limiting the process to one arena keeps those blocks in the main
heap too; threads then share one allocator lock, which costs little under the
GIL. The limit only binds threads that allocate after it is set, so it is
applied before EasyRemote starts any thread.

The cost: a process keeps up to ``_TRIM_THRESHOLD`` of freed memory resident
after large payloads. Set ``EASYREMOTE_MALLOC_TUNING=0`` to leave the
allocator alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading

logger = logging.getLogger("easyremote")

# mallopt parameter numbers from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_MMAP_THRESHOLD = 128 << 20
_TRIM_THRESHOLD = 256 << 20

_lock = threading.Lock()
_done = False


def tune_allocator() -> bool:
    """Applies the settings once per process; True if they are in effect.

    A no-op (False) off glibc Linux or with ``EASYREMOTE_MALLOC_TUNING=0``.
    """
    global _done
    with _lock:
        if _done:
            return True
        if os.environ.get("EASYREMOTE_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith(
            "linux"
        ):
            return False
        try:
            libc = ctypes.CDLL("libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            return False  # musl and other libcs have no mallopt
        applied = (
            mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
            and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
            and mallopt(_M_ARENA_MAX, 1)
        )
        _done = bool(applied)
        if not _done:
            logger.debug("mallopt refused the large-payload settings")
        return _done
