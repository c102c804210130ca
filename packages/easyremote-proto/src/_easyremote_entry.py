"""Entry points of the EasyRemote commands: quiet gRPC's C core before it loads.

gRPC reads ``GRPC_VERBOSITY`` once, when ``grpc`` is imported, and without it
prints routine connection events (a port scanner's failed TLS handshake, a
GOAWAY when the gateway restarts) as INFO lines on stderr. Every ``easyremote``
import loads grpc, so the console scripts of all packages start here, beside
the package, set the variable, and only then import their command. Only the
commands do this: the library never changes its host's environment.
"""

import os
from importlib import import_module


def _run(module: str) -> None:
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    import_module(module).main()


def server() -> None:
    """``easyremote-server`` (package easyremote-server)."""
    _run("easyremote.server.cli")


def node() -> None:
    """``easyremote-node`` (package easyremote-node)."""
    _run("easyremote.node.cli")


def client() -> None:
    """``easyremote-client`` (package easyremote-client)."""
    _run("easyremote.client.cli")


def meta() -> None:
    """``easyremote`` (package easyremote)."""
    _run("easyremote.cli")
