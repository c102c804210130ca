"""How a call ends badly, and (un)pickling that says so: shared by threads and child processes.

A failed call ends with one ``Error`` frame (plus the pickled exception when
the user's code raised). The same helpers run in the node process and in the
isolated child processes, so a call's error reads the same either way.
"""

from __future__ import annotations

import logging
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

logger = logging.getLogger("easyremote.node")

# Longest exception message a failure log line repeats; a message can hold
# data of any size, the log line should stay one readable line.
MAX_LOGGED_MESSAGE_CHARS = 200
_REASON_PREFIX = "ERROR_REASON_"


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


def log_failure(call_id: int, function: str, error: common_pb2.Error) -> None:
    """Logs, at INFO (DEBUG when cancelled), that a call ended with ``error``; never its arguments.

    The line names the call, the function, the exception type (or, for a
    failure the node decided, the reason) and the message cut to
    ``MAX_LOGGED_MESSAGE_CHARS``.
    """
    # A caller that cancels (Ctrl-C, a closed stream) is not a failure here.
    cancelled = error.reason == common_pb2.ERROR_REASON_CANCELLED
    level = logging.DEBUG if cancelled else logging.INFO
    if not logger.isEnabledFor(level):
        return
    kind = error.remote_type or common_pb2.ErrorReason.Name(error.reason).removeprefix(
        _REASON_PREFIX
    )
    logger.log(
        level,
        "call %d of %r %s: %s: %s",
        call_id,
        function,
        "cancelled" if cancelled else "failed",
        kind,
        _one_line(error.message),
    )


def _one_line(message: str) -> str:
    # Only the head is looked at: a message may be megabytes long.
    head = message[: MAX_LOGGED_MESSAGE_CHARS * 4]
    flat = " ".join(head.split())
    if len(flat) <= MAX_LOGGED_MESSAGE_CHARS and len(head) == len(message):
        return flat
    return flat[: MAX_LOGGED_MESSAGE_CHARS - 3] + "..."
