"""AsyncClient: call remote functions from asyncio code."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from easyremote.client._connection import STREAM_WINDOW, Connection, PendingCall, Session
from easyremote.client._errors import CallTimeoutError, InvalidArgumentError
from easyremote.client._options import build_options
from easyremote.client._readiness import wait_for_nodes
from easyremote.client._serialization import (
    INLINE_PICKLE_BYTES,
    dump_arguments,
    load_result,
    local_versions,
)
from easyremote.client._status import NodeStatus
from easyremote.client._stream import StreamReceiver
from easyremote.proto import Payload
from easyremote.proto.addresses import check_address
from easyremote.proto.credentials import ROLE_CLIENT
from easyremote.proto.peer import PeerSettings
from easyremote.proto.v1 import client_pb2

DEFAULT_GATEWAY = "localhost:8080"
# Beyond the call's own deadline the client waits this much longer for the
# gateway's verdict before declaring the timeout itself.
_DEADLINE_GRACE_S = 0.5
_OPTIONS_CACHE_SIZE = 1024


def default_address() -> str:
    """``EASYREMOTE_GATEWAY`` if set, else ``localhost:8080``."""
    return os.environ.get("EASYREMOTE_GATEWAY") or DEFAULT_GATEWAY


def gateway_address(address: str | None) -> str:
    """``address`` (or the default) checked as ``host:port``.

    Raises:
        InvalidArgumentError: No port, or a URL (``tcp://...``).
    """
    try:
        return check_address(address or default_address())
    except ValueError as exc:
        raise InvalidArgumentError(f"gateway address {exc}") from None


class AsyncCallStream:
    """Items of a streaming call, for ``async for``; ``aclose()`` cancels it."""

    def __init__(self, receiver: StreamReceiver, function: str) -> None:
        self._receiver = receiver
        self._function = function

    def __aiter__(self) -> AsyncCallStream:
        return self

    async def __anext__(self) -> Any:
        data = await self._receiver.next_raw()
        if data is None:
            raise StopAsyncIteration
        if len(data) > INLINE_PICKLE_BYTES:
            return await asyncio.to_thread(
                load_result, self._function, data, self._receiver.node_id
            )
        return load_result(self._function, data, self._receiver.node_id)

    async def aclose(self) -> None:
        """Cancels the stream on the node (closing its generator)."""
        await self._receiver.aclose()

    async def __aenter__(self) -> AsyncCallStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class AsyncClient:
    """Calls functions on EasyRemote nodes through a gateway (asyncio).

    All calls share one connection and one multiplexed stream to the gateway.

    Example:
        >>> async with AsyncClient("localhost:8080") as client:
        ...     result = await client.call("train_model", "data")
        ...     async for item in client.call_stream("stream_process", 10):
        ...         print(item)

    Args:
        address: Gateway ``host:port`` (default: ``EASYREMOTE_GATEWAY`` or
            ``localhost:8080``).
        retry_attempts: Extra attempts to reach the gateway when connecting fails.
        connection_timeout: Seconds to wait for the gateway to answer.
        timeout: Default deadline in seconds for every call (None: none).
        token: Client token (default: ``EASYREMOTE_TOKEN``, else, for a
            loopback gateway, the local token file the gateway wrote).
        tls_ca_file: PEM CA bundle to verify the gateway's certificate with
            (default: ``EASYREMOTE_TLS_CA``).
        tls_fingerprint: SHA-256 fingerprint of the gateway's certificate to
            pin (default: ``EASYREMOTE_TLS_FINGERPRINT``); checked before
            anything, the token included, is sent.
        allow_insecure: Send the token without TLS to a non-loopback gateway
            (trusted networks only); refused otherwise.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        retry_attempts: int = 3,
        connection_timeout: float = 10.0,
        timeout: float | None = None,
        token: str | None = None,
        tls_ca_file: str | None = None,
        tls_fingerprint: str | None = None,
        allow_insecure: bool = False,
    ) -> None:
        self.address = gateway_address(address)
        self.timeout = timeout
        settings = PeerSettings(ROLE_CLIENT, token, tls_ca_file, tls_fingerprint, allow_insecure)
        settings.check()
        self._connection = Connection(
            self.address,
            retry_attempts=retry_attempts,
            connection_timeout=connection_timeout,
            settings=settings,
        )
        self._versions = local_versions()
        # call(name) builds the same options every time; they are only read.
        self._plain_options: dict[str, client_pb2.CallOptions] = {}

    # ------------------------------------------------------------------ calls

    async def call(self, function: str, /, *args: Any, **kwargs: Any) -> Any:
        """Calls ``function`` on a node the gateway picks; returns its result.

        Raises:
            NoAvailableNodesError: No node serves it or meets the needs.
            RemoteExecutionError: The function raised on the node.
            CallTimeoutError: The default timeout passed.
        """
        return await self._call(self.plain_options(function), args, kwargs)

    def plain_options(self, function: str) -> client_pb2.CallOptions:
        """Options of a plain ``call(function)``; cached, never modified."""
        options = self._plain_options.get(function)
        if options is None:
            options = build_options(function, default_timeout=self.timeout)
            if len(self._plain_options) < _OPTIONS_CACHE_SIZE:
                self._plain_options[function] = options
        return options

    async def call_node(self, node_id: str, function: str, /, *args: Any, **kwargs: Any) -> Any:
        """Calls ``function`` on the node ``node_id`` only."""
        options = build_options(function, node_id=node_id, default_timeout=self.timeout)
        return await self._call(options, args, kwargs)

    async def call_with_config(
        self, function: str, config: Mapping[str, Any], /, *args: Any, **kwargs: Any
    ) -> Any:
        """Calls ``function`` with routing options.

        Args:
            function: Function name.
            config: ``strategy`` (round_robin, resource_aware, latency_based,
                cost_aware, smart_adaptive), ``requirements`` (gpu_required,
                min_gpu_memory_gb, min_memory_gb, min_cpu_cores, tags,
                node_ids), ``cost_limit`` (per hour), ``timeout`` (seconds),
                ``node_id``.
        """
        options = build_options(function, config, default_timeout=self.timeout)
        return await self._call(options, args, kwargs)

    def call_stream(self, function: str, /, *args: Any, **kwargs: Any) -> AsyncCallStream:
        """Calls a generator function; iterate the result with ``async for``."""
        options = build_options(function, stream=True, default_timeout=self.timeout)
        return self.stream_with_options(options, args, kwargs)

    def stream_with_options(
        self, options: client_pb2.CallOptions, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncCallStream:
        options.stream = True
        options.credit = STREAM_WINDOW
        receiver = self.stream_receiver(
            options, lambda: dump_arguments(options.function, args, kwargs)
        )
        return AsyncCallStream(receiver, options.function)

    # -------------------------------------------------------------- raw layer

    async def _call(
        self, options: client_pb2.CallOptions, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        payload = dump_arguments(options.function, args, kwargs)
        return await self.invoke_and_load(options, payload)

    async def invoke_and_load(self, options: client_pb2.CallOptions, payload: Payload) -> Any:
        """Runs one call on pickled arguments; returns the unpickled result."""
        data, node_id = await self.invoke(options, payload)
        if len(data) > INLINE_PICKLE_BYTES:
            return await asyncio.to_thread(load_result, options.function, data, node_id)
        return load_result(options.function, data, node_id)

    async def invoke(
        self, options: client_pb2.CallOptions, payload: Payload
    ) -> tuple[Payload, str]:
        """Runs one call on pickled arguments; returns (pickled result, node id).

        Cancelling the awaiting task cancels the call on its node.
        """
        session = await self._connection.session()
        pending = await session.start(options, payload)
        try:
            if options.timeout_ms:
                limit = options.timeout_ms / 1000.0 + _DEADLINE_GRACE_S
                try:
                    data = await asyncio.wait_for(asyncio.shield(pending.future), limit)
                except asyncio.TimeoutError:
                    session.cancel(pending.call_id)
                    raise CallTimeoutError(
                        f"{options.function!r} did not finish within "
                        f"{options.timeout_ms / 1000:g} s",
                        node_id=pending.node_id,
                    ) from None
            else:
                data = await pending.future
        except asyncio.CancelledError:
            session.cancel(pending.call_id)
            raise
        return data, pending.node_id

    def stream_receiver(self, options: client_pb2.CallOptions, make_payload: Any) -> StreamReceiver:
        """A receiver that starts the streaming call on first use."""

        async def open_call() -> tuple[Session, PendingCall]:
            session = await self._connection.session()
            pending = await session.start(options, make_payload())
            return session, pending

        limit = options.timeout_ms / 1000.0 + _DEADLINE_GRACE_S if options.timeout_ms else None
        return StreamReceiver(open_call, limit)

    # ----------------------------------------------------------------- status

    async def list_nodes(self, function: str | None = None) -> list[NodeStatus]:
        """Every connected node (or those serving ``function``) with live status."""
        request = client_pb2.ListNodesRequest(function=function or "")
        reply = await self._connection.unary(
            lambda stub, metadata: stub.ListNodes(request, metadata=metadata)
        )
        return [NodeStatus.from_proto(node) for node in reply.nodes]

    async def get_node_status(self, node_id: str) -> NodeStatus:
        """Live status of one node.

        Raises:
            NodeNotFoundError: No node with that id is connected.
        """
        request = client_pb2.GetNodeStatusRequest(node_id=node_id)
        reply = await self._connection.unary(
            lambda stub, metadata: stub.GetNodeStatus(request, metadata=metadata)
        )
        return NodeStatus.from_proto(reply)

    async def wait_for_nodes(
        self,
        *node_ids: str,
        functions: Iterable[str] = (),
        count: int | None = None,
        timeout: float = 30.0,
    ) -> list[NodeStatus]:
        """Waits until the gateway answers and the wanted nodes are connected.

        For scripts that start a gateway and nodes and then call them (a
        demo, a test, a job): instead of sleeping, wait for exactly what the
        next step needs. An unreachable gateway counts as not ready yet.

        Example:
            >>> await client.wait_for_nodes("gpu-node-1", "gpu-node-2", timeout=30)
            >>> await client.wait_for_nodes(functions=["train_model"])

        Args:
            *node_ids: Nodes that must be connected and healthy.
            functions: Names each of which some healthy node must serve.
            count: Healthy nodes needed at least (default: 1 when neither
                node ids nor functions are given, else 0; 0 waits for the
                gateway alone).
            timeout: Seconds to wait in all.

        Returns:
            The connected nodes once ready.

        Raises:
            CallTimeoutError: Not ready within ``timeout``; says what is missing.
            AuthenticationError: The gateway refused the credentials.
        """
        return await wait_for_nodes(
            self.list_nodes, self.address, node_ids, tuple(functions), count, timeout
        )

    # -------------------------------------------------------------- lifecycle

    async def close(self) -> None:
        """Closes the connection; calls still in flight fail."""
        await self._connection.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


__all__ = ["AsyncCallStream", "AsyncClient", "default_address"]
