"""What the role command lines share: status views and table, addresses, logging."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from easyremote.proto import addresses, logsetup
from easyremote.proto.status import NodeStatus
from easyremote.proto.status_table import NODE_COLUMNS, format_table, node_row, render_status
from easyremote.proto.v1 import client_pb2, common_pb2

REPO = Path(__file__).resolve().parents[3]


def _node(node_id: str = "n1") -> NodeStatus:
    status = client_pb2.NodeStatus(
        node_id=node_id,
        state=client_pb2.NODE_STATE_HEALTHY,
        max_concurrency=4,
        in_flight=1,
        cost_per_hour=1.25,
        hostname="box",
        tags=["gpu"],
    )
    function = status.functions.add(in_flight=1, completed=3)
    function.spec.name = "train"
    function.spec.streaming = True
    status.resources.memory_total_bytes = 8 << 30
    status.resources.memory_available_bytes = 4 << 30
    status.resources.gpus.append(common_pb2.GpuInfo(name="A100"))
    return NodeStatus.from_proto(status)


def test_render_table_json_and_one_node() -> None:
    node = _node()
    table = render_status("gw:1", [node]).splitlines()
    assert table[0].split("  ")[0] == "NODE" and len(table) == 4
    assert table[1].split()[:4] == ["n1", "healthy", "train", "1/4"]
    assert table[-1] == "1 node(s) on gw:1, 1 healthy."
    one = render_status("gw:1", [node], one_node=True)
    assert "FUNCTION" in one and "train" in one and "host box" in one
    assert json.loads(render_status("gw:1", [node], output_format="json"))[0]["node_id"] == "n1"
    empty = render_status("gw:1", [])
    assert "No nodes connected to gw:1." in empty
    assert "easyremote-node gw:1 mymodule:node" in empty
    assert node_row(node)[-1] == "1x A100" and len(node_row(node)) == len(NODE_COLUMNS)


def test_format_table_aligns_text_left_and_numbers_right() -> None:
    table = format_table(("NODE", "COMPLETED"), [["a", "7"], ["long-node", "12345"]])
    assert table.splitlines() == [
        "NODE       COMPLETED",
        "a                  7",
        "long-node      12345",
    ]


def test_host_port_brackets_ipv6() -> None:
    assert addresses.host_port("10.0.0.5", 80) == "10.0.0.5:80"
    assert addresses.host_port("fd00::2", 80) == "[fd00::2]:80"
    assert addresses.host_port("[fd00::2]", 80) == "[fd00::2]:80"


def test_machine_addresses_never_offer_loopback() -> None:
    for text in addresses.machine_addresses():
        ip = ipaddress.ip_address(text)
        assert not (ip.is_loopback or ip.is_link_local or ip.is_unspecified), text
    assert addresses.dial_addresses("127.0.0.1", 1) == []
    assert addresses.dial_addresses("10.0.0.5", 1) == ["10.0.0.5:1"]


def test_machine_addresses_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(*args: object, **kwargs: object) -> None:
        raise OSError("no network")

    monkeypatch.setattr(addresses.socket.socket, "connect", unreachable)
    monkeypatch.setattr(addresses.socket, "getaddrinfo", unreachable)
    assert addresses.machine_addresses() == []
    assert addresses.dial_addresses("0.0.0.0", 8080) == []


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("easyremote").level)
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    logging.getLogger("easyremote").setLevel(saved[2])


def test_configure_logging_keeps_other_libraries_at_warning(restore_logging: None) -> None:
    logsetup.configure_logging("DEBUG")
    assert logging.getLogger().level == logging.WARNING
    assert logging.getLogger("easyremote.server").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("grpc").isEnabledFor(logging.INFO)
    assert not logging.getLogger("asyncio").isEnabledFor(logging.DEBUG)
    with pytest.raises(ValueError, match="log level must be one of"):
        logsetup.configure_logging("loud")


def test_shared_cli_modules_need_no_click() -> None:
    # Only the command modules (status_cli, cli_options) import click; programs
    # that fetch or render status, or set up logging, do without it.
    code = (
        "import sys\n"
        "import easyremote.proto.status, easyremote.proto.logsetup, easyremote.proto.addresses\n"
        "import easyremote.proto.status_fetch, easyremote.proto.status_table\n"
        "print('click' in sys.modules)\n"
    )
    paths = os.pathsep.join(str(p) for p in sorted((REPO / "packages").glob("*/src")))
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": paths},
        timeout=10,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
