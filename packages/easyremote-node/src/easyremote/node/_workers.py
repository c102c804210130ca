"""Worker threads for user code, with as little per-call machinery as possible.

A call of a plain function is the hot path of a node: one hop to a worker
thread and one back. ``concurrent.futures`` plus ``run_in_executor`` costs a
Future with a Condition, callback chaining and an extra task resumption per
call; here a job is a closure on a SimpleQueue and its outcome comes back
with one ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class WorkerPool:
    """Daemon worker threads started on demand, up to ``max_workers``.

    Threads are daemons: a user function that never returns must not keep
    the process alive at exit.
    """

    def __init__(self, max_workers: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._max_workers = max_workers
        self._name = name
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    def submit(self, job: Callable[[], None]) -> None:
        """Runs ``job()`` on a worker thread; it must not raise."""
        with self._lock:
            if self._closed:
                raise RuntimeError("worker pool is shut down")
            if self._idle > 0:
                self._idle -= 1  # an idle worker will take it
            elif len(self._threads) < self._max_workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            # else: every worker is busy; the job waits in the queue
        self._jobs.put(job)

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Awaits ``func(*args)`` run on a worker thread."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: T | None, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]

        def job() -> None:
            try:
                result = func(*args)
            except Exception as exc:  # noqa: BLE001 - handed to the awaiting task
                loop.call_soon_threadsafe(settle, None, exc)
            except BaseException as exc:  # noqa: BLE001
                # SystemExit/KeyboardInterrupt set on an asyncio future would
                # be re-raised out of the event loop and stop the whole node.
                error = RuntimeError(f"{type(exc).__name__} raised in a worker thread: {exc!r}")
                loop.call_soon_threadsafe(settle, None, error)
            else:
                loop.call_soon_threadsafe(settle, result, None)

        self.submit(job)
        return await future

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is None:
                return
            try:
                job()
            except BaseException:  # noqa: BLE001 - jobs report their own errors
                pass
            with self._lock:
                self._idle += 1

    def shutdown(self) -> None:
        """Lets idle workers exit; busy ones finish their job first."""
        with self._lock:
            self._closed = True
            count = len(self._threads)
        for _ in range(count):
            self._jobs.put(None)
