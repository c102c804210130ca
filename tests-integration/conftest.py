"""Fixtures that run real gateways and nodes as separate processes on 127.0.0.1."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from _procs import Cluster

from easyremote.server import Server


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A gateway process and two node processes (node-a, node-b)."""
    with Cluster() as running:
        running.start_gateway()
        running.start_node("node-a")
        running.start_node("node-b")
        running.wait_for_nodes(["node-a", "node-b"])
        yield running


@pytest.fixture()
def gateway() -> Iterator[Server]:
    """A gateway in this process, on a free loopback port."""
    server = Server(port=0).start_background()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _no_default_gateway_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EASYREMOTE_GATEWAY", raising=False)


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
