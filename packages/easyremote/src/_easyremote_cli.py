"""Entry point of ``easyremote``: quiets gRPC's C core before it loads.

gRPC reads ``GRPC_VERBOSITY`` once, when ``grpc`` is imported, and without it
prints routine connection events as INFO lines on stderr. Importing
``easyremote`` loads grpc, so this module lives outside that package and sets
the variable first. Only the command does this: the library never changes its
host's environment.
"""

import os


def main() -> None:
    """Runs ``easyremote`` with gRPC's C core at ERROR unless told otherwise."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from easyremote.cli import main as run  # noqa: PLC0415 - after the variable

    run()
