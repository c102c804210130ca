"""Builds the status messages clients see from the gateway's live records."""

from __future__ import annotations

from easyremote.proto.v1 import client_pb2
from easyremote.server._registry import NodeRecord
from easyremote.server._router import Router


def node_status(node: NodeRecord, router: Router) -> client_pb2.NodeStatus:
    """A snapshot of ``node``: resources, slots, counters, latency, cost."""
    status = client_pb2.NodeStatus(
        node_id=node.node_id,
        state=node.state,  # type: ignore[arg-type]
        max_concurrency=node.max_concurrency,
        in_flight=node.in_flight,
        completed=node.completed,
        failed=node.failed,
        latency_ms=node.latency_ms,
        cost_per_hour=node.cost_per_hour,
        tags=sorted(node.tags),
        connected_at=node.connected_at,
        last_heartbeat=node.last_heartbeat_wall,
        hostname=node.hostname,
        peer=node.peer,
    )
    status.resources.CopyFrom(node.resources)
    status.versions.CopyFrom(node.versions)
    for name in sorted(node.functions):
        stats = node.functions[name]
        function = status.functions.add(
            in_flight=stats.in_flight,
            completed=stats.completed,
            failed=stats.failed,
            latency_ms=stats.latency_ms,
            queued=router.queued(name),
        )
        function.spec.CopyFrom(stats.spec)
    return status
