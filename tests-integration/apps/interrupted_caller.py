"""A sync caller to interrupt: `interrupted_caller.py GATEWAY MARKER`.

Calls ``cooperative(20, MARKER)`` and prints INTERRUPTED when Ctrl-C (SIGINT)
ends the wait, which must also cancel the call on the node.
"""

from __future__ import annotations

import sys

from easyremote import Client

with Client(sys.argv[1]) as client:
    try:
        client.call("cooperative", 20.0, sys.argv[2])
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
        sys.exit(0)
print("FINISHED", flush=True)
sys.exit(1)
