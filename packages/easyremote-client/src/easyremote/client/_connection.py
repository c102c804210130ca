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
import random
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
from easyremote.proto.credentials import ROLE_CLIENT, CredentialsError, auth_metadata
from easyremote.proto.framing import split_payload
from easyremote.proto.memory import tune_allocator
from easyremote.proto.peer import PeerCredentials, PeerSettings, refusal_message, resolve_peer
from easyremote.proto.streams import CLIENT_TO_GATEWAY, GATEWAY_TO_CLIENT, SESSION_METHOD
from easyremote.proto.tls import PROBE_TIMEOUT_S, TlsSettings, open_channel, tls_mismatch
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
    """A client's channel to the gateway plus its current session.

    The token and TLS settings are looked up again for every (re)connect, so
    a client made before its gateway first started (and wrote its token file
    and record) works as soon as the gateway is up.
    """

    def __init__(
        self,
        address: str,
        *,
        retry_attempts: int,
        connection_timeout: float,
        settings: PeerSettings | None = None,
    ) -> None:
        self.address = address
        self.retry_attempts = max(0, retry_attempts)
        self.connection_timeout = connection_timeout
        self._settings = settings or PeerSettings(ROLE_CLIENT)
        self._channel: aio.Channel | None = None
        self._credentials: PeerCredentials | None = None
        self._channel_lock = asyncio.Lock()
        self._retired: set[asyncio.Future[None]] = set()
        self._metadata: Metadata = ()
        self._session: Session | None = None
        self._opening: asyncio.Future[Session] | None = None
        self._closed = False

    def _resolve(self) -> PeerCredentials:
        try:
            return resolve_peer(self._settings, self.address)
        except CredentialsError as exc:
            raise AuthenticationError(str(exc)) from exc

    async def _ensure_channel(self, refresh: bool) -> aio.Channel:
        """The channel, (re)opened when ``refresh`` finds other credentials."""
        async with self._channel_lock:
            channel = self._channel
            if channel is not None and not refresh:
                return channel
            if self._closed:
                raise GatewayUnavailableError("client is closed")
            try:
                credentials = resolve_peer(self._settings, self.address)
            except CredentialsError as exc:
                # Off the loop: explaining a withheld token may probe the port.
                message = await asyncio.get_running_loop().run_in_executor(
                    None,
                    refusal_message,
                    self.address,
                    exc,
                    min(PROBE_TIMEOUT_S, self.connection_timeout),
                )
                raise AuthenticationError(message) from exc
            if channel is not None and credentials == self._credentials:
                return channel
            tune_allocator()
            try:
                fresh = await open_channel(
                    self.address, credentials.tls, channel_options(), self.connection_timeout
                )
            except CredentialsError as exc:
                raise AuthenticationError(str(exc)) from exc
            except OSError as exc:
                raise GatewayUnavailableError(
                    f"cannot reach the gateway at {self.address} to check its certificate: {exc}"
                ) from exc
            self._channel, self._credentials = fresh, credentials
            self._metadata = auth_metadata(credentials.token)
            if channel is not None:
                # Calls still running on the old channel get a grace period.
                retiring = asyncio.ensure_future(channel.close(self.connection_timeout))
                self._retired.add(retiring)
                retiring.add_done_callback(self._retired.discard)
            return fresh

    def _credentials_changed(self) -> bool:
        """True when a lookup now finds other credentials than the channel's."""
        try:
            return self._resolve() != self._credentials
        except AuthenticationError:
            return False

    async def _tls_mismatch(self) -> str | None:
        """After a failed connection: the TLS disagreement that caused it, if any."""
        credentials = self._credentials
        tls = credentials.tls if credentials is not None else TlsSettings()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, tls_mismatch, self.address, tls, min(PROBE_TIMEOUT_S, self.connection_timeout)
        )

    async def stub(
        self,
    ) -> tuple[client_pb2_grpc.ClientServiceAsyncStub, tuple[tuple[str, str], ...]]:
        """The stub and the call metadata (the token), opening the channel once."""
        channel = await self._ensure_channel(refresh=False)
        return client_pb2_grpc.ClientServiceStub(channel), self._metadata

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

    async def _failure(
        self, error: EasyRemoteError, refreshed: bool
    ) -> tuple[EasyRemoteError | None, bool]:
        """Decides about a failed attempt: (error to raise or None to retry, retry at once)."""
        if not isinstance(error, (AuthenticationError, GatewayUnavailableError)):
            return error, False
        # A gateway that started after our lookup has written its token file
        # and record since: one more attempt at once with what is there now.
        if not refreshed and self._credentials_changed():
            return None, True
        if isinstance(error, AuthenticationError):
            return error, False
        mismatch = await self._tls_mismatch()
        if mismatch is not None:
            return AuthenticationError(mismatch), False
        return None, False

    async def _open_with_retries(self) -> Session:
        last: EasyRemoteError | None = None
        refreshed = False
        attempt = 0
        while True:
            channel = await self._ensure_channel(refresh=True)
            # Registered by hand: the outbox sends encoded bytes, and replies
            # decode with the codec that keeps payload chunks uncopied.
            open_stream = channel.stream_stream(
                SESSION_METHOD,
                request_serializer=None,
                response_deserializer=GATEWAY_TO_CLIENT.decode,
            )
            session = Session(open_stream(None, metadata=self._metadata))
            cause: BaseException | None = None
            try:
                await session.open(self.connection_timeout)
            except asyncio.TimeoutError:
                error: EasyRemoteError = GatewayUnavailableError(
                    f"gateway at {self.address} did not answer within {self.connection_timeout:g} s"
                )
            except grpc.RpcError as exc:
                error, cause = error_from_rpc(exc), exc
            except EasyRemoteError as exc:
                error, cause = exc, exc.__cause__
            else:
                self._session = session
                return session
            await session.close()
            fatal, at_once = await self._failure(error, refreshed)
            if fatal is not None:
                raise fatal from cause
            if at_once:
                refreshed = True
                continue
            last = error
            if attempt >= self.retry_attempts:
                break
            await asyncio.sleep(retry_delay(attempt))
            attempt += 1
        raise GatewayUnavailableError(
            f"cannot reach the gateway at {self.address} after "
            f"{self.retry_attempts + 1} attempt(s): {last}"
        ) from last

    async def unary(
        self,
        make_call: Callable[[client_pb2_grpc.ClientServiceAsyncStub, Metadata], Awaitable[T]],
    ) -> T:
        """Runs an idempotent unary RPC, retrying when the gateway is unreachable."""
        refreshed = False
        attempt = 0
        fresh = False
        while True:
            channel = await self._ensure_channel(refresh=fresh)
            stub = client_pb2_grpc.ClientServiceStub(channel)
            cause: BaseException | None = None
            try:
                return await asyncio.wait_for(
                    make_call(stub, self._metadata), self.connection_timeout
                )
            except asyncio.TimeoutError:
                error: EasyRemoteError = GatewayUnavailableError(
                    f"gateway at {self.address} did not answer within {self.connection_timeout:g} s"
                )
            except grpc.RpcError as exc:
                error, cause = error_from_rpc(exc), exc
            fatal, at_once = await self._failure(error, refreshed)
            if fatal is not None:
                raise fatal from cause
            fresh = True
            if at_once:
                refreshed = True
                continue
            if attempt >= self.retry_attempts:
                raise GatewayUnavailableError(
                    f"cannot reach the gateway at {self.address} after "
                    f"{self.retry_attempts + 1} attempt(s): {error}"
                ) from (cause or error)
            await asyncio.sleep(retry_delay(attempt))
            attempt += 1

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
        for retiring in list(self._retired):
            retiring.cancel()


def retry_delay(attempt: int) -> float:
    """Seconds before retry ``attempt`` + 1: exponential from 0.1 s, capped at 2 s, jittered."""
    return float(min(0.1 * 2**attempt, 2.0)) * random.uniform(0.5, 1.0)
