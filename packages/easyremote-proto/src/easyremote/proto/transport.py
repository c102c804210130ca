"""Transport settings that gateway, nodes and clients must agree on."""

from __future__ import annotations

import platform

PROTOCOL_VERSION = 1

# Envelopes hold at most ~2 chunks (see Outbox), so 8 MiB leaves ample room
# while still rejecting absurd messages early.
MAX_MESSAGE_BYTES = 8 << 20
# The gateway may lower its receive limit to this, no further: peers' envelopes
# (up to ~2 chunks of 1 MiB plus framing) must still fit.
MIN_MESSAGE_BYTES = 4 << 20

# Clients and nodes ping every 20 s when idle; the gateway accepts pings down to
# every 10 s, so keepalive never trips the `too_many_pings` GOAWAY.
_CLIENT_KEEPALIVE_MS = 20_000
_SERVER_MIN_PING_INTERVAL_MS = 10_000


def channel_options() -> list[tuple[str, int | str]]:
    """gRPC channel options for clients and nodes dialing a gateway."""
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", _CLIENT_KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # A restarted gateway must be found again within a second or two, not
        # after gRPC's default backoff (which grows to minutes).
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2_000),
        # Each Client/ComputeNode owns its connection; sharing subchannels
        # across them would couple their lifetimes.
        ("grpc.use_local_subchannel_pool", 1),
    ]


def server_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int | str]]:
    """gRPC server options for the gateway (``max_message_bytes``: its receive limit)."""
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", _SERVER_MIN_PING_INTERVAL_MS),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.so_reuseport", 0),
    ]


def python_version() -> str:
    """The running interpreter as ``implementation major.minor.micro``."""
    return f"{platform.python_implementation()} {platform.python_version()}"
