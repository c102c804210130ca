"""What users and operators read when something goes wrong, end to end over real gRPC."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from _procs import APPS, Cluster

from easyremote import (
    Client,
    ComputeNode,
    NoAvailableNodesError,
    RemoteExecutionError,
    Server,
)
from easyremote.node import NodeError


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster() as running:
        running.start_gateway()
        running.start_node("node-a")
        running.wait_for_nodes(["node-a"])
        yield running


def _line_of(path: Path, text: str) -> int:
    lines = path.read_text().splitlines()
    return next(number for number, line in enumerate(lines, 1) if text in line)


def test_remote_error_names_the_node_and_the_users_line(cluster: Cluster) -> None:
    app = APPS / "node_app.py"
    line = _line_of(app, "raise ValueError(message)")
    with Client(cluster.address) as client:
        with pytest.raises(RemoteExecutionError) as caught:
            client.call("fail", "bad input")
    error = caught.value
    assert str(error) == f"ValueError: bad input (raised on node-a at {app}:{line} in fail)"
    assert error.node_id == "node-a" and error.remote_type == "ValueError"
    # The node sent the traceback from the user's frame on, without its own.
    assert "easyremote/node/" not in error.remote_traceback
    assert "raise ValueError(message)" in error.remote_traceback


def test_an_isolated_functions_error_points_at_the_users_line_too(cluster: Cluster) -> None:
    cluster.start_node("node-iso", "1", "process")
    cluster.wait_for_nodes(["node-iso"])
    app = APPS / "node_app.py"
    line = _line_of(app, "raise ValueError(message)")
    with Client(cluster.address) as client:
        with pytest.raises(RemoteExecutionError) as caught:
            client.call_node("node-iso", "fail", "in a child")
    error = caught.value
    assert str(error) == f"ValueError: in a child (raised on node-iso at {app}:{line} in fail)"
    assert "easyremote/node/" not in error.remote_traceback


def test_unknown_function_suggests_the_served_name(cluster: Cluster) -> None:
    with Client(cluster.address) as client:
        with pytest.raises(NoAvailableNodesError) as caught:
            client.call("whoam")
    message = str(caught.value)
    assert message.startswith("no connected node serves 'whoam'; did you mean 'whoami'? Served: ")
    assert message.split("Served: ")[1].startswith("whoami, ")


def test_duplicate_node_id_says_who_holds_it_and_how_to_pick_another(cluster: Cluster) -> None:
    node = ComputeNode(cluster.address, "node-a", connection_timeout=5, reconnect=False)
    node.register(lambda: "impostor", name="whoami")
    with pytest.raises(NodeError) as caught:
        node.serve(blocking=False)
    node.stop()
    message = str(caught.value)
    assert "node id 'node-a' is already connected to this gateway (held by host " in message
    assert "peer ipv4:127.0.0.1:" in message
    assert "--node-id on the CLI or ComputeNode(..., node_id=...)" in message


# ------------------------------------------------------ logs (gateway in this process)


@pytest.fixture()
def own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("EASYREMOTE_HOME", str(home))
    return home


def test_node_logs_failed_calls_without_their_arguments(
    own_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "argument-that-must-stay-private"
    with Server(port=0) as gateway:
        node = ComputeNode(gateway.address, "logger-node")

        @node.register
        def divide(numerator: str) -> float:
            return 1 / 0

        with caplog.at_level(logging.INFO, logger="easyremote.node"):
            with node, Client(gateway.address) as client:
                with pytest.raises(RemoteExecutionError, match="ZeroDivisionError"):
                    client.call("divide", secret)
    failures = [r for r in caplog.records if "failed:" in r.getMessage()]
    assert len(failures) == 1
    record = failures[0]
    assert (record.name, record.levelno) == ("easyremote.node", logging.INFO)
    assert record.getMessage().endswith(" of 'divide' failed: ZeroDivisionError: division by zero")
    assert record.getMessage().startswith("call ")
    assert secret not in caplog.text


def test_gateway_logs_refused_credentials_once_per_peer_and_cause(
    own_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "not-the-token-and-never-logged"
    with Server(port=0) as gateway, grpc.insecure_channel(gateway.address) as channel:
        list_nodes = channel.unary_unary("/easyremote.proto.v1.ClientService/ListNodes")
        with caplog.at_level(logging.WARNING, logger="easyremote.server"):
            for metadata in ((), (), (("authorization", f"Bearer {wrong}"),)):
                with pytest.raises(grpc.RpcError) as caught:
                    list_nodes(b"", timeout=10, metadata=metadata)
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert gateway.auth is not None and gateway.auth.unauthenticated == 3
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]
    assert len(refusals) == 2  # the second missing token is within the minute
    method = "/easyremote.proto.v1.ClientService/ListNodes"
    assert refusals[0].startswith(f"refused {method} from ipv4:127.0.0.1:")
    assert refusals[0].endswith(": missing token")
    assert refusals[1].endswith(": unknown token")
    assert wrong not in caplog.text and wrong[:6] not in caplog.text
