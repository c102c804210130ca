"""The child side of ``isolation="process"``: runs calls sent by its node.

Started by ``_isolation.ChildProcess`` as ``python -c`` with one end of a
socket pair. Requests and replies are plain-data pickles (tuples of str, int
and bytes); user values travel inside them as the bytes the caller and node
exchange anyway, so this process unpickles the arguments and pickles the
result exactly as the node's own threads would.

Requests:
    ("define", name, function_pickle)     no reply
    ("call", name, payload, caller_versions, call_id, attempt, deadline)
    ("gen_start", <same as call>)
    ("gen_next",)
    ("gen_close",)
Replies:
    ("value", data) / ("item", data) / ("started",) / ("done",) / ("closed",)
    ("failed", error_proto_bytes, pickled_exception)
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle

from easyremote.node._context import CallContext, reset_current, set_current
from easyremote.node._outcomes import (
    CallFailed,
    dump_value,
    failure,
    load_arguments,
    user_failure,
)
from easyremote.proto.v1 import common_pb2

Reply = tuple[Any, ...]
# How often a child checks that its node is still there.
_ORPHAN_CHECK_S = 1.0


def _failed(exc: CallFailed) -> Reply:
    return ("failed", exc.error.SerializeToString(), exc.data)


class _Worker:
    def __init__(self) -> None:
        self.functions: dict[str, Callable[..., Any]] = {}
        self.generator: Generator[Any, None, None] | None = None
        self.generator_name = ""
        self.context: CallContext | None = None

    def _prepare(
        self, name: str, payload: bytes, caller: bytes, call_id: int, attempt: int, left: float
    ) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        # The deadline crosses processes as seconds left: clocks differ.
        self.context = CallContext(
            call_id=call_id,
            function=name,
            attempt=attempt,
            deadline=time.monotonic() + left if left > 0 else None,
        )
        versions = common_pb2.Versions.FromString(caller)
        args, kwargs = load_arguments(payload, name, versions)
        return self.functions[name], args, kwargs

    def call(self, *request: Any) -> Reply:
        try:
            func, args, kwargs = self._prepare(*request)
            token = set_current(self.context)
            try:
                value = func(*args, **kwargs)
            except BaseException as exc:
                raise user_failure(exc) from exc
            finally:
                reset_current(token)
            return ("value", dump_value(value, request[0]).tobytes())
        except CallFailed as exc:
            return _failed(exc)

    def gen_start(self, *request: Any) -> Reply:
        try:
            func, args, kwargs = self._prepare(*request)
            try:
                self.generator = func(*args, **kwargs)
            except BaseException as exc:
                raise user_failure(exc) from exc
            self.generator_name = request[0]
            return ("started",)
        except CallFailed as exc:
            return _failed(exc)

    def gen_next(self) -> Reply:
        assert self.generator is not None
        token = set_current(self.context)
        try:
            try:
                item = next(self.generator)
            except StopIteration:
                self.generator = None
                return ("done",)
            except BaseException as exc:
                self.generator = None
                raise user_failure(exc) from exc
            return ("item", dump_value(item, self.generator_name).tobytes())
        except CallFailed as exc:
            # The stream ends here: close the generator now (its `finally`
            # runs for this call), not in some later call of this child.
            self.gen_close()
            return _failed(exc)
        finally:
            reset_current(token)

    def gen_close(self) -> Reply:
        generator, self.generator = self.generator, None
        if generator is not None:
            try:
                generator.close()
            except Exception:  # noqa: BLE001 - the call is over either way
                pass
        return ("closed",)


def _exit_with_parent(parent: int) -> None:
    # An idle child sees the node go (its socket closes); a busy one would
    # run its call to the end for nobody, so it watches for being orphaned.
    while True:
        time.sleep(_ORPHAN_CHECK_S)
        if os.getppid() != parent:
            os._exit(1)


def main(fd: int) -> None:
    """Serves requests on ``fd`` until the node closes it."""
    # Ctrl-C in the node's terminal reaches the whole process group; the node
    # decides when its children stop (it kills them), not the keyboard.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    conn = Connection(fd)
    conn.send_bytes(pickle.dumps(("ready",)))
    worker = _Worker()
    while True:
        try:
            request = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            break  # the node closed its end or exited
        op = request[0]
        if op == "define":
            worker.functions[request[1]] = cloudpickle.loads(request[2])
            continue
        if op == "call":
            reply = worker.call(*request[1:])
        elif op == "gen_start":
            reply = worker.gen_start(*request[1:])
        elif op == "gen_next":
            reply = worker.gen_next()
        elif op == "gen_close":
            reply = worker.gen_close()
        else:
            reply = _failed(failure(common_pb2.ERROR_REASON_INTERNAL, f"unknown request {op!r}"))
        try:
            conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
        except (BrokenPipeError, OSError):
            break
    sys.stdout.flush()
    os._exit(0)
