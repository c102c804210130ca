"""A node process for tests: `node_app.py GATEWAY NODE_ID [max_concurrency]`."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from pathlib import Path

from easyremote.node import ComputeNode

gateway, node_id = sys.argv[1], sys.argv[2]
slots = int(sys.argv[3]) if len(sys.argv) > 3 else 8
node = ComputeNode(gateway, node_id, max_concurrency=slots, heartbeat_interval=0.5)


@node.register
def whoami() -> str:
    return node_id


@node.register
def echo(value: object) -> object:
    return value


@node.register
def inc(x: int) -> tuple[int, str]:
    return x + 1, node_id


@node.register
def describe(obj: object) -> str:
    return f"{type(obj).__name__}:{obj!r}"


@node.register
async def async_double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


@node.register
async def agen_until_marker(marker: str, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    """Yields 'first', then waits for the caller to create ``marker``."""
    yield "first"
    deadline = time.monotonic() + timeout
    path = Path(marker)
    while not path.exists():
        if time.monotonic() > deadline:
            yield "marker never appeared"
            return
        await asyncio.sleep(0.01)
    yield "second"


@node.register
def count_to(n: int):  # type: ignore[no-untyped-def]
    yield from range(n)


@node.register
def fail(message: str) -> None:
    raise ValueError(message)


@node.register
def pid() -> int:
    return os.getpid()


@node.register
def nap(seconds: float) -> str:
    time.sleep(seconds)
    return "rested"


@node.register
def unpicklable_result() -> object:
    return threading.Lock()


node.serve(blocking=False)
print("REGISTERED", flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
while not stop.wait(0.5):
    pass
node.stop(drain=True, timeout=5.0)
sys.exit(0)
