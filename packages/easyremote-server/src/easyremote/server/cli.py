"""``easyremote-server``: run the gateway, show the lines that join it, show status.

Example:
    $ easyremote-server                                   # this machine only
    $ easyremote-server --host 0.0.0.0 --tls-self-signed  # a public gateway
    $ easyremote-server join                              # what other machines paste
    $ easyremote-server status                            # the connected nodes

The gateway prints the commands that attach nodes and clients once it is
listening, then serves until Ctrl-C or SIGTERM (both stop it cleanly, exit 0).
Every option can also come from the ``EASYREMOTE_*`` variable ``--help`` names.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import click

from easyremote.proto import STRATEGY_BY_NAME
from easyremote.proto.cli_options import (
    CONTEXT_SETTINGS,
    allow_insecure_option,
    log_level_option,
)
from easyremote.proto.credentials import ENV_TOKEN
from easyremote.proto.logsetup import LOG_LEVELS, configure_logging
from easyremote.proto.status_cli import make_status_command
from easyremote.proto.transport import MAX_MESSAGE_BYTES, MIN_MESSAGE_BYTES
from easyremote.server import GatewayError, Server
from easyremote.server._banner import banner, check_bindable
from easyremote.server._join import join_lines, join_text
from easyremote.server._security import ENV_CLIENT_TOKEN, ENV_NODE_TOKEN
from easyremote.server.version import __version__

__all__ = [
    "LOG_LEVELS",
    "banner",
    "check_bindable",
    "configure_logging",
    "join_lines",
    "main",
    "parse_size",
    "server_command",
]

DEFAULT_PORT = 8080
ENV_PORT = "EASYREMOTE_PORT"


# ------------------------------------------------------------------- sizes


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kib": 1 << 10,
    "kb": 1000,
    "m": 1 << 20,
    "mib": 1 << 20,
    "mb": 1000**2,
    "g": 1 << 30,
    "gib": 1 << 30,
    "gb": 1000**3,
}
SIZE_HELP = "Sizes: bytes, or a number with KiB/MiB/GiB (1024-based) or KB/MB/GB (1000-based)."


def parse_size(text: str) -> int:
    """A byte count from ``1048576``, ``64MiB``, ``512KiB``, ``1.5GB`` or ``0``.

    KiB/MiB/GiB (and K, M, G) are powers of 1024, KB/MB/GB powers of 1000,
    B or nothing bytes; case does not matter.

    Raises:
        ValueError: Not such a size.
    """
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size such as 1048576, 512KiB, 64MiB or 1GB")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def _size_option(ctx: click.Context, param: click.Parameter, value: str | int) -> int:
    if isinstance(value, int):
        return value
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc


def _size_text(size: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


# ----------------------------------------------------------------- gateway


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


def _refuse_gateway_options(ctx: click.Context) -> None:
    # `easyremote-server --port 9 status` would silently ignore --port.
    given = [
        param.opts[0]
        for param in ctx.command.params
        if param.name
        and isinstance(param, click.Option)
        and ctx.get_parameter_source(param.name) == click.core.ParameterSource.COMMANDLINE
    ]
    if given:
        raise click.UsageError(
            f"{', '.join(given)} configure the gateway itself, not "
            f"`{ctx.invoked_subcommand}`; pass that command's own options after its name"
        )


@click.group(name="server", invoke_without_command=True, context_settings=CONTEXT_SETTINGS)
@click.option(
    "--host",
    default="127.0.0.1",
    envvar="EASYREMOTE_HOST",
    show_envvar=True,
    help="Interface to bind; 0.0.0.0 or :: for every interface (needs TLS or --allow-insecure).",
)
@click.option(
    "--port",
    default=DEFAULT_PORT,
    type=click.IntRange(0, 65535),
    envvar=ENV_PORT,
    show_envvar=True,
    help="TCP port (0 picks a free one).",
)
@click.option(
    "--default-strategy",
    default="smart_adaptive",
    type=click.Choice(list(STRATEGY_BY_NAME)),
    envvar="EASYREMOTE_DEFAULT_STRATEGY",
    show_envvar=True,
    help="Load-balancing strategy for calls that name none.",
)
@click.option(
    "--max-queue",
    default=1000,
    type=click.IntRange(min=0),
    envvar="EASYREMOTE_MAX_QUEUE",
    show_envvar=True,
    help="Calls of one function that may wait for a free slot.",
)
@click.option(
    "--max-payload-bytes",
    default="0",
    metavar="SIZE",
    callback=_size_option,
    envvar="EASYREMOTE_MAX_PAYLOAD_BYTES",
    show_envvar=True,
    help=f"Largest pickled argument payload of one call (0: no limit). {SIZE_HELP}",
)
@click.option(
    "--max-message-bytes",
    default=_size_text(MAX_MESSAGE_BYTES),
    metavar="SIZE",
    callback=_size_option,
    envvar="EASYREMOTE_MAX_MESSAGE_BYTES",
    show_envvar=True,
    help=f"Largest single gRPC message accepted (at least {_size_text(MIN_MESSAGE_BYTES)}; "
    f"payloads travel in 1MiB chunks, so this bounds framing, not payload size). {SIZE_HELP}",
)
@click.option(
    "--heartbeat-interval",
    default=2.0,
    type=click.FloatRange(min=0, min_open=True),
    envvar="EASYREMOTE_HEARTBEAT_INTERVAL",
    show_envvar=True,
    help="Seconds between the heartbeats nodes send.",
)
@click.option(
    "--node-timeout",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    envvar="EASYREMOTE_NODE_TIMEOUT",
    show_envvar=True,
    help="Seconds without a heartbeat before a node is dropped [default: 10 heartbeat intervals].",
)
@click.option(
    "--max-streams-per-peer",
    default=1000,
    type=click.IntRange(min=1),
    envvar="EASYREMOTE_MAX_STREAMS_PER_PEER",
    show_envvar=True,
    help="Node and client streams open at once from one IP address.",
)
@click.option(
    "--max-functions-per-node",
    default=1000,
    type=click.IntRange(min=1),
    envvar="EASYREMOTE_MAX_FUNCTIONS_PER_NODE",
    show_envvar=True,
    help="Functions one node may register.",
)
@click.option(
    "--max-function-name-chars",
    default=256,
    type=click.IntRange(min=1),
    envvar="EASYREMOTE_MAX_FUNCTION_NAME_CHARS",
    show_envvar=True,
    help="Longest function name a node may register.",
)
@click.option(
    "--no-auth",
    is_flag=True,
    envvar="EASYREMOTE_NO_AUTH",
    show_envvar=True,
    help="Accept calls and nodes without tokens (loopback, or with --allow-insecure). "
    f"Tokens otherwise come from {ENV_CLIENT_TOKEN} and {ENV_NODE_TOKEN}, else the "
    "local token file (made on first start).",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False),
    envvar="EASYREMOTE_TLS_CERT",
    show_envvar=True,
    help="PEM certificate (chain) to serve TLS with; needs --tls-key.",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False),
    envvar="EASYREMOTE_TLS_KEY",
    show_envvar=True,
    help="PEM private key of --tls-cert.",
)
@click.option(
    "--tls-self-signed",
    is_flag=True,
    envvar="EASYREMOTE_TLS_SELF_SIGNED",
    show_envvar=True,
    help="Serve TLS with a generated certificate (kept in ~/.easyremote/tls); "
    "peers pin it (`easyremote-server join` prints the pin).",
)
@allow_insecure_option("Allow a non-loopback bind without tokens or TLS (trusted networks only).")
@log_level_option("Level of EasyRemote's log lines on stderr (other libraries: warnings only).")
@click.version_option(__version__, prog_name="easyremote-server")
@click.pass_context
def server_command(
    ctx: click.Context,
    host: str,
    port: int,
    default_strategy: str,
    max_queue: int,
    max_payload_bytes: int,
    max_message_bytes: int,
    heartbeat_interval: float,
    node_timeout: float | None,
    max_streams_per_peer: int,
    max_functions_per_node: int,
    max_function_name_chars: int,
    no_auth: bool,
    tls_cert: str | None,
    tls_key: str | None,
    tls_self_signed: bool,
    allow_insecure: bool,
    log_level: str,
) -> None:
    """Runs an EasyRemote gateway: nodes dial in, clients call through it.

    With a command it runs that instead (`easyremote-server join`: what
    other machines paste; `easyremote-server status`: the connected nodes);
    the options below configure the gateway only.
    """
    if ctx.invoked_subcommand is not None:
        _refuse_gateway_options(ctx)
        return
    configure_logging(log_level)
    # Said here in the flags' words; Server would name its own arguments.
    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("pass --tls-cert and --tls-key together, or neither")
    if tls_self_signed and tls_cert:
        raise click.UsageError("pass --tls-self-signed or --tls-cert/--tls-key, not both")
    try:
        server = Server(
            port,
            host,
            default_strategy=default_strategy,
            max_queue=max_queue,
            max_payload_bytes=max_payload_bytes,
            heartbeat_interval=heartbeat_interval,
            node_timeout=node_timeout,
            auth=not no_auth,
            tls_cert_file=tls_cert,
            tls_key_file=tls_key,
            tls_self_signed=tls_self_signed,
            allow_insecure=allow_insecure,
            max_functions_per_node=max_functions_per_node,
            max_function_name_chars=max_function_name_chars,
            max_streams_per_peer=max_streams_per_peer,
            max_message_bytes=max_message_bytes,
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


# -------------------------------------------------------------------- join


@server_command.command(name="join", context_settings=CONTEXT_SETTINGS)
@click.option(
    "--address",
    default=None,
    envvar="EASYREMOTE_JOIN_ADDRESS",
    show_envvar=True,
    help="HOST:PORT other machines dial [default: this machine's first network address, "
    "with --port].",
)
@click.option(
    "--port",
    default=DEFAULT_PORT,
    type=click.IntRange(1, 65535),
    envvar=ENV_PORT,
    show_envvar=True,
    help="The gateway's port, when --address has none.",
)
@click.option(
    "--role",
    type=click.Choice(["node", "client"]),
    default=None,
    envvar="EASYREMOTE_JOIN_ROLE",
    show_envvar=True,
    help="Print only this role's lines [default: both].",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False),
    envvar="EASYREMOTE_TLS_CERT",
    show_envvar=True,
    help="The certificate the gateway serves [default: the generated one, if any].",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["shell", "json"]),
    default="shell",
    envvar="EASYREMOTE_JOIN_FORMAT",
    show_envvar=True,
    help="Lines to paste into a POSIX shell, or JSON for programs.",
)
def join_command(
    address: str | None,
    port: int,
    role: str | None,
    tls_cert: str | None,
    output_format: str,
) -> None:
    """Prints what another machine pastes to join this gateway as a node or a client.

    The output holds the tokens (and the TLS pin): it is a secret. Run it on
    the gateway machine, after the gateway made its tokens (its first start);
    tokens are read as the gateway reads them ($EASYREMOTE_CLIENT_TOKEN,
    $EASYREMOTE_NODE_TOKEN, else the local token file).
    """
    click.echo(join_text(address, port, role, tls_cert, output_format))


# ------------------------------------------------------------------ status


def _local_gateway() -> str:
    return f"localhost:{os.environ.get(ENV_PORT) or DEFAULT_PORT}"


status_command = make_status_command(
    defaults_help="GATEWAY defaults to $EASYREMOTE_GATEWAY, else localhost and $EASYREMOTE_PORT "
    "(8080). The token: $EASYREMOTE_TOKEN, else $EASYREMOTE_CLIENT_TOKEN, else (for a gateway "
    "on this machine) the local token file.",
    default_gateway=_local_gateway,
    # A token exported for the gateway itself serves its own status command too.
    token_envvars=(ENV_TOKEN, ENV_CLIENT_TOKEN),
    tls_fingerprint_help="SHA-256 fingerprint of the gateway's certificate to pin [default for "
    "a gateway on this machine: what it recorded when it started].",
)
server_command.add_command(status_command)


def main() -> None:
    """Entry point of ``easyremote-server``."""
    server_command(prog_name="easyremote-server")


if __name__ == "__main__":
    main()
