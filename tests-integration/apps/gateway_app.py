"""A gateway process for tests: prints LISTENING <address>, stops on SIGTERM."""

from __future__ import annotations

import signal
import sys
import threading

from easyremote.server import Server

server = Server(port=0, host="127.0.0.1", heartbeat_interval=0.5, node_timeout=10.0)
server.start_background()
print(f"LISTENING {server.address}", flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
while not stop.wait(0.5):
    pass
server.stop()
sys.exit(0)
