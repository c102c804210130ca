"""Results of streaming calls, item by item, with flow control."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from easyremote.client._connection import _END, STREAM_WINDOW, PendingCall, Session
from easyremote.client._errors import CallTimeoutError
from easyremote.proto import Payload


class StreamReceiver:
    """The receiving end of one streaming call (runs on the client's loop).

    Items are returned still pickled (as a Payload); credit is granted back to the
    node as they are consumed, so a slow reader slows the node down instead
    of filling memory anywhere in between.
    """

    def __init__(
        self,
        open_call: Callable[[], Awaitable[tuple[Session, PendingCall]]],
        time_limit: float | None,
    ) -> None:
        self._open_call = open_call
        # The deadline starts when the call is sent (first iteration).
        self._time_limit = time_limit
        self._deadline: float | None = None
        self._session: Session | None = None
        self._pending: PendingCall | None = None
        self._consumed = 0
        self.finished = False

    @property
    def node_id(self) -> str:
        return self._pending.node_id if self._pending else ""

    async def next_raw(self) -> Payload | None:
        """The next item, still pickled, or None at the end of the stream."""
        if self.finished:
            return None
        if self._pending is None:
            if self._time_limit is not None:
                self._deadline = asyncio.get_running_loop().time() + self._time_limit
            self._session, self._pending = await self._open_call()
        pending = self._pending
        queue = pending.queue
        assert queue is not None, "streaming calls always have an item queue"
        try:
            if self._deadline is None:
                event = await queue.get()
            else:
                left = self._deadline - asyncio.get_running_loop().time()
                event = await asyncio.wait_for(queue.get(), max(0.0, left))
        except asyncio.TimeoutError:
            await self.aclose()
            raise CallTimeoutError(
                f"stream of {pending.function!r} exceeded its deadline"
            ) from None
        except asyncio.CancelledError:
            await self.aclose()
            raise
        if event is _END:
            self.finished = True
            return None
        if isinstance(event, BaseException):
            self.finished = True
            raise event
        assert isinstance(event, Payload)
        self._consumed += 1
        if self._consumed >= STREAM_WINDOW // 2 and self._session is not None:
            self._session.grant(pending.call_id, self._consumed)
            self._consumed = 0
        return event

    async def aclose(self) -> None:
        """Stops the stream; the node closes the generator (its `finally` runs)."""
        if self.finished:
            return
        self.finished = True
        if self._session is not None and self._pending is not None:
            self._session.cancel(self._pending.call_id)
