"""Small helpers the servicers share for ending RPCs with a proper status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, NoReturn, TypeVar

from grpc import aio

from easyremote.proto import REASON_METADATA_KEY, status_for_reason
from easyremote.proto.v1 import common_pb2

# ServicerContext is invariant in its message types; these let the helpers
# accept the context of any RPC.
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_Envelope = TypeVar("_Envelope")


async def abort(context: aio.ServicerContext[_Req, _Resp], reason: int, message: str) -> NoReturn:
    """Ends the RPC with the status code for ``reason`` and the reason attached."""
    context.set_trailing_metadata(
        ((REASON_METADATA_KEY, common_pb2.ErrorReason.Name(reason)),)  # type: ignore[arg-type]
    )
    await context.abort(status_for_reason(reason), message)
    raise AssertionError("unreachable")  # pragma: no cover


async def read_hello(
    messages: AsyncIterator[Any],
    context: aio.ServicerContext[_Req, _Resp],
    envelope_type: type[_Envelope],
    hello_name: str,
    timeout: float,
) -> _Envelope:
    """The stream's first message, which must be an envelope starting with a hello.

    Anything else (nothing within ``timeout``, a lone chunk, another frame
    first) ends the RPC with INVALID_ARGUMENT.
    """
    try:
        first = await asyncio.wait_for(messages.__anext__(), timeout)
    except (StopAsyncIteration, asyncio.TimeoutError):
        await abort(
            context, common_pb2.ERROR_REASON_INVALID_ARGUMENT, f"expected a {hello_name} first"
        )
    if (
        not isinstance(first, envelope_type)
        or not first.frames  # type: ignore[attr-defined]
        or first.frames[0].WhichOneof("kind") != "hello"  # type: ignore[attr-defined]
    ):
        await abort(
            context,
            common_pb2.ERROR_REASON_INVALID_ARGUMENT,
            f"the first frame must be a {hello_name}",
        )
    return first


def peer_of(context: aio.ServicerContext[_Req, _Resp]) -> str:
    try:
        return str(context.peer())
    except Exception:  # noqa: BLE001 - peer is informational only
        return "unknown"


__all__ = ["abort", "peer_of", "read_hello"]
