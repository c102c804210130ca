"""Routes calls to nodes and relays their outcomes: the gateway's core.

All methods run on the gateway's event loop and never await, so every state
change (slots, queues, call table) is atomic. Servicers decode frames and call
into this class; the node and client links only queue frames.
"""

from __future__ import annotations

import asyncio
import difflib
import heapq
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from easyremote.proto import DataChunk
from easyremote.proto.v1 import common_pb2, node_pb2
from easyremote.server._balancer import choose, exclusion_reason, partition
from easyremote.server._calls import Call, error_result
from easyremote.server._registry import FunctionStats, NodeRecord, Registry, ewma

logger = logging.getLogger("easyremote.server")


# A node lost mid-call costs one attempt; the third loss ends the call.
MAX_ATTEMPTS = 3
# Refusals by nodes (draining, full) are re-routed, but not forever.
_MAX_REROUTES = 16
# Stream items a node may send before the caller grants more.
DEFAULT_STREAM_CREDIT = 16


# Served names listed when a call names a function no node serves.
MAX_LISTED_FUNCTIONS = 10
# Names scored for likeness to the unknown one (those closest in length): keeps
# a refusal cheap on a gateway whose nodes serve thousands of functions.
_MAX_SCORED_FUNCTIONS = 500
# Longer requested names are not compared at all (similarity costs their
# length times each served name's).
_MAX_COMPARED_CHARS = 256
# How alike a served name must be to be offered as "did you mean" (difflib's
# own default for close matches).
_SUGGEST_CUTOFF = 0.6


def unknown_function_message(function: str, registry: Registry) -> str:
    """Why a call of ``function`` has no node: what is served instead, closest first."""
    message = f"no connected node serves {function!r}"
    if not len(registry):
        return f"{message} (no nodes are connected)"
    names = list(registry.function_names())
    if not names:
        return f"{message} (the connected nodes serve no functions)"
    closest = _closest(function, names)
    listed = ", ".join(name for _, name in closest)
    more = len(names) - len(closest)
    if more > 0:
        listed += f" and {more} more"
    best_score, best = closest[0]
    if best_score >= _SUGGEST_CUTOFF:
        return f"{message}; did you mean {best!r}? Served: {listed}"
    return f"{message}; served: {listed}"


def _closest(function: str, names: list[str]) -> list[tuple[float, str]]:
    """Up to MAX_LISTED_FUNCTIONS (similarity, name) pairs, most similar first."""
    if len(function) > _MAX_COMPARED_CHARS:
        # No function is named like that; comparing would only cost time.
        return [(0.0, name) for name in heapq.nsmallest(MAX_LISTED_FUNCTIONS, names)]
    if len(names) > _MAX_SCORED_FUNCTIONS:
        # Names of a very different length cannot be very similar.
        size = len(function)
        names = heapq.nsmallest(_MAX_SCORED_FUNCTIONS, names, key=lambda n: abs(len(n) - size))
    matcher = difflib.SequenceMatcher(b=function)  # seq2 is analysed once, reused
    scored = []
    for name in names:
        matcher.set_seq1(name)
        scored.append((matcher.ratio(), name))
    # Ties go alphabetically, so the list reads the same every time.
    return heapq.nsmallest(MAX_LISTED_FUNCTIONS, scored, key=lambda pair: (-pair[0], pair[1]))


@dataclass
class RouterConfig:
    """Tunables of routing; see Server for their meaning."""

    default_strategy: int = common_pb2.STRATEGY_SMART_ADAPTIVE
    max_queue: int = 1000
    max_payload_bytes: int = 0


@dataclass
class RouterStats:
    """Counters for status pages and tests."""

    calls_started: int = 0
    calls_succeeded: int = 0
    calls_failed: int = 0
    retries: int = 0
    dropped_results: int = 0


class Router:
    """Owns routing state: queues, dispatches, results, failover."""

    def __init__(self, registry: Registry, config: RouterConfig) -> None:
        self.registry = registry
        self.config = config
        self.stats = RouterStats()
        self._queues: dict[str, deque[Call]] = {}
        self._dispatch_seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def queued(self, function: str) -> int:
        queue = self._queues.get(function)
        return len(queue) if queue else 0

    # ----------------------------------------------------------------- callers

    def start_call(self, call: Call) -> None:
        """Takes a new call: routes it, queues it, or fails it at once."""
        self.stats.calls_started += 1
        timeout_ms = call.options.timeout_ms
        if timeout_ms:
            call.deadline = self.loop.time() + timeout_ms / 1000.0
            call.timer = self.loop.call_at(call.deadline, self._expire, call)
        call.credit = call.options.credit or DEFAULT_STREAM_CREDIT
        wait = call.options.wait_for_node_s
        if wait > 0:
            call.wait_until = self.loop.time() + wait
        self._note_args(call)
        if not call.finished:
            self._route(call)

    def add_args(self, call: Call, data: bytes | memoryview, more: bool) -> None:
        """A further chunk of the call's arguments arrived."""
        if call.finished or call.args_complete:
            return
        call.args.append(data)
        call.args_complete = not more
        self._note_args(call)
        if call.finished:
            return
        if call.node is not None:
            call.node.link.send(DataChunk(call.dispatch_id, data, more), len(data))

    def add_credit(self, call: Call, items: int) -> None:
        """The caller is ready for ``items`` more stream items."""
        if call.finished:
            return
        call.credit += items
        if call.node is not None:
            frame = node_pb2.GatewayFrame()
            frame.credit.call_id = call.dispatch_id
            frame.credit.items = items
            call.node.link.send(frame)

    def cancel(self, call: Call, reason: str = "cancelled by caller") -> None:
        """The caller gave up; the node (if any) is told, nothing is retried."""
        if call.finished:
            return
        self._finish_for_caller(call)
        self.stats.calls_failed += 1
        self._cancel_on_node(call, reason)

    # ------------------------------------------------------------------ nodes

    def node_joined(self, node: NodeRecord) -> None:
        for function in node.functions:
            self._pump(function)

    def node_draining(self, node: NodeRecord) -> None:
        """``node`` takes no new calls: queued calls only it could take fail now."""
        for function in node.functions:
            self._fail_unroutable_queued(function)

    def node_available(self, node: NodeRecord) -> None:
        """Something freed up on ``node``: start calls waiting for it."""
        for function in node.functions:
            if self._queues.get(function):
                self._pump(function)

    def node_result(self, node: NodeRecord, result: common_pb2.CallResult) -> None:
        call = node.calls.get(result.call_id)
        if call is None:
            self.stats.dropped_results += 1
            return
        kind = result.kind
        if (
            kind == common_pb2.RESULT_KIND_ERROR
            and result.error.reason == common_pb2.ERROR_REASON_REJECTED
        ):
            self._release(node, call, success=None)
            if not call.finished:
                self._reroute(call, f"{node.node_id} refused: {result.error.message}")
            return
        if call.finished:
            # The caller gave up: the frame is dropped (and counted); the
            # node's last frame for the call frees the slot.
            self.stats.dropped_results += 1
            if result.more:
                call.open_kind = kind
            elif kind != common_pb2.RESULT_KIND_ITEM:
                self._release(node, call, success=None)
            return
        result.call_id = call.call_id
        result.node_id = node.node_id
        result.attempt = call.attempt
        if kind == common_pb2.RESULT_KIND_ERROR:
            result.error.node_id = node.node_id
            result.error.attempt = call.attempt
            result.error.items_delivered = call.items_delivered
        elif kind == common_pb2.RESULT_KIND_ITEM and not result.more:
            # An item counts once complete: a partial one is discarded by the
            # client, and a stream that delivered nothing may still be re-run.
            call.items_delivered += 1
        if not result.more and kind != common_pb2.RESULT_KIND_ITEM:
            # Free the slot first: a queued call is then sent to the node
            # before this result goes to its caller, so the node idles for
            # one write less.
            self._release(node, call, success=kind != common_pb2.RESULT_KIND_ERROR)
        call.sink.send_result(result)
        if result.more:
            call.open_kind = kind
        elif kind != common_pb2.RESULT_KIND_ITEM:
            self._complete(node, call, success=kind != common_pb2.RESULT_KIND_ERROR)

    def node_chunk(self, node: NodeRecord, chunk: DataChunk) -> None:
        call = node.calls.get(chunk.call_id)
        if call is None or not call.open_kind:
            self.stats.dropped_results += 1
            return
        kind = call.open_kind
        if not chunk.more:
            call.open_kind = 0
        if call.finished:
            if not chunk.more and kind != common_pb2.RESULT_KIND_ITEM:
                self._release(node, call, success=None)
            return
        chunk.call_id = call.call_id
        if kind == common_pb2.RESULT_KIND_ITEM and not chunk.more:
            call.items_delivered += 1
        call.sink.send_chunk(chunk)
        if not chunk.more and kind != common_pb2.RESULT_KIND_ITEM:
            self._complete(node, call, success=kind != common_pb2.RESULT_KIND_ERROR)

    def node_lost(self, node: NodeRecord, why: str) -> None:
        """``node``'s stream ended: its calls are re-run or failed clearly."""
        calls = list(node.calls.values())
        node.calls.clear()
        node.in_flight = 0
        for stats in node.functions.values():
            stats.in_flight = 0
        for call in calls:
            call.node = None
            call.stats = None
            call.open_kind = 0
            if call.finished:
                continue
            self._after_node_lost(call, node, why)
        for function in node.functions:
            self._fail_unroutable_queued(function)

    # ---------------------------------------------------------------- routing

    def _route(self, call: Call) -> None:
        split = self._candidates(call)
        if split is None:
            return
        free, eligible = split
        choice = choose(free, call.options.strategy or self.config.default_strategy)
        if choice is not None:
            self._dispatch(call, *choice)
            return
        queue = self._queues.setdefault(call.function, deque())
        if len(queue) >= self.config.max_queue:
            if not queue:
                del self._queues[call.function]
            busy = (
                f"all {eligible} eligible node(s) for {call.function!r} are busy"
                if eligible
                else f"no node for {call.function!r} has connected yet"
            )
            self._fail(
                call,
                common_pb2.ERROR_REASON_QUEUE_FULL,
                f"{busy} and {len(queue)} calls are already waiting "
                f"(gateway max_queue={self.config.max_queue})",
            )
            return
        call.queued = True
        queue.append(call)

    def _candidates(self, call: Call) -> tuple[list[tuple[NodeRecord, FunctionStats]], int] | None:
        """(eligible nodes with a free slot, eligible count) for ``call``.

        Fails the call, naming every node and why it was excluded, when no
        node could ever take it; returns None then.
        """
        function = call.function
        pinned = call.options.node_id
        if pinned:
            node = self.registry.get(pinned)
            if node is None:
                if call.wait_until and self.loop.time() < call.wait_until:
                    if call.wait_timer is None:
                        call.wait_timer = self.loop.call_at(call.wait_until, self._wait_over, call)
                    return [], 0
                self._fail(
                    call,
                    common_pb2.ERROR_REASON_NODE_NOT_FOUND,
                    f"node {pinned!r} is not connected",
                )
                return None
            candidates: Iterable[NodeRecord] = (node,)
        else:
            candidates = self.registry.serving(function)
        free, eligible = partition(candidates, function, call.options, bool(pinned))
        if eligible:
            return free, eligible
        if call.wait_until and self.loop.time() < call.wait_until:
            # Asked to wait for a node: queue it; joining nodes pump the queue,
            # and when the wait ends it is checked once more, then refused.
            if call.wait_timer is None:
                call.wait_timer = self.loop.call_at(call.wait_until, self._wait_over, call)
            return [], 0
        reasons = [
            f"{node.node_id}: {exclusion_reason(node, function, call.options, bool(pinned))}"
            for node in candidates
        ]
        if not reasons:
            message = unknown_function_message(function, self.registry)
        else:
            message = f"no eligible node for {function!r} ({'; '.join(sorted(reasons))})"
        self._fail(call, common_pb2.ERROR_REASON_NO_AVAILABLE_NODES, message)
        return None

    def _dispatch(self, call: Call, node: NodeRecord, stats: FunctionStats) -> None:
        self._dispatch_seq += 1
        seq = self._dispatch_seq
        stats.last_dispatch = seq
        call.queued = False
        call.attempt += 1
        call.node = node
        call.stats = stats
        call.dispatch_id = seq
        call.dispatched_at = self.loop.time()
        node.calls[seq] = call
        node.in_flight += 1
        stats.in_flight += 1

        frame = node_pb2.GatewayFrame()
        execute = frame.execute
        execute.call_id = seq
        execute.attempt = call.attempt
        execute.function = call.function
        execute.stream = call.stream
        if call.deadline is not None:
            left = call.deadline - call.dispatched_at
            execute.timeout_ms = max(1, int(left * 1000))
        execute.caller_versions.CopyFrom(call.caller_versions)
        if call.stream:
            execute.credit = max(0, call.credit - call.items_delivered)
        args = call.args
        first = args[0] if args else b""
        assert isinstance(first, bytes)  # the CallStart's own bytes, never a chunk view
        execute.data = first
        execute.more = len(args) > 1 or not call.args_complete
        link = node.link
        # Alone on its node, the call's frame is written at once (Outbox.put).
        link.send(frame, len(first), now=node.in_flight == 1 and not execute.more)
        last = len(args) - 1
        for index in range(1, len(args)):
            piece = args[index]
            more = index < last or not call.args_complete
            link.send(DataChunk(seq, piece, more), len(piece))

    def _wait_over(self, call: Call) -> None:
        """The call's wait for a node ended: route it now or refuse it."""
        call.wait_timer = None
        call.wait_until = 0.0
        if call.finished or not call.queued:
            return
        split = self._candidates(call)  # refuses it, with reasons, if no node fits
        if split is not None:
            self._pump(call.function)

    def _pump(self, function: str) -> None:
        """Starts queued calls of ``function`` that can run now, in FIFO order."""
        queue = self._queues.get(function)
        if not queue:
            return
        kept: deque[Call] = deque()
        while queue:
            call = queue.popleft()
            if call.finished:
                continue
            split = self._candidates(call)
            if split is None:
                continue
            free, _ = split
            choice = choose(free, call.options.strategy or self.config.default_strategy)
            if choice is None:
                kept.append(call)
                if not any(n.has_free_slot(s) for n, s in self._all_serving(function)):
                    break
                continue
            self._dispatch(call, *choice)
        kept.extend(queue)
        if kept:
            self._queues[function] = kept
        else:
            self._queues.pop(function, None)

    def _all_serving(self, function: str) -> list[tuple[NodeRecord, FunctionStats]]:
        return [(n, n.functions[function]) for n in self.registry.serving(function) if n.accepting]

    def _fail_unroutable_queued(self, function: str) -> None:
        """Fails queued calls that no connected node can ever take any more."""
        queue = self._queues.get(function)
        if not queue:
            return
        for call in list(queue):
            if not call.finished:
                self._candidates(call)
        self._pump(function)

    def _reroute(self, call: Call, why: str) -> None:
        call.reroutes += 1
        if call.reroutes > _MAX_REROUTES:
            self._fail(
                call,
                common_pb2.ERROR_REASON_UNAVAILABLE,
                f"call refused {call.reroutes} times; last: {why}",
            )
            return
        self._route(call)

    def _after_node_lost(self, call: Call, node: NodeRecord, why: str) -> None:
        spec = node.functions.get(call.function)
        idempotent = spec.spec.idempotent if spec is not None else False
        call.losses += 1
        if call.stream and call.items_delivered:
            self._fail(
                call,
                common_pb2.ERROR_REASON_STREAM_INTERRUPTED,
                f"node {node.node_id!r} was lost ({why}) after the stream delivered "
                f"{call.items_delivered} item(s); it is not restarted",
                node_id=node.node_id,
            )
        elif not idempotent:
            self._fail(
                call,
                common_pb2.ERROR_REASON_NODE_LOST,
                f"node {node.node_id!r} was lost ({why}) while running {call.function!r}, "
                "registered idempotent=False: outcome unknown, not re-run",
                node_id=node.node_id,
            )
        elif call.losses >= MAX_ATTEMPTS:
            self._fail(
                call,
                common_pb2.ERROR_REASON_NODE_LOST,
                f"node {node.node_id!r} was lost ({why}); gave up after {call.losses} node losses",
                node_id=node.node_id,
            )
        else:
            self.stats.retries += 1
            logger.info(
                "re-running %s (attempt %d) after losing %s",
                call.function,
                call.attempt + 1,
                node.node_id,
            )
            self._route(call)

    # -------------------------------------------------------------- outcomes

    def _note_args(self, call: Call) -> None:
        size = len(call.args[-1]) if call.args else 0
        call.args_bytes += size
        limit = self.config.max_payload_bytes
        if limit and call.args_bytes > limit:
            self.cancel_with_error(
                call,
                common_pb2.ERROR_REASON_PAYLOAD_TOO_LARGE,
                f"arguments exceed the gateway's limit of {limit} bytes",
            )

    def cancel_with_error(self, call: Call, reason: int, message: str) -> None:
        """Ends ``call`` for its caller with an error and stops it on its node."""
        if call.finished:
            return
        self._fail(call, reason, message)
        self._cancel_on_node(call, message)

    def _expire(self, call: Call) -> None:
        call.timer = None
        if call.finished:
            return
        timeout = call.options.timeout_ms / 1000.0
        where = f" on {call.node.node_id!r}" if call.node else " (still waiting for a node)"
        self.cancel_with_error(
            call,
            common_pb2.ERROR_REASON_DEADLINE_EXCEEDED,
            f"{call.function!r} did not finish within {timeout:g} s{where}",
        )

    def _cancel_on_node(self, call: Call, reason: str) -> None:
        node = call.node
        if node is None:
            return
        frame = node_pb2.GatewayFrame()
        frame.cancel.call_id = call.dispatch_id
        frame.cancel.reason = reason
        node.link.send(frame)

    def _fail(self, call: Call, reason: int, message: str, *, node_id: str = "") -> None:
        if call.finished:
            return
        result = error_result(call.call_id, reason, message, node_id=node_id, attempt=call.attempt)
        result.error.items_delivered = call.items_delivered
        call.sink.send_result(result)
        self.stats.calls_failed += 1
        self._finish_for_caller(call)

    def _finish_for_caller(self, call: Call) -> None:
        call.finished = True
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
        if call.wait_timer is not None:
            call.wait_timer.cancel()
            call.wait_timer = None
        if call.queued:
            queue = self._queues.get(call.function)
            if queue is not None:
                try:
                    queue.remove(call)
                except ValueError:
                    pass
                if not queue:
                    del self._queues[call.function]
            call.queued = False
        call.args = []
        call.sink.call_finished(call)

    def _complete(self, node: NodeRecord, call: Call, success: bool) -> None:
        if success:
            self.stats.calls_succeeded += 1
        else:
            self.stats.calls_failed += 1
        self._release(node, call, success=success)
        self._finish_for_caller(call)

    def _release(self, node: NodeRecord, call: Call, success: bool | None) -> None:
        """Frees the slot ``call`` held on ``node`` and records the outcome."""
        if node.calls.pop(call.dispatch_id, None) is None:
            return
        stats = call.stats
        call.node = None
        call.stats = None
        node.in_flight -= 1
        if stats is not None:
            stats.in_flight -= 1
            if success is not None:
                elapsed_ms = (self.loop.time() - call.dispatched_at) * 1000.0
                if success:
                    stats.completed += 1
                    node.completed += 1
                    stats.record_latency(elapsed_ms)
                    node.latency_ms = ewma(node.latency_ms, elapsed_ms)
                else:
                    stats.failed += 1
                    node.failed += 1
        self.node_available(node)
