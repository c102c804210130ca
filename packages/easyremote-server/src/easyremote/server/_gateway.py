"""The gateway process: a grpc.aio server with the node and client services."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, TracebackType

import grpc
from grpc import aio

from easyremote.proto import PROTOCOL_VERSION, python_version, server_options, strategy_from_name
from easyremote.proto.addresses import WILDCARD_HOSTS
from easyremote.proto.console_log import show_logs_if_unconfigured
from easyremote.proto.credentials import CredentialsError, is_loopback_host
from easyremote.proto.local_gateways import GatewayRecord, remove_record, write_record
from easyremote.proto.memory import tune_allocator
from easyremote.proto.runtime import close_at_exit, forget_at_exit, run_sync
from easyremote.proto.transport import MAX_MESSAGE_BYTES, MIN_MESSAGE_BYTES
from easyremote.proto.v1 import client_pb2, common_pb2, node_pb2
from easyremote.server._client_servicer import ClientServicer
from easyremote.server._handlers import add_handlers
from easyremote.server._limits import PeerLimits, RegistrationLimits
from easyremote.server._node_servicer import NodeServicer
from easyremote.server._registry import Registry
from easyremote.server._router import Router, RouterConfig
from easyremote.server._security import (
    AuthInterceptor,
    GatewayTokens,
    check_token_arguments,
    resolve_tokens,
)
from easyremote.server._tls import (
    certificate_name,
    fingerprint_of_pem,
    load_or_create_self_signed,
    server_credentials,
)
from easyremote.server.version import __version__

logger = logging.getLogger("easyremote.server")

_START_TIMEOUT_S = 30.0


class GatewayError(RuntimeError):
    """The gateway could not start (port in use, bad address) or failed."""


class Server:
    """The EasyRemote gateway: nodes dial in, clients call through it.

    Example:
        >>> gateway = Server(port=8080)
        >>> gateway.start_background()   # or gateway.start() to block

    Args:
        port: TCP port to listen on; 0 picks a free one (see ``port`` after start).
        host: Interface to bind. Loopback by default, so nothing is exposed by
            accident; pass ``"0.0.0.0"`` to accept other machines.
        default_strategy: Strategy for calls that name none.
        max_queue: Calls of one function that may wait for a free slot; more are
            refused with ``QueueFullError``.
        max_payload_bytes: Largest pickled argument payload accepted (0: no limit).
        heartbeat_interval: Seconds between node heartbeats the gateway asks for.
        node_timeout: Seconds without any heartbeat after which a node is dropped
            (default: 10 heartbeat intervals). It is suspected, and gets no new
            calls, after 3 intervals.
        auth: Require tokens (default). Tokens come from ``token``/
            ``client_token``/``node_token``, else ``EASYREMOTE_CLIENT_TOKEN``/
            ``EASYREMOTE_NODE_TOKEN``, else the owner-only local token file,
            created on first start, which clients and nodes on this machine
            read by themselves.
        token: One credential for both roles (nodes and clients).
        client_token: The token clients must present.
        node_token: The token nodes must present.
        tls_cert_file: PEM certificate (chain) to serve TLS with.
        tls_key_file: Its PEM private key.
        tls_self_signed: Serve TLS with a generated self-signed certificate,
            kept in ``~/.easyremote/tls/``; peers pin its fingerprint
            (``tls_fingerprint`` after start, printed by the CLI).
        allow_insecure: Permit a non-loopback bind without authentication or
            without TLS (trusted networks only); logs a warning at every start.
        max_functions_per_node: Most functions one node may register.
        max_function_name_chars: Longest function name a node may register.
        max_streams_per_peer: Most node and client streams open at once from
            one IP address.
        max_message_bytes: Largest single gRPC message accepted (at least
            4 MiB; payloads travel in 1 MiB chunks, so this bounds framing,
            not payload size). Larger ones fail with ``RESOURCE_EXHAUSTED``.
    """

    def __init__(
        self,
        port: int = 8080,
        host: str = "127.0.0.1",
        *,
        default_strategy: str = "smart_adaptive",
        max_queue: int = 1000,
        max_payload_bytes: int = 0,
        heartbeat_interval: float = 2.0,
        node_timeout: float | None = None,
        auth: bool = True,
        token: str | None = None,
        client_token: str | None = None,
        node_token: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        tls_self_signed: bool = False,
        allow_insecure: bool = False,
        max_functions_per_node: int = 1000,
        max_function_name_chars: int = 256,
        max_streams_per_peer: int = 1000,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        if max_message_bytes < MIN_MESSAGE_BYTES:
            raise ValueError(f"max_message_bytes must be at least {MIN_MESSAGE_BYTES}")
        self.max_message_bytes = max_message_bytes
        if bool(tls_cert_file) != bool(tls_key_file):
            raise ValueError("pass both tls_cert_file and tls_key_file, or neither")
        if tls_self_signed and tls_cert_file:
            raise ValueError("pass tls_self_signed=True or certificate files, not both")
        # Contradictions fail here; tokens themselves are looked up at start
        # (environment, local file), so constructing a Server writes nothing.
        check_token_arguments(auth, token, client_token, node_token)
        self._auth = auth
        self._token_args = (token, client_token, node_token)
        self._tls_files = (tls_cert_file, tls_key_file) if tls_cert_file and tls_key_file else None
        self._tls_self_signed = tls_self_signed
        self.allow_insecure = allow_insecure
        self.tls_fingerprint: str | None = None
        self._tls_server_name: str | None = None
        self._record_written = False
        self.auth_source = "off"
        # The token check (with its counters) once started; None without auth.
        self.auth: AuthInterceptor | None = None
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.heartbeat_interval = heartbeat_interval
        self.node_timeout = node_timeout if node_timeout is not None else 10 * heartbeat_interval
        self.registry = Registry()
        self.router = Router(
            self.registry,
            RouterConfig(
                default_strategy=strategy_from_name(default_strategy),
                max_queue=max_queue,
                max_payload_bytes=max_payload_bytes,
            ),
        )
        versions = common_pb2.Versions(
            protocol=PROTOCOL_VERSION, python=python_version(), easyremote=__version__
        )
        peers = PeerLimits(max_streams_per_peer)
        self._node_servicer = NodeServicer(
            self.registry,
            self.router,
            node_pb2.Welcome(
                versions=versions, heartbeat_interval_ms=int(heartbeat_interval * 1000)
            ),
            peers,
            RegistrationLimits(max_functions_per_node, max_function_name_chars),
        )
        self._client_servicer = ClientServicer(
            self.registry,
            self.router,
            client_pb2.SessionWelcome(versions=versions, max_payload_bytes=max_payload_bytes),
            peers,
        )
        self._server: aio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._stopped = threading.Event()
        self._monitor: asyncio.Future[None] | None = None
        # Before any EasyRemote thread exists (see easyremote.proto.memory).
        tune_allocator(single_arena=True)

    # ------------------------------------------------------------ properties

    @property
    def port(self) -> int:
        """The port actually bound (differs from the requested one for 0)."""
        return self._port if self._port is not None else self._requested_port

    @property
    def address(self) -> str:
        """``host:port`` clients and nodes should dial."""
        host = self.host
        if host in WILDCARD_HOSTS:
            host = "127.0.0.1"
        return f"{host}:{self.port}"

    @property
    def _bind(self) -> str:
        # What the gateway listens on, for log lines (address is what to dial).
        if self.host in WILDCARD_HOSTS:
            return f"{self.host or '0.0.0.0'}:{self.port}"
        return self.address

    @property
    def running(self) -> bool:
        return self._started.is_set() and not self._stopped.is_set()

    # --------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Serves until ``stop()``, SIGINT or SIGTERM (blocking).

        When the application set up no logging, EasyRemote's INFO lines
        (listening on, nodes joining and leaving) go to stderr.

        Raises:
            GatewayError: The gateway could not listen (e.g. port in use).
        """
        # This process is now a gateway: let it say so (see console_log).
        show_logs_if_unconfigured()
        self.start_background()
        with _signals_stop(self):
            try:
                while not self._stopped.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
            finally:
                self.stop()

    def start_background(self) -> Server:
        """Starts serving on EasyRemote's background loop; returns once listening.

        Raises:
            GatewayError: The gateway could not listen (e.g. port in use).
        """
        if self._started.is_set():
            raise GatewayError("this gateway was already started")
        run_sync(self._startup(), timeout=_START_TIMEOUT_S)
        close_at_exit(self, _stop_at_exit)
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Stops serving: nodes are told to drain, running calls end with an error.

        Safe to call from any thread, and more than once.
        """
        if not self._started.is_set() or self._stopped.is_set():
            return
        forget_at_exit(self)
        if self._loop is not None and self._loop.is_running() and not _on_loop(self._loop):
            future = asyncio.run_coroutine_threadsafe(self._shutdown(grace), self._loop)
            future.result(grace + 10.0)
        else:
            raise GatewayError("stop() from the gateway's own loop: use `await stop_async()`")

    async def start_async(self) -> None:
        """Starts serving on the running event loop (for asyncio applications)."""
        await self._startup()

    async def stop_async(self, grace: float = 5.0) -> None:
        """Stops the gateway from its own event loop."""
        await self._shutdown(grace)

    def __enter__(self) -> Server:
        return self.start_background()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- internals

    async def _startup(self) -> None:
        if self._started.is_set():
            raise GatewayError("this gateway was already started")
        self._loop = asyncio.get_running_loop()
        tune_allocator(single_arena=True)
        tokens, credentials = self._security()
        self.auth = AuthInterceptor(tokens) if tokens.enabled else None
        interceptors = [self.auth] if self.auth is not None else []
        server = aio.server(
            options=server_options(self.max_message_bytes), interceptors=interceptors
        )
        add_handlers(server, self._node_servicer, self._client_servicer)
        target = (
            f"[{self.host}]:{self._requested_port}"
            if ":" in self.host
            else f"{self.host}:{self._requested_port}"
        )
        try:
            if credentials is not None:
                bound = server.add_secure_port(target, credentials)
            else:
                bound = server.add_insecure_port(target)
        except RuntimeError as exc:
            raise GatewayError(f"cannot listen on {target}: {exc} (is the port in use?)") from exc
        if not bound:
            raise GatewayError(f"cannot listen on {target} (is the port in use?)")
        self._port = bound
        await server.start()
        self._server = server
        self._monitor = asyncio.ensure_future(self._watch_heartbeats())
        self._write_local_record()
        wildcard = self.host in WILDCARD_HOSTS
        logger.info(
            "gateway listening on %s (%s, %s)%s",
            self._bind,
            f"TLS, certificate SHA-256 {self.tls_fingerprint}"
            if credentials is not None
            else "plaintext",
            "tokens required" if self.auth is not None else "NO authentication",
            f"; all interfaces, {self.address} on this machine" if wildcard else "",
        )
        if not is_loopback_host(self.host) and self.auth is not None:
            logger.info(
                "other machines join with the token and pin that `easyremote-server join` "
                "prints on this machine"
            )
        self._started.set()

    def _write_local_record(self) -> None:
        """Tells peers on this machine how to reach this gateway (see local_gateways)."""
        if not (is_loopback_host(self.host) or self.host in WILDCARD_HOSTS):
            return  # loopback peers cannot reach this bind anyway
        record = GatewayRecord(
            port=self.port,
            pid=os.getpid(),
            tls_fingerprint=self.tls_fingerprint if self._tls_self_signed else None,
            tls_server_name=self._tls_server_name,
        )
        try:
            write_record(record)
        except (OSError, CredentialsError) as exc:
            logger.warning(
                "cannot write the local gateway record (peers on this machine then need "
                "TLS settings of their own): %s",
                exc,
            )
        else:
            self._record_written = True

    def _security(self) -> tuple[GatewayTokens, grpc.ServerCredentials | None]:
        """Tokens and TLS for this start; refuses an unsafe exposed bind."""
        try:
            tokens = resolve_tokens(self._auth, *self._token_args)
        except CredentialsError as exc:
            raise GatewayError(str(exc)) from exc
        self.auth_source = tokens.source
        credentials = None
        if self._tls_files is not None:
            cert_file, key_file = self._tls_files
            try:
                cert = Path(cert_file).read_bytes()
                key = Path(key_file).read_bytes()
            except OSError as exc:
                raise GatewayError(f"cannot read the TLS certificate or key: {exc}") from exc
            try:
                self.tls_fingerprint = fingerprint_of_pem(cert)
            except ValueError as exc:
                raise GatewayError(f"{cert_file} holds no PEM certificate: {exc}") from exc
            self._tls_server_name = certificate_name(cert)
            credentials = server_credentials(cert, key)
        elif self._tls_self_signed:
            try:
                cert, key = load_or_create_self_signed()
            except CredentialsError as exc:
                raise GatewayError(str(exc)) from exc
            credentials = server_credentials(cert, key)
            self.tls_fingerprint = fingerprint_of_pem(cert)
        if not is_loopback_host(self.host):
            missing = [
                what
                for what, ok in (("authentication", tokens.enabled), ("TLS", credentials))
                if not ok
            ]
            if missing and not self.allow_insecure:
                raise GatewayError(
                    f"refusing to listen on {self.host} (reachable from other machines) "
                    f"without {' and '.join(missing)}: anyone who reaches the port could "
                    "run code on your nodes. Keep auth on and add TLS "
                    "(tls_self_signed=True, or tls_cert_file/tls_key_file; CLI: "
                    "--tls-self-signed), or pass allow_insecure=True (--allow-insecure) "
                    "on a network you trust. See docs/security.md."
                )
            if missing:
                logger.warning(
                    "INSECURE: listening on %s without %s (allow_insecure=True)",
                    self.host,
                    " and ".join(missing),
                )
        return tokens, credentials

    async def _shutdown(self, grace: float) -> None:
        server = self._server
        if server is None:
            self._stopped.set()
            return
        self._server = None
        if self._monitor is not None:
            self._monitor.cancel()
        reason = "the gateway is shutting down"
        # Tell peers first and flush, so they see a clear reason, not a reset.
        await self._client_servicer.close_all(reason, timeout=grace)
        await self._node_servicer.drain_all(reason, timeout=grace)
        await server.stop(0)
        if self._record_written:
            with contextlib.suppress(OSError, CredentialsError):
                remove_record(self.port, os.getpid())
        logger.info("gateway on %s stopped", self._bind)
        self._stopped.set()

    async def _watch_heartbeats(self) -> None:
        """Suspects nodes whose heartbeats are late, drops silent ones."""
        while True:
            await asyncio.sleep(max(0.1, self.heartbeat_interval / 2))
            now = time.monotonic()
            for node in list(self.registry.nodes()):
                silent = now - node.last_heartbeat
                if silent > self.node_timeout:
                    node.link.close(f"no heartbeat for {silent:.1f} s")
                elif (
                    silent > 3 * self.heartbeat_interval
                    and node.state == client_pb2.NODE_STATE_HEALTHY
                ):
                    node.state = client_pb2.NODE_STATE_SUSPECT
                    logger.warning(
                        "node %s suspected: no heartbeat for %.1f s", node.node_id, silent
                    )


async def _stop_at_exit(server: Server) -> None:
    await server._shutdown(1.0)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


@contextlib.contextmanager
def _signals_stop(server: Server) -> Iterator[None]:
    """While blocking in the main thread, SIGTERM stops the gateway like Ctrl-C."""
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


__all__ = ["GatewayError", "Server"]
