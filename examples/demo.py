"""EasyRemote end to end on this machine: a gateway, two nodes and a client.

Each role runs as its own process on loopback, exactly as it would across a
VPS, GPU boxes and a laptop, and each imports only its own role's package
(``easyremote.server``, ``easyremote.node``, ``easyremote.client``), as on a
machine where only that role is installed. Run it with `python3 -m nox -s demo`
or directly:

    python examples/demo.py            # whole flow
    python examples/demo.py gateway 8080
    python examples/demo.py node localhost:8080 gpu-node-1
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from typing import Any

# This script owns its processes: gRPC's C core shows only errors (it reads the
# variable when grpc is first imported, which the role functions do below).
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def free_port(preferred: int = 8080) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free port")


def run_gateway(port: int) -> None:
    from easyremote.server import Server

    gateway = Server(port=port)
    gateway.start()  # blocks until SIGTERM / Ctrl-C


def run_node(address: str, node_id: str) -> None:
    from easyremote.node import ComputeNode

    node = ComputeNode(address, node_id)

    @node.register(load_balancing=True)
    def train_model(data: Any) -> dict[str, Any]:
        return {"result": f"processed_{data}", "node": node_id}

    @node.register
    async def stream_process(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            yield {"chunk": i, "node": node_id}

    node.serve()  # blocks; SIGTERM drains


def wait_for(address: str, *node_ids: str, timeout: float = 30.0) -> None:
    """Waits for the gateway (no ids) or for the nodes to register, through the API."""
    from easyremote.client import CallTimeoutError, Client

    with Client(address) as client:
        try:
            client.wait_for_nodes(*node_ids, count=len(node_ids), timeout=timeout)
        except CallTimeoutError as exc:
            raise SystemExit(f"demo: {exc}") from exc


def client_flow(address: str) -> None:
    from easyremote.client import Client

    print(f"\n== Step 3: the client calls through the gateway at {address}")
    client = Client(address)
    for i in range(5):
        result = client.call("train_model", f"data_{i}")
        print(f"Request {i}: {result}")

    print("\n== Strategies")
    for strategy in (
        "round_robin",
        "resource_aware",
        "latency_based",
        "cost_aware",
        "smart_adaptive",
    ):
        result = client.call_with_config("train_model", {"strategy": strategy}, "sample")
        print(f"{strategy:>15}: {result}")
    print("call_node     :", client.call_node("gpu-node-2", "train_model", data="pinned"))

    print("\n== Streaming")
    for chunk in client.call_stream("stream_process", 3):
        print("Received chunk:", chunk)

    print("\n== Nodes")
    for node in client.list_nodes():
        print(
            f"{node.node_id}: {node.state}, functions={node.function_names}, "
            f"completed={node.completed}, latency={node.latency_ms:.2f} ms, "
            f"cpus={node.resources.cpu_count}, gpus={len(node.resources.gpus)}"
        )
    client.close()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "gateway":
        run_gateway(int(sys.argv[2]))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "node":
        run_node(sys.argv[2], sys.argv[3])
        return 0

    port = free_port()
    address = f"localhost:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    me = os.path.abspath(__file__)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        print(f"== Step 1: gateway on {address} (its own process)")
        procs.append(subprocess.Popen([sys.executable, me, "gateway", str(port)], env=env))
        wait_for(address)
        print("== Step 2: two compute nodes dial out to it: gpu-node-1, gpu-node-2")
        for node_id in ("gpu-node-1", "gpu-node-2"):
            procs.append(subprocess.Popen([sys.executable, me, "node", address, node_id], env=env))
        wait_for(address, "gpu-node-1", "gpu-node-2")
        client_flow(address)
        print("\nDone. Next: `python3 -m nox -s tests` runs the test suite.")
        return 0
    finally:
        # Nodes first (they drain and deregister), then the gateway.
        for group in (procs[1:], procs[:1]):
            for proc in group:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in group:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    sys.exit(main())
