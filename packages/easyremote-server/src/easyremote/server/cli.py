"""``easyremote-server``: run the gateway from the command line.

Example:
    $ easyremote-server                                   # this machine only
    $ easyremote-server --host 0.0.0.0 --tls-self-signed  # a public gateway

The gateway prints the commands that attach nodes and clients once it is
listening, then serves until Ctrl-C or SIGTERM (both stop it cleanly, exit 0).
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import click

from easyremote.proto import STRATEGY_BY_NAME
from easyremote.proto.credentials import credentials_path
from easyremote.server import GatewayError, Server
from easyremote.server.version import __version__

LOG_LEVELS = ("debug", "info", "warning", "error")
_WILDCARD_HOSTS = ("0.0.0.0", "::", "[::]", "")
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def configure_logging(level: str) -> None:
    """Sends log records at ``level`` and above to stderr.

    Args:
        level: One of ``LOG_LEVELS`` (any case).
    """
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def banner(server: Server, strategy: str) -> str:
    """The "next steps" text printed once the gateway listens.

    Args:
        server: The started gateway.
        strategy: Its default strategy name.

    Returns:
        Lines to print, ending without a newline.
    """
    address = server.address
    lines = [
        f"EasyRemote gateway {__version__} listening on {address} (default strategy: {strategy})",
    ]
    remote = server.host not in _LOOPBACK_HOSTS
    if server.host in _WILDCARD_HOSTS:
        lines.append(
            f"Accepting other machines: they dial {socket.gethostname()}:{server.port} "
            "(or this host's IP)."
        )
    elif not remote:
        lines.append(
            "Loopback only: pass --host 0.0.0.0 --tls-self-signed to accept other machines."
        )
    if server.auth is None:
        lines.append("Authentication: OFF (--no-auth): anyone who reaches the port can run code.")
    else:
        lines.append(
            f"Authentication: tokens ({server.auth_source}); on this machine clients and "
            "nodes find them by themselves."
        )
    if server.tls_fingerprint:
        lines.append(f"TLS certificate SHA-256 fingerprint: {server.tls_fingerprint}")
    if remote and server.auth is not None:
        lines += [
            "Other machines authenticate with a token (show them with",
            f"`python -m json.tool {credentials_path()}`):",
            "  nodes:   export EASYREMOTE_TOKEN=<node_token>",
            "  clients: export EASYREMOTE_TOKEN=<client_token>",
        ]
        if server.tls_fingerprint:
            lines.append(f"  and both: export EASYREMOTE_TLS_FINGERPRINT={server.tls_fingerprint}")
    lines += [
        "",
        "Next steps",
        "  Serve functions from a machine (a module that defines a ComputeNode or functions):",
        f"    easyremote-node {address} mymodule:node",
        "  Call them from Python:",
        "    from easyremote import Client",
        f'    Client("{address}").call("my_function", ...)',
        "  See the connected nodes:",
        f"    easyremote status {address}",
        "",
        "Stop the gateway with Ctrl-C or SIGTERM.",
    ]
    return "\n".join(lines)


def check_bindable(host: str, port: int) -> None:
    """Fails in one line when ``host:port`` cannot be bound.

    gRPC's C core reports a failed bind as a multi-line dump on stderr before
    ``Server`` can raise, so the CLI tries the bind itself first, with the same
    socket options the gateway uses (SO_REUSEADDR, no SO_REUSEPORT).

    Args:
        host: Interface the gateway will bind.
        port: Its port; 0 always binds and is not checked.

    Raises:
        GatewayError: The port is in use, the host unknown, or binding refused.
    """
    if port == 0:
        return
    where = f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise GatewayError(f"cannot listen on {where}: unknown host ({exc.strerror})") from exc
    for family, kind, proto, _, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise GatewayError(
                    f"cannot listen on {where}: the port is already in use "
                    "(stop the other process or pick another --port)"
                ) from exc
            raise GatewayError(f"cannot listen on {where}: {exc.strerror or exc}") from exc


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    # Handlers that only set an event, so the main thread leaves its wait and
    # runs the orderly shutdown itself instead of unwinding mid-statement.
    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@click.command(name="server", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="TCP port (0 picks a free one).",
)
@click.option(
    "--default-strategy",
    default="smart_adaptive",
    show_default=True,
    type=click.Choice(list(STRATEGY_BY_NAME)),
    help="Load-balancing strategy for calls that name none.",
)
@click.option(
    "--max-queue",
    default=1000,
    show_default=True,
    type=click.IntRange(min=0),
    help="Calls of one function that may wait for a free slot.",
)
@click.option(
    "--heartbeat-interval",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds between the heartbeats nodes send.",
)
@click.option(
    "--no-auth",
    is_flag=True,
    help="Accept calls and nodes without tokens (loopback, or with --allow-insecure).",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False),
    help="PEM certificate (chain) to serve TLS with; needs --tls-key.",
)
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="PEM private key.")
@click.option(
    "--tls-self-signed",
    is_flag=True,
    help="Serve TLS with a generated certificate (kept in ~/.easyremote/tls); "
    "peers pin the printed fingerprint.",
)
@click.option(
    "--allow-insecure",
    is_flag=True,
    help="Allow a non-loopback bind without tokens or TLS (trusted networks only).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
)
@click.version_option(__version__, prog_name="easyremote-server")
def server_command(
    host: str,
    port: int,
    default_strategy: str,
    max_queue: int,
    heartbeat_interval: float,
    no_auth: bool,
    tls_cert: str | None,
    tls_key: str | None,
    tls_self_signed: bool,
    allow_insecure: bool,
    log_level: str,
) -> None:
    """Runs an EasyRemote gateway: nodes dial in, clients call through it.

    Tokens are on by default; tokens set in EASYREMOTE_CLIENT_TOKEN and
    EASYREMOTE_NODE_TOKEN win over the local token file.
    """
    configure_logging(log_level)
    try:
        server = Server(
            port,
            host,
            default_strategy=default_strategy,
            max_queue=max_queue,
            heartbeat_interval=heartbeat_interval,
            auth=not no_auth,
            tls_cert_file=tls_cert,
            tls_key_file=tls_key,
            tls_self_signed=tls_self_signed,
            allow_insecure=allow_insecure,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    stop = threading.Event()
    # Handlers go in before binding so a SIGTERM that arrives while the banner
    # prints still ends in an orderly stop, not the default kill.
    with _stop_on_signals(stop):
        try:
            check_bindable(host, port)
            server.start_background()
        except GatewayError as exc:
            raise click.ClickException(str(exc)) from exc
        try:
            click.echo(banner(server, default_strategy))
            while server.running and not stop.wait(0.5):
                pass
        finally:
            server.stop()


def main() -> None:
    """Entry point of ``easyremote-server``."""
    server_command(prog_name="easyremote-server")


if __name__ == "__main__":
    main()
