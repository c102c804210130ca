"""Pickling of arguments and results, and the versions that must match."""

from __future__ import annotations

import traceback
from typing import Any

import cloudpickle

from easyremote.node.version import __version__
from easyremote.proto import PROTOCOL_VERSION, python_version
from easyremote.proto.payload import Payload, pickle_value, unpickle
from easyremote.proto.v1 import common_pb2

# Below this size pickling runs inline on the event loop; above it in a worker
# thread so heartbeats and other calls are not held up.
INLINE_PICKLE_BYTES = 256 * 1024


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
    return common_pb2.Error(
        reason=common_pb2.ERROR_REASON_REMOTE_EXCEPTION,
        message=str(exc),
        remote_type=qualname if module == "builtins" else f"{module}.{qualname}",
        remote_traceback="".join(traceback.format_exception(kind, exc, exc.__traceback__)),
    )


def pickled_exception(exc: BaseException) -> bytes:
    """The exception itself, pickled, or b"" when it cannot be pickled."""
    try:
        return dumps(exc).tobytes()
    except Exception:  # noqa: BLE001 - the text description is enough
        return b""
