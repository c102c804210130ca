"""Functions a node serves, with the options they were registered with."""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from easyremote.proto.v1 import common_pb2

if TYPE_CHECKING:
    from easyremote.node._isolation import ProcessPool


class FunctionKind(enum.Enum):
    """How a function is run and how its results travel."""

    SYNC = "sync"
    ASYNC = "async"
    SYNC_GENERATOR = "sync_generator"
    ASYNC_GENERATOR = "async_generator"

    @property
    def streaming(self) -> bool:
        return self in (FunctionKind.SYNC_GENERATOR, FunctionKind.ASYNC_GENERATOR)


def kind_of(func: Callable[..., Any]) -> FunctionKind:
    """Classifies ``func`` (looking through functools.partial and wrappers)."""
    target = inspect.unwrap(func)
    if inspect.isasyncgenfunction(target):
        return FunctionKind.ASYNC_GENERATOR
    if inspect.isgeneratorfunction(target):
        return FunctionKind.SYNC_GENERATOR
    if inspect.iscoroutinefunction(target):
        return FunctionKind.ASYNC
    return FunctionKind.SYNC


@dataclass(frozen=True)
class RegisteredFunction:
    """A function plus its registration options.

    Attributes:
        name: Name callers use.
        func: The Python callable.
        kind: How it runs (sync, async, generator kinds).
        load_balancing: False keeps it out of load-balanced routing; callers
            must name this node (``call_node``).
        max_concurrency: Calls of this function running at once on this node
            (None: only the node's limit applies).
        idempotent: False: never re-run after this node was lost mid-call.
        timeout: Default deadline in seconds for calls that set none.
        isolated: The child processes that run it (``isolation="process"``,
            sync functions and sync generators only), set while serving.
    """

    name: str
    func: Callable[..., Any]
    kind: FunctionKind
    load_balancing: bool = True
    max_concurrency: int | None = None
    idempotent: bool = True
    timeout: float | None = None
    isolated: ProcessPool | None = None

    def to_spec(self) -> common_pb2.FunctionSpec:
        return common_pb2.FunctionSpec(
            name=self.name,
            load_balancing=self.load_balancing,
            streaming=self.kind.streaming,
            is_async=self.kind in (FunctionKind.ASYNC, FunctionKind.ASYNC_GENERATOR),
            idempotent=self.idempotent,
            max_concurrency=self.max_concurrency or 0,
            timeout_ms=int(self.timeout * 1000) if self.timeout else 0,
        )
