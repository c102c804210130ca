"""Waiting until a gateway answers and the wanted nodes have registered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection

from easyremote.client._errors import CallTimeoutError, EasyRemoteError, GatewayUnavailableError
from easyremote.client._status import NodeStatus

# Polling starts fast (a demo or a test waits for processes it just started)
# and backs off, so a long wait costs the gateway little.
_FIRST_POLL_S = 0.05
_MAX_POLL_S = 0.5


def missing(
    nodes: Collection[NodeStatus], node_ids: Collection[str], functions: Collection[str], count: int
) -> list[str]:
    """What keeps ``nodes`` from being ready, in words; empty when ready."""
    healthy = [node for node in nodes if node.healthy]
    present = {node.node_id for node in healthy}
    served = {name for node in healthy for name in node.function_names}
    gaps = [f"node {node_id!r}" for node_id in node_ids if node_id not in present]
    gaps += [f"a node serving {name!r}" for name in functions if name not in served]
    if len(healthy) < count:
        gaps.append(f"{count} healthy node(s) (have {len(healthy)})")
    return gaps


async def wait_for_nodes(
    list_nodes: Callable[[], Awaitable[list[NodeStatus]]],
    address: str,
    node_ids: Collection[str],
    functions: Collection[str],
    count: int | None,
    timeout: float,
) -> list[NodeStatus]:
    """Polls ``list_nodes`` until ready; see ``AsyncClient.wait_for_nodes``."""
    wanted = count if count is not None else (0 if node_ids or functions else 1)
    deadline = time.monotonic() + timeout
    delay = _FIRST_POLL_S
    last_error: EasyRemoteError | None = None
    gaps: list[str] = ["an answer from the gateway"]
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            nodes = await asyncio.wait_for(list_nodes(), left)
        except (GatewayUnavailableError, asyncio.TimeoutError) as exc:
            # Not up yet (or restarting): that is what waiting is for.
            if isinstance(exc, GatewayUnavailableError):
                last_error = exc
        else:
            gaps = missing(nodes, node_ids, functions, wanted)
            if not gaps:
                return nodes
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, _MAX_POLL_S)
    detail = (
        f"; last error: {last_error}"
        if last_error is not None and gaps[0].startswith("an answer")
        else ""
    )
    raise CallTimeoutError(
        f"gave up after {timeout:g} s waiting at {address} for {', '.join(gaps)}{detail}"
    ) from last_error
