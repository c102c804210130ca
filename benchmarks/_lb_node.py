"""Compute nodes for the load-balancing benchmarks, as one process.

Usage: ``python benchmarks/_lb_node.py GATEWAY NODE_ID SLOTS DELAY_S [COUNT]``.

Each node registers ``work_<strategy>`` for the five strategies (so every
strategy starts with its own, unmeasured statistics at the gateway) plus
``inc``. ``work_*`` holds its slot for ``DELAY_S`` (``asyncio.sleep``, as in
``_er_node.py`` and the relay, so the work costs no thread hop) and returns
the node id. With ``COUNT`` > 1 the process
runs that many nodes, ``NODE_ID-1`` .. ``NODE_ID-COUNT``, each with its own
connection: the routing-overhead benchmark needs many registered nodes, not
many processes.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from collections.abc import Awaitable, Callable

STRATEGIES = ("round_robin", "resource_aware", "latency_based", "cost_aware", "smart_adaptive")


def _worker(node_id: str, delay_s: float) -> Callable[[], Awaitable[str]]:
    async def work() -> str:
        await asyncio.sleep(delay_s)
        return node_id

    return work


def main(argv: list[str]) -> int:
    """Serves the nodes until SIGTERM or SIGINT, then drains them."""
    if len(argv) not in (4, 5):
        print("usage: _lb_node.py GATEWAY NODE_ID SLOTS DELAY_S [COUNT]", file=sys.stderr)
        return 2
    from easyremote.node import ComputeNode

    gateway, base_id, slots, delay_s = argv[0], argv[1], int(argv[2]), float(argv[3])
    count = int(argv[4]) if len(argv) == 5 else 1
    ids = [base_id] if count == 1 else [f"{base_id}-{i + 1}" for i in range(count)]
    nodes = []
    for node_id in ids:
        node = ComputeNode(gateway, node_id, max_concurrency=slots, connection_timeout=60)
        for strategy in STRATEGIES:
            node.register(name=f"work_{strategy}")(_worker(node_id, delay_s))

        async def inc(x: int) -> int:
            return x + 1

        node.register(inc)
        node.serve(blocking=False)
        nodes.append(node)
    print(f"ready: {len(nodes)} node(s)", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    for node in nodes:
        node.stop(drain=True, timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
