"""What ``str(RemoteExecutionError)`` says: the node and the user's frame that raised."""

from __future__ import annotations

import traceback

import pytest

from easyremote.client import RemoteExecutionError
from easyremote.client._errors import error_from_wire, innermost_user_frame
from easyremote.proto.v1 import common_pb2

PLAIN = """\
Traceback (most recent call last):
  File "/home/u/tasks.py", line 30, in train
    step(batch)
  File "/home/u/model.py", line 12, in step
    return 1 / 0
           ~~^~~
ZeroDivisionError: division by zero
"""

WITH_NODE_FRAMES = """\
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/easyremote/node/_execution.py", line 290, in _run_sync
    value = self.function.func(*args, **kwargs)
            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/home/u/tasks.py", line 12, in train
    return 1 / 0
  File "/venv/lib/python3.11/site-packages/easyremote/proto/payload.py", line 8, in helper
    raise ValueError
ValueError: boom
"""

CHAINED = """\
Traceback (most recent call last):
  File "/home/u/io.py", line 3, in read
    raise KeyError("x")
KeyError: 'x'

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/home/u/tasks.py", line 40, in load
    read()
ValueError: bad
Traceback (most recent call last):
  File "/in/the/message.py", line 1, in not_a_frame
"""

GROUP = """\
  + Exception Group Traceback (most recent call last):
  |   File "/home/u/tasks.py", line 10, in fan_out
  |     raise ExceptionGroup("grp", errors)
  | ExceptionGroup: grp (2 sub-exceptions)
  +-+---------------- 1 ----------------
    | Traceback (most recent call last):
    |   File "/home/u/worker.py", line 5, in work
    | ValueError: 1
    +------------------------------------
"""


def _error(
    traceback_text: str, node_id: str = "gpu-node-1", message: str = "division by zero"
) -> RemoteExecutionError:
    return RemoteExecutionError(
        message,
        remote_type="ZeroDivisionError",
        remote_traceback=traceback_text,
        node_id=node_id,
    )


def test_message_names_the_node_and_the_innermost_user_frame() -> None:
    error = _error(PLAIN)
    assert str(error) == (
        "ZeroDivisionError: division by zero (raised on gpu-node-1 at /home/u/model.py:12 in step)"
    )
    assert error.remote_traceback == PLAIN
    assert (error.remote_type, error.node_id) == ("ZeroDivisionError", "gpu-node-1")
    assert error.remote_location == "/home/u/model.py:12 in step"


def test_easyremote_frames_are_skipped() -> None:
    assert innermost_user_frame(WITH_NODE_FRAMES) == "/home/u/tasks.py:12 in train"


def test_a_chain_uses_the_last_exception_and_stops_at_its_message() -> None:
    assert innermost_user_frame(CHAINED) == "/home/u/tasks.py:40 in load"


def test_an_exception_group_uses_its_own_frames() -> None:
    assert innermost_user_frame(GROUP) == "/home/u/tasks.py:10 in fan_out"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a traceback at all",
        "ValueError: no frames\n",
        "Traceback (most recent call last):\nValueError: nothing in between\n",
        # Only EasyRemote's own frames: nothing of the user's to point at.
        'Traceback (most recent call last):\n  File "/x/easyremote/node/_isolation.py", '
        "line 9, in receive\nChildProcessError: gone\n",
    ],
)
def test_unparseable_tracebacks_keep_the_old_text(text: str) -> None:
    assert innermost_user_frame(text) == ""
    assert str(_error(text)) == "ZeroDivisionError: division by zero (raised on gpu-node-1)"
    assert str(_error(text, node_id="")) == "ZeroDivisionError: division by zero (raised)"


def test_without_a_node_id_only_the_frame_is_named() -> None:
    assert str(_error(PLAIN, node_id="")) == (
        "ZeroDivisionError: division by zero (raised at /home/u/model.py:12 in step)"
    )


def test_an_empty_message_shows_the_type_alone() -> None:
    assert str(_error("", message="")) == "ZeroDivisionError (raised on gpu-node-1)"


def test_a_real_traceback_from_this_interpreter_is_read() -> None:
    def inner() -> None:
        raise KeyError("k")

    def outer() -> None:
        try:
            inner()
        except KeyError as exc:
            raise RuntimeError("wrapped") from exc

    try:
        outer()
    except RuntimeError as exc:
        text = "".join(traceback.format_exception(exc))
    location = innermost_user_frame(text)
    assert location.startswith(f"{__file__}:")
    assert location.endswith(" in outer")


def test_the_wire_error_carries_the_location_through() -> None:
    wire = common_pb2.Error(
        reason=common_pb2.ERROR_REASON_REMOTE_EXCEPTION,
        message="division by zero",
        remote_type="ZeroDivisionError",
        remote_traceback=PLAIN,
        node_id="n1",
    )
    error = error_from_wire(wire)
    assert isinstance(error, RemoteExecutionError)
    assert str(error).endswith("(raised on n1 at /home/u/model.py:12 in step)")
