"""Allocator settings that decide large-payload speed on Linux.

With glibc's defaults every buffer above 128 KiB is a fresh ``mmap``: each
1 MiB protobuf message (de)serialised costs page faults, measured at 3.2 ms
per MiB instead of 0.4 ms, and each 64 MiB payload copy 120 ms instead of
30 ms. Raising the mmap threshold keeps such buffers in the heap, where freed
memory is reused; raising the trim threshold stops the heap from being given
back (and faulted in again) after every large call.

Threads other than the main one get their own glibc arenas, whose heaps cannot
hold a block above 64 MiB: there, every large payload (a worker thread
unpickling arguments) is a fresh ``mmap`` again, measured at ~17,000 page
faults and ~20% more time per 64 MiB echo. Limiting the process to one arena
keeps those blocks in the main heap too. That is a process-wide trade (every
thread, native ones included, then shares one allocator lock), so only the
roles that own their process take it: the gateway and nodes
(``single_arena=True``), not the client library inside someone's application.
The limit binds threads that allocate after it is set, so it is applied when
a ``Server`` or ``ComputeNode`` is made, before EasyRemote starts a thread.

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

# Older glibc refuses an mmap threshold above half its 64 MiB heap size.
_FALLBACK_MMAP_THRESHOLD = 32 << 20

_lock = threading.Lock()
_applied: set[str] = set()
_tried: set[str] = set()


def tune_allocator(*, single_arena: bool = False) -> bool:
    """Applies the settings once per process; True if they are in effect.

    Each setting is applied on its own, so a libc that refuses one still gets
    the others. A no-op (False) off glibc Linux or with
    ``EASYREMOTE_MALLOC_TUNING=0``.

    Args:
        single_arena: Also limit glibc to one arena (gateway and nodes only).
    """
    with _lock:
        if os.environ.get("EASYREMOTE_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith(
            "linux"
        ):
            return False
        wanted = [
            ("mmap_threshold", _M_MMAP_THRESHOLD, (_MMAP_THRESHOLD, _FALLBACK_MMAP_THRESHOLD)),
            ("trim_threshold", _M_TRIM_THRESHOLD, (_TRIM_THRESHOLD,)),
        ]
        if single_arena:
            wanted.append(("arena_max", _M_ARENA_MAX, (1,)))
        # Each setting is tried once per process; later calls cost a set lookup.
        todo = [setting for setting in wanted if setting[0] not in _tried]
        if todo:
            _tried.update(name for name, _, _ in todo)
            try:
                mallopt = ctypes.CDLL("libc.so.6").mallopt
            except (OSError, AttributeError):
                return False  # musl and other libcs have no mallopt
            for name, param, values in todo:
                if any(mallopt(param, value) for value in values):
                    _applied.add(name)
                else:
                    logger.debug("mallopt refused %s", name)
        return "mmap_threshold" in _applied
