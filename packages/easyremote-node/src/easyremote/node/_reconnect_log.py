"""Says, without flooding, that a node cannot reach or register with its gateway.

A node retries forever, so a wrong address or a refused token would otherwise
look like a node that simply never shows up. The first failure of a streak is
logged at WARNING with the address and the cause, later ones at most once per
``REPEAT_S`` with the count so far, and the registration that ends the streak
at INFO.
"""

from __future__ import annotations

import logging
import time

logger = logging.getLogger("easyremote.node")

# Seconds between two warnings of one streak of failures.
REPEAT_S = 30.0


class ReconnectLog:
    """Reports one node's failed attempts to reach its gateway."""

    def __init__(self, node_id: str, address: str, repeat_s: float = REPEAT_S) -> None:
        self._node_id = node_id
        self._address = address
        self._repeat_s = repeat_s
        self._failures = 0
        self._first_at = 0.0
        self._warned_at = 0.0

    @property
    def failures(self) -> int:
        """Failed attempts since the last registration."""
        return self._failures

    def failed(self, cause: str) -> None:
        """One attempt failed with ``cause``."""
        now = time.monotonic()
        self._failures += 1
        if self._failures == 1:
            self._first_at = self._warned_at = now
            logger.warning(
                "node %s cannot reach or register with the gateway at %s: %s "
                "(retrying with backoff until it answers)",
                self._node_id,
                self._address,
                cause,
            )
        elif now - self._warned_at >= self._repeat_s:
            self._warned_at = now
            logger.warning(
                "node %s still cannot reach or register with the gateway at %s after %d "
                "attempts over %.0f s: %s",
                self._node_id,
                self._address,
                self._failures,
                now - self._first_at,
                cause,
            )

    def registered(self, functions: int) -> None:
        """The gateway confirmed registration; ends a streak of failures."""
        after = (
            f" after {self._failures} failed attempt(s) over "
            f"{time.monotonic() - self._first_at:.0f} s"
            if self._failures
            else ""
        )
        logger.info(
            "node %s registered with the gateway at %s (functions: %d)%s",
            self._node_id,
            self._address,
            functions,
            after,
        )
        self._failures = 0
