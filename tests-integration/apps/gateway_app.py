"""A gateway process for tests: prints LISTENING <address>, stops on SIGTERM.

Usage: ``gateway_app.py [--port P] [--heartbeat S] [--node-timeout S]
[--max-payload-bytes N] [--tls-self-signed]``. Prints ``PID <pid>`` too, and
``FINGERPRINT <sha256>`` with TLS.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from easyremote.server import Server

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, default=0)
parser.add_argument("--heartbeat", type=float, default=0.5)
parser.add_argument("--node-timeout", type=float, default=10.0)
parser.add_argument("--max-payload-bytes", type=int, default=0)
parser.add_argument("--tls-self-signed", action="store_true")
args = parser.parse_args()

server = Server(
    port=args.port,
    host="127.0.0.1",
    heartbeat_interval=args.heartbeat,
    node_timeout=args.node_timeout,
    max_payload_bytes=args.max_payload_bytes,
    tls_self_signed=args.tls_self_signed,
)
server.start_background()
if server.tls_fingerprint:
    print(f"FINGERPRINT {server.tls_fingerprint}", flush=True)
print(f"PID {os.getpid()}", flush=True)
print(f"LISTENING {server.address}", flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
while not stop.wait(0.5):
    pass
server.stop()
sys.exit(0)
