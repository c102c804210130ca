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
from easyremote.proto.logsetup import quiet_grpc_core
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

_CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}


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
    comes from $EASYREMOTE_TOKEN, else (for a gateway on this machine) from
    the local token file.
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


@click.group(name="easyremote-client", context_settings=_CONTEXT)
@click.version_option(__version__, prog_name="easyremote-client")
def cli() -> None:
    """EasyRemote client tools; call functions from Python with easyremote.client.Client."""


cli.add_command(status_command)


def main() -> None:
    """Entry point of ``easyremote-client``."""
    quiet_grpc_core()
    cli(prog_name="easyremote-client")


if __name__ == "__main__":
    main()
