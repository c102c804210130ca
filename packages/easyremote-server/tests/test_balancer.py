"""Eligibility and the strategies' choices on declared resources."""

from __future__ import annotations

from easyremote.proto.v1 import client_pb2, common_pb2, node_pb2
from easyremote.server._balancer import choose, exclusion_reason
from easyremote.server._registry import NodeRecord

GIB = 1 << 30


class _Link:
    def send(self, frame: object, size: int = 0, *, now: bool = False) -> None:
        pass


def node(
    node_id: str,
    *,
    cost: float = 0.0,
    gpus: int = 0,
    slots: int = 4,
    tags: tuple[str, ...] = (),
    lb: bool = True,
) -> NodeRecord:
    hello = node_pb2.NodeHello(
        node_id=node_id, max_concurrency=slots, cost_per_hour=cost, tags=list(tags)
    )
    hello.functions.add(name="f", load_balancing=lb, idempotent=True)
    hello.resources.cpu_count = 8
    hello.resources.memory_available_bytes = 16 * GIB
    for index in range(gpus):
        hello.resources.gpus.add(
            index=index, memory_total_bytes=24 * GIB, memory_free_bytes=20 * GIB
        )
    return NodeRecord.from_hello(hello, _Link(), "test")  # type: ignore[arg-type]


def measure(record: NodeRecord, latency_ms: float) -> None:
    stats = record.functions["f"]
    stats.latency_ms, stats.samples = latency_ms, 5


def options(**kwargs: object) -> client_pb2.CallOptions:
    return client_pb2.CallOptions(function="f", **kwargs)  # type: ignore[arg-type]


def test_exclusion_reasons_name_the_cause() -> None:
    cpu, dear = node("cpu"), node("dear", cost=8.0, gpus=1)
    req = common_pb2.Requirements(gpu_required=True)
    assert exclusion_reason(cpu, "f", options(requirements=req), pinned=False) == "no GPU"
    limited = options(cost_limit=5.0)
    assert exclusion_reason(dear, "f", limited, pinned=False) == "cost 8/h > limit 5"
    assert exclusion_reason(dear, "g", options(), pinned=False) == "does not serve 'g'"
    big = options(requirements=common_pb2.Requirements(min_gpu_memory_gb=40))
    assert exclusion_reason(dear, "f", big, pinned=False) == "free GPU memory 20.0 GiB < 40 GiB"
    tagged = options(requirements=common_pb2.Requirements(tags=["a100"]))
    assert exclusion_reason(cpu, "f", tagged, pinned=False) == "missing tags a100"
    assert exclusion_reason(cpu, "f", options(), pinned=False) is None


def test_load_balancing_false_needs_a_pinned_call() -> None:
    hidden = node("hidden", lb=False)
    assert "call_node" in (exclusion_reason(hidden, "f", options(), pinned=False) or "")
    assert exclusion_reason(hidden, "f", options(node_id="hidden"), pinned=True) is None


def _pick(nodes: list[NodeRecord], strategy: int) -> NodeRecord:
    choice = choose([(n, n.functions["f"]) for n in nodes], strategy)
    assert choice is not None
    picked, stats = choice
    stats.last_dispatch = max(s.functions["f"].last_dispatch for s in nodes) + 1
    return picked


def test_identical_nodes_alternate_under_every_strategy() -> None:
    for strategy in common_pb2.Strategy.values():
        nodes = [node("a"), node("b")]
        order = [_pick(nodes, strategy).node_id for _ in range(6)]
        assert order == ["a", "b", "a", "b", "a", "b"], (strategy, order)


def test_cost_aware_prefers_the_cheapest() -> None:
    nodes = [node("dear", cost=3.0), node("cheap", cost=1.0)]
    assert {_pick(nodes, common_pb2.STRATEGY_COST_AWARE).node_id for _ in range(4)} == {"cheap"}


def test_latency_based_prefers_the_measured_fastest_and_tries_unmeasured() -> None:
    fast, slow, new = node("fast"), node("slow"), node("new")
    measure(fast, 50.0)
    measure(slow, 150.0)
    assert _pick([fast, slow, new], common_pb2.STRATEGY_LATENCY_BASED).node_id == "new"
    assert {_pick([fast, slow], common_pb2.STRATEGY_LATENCY_BASED).node_id for _ in range(4)} == {
        "fast"
    }
    assert {_pick([fast, slow], common_pb2.STRATEGY_SMART_ADAPTIVE).node_id for _ in range(4)} == {
        "fast"
    }


def test_resource_aware_prefers_headroom() -> None:
    busy, idle = node("busy"), node("idle")
    busy.in_flight = 3
    busy.resources.cpu_percent = 90.0
    assert _pick([busy, idle], common_pb2.STRATEGY_RESOURCE_AWARE).node_id == "idle"


def test_round_robin_ignores_latency_and_cost() -> None:
    fast, slow = node("fast", cost=1.0), node("slow", cost=9.0)
    measure(fast, 10.0)
    measure(slow, 500.0)
    order = [_pick([fast, slow], common_pb2.STRATEGY_ROUND_ROBIN).node_id for _ in range(4)]
    assert order == ["fast", "slow", "fast", "slow"]


def test_smart_adaptive_learns_from_failures() -> None:
    flaky, steady = node("flaky"), node("steady")
    measure(flaky, 50.0)
    flaky.functions["f"].completed, flaky.functions["f"].failed = 2, 18
    measure(steady, 60.0)
    steady.functions["f"].completed = 20
    picks = {_pick([flaky, steady], common_pb2.STRATEGY_SMART_ADAPTIVE).node_id for _ in range(4)}
    assert picks == {"steady"}


def test_smart_adaptive_weighs_load_against_latency() -> None:
    loaded, idle = node("loaded", slots=8), node("idle", slots=8)
    measure(loaded, 50.0)
    measure(idle, 50.0)
    loaded.in_flight = 7  # one slot left: the same latency counts for less there
    assert _pick([loaded, idle], common_pb2.STRATEGY_SMART_ADAPTIVE).node_id == "idle"
    # latency_based looks at latency only.
    measure(loaded, 20.0)
    assert _pick([loaded, idle], common_pb2.STRATEGY_LATENCY_BASED).node_id == "loaded"


def test_no_candidate_means_no_choice() -> None:
    assert choose([], common_pb2.STRATEGY_SMART_ADAPTIVE) is None


def test_an_unmeasured_node_gets_one_probe_not_a_burst() -> None:
    for strategy in (common_pb2.STRATEGY_LATENCY_BASED, common_pb2.STRATEGY_SMART_ADAPTIVE):
        known, new = node("known", slots=8), node("new", slots=8)
        measure(known, 50.0)
        assert _pick([known, new], strategy).node_id == "new"  # untried: try it
        new.functions["f"].in_flight = 1  # its first call is still running
        assert {_pick([known, new], strategy).node_id for _ in range(4)} == {"known"}
        # Its first answer is a warm-up: it does not count, the node is tried
        # once more; from the second answer on its latency decides.
        new.functions["f"].in_flight = 0
        new.functions["f"].record_latency(400.0)
        assert _pick([known, new], strategy).node_id == "new"
        new.functions["f"].record_latency(20.0)
        assert new.functions["f"].latency_ms == 20.0
        assert _pick([known, new], strategy).node_id == "new"
        new.functions["f"].record_latency(500.0)  # it slowed down: averaged in
        assert _pick([known, new], strategy).node_id == "known"


def test_nodes_all_probing_still_alternate() -> None:
    a, b = node("a"), node("b")
    a.functions["f"].in_flight = b.functions["f"].in_flight = 1
    order = [_pick([a, b], common_pb2.STRATEGY_LATENCY_BASED).node_id for _ in range(4)]
    assert order == ["a", "b", "a", "b"]


def test_a_node_that_only_failed_does_not_attract_calls() -> None:
    for strategy in (common_pb2.STRATEGY_LATENCY_BASED, common_pb2.STRATEGY_SMART_ADAPTIVE):
        broken, working = node("broken"), node("working")
        broken.functions["f"].failed = 3  # never answered successfully
        measure(working, 50.0)
        assert {_pick([broken, working], strategy).node_id for _ in range(4)} == {"working"}
