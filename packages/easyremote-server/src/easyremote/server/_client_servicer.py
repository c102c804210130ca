"""Thin servicer for clients: sessions, unary calls and status queries."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from itertools import count

from grpc import aio

from easyremote.proto import PROTOCOL_VERSION, DataChunk
from easyremote.proto.v1 import client_pb2, client_pb2_grpc, common_pb2
from easyremote.server._calls import Call
from easyremote.server._client_session import ClientSession, UnarySink
from easyremote.server._limits import PeerLimits
from easyremote.server._registry import Registry
from easyremote.server._router import Router
from easyremote.server._status import node_status
from easyremote.server._wire import abort, read_hello

logger = logging.getLogger("easyremote.server")

HELLO_TIMEOUT_S = 10.0
# The Session stream is registered by hand (see _handlers): requests arrive
# decoded by the codec, replies leave as the bytes the outbox encoded.
SessionContext = aio.ServicerContext["client_pb2.ClientEnvelope | DataChunk", bytes]


class ClientServicer(client_pb2_grpc.ClientServiceServicer):
    """Accepts client sessions and queries; routing lives in the Router."""

    def __init__(
        self,
        registry: Registry,
        router: Router,
        welcome: client_pb2.SessionWelcome,
        peers: PeerLimits,
    ) -> None:
        self._peers = peers
        self._registry = registry
        self._router = router
        self._welcome = welcome
        self._sessions: set[ClientSession] = set()
        self._unary_ids = count(1)

    async def close_all(self, reason: str, timeout: float) -> None:
        """Ends every session's calls with UNAVAILABLE (gateway stopping)."""
        sessions = list(self._sessions)
        for session in sessions:
            for call in list(session.calls.values()):
                self._router.cancel_with_error(call, common_pb2.ERROR_REASON_UNAVAILABLE, reason)
        await asyncio.gather(*(session.flush(timeout) for session in sessions))

    # grpc.aio lets a stream-stream handler return None and answer through
    # context.write; the generated stub only knows the iterator form.
    async def Session(  # type: ignore[override]  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[client_pb2.ClientEnvelope | DataChunk],
        context: SessionContext,
    ) -> None:
        host = await self._peers.admit(context)
        try:
            await self._session(request_iterator, context)
        finally:
            self._peers.release(host)

    async def _session(
        self,
        request_iterator: AsyncIterator[client_pb2.ClientEnvelope | DataChunk],
        context: SessionContext,
    ) -> None:
        first = await read_hello(
            request_iterator, context, client_pb2.ClientEnvelope, "ClientHello", HELLO_TIMEOUT_S
        )
        versions = first.frames[0].hello.versions
        if versions.protocol != PROTOCOL_VERSION:
            await abort(
                context,
                common_pb2.ERROR_REASON_PROTOCOL_MISMATCH,
                f"client speaks protocol {versions.protocol}, gateway {PROTOCOL_VERSION}; "
                "install matching easyremote versions",
            )
        session = ClientSession(self._router, context.write, versions)
        self._sessions.add(session)
        welcome = client_pb2.SessionFrame()
        welcome.welcome.CopyFrom(self._welcome)
        session.outbox.put(welcome)
        try:
            for frame in first.frames[1:]:
                session.handle(frame)
            handle_chunk = session.handle_chunk
            async for envelope in request_iterator:
                if isinstance(envelope, DataChunk):
                    handle_chunk(envelope)
                    continue
                for frame in envelope.frames:
                    session.handle(frame)
        finally:
            self._sessions.discard(session)
            session.close()
        await session.flush(timeout=5.0)

    async def Call(  # noqa: N802 - gRPC method name
        self,
        request: client_pb2.UnaryCallRequest,
        context: aio.ServicerContext[client_pb2.UnaryCallRequest, common_pb2.CallResult],
    ) -> common_pb2.CallResult:
        if not request.options.function:
            await abort(
                context, common_pb2.ERROR_REASON_INVALID_ARGUMENT, "function name is required"
            )
        if request.versions.protocol != PROTOCOL_VERSION:
            await abort(
                context,
                common_pb2.ERROR_REASON_PROTOCOL_MISMATCH,
                f"client speaks protocol {request.versions.protocol}, gateway {PROTOCOL_VERSION}",
            )
        if request.options.stream:
            await abort(
                context,
                common_pb2.ERROR_REASON_INVALID_ARGUMENT,
                "streaming calls need the Session method",
            )
        sink = UnarySink(next(self._unary_ids))
        done = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not done.done():
                done.set_result(None)

        sink.waiter = wake
        call = Call(
            call_id=sink.call_id,
            sink=sink,
            options=request.options,
            caller_versions=request.versions,
            args=[request.data],
            args_complete=True,
        )
        self._router.start_call(call)
        try:
            await done
        except asyncio.CancelledError:
            self._router.cancel(call)
            raise
        assert sink.result is not None
        return sink.result

    async def ListNodes(  # noqa: N802 - gRPC method name
        self,
        request: client_pb2.ListNodesRequest,
        context: aio.ServicerContext[client_pb2.ListNodesRequest, client_pb2.ListNodesReply],
    ) -> client_pb2.ListNodesReply:
        reply = client_pb2.ListNodesReply()
        nodes = sorted(self._registry.nodes(), key=lambda n: n.node_id)
        for node in nodes:
            if request.function and request.function not in node.functions:
                continue
            reply.nodes.append(node_status(node, self._router))
        return reply

    async def GetNodeStatus(  # noqa: N802 - gRPC method name
        self,
        request: client_pb2.GetNodeStatusRequest,
        context: aio.ServicerContext[client_pb2.GetNodeStatusRequest, client_pb2.NodeStatus],
    ) -> client_pb2.NodeStatus:
        node = self._registry.get(request.node_id)
        if node is None:
            await abort(
                context,
                common_pb2.ERROR_REASON_NODE_NOT_FOUND,
                f"node {request.node_id!r} is not connected",
            )
        return node_status(node, self._router)
