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

import click

from easyremote.node._compute_node import ComputeNode, NodeError
from easyremote.node._functions import FunctionKind, RegisteredFunction
from easyremote.node._target import TargetError, build_node, load_target, target_logger
from easyremote.node.version import __version__
from easyremote.proto.addresses import check_address
from easyremote.proto.cli_options import CONTEXT_SETTINGS, log_level_option, peer_tls_options
from easyremote.proto.logsetup import LOG_LEVELS, configure_logging
from easyremote.proto.status_cli import make_status_command

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
    try:
        return check_address(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@click.command(name=_SERVE, context_settings=CONTEXT_SETTINGS)
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
@peer_tls_options(
    tls_fingerprint_help="SHA-256 fingerprint of the gateway's certificate to pin "
    "(`easyremote-server join` prints it)."
)
@log_level_option(
    "Level of EasyRemote's and TARGET's package's log lines on stderr "
    "(other libraries: warnings only)."
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


status_command = make_status_command(
    defaults_help="GATEWAY defaults to $EASYREMOTE_GATEWAY, else localhost:8080. The token "
    "comes from $EASYREMOTE_TOKEN (a node token will do), else (for a gateway on this "
    "machine) from the local token file.",
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


@click.group(name="node", cls=_ServeByDefault, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="easyremote-node")
def node_command() -> None:
    """Serves a module's functions through a gateway (easyremote-node GATEWAY TARGET)."""


node_command.add_command(serve_command)
node_command.add_command(status_command)


def main() -> None:
    """Entry point of ``easyremote-node``."""
    node_command(prog_name="easyremote-node")


if __name__ == "__main__":
    main()
