"""Typed views of the gateway's node status, built from its replies.

Every role's command line shows the gateway's status, and the gateway's
package cannot import the client's, so the views live in the shared
distribution: ``easyremote.client`` re-exports these same classes,
``easyremote.proto.status_fetch`` asks the gateway for them and
``easyremote.proto.status_table`` renders them. Nothing here opens a channel
or depends on click.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from easyremote.proto.names import node_state_name
from easyremote.proto.v1 import client_pb2, common_pb2


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


__all__ = ["FunctionStatus", "GpuStatus", "NodeStatus", "ResourceStatus"]
