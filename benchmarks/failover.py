"""W5: failover under load. One of two nodes is SIGKILLed mid-run; nothing may be lost.

2 nodes x 2 slots; 20 calls of 0.5 s are submitted at once; node ``A`` gets
SIGKILL 1.25 s in. Reported: calls that failed (must be 0) and the makespan
next to the ideal with the failure (4.0 s: 8 calls are done by 1.0 s, the
survivor's two running calls end at 1.5 s, then the 2 lost and 8 waiting
calls need 5 more rounds of 0.5 s on 2 slots) and without it (2.5 s).

Each run uses a fresh gateway and fresh nodes (``_er_gateway.py``,
``_lb_node.py``), all separate processes on 127.0.0.1.

Usage: ``python benchmarks/failover.py [--runs N] [--record | --out FILE]`` (``nox -s
bench`` runs it). Writes ``.bench/failover.json`` at the repository root (git-ignored),
or the committed ``benchmarks/failover.json`` with ``--record``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import _output
from balancing import CALL_TIMEOUT_S, cluster, wait_for_nodes

CALLS = 20
CALL_S = 0.5
KILL_AT_S = 1.25
IDEAL_WITH_FAILURE_S = 4.0
IDEAL_WITHOUT_FAILURE_S = 2.5


async def one_run(log_dir: Path) -> dict[str, Any]:
    from easyremote.client import AsyncClient

    with cluster(log_dir) as procs:
        victim = procs.spawn("A", "_lb_node.py", procs.address, "A", 2, CALL_S)
        procs.nodes("B", 2, CALL_S)
        async with AsyncClient(procs.address, timeout=CALL_TIMEOUT_S) as client:
            await wait_for_nodes(client, 2)
            # Connections warm and both nodes measured, as in steady service.
            await asyncio.gather(*(client.call("inc", i) for i in range(8)))
            start = time.perf_counter()
            calls = [
                asyncio.ensure_future(client.call("work_smart_adaptive")) for _ in range(CALLS)
            ]
            await asyncio.sleep(KILL_AT_S)
            victim.send_signal(signal.SIGKILL)
            killed_at = time.perf_counter() - start
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            makespan = time.perf_counter() - start
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    served = Counter(o for o in outcomes if isinstance(o, str))
    return {
        "makespan_s": makespan,
        "killed_at_s": killed_at,
        "failed": len(failed),
        "errors": sorted({f"{type(e).__name__}: {e}" for e in failed})[:5],
        "served": dict(sorted(served.items())),
    }


async def run(runs: int, log_dir: Path) -> dict[str, Any]:
    results = []
    for index in range(runs):
        result = await one_run(log_dir)
        print(
            f"  run {index + 1}: makespan {result['makespan_s']:.3f} s, "
            f"failed {result['failed']}, served {result['served']}"
        )
        results.append(result)
    return {
        "runs": results,
        "makespan_s": statistics.median(r["makespan_s"] for r in results),
        "failed_total": sum(r["failed"] for r in results),
        "calls_total": CALLS * runs,
        "ideal_with_failure_s": IDEAL_WITH_FAILURE_S,
        "ideal_without_failure_s": IDEAL_WITHOUT_FAILURE_S,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    _output.add_arguments(parser, "failover.json")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    print("W5 failover: 2 nodes x 2 slots, 20 x 0.5 s, node A SIGKILLed at 1.25 s")
    with tempfile.TemporaryDirectory(prefix="easyremote-w5-") as tmp:
        report = asyncio.run(run(args.runs, Path(tmp)))
    print(
        f"W5: {report['failed_total']} of {report['calls_total']} calls failed; "
        f"makespan median {report['makespan_s']:.3f} s "
        f"(ideal {IDEAL_WITH_FAILURE_S} s with the failure, {IDEAL_WITHOUT_FAILURE_S} s without; "
        f"{report['makespan_s'] / IDEAL_WITH_FAILURE_S:.3f}x)"
    )
    args.out = _output.path(args.out, args.record, "failover.json")
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if report["failed_total"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
