"""What ``easyremote-node GATEWAY TARGET`` serves: TARGET imported, a node built.

TARGET is ``module:attr`` or ``path/to/file.py:attr`` and names a
``ComputeNode``, a function or a list of functions. A TARGET that cannot be
loaded or registered is a ``TargetError``, a usage error of the command line
(exit status 2) that names the cause in one line; a module that raises while
importing also shows its traceback, since the fault is in the user's code.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import click

from easyremote.node._compute_node import ComputeNode, NodeError
from easyremote.node._import_guard import importing_target


class TargetError(click.BadParameter):
    """TARGET does not name something a node can serve (exit status 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param_hint="TARGET")


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
    except NodeError as exc:
        # serve() called at import (see _import_guard): the message says it all.
        raise TargetError(str(exc)) from exc
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
    with importing_target(target):
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


def target_logger(target: str) -> str | None:
    """The top-level package of TARGET's module, whose loggers ``--log-level`` also sets.

    Args:
        target: ``module:attr`` or ``path/to/file.py:attr``.

    Returns:
        The logger name, or None when TARGET is malformed.
    """
    source, sep, _ = target.rpartition(":")
    if not sep or not source:
        return None
    if source.endswith(".py") or "/" in source or "\\" in source:
        return Path(source).stem or None
    return source.split(".", 1)[0] or None


def build_node(
    loaded: ComputeNode | Sequence[Callable[..., Any]],
    gateway: str,
    *,
    node_id: str | None = None,
    max_concurrency: int | None = None,
    cost_per_hour: float | None = None,
    tags: Sequence[str] = (),
    isolation: str | None = None,
    heartbeat_interval: float | None = None,
    tls_ca_file: str | None = None,
    tls_fingerprint: str | None = None,
    allow_insecure: bool = False,
) -> ComputeNode:
    """A ComputeNode for ``gateway`` serving what TARGET named.

    Options left as None (or empty ``tags``, or False ``allow_insecure``) keep
    the loaded ComputeNode's own settings; for plain functions they take
    ComputeNode's defaults (TLS: ``EASYREMOTE_TLS_CA`` /
    ``EASYREMOTE_TLS_FINGERPRINT``).

    Args:
        loaded: What ``load_target`` returned.
        gateway: ``host:port`` of the gateway.
        node_id: Overrides the node id.
        max_concurrency: Overrides the node's slots.
        cost_per_hour: Overrides the declared cost.
        tags: Replace the node's tags when given.
        isolation: ``"thread"`` or ``"process"``; overrides the node's.
        heartbeat_interval: Overrides the interval the node proposes.
        tls_ca_file: PEM CA bundle to verify the gateway with.
        tls_fingerprint: SHA-256 fingerprint of the gateway's certificate.
        allow_insecure: Send the token without TLS to a non-loopback gateway.

    Returns:
        The node, functions registered, not yet serving.

    Raises:
        TargetError: A function cannot be registered (e.g. it has no name).
        click.UsageError: A setting is invalid (e.g. a malformed fingerprint).
    """
    overrides: dict[str, Any] = {
        "node_id": node_id,
        "max_concurrency": max_concurrency,
        "cost_per_hour": cost_per_hour,
        "tags": tuple(tags) or None,
        "isolation": isolation,
        "heartbeat_interval": heartbeat_interval,
        "tls_ca_file": tls_ca_file,
        "tls_fingerprint": tls_fingerprint,
        "allow_insecure": allow_insecure or None,
    }
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        if isinstance(loaded, ComputeNode):
            return loaded.rebuilt(gateway, **given)
        node = ComputeNode(gateway, **given)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    for func in loaded:
        try:
            node.register(func)
        except (TypeError, ValueError) as exc:
            raise TargetError(f"cannot register {func!r}: {exc}") from exc
    return node


__all__ = ["TargetError", "build_node", "load_target", "target_logger"]
