"""Runs one call on the node: arguments in, value or stream of items out."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator
from typing import TYPE_CHECKING, Any

from easyremote.node._context import CallContext, reset_current, set_current
from easyremote.node._functions import FunctionKind, RegisteredFunction
from easyremote.node._isolation import IsolatedGenerator
from easyremote.node._outcomes import CallFailed as _CallFailed
from easyremote.node._outcomes import dump_value, load_arguments, log_failure
from easyremote.node._outcomes import failure as _failure
from easyremote.node._outcomes import user_failure as _user_failure
from easyremote.node._serialization import INLINE_PICKLE_BYTES
from easyremote.node._workers import WorkerPool
from easyremote.proto import DataChunk, OutboxClosedError, Payload
from easyremote.proto.framing import INLINE_PAYLOAD_BYTES, split_payload
from easyremote.proto.v1 import common_pb2, node_pb2

if TYPE_CHECKING:
    from easyremote.proto import Outbox

_DONE = object()
# A user exception travels pickled (the caller gets the exception object) up
# to this size, inline in its error frame; beyond it, as type, message and
# traceback text only.
MAX_PICKLED_EXCEPTION_BYTES = 2 << 20


class Execution:
    """One dispatch of a call on this node, from Execute to its outcome."""

    def __init__(
        self,
        execute: node_pb2.Execute,
        function: RegisteredFunction,
        outbox: Outbox[node_pb2.NodeFrame],
        pool: WorkerPool,
        on_done: Callable[[Execution], None],
        alone: Callable[[], bool] = lambda: False,
    ) -> None:
        self.call_id = execute.call_id
        self.function = function
        self.stream = execute.stream
        self.caller_versions = execute.caller_versions
        timeout_ms = execute.timeout_ms or int((function.timeout or 0) * 1000)
        self.timeout = timeout_ms / 1000.0 if timeout_ms else None
        self.context = CallContext(
            call_id=execute.call_id,
            function=function.name,
            attempt=execute.attempt,
            deadline=time.monotonic() + self.timeout if self.timeout else None,
        )
        self._outbox = outbox
        self._pool = pool
        self._parts: list[bytes | memoryview] = [execute.data]
        # Most calls arrive whole; only chunked arguments need an event.
        self._args_ready: asyncio.Event | None = asyncio.Event() if execute.more else None
        self._credit = execute.credit
        # Streams only: a plain call never waits for credit.
        self._credit_event: asyncio.Event | None = asyncio.Event() if self.stream else None
        self._gen_lock = threading.Lock()
        # Hand-off of a sync generator created on a worker thread, in case the
        # call is cancelled while it is being created.
        self._start_lock = threading.Lock()
        self._start_abandoned = False
        self._started: Generator[Any, None, None] | IsolatedGenerator | None = None
        self._cancel_reason = ""
        self._on_done = on_done
        # True while no other call runs on this node: outcome frames are then
        # written at once instead of batched (Outbox.put).
        self._alone = alone
        self._done = False
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begins running; the outcome is sent and ``on_done`` called once."""
        if self.function.kind is FunctionKind.SYNC and not self.stream and self._args_ready is None:
            # Hot path: no task, one worker-thread hop, one callback back.
            if self.timeout is not None:
                self._timer = self._loop.call_later(self.timeout, self._sync_expired)
            self._pool.submit(self._sync_job)
        else:
            self.task = asyncio.ensure_future(self._run_task())
            self.task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # A task cancelled before its first step runs none of its body (no
        # `finally`, no CANCELLED frame): answer for it, or its slot would be
        # held forever on both node and gateway.
        if not self._done:
            self._finish()
            self._send_error(self._cancelled_error())

    def _finish(self) -> bool:
        """Marks the outcome as decided; False if it already was."""
        if self._done:
            return False
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
        self._on_done(self)
        return True

    # ---------------------------------------------------------- sync hot path

    def _sync_job(self) -> None:
        if self._done:
            return  # cancelled or expired while waiting for a worker: never start it
        payload = Payload(self._parts)
        self._parts = []
        try:
            outcome: Payload | _CallFailed = self._run_sync(payload)
        except _CallFailed as failed:
            outcome = failed
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            outcome = _failure(
                common_pb2.ERROR_REASON_INTERNAL, f"node failed to run the call: {exc!r}"
            )
        self._loop.call_soon_threadsafe(self._sync_settled, outcome)

    def _sync_settled(self, outcome: Payload | _CallFailed) -> None:
        if self._done:
            return  # cancelled or timed out meanwhile: the caller has its answer
        if isinstance(outcome, _CallFailed):
            self._finish()
            self._send_error(outcome.error, outcome.data)
        elif len(outcome) <= INLINE_PAYLOAD_BYTES:
            self._finish()
            self._send_small(common_pb2.RESULT_KIND_VALUE, outcome.tobytes())
        else:
            # Large results wait on the outbox's high-water mark; the gateway's
            # own deadline still covers the call while they stream out.
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.task = asyncio.ensure_future(self._send_large(outcome))
            self.task.add_done_callback(self._task_done)

    async def _send_large(self, data: Payload) -> None:
        try:
            await self._send_payload(common_pb2.RESULT_KIND_VALUE, data)
        except asyncio.CancelledError:
            # Ends the partial value for the gateway, which frees the slot.
            self._send_error(self._cancelled_error())
        except OutboxClosedError:
            pass  # the stream is gone: the gateway settles the call itself
        finally:
            self._finish()

    def _sync_expired(self) -> None:
        self._timer = None
        self.context.cancel()
        if self._finish():
            self._send_error(
                common_pb2.Error(
                    reason=common_pb2.ERROR_REASON_DEADLINE_EXCEEDED,
                    message=f"{self.function.name!r} did not finish within {self.timeout:g} s",
                )
            )

    # ----------------------------------------------------------- from the gateway

    def add_chunk(self, data: bytes | memoryview, more: bool) -> None:
        if self._args_ready is None or self._args_ready.is_set():
            return
        self._parts.append(data)
        if not more:
            self._args_ready.set()

    def add_credit(self, items: int) -> None:
        self._credit += items
        if self._credit_event is not None:
            self._credit_event.set()

    def cancel(self, reason: str) -> None:
        """Stops the call: async code sees CancelledError, sync code the flag."""
        self._cancel_reason = reason or "cancelled"
        self.context.cancel()
        if self.task is not None:
            self.task.cancel()
        elif self._finish():
            # The worker thread runs on (it cannot be interrupted); its
            # result will be dropped.
            self._send_error(self._cancelled_error())

    def _cancelled_error(self) -> common_pb2.Error:
        return common_pb2.Error(
            reason=common_pb2.ERROR_REASON_CANCELLED, message=self._cancel_reason or "cancelled"
        )

    # ------------------------------------------------------------------ running

    async def _run_task(self) -> None:
        try:
            await self.run()
        finally:
            self._finish()

    async def run(self) -> None:
        """Runs the call and sends exactly one outcome (unless orphaned)."""
        try:
            if self.timeout is None:
                await self._execute()
            else:
                await asyncio.wait_for(self._execute(), self.timeout)
        except _CallFailed as failed:
            self._send_error(failed.error, failed.data)
        except asyncio.TimeoutError:
            self.context.cancel()
            self._send_error(
                common_pb2.Error(
                    reason=common_pb2.ERROR_REASON_DEADLINE_EXCEEDED,
                    message=f"{self.function.name!r} did not finish within {self.timeout:g} s",
                )
            )
        except asyncio.CancelledError:
            self.context.cancel()
            self._send_error(
                common_pb2.Error(
                    reason=common_pb2.ERROR_REASON_CANCELLED,
                    message=self._cancel_reason or "cancelled",
                )
            )
        except Exception as exc:  # noqa: BLE001 - a node bug must still answer the call
            self._send_error(
                common_pb2.Error(
                    reason=common_pb2.ERROR_REASON_INTERNAL,
                    message=f"node failed to run the call: {exc!r}",
                )
            )

    async def _execute(self) -> None:
        if self._args_ready is not None:
            await self._args_ready.wait()
        # Unpickled straight from the chunks as they arrived: no joined copy.
        payload = Payload(self._parts)
        self._parts = []
        kind = self.function.kind
        name = self.function.name
        if self.stream and not kind.streaming:
            raise _failure(
                common_pb2.ERROR_REASON_INVALID_ARGUMENT,
                f"{name!r} is not a generator function; use call() instead of call_stream()",
            )
        if not self.stream and kind.streaming:
            raise _failure(
                common_pb2.ERROR_REASON_INVALID_ARGUMENT,
                f"{name!r} is a generator function; use call_stream() to receive its items",
            )
        if kind is FunctionKind.SYNC:
            data = await self._pool.run(self._run_sync, payload)
            await self._send_payload(common_pb2.RESULT_KIND_VALUE, data)
        elif kind is FunctionKind.ASYNC:
            args, kwargs = await self._loads(payload)
            token = set_current(self.context)
            try:
                value = await self.function.func(*args, **kwargs)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                raise _user_failure(exc) from exc
            finally:
                reset_current(token)
            await self._send_payload(common_pb2.RESULT_KIND_VALUE, await self._dumps(value))
        elif kind is FunctionKind.SYNC_GENERATOR:
            await self._stream_sync(payload)
        else:
            await self._stream_async(payload)

    # Sync functions run loads -> call -> dumps in one worker-thread hop.
    def _run_sync(self, payload: Payload) -> Payload:
        isolated = self.function.isolated
        if isolated is not None:
            value = isolated.call(
                self.function.name, payload.tobytes(), self.caller_versions, self.context
            )
            return Payload((value,))
        args, kwargs = self._loads_sync(payload)
        token = set_current(self.context)
        try:
            value = self.function.func(*args, **kwargs)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            raise _user_failure(exc) from exc
        finally:
            reset_current(token)
        return self._dumps_sync(value)

    async def _stream_sync(self, payload: Payload) -> None:
        try:
            gen: Generator[Any, None, None] | IsolatedGenerator = await self._pool.run(
                self._start_generator, payload
            )
        except asyncio.CancelledError:
            # The worker may still be creating the generator: make sure it is
            # closed (its `finally` run, its child process freed) when it exists.
            with self._start_lock:
                self._start_abandoned = True
                started, self._started = self._started, None
            if started is not None:
                self._close_later(started)
            raise
        finished = False
        try:
            while True:
                await self._take_credit()
                data = await self._pool.run(self._next_item, gen)
                if data is _DONE:
                    finished = True
                    break
                assert isinstance(data, Payload)
                await self._send_payload(common_pb2.RESULT_KIND_ITEM, data)
        finally:
            if not finished:
                self._close_later(gen)
        self._send_end()

    def _close_later(self, gen: Generator[Any, None, None] | IsolatedGenerator) -> None:
        """Runs the generator's `finally` once its current step returns."""
        with contextlib.suppress(RuntimeError):  # the node's pool is already shut down
            self._pool.submit(lambda: self._close_generator(gen))

    def _start_generator(self, payload: Payload) -> Generator[Any, None, None] | IsolatedGenerator:
        gen = self._create_generator(payload)
        with self._start_lock:
            abandoned = self._start_abandoned
            if not abandoned:
                self._started = gen
        if abandoned:
            self._close_generator(gen)
        return gen

    def _create_generator(self, payload: Payload) -> Generator[Any, None, None] | IsolatedGenerator:
        isolated = self.function.isolated
        if isolated is not None:
            return isolated.start_generator(
                self.function.name, payload.tobytes(), self.caller_versions, self.context
            )
        args, kwargs = self._loads_sync(payload)
        try:
            gen: Generator[Any, None, None] = self.function.func(*args, **kwargs)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            raise _user_failure(exc) from exc
        return gen

    def _next_item(self, gen: Generator[Any, None, None] | IsolatedGenerator) -> object:
        if isinstance(gen, IsolatedGenerator):
            with self._gen_lock:
                data = gen.next_item()
            return _DONE if data is None else Payload((data,))
        with self._gen_lock:
            token = set_current(self.context)
            try:
                item = next(gen)
            except StopIteration:
                return _DONE
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                raise _user_failure(exc) from exc
            finally:
                reset_current(token)
        return self._dumps_sync(item)

    def _close_generator(self, gen: Generator[Any, None, None] | IsolatedGenerator) -> None:
        with self._gen_lock:
            try:
                gen.close()
            except Exception:  # noqa: BLE001 - the call is already over
                pass

    async def _stream_async(self, payload: Payload) -> None:
        args, kwargs = await self._loads(payload)
        try:
            agen: AsyncGenerator[Any, None] = self.function.func(*args, **kwargs)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            raise _user_failure(exc) from exc
        try:
            while True:
                await self._take_credit()
                token = set_current(self.context)
                try:
                    item = await agen.__anext__()
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:
                    raise _user_failure(exc) from exc
                finally:
                    reset_current(token)
                await self._send_payload(common_pb2.RESULT_KIND_ITEM, await self._dumps(item))
        finally:
            # Runs the generator's `finally` on cancel, deadline or error.
            try:
                await agen.aclose()
            except Exception:  # noqa: BLE001
                pass
        self._send_end()

    async def _take_credit(self) -> None:
        event = self._credit_event
        assert event is not None  # only streams take credit
        while self._credit <= 0:
            event.clear()
            await event.wait()
        self._credit -= 1

    # ------------------------------------------------------------- (un)pickling

    def _loads_sync(self, payload: Payload) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return load_arguments(payload, self.function.name, self.caller_versions)

    def _dumps_sync(self, value: object) -> Payload:
        return dump_value(value, self.function.name)

    async def _loads(self, payload: Payload) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if len(payload) <= INLINE_PICKLE_BYTES:
            return self._loads_sync(payload)
        return await self._pool.run(self._loads_sync, payload)

    async def _dumps(self, value: object) -> Payload:
        # Size is unknown before pickling; large values are rare on async paths
        # and pickling them inline would stall the loop, so use a thread when
        # the value is a big buffer.
        if isinstance(value, (bytes, bytearray, memoryview)) and len(value) > INLINE_PICKLE_BYTES:
            return await self._pool.run(self._dumps_sync, value)
        return self._dumps_sync(value)

    # ---------------------------------------------------------------- sending

    async def _send_payload(self, kind: int, data: Payload) -> None:
        frame = node_pb2.NodeFrame()
        result = frame.result
        result.call_id = self.call_id
        result.kind = kind  # type: ignore[assignment]
        inline, pieces = split_payload(data)
        result.data = inline
        result.more = bool(pieces)
        if not pieces:
            self._put(frame, len(inline))
            return
        self._put(frame)
        last = len(pieces) - 1
        for index, piece in enumerate(pieces):
            await self._outbox.put_wait(DataChunk(self.call_id, piece, index < last), len(piece))

    def _send_small(self, kind: int, data: bytes) -> None:
        frame = node_pb2.NodeFrame()
        result = frame.result
        result.call_id = self.call_id
        result.kind = kind  # type: ignore[assignment]
        result.data = data
        self._put(frame, len(data))

    def _send_end(self) -> None:
        frame = node_pb2.NodeFrame()
        frame.result.call_id = self.call_id
        frame.result.kind = common_pb2.RESULT_KIND_END
        self._put(frame)

    def _send_error(self, error: common_pb2.Error, data: bytes = b"") -> None:
        log_failure(self.call_id, self.function.name, error)
        frame = node_pb2.NodeFrame()
        result = frame.result
        result.call_id = self.call_id
        result.kind = common_pb2.RESULT_KIND_ERROR
        result.error.CopyFrom(error)
        # A pickled user exception rides along when it is not huge.
        if data and len(data) <= MAX_PICKLED_EXCEPTION_BYTES:
            result.data = data
        self._put(frame, len(result.data))

    def _put(self, frame: node_pb2.NodeFrame, size: int = 0) -> None:
        try:
            self._outbox.put(frame, size, now=self._alone())
        except Exception:  # noqa: BLE001 - stream closed: the gateway re-routes
            pass
