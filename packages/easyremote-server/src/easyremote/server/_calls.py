"""A call as the gateway tracks it from arrival to its one outcome."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from easyremote.proto import DataChunk
from easyremote.proto.v1 import client_pb2, common_pb2

if TYPE_CHECKING:
    from easyremote.server._registry import FunctionStats, NodeRecord


class ResultSink(Protocol):
    """Where a call's outcome frames go (a client session or a unary RPC)."""

    def send_result(self, result: common_pb2.CallResult) -> None:
        """Delivers an outcome frame whose call_id is already the caller's."""

    def send_chunk(self, chunk: DataChunk) -> None:
        """Delivers a continuation chunk of the last outcome frame."""

    def call_finished(self, call: Call) -> None:
        """The call reached its outcome; no more frames follow."""


def error_result(
    call_id: int, reason: int, message: str, *, node_id: str = "", attempt: int = 0
) -> common_pb2.CallResult:
    """Builds an ERROR outcome frame."""
    result = common_pb2.CallResult(call_id=call_id, kind=common_pb2.RESULT_KIND_ERROR)
    error = result.error
    error.reason = reason  # type: ignore[assignment]
    error.message = message
    error.node_id = node_id
    error.attempt = attempt
    result.node_id = node_id
    result.attempt = attempt
    return result


@dataclass(eq=False)
class Call:
    """One client call inside the gateway.

    The pickled arguments are kept (as the chunks that arrived, no copy) until
    the outcome, so a call whose node is lost can be re-run elsewhere.
    """

    call_id: int
    sink: ResultSink
    options: client_pb2.CallOptions
    caller_versions: common_pb2.Versions
    deadline: float | None = None
    args: list[bytes | memoryview] = field(default_factory=list)
    args_complete: bool = False
    args_bytes: int = 0
    # Dispatches so far (1 on the first node) and node losses survived.
    attempt: int = 0
    losses: int = 0
    reroutes: int = 0
    node: NodeRecord | None = None
    stats: FunctionStats | None = None
    dispatch_id: int = 0
    dispatched_at: float = 0.0
    queued: bool = False
    # The caller has its outcome (or gave up): frames from the node are dropped.
    finished: bool = False
    # Stream items granted by the caller in total, and items delivered.
    credit: int = 0
    items_delivered: int = 0
    # Kind of the outcome payload still receiving chunks (0: none).
    open_kind: int = 0
    timer: asyncio.TimerHandle | None = None
    # Until this loop time the call may wait for an eligible node to connect
    # (CallOptions.wait_for_node_s); 0: refused at once when there is none.
    wait_until: float = 0.0
    wait_timer: asyncio.TimerHandle | None = None

    @property
    def function(self) -> str:
        return self.options.function

    @property
    def stream(self) -> bool:
        return self.options.stream
