"""One client's multiplexed session: its calls and its sending side."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from easyremote.proto import DataChunk, Outbox, OutboxClosedError
from easyremote.proto.streams import GATEWAY_TO_CLIENT
from easyremote.proto.v1 import client_pb2, common_pb2
from easyremote.server._calls import Call, error_result
from easyremote.server._router import Router

MAX_FUNCTION_NAME_LENGTH = 256


class ClientSession:
    """Calls of one client stream, keyed by the client's call ids."""

    def __init__(
        self,
        router: Router,
        write: Callable[[bytes], Awaitable[object]],
        versions: common_pb2.Versions,
    ) -> None:
        self._router = router
        self._versions = versions
        self.calls: dict[int, Call] = {}
        self.outbox: Outbox[client_pb2.SessionFrame] = Outbox(GATEWAY_TO_CLIENT, write)
        self.outbox.start()

    # ResultSink ------------------------------------------------------------

    def send_result(self, result: common_pb2.CallResult) -> None:
        # The session's only call: its outcome is written at once (Outbox.put).
        self._put(
            GATEWAY_TO_CLIENT.encode_frame("result", result),
            len(result.data),
            now=len(self.calls) <= 1,
        )

    def send_chunk(self, chunk: DataChunk) -> None:
        self._put(chunk, len(chunk.data), now=False)

    def call_finished(self, call: Call) -> None:
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]

    def _put(
        self, frame: client_pb2.SessionFrame | DataChunk | bytes, size: int, now: bool
    ) -> None:
        try:
            self.outbox.put(frame, size, now=now)
        except OutboxClosedError:
            pass

    # Frames from the client -------------------------------------------------

    def handle_chunk(self, chunk: DataChunk) -> None:
        """A further piece of a call's arguments."""
        call = self.calls.get(chunk.call_id)
        if call is not None:
            self._router.add_args(call, chunk.data, chunk.more)

    def handle(self, frame: client_pb2.ClientFrame) -> None:
        kind = frame.WhichOneof("kind")
        if kind == "start":
            self._start(frame.start)
        elif kind == "chunk":  # from a client that coalesces chunks
            chunk = frame.chunk
            self.handle_chunk(DataChunk(chunk.call_id, chunk.data, chunk.more))
        elif kind == "credit":
            call = self.calls.get(frame.credit.call_id)
            if call is not None:
                self._router.add_credit(call, frame.credit.items)
        elif kind == "cancel":
            call = self.calls.get(frame.cancel.call_id)
            if call is not None:
                self._router.cancel(call)

    def _start(self, start: client_pb2.CallStart) -> None:
        call_id = start.call_id
        name = start.options.function
        problem = None
        if call_id in self.calls:
            problem = f"call id {call_id} is already in use in this session"
        elif not name or len(name) > MAX_FUNCTION_NAME_LENGTH:
            problem = f"function name must be 1-{MAX_FUNCTION_NAME_LENGTH} characters"
        if problem is not None:
            self.send_result(
                error_result(call_id, common_pb2.ERROR_REASON_INVALID_ARGUMENT, problem)
            )
            return
        call = Call(
            call_id=call_id,
            sink=self,
            options=start.options,
            caller_versions=self._versions,
            args=[start.data],
            args_complete=not start.more,
        )
        self.calls[call_id] = call
        self._router.start_call(call)

    def close(self) -> None:
        """The client went away: every call of it is cancelled."""
        for call in list(self.calls.values()):
            self._router.cancel(call, "client disconnected")
        self.calls.clear()
        self.outbox.close()

    async def flush(self, timeout: float) -> None:
        """Writes what is queued, then takes no more frames."""
        await self.outbox.aclose(timeout)


class UnarySink:
    """Collects the outcome of one unary ``Call`` RPC."""

    def __init__(self, call_id: int) -> None:
        self.call_id = call_id
        self.result: common_pb2.CallResult | None = None
        self._parts: list[bytes | memoryview] = []
        self.done = False
        self.waiter: Callable[[], None] | None = None

    def send_result(self, result: common_pb2.CallResult) -> None:
        self.result = common_pb2.CallResult()
        self.result.CopyFrom(result)
        self._parts = [result.data]

    def send_chunk(self, chunk: DataChunk) -> None:
        self._parts.append(chunk.data)

    def call_finished(self, call: Call) -> None:
        if self.result is not None and len(self._parts) > 1:
            self.result.data = b"".join(self._parts)
            self.result.more = False
        self.done = True
        if self.waiter is not None:
            self.waiter()
