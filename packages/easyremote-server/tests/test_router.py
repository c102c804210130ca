"""Router state machine with in-memory links: slots, queue, failover, results."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from easyremote.proto.v1 import client_pb2, common_pb2, node_pb2
from easyremote.server._calls import Call
from easyremote.server._registry import NodeRecord, Registry
from easyremote.server._router import Router, RouterConfig

_K = common_pb2.ResultKind
_R = common_pb2.ErrorReason


class Link:
    def __init__(self) -> None:
        self.frames: list[node_pb2.GatewayFrame] = []

    def send(self, frame: node_pb2.GatewayFrame, size: int = 0, *, now: bool = False) -> None:
        self.frames.append(frame)

    def executes(self) -> list[node_pb2.Execute]:
        return [f.execute for f in self.frames if f.WhichOneof("kind") == "execute"]


class Sink:
    def __init__(self) -> None:
        self.results: list[common_pb2.CallResult] = []
        self.finished: list[int] = []

    def send_result(self, result: common_pb2.CallResult) -> None:
        copy = common_pb2.CallResult()
        copy.CopyFrom(result)
        self.results.append(copy)

    def send_chunk(self, chunk: common_pb2.Chunk) -> None:
        pass

    def call_finished(self, call: Call) -> None:
        self.finished.append(call.call_id)


def add_node(
    registry: Registry, router: Router, node_id: str, slots: int = 1, idempotent: bool = True
) -> tuple[NodeRecord, Link]:
    link = Link()
    hello = node_pb2.NodeHello(node_id=node_id, max_concurrency=slots)
    hello.functions.add(name="f", load_balancing=True, idempotent=idempotent)
    record = NodeRecord.from_hello(hello, link, "test")  # type: ignore[arg-type]
    registry.add(record)
    router.node_joined(record)
    return record, link


def run(scenario: Callable[[Registry, Router, Sink], Any], **config: Any) -> Any:
    async def main() -> Any:
        registry = Registry()
        router = Router(registry, RouterConfig(**config))
        return scenario(registry, router, Sink())

    return asyncio.run(main())


def start(router: Router, sink: Sink, call_id: int, **options: Any) -> Call:
    call = Call(
        call_id=call_id,
        sink=sink,
        options=client_pb2.CallOptions(function="f", **options),
        caller_versions=common_pb2.Versions(),
        args=[b"args"],
        args_complete=True,
    )
    router.start_call(call)
    return call


def value(record: NodeRecord, dispatch_id: int, data: bytes = b"ok") -> common_pb2.CallResult:
    return common_pb2.CallResult(call_id=dispatch_id, kind=_K.RESULT_KIND_VALUE, data=data)


def test_busy_slots_queue_then_dispatch_in_order() -> None:
    def scenario(registry: Registry, router: Router, sink: Sink) -> None:
        node, link = add_node(registry, router, "a", slots=1)
        start(router, sink, 1)
        start(router, sink, 2)
        assert len(link.executes()) == 1
        assert router.queued("f") == 1
        router.node_result(node, value(node, link.executes()[0].call_id))
        assert [r.call_id for r in sink.results] == [1]
        assert len(link.executes()) == 2
        assert node.in_flight == 1

    run(scenario)


def test_full_queue_is_refused_with_queue_full() -> None:
    def scenario(registry: Registry, router: Router, sink: Sink) -> None:
        add_node(registry, router, "a", slots=1)
        for call_id in (1, 2, 3):
            start(router, sink, call_id)
        assert [r.error.reason for r in sink.results] == [_R.ERROR_REASON_QUEUE_FULL]
        assert "max_queue=1" in sink.results[0].error.message

    run(scenario, max_queue=1)


def test_node_lost_reruns_idempotent_calls_elsewhere() -> None:
    def scenario(registry: Registry, router: Router, sink: Sink) -> None:
        a, link_a = add_node(registry, router, "a")
        b, link_b = add_node(registry, router, "b")
        start(router, sink, 1, node_id="")
        first = (link_a.executes() or link_b.executes())[0]
        lost, other, other_link = (a, b, link_b) if link_a.executes() else (b, a, link_a)
        registry.remove(lost)
        router.node_lost(lost, "killed")
        rerun = other_link.executes()[-1]
        assert rerun.attempt == 2 and rerun.call_id != first.call_id
        # A late result from the lost attempt is dropped.
        router.node_result(lost, value(lost, first.call_id, b"late"))
        router.node_result(other, value(other, rerun.call_id, b"fresh"))
        assert [r.data for r in sink.results] == [b"fresh"]
        assert router.stats.dropped_results == 1

    run(scenario)


def test_node_lost_with_non_idempotent_call_reports_outcome_unknown() -> None:
    def scenario(registry: Registry, router: Router, sink: Sink) -> None:
        a, _ = add_node(registry, router, "a", idempotent=False)
        add_node(registry, router, "b", idempotent=False)
        start(router, sink, 1, node_id="a")
        registry.remove(a)
        router.node_lost(a, "killed")
        assert sink.results[0].error.reason == _R.ERROR_REASON_NODE_LOST
        assert "outcome unknown" in sink.results[0].error.message

    run(scenario)


def test_rejected_calls_are_rerouted_and_cancel_reaches_the_node() -> None:
    def scenario(registry: Registry, router: Router, sink: Sink) -> None:
        a, link_a = add_node(registry, router, "a")
        call = start(router, sink, 1, node_id="a")
        refused = common_pb2.CallResult(
            call_id=link_a.executes()[0].call_id, kind=_K.RESULT_KIND_ERROR
        )
        refused.error.reason = _R.ERROR_REASON_REJECTED
        router.node_result(a, refused)
        assert len(link_a.executes()) == 2 and not sink.results
        router.cancel(call)
        assert link_a.frames[-1].WhichOneof("kind") == "cancel"
        assert a.in_flight == 1  # the slot is held until the node confirms
        confirm = common_pb2.CallResult(
            call_id=link_a.executes()[1].call_id, kind=_K.RESULT_KIND_ERROR
        )
        confirm.error.reason = _R.ERROR_REASON_CANCELLED
        router.node_result(a, confirm)
        assert a.in_flight == 0 and not sink.results

    run(scenario)


def test_no_eligible_node_names_every_node_and_reason() -> None:
    def scenario(registry: Registry, router: Router, sink: Sink) -> None:
        add_node(registry, router, "a")
        add_node(registry, router, "b")
        start(router, sink, 1, requirements=common_pb2.Requirements(gpu_required=True))
        error = sink.results[0].error
        assert error.reason == _R.ERROR_REASON_NO_AVAILABLE_NODES
        assert "a: no GPU; b: no GPU" in error.message

    run(scenario)


def test_exactly_one_outcome_reaches_the_caller() -> None:
    def scenario(registry: Registry, router: Router, sink: Sink) -> None:
        a, link_a = add_node(registry, router, "a", slots=1)
        b, _ = add_node(registry, router, "b", slots=1)
        start(router, sink, 1, node_id="a")
        dispatch = link_a.executes()[-1].call_id
        # From a node the call was not sent to: dropped.
        router.node_result(b, value(b, dispatch, b"impostor"))
        assert sink.results == []
        router.node_result(a, value(a, dispatch, b"first"))
        # A duplicate of the outcome: dropped.
        router.node_result(a, value(a, dispatch, b"again"))
        assert [r.data for r in sink.results] == [b"first"]
        assert router.stats.dropped_results == 2

        # After a cancel, the node's answer is dropped but frees the slot.
        call = start(router, sink, 2, node_id="a")
        dispatch = link_a.executes()[-1].call_id
        router.cancel(call)
        assert a.in_flight == 1  # held until the node answers
        router.node_result(a, value(a, dispatch, b"too late"))
        assert [r.data for r in sink.results] == [b"first"]
        assert router.stats.dropped_results == 3
        assert a.in_flight == 0

    run(scenario)


def test_a_draining_node_fails_the_calls_queued_only_for_it() -> None:
    def scenario(registry: Registry, router: Router, sink: Sink) -> None:
        a, _ = add_node(registry, router, "a", slots=1)
        start(router, sink, 1, node_id="a")
        start(router, sink, 2, node_id="a")  # queued behind call 1
        assert router.queued("f") == 1
        a.state = client_pb2.NODE_STATE_DRAINING
        router.node_draining(a)
        assert router.queued("f") == 0
        assert [r.error.reason for r in sink.results] == [_R.ERROR_REASON_NO_AVAILABLE_NODES]
        assert "draining" in sink.results[0].error.message

    run(scenario)


def _start_named(router: Router, sink: Sink, call_id: int, function: str) -> Call:
    call = Call(
        call_id=call_id,
        sink=sink,
        options=client_pb2.CallOptions(function=function),
        caller_versions=common_pb2.Versions(),
        args=[b"args"],
        args_complete=True,
    )
    router.start_call(call)
    return call


def test_unknown_function_is_refused_with_the_served_names() -> None:
    def scenario(registry: Registry, router: Router, sink: Sink) -> None:
        _start_named(router, sink, 1, "g")
        add_node(registry, router, "a")
        _start_named(router, sink, 2, "ff")
        _start_named(router, sink, 3, "zzz")
        reasons = {r.error.reason for r in sink.results}
        assert reasons == {_R.ERROR_REASON_NO_AVAILABLE_NODES}
        assert [r.error.message for r in sink.results] == [
            "no connected node serves 'g' (no nodes are connected)",
            "no connected node serves 'ff'; did you mean 'f'? Served: f",
            "no connected node serves 'zzz'; served: f",
        ]

    run(scenario)
