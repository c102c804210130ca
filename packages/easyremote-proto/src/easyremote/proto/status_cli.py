"""The ``status`` command of every role's command line, defined once.

``easyremote-server status``, ``easyremote-node status`` and
``easyremote-client status`` (which ``easyremote status`` reuses) take the
same options, ask the gateway the same way and print the same table. They
differ only in where GATEWAY and the token come from by default, and in how
their help says so: ``make_status_command`` takes those as arguments.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import click

from easyremote.proto.addresses import check_address
from easyremote.proto.cli_options import CONTEXT_SETTINGS, TLS_FINGERPRINT_HELP, peer_tls_options
from easyremote.proto.status_fetch import DEFAULT_TIMEOUT_S, StatusError, fetch_status
from easyremote.proto.status_table import OUTPUT_FORMATS, render_status

ENV_GATEWAY = "EASYREMOTE_GATEWAY"
DEFAULT_GATEWAY = "localhost:8080"
_SUMMARY = "Shows the nodes connected to GATEWAY (host:port)."


def make_status_command(
    *,
    defaults_help: str,
    default_gateway: str | Callable[[], str] = DEFAULT_GATEWAY,
    token_envvars: Sequence[str] = (),
    tls_fingerprint_help: str = TLS_FINGERPRINT_HELP,
) -> click.Command:
    """A ``status`` command: the nodes connected to a gateway, as a table or JSON.

    It exits 0 after printing, 1 with a one-line ``Error:`` when the gateway
    cannot be reached, refuses the credentials or has no such node, and 2 on
    bad usage (click's convention).

    Args:
        defaults_help: The paragraph of its help that says where GATEWAY and
            the token come from when not given.
        default_gateway: GATEWAY when neither given nor in
            ``$EASYREMOTE_GATEWAY``; a callable is called at each run (to read
            another variable then, not at import).
        token_envvars: Variables the token is read from, the first one set
            winning; when none is set (or none is named) ``fetch_status``
            resolves the token as a client does.
        tls_fingerprint_help: The help of ``--tls-fingerprint``.

    Returns:
        The command, named ``status``, for a group's ``add_command``.
    """

    @click.command(
        name="status",
        context_settings=CONTEXT_SETTINGS,
        help=f"{_SUMMARY}\n\n{defaults_help}",
    )
    @click.argument("gateway", envvar=ENV_GATEWAY, default=default_gateway)
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
    @peer_tls_options(tls_fingerprint_help=tls_fingerprint_help)
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
        try:
            gateway = check_address(gateway)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="GATEWAY") from None
        token = next((value for name in token_envvars if (value := os.environ.get(name))), None)
        try:
            nodes = fetch_status(
                gateway,
                node_id,
                token=token,
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

    return status_command


__all__ = ["DEFAULT_GATEWAY", "ENV_GATEWAY", "make_status_command"]
