"""Addresses other machines dial: this machine's real IPs, ``host:port`` text.

A gateway bound to a wildcard (``0.0.0.0``, ``::``) listens on every
interface, but loopback is the one address no other machine can use; these
helpers find the others without extra dependencies (no psutil).
"""

from __future__ import annotations

import ipaddress
import socket

from easyremote.proto.credentials import is_loopback_host

# Hosts that bind every interface (gRPC serves both IP families on each).
WILDCARD_HOSTS = ("0.0.0.0", "::", "[::]", "")
# A UDP "connect" to these picks the route to the internet and sends nothing;
# the socket's own address is then the one other machines most likely reach.
_ROUTE_PROBES = ((socket.AF_INET, "8.8.8.8"), (socket.AF_INET6, "2001:4860:4860::8888"))


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets (``[fd00::2]:8080``)."""
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_address(address: str) -> str:
    """``address`` as a gateway address (``host:port``), or a ValueError saying why not.

    gRPC itself takes ``localhost`` as port 443 and reports a scheme such as
    ``tcp://`` only as a misformatted name; both are common slips (Dask writes
    ``tcp://host:8786``, Ray ``ray://``), so they fail here, at once, with the fix.

    Returns:
        The address without surrounding whitespace.

    Raises:
        ValueError: No port, a port out of range, or a URL scheme.
    """
    text = address.strip()
    if "://" in text:
        scheme, _, rest = text.partition("://")
        raise ValueError(
            f"{address!r} is a URL; EasyRemote addresses are host:port: drop {scheme + '://'!r}"
            f" (e.g. {rest.rstrip('/') or 'localhost:8080'!r})"
        )
    host, sep, port = text.rpartition(":")
    if text.startswith("[") and not host.endswith("]"):
        sep = ""  # a bare [v6] address: its colons are not a port
    if ":" in host and not host.startswith("["):
        raise ValueError(
            f"{address!r} is not host:port: write an IPv6 address in brackets, "
            "then its port (e.g. '[::1]:8080')"
        )
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        example = host_port((host if sep else text).strip("[]") or "localhost", 8080)
        raise ValueError(
            f"{address!r} is not host:port with a port from 1 to 65535 (e.g. {example!r})"
        )
    return text


def machine_addresses() -> list[str]:
    """This machine's IP addresses other machines may dial.

    Sources: the source address of the route to the internet (a UDP socket
    "connected" to a public IP, which sends nothing), then what the host name
    and the fully qualified name resolve to. Loopback, link-local, unspecified
    and multicast addresses are left out; with no network the list is empty.

    Returns:
        IPv4 addresses first, each once, the route's address first in its family.
    """
    found: list[str] = []

    def add(text: str) -> None:
        try:
            ip = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            return
        if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast:
            return
        if str(ip) not in found:
            found.append(str(ip))

    for family, target in _ROUTE_PROBES:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((target, 9))
                add(str(probe.getsockname()[0]))
        except OSError:
            continue
    for name in dict.fromkeys((socket.gethostname(), socket.getfqdn())):
        try:
            infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except OSError:
            continue
        for info in infos:
            add(str(info[4][0]))
    return sorted(found, key=lambda ip: ":" in ip)


def dial_addresses(host: str, port: int) -> list[str]:
    """``host:port`` addresses other machines dial for a gateway bound to ``host``.

    Args:
        host: The interface the gateway binds.
        port: Its port.

    Returns:
        This machine's real addresses for a wildcard bind, ``host:port`` for
        another non-loopback bind, nothing for a loopback one.
    """
    if host in WILDCARD_HOSTS:
        return [host_port(ip, port) for ip in machine_addresses()]
    if is_loopback_host(host):
        return []
    return [host_port(host, port)]


__all__ = ["WILDCARD_HOSTS", "check_address", "dial_addresses", "host_port", "machine_addresses"]
