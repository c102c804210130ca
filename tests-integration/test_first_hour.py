"""A newcomer's first hour: a fresh machine, peers started before their gateway,
TLS on one machine without configuration, TLS mistakes named, nothing silent.

Each test that plays a fresh machine points ``EASYREMOTE_HOME`` (and, for
processes, ``HOME``) at a new empty folder.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _procs import Proc

from easyremote.client import AuthenticationError, CallTimeoutError, Client, InvalidArgumentError
from easyremote.node import ComputeNode, NodeError
from easyremote.proto.addresses import host_port, machine_addresses
from easyremote.proto.credentials import load_local_credentials
from easyremote.proto.local_gateways import GatewayRecord, read_record, record_path, write_record
from easyremote.server import Server

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo.py"


@pytest.fixture()
def own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "easyremote-home"
    monkeypatch.setenv("EASYREMOTE_HOME", str(home))
    for variable in ("EASYREMOTE_TOKEN", "EASYREMOTE_TLS_FINGERPRINT", "EASYREMOTE_TLS_CA"):
        monkeypatch.delenv(variable, raising=False)
    return home


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fresh_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "user-home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PYTHONUNBUFFERED": "1"}
    for variable in ("EASYREMOTE_HOME", "EASYREMOTE_TOKEN", "EASYREMOTE_GATEWAY"):
        env.pop(variable, None)
    return env


# ------------------------------------------------------------ fresh machine


@pytest.mark.parametrize("run", [1, 2, 3])
def test_the_demo_passes_on_a_fresh_home(run: int, tmp_path: Path) -> None:
    """README's first command, as a newcomer runs it: no ~/.easyremote yet."""
    env = _fresh_env(tmp_path)
    done = subprocess.run(
        [sys.executable, str(DEMO)],
        env=env,
        capture_output=True,
        text=True,
        timeout=25,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Request 4: {'result': 'processed_data_4'" in done.stdout
    assert "Received chunk: {'chunk': 2" in done.stdout
    # The gateway made the tokens in the fresh home, as a first start does.
    assert (Path(env["HOME"]) / ".easyremote" / "credentials.json").exists()


def test_a_client_made_before_the_gateway_first_started_works_once_it_is_up(
    own_home: Path,
) -> None:
    port = _free_port()
    address = f"127.0.0.1:{port}"
    with Client(address, retry_attempts=0, connection_timeout=2) as client:
        # No gateway yet, so no token file: the channel opens without a token.
        with pytest.raises(Exception, match="gateway"):
            client.list_nodes()
        assert load_local_credentials() is None
        with Server(port=port) as gateway:
            node = ComputeNode(address, "late-node")
            node.register(lambda x: x * 2, name="double")
            with node:
                assert gateway.auth is not None
                assert [n.node_id for n in client.wait_for_nodes("late-node", timeout=10)] == [
                    "late-node"
                ]
                assert client.call("double", 21) == 42


def test_a_node_made_before_the_gateway_registers_once_it_is_up(
    own_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = _free_port()
    address = f"127.0.0.1:{port}"
    node = ComputeNode(address, "early-node", connection_timeout=1)
    node.register(lambda: "early", name="early")
    caplog.set_level(logging.INFO, logger="easyremote")
    with pytest.raises(NodeError, match="could not register"):
        node.serve(blocking=False)
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert address in warning.getMessage()
    assert "early-node" in warning.getMessage()
    with Server(port=port), node, Client(address) as client:
        assert client.call("early") == "early"


def test_wait_for_nodes_names_what_is_missing(own_home: Path) -> None:
    with Server(port=0) as gateway, Client(gateway.address) as client:
        assert client.wait_for_nodes(count=0, timeout=5) == []
        with pytest.raises(CallTimeoutError, match=r"node 'ghost'.*serving 'nothing'"):
            client.wait_for_nodes("ghost", functions=["nothing"], timeout=0.5)
    with Client(f"127.0.0.1:{_free_port()}", connection_timeout=1) as client:
        with pytest.raises(CallTimeoutError, match=r"answer from the gateway.*last error"):
            client.wait_for_nodes(timeout=1)


# ---------------------------------------------------------------- local TLS


def test_tls_on_one_machine_needs_no_configuration(own_home: Path) -> None:
    with Server(port=0, tls_self_signed=True) as gateway:
        record = read_record(gateway.port)
        assert record is not None and record.tls_fingerprint == gateway.tls_fingerprint
        node = ComputeNode(gateway.address, "local-tls")
        node.register(lambda: "over TLS", name="secure")
        with node, Client(f"localhost:{gateway.port}") as client:
            assert client.call("secure") == "over TLS"
    # A stopped gateway takes its record with it.
    assert not record_path(gateway.port).exists()


def test_a_client_made_before_a_tls_gateway_started_uses_its_record(own_home: Path) -> None:
    port = _free_port()
    with Client(f"127.0.0.1:{port}", retry_attempts=0, connection_timeout=2) as client:
        with pytest.raises(Exception, match="gateway"):
            client.list_nodes()
        with Server(port=port, tls_self_signed=True):
            assert client.list_nodes() == []


def test_a_record_of_a_gateway_that_died_is_ignored(own_home: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    port = _free_port()
    write_record(GatewayRecord(port=port, pid=int(dead.stdout), tls_fingerprint="AB" * 32))
    assert read_record(port) is None
    with Server(port=port), Client(f"127.0.0.1:{port}") as client:
        # The plaintext gateway replaced the record; nobody tries TLS on it.
        assert client.list_nodes() == []
        assert read_record(port) == GatewayRecord(port=port, pid=os.getpid())


def _other_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, token: str) -> None:
    """From here on this process plays another machine: its own home, a pasted token."""
    monkeypatch.setenv("EASYREMOTE_HOME", str(tmp_path / "other-machine"))
    monkeypatch.setenv("EASYREMOTE_TOKEN", f"  {token}\n")  # pasted with whitespace


def test_a_plaintext_peer_at_a_tls_port_is_told_about_tls(
    own_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Server(port=0, tls_self_signed=True) as gateway:
        tokens = load_local_credentials()
        assert tokens is not None and gateway.auth is not None
        _other_machine(monkeypatch, tmp_path, tokens.client_token)
        with Client(gateway.address) as client:
            with pytest.raises(AuthenticationError, match="serves TLS") as caught:
                client.list_nodes()
        assert gateway.tls_fingerprint in str(caught.value)  # what to check, not to trust
        monkeypatch.setenv("EASYREMOTE_TOKEN", tokens.node_token)
        node = ComputeNode(gateway.address, "plaintext-node")
        node.register(lambda: 0, name="zero")
        with pytest.raises(NodeError, match="serves TLS"):
            node.serve(blocking=False)
        node.stop()
        # With the pin, pasted with a trailing newline, the same peer gets in.
        monkeypatch.setenv("EASYREMOTE_TLS_FINGERPRINT", f"{gateway.tls_fingerprint}\n")
        with Client(gateway.address) as client:
            assert client.list_nodes() == []
        assert gateway.auth.unauthenticated == 0


def test_a_tls_peer_at_a_plaintext_port_is_told_about_tls(
    own_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Server(port=0) as gateway:
        tokens = load_local_credentials()
        assert tokens is not None
        _other_machine(monkeypatch, tmp_path, tokens.client_token)
        monkeypatch.setenv("EASYREMOTE_TLS_FINGERPRINT", "ab" * 32)
        with Client(gateway.address) as client:
            with pytest.raises(AuthenticationError, match="does not speak TLS"):
                client.list_nodes()
        # A CA file instead of a pin: no certificate check up front, same answer.
        monkeypatch.delenv("EASYREMOTE_TLS_FINGERPRINT")
        ca = tmp_path / "ca.pem"
        with Server(port=0, tls_self_signed=True):  # only to have a certificate file
            ca.write_bytes((tmp_path / "other-machine" / "tls" / "gateway-cert.pem").read_bytes())
        monkeypatch.setenv("EASYREMOTE_TLS_CA", str(ca))
        node = ComputeNode(gateway.address, "tls-node")
        node.register(lambda: 0, name="zero")
        with pytest.raises(NodeError, match="does not speak TLS"):
            node.serve(blocking=False)
        node.stop()


# ------------------------------------------------------------ nothing silent


def test_start_and_serve_log_one_info_line_each(
    own_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="easyremote")
    with Server(port=0) as gateway:
        node = ComputeNode(gateway.address, "talkative")
        node.register(lambda: 0, name="zero")
        with node:
            pass
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert sum(f"gateway listening on {gateway.address}" in m for m in messages) == 1
    assert (
        sum(
            f"node talkative registered with the gateway at {gateway.address}" in m
            for m in messages
        )
        == 1
    )


SCRIPT = """
import sys
from easyremote.server import Server
from easyremote.node import ComputeNode

if sys.argv[1] == "gateway":
    Server(port=int(sys.argv[2])).start()
else:
    node = ComputeNode(sys.argv[2], "script-node")

    @node.register
    def hello():
        return "hi"

    node.serve()
"""


def test_a_script_that_starts_a_gateway_and_a_node_says_so(tmp_path: Path) -> None:
    """Scripts as README writes them, with no logging set up, are not silent."""
    script = tmp_path / "roles.py"
    script.write_text(textwrap.dedent(SCRIPT))
    port = _free_port()
    gateway = Proc([sys.executable, str(script), "gateway", str(port)], "gateway")
    node = None
    try:
        gateway.expect_containing(f"gateway listening on 127.0.0.1:{port}")
        node = Proc([sys.executable, str(script), "node", f"127.0.0.1:{port}"], "node")
        node.expect_containing("node script-node registered with the gateway")
    finally:
        if node is not None:
            assert node.stop() == 0
        assert gateway.stop() == 0


def test_importing_the_library_changes_nothing_process_wide() -> None:
    probe = """
import logging, os, sys
before = dict(os.environ)
import easyremote.client, easyremote.node, easyremote.server, easyremote.proto
from easyremote.proto import memory
changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
root = logging.getLogger()
print(json.dumps({"env": changed, "handlers": len(root.handlers), "level": root.level,
                  "allocator": sorted(memory._tried)}))
"""
    done = subprocess.run(
        [sys.executable, "-c", "import json\n" + probe],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    seen = json.loads(done.stdout)
    assert seen == {"env": [], "handlers": 0, "level": logging.WARNING, "allocator": []}


ENTRY_POINTS = ["server", "node", "client", "meta"]


@pytest.mark.parametrize("command", ENTRY_POINTS)
def test_each_command_quiets_grpc_before_grpc_loads(command: str) -> None:
    """gRPC reads GRPC_VERBOSITY at import: the console scripts set it first."""
    probe = f"""
import os, sys
os.environ.pop("GRPC_VERBOSITY", None)
import _easyremote_entry as entry
assert "grpc" not in sys.modules, "the entry module must not load grpc"
sys.argv = ["prog", "--version"]
try:
    entry.{command}()
except SystemExit:
    pass
print("VERBOSITY", os.environ["GRPC_VERBOSITY"])
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    assert "VERBOSITY ERROR" in done.stdout
    chosen = subprocess.run(
        [sys.executable, "-c", probe.replace('os.environ.pop("GRPC_VERBOSITY", None)', "")],
        env={**os.environ, "GRPC_VERBOSITY": "INFO"},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert "VERBOSITY INFO" in chosen.stdout  # a user's own setting wins


def test_a_tls_gateway_command_prints_no_grpc_lines_when_probed_in_plaintext(
    tmp_path: Path,
) -> None:
    """Port scanners hit public gateways all day; gRPC must not log each one."""
    import grpc

    from easyremote.proto.v1 import client_pb2, client_pb2_grpc

    env = _fresh_env(tmp_path)
    env.pop("GRPC_VERBOSITY", None)
    port = _free_port()
    script = Path(sys.executable).parent / "easyremote-server"
    gateway = Proc([str(script), "--port", str(port), "--tls-self-signed"], "gateway", env=env)
    try:
        gateway.expect_containing(f"gateway listening on 127.0.0.1:{port} (TLS")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.RpcError):
                client_pb2_grpc.ClientServiceStub(channel).ListNodes(
                    client_pb2.ListNodesRequest(), timeout=5
                )
    finally:
        assert gateway.stop() == 0
    output = "".join(gateway.output)
    assert "Handshake failed" not in output, output
    assert "gateway on 127.0.0.1" in output and "stopped" in output


@pytest.mark.parametrize(
    ("address", "hint"),
    [
        ("localhost", "not host:port"),
        ("tcp://localhost:8786", "drop 'tcp://'"),
        ("ray://head:10001", "drop 'ray://'"),
        ("::1", "IPv6 address in brackets"),
    ],
)
def test_an_address_without_a_port_or_with_a_scheme_fails_at_once(address: str, hint: str) -> None:
    # gRPC would dial port 443, or report only a misformatted name.
    with pytest.raises(InvalidArgumentError, match=hint):
        Client(address)
    with pytest.raises(ValueError, match=hint):
        ComputeNode(address, "typo")
    script = Path(sys.executable).parent / "easyremote-node"
    done = subprocess.run(
        [str(script), address, "module:node"], capture_output=True, text=True, timeout=20
    )
    assert done.returncode == 2 and hint in done.stderr, done.stderr


def test_a_token_withheld_from_a_remote_tls_gateway_points_at_tls(
    own_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No pin for another machine's gateway: say it serves TLS, not 'allow_insecure'."""
    found = machine_addresses()
    if not found:
        pytest.skip("this machine has no non-loopback address")
    with Server(port=0, host="0.0.0.0", tls_self_signed=True) as gateway:
        tokens = load_local_credentials()
        assert tokens is not None
        _other_machine(monkeypatch, tmp_path, tokens.client_token)
        remote = host_port(found[0], gateway.port)
        with Client(remote) as client:
            with pytest.raises(AuthenticationError, match="serves TLS") as caught:
                client.list_nodes()
        assert "allow_insecure" not in str(caught.value)
        monkeypatch.setenv("EASYREMOTE_TOKEN", tokens.node_token)
        node = ComputeNode(remote, "unpinned")
        node.register(lambda: 0, name="zero")
        with pytest.raises(NodeError, match="serves TLS"):
            node.serve(blocking=False)
        node.stop()
