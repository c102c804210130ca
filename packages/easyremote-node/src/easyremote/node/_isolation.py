"""``isolation="process"``: sync functions run in child processes the node can kill.

A thread running user code cannot be stopped, and pure-Python code holds the
GIL the node's event loop needs. With process isolation each sync call (and
each sync generator) runs in a child process instead; the node's worker
thread only waits on a socket. On cancel or deadline the waiting thread kills
the child, and the next call starts a fresh one: that is how a runaway
function is stopped.

Children are plain ``python -c`` processes rather than ``multiprocessing``
ones, so the node's ``__main__`` (often a script that builds and serves the
node at import) is never re-imported. Functions reach them pickled by value
(cloudpickle) once per child. POSIX only: the socket end is inherited.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle

from easyremote.node._context import CallContext
from easyremote.node._outcomes import CallFailed, failure, user_failure
from easyremote.proto.v1 import common_pb2

# How often a waiting thread looks at the call's cancellation flag.
_CANCEL_POLL_S = 0.02
# A generator asked to close gets this long to run its `finally`.
_CLOSE_GRACE_S = 5.0
# A child normally starts in well under a second; past this the node goes on
# registering and the first call waits for the child instead.
_READY_TIMEOUT_S = 10.0
_CHILD_MAIN = "from easyremote.node._isolated_child import main; import sys; main(int(sys.argv[1]))"


class _Stopped(Exception):
    """The call was cancelled (or hit its deadline) and its child was killed."""


class ChildProcess:
    """One child process and the node's end of its socket."""

    def __init__(self) -> None:
        parent_end, child_end = socket.socketpair()
        env = dict(os.environ)
        # The child must import what the node imported (the functions'
        # modules, a source checkout on sys.path): give it the same path.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _CHILD_MAIN, str(child_end.fileno())],
                pass_fds=(child_end.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        finally:
            child_end.close()
        self._socket = parent_end
        self._conn = Connection(os.dup(parent_end.fileno()))
        self.defined: set[str] = set()
        # The child says "ready" once its imports are done.
        self.ready = False

    def wait_ready(self, timeout: float) -> bool:
        """Waits (bounded) for the child's "ready"; False if it did not come."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            left = deadline - time.monotonic()
            try:
                if left <= 0 or not self._conn.poll(left):
                    return False
                if pickle.loads(self._conn.recv_bytes())[0] == "ready":
                    self.ready = True
            except (EOFError, OSError):
                return False
        return True

    def send(self, request: tuple[Any, ...]) -> None:
        self._conn.send_bytes(pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL))

    def receive(self, context: CallContext | None, function: str) -> tuple[Any, ...]:
        """Waits for the reply; kills the child if the call is cancelled first."""
        while True:
            try:
                if self._conn.poll(_CANCEL_POLL_S):
                    reply: tuple[Any, ...] = pickle.loads(self._conn.recv_bytes())
                    if reply[0] == "ready":
                        self.ready = True
                        continue
                    return reply
            except (EOFError, OSError):
                break
            if context is not None and context.cancelled:
                self.kill()
                raise _Stopped
            if self.process.poll() is not None:
                break
        code = self.process.wait()
        self.close()
        raise user_failure(
            ChildProcessError(
                f"the process running {function!r} exited with code {code} before answering"
            )
        )

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self) -> None:
        """SIGKILL only: the owner of the call still closes the socket."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    def kill(self) -> None:
        self.terminate()
        self.process.wait()
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.close()
        with contextlib.suppress(OSError):
            self._socket.close()


class ProcessPool:
    """Idle child processes, handed out one per running call.

    At most ``max_idle`` are kept; a child is started when none is idle, so
    a call that finds none pays for a Python start-up (about 0.1-0.4 s). One
    child is started ahead (``warm``) when the node starts serving.
    """

    def __init__(self, max_idle: int) -> None:
        self._max_idle = max_idle
        self._idle: list[ChildProcess] = []
        self._busy: set[ChildProcess] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._pickles: dict[str, bytes] = {}

    def prepare(self, name: str, func: Callable[..., Any]) -> None:
        """Pickles ``func`` for the children now, so a problem shows at serve()."""
        self._pickles[name] = cloudpickle.dumps(func, protocol=pickle.HIGHEST_PROTOCOL)

    def warm(self) -> None:
        """Starts one child and waits (bounded) until it is ready for calls.

        The node does this before registering, so its first call does not
        wait for a Python start-up.
        """
        child = ChildProcess()
        for name, pickled in self._pickles.items():
            child.send(("define", name, pickled))
            child.defined.add(name)
        with self._lock:
            self._idle.append(child)
        child.wait_ready(_READY_TIMEOUT_S)

    def acquire(self, name: str) -> ChildProcess:
        with self._lock:
            if self._closed:
                raise failure(common_pb2.ERROR_REASON_UNAVAILABLE, "node is shutting down")
            child = None
            while self._idle:
                candidate = self._idle.pop()
                if candidate.alive:
                    child = candidate
                    break
                candidate.close()
            if child is None:
                child = ChildProcess()
            self._busy.add(child)
        return child

    def _define(self, child: ChildProcess, name: str) -> None:
        if name not in child.defined:
            child.send(("define", name, self._pickles[name]))
            child.defined.add(name)

    def release(self, child: ChildProcess) -> None:
        with self._lock:
            self._busy.discard(child)
            if child.alive and not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(child)
                return
        child.kill()

    def discard(self, child: ChildProcess) -> None:
        with self._lock:
            self._busy.discard(child)
        child.kill()

    def shutdown(self) -> None:
        """Kills every child, idle or running.

        A running child's socket stays open: the thread waiting on it sees
        the end of the process and closes it, so no descriptor number is
        reused under a thread still reading it.
        """
        with self._lock:
            self._closed = True
            idle = list(self._idle)
            busy = list(self._busy)
            self._idle.clear()
            self._busy.clear()
        for child in idle:
            child.kill()
        for child in busy:
            child.terminate()

    # ------------------------------------------------------------------ calls

    def _start(
        self,
        op: str,
        name: str,
        payload: bytes,
        caller: common_pb2.Versions,
        context: CallContext,
    ) -> tuple[ChildProcess, tuple[Any, ...]]:
        """Sends ``op`` for a call to a child; (the child, its reply).

        Any failure, cancellation included, discards the child (killing it).
        """
        child = self.acquire(name)
        try:
            self._define(child, name)
            child.send((op, name, payload, *_call_facts(caller, context)))
            reply = child.receive(context, name)
            if op == "gen_start" and context.cancelled:
                # Cancelled as the generator started: nobody would close it.
                raise _Stopped
        except _Stopped:
            self.discard(child)
            raise _stopped(name) from None
        except BaseException:
            self.discard(child)
            raise
        return child, reply

    def call(
        self, name: str, payload: bytes, caller: common_pb2.Versions, context: CallContext
    ) -> bytes:
        """Runs one call of ``name`` in a child; returns the pickled result."""
        child, reply = self._start("call", name, payload, caller, context)
        self.release(child)
        return _value(reply)

    def start_generator(
        self, name: str, payload: bytes, caller: common_pb2.Versions, context: CallContext
    ) -> IsolatedGenerator:
        """Creates the generator in a child, which stays with it until it ends."""
        child, reply = self._start("gen_start", name, payload, caller, context)
        if reply[0] != "started":
            self.release(child)
            _value(reply)  # raises the failure
        return IsolatedGenerator(self, child, name, context)


class IsolatedGenerator:
    """A sync generator running in a child; items come back already pickled."""

    def __init__(
        self, pool: ProcessPool, child: ChildProcess, name: str, context: CallContext
    ) -> None:
        self._pool = pool
        self._child: ChildProcess | None = child
        self._name = name
        self._context = context

    def next_item(self) -> bytes | None:
        """The next pickled item, or None when the generator is exhausted."""
        child = self._child
        if child is None:
            return None
        try:
            child.send(("gen_next",))
            reply = child.receive(self._context, self._name)
        except _Stopped:
            self._child = None
            self._pool.discard(child)
            raise _stopped(self._name) from None
        except BaseException:
            self._child = None
            self._pool.discard(child)
            raise
        if reply[0] == "done":
            self._child = None
            self._pool.release(child)
            return None
        if reply[0] == "failed":
            self._child = None
            self._pool.release(child)
        return _value(reply)

    def close(self) -> None:
        """Closes the generator in its child (its ``finally`` runs), bounded in time."""
        child, self._child = self._child, None
        if child is None:
            return
        if not child.alive:
            self._pool.discard(child)
            return
        try:
            child.send(("gen_close",))
            deadline = time.monotonic() + _CLOSE_GRACE_S
            grace = _Deadline(deadline)
            child.receive(grace, self._name)
        except (_Stopped, CallFailed, OSError):
            self._pool.discard(child)
            return
        self._pool.release(child)


class _Deadline(CallContext):
    """A stand-in context that counts as cancelled once ``deadline`` passes."""

    def __init__(self, deadline: float) -> None:
        super().__init__(call_id=0, function="", attempt=0, deadline=deadline)

    @property
    def cancelled(self) -> bool:
        return time.monotonic() > (self.deadline or 0.0)


def _call_facts(caller: common_pb2.Versions, context: CallContext) -> tuple[Any, ...]:
    left = context.deadline - time.monotonic() if context.deadline is not None else 0.0
    return (caller.SerializeToString(), context.call_id, context.attempt, max(left, 0.0))


def _value(reply: tuple[Any, ...]) -> bytes:
    if reply[0] in ("value", "item"):
        data: bytes = reply[1]
        return data
    if reply[0] == "failed":
        raise CallFailed(common_pb2.Error.FromString(reply[1]), reply[2])
    raise failure(
        common_pb2.ERROR_REASON_INTERNAL, f"unexpected reply from the child: {reply[0]!r}"
    )


def _stopped(name: str) -> CallFailed:
    return failure(
        common_pb2.ERROR_REASON_CANCELLED, f"{name!r} was stopped: its process was killed"
    )
