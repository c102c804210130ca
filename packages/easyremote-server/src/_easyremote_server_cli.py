"""Entry point of ``easyremote-server``: quiets gRPC's C core before it loads.

gRPC reads ``GRPC_VERBOSITY`` once, when ``grpc`` is imported, and without
it prints routine connection events (a peer's TLS handshake failing, a GOAWAY
when the gateway restarts) as INFO lines on stderr. Every ``easyremote``
import loads grpc, so this module lives outside that package and sets the
variable first. Only the command does this: the library never changes its
host's environment.
"""

import os


def main() -> None:
    """Runs ``easyremote-server`` with gRPC's C core at ERROR unless told otherwise."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from easyremote.server.cli import main as run  # noqa: PLC0415 - after the variable

    run()
