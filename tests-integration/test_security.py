"""Attack tests: each attempt has its expected refusal and leaves no side effect.

The gateway runs as its own process with authentication on (the default), its
tokens in the test run's ``EASYREMOTE_HOME``; clients and nodes of this test
process find them there, as they would on one machine.
"""

from __future__ import annotations

import os
import pickle
import random
import stat
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from _procs import Cluster, wait_until

from easyremote import (
    AsyncClient,
    AuthenticationError,
    Client,
    ComputeNode,
    NoAvailableNodesError,
    PayloadTooLargeError,
    PermissionDeniedError,
    QueueFullError,
    Server,
)
from easyremote.node import NodeError
from easyremote.proto.credentials import load_local_credentials
from easyremote.proto.v1 import client_pb2, client_pb2_grpc, common_pb2, node_pb2
from easyremote.server import GatewayError

METHODS = {
    "/easyremote.proto.v1.NodeService/Connect": "stream_stream",
    "/easyremote.proto.v1.ClientService/Session": "stream_stream",
    "/easyremote.proto.v1.ClientService/Call": "unary_unary",
    "/easyremote.proto.v1.ClientService/ListNodes": "unary_unary",
    "/easyremote.proto.v1.ClientService/GetNodeStatus": "unary_unary",
}
SHAPES = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
LIMIT = 4 << 20


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster() as running:
        running.start_gateway("--max-payload-bytes", str(LIMIT))
        running.start_node("node-a")
        running.wait_for_nodes(["node-a"])
        yield running


@pytest.fixture(scope="module")
def gateway_pid(cluster: Cluster) -> int:
    assert cluster.gateway is not None
    line = next(x for x in cluster.gateway.output if x.startswith("PID "))
    return int(line.split()[1])


def _tokens() -> tuple[str, str]:
    local = load_local_credentials()
    assert local is not None, "the gateway should have written the local token file"
    return local.client_token, local.node_token


def _raw(
    address: str, method: str, shape: str, payload: bytes, metadata: Any = None
) -> grpc.StatusCode:
    """Sends ``payload`` raw to ``method`` in ``shape``; the status code that ends it."""
    with grpc.insecure_channel(address) as channel:
        call = getattr(channel, shape)(method)
        try:
            if shape.startswith("unary"):
                reply = call(payload, timeout=10, metadata=metadata)
            else:
                reply = call(iter([payload]), timeout=10, metadata=metadata)
            if shape.endswith("stream"):
                list(reply)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _still_serving(cluster: Cluster) -> None:
    with Client(cluster.address) as client:
        assert client.call("whoami") == "node-a"


# ----------------------------------------------------------- authentication


def test_every_rpc_in_every_shape_without_credentials_is_unauthenticated(
    cluster: Cluster,
) -> None:
    for method in METHODS:
        for shape in SHAPES:
            code = _raw(cluster.address, method, shape, b"\x0a\x00")
            assert code == grpc.StatusCode.UNAUTHENTICATED, (method, shape, code)
    _still_serving(cluster)


@pytest.mark.parametrize("kind", ["wrong", "truncated", "empty", "oversized", "not bearer"])
def test_wrong_and_truncated_tokens_are_unauthenticated(cluster: Cluster, kind: str) -> None:
    client_token, _ = _tokens()
    metadata = {
        "wrong": _bearer("x" * len(client_token)),
        "truncated": _bearer(client_token[:-1]),
        "empty": _bearer(""),
        "oversized": _bearer(client_token + "A" * 4096),
        "not bearer": (("authorization", client_token),),
    }[kind]
    for method, shape in METHODS.items():
        code = _raw(cluster.address, method, shape, b"", metadata)
        assert code == grpc.StatusCode.UNAUTHENTICATED, (kind, method, code)
    with pytest.raises(AuthenticationError, match="token"):
        with Client(cluster.address, token="x" * 43, retry_attempts=0) as client:
            client.list_nodes()


def test_node_token_cannot_call_functions(cluster: Cluster) -> None:
    _, node_token = _tokens()
    for name in ("Session", "Call"):
        method = f"/easyremote.proto.v1.ClientService/{name}"
        code = _raw(cluster.address, method, METHODS[method], b"", _bearer(node_token))
        assert code == grpc.StatusCode.PERMISSION_DENIED, method
    with Client(cluster.address, token=node_token, retry_attempts=0) as client:
        with pytest.raises(PermissionDeniedError, match="node token cannot call functions"):
            client.call("whoami")


def test_node_token_can_query_status(cluster: Cluster) -> None:
    # `status` on a GPU box that holds only the node token.
    _, node_token = _tokens()
    code = _raw(
        cluster.address,
        "/easyremote.proto.v1.ClientService/ListNodes",
        "unary_unary",
        b"",
        _bearer(node_token),
    )
    assert code == grpc.StatusCode.OK
    with Client(cluster.address, token=node_token, retry_attempts=0) as client:
        assert [n.node_id for n in client.list_nodes()] == ["node-a"]
        assert client.get_node_status("node-a").node_id == "node-a"
        with pytest.raises(PermissionDeniedError):
            client.call("whoami")


def test_client_token_cannot_register_or_hijack_a_node(cluster: Cluster) -> None:
    client_token, _ = _tokens()
    code = _raw(
        cluster.address,
        "/easyremote.proto.v1.NodeService/Connect",
        "stream_stream",
        b"",
        _bearer(client_token),
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    for node_id in ("intruder", "node-a"):  # a new id, and the connected node's id
        node = ComputeNode(cluster.address, node_id, token=client_token, reconnect=False)
        node.register(lambda: "hijacked", name="whoami")
        with pytest.raises(NodeError, match="client token cannot register a node"):
            node.serve(blocking=False)
        node.stop()
    with Client(cluster.address) as client:
        assert {n.node_id for n in client.list_nodes()} == {"node-a"}
        assert {client.call("whoami") for _ in range(5)} == {"node-a"}


# ----------------------------------------------------------------- payloads


def test_pickles_never_run_in_the_gateway(
    cluster: Cluster, gateway_pid: int, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    code = f"import os; open({str(canary)!r}, 'a').write(str(os.getpid()) + chr(10))"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (exec, (code,))

    payload = pickle.dumps(((Evil(),), {}))

    async def send(function: str) -> None:
        async with AsyncClient(cluster.address) as client:
            options = client_pb2.CallOptions(function=function)
            await client.invoke(options, payload)

    import asyncio

    # As an argument to a name no node serves: the gateway refuses it unread.
    with pytest.raises(NoAvailableNodesError):
        asyncio.run(send("no_such_function"))
    assert not canary.exists()
    # As an argument a node takes: only the node unpickles it (nodes run
    # callers' code by design; see docs/security.md).
    asyncio.run(send("describe"))
    # As a result: only the caller unpickles it.
    with Client(cluster.address) as client:
        client.call("canary_result", str(canary))
    pids = {int(line) for line in canary.read_text().split()}
    assert gateway_pid not in pids
    assert os.getpid() in pids  # the result ran here, in the caller
    assert len(pids) == 2  # and the argument on the node


def test_payload_over_the_limit_is_resource_exhausted_with_the_limit(cluster: Cluster) -> None:
    with Client(cluster.address) as client:
        with pytest.raises(PayloadTooLargeError, match=str(LIMIT)):
            client.call("echo", b"x" * (LIMIT + 1))
        # One gRPC message above the transport limit, on the unary method.
        client_token, _ = _tokens()
        code = _raw(
            cluster.address,
            "/easyremote.proto.v1.ClientService/Call",
            "unary_unary",
            b"\x00" * (9 << 20),
            _bearer(client_token),
        )
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert client.call("echo", b"y" * 1024) == b"y" * 1024


def test_random_and_truncated_protobuf_bytes_get_an_error_status(cluster: Cluster) -> None:
    client_token, node_token = _tokens()
    rng = random.Random(7)
    good = client_pb2.ListNodesRequest(function="whoami").SerializeToString()
    hello = node_pb2.NodeEnvelope()
    hello.frames.add().hello.node_id = "x" * 50
    samples = [
        rng.randbytes(64),
        rng.randbytes(5000),
        hello.SerializeToString()[:-7],
        good[:-1] + b"\xff",
        b"\xff" * 32,
    ]
    for method, shape in METHODS.items():
        token = node_token if "NodeService" in method else client_token
        for sample in samples:
            code = _raw(cluster.address, method, shape, sample, _bearer(token))
            assert code != grpc.StatusCode.OK or method.endswith(("ListNodes", "GetNodeStatus"))
    _still_serving(cluster)


def test_a_thousand_unknown_function_names_are_refused_and_forgotten(cluster: Cluster) -> None:
    with Client(cluster.address) as client:
        for index in range(1000):
            with pytest.raises(NoAvailableNodesError):
                client.call(f"no_such_function_{index}")
        assert client.call("whoami") == "node-a"
        assert [n.node_id for n in client.list_nodes()] == ["node-a"]


def test_a_client_that_never_reads_does_not_block_other_callers(cluster: Cluster) -> None:
    client_token, _ = _tokens()
    channel = grpc.insecure_channel(cluster.address)
    stub = client_pb2_grpc.ClientServiceStub(channel)
    sent = threading.Event()

    def requests() -> Iterator[client_pb2.ClientEnvelope]:
        hello = client_pb2.ClientEnvelope()
        hello.frames.add().hello.versions.protocol = 1
        yield hello
        start = client_pb2.ClientEnvelope()
        call = start.frames.add().start
        call.call_id = 1
        call.options.function = "count_to"
        call.options.stream = True
        call.options.credit = 200_000  # lets the node flood the gateway
        call.data = pickle.dumps(((200_000,), {}))
        yield start
        sent.set()
        time.sleep(30)  # keeps the stream open and never reads it

    # The reply iterator is never consumed: gRPC flow control stalls the
    # gateway's writes to this client.
    stalled = stub.Session(requests(), metadata=_bearer(client_token))
    try:
        assert sent.wait(10)
        with Client(cluster.address) as other, ThreadPoolExecutor(4) as pool:
            started = time.monotonic()
            results = list(pool.map(lambda i: other.call("inc", i)[0], range(40)))
            assert results == [i + 1 for i in range(40)]
            assert time.monotonic() - started < 10
    finally:
        stalled.cancel()
        channel.close()
    _still_serving(cluster)


# ------------------------------------------------------------ configuration


@pytest.fixture()
def own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("EASYREMOTE_HOME", str(home))
    return home


def test_zero_config_on_one_machine_is_authenticated(own_home: Path) -> None:
    with Server(port=0) as gateway:
        token_file = own_home / "credentials.json"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(own_home.stat().st_mode) == 0o700
        node = ComputeNode(gateway.address, "local")
        node.register(lambda: "hello", name="greet")
        with node, Client(gateway.address) as client:
            assert client.call("greet") == "hello"
        code = _raw(
            gateway.address, "/easyremote.proto.v1.ClientService/ListNodes", "unary_unary", b""
        )
        assert code == grpc.StatusCode.UNAUTHENTICATED


def test_token_file_that_others_can_read_is_refused(own_home: Path) -> None:
    with Server(port=0):
        pass
    token_file = own_home / "credentials.json"
    token_file.chmod(0o644)
    with pytest.raises(GatewayError, match=r"mode 0644.*chmod 600"):
        Server(port=0).start_background()
    with pytest.raises(AuthenticationError, match="mode 0644"):
        with Client("127.0.0.1:1", retry_attempts=0) as client:
            client.list_nodes()
    token_file.chmod(0o600)
    own_home.chmod(0o755)
    with pytest.raises(GatewayError, match=r"mode 0755.*chmod 700"):
        Server(port=0).start_background()


def test_non_loopback_bind_without_auth_or_tls_is_refused(
    own_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(GatewayError, match=r"without authentication and TLS.*allow_insecure"):
        Server(port=0, host="0.0.0.0", auth=False).start_background()
    with pytest.raises(GatewayError, match="without TLS"):
        Server(port=0, host="0.0.0.0").start_background()
    with caplog.at_level("WARNING", logger="easyremote.server"):
        with Server(port=0, host="0.0.0.0", auth=False, allow_insecure=True):
            pass
    assert "INSECURE" in caplog.text


def test_tokens_are_never_sent_in_plaintext_to_another_machine() -> None:
    with pytest.raises(AuthenticationError, match="plaintext"):
        with Client("192.0.2.1:8080", token="secret", retry_attempts=0) as client:
            client.list_nodes()
    node = ComputeNode("192.0.2.1:8080", "far", token="secret", reconnect=False)
    node.register(lambda: 1, name="one")
    with pytest.raises(NodeError, match="plaintext"):
        node.serve(blocking=False)
    node.stop()


# --------------------------------------------------------------------- TLS


def test_tls_pinned_node_connects_and_a_mismatched_pin_refuses_before_its_token(
    own_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Server(port=0, tls_self_signed=True) as gateway:
        pin = gateway.tls_fingerprint
        assert pin is not None
        node = ComputeNode(gateway.address, "pinned", tls_fingerprint=pin)
        node.register(lambda: "over TLS", name="secure")
        with node, Client(gateway.address, tls_fingerprint=pin) as client:
            assert client.call("secure") == "over TLS"
        # Verifying with the certificate as a CA file works too (its SAN has localhost).
        cert = own_home / "tls" / "gateway-cert.pem"
        port = gateway.address.rsplit(":", 1)[1]
        with Client(f"localhost:{port}", tls_ca_file=str(cert)) as client:
            assert [n.node_id for n in client.list_nodes()] == []

        # Another gateway, another certificate: the old pin must not fit it.
        monkeypatch.setenv("EASYREMOTE_HOME", str(tmp_path / "other-home"))
        with Server(port=0, tls_self_signed=True) as impostor:
            assert impostor.tls_fingerprint != pin
            assert impostor.auth is not None
            fooled = ComputeNode(impostor.address, "fooled", tls_fingerprint=pin, reconnect=False)
            fooled.register(lambda: 0, name="zero")
            with pytest.raises(NodeError, match=r"not the pinned one.*no token was sent"):
                fooled.serve(blocking=False)
            fooled.stop()
            # No gRPC call reached the impostor: the token never left the node.
            assert impostor.auth.seen == 0
            wait_until(lambda: True, 1, "nothing")


def test_plaintext_peer_cannot_talk_to_a_tls_gateway(
    own_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Server(port=0, tls_self_signed=True) as gateway:
        # Another machine's peer: no local gateway record tells it about TLS.
        monkeypatch.setenv("EASYREMOTE_HOME", str(tmp_path / "elsewhere"))
        with Client(gateway.address, retry_attempts=0, connection_timeout=2) as client:
            with pytest.raises(AuthenticationError, match="serves TLS"):
                client.list_nodes()
        assert gateway.auth is not None and gateway.auth.seen == 0
        assert common_pb2.ErrorReason.Name(0)  # the proto import stays in use


def test_message_size_limit_is_configurable(own_home: Path) -> None:
    with pytest.raises(ValueError, match="at least"):
        Server(port=0, max_message_bytes=1024)
    with Server(port=0, max_message_bytes=4 << 20) as gateway:
        client_token = load_local_credentials().client_token  # type: ignore[union-attr]
        code = _raw(
            gateway.address,
            "/easyremote.proto.v1.ClientService/Call",
            "unary_unary",
            b"\x00" * (5 << 20),
            _bearer(client_token),
        )
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_registration_and_stream_limits(own_home: Path) -> None:
    with Server(
        port=0, max_functions_per_node=2, max_function_name_chars=10, max_streams_per_peer=2
    ) as gateway:
        crowded = ComputeNode(gateway.address, "crowded", reconnect=False)
        for name in ("a", "b", "c"):
            crowded.register(lambda: 0, name=name)
        with pytest.raises(NodeError, match="max_functions_per_node=2"):
            crowded.serve(blocking=False)
        crowded.stop()
        verbose = ComputeNode(gateway.address, "verbose", reconnect=False)
        verbose.register(lambda: 0, name="a_very_long_function_name")
        with pytest.raises(NodeError, match="max_function_name_chars"):
            verbose.serve(blocking=False)
        verbose.stop()
        # Two streams from this address are allowed, a third is refused...
        first, second = Client(gateway.address), Client(gateway.address)
        try:
            node = ComputeNode(gateway.address, "ok", reconnect=False)
            node.register(lambda: "fine", name="a")
            first.list_nodes()  # unary: no stream held
            with node:  # stream 1
                assert first.call("a") == "fine"  # stream 2
                with pytest.raises(QueueFullError, match="max_streams_per_peer=2"):
                    second.call("a")
                first.close()  # ...and closing one makes room again.
                wait_until(lambda: _try_call(second), 10, "a stream slot to free up")
        finally:
            first.close()
            second.close()


def _try_call(client: Client) -> bool:
    try:
        return bool(client.call("a") == "fine")
    except QueueFullError:
        return False


@pytest.mark.skipif(
    not hasattr(os, "getuid") or os.getuid() != 0 or not Path("/proc/net/tcp").exists(),
    reason="needs root (to listen as another user) and Linux /proc/net/tcp",
)
def test_local_token_is_not_sent_to_another_users_listener(own_home: Path) -> None:
    import socket
    import subprocess
    import sys

    with Server(port=0):  # writes the local token file
        pass
    # Another user takes a port on loopback, as if the gateway had died.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    squatter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, socket, sys, time; os.setuid(65534); s = socket.socket(); "
            f"s.bind(('127.0.0.1', {port})); s.listen(); print('up', flush=True); "
            "time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert squatter.stdout is not None and squatter.stdout.readline().strip() == "up"
        with pytest.raises(AuthenticationError, match="held by another user"):
            with Client(f"127.0.0.1:{port}", retry_attempts=0) as client:
                client.list_nodes()
    finally:
        squatter.kill()
        squatter.wait(5)
