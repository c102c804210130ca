"""How a call ends badly, and (un)pickling that says so: shared by threads and child processes.

A failed call ends with one ``Error`` frame (plus the pickled exception when
the user's code raised). The same helpers run in the node process and in the
isolated child processes, so a call's error reads the same either way.
"""

from __future__ import annotations

from typing import Any

from easyremote.node._serialization import (
    describe_versions,
    dumps,
    exception_error,
    loads,
    pickled_exception,
)
from easyremote.proto import Payload
from easyremote.proto.v1 import common_pb2


class CallFailed(Exception):
    """Ends an execution with a given error frame."""

    def __init__(self, error: common_pb2.Error, data: bytes = b"") -> None:
        super().__init__(error.message)
        self.error = error
        self.data = data


def user_failure(exc: BaseException) -> CallFailed:
    """The user's function raised ``exc``: type, message, traceback and the pickle."""
    return CallFailed(exception_error(exc), pickled_exception(exc))


def failure(reason: int, message: str) -> CallFailed:
    """A failure the node itself decided (bad payload, deadline, ...)."""
    return CallFailed(common_pb2.Error(reason=reason, message=message))  # type: ignore[arg-type]


def load_arguments(
    payload: Payload | bytes, function: str, caller: common_pb2.Versions
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Unpickles ``(args, kwargs)``; a failure names both sides' versions."""
    try:
        args, kwargs = loads(payload)
    except Exception as exc:
        raise failure(
            common_pb2.ERROR_REASON_SERIALIZATION,
            f"could not unpickle the arguments of {function!r}: {exc!r} "
            f"({describe_versions(caller)})",
        ) from exc
    return tuple(args), dict(kwargs)


def dump_value(value: object, function: str) -> Payload:
    """Pickles a result or stream item of ``function``."""
    try:
        return dumps(value)
    except Exception as exc:
        raise failure(
            common_pb2.ERROR_REASON_SERIALIZATION,
            f"could not pickle the result of {function!r}: {exc!r}",
        ) from exc
