"""Coalescing writer for one gRPC stream.

Every long-lived EasyRemote stream (client session, node connection) has one
Outbox. Producers queue frames without waiting; a single writer task packs all
frames queued while the previous write was in progress into one envelope. Under
load this turns many tiny gRPC messages into few larger ones, which measured
~5x more calls/s than one message per frame. Payload chunks (``DataChunk``)
always go as a message of their own, framed by the stream's codec without
protobuf. A byte high-water mark lets bulk producers (large payloads) wait
instead of filling memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from easyremote.proto.codec import DataChunk, StreamCodec
from easyremote.proto.framing import CHUNK_SIZE

FrameT = TypeVar("FrameT")


class OutboxClosedError(ConnectionError):
    """The stream behind an Outbox is closed; the frame was not sent."""


class Outbox(Generic[FrameT]):
    """Queues frames for one stream and writes them in coalesced envelopes.

    Args:
        codec: Encodes the stream's outgoing envelopes and chunks.
        write: Sends one encoded message (e.g. ``call.write`` or
            ``context.write`` of a stream registered without a serializer).
        max_envelope_bytes: Payload bytes after which an envelope is closed;
            an envelope holds at most this plus one frame.
        high_water_bytes: Queued payload bytes above which ``put_wait`` waits.
    """

    def __init__(
        self,
        codec: StreamCodec[Any],
        write: Callable[[bytes], Awaitable[object]],
        *,
        max_envelope_bytes: int = CHUNK_SIZE,
        high_water_bytes: int = 8 * CHUNK_SIZE,
    ) -> None:
        self._codec = codec
        self._write = write
        self._max_envelope_bytes = max_envelope_bytes
        self._high_water = high_water_bytes
        self._pending: deque[tuple[FrameT | DataChunk | bytes, int]] = deque()
        self._pending_bytes = 0
        # The idle writer waits on this future; a bare future is cheaper to
        # wake than an asyncio.Event, and the writer wakes once per message
        # when calls are few.
        self._wake: asyncio.Future[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._closing = False
        self._closed = False
        self._writer: asyncio.Future[None] | None = None

    def start(self) -> None:
        """Starts the writer task (on the running loop)."""
        if self._writer is None:
            self._writer = asyncio.ensure_future(self.run())

    async def aclose(self, timeout: float) -> None:
        """Writes what is queued (up to ``timeout`` seconds), then stops.

        Never raises: a stream that broke meanwhile just loses the frames.
        """
        self.close()
        writer = self._writer
        if writer is None:
            return
        # asyncio.wait never raises the writer's error or cancellation, and
        # cancelling the caller does not cancel the writer.
        await asyncio.wait({writer}, timeout=timeout)
        if not writer.done():
            writer.cancel()
        elif not writer.cancelled():
            writer.exception()  # retrieved: a broken stream is expected here

    def abort(self) -> None:
        """Stops at once, dropping queued frames (the stream is gone)."""
        self.close()
        if self._writer is not None:
            self._writer.cancel()

    @property
    def closed(self) -> bool:
        """True once the outbox takes no more frames."""
        return self._closing or self._closed

    def put(self, frame: FrameT | DataChunk | bytes, size: int = 0) -> None:
        """Queues ``frame`` (carrying ``size`` payload bytes) without waiting.

        Raises:
            OutboxClosedError: The stream is closed.
        """
        if self._closing or self._closed:
            raise OutboxClosedError("stream is closed")
        self._pending.append((frame, size))
        if size:
            self._pending_bytes += size
            if self._pending_bytes >= self._high_water:
                self._writable.clear()
        self._wake_writer()

    def _wake_writer(self) -> None:
        wake = self._wake
        if wake is not None:
            self._wake = None
            if not wake.done():
                wake.set_result(None)

    async def put_wait(self, frame: FrameT | DataChunk | bytes, size: int) -> None:
        """Queues ``frame`` once queued bytes are below the high-water mark."""
        while not self._writable.is_set():
            await self._writable.wait()
        self.put(frame, size)

    def close(self) -> None:
        """Takes no more frames; ``run`` writes what is queued, then returns."""
        self._closing = True
        self._wake_writer()

    async def run(self) -> None:
        """Writes queued frames until closed. Run exactly one per outbox."""
        pending = self._pending
        encode_chunk = self._codec.encode_chunk
        encode_frames = self._codec.encode_frames
        try:
            while True:
                if not pending and not self._closing:
                    self._wake = asyncio.get_running_loop().create_future()
                    await self._wake
                while pending:
                    item, nbytes = pending.popleft()
                    if type(item) is DataChunk:
                        message = encode_chunk(item)
                    else:
                        batch = [item]
                        while (
                            pending
                            and nbytes < self._max_envelope_bytes
                            and type(pending[0][0]) is not DataChunk
                        ):
                            frame, size = pending.popleft()
                            batch.append(frame)
                            nbytes += size
                        message = encode_frames(batch)
                    self._pending_bytes -= nbytes
                    if self._pending_bytes < self._high_water:
                        self._writable.set()
                    await self._write(message)
                if self._closing:
                    return
        finally:
            self._closed = True
            pending.clear()
            self._pending_bytes = 0
            # Wake producers blocked in put_wait so they see the closed stream.
            self._writable.set()
