"""The ``easyremote-client`` command: cluster status from a client machine."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import easyremote.client
import easyremote.proto.status
from easyremote.client import cli as client_cli

REPO = Path(__file__).resolve().parents[3]
TIMEOUT_S = 10.0
CLIENT_TOKEN = "client-" + "c" * 24
NODE_TOKEN = "node-" + "n" * 24


def _env(**extra: str) -> dict[str, str]:
    paths = [str(path) for path in sorted((REPO / "packages").glob("*/src"))]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **extra}


def _dead_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A gateway with separate tokens and one node ("c-1"); yields its address."""
    server_module = pytest.importorskip("easyremote.server")
    node_module = pytest.importorskip("easyremote.node")
    monkeypatch.setenv("EASYREMOTE_HOME", str(tmp_path / "home"))
    server = server_module.Server(port=0, client_token=CLIENT_TOKEN, node_token=NODE_TOKEN)
    server.start_background()
    node = node_module.ComputeNode(server.address, "c-1", token=NODE_TOKEN, max_concurrency=2)
    node.register(name="echo")(lambda x: x)
    try:
        node.serve(blocking=False)
        yield server.address
    finally:
        node.stop()
        server.stop()


def test_status_objects_are_the_shared_classes() -> None:
    for name in ("NodeStatus", "FunctionStatus", "ResourceStatus", "GpuStatus"):
        assert getattr(easyremote.client, name) is getattr(easyremote.proto.status, name)


def test_status_in_a_real_process(gateway: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "easyremote.client.cli", "status", gateway, "--format", "json"],
        capture_output=True,
        text=True,
        env=_env(EASYREMOTE_TOKEN=CLIENT_TOKEN),
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    (node,) = json.loads(done.stdout)
    assert node["node_id"] == "c-1" and node["max_concurrency"] == 2
    assert [f["name"] for f in node["functions"]] == ["echo"]
    assert done.stderr == ""


def test_status_table_and_one_node(gateway: str) -> None:
    env = {"EASYREMOTE_TOKEN": CLIENT_TOKEN, "EASYREMOTE_GATEWAY": gateway}
    table = CliRunner().invoke(client_cli.cli, ["status"], env=env)
    assert table.exit_code == 0, table.output
    assert table.output.splitlines()[1].split()[:4] == ["c-1", "healthy", "echo", "0/2"]
    assert table.output.splitlines()[-1] == f"1 node(s) on {gateway}, 1 healthy."
    one = CliRunner().invoke(
        client_cli.cli, ["status", "--node", "c-1"], env={**env, "EASYREMOTE_STATUS_FORMAT": "json"}
    )
    assert one.exit_code == 0, one.output
    assert [n["node_id"] for n in json.loads(one.output)] == ["c-1"]


def test_refused_token_is_one_line(gateway: str) -> None:
    result = CliRunner().invoke(
        client_cli.cli, ["status", gateway], env={"EASYREMOTE_TOKEN": "not-the-token"}
    )
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: the gateway at {gateway} refused the credentials")
    assert len(result.output.strip().splitlines()) == 1


def test_dead_gateway_exits_1_quickly() -> None:
    address = _dead_address()
    started = time.monotonic()
    result = CliRunner().invoke(client_cli.cli, ["status", address, "--timeout", "2"])
    assert time.monotonic() - started < 5.0
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot reach the gateway at {address}")


def test_no_token_in_plaintext_to_another_machine() -> None:
    # Refused before any connection: nothing listens at that address.
    result = CliRunner().invoke(
        client_cli.cli, ["status", "192.0.2.1:8080"], env={"EASYREMOTE_TOKEN": CLIENT_TOKEN}
    )
    assert result.exit_code == 1
    assert "refusing to send a token in plaintext to 192.0.2.1:8080" in result.output
    assert "--allow-insecure" in result.output


def test_every_flag_has_a_documented_environment_variable() -> None:
    options = [
        param
        for param in client_cli.status_command.params
        if isinstance(param, click.Option) and param.name != "help"
    ]
    assert {option.name for option in options} >= {"tls_ca", "tls_fingerprint", "timeout"}
    for option in options:
        assert isinstance(option.envvar, str) and option.envvar.startswith("EASYREMOTE_")
        assert option.show_envvar
    assert "token" not in {option.name for option in options}
    help_text = CliRunner().invoke(client_cli.cli, ["status", "--help"]).output
    assert "EASYREMOTE_TLS_FINGERPRINT" in help_text
