"""An EasyRemote compute node serving the benchmark functions, as its own process.

Usage: ``python benchmarks/_er_node.py GATEWAY NODE_ID MAX_CONCURRENCY``.

The functions mirror the relay worker's ops one for one (see ``relay.py``) so
both systems do the same work per call: ``inc`` (x + 1), ``echo`` (returns its
argument) and ``sleep_task`` (asyncio.sleep(0.1)).
"""

from __future__ import annotations

import asyncio
import sys

SLEEP_SECONDS = 0.1


def main(argv: list[str]) -> int:
    """Registers the benchmark functions and serves until signalled."""
    if len(argv) != 3:
        print("usage: _er_node.py GATEWAY NODE_ID MAX_CONCURRENCY", file=sys.stderr)
        return 2
    from easyremote.node import ComputeNode

    gateway, node_id, slots = argv[0], argv[1], int(argv[2])
    node = ComputeNode(gateway, node_id, max_concurrency=slots)

    @node.register
    async def inc(x: int) -> int:
        # async def runs on the node's loop, as the relay worker computes
        # inline; inc_sync measures the worker-thread path of plain functions.
        return x + 1

    @node.register
    def inc_sync(x: int) -> int:
        return x + 1

    @node.register
    def echo(data: bytes) -> bytes:
        return data

    @node.register
    async def sleep_task() -> None:
        # asyncio.sleep like the relay worker: a slot is held without a thread.
        await asyncio.sleep(SLEEP_SECONDS)

    node.serve()  # blocks; SIGTERM drains
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
