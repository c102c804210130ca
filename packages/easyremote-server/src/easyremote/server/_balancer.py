"""Which node gets a call: eligibility filters, then one of five strategies.

Every strategy first keeps nodes that serve the function, are healthy, meet the
call's requirements and have a free slot. Among those each strategy ranks by
its own key; nodes whose keys are practically equal are tied, and ties go to
the node this function was sent to least recently. That tie rule is what makes
identical idle nodes alternate under every strategy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from easyremote.proto.v1 import client_pb2, common_pb2
from easyremote.server._registry import FunctionStats, NodeRecord

_GIB = float(1 << 30)


def exclusion_reason(
    node: NodeRecord,
    function: str,
    options: client_pb2.CallOptions,
    pinned: bool,
) -> str | None:
    """Why ``node`` can never take this call now, or None if it can.

    Slot availability is not checked here: a busy node is eligible, the call
    just waits for it.
    """
    stats = node.functions.get(function)
    if stats is None:
        return f"does not serve {function!r}"
    if not stats.spec.load_balancing and not pinned:
        return "registered with load_balancing=False (reach it with call_node)"
    if node.state == client_pb2.NODE_STATE_DRAINING:
        return "draining"
    if node.state == client_pb2.NODE_STATE_SUSPECT:
        return "heartbeats overdue"
    if node.state != client_pb2.NODE_STATE_HEALTHY:
        return "not accepting calls"
    req = options.requirements
    gpus = node.resources.gpus
    if (req.gpu_required or req.min_gpu_memory_gb > 0) and not gpus:
        return "no GPU"
    if req.min_gpu_memory_gb > 0:
        best = max((g.memory_free_bytes for g in gpus), default=0) / _GIB
        if best < req.min_gpu_memory_gb:
            return f"free GPU memory {best:.1f} GiB < {req.min_gpu_memory_gb:g} GiB"
    if req.min_memory_gb > 0:
        available = node.resources.memory_available_bytes / _GIB
        if available < req.min_memory_gb:
            return f"available memory {available:.1f} GiB < {req.min_memory_gb:g} GiB"
    if req.min_cpu_cores and node.resources.cpu_count < req.min_cpu_cores:
        return f"{node.resources.cpu_count} CPU cores < {req.min_cpu_cores}"
    missing = [t for t in req.tags if t not in node.tags]
    if missing:
        return f"missing tags {', '.join(sorted(missing))}"
    if req.node_ids and node.node_id not in req.node_ids:
        return "not in requirements.node_ids"
    if options.HasField("cost_limit") and node.cost_per_hour > options.cost_limit:
        return f"cost {node.cost_per_hour:g}/h > limit {options.cost_limit:g}"
    return None


def partition(
    nodes: Iterable[NodeRecord],
    function: str,
    options: client_pb2.CallOptions,
    pinned: bool,
) -> tuple[list[tuple[NodeRecord, FunctionStats]], int]:
    """Splits ``nodes`` for one call: (eligible with a free slot, eligible count).

    This runs for every call over every node serving the function, so the
    common call (no requirements, no cost limit) is checked inline; the
    reasons for excluding a node are only worked out when a call fails.
    """
    # Clients send an empty requirements message rather than none at all.
    plain = not options.HasField("cost_limit") and not options.requirements.ByteSize()
    healthy = client_pb2.NODE_STATE_HEALTHY
    free: list[tuple[NodeRecord, FunctionStats]] = []
    eligible = 0
    for node in nodes:
        stats = node.functions.get(function)
        if stats is None or node.state != healthy:
            continue
        if not (stats.load_balancing or pinned):
            continue
        if not plain and exclusion_reason(node, function, options, pinned) is not None:
            continue
        eligible += 1
        if node.has_free_slot(stats):
            free.append((node, stats))
    return free, eligible


def _headroom(node: NodeRecord, stats: FunctionStats) -> float:
    slots = 1.0 - node.in_flight / node.max_concurrency
    cpu = 1.0 - min(100.0, node.resources.cpu_percent) / 100.0
    score = slots + cpu
    gpus = node.resources.gpus
    if gpus:
        total = sum(g.memory_total_bytes for g in gpus) or 1
        score += sum(g.memory_free_bytes for g in gpus) / total
        score += 1.0 - sum(g.utilization_percent for g in gpus) / (100.0 * len(gpus))
    return -score


# Rank of a node that has no latency sample yet but is already running a
# call of the function: that call will measure it, so measured nodes go
# first; sending it more before the answer is in would bet blindly on it.
_PROBING = 1e12


def _observed_latency(stats: FunctionStats) -> float:
    """The latency to rank by: 0 (untried, so try it), the probe rank, or ms.

    A node whose calls of the function only ever failed has no latency
    either, but is not "untried": it ranks with the probing ones, after every
    node that has answered, so a broken node cannot attract the traffic.
    """
    if stats.measured:
        return stats.latency_ms
    return _PROBING if stats.in_flight or stats.failed else 0.0


def _latency(node: NodeRecord, stats: FunctionStats) -> float:
    return _observed_latency(stats)


def _cost(node: NodeRecord, stats: FunctionStats) -> float:
    return node.cost_per_hour


def _smart(node: NodeRecord, stats: FunctionStats) -> float:
    # Expected time of this call there: the measured latency, stretched by how
    # loaded the node is and by how often it failed. The latency already holds
    # the contention of the load it was measured under, so load weighs half.
    latency = _observed_latency(stats)
    if latency <= 0.0 or latency >= _PROBING:
        return latency
    load = 0.5 * node.in_flight / node.max_concurrency
    finished = stats.completed + stats.failed
    success = (stats.completed + 1) / (finished + 1)
    return latency * (1.0 + load) / success


def _round_robin(node: NodeRecord, stats: FunctionStats) -> float:
    return 0.0


# Per strategy: the ranking key (lower is better), and when two keys count as
# equal (relative, absolute). Latencies are in ms and noisy: a few ms, or
# tens of percent, between two nodes is jitter, not a faster node. The
# adaptive default is the most tolerant, so identical nodes alternate;
# latency_based follows smaller differences. Costs are exact; headroom mixes
# fractions.
_STRATEGIES: dict[int, tuple[Callable[[NodeRecord, FunctionStats], float], float, float]] = {
    common_pb2.STRATEGY_ROUND_ROBIN: (_round_robin, 0.0, 0.0),
    common_pb2.STRATEGY_RESOURCE_AWARE: (_headroom, 0.0, 0.05),
    common_pb2.STRATEGY_LATENCY_BASED: (_latency, 0.25, 2.0),
    common_pb2.STRATEGY_COST_AWARE: (_cost, 0.0, 1e-9),
    common_pb2.STRATEGY_SMART_ADAPTIVE: (_smart, 0.3, 5.0),
}


def choose(
    candidates: Sequence[tuple[NodeRecord, FunctionStats]],
    strategy: int,
) -> tuple[NodeRecord, FunctionStats] | None:
    """Picks one of ``candidates`` (eligible nodes with a free slot)."""
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0]
    key, relative, absolute = _STRATEGIES.get(
        strategy, _STRATEGIES[common_pb2.STRATEGY_SMART_ADAPTIVE]
    )
    scores = [key(node, stats) for node, stats in candidates]
    best = min(scores)
    limit = best + max(absolute, abs(best) * relative)
    # Among the tied, the least recently used; never-used ones by id.
    chosen = candidates[0]
    chosen_at, chosen_id = -1, ""
    for score, pair in zip(scores, candidates, strict=True):
        if score > limit:
            continue
        used_at = pair[1].last_dispatch
        if (
            chosen_at < 0
            or used_at < chosen_at
            or (used_at == chosen_at and pair[0].node_id < chosen_id)
        ):
            chosen, chosen_at, chosen_id = pair, used_at, pair[0].node_id
    return chosen
