"""``easyremote``: one command for the gateway, nodes and cluster status.

Example:
    $ easyremote server --port 8080
    $ easyremote node localhost:8080 mymodule:node
    $ easyremote status localhost:8080
    $ easyremote status --format json
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence

import click

from easyremote.client import (
    Client,
    EasyRemoteError,
    FunctionStatus,
    GatewayUnavailableError,
    NodeNotFoundError,
    NodeStatus,
    ResourceStatus,
)
from easyremote.node.cli import node_command
from easyremote.server.cli import server_command
from easyremote.version import __version__

DEFAULT_GATEWAY = "localhost:8080"
GATEWAY_ENV = "EASYREMOTE_GATEWAY"
# Status is interactive: fail fast rather than retry an absent gateway.
_STATUS_CONNECT_TIMEOUT_S = 3.0
_GIB = 1 << 30

NODE_COLUMNS = (
    "NODE",
    "STATE",
    "FUNCTIONS",
    "IN-FLIGHT/SLOTS",
    "COMPLETED",
    "FAILED",
    "LATENCY MS",
    "COST/H",
    "CPU%",
    "MEM AVAIL GIB",
    "GPUS",
)
FUNCTION_COLUMNS = ("FUNCTION", "KIND", "IN-FLIGHT", "QUEUED", "COMPLETED", "FAILED", "LATENCY MS")
# Text columns are left-aligned, counts and measures right-aligned.
_LEFT_ALIGNED = {"NODE", "STATE", "FUNCTIONS", "GPUS", "FUNCTION", "KIND"}


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain, space-aligned text table.

    Args:
        header: Column titles.
        rows: Cells, one sequence per row, as many as ``header``.

    Returns:
        The table, lines joined by newlines, with no trailing spaces.
    """
    widths = [len(title) for title in header]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.ljust(width) if title in _LEFT_ALIGNED else cell.rjust(width)
            for title, cell, width in zip(header, cells, widths, strict=True)
        )
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), *(line(row) for row in rows)])


def _gpus(resources: ResourceStatus) -> str:
    if not resources.gpus:
        return "-"
    counts = Counter(gpu.name or "GPU" for gpu in resources.gpus)
    return ", ".join(f"{count}x {name}" for name, count in counts.items())


def node_row(node: NodeStatus) -> list[str]:
    """The cells of one node in the status table.

    Args:
        node: A node's status.

    Returns:
        One cell per ``NODE_COLUMNS`` entry.
    """
    resources = node.resources
    reported = resources.memory_total_bytes > 0
    return [
        node.node_id,
        node.state,
        ",".join(node.function_names) or "-",
        f"{node.in_flight}/{node.max_concurrency}",
        str(node.completed),
        str(node.failed),
        f"{node.latency_ms:.1f}",
        f"{node.cost_per_hour:.2f}",
        f"{resources.cpu_percent:.1f}" if reported else "-",
        f"{resources.memory_available_bytes / _GIB:.1f}" if reported else "-",
        _gpus(resources),
    ]


def _function_row(function: FunctionStatus) -> list[str]:
    kind = ("stream" if function.streaming else "call") + (" async" if function.is_async else "")
    return [
        function.name,
        kind,
        str(function.in_flight),
        str(function.queued),
        str(function.completed),
        str(function.failed),
        f"{function.latency_ms:.1f}",
    ]


def _print_table(address: str, nodes: Sequence[NodeStatus], one_node: bool) -> None:
    if not nodes:
        click.echo(f"No nodes connected to {address}.")
        click.echo(f"Start one with: easyremote-node {address} mymodule:node")
        return
    click.echo(format_table(NODE_COLUMNS, [node_row(node) for node in nodes]))
    if one_node:
        node = nodes[0]
        click.echo("")
        click.echo(format_table(FUNCTION_COLUMNS, [_function_row(f) for f in node.functions]))
        click.echo("")
        click.echo(
            f"host {node.hostname or '-'}  peer {node.peer or '-'}  "
            f"tags {','.join(node.tags) or '-'}  python {node.python_version or '-'}  "
            f"easyremote {node.easyremote_version or '-'}"
        )
        return
    healthy = sum(node.healthy for node in nodes)
    click.echo("")
    click.echo(f"{len(nodes)} node(s) on {address}, {healthy} healthy.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="easyremote")
def cli() -> None:
    """EasyRemote: run a gateway, serve functions from nodes, inspect the cluster."""


@cli.command()
@click.argument("gateway", required=False)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="A plain table for people, JSON for programs.",
)
@click.option("--node", "node_id", default=None, help="Show only this node, with its functions.")
def status(gateway: str | None, output_format: str, node_id: str | None) -> None:
    """Shows the nodes connected to GATEWAY (host:port).

    GATEWAY defaults to $EASYREMOTE_GATEWAY, else localhost:8080.
    """
    address = gateway or os.environ.get(GATEWAY_ENV) or DEFAULT_GATEWAY
    try:
        with Client(
            address, retry_attempts=0, connection_timeout=_STATUS_CONNECT_TIMEOUT_S
        ) as client:
            nodes = [client.get_node_status(node_id)] if node_id else client.list_nodes()
    except NodeNotFoundError as exc:
        raise click.ClickException(f"no node {node_id!r} is connected to {address}") from exc
    except GatewayUnavailableError as exc:
        raise click.ClickException(f"cannot reach the gateway at {address}: {exc}") from exc
    except EasyRemoteError as exc:
        raise click.ClickException(f"status from {address} failed: {exc}") from exc
    if output_format == "json":
        click.echo(json.dumps([node.to_dict() for node in nodes], indent=2))
    else:
        _print_table(address, nodes, one_node=node_id is not None)


cli.add_command(server_command, name="server")
cli.add_command(node_command, name="node")


def main() -> None:
    """Entry point of ``easyremote``."""
    cli(prog_name="easyremote")


if __name__ == "__main__":
    main()
