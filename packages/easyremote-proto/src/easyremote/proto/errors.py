"""The one table between EasyRemote error reasons and gRPC status codes.

Calls multiplexed on a stream carry an ``ErrorReason``; unary RPCs end with a
gRPC status plus the reason in trailing metadata. Both directions use this
table, so a reason survives any hop unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import grpc

from easyremote.proto.v1 import common_pb2

# Trailing-metadata key that carries the ErrorReason name on unary RPC errors.
REASON_METADATA_KEY = "easyremote-reason"

_R = common_pb2.ErrorReason
_S = grpc.StatusCode

REASON_TO_STATUS: Mapping[int, grpc.StatusCode] = {
    _R.ERROR_REASON_UNSPECIFIED: _S.UNKNOWN,
    _R.ERROR_REASON_REMOTE_EXCEPTION: _S.UNKNOWN,
    _R.ERROR_REASON_NO_AVAILABLE_NODES: _S.UNAVAILABLE,
    _R.ERROR_REASON_NODE_NOT_FOUND: _S.NOT_FOUND,
    _R.ERROR_REASON_QUEUE_FULL: _S.RESOURCE_EXHAUSTED,
    _R.ERROR_REASON_DEADLINE_EXCEEDED: _S.DEADLINE_EXCEEDED,
    _R.ERROR_REASON_CANCELLED: _S.CANCELLED,
    _R.ERROR_REASON_NODE_LOST: _S.ABORTED,
    _R.ERROR_REASON_SERIALIZATION: _S.DATA_LOSS,
    _R.ERROR_REASON_INVALID_ARGUMENT: _S.INVALID_ARGUMENT,
    _R.ERROR_REASON_PAYLOAD_TOO_LARGE: _S.RESOURCE_EXHAUSTED,
    _R.ERROR_REASON_UNAUTHENTICATED: _S.UNAUTHENTICATED,
    _R.ERROR_REASON_PERMISSION_DENIED: _S.PERMISSION_DENIED,
    _R.ERROR_REASON_UNAVAILABLE: _S.UNAVAILABLE,
    _R.ERROR_REASON_REJECTED: _S.UNAVAILABLE,
    _R.ERROR_REASON_ALREADY_EXISTS: _S.ALREADY_EXISTS,
    _R.ERROR_REASON_INTERNAL: _S.INTERNAL,
    _R.ERROR_REASON_STREAM_INTERRUPTED: _S.ABORTED,
    _R.ERROR_REASON_PROTOCOL_MISMATCH: _S.FAILED_PRECONDITION,
}

# Several reasons share a status; without metadata a status maps back to the
# most general reason for it.
_STATUS_TO_REASON: Mapping[grpc.StatusCode, int] = {
    _S.UNKNOWN: _R.ERROR_REASON_UNSPECIFIED,
    _S.UNAVAILABLE: _R.ERROR_REASON_UNAVAILABLE,
    _S.NOT_FOUND: _R.ERROR_REASON_NODE_NOT_FOUND,
    _S.RESOURCE_EXHAUSTED: _R.ERROR_REASON_PAYLOAD_TOO_LARGE,
    _S.DEADLINE_EXCEEDED: _R.ERROR_REASON_DEADLINE_EXCEEDED,
    _S.CANCELLED: _R.ERROR_REASON_CANCELLED,
    _S.ABORTED: _R.ERROR_REASON_NODE_LOST,
    _S.DATA_LOSS: _R.ERROR_REASON_SERIALIZATION,
    _S.INVALID_ARGUMENT: _R.ERROR_REASON_INVALID_ARGUMENT,
    _S.UNAUTHENTICATED: _R.ERROR_REASON_UNAUTHENTICATED,
    _S.PERMISSION_DENIED: _R.ERROR_REASON_PERMISSION_DENIED,
    _S.ALREADY_EXISTS: _R.ERROR_REASON_ALREADY_EXISTS,
    _S.INTERNAL: _R.ERROR_REASON_INTERNAL,
    _S.FAILED_PRECONDITION: _R.ERROR_REASON_PROTOCOL_MISMATCH,
}


def status_for_reason(reason: int) -> grpc.StatusCode:
    """Returns the gRPC status code that carries ``reason`` on the wire."""
    return REASON_TO_STATUS.get(reason, _S.UNKNOWN)


def reason_from_status(code: grpc.StatusCode | None, metadata_reason: str | None = None) -> int:
    """Returns the ErrorReason of a gRPC error.

    Args:
        code: The status code the RPC ended with.
        metadata_reason: The ``easyremote-reason`` trailing metadata value, if any;
            it wins over the code because several reasons share one code.
    """
    if metadata_reason:
        try:
            return int(common_pb2.ErrorReason.Value(metadata_reason))
        except ValueError:
            pass
    if code is None:
        return _R.ERROR_REASON_UNSPECIFIED
    return _STATUS_TO_REASON.get(code, _R.ERROR_REASON_UNSPECIFIED)


def metadata_reason(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The ``easyremote-reason`` value in gRPC (trailing) metadata, if present.

    Iterates pairs rather than calling ``dict()``: grpc.aio's Metadata is not a
    real mapping and ``dict(metadata)`` raises.
    """
    for key, value in metadata or ():
        if key == REASON_METADATA_KEY:
            return value if isinstance(value, str) else value.decode()
    return None
