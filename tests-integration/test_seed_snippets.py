"""Every Python snippet of the seed design document, run as written.

The snippets are read from the document itself (docs/seed/), so the test
breaks if either side changes. Only the address differs: ``localhost:8080``
and ``port=8080`` become a free port. Everything runs in this one process,
and each call follows right after ``serve(blocking=False)`` returned.
"""

from __future__ import annotations

import ast
import asyncio
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _procs import wait_until

from easyremote import ComputeNode, Server
from easyremote.node import GpuSnapshot, NvmlReader

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "docs" / "seed" / "three-roles-design.zh.md"
SHARED_SEED = ROOT.parent / "shared" / "seed" / "000_de1b0be9d87b2e3e.txt"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", SEED.read_text(encoding="utf-8"), re.S)


BLOCKS = _blocks()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(block: str, namespace: dict[str, Any], port: int) -> None:
    """Executes a snippet with only its address changed (top-level await allowed)."""
    source = block.replace("localhost:8080", f"localhost:{port}").replace(
        "port=8080", f"port={port}"
    )
    code = compile(source, "<seed snippet>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)
    if asyncio.iscoroutine(result):
        asyncio.run(result)


def _fake_gpu() -> tuple[GpuSnapshot, ...]:
    gib = 1 << 30
    return (
        GpuSnapshot(
            index=0,
            name="Test GPU",
            uuid="GPU-test",
            memory_total_bytes=16 * gib,
            memory_used_bytes=2 * gib,
            memory_free_bytes=14 * gib,
        ),
    )


@pytest.fixture(autouse=True)
def _gpu_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    # The snippets route with gpu_required=True; this machine may have no GPU,
    # so in-process nodes report one test GPU through the NVML reader.
    monkeypatch.setattr(NvmlReader, "gpus", lambda self: _fake_gpu())


@pytest.fixture(autouse=True)
def _fresh_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # No token file, no settings: the snippets' own Server creates the tokens
    # and their nodes and clients find them, as on a fresh machine. Auth is on.
    home = tmp_path / "home"
    monkeypatch.setenv("EASYREMOTE_HOME", str(home))
    for name in ("EASYREMOTE_TOKEN", "EASYREMOTE_TLS_FINGERPRINT", "EASYREMOTE_TLS_CA"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture()
def world(_fresh_machine: Path) -> Iterator[dict[str, Any]]:
    """Namespace for a group of snippets; stops every gateway and node after."""
    namespace: dict[str, Any] = {"__name__": "__seed__"}
    extra: list[Any] = []
    namespace["_extra"] = extra
    try:
        yield namespace
        # Every snippet ran authenticated, with tokens nobody configured.
        if any(isinstance(v, Server) for v in namespace.values()):
            assert (_fresh_machine / "credentials.json").exists()
            assert all(v.auth is not None for v in namespace.values() if isinstance(v, Server))
    finally:
        objects = list(namespace.values()) + extra
        for value in objects:
            if isinstance(value, ComputeNode):
                value.stop()
        for value in objects:
            if hasattr(value, "close") and type(value).__name__ == "Client":
                value.close()
        for value in objects:
            if isinstance(value, Server):
                value.stop()


def test_document_has_all_snippets() -> None:
    assert len(BLOCKS) == 18
    if SHARED_SEED.exists():
        assert SHARED_SEED.read_text(encoding="utf-8") == SEED.read_text(encoding="utf-8")


def test_three_roles_section(world: dict[str, Any]) -> None:
    port = _free_port()
    server_block = BLOCKS[1]
    blocking, background = [], []
    for line in server_block.splitlines():
        if "start_background()" not in line:
            blocking.append(line)
        if "gateway.start()" not in line:
            background.append(line)
    # `gateway.start()  # 阻塞模式` blocks: run that variant in a thread, stop it,
    # then the `# 或` alternative `gateway.start_background()`.
    blocking_ns: dict[str, Any] = {}
    thread = threading.Thread(
        target=_run, args=("\n".join(blocking), blocking_ns, port), daemon=True
    )
    thread.start()
    wait_until(
        lambda: "gateway" in blocking_ns and blocking_ns["gateway"].running, 10, "blocking gateway"
    )
    blocking_ns["gateway"].stop()
    thread.join(10)
    assert not thread.is_alive()
    _run("\n".join(background), world, port)

    # The node snippet ends with the blocking `node.serve()`.
    node_thread = threading.Thread(target=_run, args=(BLOCKS[0], world, port), daemon=True)
    node_thread.start()
    wait_until(lambda: "node" in world and world["node"].registered, 10, "seed node to register")

    _run(BLOCKS[2], world, port)
    assert world["result"] == {"result": "trained", "node": "gpu-node-1"}
    world["node"].stop()
    node_thread.join(10)
    assert not node_thread.is_alive()


def test_call_modes_section(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    port = _free_port()
    gateway = Server(port=port).start_background()
    node = ComputeNode(f"localhost:{port}", "gpu-node-1")

    @node.register
    def train_model(data: object) -> dict[str, object]:
        return {"result": f"processed_{data}", "node": "gpu-node-1"}

    node.serve(blocking=False)
    world["_extra"].extend([gateway, node])
    # Decorator mode uses the default gateway: point it at this port.
    monkeypatch.setenv("EASYREMOTE_GATEWAY", f"localhost:{port}")

    _run(BLOCKS[3], world, port)
    assert world["result"] == {"result": "processed_sample_data", "node": "gpu-node-1"}
    _run(BLOCKS[4], world, port)
    assert world["result"] == {"result": "processed_sample_data", "node": "gpu-node-1"}
    _run(BLOCKS[5], world, port)
    assert world["result"] == {"result": "processed_sample_data", "node": "gpu-node-1"}


def test_complete_flow_alternates_nodes(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    port = _free_port()
    _run(BLOCKS[6], world, port)
    _run(BLOCKS[7], world, port)
    _run(BLOCKS[8], world, port)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Request")]
    assert lines == [
        "Request 0: {'result': 'processed_data_0', 'node': 'gpu-node-1'}",
        "Request 1: {'result': 'processed_data_1', 'node': 'gpu-node-2'}",
        "Request 2: {'result': 'processed_data_2', 'node': 'gpu-node-1'}",
        "Request 3: {'result': 'processed_data_3', 'node': 'gpu-node-2'}",
        "Request 4: {'result': 'processed_data_4', 'node': 'gpu-node-1'}",
    ]


def test_strategies_and_advanced_features(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    port = _free_port()
    _run(BLOCKS[6], world, port)
    _run(BLOCKS[7], world, port)
    streamer = ComputeNode(f"localhost:{port}", "stream-node")

    @streamer.register
    async def stream_process(data: object):  # type: ignore[no-untyped-def]
        for i in range(3):
            yield f"{data}-{i}"

    streamer.serve(blocking=False)
    world["_extra"].append(streamer)
    _run(BLOCKS[8], world, port)
    world["data"] = "sample"
    for index in range(9, 14):
        _run(BLOCKS[index], world, port)
        assert world["result"]["result"] == "processed_sample"
    _run(BLOCKS[14], world, port)
    assert {n.node_id for n in world["nodes"]} == {"gpu-node-1", "gpu-node-2", "stream-node"}
    assert world["status"].node_id == "gpu-node-1"
    assert world["status"].resources.gpus[0].name == "Test GPU"
    _run(BLOCKS[15], world, port)
    out = capsys.readouterr().out
    assert "Received chunk: sample-0\nReceived chunk: sample-1\nReceived chunk: sample-2" in out
    _run(BLOCKS[16], world, port)
    assert world["result"]["result"] == "processed_sample"
    _run(BLOCKS[17], world, port)
    assert world["result"]["result"] == "processed_sample"
