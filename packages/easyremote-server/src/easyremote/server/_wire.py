"""Small helpers the servicers share for ending RPCs with a proper status."""

from __future__ import annotations

from typing import NoReturn, TypeVar

from grpc import aio

from easyremote.proto import REASON_METADATA_KEY, status_for_reason
from easyremote.proto.v1 import common_pb2

# ServicerContext is invariant in its message types; these let the helpers
# accept the context of any RPC.
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


async def abort(context: aio.ServicerContext[_Req, _Resp], reason: int, message: str) -> NoReturn:
    """Ends the RPC with the status code for ``reason`` and the reason attached."""
    context.set_trailing_metadata(
        ((REASON_METADATA_KEY, common_pb2.ErrorReason.Name(reason)),)  # type: ignore[arg-type]
    )
    await context.abort(status_for_reason(reason), message)
    raise AssertionError("unreachable")  # pragma: no cover


def peer_of(context: aio.ServicerContext[_Req, _Resp]) -> str:
    try:
        return str(context.peer())
    except Exception:  # noqa: BLE001 - peer is informational only
        return "unknown"


__all__ = ["abort", "peer_of"]
