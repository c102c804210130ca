"""What the gateway command checks before it listens and prints once it does.

``check_bindable`` turns a port that cannot be bound into one line (gRPC's C
core would print a multi-line dump first); ``banner`` is the "next steps" text
with the addresses other machines dial and the commands to run next.
"""

from __future__ import annotations

import errno
import shlex
import socket
from collections.abc import Sequence

from easyremote.proto.addresses import WILDCARD_HOSTS, dial_addresses, host_port
from easyremote.proto.credentials import is_loopback_host
from easyremote.server import GatewayError, Server
from easyremote.server.version import __version__


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
        # The fingerprint is public (the certificate is sent to anyone who
        # connects); shown so a peer told what a port presents can compare.
        lines += [
            "TLS: on (`easyremote-server join` prints what other machines set).",
            f"  certificate SHA-256 fingerprint: {server.tls_fingerprint}",
        ]
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


__all__ = ["banner", "check_bindable"]
