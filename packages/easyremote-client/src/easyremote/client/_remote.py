"""Decorator mode (``@remote``) and functional mode (``call``) of the seed.

Both use one process-wide default Client per gateway address, created on first
use. The default gateway is ``set_default_gateway(...)``, else
``EASYREMOTE_GATEWAY``, else ``localhost:8080``.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, overload

from easyremote.client._async_client import default_address
from easyremote.client._client import CallStream, Client
from easyremote.client._options import build_options

F = TypeVar("F", bound=Callable[..., Any])

_lock = threading.Lock()
_default_gateway: str | None = None
_clients: dict[str, Client] = {}


def set_default_gateway(address: str) -> None:
    """Sets the gateway used by ``call`` and ``@remote`` functions."""
    global _default_gateway
    with _lock:
        _default_gateway = address


def get_default_gateway() -> str:
    """The gateway ``call`` and ``@remote`` use now."""
    return _default_gateway or default_address()


def get_default_client(address: str | None = None) -> Client:
    """The shared Client for ``address`` (default gateway when None)."""
    target = address or get_default_gateway()
    with _lock:
        client = _clients.get(target)
        if client is None:
            client = _clients[target] = Client(target)
        return client


def call(function: str, /, *args: Any, **kwargs: Any) -> Any:
    """Calls ``function`` through the default gateway (functional mode)."""
    return get_default_client().call(function, *args, **kwargs)


def call_stream(function: str, /, *args: Any, **kwargs: Any) -> CallStream:
    """Streams ``function``'s items through the default gateway."""
    return get_default_client().call_stream(function, *args, **kwargs)


class RemoteFunction:
    """A local stub whose calls run on a remote node.

    Attributes:
        name: The remote function name (default: the decorated function's name).
        config: Routing options, as for ``Client.call_with_config``.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str | None,
        gateway: str | None,
        node_id: str | None,
        stream: bool | None,
        config: Mapping[str, Any],
    ) -> None:
        functools.update_wrapper(self, func)
        self.local = func
        self.name = name or func.__name__
        self.gateway = gateway
        self.node_id = node_id
        self.stream = (
            stream
            if stream is not None
            else inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func)
        )
        self.config = dict(config)
        # Validate options now, so a typo fails at decoration time.
        build_options(self.name, self.config, node_id=node_id)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        client = get_default_client(self.gateway)
        options = build_options(
            self.name,
            self.config,
            node_id=self.node_id,
            stream=self.stream,
            default_timeout=client.timeout,
        )
        if self.stream:
            return client.stream_with_options(options, args, kwargs)
        return client.invoke_with_options(options, args, kwargs)

    def __repr__(self) -> str:
        return f"<remote function {self.name!r} via {self.gateway or get_default_gateway()}>"


@overload
def remote(func: F) -> RemoteFunction: ...


@overload
def remote(
    func: None = None,
    *,
    name: str | None = None,
    gateway: str | None = None,
    node_id: str | None = None,
    strategy: str | None = None,
    requirements: Mapping[str, Any] | None = None,
    cost_limit: float | None = None,
    timeout: float | None = None,
    stream: bool | None = None,
    load_balancing: bool = True,
    tags: Iterable[str] | None = None,
) -> Callable[[F], RemoteFunction]: ...


def remote(
    func: F | None = None,
    *,
    name: str | None = None,
    gateway: str | None = None,
    node_id: str | None = None,
    strategy: str | None = None,
    requirements: Mapping[str, Any] | None = None,
    cost_limit: float | None = None,
    timeout: float | None = None,
    stream: bool | None = None,
    load_balancing: bool = True,
    tags: Iterable[str] | None = None,
) -> RemoteFunction | Callable[[F], RemoteFunction]:
    """Turns a function stub into a remote call (decorator mode).

    The decorated body is not run locally: calling the result calls the
    function of the same name (or ``name``) on a node via the gateway.

    Args:
        name: Remote function name (default: the decorated function's name).
        gateway: Gateway address (default: the default gateway).
        node_id: Always run on this node.
        strategy: Load-balancing strategy for these calls.
        requirements: Node requirements (see ``call_with_config``).
        cost_limit: Skip nodes dearer than this per hour.
        timeout: Deadline in seconds for each call.
        stream: Treat as a streaming call (default: if the stub is a generator).
        load_balancing: Accepted for compatibility with the seed; ``False``
            requires ``node_id``.
        tags: Shorthand for ``requirements={"tags": [...]}``.
    """
    config: dict[str, Any] = {}
    if strategy:
        config["strategy"] = strategy
    merged = dict(requirements or {})
    if tags:
        merged["tags"] = list(tags)
    if merged:
        config["requirements"] = merged
    if cost_limit is not None:
        config["cost_limit"] = cost_limit
    if timeout is not None:
        config["timeout"] = timeout
    if not load_balancing and not node_id:
        raise ValueError("@remote(load_balancing=False) needs node_id= to know where to run")

    def decorate(target: F) -> RemoteFunction:
        return RemoteFunction(
            target, name=name, gateway=gateway, node_id=node_id, stream=stream, config=config
        )

    if func is not None:
        return decorate(func)
    return decorate
