"""Log output for a process that a blocking gateway or node takes over.

A library must not configure its host's logging, but ``Server.start()`` and
``ComputeNode.serve()`` turn the calling script into a server that otherwise
says nothing at all: Python shows only warnings when nobody set up logging.
So, like web frameworks' development servers, they attach a stderr handler
to the ``easyremote`` logger alone, and only when neither it nor the root
logger has one: an application that configures logging keeps full control.
"""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def show_logs_if_unconfigured(level: int = logging.INFO) -> bool:
    """Sends ``easyremote`` records at ``level`` and above to stderr if nobody else does.

    Returns:
        True when a handler was added.
    """
    ours = logging.getLogger("easyremote")
    if ours.hasHandlers():  # its own or any ancestor's, the root's included
        return False
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    ours.addHandler(handler)
    if ours.level == logging.NOTSET:
        ours.setLevel(level)
    return True
