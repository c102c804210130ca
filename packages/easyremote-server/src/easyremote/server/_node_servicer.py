"""Thin servicer for node control streams: decode, hand to domain code."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from grpc import aio

from easyremote.proto import PROTOCOL_VERSION, DataChunk
from easyremote.proto.v1 import client_pb2, common_pb2, node_pb2, node_pb2_grpc
from easyremote.server._limits import PeerLimits, RegistrationLimits
from easyremote.server._node_link import NodeLink
from easyremote.server._registry import NodeRecord, Registry
from easyremote.server._router import Router
from easyremote.server._wire import abort, peer_of, read_hello

logger = logging.getLogger("easyremote.server")

# A node that connects must say hello promptly; idle half-open connections
# would otherwise hold resources forever.
HELLO_TIMEOUT_S = 10.0
MAX_NODE_ID_LENGTH = 256
# The stream is registered by hand (see _handlers): requests arrive decoded by
# the codec, replies leave as the bytes the outbox encoded.
NodeContext = aio.ServicerContext["node_pb2.NodeEnvelope | DataChunk", bytes]


def duplicate_id_message(holder: NodeRecord) -> str:
    """Why a node may not take ``holder``'s id, and how to pick another."""
    held_by = ", ".join(
        part
        for part in (
            f"host {holder.hostname!r}" if holder.hostname else "",
            f"peer {holder.peer}" if holder.peer and holder.peer != "unknown" else "",
        )
        if part
    )
    where = f" (held by {held_by})" if held_by else ""
    return (
        f"node id {holder.node_id!r} is already connected to this gateway{where}; "
        "give this node another id: --node-id on the CLI or ComputeNode(..., node_id=...)"
    )


class NodeServicer(node_pb2_grpc.NodeServiceServicer):
    """Accepts node connections and feeds their frames to the router."""

    def __init__(
        self,
        registry: Registry,
        router: Router,
        welcome: node_pb2.Welcome,
        peers: PeerLimits,
        limits: RegistrationLimits,
    ) -> None:
        self._registry = registry
        self._router = router
        self._welcome = welcome
        self._peers = peers
        self._limits = limits
        self._links: set[NodeLink] = set()

    async def drain_all(self, reason: str, timeout: float) -> None:
        """Tells every connected node to stop taking calls, then closes streams."""
        links = list(self._links)
        for link in links:
            frame = node_pb2.GatewayFrame()
            frame.drain.reason = reason
            link.close_reason = reason  # what the disconnect line will say
            link.send(frame)
        await asyncio.gather(*(link.flush(timeout) for link in links))

    # grpc.aio lets a stream-stream handler return None and answer through
    # context.write; the generated stub only knows the iterator form.
    async def Connect(  # type: ignore[override]  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[node_pb2.NodeEnvelope | DataChunk],
        context: NodeContext,
    ) -> None:
        host = await self._peers.admit(context)
        try:
            await self._connect(request_iterator, context)
        finally:
            self._peers.release(host)

    async def _connect(
        self,
        request_iterator: AsyncIterator[node_pb2.NodeEnvelope | DataChunk],
        context: NodeContext,
    ) -> None:
        first = await self._read_hello(request_iterator, context)
        hello = first.frames[0].hello
        node_id = hello.node_id
        holder = self._registry.get(node_id)
        if holder is not None:
            await abort(
                context, common_pb2.ERROR_REASON_ALREADY_EXISTS, duplicate_id_message(holder)
            )
        link = NodeLink(context.write)
        record = NodeRecord.from_hello(hello, link, peer_of(context))
        self._registry.add(record)
        self._links.add(link)
        welcome = node_pb2.GatewayFrame()
        welcome.welcome.CopyFrom(self._welcome)
        welcome.welcome.node_id = node_id
        link.send(welcome)
        logger.info(
            "node %s connected from %s with %d function(s)",
            node_id,
            record.peer,
            len(record.functions),
        )
        self._router.node_joined(record)
        why = "node closed its connection"
        try:
            for frame in first.frames[1:]:
                self._handle(record, frame)
            node_chunk = self._router.node_chunk
            async for envelope in request_iterator:
                if isinstance(envelope, DataChunk):
                    node_chunk(record, envelope)
                    continue
                for frame in envelope.frames:
                    self._handle(record, frame)
        except asyncio.CancelledError:
            why = link.close_reason or "connection lost"
            link.abort()
            raise
        except Exception as exc:  # noqa: BLE001 - any stream failure means the node is gone
            why = f"stream failed: {exc}"
        finally:
            if link.close_reason:
                why = link.close_reason
            elif record.state == client_pb2.NODE_STATE_DRAINING:
                # A stopping node drains, then closes; whether its end reads as
                # a close or a reset is a race of no interest.
                why = "node stopped after draining"
            self._links.discard(link)
            if self._registry.remove(record):
                self._router.node_lost(record, why)
            logger.info("node %s disconnected: %s", node_id, why)
        await link.flush(timeout=5.0)

    def _handle(self, record: NodeRecord, frame: node_pb2.NodeFrame) -> None:
        kind = frame.WhichOneof("kind")
        if kind == "result":
            self._router.node_result(record, frame.result)
        elif kind == "chunk":  # from a node that coalesces chunks
            chunk = frame.chunk
            self._router.node_chunk(record, DataChunk(chunk.call_id, chunk.data, chunk.more))
        elif kind == "heartbeat":
            record.on_heartbeat(frame.heartbeat)
            self._router.node_available(record)
        elif kind == "draining":
            record.state = client_pb2.NODE_STATE_DRAINING
            logger.info("node %s is draining: %s", record.node_id, frame.draining.reason)
            self._router.node_draining(record)

    async def _read_hello(
        self,
        request_iterator: AsyncIterator[node_pb2.NodeEnvelope | DataChunk],
        context: NodeContext,
    ) -> node_pb2.NodeEnvelope:
        first = await read_hello(
            request_iterator, context, node_pb2.NodeEnvelope, "NodeHello", HELLO_TIMEOUT_S
        )
        hello = first.frames[0].hello
        if hello.versions.protocol != PROTOCOL_VERSION:
            await abort(
                context,
                common_pb2.ERROR_REASON_PROTOCOL_MISMATCH,
                f"node speaks protocol {hello.versions.protocol}, gateway {PROTOCOL_VERSION}; "
                "install matching easyremote versions",
            )
        if not hello.node_id or len(hello.node_id) > MAX_NODE_ID_LENGTH:
            await abort(
                context,
                common_pb2.ERROR_REASON_INVALID_ARGUMENT,
                f"node id must be 1-{MAX_NODE_ID_LENGTH} characters",
            )
        names = [spec.name for spec in hello.functions]
        limits = self._limits
        if len(names) > limits.max_functions:
            await abort(
                context,
                common_pb2.ERROR_REASON_INVALID_ARGUMENT,
                f"{len(names)} functions is more than the gateway accepts per node "
                f"(max_functions_per_node={limits.max_functions})",
            )
        too_long = next((n for n in names if len(n) > limits.max_name_chars), None)
        if too_long is not None:
            await abort(
                context,
                common_pb2.ERROR_REASON_INVALID_ARGUMENT,
                f"function name {too_long[:40]!r}... is longer than "
                f"{limits.max_name_chars} characters (max_function_name_chars)",
            )
        if len(set(names)) != len(names) or not all(names):
            await abort(
                context,
                common_pb2.ERROR_REASON_INVALID_ARGUMENT,
                "function names must be unique and non-empty",
            )
        return first
