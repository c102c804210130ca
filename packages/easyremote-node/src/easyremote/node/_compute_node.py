"""ComputeNode: serve Python functions to callers through a gateway."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import Any, TypeVar, overload

import grpc
from grpc import aio

from easyremote.node._functions import FunctionKind, RegisteredFunction, kind_of
from easyremote.node._import_guard import check_not_importing
from easyremote.node._isolation import ProcessPool
from easyremote.node._reconnect_log import ReconnectLog
from easyremote.node._resources import ResourceProbe, SystemProbe
from easyremote.node._serialization import local_versions
from easyremote.node._session import NodeSession
from easyremote.node._workers import WorkerPool
from easyremote.proto import channel_options, metadata_reason
from easyremote.proto.addresses import check_address
from easyremote.proto.console_log import show_logs_if_unconfigured
from easyremote.proto.credentials import ROLE_NODE, CredentialsError, auth_metadata
from easyremote.proto.memory import tune_allocator
from easyremote.proto.peer import PeerSettings, refusal_message, resolve_peer
from easyremote.proto.runtime import close_at_exit, forget_at_exit, in_background_loop, submit
from easyremote.proto.streams import CONNECT_METHOD, GATEWAY_TO_NODE
from easyremote.proto.tls import PROBE_TIMEOUT_S, TlsSettings, open_channel, tls_mismatch
from easyremote.proto.v1 import node_pb2

logger = logging.getLogger("easyremote.node")

F = TypeVar("F", bound=Callable[..., Any])

_FATAL_REASONS = {
    "ERROR_REASON_ALREADY_EXISTS",
    "ERROR_REASON_PROTOCOL_MISMATCH",
    "ERROR_REASON_INVALID_ARGUMENT",
    "ERROR_REASON_PERMISSION_DENIED",
    "ERROR_REASON_UNAUTHENTICATED",
}
# Reconnect backoff: quick first retries (a gateway still starting), then up to
# 5 s apart, each with jitter so a restarted gateway is not hit by every node
# at the same instant.
_BACKOFF_FIRST_S = 0.05
_BACKOFF_MAX_S = 5.0


class NodeError(RuntimeError):
    """A node could not register with its gateway, or was refused."""


def _default_node_id() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"


class ComputeNode:
    """A compute node: registers functions and serves them via a gateway.

    The node dials OUT to the gateway and keeps one stream open, so it works
    behind NAT and firewalls. It reconnects forever when the gateway restarts.

    Example:
        >>> node = ComputeNode("localhost:8080", "gpu-node-1")
        >>> @node.register(load_balancing=True)
        ... def train_model(data):
        ...     return {"result": "trained"}
        >>> node.serve()          # blocks; serve(blocking=False) returns once registered

    Args:
        gateway_address: ``host:port`` of the gateway.
        node_id: Unique name of this node (default: hostname plus a random suffix).
        max_concurrency: Calls running at once over all functions (the node's
            slots). Default: the number of CPUs, at least 4.
        cost_per_hour: Declared cost, used by the ``cost_aware`` strategy.
        tags: Labels callers can require (``requirements={"tags": [...]}``).
        heartbeat_interval: Seconds between resource reports to the gateway.
        connection_timeout: Seconds ``serve(blocking=False)`` waits for the
            gateway to confirm registration.
        reconnect: Reconnect after the gateway goes away (default: forever).
        probe: Where resources come from (default: psutil + NVML).
        isolation: ``"thread"`` (default): sync functions run on worker
            threads of this process. ``"process"``: sync functions and sync
            generators run in child processes, which are killed at the call's
            deadline or on cancel (and replaced), and whose GIL-bound code
            cannot hold up this process's heartbeats. Functions must then be
            picklable by cloudpickle; ``async def`` functions still run on the
            node's event loop. POSIX only.
        token: Node token (default: ``EASYREMOTE_TOKEN``, else, for a
            loopback gateway, the local token file the gateway wrote).
        tls_ca_file: PEM CA bundle to verify the gateway's certificate with
            (default: ``EASYREMOTE_TLS_CA``).
        tls_fingerprint: SHA-256 fingerprint of the gateway's certificate to
            pin (default: ``EASYREMOTE_TLS_FINGERPRINT``); checked before the
            token is sent.
        allow_insecure: Send the token without TLS to a non-loopback gateway
            (trusted networks only); refused otherwise.
    """

    def __init__(
        self,
        gateway_address: str = "localhost:8080",
        node_id: str | None = None,
        *,
        max_concurrency: int | None = None,
        cost_per_hour: float = 0.0,
        tags: Iterable[str] = (),
        heartbeat_interval: float = 2.0,
        connection_timeout: float = 10.0,
        reconnect: bool = True,
        probe: ResourceProbe | None = None,
        isolation: str = "thread",
        token: str | None = None,
        tls_ca_file: str | None = None,
        tls_fingerprint: str | None = None,
        allow_insecure: bool = False,
    ) -> None:
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if isolation not in ("thread", "process"):
            raise ValueError(f"isolation must be 'thread' or 'process', not {isolation!r}")
        if isolation == "process" and os.name != "posix":
            raise ValueError("isolation='process' needs a POSIX system")
        self.isolation = isolation
        # Looked up again at every (re)connect: the gateway may start later.
        self._peer = PeerSettings(ROLE_NODE, token, tls_ca_file, tls_fingerprint, allow_insecure)
        self._peer.check()
        try:
            self.gateway_address = check_address(gateway_address)
        except ValueError as exc:
            raise ValueError(f"gateway_address {exc}") from None
        self.node_id = node_id or _default_node_id()
        self.max_concurrency = max_concurrency or max(4, os.cpu_count() or 1)
        self.cost_per_hour = float(cost_per_hour)
        self.tags = tuple(tags)
        self.heartbeat_interval = heartbeat_interval
        self.connection_timeout = connection_timeout
        self.reconnect = reconnect
        self._probe = probe
        self._functions: dict[str, RegisteredFunction] = {}
        # What the sessions run: the functions, bound to the child processes
        # when isolated. Set up when serving starts.
        self._serving: dict[str, RegisteredFunction] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._drain_timeout: float | None = None
        self._running: concurrent.futures.Future[None] | None = None
        self._stop_requested = threading.Event()
        self._ever_registered = False
        self._registered = threading.Event()
        self._finished = threading.Event()
        self._fatal: BaseException | None = None
        self._last_error: str = ""
        self._session: NodeSession | None = None
        self._attempt_tls = TlsSettings()
        self._reconnect_log = ReconnectLog(self.node_id, gateway_address)
        # Before any EasyRemote thread exists (see easyremote.proto.memory).
        tune_allocator(single_arena=True)

    # ------------------------------------------------------------ registration

    @overload
    def register(self, func: F) -> F: ...

    @overload
    def register(
        self,
        func: None = None,
        *,
        name: str | None = None,
        load_balancing: bool = True,
        max_concurrency: int | None = None,
        idempotent: bool = True,
        timeout: float | None = None,
    ) -> Callable[[F], F]: ...

    def register(
        self,
        func: F | None = None,
        *,
        name: str | None = None,
        load_balancing: bool = True,
        max_concurrency: int | None = None,
        idempotent: bool = True,
        timeout: float | None = None,
    ) -> F | Callable[[F], F]:
        """Registers a function; use bare (``@node.register``) or with options.

        Plain functions, ``async def`` functions and sync or async generators
        (streamed item by item to ``call_stream``) are supported. The decorated
        function is returned unchanged and still callable locally.

        Args:
            func: The function (when used without parentheses).
            name: Name callers use (default: the function's ``__name__``).
            load_balancing: False: reachable only via ``call_node`` on this node.
            max_concurrency: Calls of this function running at once here.
            idempotent: False: never re-run on another node after this node
                was lost mid-call (the caller gets "outcome unknown" instead).
            timeout: Default deadline in seconds for calls that set none.
        """

        def decorate(target: F) -> F:
            if self._running is not None:
                raise NodeError(
                    "register functions before serve(): the gateway learns them at registration"
                )
            if not callable(target):
                raise TypeError(f"cannot register {target!r}: not callable")
            if max_concurrency is not None and max_concurrency < 1:
                raise ValueError("max_concurrency must be at least 1")
            function_name = name or getattr(target, "__name__", None)
            if not function_name:
                raise ValueError("pass name= for callables without __name__")
            self._functions[function_name] = RegisteredFunction(
                name=function_name,
                func=target,
                kind=kind_of(target),
                load_balancing=load_balancing,
                max_concurrency=max_concurrency,
                idempotent=idempotent,
                timeout=timeout,
            )
            return target

        if func is not None:
            return decorate(func)
        return decorate

    def rebuilt(self, gateway_address: str, **overrides: Any) -> ComputeNode:
        """A new, not yet serving node with this one's settings and functions.

        Used by ``easyremote-node`` to serve a module's node through another
        gateway; ``overrides`` are ``ComputeNode`` keyword arguments.
        """
        settings: dict[str, Any] = {
            "node_id": self.node_id,
            "max_concurrency": self.max_concurrency,
            "cost_per_hour": self.cost_per_hour,
            "tags": self.tags,
            "heartbeat_interval": self.heartbeat_interval,
            "connection_timeout": self.connection_timeout,
            "reconnect": self.reconnect,
            "probe": self._probe,
            "isolation": self.isolation,
            "token": self._peer.token,
            "tls_ca_file": self._peer.tls_ca_file,
            "tls_fingerprint": self._peer.tls_fingerprint,
            "allow_insecure": self._peer.allow_insecure,
        }
        settings.update(overrides)
        node = ComputeNode(gateway_address, **settings)
        for function in self._functions.values():
            node.register(
                name=function.name,
                load_balancing=function.load_balancing,
                max_concurrency=function.max_concurrency,
                idempotent=function.idempotent,
                timeout=function.timeout,
            )(function.func)
        return node

    @property
    def functions(self) -> dict[str, RegisteredFunction]:
        """Registered functions by name."""
        return dict(self._functions)

    @property
    def registered(self) -> bool:
        """True while the gateway has this node registered."""
        return self._registered.is_set()

    # ---------------------------------------------------------------- serving

    def serve(self, blocking: bool = True) -> None:
        """Connects to the gateway and serves calls.

        Args:
            blocking: True: serve until ``stop()``, SIGTERM or Ctrl-C (both
                drain: running calls finish first); when the application set
                up no logging, EasyRemote's INFO lines then go to stderr.
                False: serve in the background and return once the gateway
                confirmed registration.

        Raises:
            NodeError: The gateway refused the node, or (``blocking=False``)
                did not confirm registration within ``connection_timeout``.
        """
        check_not_importing()
        if self._running is not None:
            raise NodeError("this node is already serving")
        if blocking:
            # This process is now a node: let it say so (see console_log).
            show_logs_if_unconfigured()
        self._stop_requested.clear()
        self._finished.clear()
        self._running = submit(self._main())
        close_at_exit(self, _stop_at_exit)
        if not blocking:
            if not self._wait_registered() or self._fatal is not None:
                fatal = self._fatal
                self.stop()
                if fatal is not None:
                    raise NodeError(str(fatal)) from fatal
                raise NodeError(
                    f"node {self.node_id!r} could not register with the gateway at "
                    f"{self.gateway_address} within {self.connection_timeout:g} s"
                    + (f": {self._last_error}" if self._last_error else "")
                )
            return
        with _signals_drain(self):
            try:
                while not self._finished.wait(0.5):
                    pass
            except KeyboardInterrupt:
                self.stop(drain=True)
            finally:
                self.stop()
        if self._fatal is not None:
            raise NodeError(str(self._fatal)) from self._fatal

    def _wait_registered(self) -> bool:
        """Waits up to ``connection_timeout`` for registration; False at once if
        the serving task ended first (a refusal)."""
        deadline = time.monotonic() + self.connection_timeout
        while not self._registered.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self._finished.is_set():
                return False
            self._registered.wait(min(left, 0.05))
        return True

    def stop(self, drain: bool = False, timeout: float = 30.0) -> None:
        """Stops serving; safe from any thread and more than once.

        Args:
            drain: Take no new calls and let running ones finish (up to
                ``timeout``) before disconnecting. Without it running calls are
                cancelled and the gateway re-runs them elsewhere.
            timeout: Longest wait for running calls when draining.
        """
        running = self._running
        if running is None:
            return
        forget_at_exit(self)
        if not self._stop_requested.is_set():
            self._drain_timeout = timeout if drain else None
            self._stop_requested.set()
            loop, event = self._loop, self._stop_event
            if loop is not None and event is not None:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(event.set)
        if not in_background_loop():
            self._finished.wait((timeout if drain else 0) + 10.0)
        self._running = None

    def __enter__(self) -> ComputeNode:
        self.serve(blocking=False)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --------------------------------------------------------------- internals

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        tune_allocator(single_arena=True)
        if self._stop_requested.is_set():
            self._stop_event.set()
        self._fatal = None
        probe = self._probe or SystemProbe()
        # Workers beyond the slots: a cancelled or timed-out sync call keeps
        # its thread until the function returns.
        pool = WorkerPool(self.max_concurrency + 4, f"easyremote-{self.node_id}")
        children: ProcessPool | None = None
        failures = 0
        try:
            try:
                # Off the loop: binding may wait for the first child process.
                children = await asyncio.get_running_loop().run_in_executor(
                    None, self._bind_functions
                )
            except NodeError as exc:
                self._fatal = exc
                logger.error("%s", exc)
                return
            while not self._stop_event.is_set():
                try:
                    await self._connect_once(probe, pool)
                    failures = 0
                except NodeError as exc:
                    if not self._ever_registered:
                        self._fatal = exc
                        logger.error("%s", exc)
                        return
                    self._last_error = str(exc)
                    self._reconnect_log.failed(self._last_error)
                except (grpc.RpcError, OSError, asyncio.TimeoutError) as exc:
                    self._last_error = (
                        f"the gateway did not answer within {self.connection_timeout:g} s"
                        if isinstance(exc, asyncio.TimeoutError)
                        else _describe(exc)
                    )
                    if self._registered.is_set():
                        logger.warning(
                            "node %s lost its connection to the gateway at %s: %s; reconnecting",
                            self.node_id,
                            self.gateway_address,
                            self._last_error,
                        )
                    else:
                        mismatch = await self._tls_mismatch()
                        if mismatch is not None and not self._ever_registered:
                            self._fatal = NodeError(mismatch)
                            logger.error("%s", mismatch)
                            return
                        self._last_error = mismatch or self._last_error
                        self._reconnect_log.failed(self._last_error)
                finally:
                    if self._registered.is_set():
                        # The session had worked: reconnect quickly again.
                        failures = 0
                    self._registered.clear()
                if self._stop_event.is_set() or not self.reconnect:
                    return
                delay = min(_BACKOFF_MAX_S, _BACKOFF_FIRST_S * 2**failures) * random.uniform(
                    0.5, 1.0
                )
                failures += 1
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), delay)
        finally:
            pool.shutdown()
            if children is not None:
                children.shutdown()
            if self._ever_registered:
                logger.info("node %s stopped", self.node_id)
            self._loop = None
            self._stop_event = None
            self._finished.set()

    async def _tls_mismatch(self) -> str | None:
        """After a failed attempt: the TLS disagreement that caused it, if any."""
        return await asyncio.get_running_loop().run_in_executor(
            None,
            tls_mismatch,
            self.gateway_address,
            self._attempt_tls,
            min(PROBE_TIMEOUT_S, self.connection_timeout),
        )

    def _bind_functions(self) -> ProcessPool | None:
        """Sets up what sessions run; with process isolation, the child pool."""
        if self.isolation != "process":
            self._serving = dict(self._functions)
            return None
        children = ProcessPool(self.max_concurrency)
        serving = {}
        for name, registered in self._functions.items():
            function = registered
            if function.kind in (FunctionKind.SYNC, FunctionKind.SYNC_GENERATOR):
                try:
                    children.prepare(name, function.func)
                except Exception as exc:
                    children.shutdown()
                    raise NodeError(
                        f"cannot run {name!r} in a child process (isolation='process'): "
                        f"cloudpickle failed: {exc!r}"
                    ) from exc
                function = dataclasses.replace(function, isolated=children)
            serving[name] = function
        self._serving = serving
        children.warm()
        return children

    def _hello(self, probe: ResourceProbe) -> node_pb2.NodeFrame:
        frame = node_pb2.NodeFrame()
        hello = frame.hello
        hello.node_id = self.node_id
        hello.functions.extend(f.to_spec() for f in self._functions.values())
        hello.versions.CopyFrom(local_versions())
        hello.resources.CopyFrom(probe.snapshot().to_proto())
        hello.max_concurrency = self.max_concurrency
        hello.cost_per_hour = self.cost_per_hour
        hello.tags.extend(self.tags)
        hello.hostname = socket.gethostname()
        hello.heartbeat_interval_ms = int(self.heartbeat_interval * 1000)
        hello.capabilities.extend(["cancel", "credit", "chunks"])
        return frame

    async def _connect_once(self, probe: ResourceProbe, pool: WorkerPool) -> None:
        assert self._stop_event is not None
        hello = await asyncio.get_running_loop().run_in_executor(None, self._hello, probe)
        loop = asyncio.get_running_loop()
        try:
            credentials = resolve_peer(self._peer, self.gateway_address)
            self._attempt_tls = credentials.tls
            channel = await open_channel(
                self.gateway_address, credentials.tls, channel_options(), self.connection_timeout
            )
        except CredentialsError as exc:
            # Off the loop: explaining a withheld token may probe the port.
            message = await loop.run_in_executor(
                None,
                refusal_message,
                self.gateway_address,
                exc,
                min(PROBE_TIMEOUT_S, self.connection_timeout),
            )
            raise NodeError(message) from exc
        token = credentials.token
        async with channel:
            # Registered by hand: the outbox sends encoded bytes, and the
            # gateway's frames decode with the codec that keeps chunks uncopied.
            connect = channel.stream_stream(
                CONNECT_METHOD,
                request_serializer=None,
                response_deserializer=GATEWAY_TO_NODE.decode,
            )
            stream = connect(None, metadata=auth_metadata(token))
            session = NodeSession(
                stream, self._serving, pool, probe, self.max_concurrency, self.heartbeat_interval
            )
            session.outbox.put(hello)
            session.start()
            try:
                await self._await_welcome(stream, session)
                self._session = session
                self._ever_registered = True
                self._registered.set()
                self._reconnect_log.registered(len(self._functions))
                await self._serve_session(stream, session)
            finally:
                self._session = None
                session.cancel_all("node disconnected")
                session.abort()
                stream.cancel()

    async def _await_welcome(self, stream: Any, session: NodeSession) -> None:
        try:
            first = await asyncio.wait_for(stream.read(), self.connection_timeout)
        except grpc.RpcError as exc:
            raise _classify(exc, self) from exc
        if first is aio.EOF:  # type: ignore[attr-defined]  # grpc-stubs lacks aio.EOF
            code = await stream.code()
            details = await stream.details()
            reason = metadata_reason(await stream.trailing_metadata()) or ""
            if reason in _FATAL_REASONS:
                raise NodeError(f"gateway refused node {self.node_id!r}: {details}")
            raise ConnectionError(f"gateway closed the stream: {code} {details}")
        if not isinstance(first, node_pb2.GatewayEnvelope):
            raise ConnectionError("gateway did not answer with a Welcome")
        welcome = None
        for frame in first.frames:
            if frame.WhichOneof("kind") == "welcome":
                welcome = frame.welcome
            else:
                session.handle(frame)
        if welcome is None:
            raise ConnectionError("gateway did not answer with a Welcome")
        if welcome.heartbeat_interval_ms:
            session.heartbeat_interval = welcome.heartbeat_interval_ms / 1000.0

    async def _serve_session(self, stream: Any, session: NodeSession) -> None:
        assert self._stop_event is not None
        reader = asyncio.ensure_future(session.read_loop())
        heartbeats = asyncio.ensure_future(session.heartbeats())
        stopper = asyncio.ensure_future(self._stop_event.wait())
        drain = asyncio.ensure_future(session.drain_requested.wait())
        try:
            done, _ = await asyncio.wait(
                {reader, stopper, drain}, return_when=asyncio.FIRST_COMPLETED
            )
            if drain in done and stopper not in done and reader not in done:
                # The gateway is going away: finish what runs, then reconnect.
                session.start_draining("gateway asked to drain")
                idle = asyncio.ensure_future(session.wait_idle(30.0))
                # stop() must still be honoured while draining for the gateway.
                await asyncio.wait({idle, stopper}, return_when=asyncio.FIRST_COMPLETED)
                idle.cancel()
                await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stopper.done() and not reader.done():
                if self._drain_timeout is not None:
                    logger.info(
                        "node %s stopping: no new calls; waiting up to %g s for %d running",
                        self.node_id,
                        self._drain_timeout,
                        session.in_flight,
                    )
                    session.start_draining("node is stopping")
                    finished = await session.wait_idle(self._drain_timeout)
                    if not finished:
                        logger.warning(
                            "node %s: drain timed out, cancelling running calls", self.node_id
                        )
                # Results already produced go out; calls still running are
                # cancelled without an answer, so the gateway sees them as
                # lost with this node and re-runs the idempotent ones.
                await session.flush(5.0)
                session.cancel_all("node is stopping")
                with contextlib.suppress(Exception):
                    await stream.done_writing()
            elif reader.done():
                exc = reader.exception()
                if exc is not None:
                    raise exc
                raise ConnectionError("gateway closed the connection")
        finally:
            for task in (reader, heartbeats, stopper, drain):
                task.cancel()


async def _stop_at_exit(node: ComputeNode) -> None:
    node._stop_requested.set()
    if node._stop_event is not None:
        node._stop_event.set()
    running = node._running
    if running is not None:
        await asyncio.wait({asyncio.wrap_future(running)}, timeout=2.0)


@contextlib.contextmanager
def _signals_drain(node: ComputeNode) -> Iterator[None]:
    """While serving in the main thread, SIGTERM drains the node like Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


def _classify(exc: grpc.RpcError, node: ComputeNode) -> BaseException:
    trailing = getattr(exc, "trailing_metadata", None)
    reason = metadata_reason(trailing() if trailing else None) or ""
    if reason in _FATAL_REASONS:
        return NodeError(f"gateway refused node {node.node_id!r}: {_describe(exc)}")
    return ConnectionError(_describe(exc))


__all__ = ["ComputeNode", "NodeError"]
