"""``easyremote``: one command for the gateway, nodes and cluster status.

Example:
    $ easyremote server --port 8080
    $ easyremote server join
    $ easyremote node localhost:8080 mymodule:node
    $ easyremote status localhost:8080
    $ easyremote status --format json

The subcommands are the role packages' own command lines (``easyremote-server``,
``easyremote-node``, ``easyremote-client status``), so each behaves the same
under either name.
"""

from __future__ import annotations

import click

from easyremote.client.cli import status_command
from easyremote.node.cli import node_command
from easyremote.proto.status_cli import DEFAULT_GATEWAY, ENV_GATEWAY
from easyremote.proto.status_table import FUNCTION_COLUMNS, NODE_COLUMNS, format_table, node_row
from easyremote.server.cli import server_command
from easyremote.version import __version__

# Kept importable from here: the status command's pieces moved to easyremote.proto
# (status_cli, status_table).
GATEWAY_ENV = ENV_GATEWAY

__all__ = [
    "DEFAULT_GATEWAY",
    "FUNCTION_COLUMNS",
    "GATEWAY_ENV",
    "NODE_COLUMNS",
    "cli",
    "format_table",
    "main",
    "node_row",
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="easyremote")
def cli() -> None:
    """EasyRemote: run a gateway, serve functions from nodes, inspect the cluster."""


cli.add_command(server_command, name="server")
cli.add_command(node_command, name="node")
cli.add_command(status_command, name="status")


def main() -> None:
    """Entry point of ``easyremote``."""
    cli(prog_name="easyremote")


if __name__ == "__main__":
    main()
