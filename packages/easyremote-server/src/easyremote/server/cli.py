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

import errno
import json
import os
import re
import shlex
import signal
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import click

from easyremote.proto import STRATEGY_BY_NAME
from easyremote.proto.addresses import (
    WILDCARD_HOSTS,
    dial_addresses,
    host_port,
    machine_addresses,
)
from easyremote.proto.credentials import (
    ENV_TOKEN,
    CredentialsError,
    is_loopback_host,
    load_local_credentials,
)
from easyremote.proto.local_gateways import read_record
from easyremote.proto.logsetup import (
    DEFAULT_LOG_LEVEL,
    LOG_LEVELS,
    configure_logging,
    quiet_grpc_core,
)
from easyremote.proto.status import (
    DEFAULT_TIMEOUT_S,
    ENV_GATEWAY,
    OUTPUT_FORMATS,
    StatusError,
    fetch_status,
    render_status,
)
from easyremote.proto.tls import ENV_TLS_CA, ENV_TLS_FINGERPRINT, PINNED_TARGET_NAME
from easyremote.proto.transport import MAX_MESSAGE_BYTES, MIN_MESSAGE_BYTES
from easyremote.server import GatewayError, Server
from easyremote.server._security import ENV_CLIENT_TOKEN, ENV_NODE_TOKEN
from easyremote.server._tls import fingerprint_of_pem, self_signed_paths
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
_CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}


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


# ------------------------------------------------------------------ banner


def banner(server: Server, strategy: str, addresses: Sequence[str] | None = None) -> str:
    """The "next steps" text printed once the gateway listens.

    It names no token and no certificate fingerprint: ``easyremote-server
    join`` prints those, on request.

    Args:
        server: The started gateway.
        strategy: Its default strategy name.
        addresses: Where other machines dial it (default: ``dial_addresses``).

    Returns:
        Lines to print, ending without a newline.
    """
    port = server.port
    wildcard = server.host in WILDCARD_HOSTS
    local = f"127.0.0.1:{port}" if wildcard else server.address
    dial = list(dial_addresses(server.host, port) if addresses is None else addresses)
    exposed = not is_loopback_host(server.host)
    bound = host_port(server.host or "0.0.0.0", port)
    where = f"{bound}, all interfaces" if wildcard else bound
    lines = [
        f"EasyRemote gateway {__version__} listening on {where} (default strategy: {strategy})"
    ]
    if wildcard:
        if dial:
            lines.append("Other machines dial one of:")
            lines += [f"  {address}" for address in dial]
        else:
            lines.append(
                f"Other machines dial this machine's name or IP, port {port} "
                "(no network address was found)."
            )
        lines.append(f"On this machine: {local}")
    elif exposed:
        lines.append(f"Other machines dial {server.address}.")
    else:
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
        lines.append("TLS: on (`easyremote-server join` prints what other machines set).")
    elif exposed:
        lines.append("TLS: OFF (--allow-insecure): tokens and data cross the network in clear.")
    lines += ["", "Next steps"]
    if exposed:
        where_to = f"--address {shlex.quote(dial[0])}" if dial else f"--port {port}"
        join = f"easyremote-server join {where_to}"
        lines += [
            "  Attach another machine (node or client): run this here, paste its output there:",
            f"    {join}",
        ]
        if wildcard:
            lines += ["  See the connected nodes:", f"    easyremote-server status {local}"]
        else:
            lines += [
                "  See the connected nodes (after the client lines of `easyremote-server "
                "join --role client`):",
                f"    easyremote-server status {local}",
            ]
    else:
        lines += [
            "  Serve functions from this machine (with easyremote-node installed; a module "
            "that defines a ComputeNode or functions):",
            f"    easyremote-node {local} mymodule:node",
            "  Call them from Python (with easyremote-client installed):",
            "    from easyremote.client import Client",
            f'    Client("{local}").call("my_function", ...)',
            "  See the connected nodes:",
            f"    easyremote-server status {local}",
        ]
    lines += ["", "Stop the gateway with Ctrl-C or SIGTERM."]
    return "\n".join(lines)


# ------------------------------------------------------------- binding


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


# ----------------------------------------------------------------- gateway


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


@click.group(name="server", invoke_without_command=True, context_settings=_CONTEXT)
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
@click.option(
    "--allow-insecure",
    is_flag=True,
    envvar="EASYREMOTE_ALLOW_INSECURE",
    show_envvar=True,
    help="Allow a non-loopback bind without tokens or TLS (trusted networks only).",
)
@click.option(
    "--log-level",
    default=DEFAULT_LOG_LEVEL,
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    envvar="EASYREMOTE_LOG_LEVEL",
    show_envvar=True,
    help="Level of EasyRemote's log lines on stderr (other libraries: warnings only).",
)
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


def _shell_value(value: str) -> str:
    # Always single-quoted, as users expect to see secrets quoted; a quote
    # inside becomes '"'"'.
    return "'" + value.replace("'", "'\"'\"'") + "'"


def _gateway_tokens() -> tuple[str, str] | None:
    """(client, node) tokens as the gateway resolves them, or None if there are none yet."""
    client = os.environ.get(ENV_CLIENT_TOKEN) or ""
    node = os.environ.get(ENV_NODE_TOKEN) or ""
    if not client or not node:
        local = load_local_credentials()
        if local is None:
            return None
        client = client or local.client_token
        node = node or local.node_token
    return client, node


def _pinnable(cert_pem: bytes) -> bool:
    """True for a certificate peers can pin: one naming easyremote-gateway."""
    from cryptography import x509  # noqa: PLC0415 - only `join --tls-cert` needs it

    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return PINNED_TARGET_NAME in names.get_values_for_type(x509.DNSName)


def _join_address(address: str | None, port: int) -> tuple[str, str | None]:
    """(``host:port`` other machines dial, a note when it is only a guess)."""
    if address:
        if address.startswith("["):  # [v6]:port, or [v6] alone
            return (address if re.search(r"\]:\d+$", address) else f"{address}:{port}"), None
        if address.count(":") == 1:  # name:port or v4:port
            return address, None
        return host_port(address, port), None  # a name, a v4 or a bare v6 address
    found = machine_addresses()
    if found:
        return host_port(found[0], port), None
    guess = host_port(socket.gethostname(), port)
    return guess, f"no network address found: replace {guess} with one the machine reaches"


_TLS_OFF = (
    "TLS is off: tokens would cross the network in clear text. Restart the gateway "
    "with --tls-self-signed, or, on a network you trust, add EASYREMOTE_ALLOW_INSECURE=1 "
    "to the exports (Python code passes allow_insecure=True)"
)


def _certificate_pin(path: Path, *, generated: bool) -> tuple[str | None, list[str]]:
    try:
        cert_pem = path.read_bytes()
        fingerprint = fingerprint_of_pem(cert_pem)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read a certificate from {path}: {exc}") from exc
    if not generated and not _pinnable(cert_pem):
        return None, [
            f"{path} is not EasyRemote's generated certificate, so peers cannot pin it: "
            f"give them its CA instead (export {ENV_TLS_CA}=/path/to/ca.pem)"
        ]
    return fingerprint, []


def _tls_pin(dial: str, tls_cert: str | None) -> tuple[str | None, list[str]]:
    """(the pin peers use, or None; notes) for the gateway reached at ``dial``.

    ``--tls-cert`` first; else what the gateway running on this machine on
    that port recorded at its start; else the generated certificate, if any.

    Raises:
        CredentialsError: The local gateway record is unsafe.
    """
    if tls_cert:
        return _certificate_pin(Path(tls_cert), generated=False)
    try:
        port: int | None = int(dial.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        port = None
    record = read_record(port) if port else None
    if record is not None:
        if record.tls_fingerprint:
            return record.tls_fingerprint, []
        if record.tls_server_name:
            return None, [
                f"the gateway serves its own certificate (for {record.tls_server_name}): "
                f"give peers its CA (export {ENV_TLS_CA}=/path/to/ca.pem)"
            ]
        return None, [_TLS_OFF]
    generated = self_signed_paths()[1]
    if not generated.is_file():
        return None, [_TLS_OFF]
    pin, notes = _certificate_pin(generated, generated=True)
    notes.append(
        f"no gateway runs on port {port} of this machine now; the pin is that of the "
        "generated certificate (--tls-self-signed)"
    )
    return pin, notes


def join_lines(
    address: str,
    roles: Sequence[str],
    client_token: str,
    node_token: str,
    fingerprint: str | None,
) -> dict[str, dict[str, Any]]:
    """What each role's machine sets and runs to join the gateway at ``address``.

    Args:
        address: ``host:port`` the other machine dials.
        roles: ``"node"`` and/or ``"client"``.
        client_token: The gateway's client token.
        node_token: The gateway's node token.
        fingerprint: The TLS pin, or None without TLS.

    Returns:
        Per role: ``env`` (variables to export) and ``command`` (to run).
    """
    quoted = shlex.quote(address)
    commands = {
        "node": f"easyremote-node {quoted} mymodule:node",
        "client": f"easyremote-client status {quoted}",
    }
    tokens = {"node": node_token, "client": client_token}
    result: dict[str, dict[str, Any]] = {}
    for role in roles:
        env = {ENV_TOKEN: tokens[role]}
        if fingerprint:
            env[ENV_TLS_FINGERPRINT] = fingerprint
        result[role] = {"env": env, "command": commands[role]}
    return result


@server_command.command(name="join", context_settings=_CONTEXT)
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
    try:
        tokens = _gateway_tokens()
    except CredentialsError as exc:
        raise click.ClickException(str(exc)) from exc
    if tokens is None:
        raise click.ClickException(
            "this machine has no gateway tokens yet: start the gateway first "
            "(easyremote-server --host 0.0.0.0 --tls-self-signed), which makes them"
        )
    client_token, node_token = tokens
    dial, note = _join_address(address, port)
    notes = [note] if note else []
    try:
        fingerprint, tls_notes = _tls_pin(dial, tls_cert)
    except CredentialsError as exc:
        raise click.ClickException(str(exc)) from exc
    notes += tls_notes
    roles = [role] if role else ["node", "client"]
    joined = join_lines(dial, roles, client_token, node_token, fingerprint)
    if output_format == "json":
        document: dict[str, Any] = {"address": dial, "tls_fingerprint": fingerprint, **joined}
        if notes:
            document["notes"] = notes
        click.echo(json.dumps(document, indent=2))
        return
    titles = {
        "node": "On a node machine (pip install easyremote-node):",
        "client": "On a client machine (pip install easyremote-client); Python then uses "
        f'Client("{dial}") from easyremote.client:',
    }
    lines = [f"# Join the EasyRemote gateway at {dial}. Keep this secret: it holds tokens."]
    lines += [f"# {note}" for note in notes]
    for name, spec in joined.items():
        exports = " ".join(f"{key}={_shell_value(value)}" for key, value in spec["env"].items())
        lines += [f"# {titles[name]}", f"export {exports}", spec["command"]]
    click.echo("\n".join(lines))


# ------------------------------------------------------------------ status


def _local_gateway() -> str:
    return f"localhost:{os.environ.get(ENV_PORT) or DEFAULT_PORT}"


@server_command.command(name="status", context_settings=_CONTEXT)
@click.argument("gateway", envvar=ENV_GATEWAY, default=_local_gateway)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(OUTPUT_FORMATS),
    default="table",
    envvar="EASYREMOTE_STATUS_FORMAT",
    show_envvar=True,
    help="A plain table for people, JSON for programs.",
)
@click.option(
    "--node",
    "node_id",
    default=None,
    envvar="EASYREMOTE_STATUS_NODE",
    show_envvar=True,
    help="Show only this node, with its functions.",
)
@click.option(
    "--tls-ca",
    type=click.Path(exists=True, dir_okay=False),
    envvar=ENV_TLS_CA,
    show_envvar=True,
    help="PEM CA bundle to verify the gateway's certificate with.",
)
@click.option(
    "--tls-fingerprint",
    envvar=ENV_TLS_FINGERPRINT,
    show_envvar=True,
    help="SHA-256 fingerprint of the gateway's certificate to pin [default for a gateway "
    "on this machine: what it recorded when it started].",
)
@click.option(
    "--allow-insecure",
    is_flag=True,
    envvar="EASYREMOTE_ALLOW_INSECURE",
    show_envvar=True,
    help="Send the token without TLS to another machine (trusted networks only).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT_S,
    envvar="EASYREMOTE_STATUS_TIMEOUT",
    show_envvar=True,
    help="Seconds to wait for the gateway.",
)
def status_command(
    gateway: str,
    output_format: str,
    node_id: str | None,
    tls_ca: str | None,
    tls_fingerprint: str | None,
    allow_insecure: bool,
    timeout: float,
) -> None:
    """Shows the nodes connected to GATEWAY (host:port).

    GATEWAY defaults to $EASYREMOTE_GATEWAY, else localhost and $EASYREMOTE_PORT
    (8080). The token: $EASYREMOTE_TOKEN, else $EASYREMOTE_CLIENT_TOKEN, else
    (for a gateway on this machine) the local token file.
    """
    token = os.environ.get(ENV_TOKEN) or os.environ.get(ENV_CLIENT_TOKEN) or None
    try:
        nodes = fetch_status(
            gateway,
            node_id,
            token=token,
            tls_ca_file=tls_ca,
            tls_fingerprint=tls_fingerprint,
            allow_insecure=allow_insecure,
            timeout=timeout,
        )
    except StatusError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        render_status(gateway, nodes, one_node=node_id is not None, output_format=output_format)
    )


def main() -> None:
    """Entry point of ``easyremote-server``."""
    quiet_grpc_core()
    server_command(prog_name="easyremote-server")


if __name__ == "__main__":
    main()
