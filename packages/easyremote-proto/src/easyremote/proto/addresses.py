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


__all__ = ["WILDCARD_HOSTS", "dial_addresses", "host_port", "machine_addresses"]
