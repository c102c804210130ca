"""``easyremote-node``: serve a module's functions through a gateway.

Example:
    $ easyremote-node 10.0.0.5:8080 mymodule:node --max-concurrency 4
    $ easyremote-node 10.0.0.5:8080 path/to/tasks.py:train_model

TARGET names a ``ComputeNode`` (its functions are served with the options they
were registered with), a function, or a list of functions. The node dials out,
reconnects until stopped, and drains running calls on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import click

from easyremote.node._compute_node import ComputeNode, NodeError
from easyremote.node._functions import FunctionKind, RegisteredFunction
from easyremote.node.version import __version__

LOG_LEVELS = ("debug", "info", "warning", "error")


class TargetError(click.BadParameter):
    """TARGET does not name something a node can serve (exit status 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param_hint="TARGET")


def configure_logging(level: str) -> None:
    """Sends log records at ``level`` and above to stderr.

    Args:
        level: One of ``LOG_LEVELS`` (any case).
    """
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _split_target(target: str) -> tuple[str, str]:
    # rpartition keeps Windows drive letters ("C:\\x.py:node") in the path part.
    source, sep, attribute = target.rpartition(":")
    if not sep or not source or not attribute:
        raise TargetError(
            f"{target!r} is not of the form module:attribute or path/to/file.py:attribute"
        )
    return source, attribute


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise TargetError(f"no such file: {str(path)!r}")
    name = path.stem
    existing = sys.modules.get(name)
    if existing is not None:
        existing_file = getattr(existing, "__file__", None)
        if existing_file is not None and Path(existing_file).resolve() == path.resolve():
            return existing
        raise TargetError(
            f"{str(path)!r} would replace the already imported module {name!r}; rename the file"
        )
    # The file's folder goes first on sys.path so its sibling imports resolve
    # as they would with `python path/to/file.py`.
    sys.path.insert(0, str(path.resolve().parent))
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TargetError(f"cannot load {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _import_source(source: str) -> ModuleType:
    try:
        if source.endswith(".py") or "/" in source or "\\" in source:
            return _import_file(Path(source))
        # Console scripts do not put the working directory on sys.path; users
        # expect `easyremote-node GATEWAY mymodule:node` to find ./mymodule.py.
        if "" not in sys.path and "." not in sys.path:
            sys.path.insert(0, "")
        return importlib.import_module(source)
    except TargetError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name is not None and (source == exc.name or source.startswith(exc.name + ".")):
            raise TargetError(f"no module named {source!r}") from exc
        traceback.print_exc()
        raise TargetError(f"importing {source!r} failed: {exc}") from exc
    except Exception as exc:
        # The user's module itself is broken: show where, then fail as usage.
        traceback.print_exc()
        raise TargetError(f"importing {source!r} failed: {type(exc).__name__}: {exc}") from exc


def load_target(target: str) -> ComputeNode | list[Callable[..., Any]]:
    """Imports what TARGET names.

    Args:
        target: ``module:attr`` or ``path/to/file.py:attr``; ``attr`` may be
            dotted (``module:holder.node``).

    Returns:
        The ``ComputeNode``, or the functions to register.

    Raises:
        TargetError: The module or attribute is missing, fails to import, or
            is not a ComputeNode, a function or a list of functions.
    """
    source, attribute = _split_target(target)
    obj: Any = _import_source(source)
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(f"{source!r} has no attribute {attribute!r}") from None
    if isinstance(obj, ComputeNode):
        if not obj.functions:
            raise TargetError(f"the ComputeNode {target!r} has no registered functions")
        return obj
    if callable(obj) and not isinstance(obj, type):
        return [obj]
    if isinstance(obj, (list, tuple)) and obj:
        functions: list[Callable[..., Any]] = []
        for item in obj:
            if not callable(item) or isinstance(item, type):
                raise TargetError(f"{target!r} holds {item!r}, which is not a function")
            functions.append(item)
        return functions
    raise TargetError(
        f"{target!r} is {type(obj).__name__} {obj!r}; expected a ComputeNode, a function "
        "or a non-empty list of functions"
    )


def build_node(
    loaded: ComputeNode | Sequence[Callable[..., Any]],
    gateway: str,
    *,
    node_id: str | None = None,
    max_concurrency: int | None = None,
    cost_per_hour: float | None = None,
    tags: Sequence[str] = (),
    isolation: str | None = None,
) -> ComputeNode:
    """A ComputeNode for ``gateway`` serving what TARGET named.

    Options left as None (or empty ``tags``) keep the loaded ComputeNode's own
    settings; for plain functions they take ComputeNode's defaults.

    Args:
        loaded: What ``load_target`` returned.
        gateway: ``host:port`` of the gateway.
        node_id: Overrides the node id.
        max_concurrency: Overrides the node's slots.
        cost_per_hour: Overrides the declared cost.
        tags: Replace the node's tags when given.
        isolation: ``"thread"`` or ``"process"``; overrides the node's.

    Returns:
        The node, functions registered, not yet serving.

    Raises:
        TargetError: A function cannot be registered (e.g. it has no name).
    """
    if isinstance(loaded, ComputeNode):
        return loaded.rebuilt(
            gateway,
            node_id=node_id or loaded.node_id,
            max_concurrency=max_concurrency or loaded.max_concurrency,
            cost_per_hour=loaded.cost_per_hour if cost_per_hour is None else cost_per_hour,
            tags=tags or loaded.tags,
            isolation=isolation or loaded.isolation,
        )
    node = ComputeNode(
        gateway,
        node_id,
        max_concurrency=max_concurrency,
        cost_per_hour=cost_per_hour or 0.0,
        tags=tags,
        isolation=isolation or "thread",
    )
    for func in loaded:
        try:
            node.register(func)
        except (TypeError, ValueError) as exc:
            raise TargetError(f"cannot register {func!r}: {exc}") from exc
    return node


def _describe_function(function: RegisteredFunction) -> str:
    notes = []
    if function.kind.streaming:
        notes.append("stream")
    if function.kind in (FunctionKind.ASYNC, FunctionKind.ASYNC_GENERATOR):
        notes.append("async")
    if not function.load_balancing:
        notes.append("direct only")
    if function.max_concurrency is not None:
        notes.append(f"max {function.max_concurrency}")
    if function.timeout is not None:
        notes.append(f"timeout {function.timeout:g} s")
    return function.name + (f" ({', '.join(notes)})" if notes else "")


def banner(node: ComputeNode) -> str:
    """The text printed before the node connects.

    Args:
        node: The node about to serve.

    Returns:
        Lines to print, ending without a newline.
    """
    functions = node.functions
    first = next(iter(functions))
    tags = ", ".join(node.tags) or "-"
    lines = [
        f"EasyRemote node {node.node_id!r} ({__version__}) serving via gateway "
        f"{node.gateway_address}",
        f"  slots: {node.max_concurrency}   cost/h: {node.cost_per_hour:g}   tags: {tags}"
        f"   isolation: {node.isolation}",
        f"  functions ({len(functions)}):",
        *(f"    {_describe_function(f)}" for f in functions.values()),
        "",
        "Next steps",
        "  Check that the node registered:",
        f"    easyremote status {node.gateway_address}",
        "  Call a function from Python:",
        "    from easyremote import Client",
        f'    Client("{node.gateway_address}").call("{first}", ...)',
        "",
        "Connecting (retries until the gateway answers). "
        "Stop with Ctrl-C or SIGTERM: running calls finish first.",
    ]
    return "\n".join(lines)


@click.command(name="node", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("gateway")
@click.argument("target")
@click.option("--node-id", default=None, help="Unique node name [default: hostname-random].")
@click.option(
    "--max-concurrency",
    default=None,
    type=click.IntRange(min=1),
    help="Calls running at once on this node [default: CPUs, at least 4].",
)
@click.option(
    "--cost-per-hour",
    default=None,
    type=click.FloatRange(min=0),
    help="Declared cost, used by the cost_aware strategy.",
)
@click.option("--tag", "tags", multiple=True, help="A label callers can require (repeatable).")
@click.option(
    "--isolation",
    type=click.Choice(["thread", "process"]),
    default=None,
    help="Run sync functions in threads or in child processes that can be killed "
    "[default: the node's own, else thread].",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
)
@click.version_option(__version__, prog_name="easyremote-node")
def node_command(
    gateway: str,
    target: str,
    node_id: str | None,
    max_concurrency: int | None,
    cost_per_hour: float | None,
    tags: tuple[str, ...],
    isolation: str | None,
    log_level: str,
) -> None:
    """Serves TARGET's functions through the gateway at GATEWAY (host:port).

    TARGET is module:attr or path/to/file.py:attr, naming a ComputeNode, a
    function or a list of functions.
    """
    configure_logging(log_level)
    node = build_node(
        load_target(target),
        gateway,
        node_id=node_id,
        max_concurrency=max_concurrency,
        cost_per_hour=cost_per_hour,
        tags=tags,
        isolation=isolation,
    )
    click.echo(banner(node))
    try:
        node.serve()
    except NodeError as exc:
        raise click.ClickException(str(exc)) from exc


def main() -> None:
    """Entry point of ``easyremote-node``."""
    node_command(prog_name="easyremote-node")


if __name__ == "__main__":
    main()
