"""A node process for tests: `node_app.py GATEWAY NODE_ID [max_concurrency [isolation]]`."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from pathlib import Path

from easyremote.node import ComputeNode, current_call

gateway, node_id = sys.argv[1], sys.argv[2]
slots = int(sys.argv[3]) if len(sys.argv) > 3 else 8
isolation = sys.argv[4] if len(sys.argv) > 4 else "thread"
node = ComputeNode(
    gateway, node_id, max_concurrency=slots, heartbeat_interval=0.5, isolation=isolation
)


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


def _mark(path: str, text: str) -> None:
    # Written whole then renamed: the test polls for the file's existence.
    Path(path + ".tmp").write_text(text)
    os.replace(path + ".tmp", path)


@node.register
def nap_where(seconds: float, started: str = "") -> tuple[str, int]:
    """Sleeps, then says which node ran it and on which attempt."""
    context = current_call()
    if started:
        _mark(started, node_id)
    time.sleep(seconds)
    return node_id, context.attempt if context else 0


@node.register(idempotent=False)
def nap_once(seconds: float, started: str = "") -> str:
    if started:
        _mark(started, node_id)
    time.sleep(seconds)
    return node_id


@node.register
async def async_wait(seconds: float, marker: str) -> str:
    """Waits; writes 'cancelled' to ``marker`` if cancelled, 'done' otherwise."""
    _mark(marker + ".started", node_id)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        _mark(marker, "cancelled")
        raise
    _mark(marker, "done")
    return node_id


@node.register
def cooperative(seconds: float, marker: str) -> str:
    """Polls the cancellation flag; writes how it ended to ``marker``."""
    context = current_call()
    assert context is not None
    _mark(marker + ".started", f"{node_id} {os.getpid()}")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if context.cancelled:
            _mark(marker, "cancelled")
            return "stopped early"
        time.sleep(0.01)
    _mark(marker, "done")
    return "finished"


@node.register
def spin(seconds: float) -> int:
    """Pure-Python busy loop holding the GIL as much as Python lets it."""
    deadline = time.monotonic() + seconds
    loops = 0
    while time.monotonic() < deadline:
        loops += 1
    return loops


class _Canary:
    """Unpickling this runs code: it appends the unpickling process's pid to a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        code = f"import os; open({self.path!r}, 'a').write(str(os.getpid()) + chr(10))"
        return (exec, (code,))


@node.register
def canary_result(path: str) -> object:
    """A result that runs code wherever it is unpickled (only the caller should)."""
    return _Canary(path)


@node.register
def gil_hog(seconds: float) -> str:
    """Holds the GIL without a break: one C call through ctypes.PyDLL."""
    import ctypes

    ctypes.PyDLL(None).usleep(int(seconds * 1_000_000))
    return "released"


@node.register
def items_then_nap(count: int, seconds: float):  # type: ignore[no-untyped-def]
    yield from range(count)
    time.sleep(seconds)
    yield "late"


@node.register
def fail_counted(counter: str) -> None:
    """Appends a line to ``counter`` per run, then raises."""
    with open(counter, "a") as out:
        out.write(f"{node_id}\n")
    raise RuntimeError("user error: never retried")


node.serve(blocking=False)
print("REGISTERED", flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
while not stop.wait(0.5):
    pass
node.stop(drain=True, timeout=5.0)
sys.exit(0)
