"""Click options that mean the same in every role's command line, declared once.

``easyremote-server``, ``easyremote-node`` and ``easyremote-client`` are
separate distributions that share only easyremote-proto, yet a peer of the
gateway trusts it the same way everywhere (``--tls-ca``, ``--tls-fingerprint``,
``--allow-insecure``) and ``--log-level`` picks from the same levels. One
definition keeps their names, variables and types from drifting apart; where
a command explains an option in its own words, the help text is a parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from easyremote.proto.logsetup import DEFAULT_LOG_LEVEL, LOG_LEVELS
from easyremote.proto.tls import ENV_TLS_CA, ENV_TLS_FINGERPRINT

FC = TypeVar("FC", bound=Callable[..., Any])

# One setting for every role's commands, so that -h and the shown defaults
# work alike whichever package a user installed.
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "show_default": True}

ENV_ALLOW_INSECURE = "EASYREMOTE_ALLOW_INSECURE"
ENV_LOG_LEVEL = "EASYREMOTE_LOG_LEVEL"
TLS_FINGERPRINT_HELP = "SHA-256 fingerprint of the gateway's certificate to pin."
PEER_ALLOW_INSECURE_HELP = "Send the token without TLS to another machine (trusted networks only)."


def allow_insecure_option(help_text: str = PEER_ALLOW_INSECURE_HELP) -> Callable[[FC], FC]:
    """The ``--allow-insecure`` flag (``EASYREMOTE_ALLOW_INSECURE``).

    Args:
        help_text: What it allows in this command (default: a peer's meaning).

    Returns:
        The click decorator.
    """
    return click.option(
        "--allow-insecure",
        is_flag=True,
        envvar=ENV_ALLOW_INSECURE,
        show_envvar=True,
        help=help_text,
    )


def peer_tls_options(*, tls_fingerprint_help: str = TLS_FINGERPRINT_HELP) -> Callable[[FC], FC]:
    """``--tls-ca``, ``--tls-fingerprint`` and ``--allow-insecure``: how a peer trusts a gateway.

    Args:
        tls_fingerprint_help: The help of ``--tls-fingerprint`` in this command.

    Returns:
        A decorator that adds the three options, in that order in ``--help``.
    """
    options: list[Callable[[FC], FC]] = [
        click.option(
            "--tls-ca",
            type=click.Path(exists=True, dir_okay=False),
            envvar=ENV_TLS_CA,
            show_envvar=True,
            help="PEM CA bundle to verify the gateway's certificate with.",
        ),
        click.option(
            "--tls-fingerprint",
            envvar=ENV_TLS_FINGERPRINT,
            show_envvar=True,
            help=tls_fingerprint_help,
        ),
        allow_insecure_option(),
    ]

    def decorate(command: FC) -> FC:
        # Stacked decorators apply bottom-up, so the last option goes on first.
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def log_level_option(help_text: str) -> Callable[[FC], FC]:
    """The ``--log-level`` option (``EASYREMOTE_LOG_LEVEL``), for ``configure_logging``.

    Args:
        help_text: Whose log lines the level applies to in this command.

    Returns:
        The click decorator.
    """
    return click.option(
        "--log-level",
        default=DEFAULT_LOG_LEVEL,
        type=click.Choice(LOG_LEVELS, case_sensitive=False),
        envvar=ENV_LOG_LEVEL,
        show_envvar=True,
        help=help_text,
    )


__all__ = [
    "CONTEXT_SETTINGS",
    "ENV_ALLOW_INSECURE",
    "ENV_LOG_LEVEL",
    "PEER_ALLOW_INSECURE_HELP",
    "TLS_FINGERPRINT_HELP",
    "allow_insecure_option",
    "log_level_option",
    "peer_tls_options",
]
