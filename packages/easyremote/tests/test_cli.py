"""The ``easyremote`` command: status of a live gateway, and the forwarded roles."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from easyremote import ComputeNode, Server
from easyremote import cli as easyremote_cli

REPO = Path(__file__).resolve().parents[3]
STARTUP_TIMEOUT_S = 8.0
EXIT_TIMEOUT_S = 8.0


def _dead_address() -> str:
    # Bound then closed: nothing listens there for the test's short life.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def gateway() -> Iterator[Server]:
    server = Server(port=0).start_background()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def node_n1(gateway: Server) -> Iterator[ComputeNode]:
    node = ComputeNode(gateway.address, "n1", max_concurrency=3, cost_per_hour=1.25)

    @node.register(timeout=5)
    def add(a: int, b: int) -> int:
        return a + b

    @node.register
    def countdown(n: int) -> Iterator[int]:
        yield from range(n, 0, -1)

    node.serve(blocking=False)
    try:
        yield node
    finally:
        node.stop()


def test_status_json_lists_the_live_node(gateway: Server, node_n1: ComputeNode) -> None:
    result = CliRunner().invoke(easyremote_cli.cli, ["status", gateway.address, "--format", "json"])
    assert result.exit_code == 0, result.output
    nodes = json.loads(result.stdout)
    assert [n["node_id"] for n in nodes] == ["n1"]
    (n1,) = nodes
    assert n1["state"] == "healthy"
    assert n1["max_concurrency"] == 3 and n1["cost_per_hour"] == 1.25
    assert {f["name"] for f in n1["functions"]} == {"add", "countdown"}
    assert n1["resources"]["memory_total_bytes"] > 0


def test_status_table(gateway: Server, node_n1: ComputeNode) -> None:
    result = CliRunner().invoke(easyremote_cli.cli, ["status", gateway.address])
    assert result.exit_code == 0, result.output
    header, row, blank, summary = result.stdout.splitlines()
    assert header.split("  ")[0] == "NODE"
    for title in easyremote_cli.NODE_COLUMNS:
        assert title in header
    cells = row.split()
    assert cells[:4] == ["n1", "healthy", "add,countdown", "0/3"]
    assert "1.25" in cells and cells[-1] == "-"
    assert blank == ""
    assert summary == f"1 node(s) on {gateway.address}, 1 healthy."


def test_status_of_one_node_shows_its_functions(gateway: Server, node_n1: ComputeNode) -> None:
    result = CliRunner().invoke(easyremote_cli.cli, ["status", gateway.address, "--node", "n1"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1].startswith("n1 ")
    function_header = lines.index(next(line for line in lines if line.startswith("FUNCTION ")))
    rows = {line.split()[0]: line.split()[1] for line in lines[function_header + 1 :] if line}
    assert rows["add"] == "call" and rows["countdown"] == "stream"


def test_status_of_an_unknown_node_exits_1(gateway: Server) -> None:
    result = CliRunner().invoke(easyremote_cli.cli, ["status", gateway.address, "--node", "nope"])
    assert result.exit_code == 1
    assert f"Error: no node 'nope' is connected to {gateway.address}" in result.output


def test_status_without_nodes_says_how_to_add_one(gateway: Server) -> None:
    result = CliRunner().invoke(easyremote_cli.cli, ["status", gateway.address])
    assert result.exit_code == 0
    assert f"No nodes connected to {gateway.address}." in result.stdout
    assert f"easyremote-node {gateway.address} mymodule:node" in result.stdout
    empty = CliRunner().invoke(easyremote_cli.cli, ["status", gateway.address, "--format", "json"])
    assert json.loads(empty.stdout) == []


def test_status_of_a_dead_gateway_exits_1_quickly() -> None:
    address = _dead_address()
    started = time.monotonic()
    result = CliRunner().invoke(easyremote_cli.cli, ["status", address])
    assert time.monotonic() - started < 5.0
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot reach the gateway at {address}")
    assert "Traceback" not in result.output


def test_status_gateway_defaults_to_the_environment() -> None:
    address = _dead_address()
    result = CliRunner().invoke(
        easyremote_cli.cli, ["status"], env={easyremote_cli.GATEWAY_ENV: address}
    )
    assert result.exit_code == 1
    assert f"cannot reach the gateway at {address}" in result.output


def test_format_table_aligns_text_left_and_numbers_right() -> None:
    table = easyremote_cli.format_table(("NODE", "COMPLETED"), [["a", "7"], ["long-node", "12345"]])
    assert table.splitlines() == [
        "NODE       COMPLETED",
        "a                  7",
        "long-node      12345",
    ]


def test_group_forwards_server_and_node() -> None:
    runner = CliRunner()
    for command in ("server", "node", "status"):
        result = runner.invoke(easyremote_cli.cli, [command, "--help"])
        assert result.exit_code == 0, result.output
    assert "--default-strategy" in runner.invoke(easyremote_cli.cli, ["server", "--help"]).output
    bad = runner.invoke(easyremote_cli.cli, ["node", "127.0.0.1:1", "not-a-target"])
    assert bad.exit_code == 2
    assert "Invalid value for TARGET" in bad.output


def test_easyremote_server_subprocess_stops_on_sigterm() -> None:
    paths = [str(path) for path in sorted((REPO / "packages").glob("*/src"))]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "easyremote.cli", "server", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        first = lines.get(timeout=STARTUP_TIMEOUT_S)
        assert "EasyRemote gateway" in first and "listening on 127.0.0.1:" in first
        child.send_signal(signal.SIGTERM)
        assert child.wait(EXIT_TIMEOUT_S) == 0
        reader.join(EXIT_TIMEOUT_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(EXIT_TIMEOUT_S)


def test_group_forwards_the_role_commands_unchanged() -> None:
    from easyremote.client.cli import status_command
    from easyremote.node.cli import node_command
    from easyremote.server.cli import server_command

    assert easyremote_cli.cli.commands == {
        "server": server_command,
        "node": node_command,
        "status": status_command,
    }
    runner = CliRunner()
    for args in (
        ["server", "join", "--help"],
        ["server", "status", "--help"],
        ["node", "status", "--help"],
    ):
        result = runner.invoke(easyremote_cli.cli, args)
        assert result.exit_code == 0, result.output
        assert "EASYREMOTE_" in result.output
