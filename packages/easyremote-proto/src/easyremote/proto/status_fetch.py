"""``fetch_status``: the gateway's node status over one short-lived channel.

Two unary RPCs of ``ClientService`` (``ListNodes``, ``GetNodeStatus``),
authenticated and secured the way clients are, for the status commands of
every role (the gateway's package cannot import the client's). Nothing here
depends on click: failures are ``StatusError`` subclasses whose message is
one line, which each command line turns into its own error.
"""

from __future__ import annotations

from typing import Any

import grpc

from easyremote.proto.credentials import ENV_TOKEN, ROLE_CLIENT, CredentialsError, auth_metadata
from easyremote.proto.peer import PeerSettings, refusal_message, resolve_peer
from easyremote.proto.status import NodeStatus
from easyremote.proto.tls import PROBE_TIMEOUT_S, TlsSettings, channel_credentials, tls_mismatch
from easyremote.proto.transport import channel_options
from easyremote.proto.v1 import client_pb2, client_pb2_grpc

# Status is interactive: fail fast rather than wait for an absent gateway.
DEFAULT_TIMEOUT_S = 3.0


class StatusError(Exception):
    """Status could not be shown; the message is one line meant for people."""


class StatusUnreachableError(StatusError):
    """The gateway did not answer (down, wrong address, TLS mismatch, timeout)."""


class StatusRefusedError(StatusError):
    """Credentials were refused, missing, or withheld (a token never sent in clear),
    or this command and the gateway disagree on TLS."""


class StatusNodeNotFoundError(StatusError):
    """The node asked for is not connected."""


_TOKEN_HINT = (
    f"set {ENV_TOKEN} to the gateway's client token (on the gateway machine, "
    "`easyremote-server join --role client` prints it)"
)


def _rpc_error(address: str, node_id: str | None, exc: grpc.RpcError) -> StatusError:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
    details = details.splitlines()[0] if details else ""
    if code == grpc.StatusCode.NOT_FOUND and node_id:
        return StatusNodeNotFoundError(f"no node {node_id!r} is connected to {address}")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return StatusUnreachableError(f"cannot reach the gateway at {address}: {details}")
    # The gateway's own details usually say where tokens come from already.
    hint = "" if ENV_TOKEN in details else f"; {_TOKEN_HINT}"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return StatusRefusedError(
            f"the gateway at {address} refused the credentials ({details}){hint}"
        )
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return StatusRefusedError(
            f"the gateway at {address} does not let this token read status ({details}){hint}"
        )
    name = code.name if code is not None else "error"
    return StatusError(f"status from {address} failed: {name}: {details}")


def _open_channel(address: str, tls: TlsSettings, timeout: float) -> grpc.Channel:
    options: list[tuple[str, Any]] = list(channel_options())
    if not tls.enabled:
        return grpc.insecure_channel(address, options=options)
    try:
        credentials, extra = channel_credentials(address, tls, timeout)
    except CredentialsError as exc:
        raise StatusRefusedError(str(exc)) from exc
    except OSError as exc:
        raise StatusUnreachableError(
            f"cannot reach the gateway at {address} to check its certificate: {exc}"
        ) from exc
    return grpc.secure_channel(address, credentials, options=[*options, *extra])


def fetch_status(
    address: str,
    node_id: str | None = None,
    *,
    token: str | None = None,
    tls_ca_file: str | None = None,
    tls_fingerprint: str | None = None,
    allow_insecure: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[NodeStatus]:
    """The gateway's connected nodes, or just ``node_id``, over a short-lived channel.

    The token and TLS settings resolve as a client's do (``resolve_peer``):
    arguments, then ``EASYREMOTE_TOKEN`` / ``EASYREMOTE_TLS_CA`` /
    ``EASYREMOTE_TLS_FINGERPRINT``, then, for a loopback address, the local
    token file and the local gateway's record. A token is never sent in clear
    text to another machine unless ``allow_insecure``. The gateway accepts a
    client token, and a node token for these two read-only calls.

    Args:
        address: ``host:port`` of the gateway.
        node_id: Only this node (NOT_FOUND when it is not connected).
        token: The token to present (default: resolved as above).
        tls_ca_file: PEM CA bundle to verify the gateway with.
        tls_fingerprint: SHA-256 fingerprint of the gateway's certificate.
        allow_insecure: Send the token without TLS to a non-loopback gateway.
        timeout: Seconds for the certificate check and for each call.

    Returns:
        The nodes' status, in the gateway's order.

    Raises:
        StatusUnreachableError: No answer, or the TLS handshake failed.
        StatusRefusedError: Credentials refused, missing, or unsafe to send.
        StatusNodeNotFoundError: ``node_id`` is not connected.
        StatusError: Anything else the gateway answered with.
    """
    settings = PeerSettings(ROLE_CLIENT, token, tls_ca_file, tls_fingerprint, allow_insecure)
    try:
        peer = resolve_peer(settings, address)
    except CredentialsError as exc:
        raise StatusRefusedError(
            refusal_message(address, exc, min(PROBE_TIMEOUT_S, timeout))
        ) from exc
    metadata = auth_metadata(peer.token)
    channel = _open_channel(address, peer.tls, timeout)
    try:
        stub = client_pb2_grpc.ClientServiceStub(channel)
        if node_id:
            reply = stub.GetNodeStatus(
                client_pb2.GetNodeStatusRequest(node_id=node_id),
                metadata=metadata,
                timeout=timeout,
            )
            return [NodeStatus.from_proto(reply)]
        listed = stub.ListNodes(client_pb2.ListNodesRequest(), metadata=metadata, timeout=timeout)
        return [NodeStatus.from_proto(node) for node in listed.nodes]
    except grpc.RpcError as exc:
        error = _rpc_error(address, node_id, exc)
        if isinstance(error, StatusUnreachableError):
            # A plaintext peer at a TLS port (or the reverse) only sees the
            # connection fail; a look at what the port speaks names the cause.
            mismatch = tls_mismatch(address, peer.tls, min(PROBE_TIMEOUT_S, timeout))
            if mismatch:
                error = StatusRefusedError(mismatch)
        raise error from exc
    finally:
        channel.close()


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "StatusError",
    "StatusNodeNotFoundError",
    "StatusRefusedError",
    "StatusUnreachableError",
    "fetch_status",
]
