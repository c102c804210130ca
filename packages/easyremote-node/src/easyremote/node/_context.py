"""What a running function can learn about its call (cooperative cancellation)."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field


class CancellationRequested(Exception):
    """Raised by ``CallContext.raise_if_cancelled`` once the call was cancelled."""


@dataclass
class CallContext:
    """The call a function is running for.

    Sync functions cannot be interrupted from outside; long-running ones should
    poll ``cancelled`` (or call ``raise_if_cancelled()``) and stop early.

    Attributes:
        call_id: The gateway's id of this dispatch.
        function: The function name.
        attempt: 1 on the first node, higher when re-run after a node loss.
        deadline: ``time.monotonic()`` value after which the caller gives up,
            or None.
    """

    call_id: int
    function: str
    attempt: int
    deadline: float | None = None
    # A plain flag: set once from the loop thread, read from the worker; a
    # threading.Event per call would cost a Condition for nothing.
    _cancelled: bool = field(default=False, repr=False)

    @property
    def cancelled(self) -> bool:
        """True once the caller cancelled or the deadline passed."""
        return self._cancelled

    def raise_if_cancelled(self) -> None:
        """Raises CancellationRequested if the call was cancelled."""
        if self._cancelled:
            raise CancellationRequested(f"call {self.call_id} of {self.function!r} was cancelled")

    def cancel(self) -> None:
        self._cancelled = True


_current: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar(
    "easyremote_call", default=None
)


def current_call() -> CallContext | None:
    """The call the running function serves, or None outside a call."""
    return _current.get()


def set_current(context: CallContext | None) -> contextvars.Token[CallContext | None]:
    return _current.set(context)


def reset_current(token: contextvars.Token[CallContext | None]) -> None:
    _current.reset(token)
