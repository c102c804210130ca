"""Client: the synchronous API (the seed's ``Client``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from easyremote.client._async_client import AsyncClient, gateway_address
from easyremote.client._connection import STREAM_WINDOW
from easyremote.client._errors import GatewayUnavailableError
from easyremote.client._options import build_options
from easyremote.client._serialization import dump_arguments, load_result
from easyremote.client._status import NodeStatus
from easyremote.client._stream import StreamReceiver
from easyremote.proto import Payload
from easyremote.proto.runtime import close_at_exit, forget_at_exit, is_exiting, run_sync, submit
from easyremote.proto.v1 import client_pb2


class CallStream:
    """Items of a streaming call; works with both ``for`` and ``async for``.

    Closing it (``close()``, ``break`` out of a ``with`` block, or garbage
    collection) cancels the call on the node, which closes the generator.
    """

    def __init__(
        self,
        client: Client,
        options: client_pb2.CallOptions,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self._client = client
        self._options = options
        self._args = args
        self._kwargs = kwargs
        self._receiver: StreamReceiver | None = None

    def _ensure_receiver(self) -> StreamReceiver:
        if self._receiver is None:
            options = self._options
            payload = dump_arguments(options.function, self._args, self._kwargs)
            self._args, self._kwargs = (), {}

            async def make() -> StreamReceiver:
                return self._client._async.stream_receiver(options, lambda: payload)

            self._receiver = run_sync(make())
        return self._receiver

    def _item(self, data: Payload | None) -> Any:
        if data is None:
            return None
        return load_result(
            self._options.function, data, self._receiver.node_id if self._receiver else ""
        )

    # Synchronous iteration ----------------------------------------------

    def __iter__(self) -> CallStream:
        return self

    def __next__(self) -> Any:
        receiver = self._ensure_receiver()
        data = run_sync(receiver.next_raw())
        if data is None:
            raise StopIteration
        return self._item(data)

    def close(self) -> None:
        """Cancels the stream on the node."""
        if self._receiver is not None and not self._receiver.finished:
            run_sync(self._receiver.aclose())

    def __enter__(self) -> CallStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Asynchronous iteration (from any event loop) -------------------------

    def __aiter__(self) -> CallStream:
        return self

    async def __anext__(self) -> Any:
        receiver = await asyncio.to_thread(self._ensure_receiver)
        future = submit(receiver.next_raw())
        try:
            data = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise
        if data is None:
            raise StopAsyncIteration
        return self._item(data)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __del__(self) -> None:
        receiver = self._receiver
        if receiver is not None and not receiver.finished and not is_exiting():
            try:
                submit(receiver.aclose())
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass


class Client:
    """Calls functions on EasyRemote nodes through a gateway (blocking API).

    Safe to share between threads: all calls are multiplexed on one connection,
    served by EasyRemote's shared background event loop.

    Example:
        >>> client = Client("localhost:8080")
        >>> client.call("train_model", data="sample")
        >>> client.call_node("gpu-node-1", "train_model", "sample")
        >>> config = {"strategy": "cost_aware", "cost_limit": 5.0}
        >>> client.call_with_config("train_model", config, "x")

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
        self.retry_attempts = retry_attempts
        self.connection_timeout = connection_timeout
        self.timeout = timeout
        self._closed = False
        self._lock = threading.Lock()

        async def make() -> AsyncClient:
            return AsyncClient(
                self.address,
                retry_attempts=retry_attempts,
                connection_timeout=connection_timeout,
                timeout=timeout,
                token=token,
                tls_ca_file=tls_ca_file,
                tls_fingerprint=tls_fingerprint,
                allow_insecure=allow_insecure,
            )

        self._async = run_sync(make())
        close_at_exit(self, _close_at_exit)

    # ------------------------------------------------------------------ calls

    def call(self, function: str, /, *args: Any, **kwargs: Any) -> Any:
        """Calls ``function`` on a node the gateway picks; returns its result."""
        return self._invoke(self._async.plain_options(function), args, kwargs)

    def submit(self, function: str, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Starts a call and returns at once with a Future of its result.

        ``future.result(timeout)`` waits for it (raising the call's error);
        ``future.cancel()`` cancels it: the node sees the cancellation (see
        ``current_call().cancelled``) and it is never retried. Arguments are
        pickled before this returns, so later changes to them do not leak in.
        """
        if self._closed:
            raise GatewayUnavailableError("client is closed")
        options = self._async.plain_options(function)
        payload = dump_arguments(function, args, kwargs)
        future = submit(self._submitted(options, payload))
        # The future keeps this client (and so its connection) alive until done.
        future.add_done_callback(_keep_alive(self))
        return future

    async def _submitted(self, options: client_pb2.CallOptions, payload: Payload) -> Any:
        # Yield once first: a cancel() right after submit() then lands before
        # anything is sent, instead of after the start frame went out.
        await asyncio.sleep(0)
        return await self._async.invoke_and_load(options, payload)

    def call_node(self, node_id: str, function: str, /, *args: Any, **kwargs: Any) -> Any:
        """Calls ``function`` on the node ``node_id`` only."""
        return self._invoke(
            build_options(function, node_id=node_id, default_timeout=self.timeout), args, kwargs
        )

    def call_with_config(
        self, function: str, config: Mapping[str, Any], /, *args: Any, **kwargs: Any
    ) -> Any:
        """Calls ``function`` with routing options (see AsyncClient.call_with_config)."""
        return self._invoke(
            build_options(function, config, default_timeout=self.timeout), args, kwargs
        )

    def call_stream(self, function: str, /, *args: Any, **kwargs: Any) -> CallStream:
        """Calls a generator function; iterate with ``for`` or ``async for``."""
        options = build_options(function, stream=True, default_timeout=self.timeout)
        return self.stream_with_options(options, args, kwargs)

    def stream_with_options(
        self, options: client_pb2.CallOptions, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> CallStream:
        options.stream = True
        options.credit = STREAM_WINDOW
        return CallStream(self, options, args, kwargs)

    def invoke_with_options(
        self, options: client_pb2.CallOptions, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Runs a call with prepared options (used by ``@remote``)."""
        return self._invoke(options, args, kwargs)

    def _invoke(
        self, options: client_pb2.CallOptions, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        # Pickling happens in the calling thread, so many threads pickle in
        # parallel while the loop thread only moves bytes.
        payload = dump_arguments(options.function, args, kwargs)
        data, node_id = run_sync(self._async.invoke(options, payload))
        return load_result(options.function, data, node_id)

    # ----------------------------------------------------------------- status

    def list_nodes(self, function: str | None = None) -> list[NodeStatus]:
        """Every connected node (or those serving ``function``) with live status."""
        return run_sync(self._async.list_nodes(function))

    def get_node_status(self, node_id: str) -> NodeStatus:
        """Live status of one node (NodeNotFoundError if not connected)."""
        return run_sync(self._async.get_node_status(node_id))

    def wait_for_nodes(
        self,
        *node_ids: str,
        functions: Iterable[str] = (),
        count: int | None = None,
        timeout: float = 30.0,
    ) -> list[NodeStatus]:
        """Waits until the gateway answers and the wanted nodes are connected.

        Example:
            >>> client.wait_for_nodes("gpu-node-1", "gpu-node-2", timeout=30)

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
        return run_sync(
            self._async.wait_for_nodes(
                *node_ids, functions=tuple(functions), count=count, timeout=timeout
            )
        )

    # -------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Closes the connection; calls still in flight fail."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        forget_at_exit(self)
        run_sync(self._async.close())

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_closed", True) or is_exiting():
            return
        try:
            submit(self._async.close())
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


async def _close_at_exit(client: Client) -> None:
    client._closed = True
    await client._async.close()


def _keep_alive(client: Client) -> Callable[[concurrent.futures.Future[Any]], None]:
    def done(_: concurrent.futures.Future[Any]) -> None:
        del client_ref[:]

    client_ref = [client]
    return done
