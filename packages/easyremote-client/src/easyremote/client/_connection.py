"""The client's multiplexed session with the gateway.

One gRPC channel and one long-lived Session stream carry every call of a
client, each tagged with a call id; a single reader task routes incoming frames
to the waiting call. Opening the session is retried (``retry_attempts``); a
session that breaks fails the calls in flight with a clear error and the next
call opens a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from grpc import aio

from easyremote.client._errors import (
    AuthenticationError,
    CallCancelledError,
    EasyRemoteError,
    GatewayUnavailableError,
    PayloadTooLargeError,
    error_from_rpc,
    error_from_wire,
)
from easyremote.client._serialization import local_versions
from easyremote.proto import DataChunk, Outbox, OutboxClosedError, Payload, channel_options
from easyremote.proto.credentials import (
    ROLE_CLIENT,
    CredentialsError,
    auth_metadata,
    resolve_token,
)
from easyremote.proto.framing import split_payload
from easyremote.proto.memory import tune_allocator
from easyremote.proto.streams import CLIENT_TO_GATEWAY, GATEWAY_TO_CLIENT, SESSION_METHOD
from easyremote.proto.tls import TlsSettings, open_channel, refuse_plaintext_token
from easyremote.proto.v1 import client_pb2, client_pb2_grpc, common_pb2

logger = logging.getLogger("easyremote.client")

T = TypeVar("T")
Metadata = tuple[tuple[str, str], ...]

# Stream items the node may send ahead of the reader; credit is topped up
# when half of it has been consumed.
STREAM_WINDOW = 16
_END = object()

SessionStream = aio.StreamStreamCall[bytes, "client_pb2.SessionEnvelope | DataChunk"]


class PendingCall:
    """Receives the outcome frames of one call."""

    __slots__ = (
        "_kind",
        "_parts",
        "attempt",
        "call_id",
        "function",
        "future",
        "node_id",
        "queue",
        "stream",
    )

    def __init__(self, call_id: int, function: str, stream: bool) -> None:
        loop = asyncio.get_running_loop()
        self.call_id = call_id
        self.function = function
        self.stream = stream
        self.future: asyncio.Future[Payload] = loop.create_future()
        # Streams: items (Payload), the end marker or an error. Unary calls use
        # the future alone.
        self.queue: asyncio.Queue[object] | None = asyncio.Queue() if stream else None
        self._parts: list[bytes | memoryview] = []
        self._kind = 0
        self.node_id = ""
        self.attempt = 0

    def on_result(self, result: common_pb2.CallResult) -> bool:
        """Handles an outcome frame; True when the call is complete."""
        self.node_id = result.node_id or self.node_id
        self.attempt = result.attempt or self.attempt
        kind = result.kind
        if kind == common_pb2.RESULT_KIND_ERROR:
            self.fail(error_from_wire(result.error, result.data))
            return True
        if kind == common_pb2.RESULT_KIND_END:
            if self.queue is not None:
                self.queue.put_nowait(_END)
            return True
        # A new header always starts a fresh payload: after a failover the
        # re-run's value replaces any partial one.
        self._kind = kind
        self._parts = [result.data]
        if result.more:
            return False
        return self._deliver()

    def on_chunk(self, chunk: DataChunk) -> bool:
        if not self._kind:
            return False
        self._parts.append(chunk.data)
        if chunk.more:
            return False
        return self._deliver()

    def _deliver(self) -> bool:
        # Unpickled later straight from the chunks: no joined copy.
        data = Payload(self._parts)
        self._parts = []
        kind = self._kind
        self._kind = 0
        if kind == common_pb2.RESULT_KIND_ITEM:
            # Items of a unary call would be a gateway bug; they are dropped.
            if self.queue is not None:
                self.queue.put_nowait(data)
            return False
        if not self.future.done():
            self.future.set_result(data)
        return True

    def fail(self, error: BaseException) -> None:
        if self.queue is not None:
            self.queue.put_nowait(error)
        elif not self.future.done():
            self.future.set_exception(error)


class Session:
    """One open Session stream and the calls multiplexed on it."""

    def __init__(self, stream: SessionStream) -> None:
        self._stream = stream
        self.outbox: Outbox[client_pb2.ClientFrame] = Outbox(CLIENT_TO_GATEWAY, stream.write)
        self.calls: dict[int, PendingCall] = {}
        self._ids = itertools.count(1)
        self.closed = False
        self.max_payload_bytes = 0
        self._reader: asyncio.Future[None] | None = None

    async def open(self, timeout: float) -> None:
        hello = client_pb2.ClientFrame()
        hello.hello.versions.CopyFrom(local_versions())
        self.outbox.put(hello)
        self.outbox.start()
        first = await asyncio.wait_for(self._stream.read(), timeout)
        if first is aio.EOF:  # type: ignore[attr-defined]  # grpc-stubs lacks aio.EOF
            raise await self._ended_error()
        frames = list(first.frames) if isinstance(first, client_pb2.SessionEnvelope) else []
        if not frames or frames[0].WhichOneof("kind") != "welcome":
            raise GatewayUnavailableError("gateway did not answer with a SessionWelcome")
        self.max_payload_bytes = frames[0].welcome.max_payload_bytes
        self._reader = asyncio.ensure_future(self._read_loop())

    async def _ended_error(self) -> EasyRemoteError:
        code = await self._stream.code()
        details = await self._stream.details()
        metadata = await self._stream.trailing_metadata()
        error = aio.AioRpcError(code, aio.Metadata(), metadata or aio.Metadata(), details, None)
        return error_from_rpc(error)

    async def _read_loop(self) -> None:
        why: BaseException | None = None
        try:
            while True:
                envelope = await self._stream.read()
                if envelope is aio.EOF:  # type: ignore[attr-defined]  # grpc-stubs lacks aio.EOF
                    why = await self._ended_error()
                    break
                calls = self.calls
                if isinstance(envelope, DataChunk):
                    pending = calls.get(envelope.call_id)
                    if pending is not None and pending.on_chunk(envelope):
                        del calls[envelope.call_id]
                    continue
                assert isinstance(envelope, client_pb2.SessionEnvelope)
                for frame in envelope.frames:
                    kind = frame.WhichOneof("kind")
                    if kind == "result":
                        result = frame.result
                        pending = calls.get(result.call_id)
                        if pending is not None and pending.on_result(result):
                            del calls[result.call_id]
                    elif kind == "chunk":  # from a peer that coalesces chunks
                        chunk = frame.chunk
                        pending = calls.get(chunk.call_id)
                        if pending is not None and pending.on_chunk(
                            DataChunk(chunk.call_id, chunk.data, chunk.more)
                        ):
                            del calls[chunk.call_id]
        except asyncio.CancelledError:
            why = GatewayUnavailableError("client closed")
            raise
        except grpc.RpcError as exc:
            why = error_from_rpc(exc)
        except Exception as exc:  # noqa: BLE001 - any failure ends the session
            why = GatewayUnavailableError(f"session failed: {exc!r}")
        finally:
            self._shutdown(why)

    def _shutdown(self, why: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.outbox.close()
        detail = f": {why}" if why else ""
        for pending in list(self.calls.values()):
            pending.fail(
                GatewayUnavailableError(
                    f"connection to the gateway was lost while {pending.function!r} was in flight; "
                    f"its outcome is unknown{detail}",
                    node_id=pending.node_id,
                    attempt=pending.attempt,
                )
            )
        self.calls.clear()

    async def start(self, options: client_pb2.CallOptions, payload: Payload) -> PendingCall:
        """Sends a call; returns the handle that receives its outcome."""
        if self.closed:
            raise GatewayUnavailableError("session is closed")
        limit = self.max_payload_bytes
        if limit and len(payload) > limit:
            raise PayloadTooLargeError(
                f"the arguments of {options.function!r} pickle to {len(payload)} bytes; "
                f"the gateway accepts at most {limit}"
            )
        call_id = next(self._ids)
        pending = PendingCall(call_id, options.function, options.stream)
        self.calls[call_id] = pending
        frame = client_pb2.ClientFrame()
        start = frame.start
        start.call_id = call_id
        start.options.CopyFrom(options)
        inline, pieces = split_payload(payload)
        start.data = inline
        start.more = bool(pieces)
        try:
            if not pieces:
                self.outbox.put(frame, len(inline), now=len(self.calls) == 1)
                return pending
            self.outbox.put(frame)
            last = len(pieces) - 1
            for index, piece in enumerate(pieces):
                await self.outbox.put_wait(DataChunk(call_id, piece, index < last), len(piece))
        except OutboxClosedError:
            self.calls.pop(call_id, None)
            raise GatewayUnavailableError(
                "connection to the gateway was lost while sending the call"
            ) from None
        except BaseException:
            self.cancel(call_id)
            raise
        return pending

    def cancel(self, call_id: int) -> None:
        """Tells the gateway to cancel the call; its frames are ignored from now."""
        pending = self.calls.pop(call_id, None)
        if pending is None or self.closed:
            return
        frame = client_pb2.ClientFrame()
        frame.cancel.call_id = call_id
        try:
            self.outbox.put(frame)
        except OutboxClosedError:
            pass
        if pending.stream:
            pending.fail(CallCancelledError("call cancelled"))
        else:
            # Whoever cancels has stopped waiting: a cancelled future needs no
            # reader, an exception set on it would be logged as never retrieved.
            pending.future.cancel()

    def grant(self, call_id: int, items: int) -> None:
        if self.closed or call_id not in self.calls:
            return
        frame = client_pb2.ClientFrame()
        frame.credit.call_id = call_id
        frame.credit.items = items
        try:
            self.outbox.put(frame)
        except OutboxClosedError:
            pass

    async def close(self) -> None:
        """Ends the stream and waits (bounded) until nothing of it is pending.

        grpc.aio waits at interpreter exit for every operation it still has
        in flight, so a read left pending here can hang the process at exit.
        """
        self._shutdown(GatewayUnavailableError("client closed"))
        await self.outbox.aclose(2.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._stream.done_writing(), 1.0)
        reader = self._reader
        if reader is not None:
            # The gateway ends the stream once we half-close; let the reader
            # see that end so the RPC finishes normally rather than cancelled.
            await asyncio.wait({reader}, timeout=2.0)
        self._stream.cancel()
        if reader is not None and not reader.done():
            reader.cancel()
            await asyncio.wait({reader}, timeout=2.0)


class Connection:
    """A client's channel to the gateway plus its current session."""

    def __init__(
        self,
        address: str,
        *,
        retry_attempts: int,
        connection_timeout: float,
        token: str | None = None,
        tls: TlsSettings | None = None,
        allow_insecure: bool = False,
    ) -> None:
        self.address = address
        self.retry_attempts = max(0, retry_attempts)
        self.connection_timeout = connection_timeout
        self._token = token
        self._tls = tls or TlsSettings()
        self._allow_insecure = allow_insecure
        self._channel: aio.Channel | None = None
        self._metadata: Metadata = ()
        self._session: Session | None = None
        self._opening: asyncio.Future[Session] | None = None
        self._closed = False

    async def stub(
        self,
    ) -> tuple[client_pb2_grpc.ClientServiceAsyncStub, tuple[tuple[str, str], ...]]:
        """The stub and the call metadata (the token), opening the channel once.

        The token is looked up when the channel opens, so a gateway started
        after this client was made (and its local token file) is found.
        """
        if self._channel is None:
            tune_allocator()
            try:
                token = resolve_token(ROLE_CLIENT, self._token, self.address)
                refuse_plaintext_token(self.address, token, self._tls, self._allow_insecure)
                channel = await open_channel(
                    self.address, self._tls, channel_options(), self.connection_timeout
                )
            except CredentialsError as exc:
                raise AuthenticationError(str(exc)) from exc
            except OSError as exc:
                raise GatewayUnavailableError(
                    f"cannot reach the gateway at {self.address} to check its certificate: {exc}"
                ) from exc
            if self._channel is None:
                self._channel = channel
                self._metadata = auth_metadata(token)
            else:  # another task opened it meanwhile
                await channel.close(None)
        return client_pb2_grpc.ClientServiceStub(self._channel), self._metadata

    async def session(self) -> Session:
        """The open session, opening (with retries) when there is none."""
        session = self._session
        if session is not None and not session.closed:
            return session
        if self._closed:
            raise GatewayUnavailableError("client is closed")
        if self._opening is None or self._opening.done():
            self._opening = asyncio.ensure_future(self._open_with_retries())
        return await asyncio.shield(self._opening)

    async def _open_with_retries(self) -> Session:
        last: BaseException | None = None
        delay = 0.1
        for attempt in range(self.retry_attempts + 1):
            if attempt:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            await self.stub()
            assert self._channel is not None
            # Registered by hand: the outbox sends encoded bytes, and replies
            # decode with the codec that keeps payload chunks uncopied.
            open_stream = self._channel.stream_stream(
                SESSION_METHOD,
                request_serializer=None,
                response_deserializer=GATEWAY_TO_CLIENT.decode,
            )
            session = Session(open_stream(None, metadata=self._metadata))
            try:
                await session.open(self.connection_timeout)
            except asyncio.TimeoutError:
                await session.close()
                last = GatewayUnavailableError(
                    f"gateway at {self.address} did not answer within {self.connection_timeout:g} s"
                )
                continue
            except grpc.RpcError as exc:
                await session.close()
                last = error_from_rpc(exc)
                if not isinstance(last, GatewayUnavailableError):
                    raise last from exc
                continue
            except EasyRemoteError as exc:
                await session.close()
                if not isinstance(exc, GatewayUnavailableError):
                    raise
                last = exc
                continue
            self._session = session
            return session
        raise GatewayUnavailableError(
            f"cannot reach the gateway at {self.address} after "
            f"{self.retry_attempts + 1} attempt(s): {last}"
        ) from last

    async def unary(
        self,
        make_call: Callable[[client_pb2_grpc.ClientServiceAsyncStub, Metadata], Awaitable[T]],
    ) -> T:
        """Runs an idempotent unary RPC, retrying when the gateway is unreachable."""
        delay = 0.1
        for attempt in range(self.retry_attempts + 1):
            try:
                stub, metadata = await self.stub()
                return await asyncio.wait_for(make_call(stub, metadata), self.connection_timeout)
            except asyncio.TimeoutError:
                error: EasyRemoteError = GatewayUnavailableError(
                    f"gateway at {self.address} did not answer within {self.connection_timeout:g} s"
                )
            except grpc.RpcError as exc:
                error = error_from_rpc(exc)
                if not isinstance(error, GatewayUnavailableError) or attempt == self.retry_attempts:
                    raise error from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if attempt == self.retry_attempts:
                raise error
        raise GatewayUnavailableError(f"cannot reach the gateway at {self.address}")

    async def close(self) -> None:
        self._closed = True
        opening, self._opening = self._opening, None
        if opening is not None and not opening.done():
            opening.cancel()
            await asyncio.wait({opening}, timeout=2.0)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None
