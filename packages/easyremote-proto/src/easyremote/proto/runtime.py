"""The one background event loop that all blocking EasyRemote APIs share.

grpc.aio supports a single event loop per process: with several loops in
several threads its completion-queue poller races (BlockingIOError storms and
slow calls). So a process that runs a gateway, nodes and clients through the
blocking APIs runs all of them on this one daemon loop thread, and callers
block on futures. ``AsyncClient`` and ``Server.start_async`` use the caller's
own loop instead.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from easyremote.proto.memory import tune_allocator

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_pid = 0
_exiting = False
# Objects with work on the loop (clients, nodes, gateways) and how to close
# them; closed gracefully at exit, before the loop stops.
_closers: weakref.WeakKeyDictionary[object, Callable[[object], Coroutine[Any, Any, None]]] = (
    weakref.WeakKeyDictionary()
)
_EXIT_CLOSE_TIMEOUT_S = 3.0


def close_at_exit(owner: object, close: Callable[[Any], Coroutine[Any, Any, None]]) -> None:
    """Closes ``owner`` with ``close(owner)`` at interpreter exit if still open.

    Held weakly: an owner that is garbage-collected first is simply skipped.
    """
    with _lock:
        _closers[owner] = close


def forget_at_exit(owner: object) -> None:
    """``owner`` was closed by its user; nothing to do at exit."""
    with _lock:
        _closers.pop(owner, None)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The shared loop: asyncio's, or uvloop's with ``EASYREMOTE_UVLOOP=1``.

    uvloop makes each loop iteration cheaper (measured ~15% less CPU per call
    on gateway and nodes) but its timers fire up to ~1 ms late, which user
    code on a node sees in every ``asyncio.sleep`` (W4 makespan 1.06 s instead
    of 1.04 s). So it is an opt-in, best for a dedicated gateway process.
    """
    if os.environ.get("EASYREMOTE_UVLOOP") == "1":
        try:
            import uvloop  # noqa: PLC0415 - optional accelerator
        except ImportError:
            pass
        else:
            # Typed here: without uvloop installed mypy sees the import as Any.
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
    return asyncio.new_event_loop()


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()


def _cancel_everything() -> None:
    for task in asyncio.all_tasks():
        task.cancel()


def _shutdown_at_exit() -> None:
    """Stops the loop before the interpreter tears down modules under it.

    Without this, work still scheduled (an unclosed Client, a node still
    serving) dies with the daemon thread mid-call and Python reports errors
    from half-finalized modules.
    """
    global _exiting
    _exiting = True
    loop, thread = _loop, _thread
    if loop is None or thread is None or not thread.is_alive() or _pid != os.getpid():
        return
    with _lock:
        pending = list(_closers.items())
        _closers.clear()
    if pending:

        async def close_all() -> None:
            await asyncio.gather(
                *(close(owner) for owner, close in pending), return_exceptions=True
            )

        # Connections end cleanly (peers see a close, grpc has nothing in
        # flight), instead of being cut mid-operation.
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close_all(), loop).result(_EXIT_CLOSE_TIMEOUT_S)
    try:
        loop.call_soon_threadsafe(_cancel_everything)
        loop.call_soon_threadsafe(loop.stop)
    except RuntimeError:
        return
    thread.join(timeout=2.0)


atexit.register(_shutdown_at_exit)


def background_loop() -> asyncio.AbstractEventLoop:
    """The shared loop, started on first use (and again after a fork)."""
    global _loop, _thread, _pid
    if _exiting:
        raise RuntimeError("the interpreter is exiting; EasyRemote's loop is stopped")
    with _lock:
        alive = _thread is not None and _thread.is_alive() and _pid == os.getpid()
        if _loop is None or not alive or _loop.is_closed():
            # Before the thread exists: allocator limits bind new threads only.
            tune_allocator()
            _loop = new_event_loop()
            _thread = threading.Thread(
                target=_serve, args=(_loop,), name="easyremote-loop", daemon=True
            )
            _thread.start()
            _pid = os.getpid()
        return _loop


def is_exiting() -> bool:
    """True once the interpreter is shutting down (the loop is gone)."""
    return _exiting


def in_background_loop() -> bool:
    """True when called from the shared loop's own thread."""
    return _thread is not None and threading.current_thread() is _thread


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Schedules ``coro`` on the shared loop without waiting."""
    return asyncio.run_coroutine_threadsafe(coro, background_loop())


def run_sync(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Runs ``coro`` on the shared loop and waits for its result.

    Ctrl-C (or any exception) while waiting cancels the coroutine on the loop
    before it propagates, so a blocking call never leaves work running.

    Raises:
        RuntimeError: Called from the shared loop itself (it would deadlock).
    """
    if in_background_loop():
        coro.close()
        raise RuntimeError("blocking EasyRemote APIs cannot be used inside EasyRemote's own loop")
    future = submit(coro)
    try:
        return future.result(timeout)
    except BaseException:
        if not future.done():
            future.cancel()
        raise
