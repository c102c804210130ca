"""Load balancing end to end: strategies on live nodes, requirements, slots, queue."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from _procs import wait_until

from easyremote import Client, ComputeNode, NoAvailableNodesError, QueueFullError, Server
from easyremote.node import GpuSnapshot, ResourceSnapshot, StaticProbe


@pytest.fixture()
def short_queue_gateway() -> Iterator[Server]:
    server = Server(port=0, max_queue=2).start_background()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def nodes() -> Iterator[list[ComputeNode]]:
    started: list[ComputeNode] = []
    try:
        yield started
    finally:
        for node in started:
            node.stop()


def _cpu_only(cores: int = 4) -> StaticProbe:
    return StaticProbe(
        ResourceSnapshot(
            cpu_count=cores, memory_total_bytes=8 << 30, memory_available_bytes=6 << 30
        )
    )


def _serve(
    nodes: list[ComputeNode],
    address: str,
    node_id: str,
    work: Callable[[], object] | None = None,
    **settings: object,
) -> ComputeNode:
    settings.setdefault("probe", _cpu_only())
    node = ComputeNode(address, node_id, **settings)  # type: ignore[arg-type]

    def whoami() -> str:
        if work is not None:
            work()
        return node_id

    node.register(name="whoami")(whoami)
    node.serve(blocking=False)
    nodes.append(node)
    return node


def test_costly_node_is_skipped_under_a_cost_limit(
    gateway: Server, nodes: list[ComputeNode]
) -> None:
    _serve(nodes, gateway.address, "cheap", cost_per_hour=2.0)
    _serve(nodes, gateway.address, "dear", cost_per_hour=8.0)
    with Client(gateway.address) as client:
        for strategy in ("round_robin", "smart_adaptive", "cost_aware"):
            served = {
                client.call_with_config("whoami", {"strategy": strategy, "cost_limit": 5.0})
                for _ in range(4)
            }
            assert served == {"cheap"}, strategy
        # Without the limit both take calls: the limit did the skipping.
        served = {client.call_with_config("whoami", {"strategy": "round_robin"}) for _ in range(4)}
        assert served == {"cheap", "dear"}
        with pytest.raises(NoAvailableNodesError, match=r"dear: cost 8/h > limit 1"):
            client.call_with_config("whoami", {"cost_limit": 1.0})


def test_gpu_required_without_a_gpu_node_is_refused_at_once_with_reasons(
    gateway: Server, nodes: list[ComputeNode]
) -> None:
    _serve(nodes, gateway.address, "gpu-node-1")
    _serve(nodes, gateway.address, "gpu-node-2", cost_per_hour=8.0)
    with Client(gateway.address) as client:
        client.call("whoami")  # connected and warm: what follows times the refusal only
        started = time.monotonic()
        with pytest.raises(NoAvailableNodesError) as caught:
            client.call_with_config(
                "whoami",
                {"requirements": {"gpu_required": True}, "cost_limit": 5.0, "timeout": 30},
            )
        elapsed = time.monotonic() - started
    message = str(caught.value)
    assert "gpu-node-1: no GPU" in message
    assert "gpu-node-2: no GPU" in message
    # Refused, not queued until the 30 s deadline.
    assert elapsed < 1.0, elapsed


def test_gpu_required_goes_to_the_gpu_node_and_status_shows_the_gpu(
    gateway: Server, nodes: list[ComputeNode]
) -> None:
    gpu = GpuSnapshot(
        index=0,
        name="Test GPU 24GB",
        uuid="GPU-test-0",
        memory_total_bytes=24 << 30,
        memory_used_bytes=4 << 30,
        memory_free_bytes=20 << 30,
        utilization_percent=10.0,
        temperature_c=40.0,
    )
    probe = StaticProbe(
        ResourceSnapshot(
            cpu_count=16, memory_total_bytes=64 << 30, memory_available_bytes=60 << 30, gpus=(gpu,)
        )
    )
    _serve(nodes, gateway.address, "cpu-node")
    _serve(nodes, gateway.address, "gpu-node", probe=probe, tags=["cuda"])
    with Client(gateway.address) as client:
        for config in (
            {"requirements": {"gpu_required": True}},
            {"requirements": {"min_gpu_memory_gb": 16}},
            {"requirements": {"tags": ["cuda"]}},
            {"requirements": {"min_cpu_cores": 8}},
            {"requirements": {"min_memory_gb": 32}},
        ):
            served = {client.call_with_config("whoami", config) for _ in range(4)}
            assert served == {"gpu-node"}, config
        with pytest.raises(NoAvailableNodesError) as caught:
            client.call_with_config("whoami", {"requirements": {"min_gpu_memory_gb": 32}})
        assert "gpu-node: free GPU memory 20.0 GiB < 32 GiB" in str(caught.value)
        assert "cpu-node: no GPU" in str(caught.value)
        status = client.get_node_status("gpu-node")
    (reported,) = status.resources.gpus
    assert (reported.name, reported.uuid) == ("Test GPU 24GB", "GPU-test-0")
    assert reported.memory_free_bytes == 20 << 30
    assert status.resources.cpu_count == 16
    assert status.tags == ("cuda",)
    assert status.to_dict()["resources"]["gpus"][0]["memory_total_bytes"] == 24 << 30


@pytest.mark.parametrize("limit", ["node", "function"])
def test_one_slot_never_runs_two_calls_at_once(
    gateway: Server, nodes: list[ComputeNode], limit: str
) -> None:
    lock = threading.Lock()
    running = 0
    peak = 0

    node = ComputeNode(
        gateway.address,
        "single",
        max_concurrency=1 if limit == "node" else 8,
        probe=_cpu_only(),
    )

    @node.register(max_concurrency=1 if limit == "function" else None)
    def guarded(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            # Long enough that overlapping calls would be caught overlapping.
            time.sleep(0.01)
            return i
        finally:
            with lock:
                running -= 1

    node.serve(blocking=False)
    nodes.append(node)
    with Client(gateway.address) as client, ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: client.call("guarded", i), range(40)))
    assert results == list(range(40))
    assert peak == 1


def test_full_queue_is_refused_at_once_with_queue_full(
    short_queue_gateway: Server, nodes: list[ComputeNode]
) -> None:
    gateway = short_queue_gateway
    release = threading.Event()
    _serve(nodes, gateway.address, "busy", work=lambda: release.wait(10), max_concurrency=1)
    with Client(gateway.address) as client, ThreadPoolExecutor(3) as pool:
        try:
            running = pool.submit(client.call, "whoami")
            wait_until(lambda: client.get_node_status("busy").in_flight == 1, 10, "slot taken")
            waiting = [pool.submit(client.call, "whoami") for _ in range(2)]

            def queued() -> int:
                status = client.get_node_status("busy")
                return next(f.queued for f in status.functions if f.name == "whoami")

            wait_until(lambda: queued() == 2, 10, "two calls queued")
            with pytest.raises(QueueFullError, match="max_queue=2"):
                client.call("whoami")
        finally:
            release.set()
        # Nothing that was admitted is lost.
        assert running.result(10) == "busy"
        assert [f.result(10) for f in waiting] == ["busy", "busy"]


def _split(client: Client, strategy: str, calls: int) -> Counter[str]:
    return Counter(client.call_with_config("whoami", {"strategy": strategy}) for _ in range(calls))


def test_latency_based_favours_the_fast_node_and_round_robin_splits(
    gateway: Server, nodes: list[ComputeNode]
) -> None:
    _serve(nodes, gateway.address, "fast", work=lambda: time.sleep(0.05))
    _serve(nodes, gateway.address, "slow", work=lambda: time.sleep(0.15))
    with Client(gateway.address) as client:
        by_latency = _split(client, "latency_based", 40)
        by_turns = _split(client, "round_robin", 40)
    assert by_latency["fast"] >= 32, by_latency
    assert 15 <= by_turns["fast"] <= 25, by_turns


def test_wait_for_node_holds_a_call_until_a_node_serves_it(
    gateway: Server, nodes: list[ComputeNode]
) -> None:
    with Client(gateway.address) as client, ThreadPoolExecutor(2) as pool:
        waiting = pool.submit(client.call_with_config, "whoami", {"wait_for_node": 20})
        pinned = pool.submit(
            client.call_with_config, "whoami", {"wait_for_node": 20, "node_id": "late"}
        )
        wait_until(
            lambda: gateway.router.queued("whoami") == 2, 10, "both calls waiting for a node"
        )
        _serve(nodes, gateway.address, "late")
        assert waiting.result(timeout=10) == "late"
        assert pinned.result(timeout=10) == "late"
        # Without a wait, a call for a name nobody serves is refused at once.
        with pytest.raises(NoAvailableNodesError, match="no connected node serves 'nobody'"):
            client.call("nobody")
        started = time.monotonic()
        with pytest.raises(NoAvailableNodesError, match="no connected node serves 'nobody'"):
            client.call_with_config("nobody", {"wait_for_node": 0.3})
        assert time.monotonic() - started >= 0.3
        assert gateway.router.queued("nobody") == 0
