"""The EasyRemote gateway as its own benchmark process.

Usage: ``python benchmarks/_er_gateway.py PORT``. Serves on 127.0.0.1 until
SIGTERM or SIGINT, with the gateway's default settings: the benchmark measures
what a user gets out of the box.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    """Runs the gateway on ``argv[0]`` (a port) until signalled."""
    if len(argv) != 1:
        print("usage: _er_gateway.py PORT", file=sys.stderr)
        return 2
    from easyremote.server import Server

    gateway = Server(port=int(argv[0]), host="127.0.0.1")
    gateway.start()  # blocks; SIGTERM/SIGINT stop it
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
