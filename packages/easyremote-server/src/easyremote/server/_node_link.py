"""The gateway's sending side of one node's control stream."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from easyremote.proto import DataChunk, Outbox, OutboxClosedError
from easyremote.proto.streams import GATEWAY_TO_NODE
from easyremote.proto.v1 import node_pb2


class NodeLink:
    """Sends frames to one node through an ``Outbox``, which coalesces them."""

    def __init__(self, write: Callable[[bytes], Awaitable[object]]) -> None:
        self.outbox: Outbox[node_pb2.GatewayFrame] = Outbox(GATEWAY_TO_NODE, write)
        self.outbox.start()
        # The RPC handler serving this node; cancelling it ends the stream.
        self.handler: asyncio.Task[object] | None = asyncio.current_task()
        self.close_reason = ""

    def send(
        self, frame: node_pb2.GatewayFrame | DataChunk, size: int = 0, *, now: bool = False
    ) -> None:
        """Queues ``frame``; dropped silently once the stream is closed.

        A closed stream means the node is being removed, and the router then
        settles every call that was running there.
        """
        try:
            self.outbox.put(frame, size, now=now)
        except OutboxClosedError:
            pass

    def close(self, reason: str) -> None:
        """Ends the node's stream from the gateway side (e.g. it went silent)."""
        self.close_reason = reason
        if self.handler is not None and not self.handler.done():
            self.handler.cancel()

    def abort(self) -> None:
        """Stops writing at once (the stream is being torn down)."""
        self.outbox.abort()

    async def flush(self, timeout: float) -> None:
        """Writes what is queued, then takes no more frames."""
        await self.outbox.aclose(timeout)
