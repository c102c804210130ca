"""Failure semantics proven on real processes: signals, kills and gateway restarts.

Every test owns its processes (a gateway and nodes started for it) because it
breaks them. The gateway runs with a 0.5 s heartbeat interval and a 5 s node
timeout so liveness rules play out in seconds; the rules scale with those
settings (suspect after 3 intervals, dropped after ``node_timeout``).
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from _procs import APPS, Cluster, Proc, wait_until

from easyremote import (
    AsyncClient,
    CallTimeoutError,
    Client,
    EasyRemoteError,
    GatewayUnavailableError,
    NodeLostError,
    RemoteExecutionError,
    StreamInterruptedError,
    remote,
)

HEARTBEAT_S = 0.5
NODE_TIMEOUT_S = 5.0


@pytest.fixture()
def cluster() -> Iterator[Cluster]:
    with Cluster() as running:
        running.start_gateway(
            "--heartbeat", str(HEARTBEAT_S), "--node-timeout", str(NODE_TIMEOUT_S)
        )
        yield running


def _two_nodes(cluster: Cluster, slots: str = "2") -> dict[str, Proc]:
    nodes = {name: cluster.start_node(name, slots) for name in ("node-a", "node-b")}
    cluster.wait_for_nodes(nodes)
    return nodes


def _started_on(marker: Path, timeout: float = 10.0) -> str:
    wait_until(marker.exists, timeout, f"{marker.name} to be written")
    return marker.read_text()


def _state(client: Client, node_id: str) -> str | None:
    return next((n.state for n in client.list_nodes() if n.node_id == node_id), None)


def _running_on_one(
    client: Client, pool: ThreadPoolExecutor, function: str, seconds: float, marker: Path
) -> tuple[Future[Any], str, str]:
    """Starts ``function(seconds, marker)``; (its future, the node running it, the other)."""
    future = pool.submit(client.call, function, seconds, str(marker))
    victim = _started_on(marker)
    return future, victim, "node-b" if victim == "node-a" else "node-a"


# ------------------------------------------------------------------- failover


def test_sigkill_mid_call_reruns_an_idempotent_call_on_another_node(
    cluster: Cluster, tmp_path: Path
) -> None:
    nodes = _two_nodes(cluster)
    marker = tmp_path / "started"
    with Client(cluster.address) as client, ThreadPoolExecutor(1) as pool:
        future, victim, survivor = _running_on_one(client, pool, "nap_where", 1.0, marker)
        killed_at = time.monotonic()
        nodes[victim].signal(signal.SIGKILL)
        node_id, attempt = future.result(timeout=15)
        assert (node_id, attempt) == (survivor, 2)
        # The re-run took one nap, not a timeout: the loss was noticed at once.
        assert time.monotonic() - killed_at < 5.0
        assert {n.node_id for n in client.list_nodes()} == {survivor}
        assert client.call("whoami") == survivor


def test_sigkill_mid_call_of_a_non_idempotent_function_says_outcome_unknown(
    cluster: Cluster, tmp_path: Path
) -> None:
    nodes = _two_nodes(cluster)
    marker = tmp_path / "started"
    with Client(cluster.address) as client, ThreadPoolExecutor(1) as pool:
        future, victim, _ = _running_on_one(client, pool, "nap_once", 5.0, marker)
        nodes[victim].signal(signal.SIGKILL)
        with pytest.raises(NodeLostError, match="outcome unknown") as caught:
            future.result(timeout=15)
        assert caught.value.node_id == victim
        assert caught.value.attempt == 1


def test_sigkill_after_stream_items_reports_how_many_arrived(cluster: Cluster) -> None:
    nodes = _two_nodes(cluster)
    with Client(cluster.address) as client:
        stream = client.call_stream("items_then_nap", 3, 10.0)
        received = [next(stream) for _ in range(3)]
        assert received == [0, 1, 2]
        (serving,) = [n.node_id for n in client.list_nodes() if n.in_flight]
        nodes[serving].signal(signal.SIGKILL)
        with pytest.raises(StreamInterruptedError, match="3 item") as caught:
            next(stream)
        assert caught.value.items_delivered == 3


def test_sigkill_with_calls_queued_loses_nothing(cluster: Cluster, tmp_path: Path) -> None:
    nodes = _two_nodes(cluster, slots="1")
    with Client(cluster.address) as client, ThreadPoolExecutor(3) as pool:
        markers = [tmp_path / f"started-{i}" for i in range(2)]
        running = [pool.submit(client.call, "nap_where", 1.0, str(m)) for m in markers]
        on = {_started_on(m) for m in markers}
        assert on == {"node-a", "node-b"}  # both slots taken
        queued = pool.submit(client.call, "nap_where", 1.0)
        wait_until(
            lambda: any(
                f.queued for n in client.list_nodes() for f in n.functions if f.name == "nap_where"
            ),
            10,
            "the third call to queue",
        )
        nodes["node-a"].signal(signal.SIGKILL)
        outcomes = sorted([f.result(timeout=20) for f in running] + [queued.result(timeout=20)])
    # The lost call ran again (attempt 2); the queued one waited for the survivor.
    assert outcomes == [("node-b", 1), ("node-b", 1), ("node-b", 2)]


def test_user_exceptions_are_never_retried(cluster: Cluster, tmp_path: Path) -> None:
    _two_nodes(cluster)
    counter = tmp_path / "runs"
    with Client(cluster.address) as client:
        with pytest.raises(RemoteExecutionError, match="never retried"):
            client.call("fail_counted", str(counter))
    assert len(counter.read_text().splitlines()) == 1


# ------------------------------------------------------------------ liveness


def test_sigstopped_node_is_avoided_then_dropped_and_its_call_rerun(
    cluster: Cluster, tmp_path: Path
) -> None:
    nodes = _two_nodes(cluster)
    marker = tmp_path / "started"
    with Client(cluster.address) as client, ThreadPoolExecutor(1) as pool:
        future, victim, survivor = _running_on_one(client, pool, "nap_where", 1.0, marker)
        nodes[victim].signal(signal.SIGSTOP)
        try:
            stopped_at = time.monotonic()
            wait_until(lambda: _state(client, victim) == "suspect", 10, f"{victim} suspected")
            suspected_after = time.monotonic() - stopped_at
            # Suspected: new calls all go to the survivor.
            assert {client.call("whoami") for _ in range(6)} == {survivor}
            wait_until(lambda: _state(client, victim) is None, 30, f"{victim} dropped")
            dropped_after = time.monotonic() - stopped_at
            # Its call followed the failover rule: re-run on the survivor.
            assert future.result(timeout=15) == (survivor, 2)
        finally:
            nodes[victim].signal(signal.SIGCONT)
    assert suspected_after < 10.0
    assert dropped_after < 30.0


def test_a_busy_pure_python_function_does_not_get_its_node_suspected(
    cluster: Cluster,
) -> None:
    cluster.start_node("node-a")
    cluster.wait_for_nodes(["node-a"])
    with Client(cluster.address) as client, ThreadPoolExecutor(1) as pool:
        # Eight heartbeat intervals, over twice the suspicion threshold.
        future = pool.submit(client.call, "spin", 8 * HEARTBEAT_S)
        states = _watch_states(client, "node-a", future)
        assert future.result(timeout=10) > 0
    assert states <= {"healthy"}, states


# ----------------------------------------------------------------- reconnect


def test_gateway_restart_nodes_reconnect_and_calls_resume(cluster: Cluster) -> None:
    _two_nodes(cluster)
    port = cluster.address.rsplit(":", 1)[1]
    assert cluster.gateway is not None
    with Client(cluster.address, retry_attempts=20) as client, ThreadPoolExecutor(1) as pool:
        in_flight: Future[Any] = pool.submit(client.call, "nap_where", 30.0)
        wait_until(lambda: any(n.in_flight for n in client.list_nodes()), 10, "a call in flight")
        cluster.gateway.signal(signal.SIGKILL)
        # In flight at the crash: a clear connection error, not a hang.
        with pytest.raises(GatewayUnavailableError):
            in_flight.result(timeout=10)
        cluster.gateway.popen.wait(5)
        cluster.start_gateway(
            "--port", port, "--heartbeat", str(HEARTBEAT_S), "--node-timeout", str(NODE_TIMEOUT_S)
        )
        cluster.wait_for_nodes(["node-a", "node-b"], timeout=20)
        assert client.call("whoami") in {"node-a", "node-b"}


# --------------------------------------------------------------------- drain


def test_sigterm_drains_the_node_finishes_its_call_and_exits_zero(
    cluster: Cluster, tmp_path: Path
) -> None:
    nodes = _two_nodes(cluster)
    marker = tmp_path / "started"
    with Client(cluster.address) as client, ThreadPoolExecutor(1) as pool:
        future, victim, survivor = _running_on_one(client, pool, "nap_where", 1.5, marker)
        nodes[victim].signal(signal.SIGTERM)
        wait_until(lambda: _state(client, victim) in ("draining", None), 10, f"{victim} draining")
        # No new calls go to the draining node.
        assert {client.call("whoami") for _ in range(4)} == {survivor}
        # The running call finishes where it started, on its first attempt.
        assert future.result(timeout=15) == (victim, 1)
        assert nodes[victim].popen.wait(15) == 0
        wait_until(lambda: _state(client, victim) is None, 10, f"{victim} deregistered")


def test_gateway_stop_ends_in_flight_calls_with_a_clear_error(cluster: Cluster) -> None:
    nodes = _two_nodes(cluster)
    assert cluster.gateway is not None
    with Client(cluster.address, retry_attempts=0) as client, ThreadPoolExecutor(1) as pool:
        future = pool.submit(client.call, "nap_where", 30.0)
        wait_until(lambda: any(n.in_flight for n in client.list_nodes()), 10, "call running")
        cluster.gateway.signal(signal.SIGTERM)
        with pytest.raises(EasyRemoteError, match="gateway is shutting down"):
            future.result(timeout=15)
    assert cluster.gateway.popen.wait(15) == 0
    # Nodes were told and keep trying to reconnect rather than crash.
    assert all(proc.popen.poll() is None for proc in nodes.values())


# ---------------------------------------------------------- deadlines, cancel


@pytest.mark.parametrize("source", ["client default", "call_with_config", "@remote"])
def test_deadline_reaches_the_node_and_frees_the_slot(
    cluster: Cluster, tmp_path: Path, source: str
) -> None:
    cluster.start_node("node-a", "1")
    cluster.wait_for_nodes(["node-a"])
    marker = tmp_path / "coop"

    @remote(gateway=cluster.address, timeout=0.5)
    def cooperative(seconds: float, marker: str) -> str:
        raise AssertionError("runs remotely")

    with Client(cluster.address, timeout=0.5 if source == "client default" else None) as client:
        started = time.monotonic()
        with pytest.raises(CallTimeoutError) as caught:
            if source == "client default":
                client.call("cooperative", 20.0, str(marker))
            elif source == "call_with_config":
                client.call_with_config("cooperative", {"timeout": 0.5}, 20.0, str(marker))
            else:
                cooperative(20.0, str(marker))
        assert isinstance(caught.value, TimeoutError)
        assert time.monotonic() - started < 0.5 + 0.5
        # The node saw the deadline: its function stopped early.
        assert _started_on(marker) == "cancelled"
        # And the only slot is free again.
        assert client.call("whoami") == "node-a"


def test_cancelling_an_async_call_cancels_the_coroutine_on_the_node(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start_node("node-a")
    cluster.wait_for_nodes(["node-a"])
    marker = tmp_path / "async"

    async def scenario() -> None:
        async with AsyncClient(cluster.address) as client:
            task = asyncio.ensure_future(client.call("async_wait", 20.0, str(marker)))
            deadline = time.monotonic() + 10
            while not Path(str(marker) + ".started").exists():
                assert time.monotonic() < deadline, "call never started"
                await asyncio.sleep(0.02)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(scenario())
    assert _started_on(marker) == "cancelled"


def test_closing_a_stream_iterator_cancels_the_call_for_good(cluster: Cluster) -> None:
    cluster.start_node("node-a", "1")
    cluster.wait_for_nodes(["node-a"])
    with Client(cluster.address) as client:
        stream = client.call_stream("items_then_nap", 2, 20.0)
        assert next(stream) == 0
        stream.close()
        # The node's only slot is free at once: the generator was closed.
        wait_until(lambda: client.get_node_status("node-a").in_flight == 0, 5, "slot freed")
        assert client.call("whoami") == "node-a"


def test_ctrl_c_in_a_sync_call_cancels_it_on_the_node(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_node("node-a")
    cluster.wait_for_nodes(["node-a"])
    marker = tmp_path / "coop"
    caller = Proc(
        [sys.executable, str(APPS / "interrupted_caller.py"), cluster.address, str(marker)],
        "caller",
    )
    cluster.procs.append(caller)
    wait_until(Path(str(marker) + ".started").exists, 15, "the call to start")
    caller.signal(signal.SIGINT)
    caller.expect("INTERRUPTED", timeout=10)
    assert caller.popen.wait(10) == 0
    # The node's function saw the cancellation and stopped early.
    assert _started_on(marker) == "cancelled"


# --------------------------------------------------------- process isolation


def _watch_states(client: Client, node_id: str, future: Future[Any]) -> set[str | None]:
    states = set()
    while not future.done():
        states.add(_state(client, node_id))
        time.sleep(HEARTBEAT_S / 5)
    return states


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_gil_bound_code_starves_heartbeats_only_without_process_isolation(
    cluster: Cluster, isolation: str
) -> None:
    cluster.start_node("node-a", "2", isolation)
    cluster.wait_for_nodes(["node-a"])
    with Client(cluster.address) as client, ThreadPoolExecutor(1) as pool:
        # Five heartbeat intervals with the GIL held: past the suspicion mark.
        future = pool.submit(client.call, "gil_hog", 5 * HEARTBEAT_S)
        states = _watch_states(client, "node-a", future)
        assert future.result(timeout=15) == "released"
    if isolation == "process":
        assert states <= {"healthy"}, states
    else:
        assert "suspect" in states, states  # the hazard isolation removes


def test_isolated_runaway_function_is_killed_at_its_deadline_and_replaced(
    cluster: Cluster,
) -> None:
    cluster.start_node("node-a", "1", "process")
    cluster.wait_for_nodes(["node-a"])
    with Client(cluster.address) as client:
        child = client.call("pid")
        started = time.monotonic()
        with pytest.raises(CallTimeoutError):
            client.call_with_config("spin", {"timeout": 0.5}, 3600.0)
        assert time.monotonic() - started < 1.0
        # The only slot is free again, served by a fresh child process.
        replacement = client.call("pid")
        assert replacement != child
        wait_until(lambda: not _alive(child), 5, "the runaway child to be gone")
        assert client.call("inc", 1) == (2, "node-a")
        assert list(client.call_stream("count_to", 3)) == [0, 1, 2]
        with pytest.raises(RemoteExecutionError, match="isolated boom"):
            client.call("fail", "isolated boom")


def test_cancelling_an_isolated_call_kills_its_child(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_node("node-a", "1", "process")
    cluster.wait_for_nodes(["node-a"])
    started = Path(str(tmp_path / "coop") + ".started")

    async def scenario() -> int:
        async with AsyncClient(cluster.address) as client:
            # In a child, `cancelled` never turns True: only a kill stops it.
            task = asyncio.ensure_future(client.call("cooperative", 3600.0, str(tmp_path / "coop")))
            deadline = time.monotonic() + 10
            while not started.exists():
                assert time.monotonic() < deadline, "call never started"
                await asyncio.sleep(0.02)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return int(started.read_text().split()[1])

    child = asyncio.run(scenario())
    wait_until(lambda: not _alive(child), 5, "the cancelled call's child to be gone")
    with Client(cluster.address) as client:
        assert client.call("pid") != child


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_cancelling_a_submitted_future_cancels_the_call_on_the_node(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start_node("node-a", "1")
    cluster.wait_for_nodes(["node-a"])
    marker = tmp_path / "coop"
    # A future keeps its client alive: nothing else refers to this one.
    orphan = Client(cluster.address).submit("inc", 1)
    gc.collect()
    assert orphan.result(timeout=10) == (2, "node-a")
    with Client(cluster.address) as client:
        assert client.submit("inc", 41).result(timeout=10) == (42, "node-a")
        future = client.submit("cooperative", 20.0, str(marker))
        wait_until(Path(str(marker) + ".started").exists, 10, "the call to start")
        assert future.cancel()
        assert _started_on(marker) == "cancelled"
        # Never retried: the only slot is free for the next call.
        wait_until(lambda: client.get_node_status("node-a").in_flight == 0, 5, "slot freed")
        assert client.call("whoami") == "node-a"
