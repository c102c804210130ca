"""Pickling of arguments and results, and the versions that must match."""

from __future__ import annotations

import os
import traceback
from types import TracebackType
from typing import Any

import cloudpickle

from easyremote.node.version import __version__
from easyremote.proto import PROTOCOL_VERSION, python_version
from easyremote.proto.payload import Payload, pickle_value, unpickle
from easyremote.proto.v1 import common_pb2

# Below this size pickling runs inline on the event loop; above it in a worker
# thread so heartbeats and other calls are not held up.
INLINE_PICKLE_BYTES = 256 * 1024
# cloudpickle's name for the file of code it rebuilt from a by-value pickle.
_DYNAMIC_CODE = "<dynamic-code>"
# Frames from files here are the node calling the user's function.
_NODE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def local_versions() -> common_pb2.Versions:
    """The versions this node announces to the gateway."""
    return common_pb2.Versions(
        protocol=PROTOCOL_VERSION,
        python=python_version(),
        cloudpickle=str(getattr(cloudpickle, "__version__", "unknown")),
        easyremote=__version__,
    )


def dumps(value: object) -> Payload:
    """Pickles ``value`` with cloudpickle (functions and __main__ classes by value).

    Large ``bytes`` inside ``value`` are referred to, not copied.
    """
    return pickle_value(value, cloudpickle.Pickler)


def loads(data: Payload | bytes) -> Any:
    """Unpickles data produced by ``dumps`` on any peer."""
    return unpickle(data)


def describe_versions(caller: common_pb2.Versions) -> str:
    """A short text comparing the caller's versions with this node's."""
    mine = local_versions()
    return (
        f"caller runs {caller.python or 'unknown Python'} with cloudpickle "
        f"{caller.cloudpickle or 'unknown'}; this node runs {mine.python} with cloudpickle "
        f"{mine.cloudpickle}"
    )


def exception_error(exc: BaseException) -> common_pb2.Error:
    """Describes a user exception for the caller (type, message, traceback)."""
    kind = type(exc)
    module = kind.__module__
    qualname = kind.__qualname__
    trimmed = _without_node_frames(exc.__traceback__)
    return common_pb2.Error(
        reason=common_pb2.ERROR_REASON_REMOTE_EXCEPTION,
        message=str(exc),
        remote_type=qualname if module == "builtins" else f"{module}.{qualname}",
        remote_traceback=format_user_traceback(exc, trimmed),
    )


def format_user_traceback(exc: BaseException, tb: TracebackType | None) -> str:
    """``traceback.format_exception`` text of ``exc`` raised along ``tb``.

    Code that cloudpickle shipped by value (a ``__main__`` function run in an
    isolated child) is named ``<dynamic-code>``; such frames get back the file
    their module came from, so the caller sees the real ``file:line``.
    """
    summary = traceback.TracebackException(type(exc), exc, tb)
    _restore_filenames(summary, exc, tb, set())
    return "".join(summary.format())


def _restore_filenames(
    summary: traceback.TracebackException,
    exc: BaseException,
    tb: TracebackType | None,
    seen: set[int],
) -> None:
    if id(exc) in seen:  # a chain can loop back on itself
        return
    seen.add(id(exc))
    frames = [frame for frame, _ in traceback.walk_tb(tb)]
    stack = summary.stack
    if len(frames) == len(stack):
        for index, (frame, entry) in enumerate(zip(frames, stack, strict=True)):
            real = frame.f_globals.get("__file__")
            if entry.filename == _DYNAMIC_CODE and isinstance(real, str):
                # lookup_line=False: the source line is read from the real file
                # when the traceback is formatted.
                stack[index] = traceback.FrameSummary(
                    real, entry.lineno, entry.name, lookup_line=False
                )
    linked = [(summary.__cause__, exc.__cause__), (summary.__context__, exc.__context__)]
    # Exception groups (3.11+) summarise at most max_group_width members, in order.
    members = getattr(summary, "exceptions", None) or ()
    linked += zip(members, getattr(exc, "exceptions", ()), strict=False)
    for inner_summary, inner in linked:
        if inner_summary is not None and inner is not None:
            _restore_filenames(inner_summary, inner, inner.__traceback__, seen)


def _without_node_frames(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` from the user's first frame on: the node's frames that called it are noise.

    Only the leading frames are dropped (the user's code may call back into
    EasyRemote, and those frames are part of its story). A traceback made only
    of the node's frames is kept whole: the error is then the node's own.
    """
    first = tb
    while first is not None and first.tb_frame.f_code.co_filename.startswith(_NODE_DIR):
        first = first.tb_next
    return first if first is not None else tb


def pickled_exception(exc: BaseException) -> bytes:
    """The exception itself, pickled, or b"" when it cannot be pickled."""
    try:
        return dumps(exc).tobytes()
    except Exception:  # noqa: BLE001 - the text description is enough
        return b""
