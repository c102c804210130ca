"""Load-balancing benchmarks: makespans per strategy, and routing cost per node count.

Every role is its own process on 127.0.0.1: a gateway (``_er_gateway.py``, default
settings), node processes (``_lb_node.py``) and this process as the client.

* (a) fan-out: 3 nodes x 1 slot, 30 calls of 0.1 s submitted at once. Ideal 1.0 s.
* (b) heterogeneous, ample slots: node A takes 0.05 s per call, B 0.15 s, 8 slots
  each; 200 calls, 8 in flight. Per strategy; optimum 1.25 s (everything on A).
* (b2) heterogeneous, scarce slots: the same nodes with 1 slot each; 200 calls,
  8 in flight. Per strategy; optimum 7.5 s (both nodes busy all the time).
* (c) routing overhead: sequential ``inc`` latency through a gateway with 2 nodes,
  then 100 nodes, then 2 again (the repeat shows how much the machine drifted).

Each strategy calls its own copy of the function (``work_<strategy>``), so it
starts from unmeasured nodes, as it would on a fresh gateway.

Usage: ``python benchmarks/balancing.py [--quick] [--only a,b,b2,c] [--record | --out FILE]``
(``nox -s bench`` runs it after ``run.py``). Writes ``.bench/balancing.json`` at the
repository root (git-ignored), or the committed ``benchmarks/balancing.json`` with
``--record``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _output

HERE = Path(__file__).resolve().parent
STRATEGIES = ("round_robin", "resource_aware", "latency_based", "cost_aware", "smart_adaptive")
BENCHES = ("a", "b", "b2", "c")
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
CALL_TIMEOUT_S = 120.0


def free_port() -> int:
    """A port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Processes:
    """A gateway and node processes that this run started; only those are signalled."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._log_dir = log_dir
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(self, name: str, script: str, *args: object) -> subprocess.Popen[bytes]:
        log = self._log_dir / f"{name}-{self.port}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, str(HERE / script), *map(str, args)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self._procs.append((name, proc))
        return proc

    def gateway(self) -> None:
        self.spawn("gateway", "_er_gateway.py", self.port)

    def nodes(self, node_id: str, slots: int, delay_s: float, count: int = 1) -> None:
        self.spawn(node_id, "_lb_node.py", self.address, node_id, slots, delay_s, count)

    def terminate(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_GRACE_S)

    def stop_all(self) -> None:
        # Nodes first so they drain against a live gateway.
        for _, proc in reversed(self._procs):
            self.terminate(proc)
        self._procs.clear()


@contextlib.contextmanager
def cluster(log_dir: Path) -> Iterator[Processes]:
    procs = Processes(log_dir)
    try:
        procs.gateway()
        yield procs
    finally:
        procs.stop_all()


async def wait_for_nodes(client: Any, count: int) -> None:
    """Polls list_nodes (bounded) until ``count`` nodes are registered."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        with contextlib.suppress(Exception):  # gateway may not be listening yet
            if len(await asyncio.wait_for(client.list_nodes(), 5.0)) == count:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} nodes did not register within {READY_TIMEOUT_S} s")
        await asyncio.sleep(0.05)


async def closed_loop(client: Any, strategy: str, calls: int, in_flight: int) -> dict[str, Any]:
    """``calls`` calls with at most ``in_flight`` outstanding; makespan and who served."""
    served: Counter[str] = Counter()
    remaining = calls
    function, config = f"work_{strategy}", {"strategy": strategy}

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            served[await client.call_with_config(function, config)] += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return {"makespan_s": time.perf_counter() - start, "served": dict(sorted(served.items()))}


async def bench_a(log_dir: Path, runs: int) -> dict[str, Any]:
    from easyremote.client import AsyncClient

    with cluster(log_dir) as procs:
        for i in range(3):
            procs.nodes(f"n{i + 1}", 1, 0.1)
        async with AsyncClient(procs.address, timeout=CALL_TIMEOUT_S) as client:
            await wait_for_nodes(client, 3)
            await closed_loop(client, "round_robin", 6, 3)  # connections warm
            makespans = []
            for _ in range(runs):
                result = await closed_loop(client, "smart_adaptive", 30, 30)
                makespans.append(result["makespan_s"])
    return {
        "makespan_s": statistics.median(makespans),
        "runs_s": makespans,
        "ideal_s": 1.0,
        "target_s": 1.05,
    }


async def bench_b(log_dir: Path, slots: int, calls: int) -> dict[str, Any]:
    from easyremote.client import AsyncClient

    optimum = calls * 0.05 / 8 if slots == 8 else calls / (1 / 0.05 + 1 / 0.15)
    out: dict[str, Any] = {"optimum_s": optimum, "strategies": {}}
    with cluster(log_dir) as procs:
        procs.nodes("A", slots, 0.05)
        procs.nodes("B", slots, 0.15)
        async with AsyncClient(procs.address, timeout=CALL_TIMEOUT_S) as client:
            await wait_for_nodes(client, 2)
            for strategy in STRATEGIES:
                result = await closed_loop(client, strategy, calls, 8)
                result["vs_optimum"] = result["makespan_s"] / optimum
                out["strategies"][strategy] = result
                print(f"  {strategy:15s} {result['makespan_s']:6.2f} s  {result['served']}")
    return out


async def sequential_latency(client: Any, calls: int) -> dict[str, float]:
    samples = []
    for i in range(calls):
        start = time.perf_counter()
        await client.call("inc", i)
        samples.append(time.perf_counter() - start)
    samples.sort()
    return {
        "p50_us": samples[len(samples) // 2] * 1e6,
        "mean_us": statistics.fmean(samples) * 1e6,
    }


async def bench_c(log_dir: Path, calls: int) -> dict[str, Any]:
    from easyremote.client import AsyncClient

    with cluster(log_dir) as procs:
        procs.nodes("pair", 4, 0.0, 2)
        async with AsyncClient(procs.address, timeout=CALL_TIMEOUT_S) as client:
            await wait_for_nodes(client, 2)
            await sequential_latency(client, 200)  # warm-up
            before = await sequential_latency(client, calls)
            many = procs.spawn("many", "_lb_node.py", procs.address, "many", 4, 0.0, 98)
            await wait_for_nodes(client, 100)
            await sequential_latency(client, 200)
            hundred = await sequential_latency(client, calls)
            procs.terminate(many)
            await wait_for_nodes(client, 2)
            after = await sequential_latency(client, calls)
    two_p50 = (before["p50_us"] + after["p50_us"]) / 2
    return {
        "nodes_2_before": before,
        "nodes_100": hundred,
        "nodes_2_after": after,
        "overhead_p50_us": hundred["p50_us"] - two_p50,
        "ratio_p50": hundred["p50_us"] / two_p50,
    }


def render(results: dict[str, Any]) -> str:
    lines = []
    if "a" in results:
        a = results["a"]
        lines.append(
            f"(a)  fan-out 3x1 slot, 30 x 0.1 s: makespan {a['makespan_s']:.3f} s "
            f"(ideal 1.0, target <= 1.05; runs {', '.join(f'{r:.3f}' for r in a['runs_s'])})"
        )
    for key, title in (
        ("b", "(b)  A 0.05 s / B 0.15 s, 8 slots each"),
        ("b2", "(b2) A 0.05 s / B 0.15 s, 1 slot each"),
    ):
        if key not in results:
            continue
        b = results[key]
        lines.append(f"{title}, 200 calls, 8 in flight; optimum {b['optimum_s']:.2f} s")
        for strategy, r in b["strategies"].items():
            served = ", ".join(f"{k} {v}" for k, v in r["served"].items())
            lines.append(
                f"     {strategy:15s} {r['makespan_s']:6.2f} s  {r['vs_optimum']:.2f}x optimum"
                f"  ({served})"
            )
    if "c" in results:
        c = results["c"]
        lines.append(
            "(c)  sequential inc p50: "
            f"2 nodes {c['nodes_2_before']['p50_us']:.0f} us, "
            f"100 nodes {c['nodes_100']['p50_us']:.0f} us, "
            f"2 nodes again {c['nodes_2_after']['p50_us']:.0f} us; "
            f"100 vs 2: {c['overhead_p50_us']:+.0f} us ({c['ratio_p50']:.2f}x)"
        )
    return "\n".join(lines)


async def run(only: set[str], quick: bool, log_dir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if "a" in only:
        results["a"] = await bench_a(log_dir, 1 if quick else 3)
    if "b" in only:
        print("(b) ample slots")
        results["b"] = await bench_b(log_dir, 8, 200)
    if "b2" in only:
        print("(b2) scarce slots")
        results["b2"] = await bench_b(log_dir, 1, 80 if quick else 200)
    if "c" in only:
        results["c"] = await bench_c(log_dir, 300 if quick else 1000)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and calls")
    parser.add_argument("--only", default=",".join(BENCHES), help="comma list of a,b,b2,c")
    _output.add_arguments(parser, "balancing.json")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    unknown = only - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="easyremote-lb-") as tmp:
        try:
            results = asyncio.run(run(only, args.quick, Path(tmp)))
        except Exception:
            for log in sorted(Path(tmp).glob("*.log")):
                tail = log.read_text(errors="replace").splitlines()[-15:]
                print(f"--- {log.name}", *tail, sep="\n", file=sys.stderr)
            raise
    print(render(results))
    args.out = _output.path(args.out, args.record, "balancing.json")
    args.out.write_text(json.dumps({"quick": args.quick, "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
