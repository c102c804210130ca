"""What the gateway knows about connected nodes, and their live bookkeeping."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from easyremote.proto.v1 import client_pb2, common_pb2, node_pb2

if TYPE_CHECKING:
    from easyremote.server._calls import Call
    from easyremote.server._node_link import NodeLink

# Weight of the newest sample in latency moving averages: recent enough to
# follow a node that slows down, smooth enough to ignore one outlier.
_EWMA_ALPHA = 0.3


def ewma(previous: float, sample: float) -> float:
    """Exponentially weighted moving average; 0 means no sample yet."""
    if previous <= 0.0:
        return sample
    return previous + _EWMA_ALPHA * (sample - previous)


@dataclass
class FunctionStats:
    """Counters of one function on one node."""

    spec: common_pb2.FunctionSpec
    in_flight: int = 0
    completed: int = 0
    failed: int = 0
    latency_ms: float = 0.0
    # Successful calls timed so far. The first one pays for warm-up (thread
    # start, imports, caches) and is not averaged in: one slow first call must
    # not make a node look slow, or identical nodes would stop alternating.
    samples: int = 0
    # Dispatch sequence number of the last call sent here; lower = used less
    # recently. Ties between equally good nodes go to the least recent.
    last_dispatch: int = 0

    def record_latency(self, elapsed_ms: float) -> None:
        if self.samples:
            self.latency_ms = ewma(self.latency_ms, elapsed_ms)
        self.samples += 1

    @property
    def measured(self) -> bool:
        """True once a latency beyond the warm-up call is known."""
        return self.samples > 1

    def __post_init__(self) -> None:
        # Plain attributes: routing reads them for every node on every call.
        self.slot_limit = self.spec.max_concurrency
        self.load_balancing = self.spec.load_balancing


@dataclass
class NodeRecord:
    """A connected node as the gateway sees it."""

    node_id: str
    link: NodeLink
    max_concurrency: int
    cost_per_hour: float
    tags: frozenset[str]
    versions: common_pb2.Versions
    resources: common_pb2.Resources
    hostname: str
    peer: str
    functions: dict[str, FunctionStats]
    state: int = client_pb2.NODE_STATE_HEALTHY
    in_flight: int = 0
    completed: int = 0
    failed: int = 0
    latency_ms: float = 0.0
    connected_at: float = field(default_factory=time.time)
    last_heartbeat: float = field(default_factory=time.monotonic)
    last_heartbeat_wall: float = field(default_factory=time.time)
    # Calls running there, by dispatch id.
    calls: dict[int, Call] = field(default_factory=dict)

    @classmethod
    def from_hello(cls, hello: node_pb2.NodeHello, link: NodeLink, peer: str) -> NodeRecord:
        functions = {spec.name: FunctionStats(spec=spec) for spec in hello.functions}
        return cls(
            node_id=hello.node_id,
            link=link,
            max_concurrency=max(1, hello.max_concurrency),
            cost_per_hour=hello.cost_per_hour,
            tags=frozenset(hello.tags),
            versions=hello.versions,
            resources=hello.resources,
            hostname=hello.hostname,
            peer=peer,
            functions=functions,
        )

    @property
    def accepting(self) -> bool:
        """True while new calls may be sent here."""
        return self.state == client_pb2.NODE_STATE_HEALTHY

    def has_free_slot(self, stats: FunctionStats) -> bool:
        """True when one more call of that function may start here now."""
        if self.in_flight >= self.max_concurrency:
            return False
        return not stats.slot_limit or stats.in_flight < stats.slot_limit

    def on_heartbeat(self, heartbeat: node_pb2.Heartbeat) -> None:
        if heartbeat.HasField("resources"):
            self.resources = heartbeat.resources
        self.last_heartbeat = time.monotonic()
        self.last_heartbeat_wall = time.time()
        if self.state == client_pb2.NODE_STATE_SUSPECT:
            self.state = client_pb2.NODE_STATE_HEALTHY


class Registry:
    """Connected nodes, indexed by id and by the functions they serve."""

    def __init__(self) -> None:
        self._nodes: dict[str, NodeRecord] = {}
        self._by_function: dict[str, dict[str, NodeRecord]] = {}

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def get(self, node_id: str) -> NodeRecord | None:
        return self._nodes.get(node_id)

    def nodes(self) -> Iterable[NodeRecord]:
        return self._nodes.values()

    def function_names(self) -> Iterable[str]:
        """Every function name some connected node registered."""
        return self._by_function.keys()

    def serving(self, function: str) -> Iterable[NodeRecord]:
        """Nodes that registered ``function``, whatever their state."""
        return self._by_function.get(function, {}).values()

    def add(self, record: NodeRecord) -> None:
        self._nodes[record.node_id] = record
        for name in record.functions:
            self._by_function.setdefault(name, {})[record.node_id] = record

    def remove(self, record: NodeRecord) -> bool:
        """Removes ``record`` if it is still the registered one for its id."""
        if self._nodes.get(record.node_id) is not record:
            return False
        del self._nodes[record.node_id]
        for name in record.functions:
            serving = self._by_function.get(name)
            if serving is not None:
                serving.pop(record.node_id, None)
                if not serving:
                    del self._by_function[name]
        return True
