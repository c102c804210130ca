"""Cluster status: typed node views, one fetch over a plain channel, the table.

Every role's command line shows the gateway's status (``easyremote-server
status``, ``easyremote-node status``, ``easyremote-client status``,
``easyremote status``), and the gateway's package cannot import the client's,
so what they share lives here: the status dataclasses (re-exported unchanged
by ``easyremote.client``), ``fetch_status`` (two unary RPCs of
``ClientService``, authenticated and secured the way clients are) and the
plain-text rendering. Nothing here depends on click; each command line wraps
``StatusError`` into its own one-line error.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from easyremote.proto.credentials import ENV_TOKEN, ROLE_CLIENT, CredentialsError, auth_metadata
from easyremote.proto.names import node_state_name
from easyremote.proto.peer import PeerSettings, resolve_peer
from easyremote.proto.tls import PROBE_TIMEOUT_S, TlsSettings, channel_credentials, tls_mismatch
from easyremote.proto.transport import channel_options
from easyremote.proto.v1 import client_pb2, client_pb2_grpc, common_pb2

ENV_GATEWAY = "EASYREMOTE_GATEWAY"
DEFAULT_GATEWAY = "localhost:8080"
# Status is interactive: fail fast rather than wait for an absent gateway.
DEFAULT_TIMEOUT_S = 3.0
OUTPUT_FORMATS = ("table", "json")
_GIB = 1 << 30


# ------------------------------------------------------------ typed views


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


class _AsDict:
    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON-serialisable) of this object."""
        result = _plain(self)
        assert isinstance(result, dict)
        return result


@dataclass(frozen=True)
class GpuStatus(_AsDict):
    """One GPU of a node, as last reported."""

    index: int
    name: str
    uuid: str
    memory_total_bytes: int
    memory_used_bytes: int
    memory_free_bytes: int
    utilization_percent: float
    temperature_c: float

    @classmethod
    def from_proto(cls, gpu: common_pb2.GpuInfo) -> GpuStatus:
        return cls(
            index=gpu.index,
            name=gpu.name,
            uuid=gpu.uuid,
            memory_total_bytes=gpu.memory_total_bytes,
            memory_used_bytes=gpu.memory_used_bytes,
            memory_free_bytes=gpu.memory_free_bytes,
            utilization_percent=round(gpu.utilization_percent, 2),
            temperature_c=round(gpu.temperature_c, 2),
        )


@dataclass(frozen=True)
class ResourceStatus(_AsDict):
    """A node's CPU, memory and GPUs, as last reported."""

    cpu_count: int
    cpu_percent: float
    memory_total_bytes: int
    memory_available_bytes: int
    load_average_1m: float
    gpus: tuple[GpuStatus, ...]

    @classmethod
    def from_proto(cls, resources: common_pb2.Resources) -> ResourceStatus:
        return cls(
            cpu_count=resources.cpu_count,
            cpu_percent=round(resources.cpu_percent, 2),
            memory_total_bytes=resources.memory_total_bytes,
            memory_available_bytes=resources.memory_available_bytes,
            load_average_1m=round(resources.load_average_1m, 2),
            gpus=tuple(GpuStatus.from_proto(g) for g in resources.gpus),
        )


@dataclass(frozen=True)
class FunctionStatus(_AsDict):
    """One function on one node: options and live counters."""

    name: str
    load_balancing: bool
    streaming: bool
    is_async: bool
    idempotent: bool
    max_concurrency: int
    in_flight: int
    completed: int
    failed: int
    latency_ms: float
    queued: int

    @classmethod
    def from_proto(cls, function: client_pb2.FunctionStatus) -> FunctionStatus:
        spec = function.spec
        return cls(
            name=spec.name,
            load_balancing=spec.load_balancing,
            streaming=spec.streaming,
            is_async=spec.is_async,
            idempotent=spec.idempotent,
            max_concurrency=spec.max_concurrency,
            in_flight=function.in_flight,
            completed=function.completed,
            failed=function.failed,
            latency_ms=round(function.latency_ms, 3),
            queued=function.queued,
        )


@dataclass(frozen=True)
class NodeStatus(_AsDict):
    """A connected node: health, functions, resources, slots, counters, cost."""

    node_id: str
    state: str
    functions: tuple[FunctionStatus, ...]
    resources: ResourceStatus
    max_concurrency: int
    in_flight: int
    completed: int
    failed: int
    latency_ms: float
    cost_per_hour: float
    tags: tuple[str, ...]
    python_version: str
    cloudpickle_version: str
    easyremote_version: str
    connected_at: float
    last_heartbeat: float
    hostname: str
    peer: str

    @property
    def healthy(self) -> bool:
        return self.state == "healthy"

    @property
    def function_names(self) -> list[str]:
        return [f.name for f in self.functions]

    @classmethod
    def from_proto(cls, status: client_pb2.NodeStatus) -> NodeStatus:
        return cls(
            node_id=status.node_id,
            state=node_state_name(status.state),
            functions=tuple(FunctionStatus.from_proto(f) for f in status.functions),
            resources=ResourceStatus.from_proto(status.resources),
            max_concurrency=status.max_concurrency,
            in_flight=status.in_flight,
            completed=status.completed,
            failed=status.failed,
            latency_ms=round(status.latency_ms, 3),
            cost_per_hour=status.cost_per_hour,
            tags=tuple(status.tags),
            python_version=status.versions.python,
            cloudpickle_version=status.versions.cloudpickle,
            easyremote_version=status.versions.easyremote,
            connected_at=status.connected_at,
            last_heartbeat=status.last_heartbeat,
            hostname=status.hostname,
            peer=status.peer,
        )


# ------------------------------------------------------------------ errors


class StatusError(Exception):
    """Status could not be shown; the message is one line meant for people."""


class StatusUnreachableError(StatusError):
    """The gateway did not answer (down, wrong address, TLS mismatch, timeout)."""


class StatusRefusedError(StatusError):
    """Credentials were refused, missing, or withheld (a token never sent in clear)."""


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


# ---------------------------------------------------------------- fetching


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
        raise StatusRefusedError(str(exc)) from exc
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
                error = StatusUnreachableError(f"cannot reach the gateway at {address}: {mismatch}")
        raise error from exc
    finally:
        channel.close()


# --------------------------------------------------------------- rendering

NODE_COLUMNS = (
    "NODE",
    "STATE",
    "FUNCTIONS",
    "IN-FLIGHT/SLOTS",
    "COMPLETED",
    "FAILED",
    "LATENCY MS",
    "COST/H",
    "CPU%",
    "MEM AVAIL GIB",
    "GPUS",
)
FUNCTION_COLUMNS = ("FUNCTION", "KIND", "IN-FLIGHT", "QUEUED", "COMPLETED", "FAILED", "LATENCY MS")
# Text columns are left-aligned, counts and measures right-aligned.
_LEFT_ALIGNED = {"NODE", "STATE", "FUNCTIONS", "GPUS", "FUNCTION", "KIND"}


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain, space-aligned text table.

    Args:
        header: Column titles.
        rows: Cells, one sequence per row, as many as ``header``.

    Returns:
        The table, lines joined by newlines, with no trailing spaces.
    """
    widths = [len(title) for title in header]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.ljust(width) if title in _LEFT_ALIGNED else cell.rjust(width)
            for title, cell, width in zip(header, cells, widths, strict=True)
        )
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), *(line(row) for row in rows)])


def _gpus(resources: ResourceStatus) -> str:
    if not resources.gpus:
        return "-"
    counts = Counter(gpu.name or "GPU" for gpu in resources.gpus)
    return ", ".join(f"{count}x {name}" for name, count in counts.items())


def node_row(node: NodeStatus) -> list[str]:
    """The cells of one node in the status table.

    Args:
        node: A node's status.

    Returns:
        One cell per ``NODE_COLUMNS`` entry.
    """
    resources = node.resources
    reported = resources.memory_total_bytes > 0
    return [
        node.node_id,
        node.state,
        ",".join(node.function_names) or "-",
        f"{node.in_flight}/{node.max_concurrency}",
        str(node.completed),
        str(node.failed),
        f"{node.latency_ms:.1f}",
        f"{node.cost_per_hour:.2f}",
        f"{resources.cpu_percent:.1f}" if reported else "-",
        f"{resources.memory_available_bytes / _GIB:.1f}" if reported else "-",
        _gpus(resources),
    ]


def function_row(function: FunctionStatus) -> list[str]:
    """The cells of one function in a node's function table.

    Args:
        function: A function's status.

    Returns:
        One cell per ``FUNCTION_COLUMNS`` entry.
    """
    kind = ("stream" if function.streaming else "call") + (" async" if function.is_async else "")
    return [
        function.name,
        kind,
        str(function.in_flight),
        str(function.queued),
        str(function.completed),
        str(function.failed),
        f"{function.latency_ms:.1f}",
    ]


def render_status(
    address: str,
    nodes: Sequence[NodeStatus],
    *,
    one_node: bool = False,
    output_format: str = "table",
) -> str:
    """What a status command prints.

    Args:
        address: The gateway asked.
        nodes: What ``fetch_status`` returned.
        one_node: The nodes are the one node asked for: add its function table
            and details.
        output_format: ``"table"`` for people, ``"json"`` for programs (a list
            of ``NodeStatus.to_dict()``).

    Returns:
        The text, without a final newline.
    """
    if output_format == "json":
        return json.dumps([node.to_dict() for node in nodes], indent=2)
    if not nodes:
        return "\n".join(
            [
                f"No nodes connected to {address}.",
                "Start one on a machine with easyremote-node installed:",
                f"  easyremote-node {address} mymodule:node",
            ]
        )
    lines = [format_table(NODE_COLUMNS, [node_row(node) for node in nodes]), ""]
    if one_node:
        node = nodes[0]
        lines += [
            format_table(FUNCTION_COLUMNS, [function_row(f) for f in node.functions]),
            "",
            f"host {node.hostname or '-'}  peer {node.peer or '-'}  "
            f"tags {','.join(node.tags) or '-'}  python {node.python_version or '-'}  "
            f"easyremote {node.easyremote_version or '-'}",
        ]
    else:
        healthy = sum(node.healthy for node in nodes)
        lines.append(f"{len(nodes)} node(s) on {address}, {healthy} healthy.")
    return "\n".join(lines)


__all__ = [
    "DEFAULT_GATEWAY",
    "DEFAULT_TIMEOUT_S",
    "ENV_GATEWAY",
    "FUNCTION_COLUMNS",
    "FunctionStatus",
    "GpuStatus",
    "NODE_COLUMNS",
    "NodeStatus",
    "OUTPUT_FORMATS",
    "ResourceStatus",
    "StatusError",
    "StatusNodeNotFoundError",
    "StatusRefusedError",
    "StatusUnreachableError",
    "fetch_status",
    "format_table",
    "function_row",
    "node_row",
    "render_status",
]
