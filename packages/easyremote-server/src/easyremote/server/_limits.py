"""Bounds on what one peer can make the gateway hold: streams and registrations."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TypeVar

from grpc import aio

from easyremote.proto.v1 import common_pb2
from easyremote.server._wire import abort, peer_of

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


def peer_host(peer: str) -> str:
    """``ipv4:1.2.3.4:567`` → ``1.2.3.4``; ``ipv6:[::1]:567`` → ``::1``."""
    _, _, rest = peer.partition(":")
    if rest.startswith("["):
        return rest[1 : rest.find("]")]
    host, sep, _ = rest.rpartition(":")
    return host if sep else rest


class PeerLimits:
    """Counts open node and client streams per peer IP; refuses past the limit."""

    def __init__(self, max_streams_per_peer: int) -> None:
        self._max = max_streams_per_peer
        self._open: Counter[str] = Counter()

    async def admit(self, context: aio.ServicerContext[_Req, _Resp]) -> str:
        """Counts a new stream from the caller, or aborts it with RESOURCE_EXHAUSTED."""
        host = peer_host(peer_of(context))
        if self._max and self._open[host] >= self._max:
            await abort(
                context,
                common_pb2.ERROR_REASON_QUEUE_FULL,
                f"too many open streams from {host} (gateway max_streams_per_peer={self._max})",
            )
        self._open[host] += 1
        return host

    def release(self, host: str) -> None:
        self._open[host] -= 1
        if self._open[host] <= 0:
            del self._open[host]


@dataclass(frozen=True)
class RegistrationLimits:
    """What one node may register."""

    max_functions: int = 1000
    max_name_chars: int = 256
