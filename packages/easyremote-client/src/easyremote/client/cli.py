"""``easyremote-client``: the client machine's view of the cluster.

Example:
    $ export EASYREMOTE_TOKEN='...' EASYREMOTE_TLS_FINGERPRINT='AB:...'
    $ easyremote-client status 10.0.0.5:8080
    $ easyremote-client status 10.0.0.5:8080 --node gpu-1 --format json

The token and TLS pin come from the environment (``easyremote-server join``
on the gateway machine prints the line that sets them), never from a flag.
"""

from __future__ import annotations

import click

from easyremote.client.version import __version__
from easyremote.proto.cli_options import CONTEXT_SETTINGS
from easyremote.proto.status_cli import make_status_command

status_command = make_status_command(
    defaults_help="GATEWAY defaults to $EASYREMOTE_GATEWAY, else localhost:8080. The token "
    "comes from $EASYREMOTE_TOKEN, else (for a gateway on this machine) from the local "
    "token file.",
)


@click.group(name="easyremote-client", context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="easyremote-client")
def cli() -> None:
    """EasyRemote client tools; call functions from Python with easyremote.client.Client."""


cli.add_command(status_command)


def main() -> None:
    """Entry point of ``easyremote-client``."""
    cli(prog_name="easyremote-client")


if __name__ == "__main__":
    main()
