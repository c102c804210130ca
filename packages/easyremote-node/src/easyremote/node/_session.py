"""One connected period of a node: its stream, running calls and heartbeats."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from grpc import aio

from easyremote.node._execution import Execution
from easyremote.node._functions import RegisteredFunction
from easyremote.node._resources import ResourceProbe
from easyremote.node._workers import WorkerPool
from easyremote.proto import DataChunk, Outbox
from easyremote.proto.streams import NODE_TO_GATEWAY
from easyremote.proto.v1 import common_pb2, node_pb2

logger = logging.getLogger("easyremote.node")


Stream = aio.StreamStreamCall[bytes, "node_pb2.GatewayEnvelope | DataChunk"]


class NodeSession:
    """Serves calls arriving on one gateway stream until it ends."""

    def __init__(
        self,
        stream: Stream,
        functions: Mapping[str, RegisteredFunction],
        pool: WorkerPool,
        probe: ResourceProbe,
        max_concurrency: int,
        heartbeat_interval: float,
    ) -> None:
        self._stream = stream
        self._functions = functions
        self._pool = pool
        self._probe = probe
        self._max_concurrency = max_concurrency
        self.heartbeat_interval = heartbeat_interval
        self.outbox: Outbox[node_pb2.NodeFrame] = Outbox(NODE_TO_GATEWAY, stream.write)
        self.executions: dict[int, Execution] = {}
        self.draining = False
        self.drain_requested = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._heartbeat_seq = 0

    def start(self) -> None:
        """Starts sending: frames queued so far go out, later ones as they come."""
        self.outbox.start()

    async def flush(self, timeout: float) -> None:
        """Sends what is queued, then takes no more frames."""
        await self.outbox.aclose(timeout)

    def abort(self) -> None:
        """Stops sending at once (the stream is gone)."""
        self.outbox.abort()

    @property
    def in_flight(self) -> int:
        return len(self.executions)

    def handle(self, frame: node_pb2.GatewayFrame) -> None:
        kind = frame.WhichOneof("kind")
        if kind == "execute":
            self._start(frame.execute)
        elif kind == "chunk":  # from a gateway that coalesces chunks
            chunk = frame.chunk
            self.handle_chunk(DataChunk(chunk.call_id, chunk.data, chunk.more))
        elif kind == "credit":
            execution = self.executions.get(frame.credit.call_id)
            if execution is not None:
                execution.add_credit(frame.credit.items)
        elif kind == "cancel":
            execution = self.executions.get(frame.cancel.call_id)
            if execution is not None:
                execution.cancel(frame.cancel.reason)
        elif kind == "drain":
            logger.info("gateway asked this node to drain: %s", frame.drain.reason)
            self.drain_requested.set()

    def handle_chunk(self, chunk: DataChunk) -> None:
        """A further piece of a running call's arguments."""
        execution = self.executions.get(chunk.call_id)
        if execution is not None:
            execution.add_chunk(chunk.data, chunk.more)

    def _start(self, execute: node_pb2.Execute) -> None:
        function = self._functions.get(execute.function)
        refusal = None
        if function is None:
            refusal = f"this node does not serve {execute.function!r}"
        elif self.draining:
            refusal = "node is draining"
        elif len(self.executions) >= self._max_concurrency:
            refusal = f"node is running {len(self.executions)} calls (max_concurrency)"
        if refusal is not None or function is None:
            frame = node_pb2.NodeFrame()
            result = frame.result
            result.call_id = execute.call_id
            result.kind = common_pb2.RESULT_KIND_ERROR
            result.error.reason = common_pb2.ERROR_REASON_REJECTED
            result.error.message = refusal or "refused"
            self.outbox.put(frame)
            return
        execution = Execution(
            execute, function, self.outbox, self._pool, self._finished, self._alone
        )
        self.executions[execution.call_id] = execution
        self._idle.clear()
        execution.start()

    def _alone(self) -> bool:
        return len(self.executions) <= 1

    def _finished(self, execution: Execution) -> None:
        if self.executions.get(execution.call_id) is execution:
            del self.executions[execution.call_id]
            if not self.executions:
                self._idle.set()

    async def heartbeats(self) -> None:
        """Sends resources and in-flight count every interval."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            # Probing (NVML) may block for milliseconds: keep it off the loop.
            snapshot = await loop.run_in_executor(None, self._probe.snapshot)
            self._heartbeat_seq += 1
            frame = node_pb2.NodeFrame()
            heartbeat = frame.heartbeat
            heartbeat.seq = self._heartbeat_seq
            heartbeat.in_flight = len(self.executions)
            heartbeat.resources.CopyFrom(snapshot.to_proto())
            self.outbox.put(frame)

    def start_draining(self, reason: str) -> None:
        """Takes no new calls and tells the gateway so."""
        if self.draining:
            return
        self.draining = True
        frame = node_pb2.NodeFrame()
        frame.draining.reason = reason
        try:
            self.outbox.put(frame)
        except Exception:  # noqa: BLE001 - stream already closed
            pass

    async def wait_idle(self, timeout: float) -> bool:
        """Waits until no call runs; False if ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def cancel_all(self, reason: str) -> None:
        for execution in list(self.executions.values()):
            execution.cancel(reason)

    async def read_loop(self) -> None:
        """Reads frames until the gateway ends the stream."""
        while True:
            envelope = await self._stream.read()
            if envelope is aio.EOF:  # type: ignore[attr-defined]  # grpc-stubs lacks aio.EOF
                return
            if isinstance(envelope, DataChunk):
                self.handle_chunk(envelope)
                continue
            assert isinstance(envelope, node_pb2.GatewayEnvelope)
            for frame in envelope.frames:
                self.handle(frame)
