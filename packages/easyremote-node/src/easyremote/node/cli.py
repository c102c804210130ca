"""``easyremote-node``: serve a module's functions through a gateway; show status.

Example:
    $ easyremote-node 10.0.0.5:8080 mymodule:node --max-concurrency 4
    $ easyremote-node 10.0.0.5:8080 path/to/tasks.py:train_model
    $ easyremote-node status 10.0.0.5:8080

TARGET names a ``ComputeNode`` (its functions are served with the options they
were registered with), a function, or a list of functions. The node dials out,
reconnects until stopped, and drains running calls on Ctrl-C or SIGTERM. The
token comes from ``EASYREMOTE_TOKEN`` (never a flag: command lines show in
``ps``); every option can also come from the ``EASYREMOTE_*`` variable
``--help`` names.
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
from easyremote.node._functions import FunctionKind, RegisteredFunction
from easyremote.node._import_guard import importing_target
from easyremote.node.version import __version__
from easyremote.proto.logsetup import (
    DEFAULT_LOG_LEVEL,
    LOG_LEVELS,
    configure_logging,
    quiet_grpc_core,
)
from easyremote.proto.status import (
    DEFAULT_GATEWAY,
    DEFAULT_TIMEOUT_S,
    ENV_GATEWAY,
    OUTPUT_FORMATS,
    StatusError,
    fetch_status,
    render_status,
)
from easyremote.proto.tls import ENV_TLS_CA, ENV_TLS_FINGERPRINT

__all__ = [
    "LOG_LEVELS",
    "TargetError",
    "banner",
    "build_node",
    "configure_logging",
    "load_target",
    "main",
    "node_command",
]

_SERVE = "serve"
_CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}


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


def banner(node: ComputeNode, *, allow_insecure: bool = False) -> str:
    """The text printed before the node connects.

    Its commands exist where they are meant to run: ``easyremote-node`` on
    this machine, ``easyremote.client`` where easyremote-client is installed.
    It names no token and no certificate fingerprint.

    Args:
        node: The node about to serve.
        allow_insecure: The node was told ``--allow-insecure``; so is the
            status command it suggests.

    Returns:
        Lines to print, ending without a newline.
    """
    functions = node.functions
    first = next(iter(functions))
    tags = ", ".join(node.tags) or "-"
    address = node.gateway_address
    status = f"easyremote-node status {address}"
    if allow_insecure:
        status += " --allow-insecure"
    lines = [
        f"EasyRemote node {node.node_id!r} ({__version__}) serving via gateway {address}",
        f"  slots: {node.max_concurrency}   cost/h: {node.cost_per_hour:g}   tags: {tags}"
        f"   isolation: {node.isolation}",
        f"  functions ({len(functions)}):",
        *(f"    {_describe_function(f)}" for f in functions.values()),
        "",
        "Next steps",
        "  Check that the node registered:",
        f"    {status}",
        "  Call a function from Python (with easyremote-client installed):",
        "    from easyremote.client import Client",
        f'    Client("{address}").call("{first}", ...)',
        "",
        "Connecting (retries until the gateway answers). "
        "Stop with Ctrl-C or SIGTERM: running calls finish first.",
    ]
    return "\n".join(lines)


def _check_gateway(ctx: click.Context, param: click.Parameter, value: str) -> str:
    # Also catches `easyremote-node --some-option status GW`, routed to serve.
    if ":" not in value:
        raise click.BadParameter(f"{value!r} is not host:port", ctx, param)
    return value


@click.command(name=_SERVE, context_settings=_CONTEXT)
@click.argument("gateway", callback=_check_gateway)
@click.argument("target")
@click.option(
    "--node-id",
    default=None,
    envvar="EASYREMOTE_NODE_ID",
    show_envvar=True,
    help="Unique node name [default: the module's node's, else hostname-random].",
)
@click.option(
    "--max-concurrency",
    default=None,
    type=click.IntRange(min=1),
    envvar="EASYREMOTE_MAX_CONCURRENCY",
    show_envvar=True,
    help="Calls running at once on this node [default: CPUs, at least 4].",
)
@click.option(
    "--cost-per-hour",
    default=None,
    type=click.FloatRange(min=0),
    envvar="EASYREMOTE_COST_PER_HOUR",
    show_envvar=True,
    help="Declared cost, used by the cost_aware strategy.",
)
@click.option(
    "--tag",
    "tags",
    multiple=True,
    envvar="EASYREMOTE_TAGS",
    show_envvar=True,
    help="A label callers can require (repeatable; in the variable: space-separated).",
)
@click.option(
    "--isolation",
    type=click.Choice(["thread", "process"]),
    default=None,
    envvar="EASYREMOTE_ISOLATION",
    show_envvar=True,
    help="Run sync functions in threads or in child processes that can be killed "
    "[default: the node's own, else thread].",
)
@click.option(
    "--heartbeat-interval",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    envvar="EASYREMOTE_HEARTBEAT_INTERVAL",
    show_envvar=True,
    help="Seconds between resource reports the node proposes; the gateway's own "
    "interval wins once connected [default: the node's, else 2].",
)
@click.option(
    "--tls-ca",
    type=click.Path(exists=True, dir_okay=False),
    envvar=ENV_TLS_CA,
    show_envvar=True,
    help="PEM CA bundle to verify the gateway's certificate with.",
)
@click.option(
    "--tls-fingerprint",
    envvar=ENV_TLS_FINGERPRINT,
    show_envvar=True,
    help="SHA-256 fingerprint of the gateway's certificate to pin "
    "(`easyremote-server join` prints it).",
)
@click.option(
    "--allow-insecure",
    is_flag=True,
    envvar="EASYREMOTE_ALLOW_INSECURE",
    show_envvar=True,
    help="Send the token without TLS to another machine (trusted networks only).",
)
@click.option(
    "--log-level",
    default=DEFAULT_LOG_LEVEL,
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    envvar="EASYREMOTE_LOG_LEVEL",
    show_envvar=True,
    help="Level of EasyRemote's and TARGET's package's log lines on stderr "
    "(other libraries: warnings only).",
)
def serve_command(
    gateway: str,
    target: str,
    node_id: str | None,
    max_concurrency: int | None,
    cost_per_hour: float | None,
    tags: tuple[str, ...],
    isolation: str | None,
    heartbeat_interval: float | None,
    tls_ca: str | None,
    tls_fingerprint: str | None,
    allow_insecure: bool,
    log_level: str,
) -> None:
    """Serves TARGET's functions through the gateway at GATEWAY (host:port).

    TARGET is module:attr or path/to/file.py:attr, naming a ComputeNode, a
    function or a list of functions. The token comes from $EASYREMOTE_TOKEN,
    else (for a gateway on this machine) from the local token file.
    """
    module_logger = target_logger(target)
    configure_logging(log_level, also=[module_logger] if module_logger else [])
    node = build_node(
        load_target(target),
        gateway,
        node_id=node_id,
        max_concurrency=max_concurrency,
        cost_per_hour=cost_per_hour,
        tags=tags,
        isolation=isolation,
        heartbeat_interval=heartbeat_interval,
        tls_ca_file=tls_ca,
        tls_fingerprint=tls_fingerprint,
        allow_insecure=allow_insecure,
    )
    click.echo(banner(node, allow_insecure=allow_insecure))
    try:
        node.serve()
    except NodeError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command(name="status", context_settings=_CONTEXT)
@click.argument("gateway", envvar=ENV_GATEWAY, default=DEFAULT_GATEWAY)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(OUTPUT_FORMATS),
    default="table",
    envvar="EASYREMOTE_STATUS_FORMAT",
    show_envvar=True,
    help="A plain table for people, JSON for programs.",
)
@click.option(
    "--node",
    "node_id",
    default=None,
    envvar="EASYREMOTE_STATUS_NODE",
    show_envvar=True,
    help="Show only this node, with its functions.",
)
@click.option(
    "--tls-ca",
    type=click.Path(exists=True, dir_okay=False),
    envvar=ENV_TLS_CA,
    show_envvar=True,
    help="PEM CA bundle to verify the gateway's certificate with.",
)
@click.option(
    "--tls-fingerprint",
    envvar=ENV_TLS_FINGERPRINT,
    show_envvar=True,
    help="SHA-256 fingerprint of the gateway's certificate to pin.",
)
@click.option(
    "--allow-insecure",
    is_flag=True,
    envvar="EASYREMOTE_ALLOW_INSECURE",
    show_envvar=True,
    help="Send the token without TLS to another machine (trusted networks only).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT_S,
    envvar="EASYREMOTE_STATUS_TIMEOUT",
    show_envvar=True,
    help="Seconds to wait for the gateway.",
)
def status_command(
    gateway: str,
    output_format: str,
    node_id: str | None,
    tls_ca: str | None,
    tls_fingerprint: str | None,
    allow_insecure: bool,
    timeout: float,
) -> None:
    """Shows the nodes connected to GATEWAY (host:port).

    GATEWAY defaults to $EASYREMOTE_GATEWAY, else localhost:8080. The token
    comes from $EASYREMOTE_TOKEN (a node token will do), else (for a gateway
    on this machine) from the local token file.
    """
    try:
        nodes = fetch_status(
            gateway,
            node_id,
            tls_ca_file=tls_ca,
            tls_fingerprint=tls_fingerprint,
            allow_insecure=allow_insecure,
            timeout=timeout,
        )
    except StatusError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        render_status(gateway, nodes, one_node=node_id is not None, output_format=output_format)
    )


class _ServeByDefault(click.Group):
    """A group whose first argument, unless a command name, starts ``serve``.

    ``easyremote-node GATEWAY TARGET`` predates the subcommands and keeps
    working: a gateway address always contains ':', a command name never does.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if (
            args
            and args[0] not in self.commands
            and args[0]
            not in (
                *ctx.help_option_names,
                "--version",
            )
        ):
            args = [_SERVE, *args]
        return super().parse_args(ctx, args)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The serve command's help (usage without "serve"), then the commands.
        serve = self.commands[_SERVE]
        with serve.make_context(
            ctx.info_name, [], parent=ctx.parent, resilient_parsing=True
        ) as serve_ctx:
            serve.format_help(serve_ctx, formatter)
        self.format_commands(ctx, formatter)


@click.group(name="node", cls=_ServeByDefault, context_settings=_CONTEXT)
@click.version_option(__version__, prog_name="easyremote-node")
def node_command() -> None:
    """Serves a module's functions through a gateway (easyremote-node GATEWAY TARGET)."""


node_command.add_command(serve_command)
node_command.add_command(status_command)


def main() -> None:
    """Entry point of ``easyremote-node``."""
    quiet_grpc_core()
    node_command(prog_name="easyremote-node")


if __name__ == "__main__":
    main()
