"""The EasyRemote error hierarchy and the table that maps the wire to it.

Every error a call can end with is one of these classes. The gateway and nodes
send an ``ErrorReason`` (inside streams) or a gRPC status with the reason in
trailing metadata (unary RPCs); ``error_from_wire`` and ``error_from_rpc``
turn either into the matching exception, keeping the original as ``__cause__``.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterable, Mapping
from typing import cast

import grpc

from easyremote.proto import metadata_reason, reason_from_status, status_for_reason
from easyremote.proto.v1 import common_pb2


class EasyRemoteError(Exception):
    """Base class of every EasyRemote error.

    Attributes:
        reason: The protocol's ErrorReason value.
        node_id: The node involved, when known.
        attempt: How many times the call was dispatched (failover re-runs count).
    """

    reason: int = common_pb2.ERROR_REASON_UNSPECIFIED

    def __init__(self, message: str = "", *, node_id: str = "", attempt: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.node_id = node_id
        self.attempt = attempt

    @property
    def grpc_status(self) -> grpc.StatusCode:
        """The gRPC status code this error travels as."""
        return status_for_reason(self.reason)


class GatewayUnavailableError(EasyRemoteError, ConnectionError):
    """The gateway cannot be reached, went away, or is shutting down."""

    reason = common_pb2.ERROR_REASON_UNAVAILABLE


class NoAvailableNodesError(EasyRemoteError):
    """No connected node serves the function or meets the call's requirements.

    The message names each node considered and why it was excluded.
    """

    reason = common_pb2.ERROR_REASON_NO_AVAILABLE_NODES


class NodeNotFoundError(NoAvailableNodesError):
    """The node named by ``call_node`` or ``get_node_status`` is not connected."""

    reason = common_pb2.ERROR_REASON_NODE_NOT_FOUND


class QueueFullError(EasyRemoteError):
    """Every eligible node is busy and the gateway's wait queue is full."""

    reason = common_pb2.ERROR_REASON_QUEUE_FULL


class RemoteExecutionError(EasyRemoteError):
    """The remote function raised.

    Attributes:
        remote_type: Qualified class name of the remote exception.
        remote_traceback: The traceback text from the node.
        remote_exception: The original exception object when it could be
            unpickled here, else None.
    """

    reason = common_pb2.ERROR_REASON_REMOTE_EXCEPTION

    def __init__(
        self,
        message: str = "",
        *,
        remote_type: str = "",
        remote_traceback: str = "",
        remote_exception: BaseException | None = None,
        node_id: str = "",
        attempt: int = 0,
    ) -> None:
        super().__init__(message, node_id=node_id, attempt=attempt)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback
        self.remote_exception = remote_exception

    @property
    def remote_location(self) -> str:
        """Where the remote function raised, as ``file:line in function``.

        The innermost frame of the user's code in the final exception's
        traceback (EasyRemote's own frames skipped); "" when the traceback
        names none.
        """
        return innermost_user_frame(self.remote_traceback)

    def __str__(self) -> str:
        if self.remote_type:
            text = f"{self.remote_type}: {self.message}" if self.message else self.remote_type
        else:
            text = self.message
        where = f" on {self.node_id}" if self.node_id else ""
        location = self.remote_location
        if location:
            where += f" at {location}"
        return f"{text} (raised{where})"


# ``traceback.format_exception`` prints a chain oldest first, joined by one of
# these lines; the last section is the exception that reached the caller.
_CHAIN_LINE = re.compile(
    r"^(?:The above exception was the direct cause of the following exception:"
    r"|During handling of the above exception, another exception occurred:)$",
    re.MULTILINE,
)
_HEADER = re.compile(r"^(?:  \+ )?(?:Exception Group )?Traceback \(most recent call last\):$")
_FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>.+)$')
# An exception group indents its own frames behind this bar.
_GROUP_BAR = "  | "
# Frames in EasyRemote's own packages are the machinery, not the user's code.
_OWN_FRAME = re.compile(r"[/\\]easyremote[/\\](?:client|core|node|proto|server)[/\\]")


def innermost_user_frame(remote_traceback: str) -> str:
    """``file:line in function`` of the innermost user frame in a traceback text.

    Args:
        remote_traceback: ``traceback.format_exception`` output. With chained
            exceptions only the last section (the exception that was raised)
            counts.

    Returns:
        The location, or "" when no frame outside EasyRemote can be read.
    """
    separators = list(_CHAIN_LINE.finditer(remote_traceback))
    section = remote_traceback[separators[-1].end() :] if separators else remote_traceback
    lines = iter(section.splitlines())
    if not any(_HEADER.match(line) for line in lines):
        return ""
    location = ""
    for raw in lines:
        line = raw.removeprefix(_GROUP_BAR)
        if not line.startswith("  "):
            break  # the exception's own line: what follows is its message
        frame = _FRAME.match(line)
        if frame is not None and not _OWN_FRAME.search(frame["file"]):
            location = f"{frame['file']}:{frame['line']} in {frame['func']}"
    return location


class CallTimeoutError(EasyRemoteError, TimeoutError):
    """The call did not finish within its deadline (also a built-in TimeoutError)."""

    reason = common_pb2.ERROR_REASON_DEADLINE_EXCEEDED


class CallCancelledError(EasyRemoteError):
    """The call was cancelled."""

    reason = common_pb2.ERROR_REASON_CANCELLED


class NodeLostError(EasyRemoteError):
    """The node was lost while running the call and it was not re-run: outcome unknown."""

    reason = common_pb2.ERROR_REASON_NODE_LOST


class StreamInterruptedError(EasyRemoteError):
    """A stream broke after delivering items; it is not restarted.

    Attributes:
        items_delivered: Items the stream delivered before it broke.
    """

    reason = common_pb2.ERROR_REASON_STREAM_INTERRUPTED

    def __init__(
        self, message: str = "", *, items_delivered: int = 0, node_id: str = "", attempt: int = 0
    ) -> None:
        super().__init__(message, node_id=node_id, attempt=attempt)
        self.items_delivered = items_delivered


class SerializationError(EasyRemoteError):
    """Arguments or a result could not be pickled or unpickled."""

    reason = common_pb2.ERROR_REASON_SERIALIZATION


class InvalidArgumentError(EasyRemoteError, ValueError):
    """The call itself is malformed (bad config key, wrong call kind, ...)."""

    reason = common_pb2.ERROR_REASON_INVALID_ARGUMENT


class PayloadTooLargeError(EasyRemoteError):
    """A payload exceeds the gateway's configured limit."""

    reason = common_pb2.ERROR_REASON_PAYLOAD_TOO_LARGE


class AuthenticationError(EasyRemoteError):
    """Missing or wrong credentials."""

    reason = common_pb2.ERROR_REASON_UNAUTHENTICATED


class PermissionDeniedError(EasyRemoteError):
    """The credentials do not allow this operation."""

    reason = common_pb2.ERROR_REASON_PERMISSION_DENIED


class ProtocolMismatchError(EasyRemoteError):
    """Client and gateway speak incompatible protocol versions."""

    reason = common_pb2.ERROR_REASON_PROTOCOL_MISMATCH


# The one table from reasons to classes; reasons not listed map to the base.
_CLASS_BY_REASON: Mapping[int, type[EasyRemoteError]] = {
    cls.reason: cls
    for cls in (
        GatewayUnavailableError,
        NoAvailableNodesError,
        NodeNotFoundError,
        QueueFullError,
        RemoteExecutionError,
        CallTimeoutError,
        CallCancelledError,
        NodeLostError,
        StreamInterruptedError,
        SerializationError,
        InvalidArgumentError,
        PayloadTooLargeError,
        AuthenticationError,
        PermissionDeniedError,
        ProtocolMismatchError,
    )
}


def exception_class(reason: int) -> type[EasyRemoteError]:
    """The exception class for an ErrorReason value."""
    return _CLASS_BY_REASON.get(reason, EasyRemoteError)


def error_from_wire(error: common_pb2.Error, data: bytes = b"") -> EasyRemoteError:
    """Builds the exception for an Error message from the gateway."""
    cls = exception_class(error.reason)
    if cls is RemoteExecutionError:
        original: BaseException | None = None
        if data:
            try:
                loaded = pickle.loads(data)
            except Exception:  # noqa: BLE001 - the class may not exist here
                loaded = None
            if isinstance(loaded, BaseException):
                original = loaded
        return RemoteExecutionError(
            error.message,
            remote_type=error.remote_type,
            remote_traceback=error.remote_traceback,
            remote_exception=original,
            node_id=error.node_id,
            attempt=error.attempt,
        )
    if cls is StreamInterruptedError:
        return StreamInterruptedError(
            error.message,
            items_delivered=error.items_delivered,
            node_id=error.node_id,
            attempt=error.attempt,
        )
    message = error.message or common_pb2.ErrorReason.Name(error.reason)
    return cls(message, node_id=error.node_id, attempt=error.attempt)


def error_from_rpc(exc: grpc.RpcError) -> EasyRemoteError:
    """Builds the exception for a failed gRPC call, keeping it as the cause."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    # grpc-stubs types metadata items as an opaque _Metadatum; at runtime (sync
    # and aio alike) each item is a (key, value) pair.
    trailing = cast(
        "Iterable[tuple[str, str | bytes]] | None",
        exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None,
    )
    reason = reason_from_status(code, metadata_reason(trailing))
    cls = exception_class(reason)
    if cls is EasyRemoteError and code == grpc.StatusCode.UNAVAILABLE:
        cls = GatewayUnavailableError
    error = cls(details or (code.name if code else "gRPC error"))
    error.__cause__ = exc
    return error
