"""How a node reports a failed call: the traceback it sends, the line it logs."""

from __future__ import annotations

import asyncio
import logging
import pickle
from collections.abc import Callable
from typing import Any

import pytest

from easyremote.node._execution import Execution
from easyremote.node._functions import RegisteredFunction, kind_of
from easyremote.node._outcomes import MAX_LOGGED_MESSAGE_CHARS, log_failure
from easyremote.node._serialization import exception_error
from easyremote.node._workers import WorkerPool
from easyremote.proto.v1 import common_pb2, node_pb2

SECRET_ARGUMENT = "argument-value-that-must-not-be-logged"


class _Outbox:
    """Collects frames; settles ``done`` at the call's final frame."""

    def __init__(self, done: asyncio.Future[common_pb2.CallResult]) -> None:
        self._done = done

    def put(self, frame: Any, size: int = 0, *, now: bool = False) -> None:
        result = frame.result
        if not result.more and not self._done.done():
            self._done.set_result(result)


def _run(func: Callable[..., Any], *args: Any, call_id: int = 7) -> common_pb2.CallResult:
    """Runs ``func(*args)`` as a call on the node; its final result frame."""

    async def main() -> common_pb2.CallResult:
        done: asyncio.Future[common_pb2.CallResult] = asyncio.get_running_loop().create_future()
        pool = WorkerPool(2, "test")
        execute = node_pb2.Execute(
            call_id=call_id,
            function=func.__name__,
            data=pickle.dumps((args, {})),
            timeout_ms=10_000,
        )
        function = RegisteredFunction(name=func.__name__, func=func, kind=kind_of(func))
        execution = Execution(execute, function, _Outbox(done), pool, lambda _: None)  # type: ignore[arg-type]
        execution.start()
        try:
            return await asyncio.wait_for(done, 10)
        finally:
            pool.shutdown()

    return asyncio.run(main())


def train(batch: str) -> float:
    return 1 / 0


async def predict(batch: str) -> None:
    raise ValueError("x" * 1000 + "\nsecond line")


def _node_frames(traceback_text: str) -> list[str]:
    return [line for line in traceback_text.splitlines() if "easyremote/node/" in line]


def test_sent_traceback_starts_at_the_users_frame() -> None:
    result = _run(train, SECRET_ARGUMENT)
    error = result.error
    assert error.reason == common_pb2.ERROR_REASON_REMOTE_EXCEPTION
    assert error.remote_type == "ZeroDivisionError"
    assert _node_frames(error.remote_traceback) == []
    assert f'File "{__file__}"' in error.remote_traceback
    assert "in train" in error.remote_traceback


def test_a_traceback_of_only_node_frames_is_kept_whole() -> None:
    def own() -> None:
        raise RuntimeError("inside the node")

    # Pretend the function lives in the node package: nothing is the user's.
    own.__code__ = own.__code__.replace(co_filename=exception_error.__code__.co_filename)
    try:
        own()
    except RuntimeError as exc:
        assert exc.__traceback__ is not None
        # Only ``own``'s frame is left: this test's frame is dropped.
        text = exception_error(exc.with_traceback(exc.__traceback__.tb_next)).remote_traceback
    assert len(_node_frames(text)) == 1
    assert "RuntimeError: inside the node" in text


def test_each_failed_call_is_logged_at_info_without_its_arguments(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="easyremote.node"):
        _run(train, SECRET_ARGUMENT, call_id=41)
        _run(predict, SECRET_ARGUMENT, call_id=42)
    records = [r for r in caplog.records if r.name == "easyremote.node"]
    assert [r.levelno for r in records] == [logging.INFO, logging.INFO]
    assert records[0].getMessage() == (
        "call 41 of 'train' failed: ZeroDivisionError: division by zero"
    )
    second = records[1].getMessage()
    assert second.startswith("call 42 of 'predict' failed: ValueError: xxx")
    assert second.endswith("...") and "\n" not in second
    assert len(second) < MAX_LOGGED_MESSAGE_CHARS + 60
    assert SECRET_ARGUMENT not in caplog.text


def test_failures_the_node_decides_are_logged_by_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    error = common_pb2.Error(
        reason=common_pb2.ERROR_REASON_DEADLINE_EXCEEDED, message="'f' did not finish within 1 s"
    )
    with caplog.at_level(logging.INFO, logger="easyremote.node"):
        log_failure(3, "f", error)
        log_failure(4, "f", common_pb2.Error(message="short\nmessage", remote_type="a.B"))
    assert [r.getMessage() for r in caplog.records] == [
        "call 3 of 'f' failed: DEADLINE_EXCEEDED: 'f' did not finish within 1 s",
        "call 4 of 'f' failed: a.B: short message",
    ]


def test_code_cloudpickle_rebuilt_gets_its_file_back() -> None:
    # What an isolated child runs for a __main__ function: code named
    # "<dynamic-code>" whose globals still know the script's file.
    namespace: dict[str, Any] = {"__file__": "/home/u/script.py", "__name__": "__main__"}
    source = (
        "def inner():\n"
        "    raise KeyError('k')\n"
        "\n"
        "def boom():\n"
        "    try:\n"
        "        inner()\n"
        "    except KeyError as exc:\n"
        "        raise ValueError('x') from exc\n"
    )
    exec(compile(source, "<dynamic-code>", "exec"), namespace)
    try:
        namespace["boom"]()
    except ValueError as exc:
        text = exception_error(exc).remote_traceback
    assert "<dynamic-code>" not in text
    assert 'File "/home/u/script.py", line 2, in inner' in text  # the cause's frame
    assert 'File "/home/u/script.py", line 8, in boom' in text
    assert text.rstrip().endswith("ValueError: x")
