"""Logging for EasyRemote's command lines (the processes that own their output).

Libraries never configure logging; the ``easyremote-server`` and
``easyremote-node`` commands do, through this one implementation: records go
to stderr, the chosen level applies to EasyRemote's own loggers, and every
other logger (grpc, asyncio, the user's libraries) stays at WARNING, so
``--log-level debug`` shows EasyRemote's debug lines without a flood.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LOG_LEVEL = "info"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ROOT_LEVEL = logging.WARNING
EASYREMOTE_LOGGER = "easyremote"
# The name of the handler configure_logging installs, to find it again.
_HANDLER_NAME = "easyremote-cli"


def configure_logging(level: str, also: Iterable[str] = ()) -> None:
    """Sends log records to stderr: ``level`` for EasyRemote, WARNING for the rest.

    Calling it again replaces the handler it installed, so the level and the
    stream (``sys.stderr`` now) follow the latest call.

    Args:
        level: One of ``LOG_LEVELS`` (any case).
        also: More logger names to set to ``level`` (e.g. the package of the
            module a node serves).

    Raises:
        ValueError: ``level`` is not one of ``LOG_LEVELS``.
    """
    name = level.lower()
    if name not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
    numeric = logging.getLevelName(name.upper())
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    # The handler passes everything; the loggers' levels decide. Records of
    # loggers below "easyremote" reach the root's handler by propagation,
    # which does not apply the root's own level.
    root.setLevel(ROOT_LEVEL)
    for logger_name in (EASYREMOTE_LOGGER, *also):
        logging.getLogger(logger_name).setLevel(numeric)


__all__ = [
    "DEFAULT_LOG_LEVEL",
    "LOG_LEVELS",
    "configure_logging",
]
