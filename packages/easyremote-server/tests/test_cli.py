"""The ``easyremote-server`` command: options, banner, signals, bind errors, join, status."""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from easyremote.proto.credentials import ensure_local_credentials, load_local_credentials
from easyremote.server import GatewayError, Server
from easyremote.server import _join as server_join
from easyremote.server import cli as server_cli
from easyremote.server._tls import fingerprint_of_pem, load_or_create_self_signed

REPO = Path(__file__).resolve().parents[3]
STARTUP_TIMEOUT_S = 8.0
EXIT_TIMEOUT_S = 8.0


def _env() -> dict[str, str]:
    # Every package's src folder, so the child imports this checkout even
    # where nothing is installed.
    paths = [str(path) for path in sorted((REPO / "packages").glob("*/src"))]
    inherited = os.environ.get("PYTHONPATH")
    if inherited:
        paths.append(inherited)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}


def _held_port() -> socket.socket:
    """A listening socket on a free loopback port (close it to free the port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


class _Child:
    """A CLI subprocess whose merged output is read line by line in the background."""

    def __init__(self, *args: str, extra_env: dict[str, str] | None = None) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**_env(), **(extra_env or {})},
        )
        self.output: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.output.append(line)
            self._lines.put(line)

    def expect(self, text: str, timeout: float = STARTUP_TIMEOUT_S) -> str:
        """Returns the first line containing ``text``; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} in {timeout:g} s:\n{''.join(self.output)}")

    def finish(self, sig: signal.Signals) -> int:
        """Sends ``sig`` and returns the exit code (bounded wait)."""
        self.popen.send_signal(sig)
        code = self.popen.wait(EXIT_TIMEOUT_S)
        self._reader.join(EXIT_TIMEOUT_S)
        return code

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(EXIT_TIMEOUT_S)


@pytest.fixture
def children() -> Iterator[list[_Child]]:
    started: list[_Child] = []
    yield started
    for child in started:
        child.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_banner_then_signal_stops_cleanly(children: list[_Child], sig: signal.Signals) -> None:
    child = _Child("easyremote.server.cli", "--port", "0", "--log-level", "warning")
    children.append(child)
    line = child.expect("listening on ")
    address = line.split("listening on ")[1].split()[0]
    host, port = address.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    child.expect(f"easyremote-node {address} mymodule:node")
    child.expect("from easyremote.client import Client")
    child.expect(f'Client("{address}").call(')
    child.expect(f"easyremote-server status {address}")
    with socket.create_connection((host, int(port)), timeout=2.0):
        pass
    assert child.finish(sig) == 0, "".join(child.output)
    assert "Traceback" not in "".join(child.output)


def test_port_in_use_is_one_clear_line_and_exit_1() -> None:
    with _held_port() as holder:
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "easyremote.server.cli", "--port", str(port)],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=STARTUP_TIMEOUT_S,
        )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{port}: the port is already in use "
        "(stop the other process or pick another --port)"
    ]


def test_port_held_by_another_gateway_exits_1() -> None:
    other = Server(port=0).start_background()
    try:
        result = CliRunner().invoke(server_cli.server_command, ["--port", str(other.port)])
    finally:
        other.stop()
    assert result.exit_code == 1
    assert "already in use" in result.output
    assert "Traceback" not in result.output


def test_gateway_error_after_the_check_is_still_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # A port taken between the check and the bind reaches Server's own error.
    monkeypatch.setattr(server_cli, "check_bindable", lambda host, port: None)
    with _held_port() as holder:
        port = holder.getsockname()[1]
        result = CliRunner().invoke(server_cli.server_command, ["--port", str(port)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot listen on 127.0.0.1:{port}")
    assert isinstance(result.exception, SystemExit)


def test_check_bindable() -> None:
    server_cli.check_bindable("127.0.0.1", 0)
    with _held_port() as holder:
        port = holder.getsockname()[1]
        with pytest.raises(GatewayError, match="already in use"):
            server_cli.check_bindable("127.0.0.1", port)
    with pytest.raises(GatewayError, match="unknown host"):
        server_cli.check_bindable("no-such-host.invalid", 8080)


@pytest.mark.parametrize(
    "args",
    [
        ["--default-strategy", "fastest"],
        ["--port", "70000"],
        ["--max-queue", "-1"],
        ["--heartbeat-interval", "0"],
        ["--log-level", "loud"],
    ],
)
def test_bad_options_are_usage_errors(args: list[str]) -> None:
    result = CliRunner().invoke(server_cli.server_command, args)
    assert result.exit_code == 2
    assert "Invalid value" in result.output


def test_help_lists_the_options() -> None:
    result = CliRunner().invoke(server_cli.server_command, ["--help"])
    assert result.exit_code == 0
    for option in (
        "--host",
        "--port",
        "--default-strategy",
        "--max-queue",
        "--heartbeat-interval",
        "--log-level",
    ):
        assert option in result.output


def test_banner_for_a_wildcard_host_lists_real_addresses() -> None:
    gateway = Server(port=9000, host="0.0.0.0")
    text = server_cli.banner(gateway, "round_robin", ["10.1.2.3:9000", "[fd00::5]:9000"])
    lines = text.splitlines()
    assert "listening on 0.0.0.0:9000, all interfaces (default strategy: round_robin)" in lines[0]
    start = lines.index("Other machines dial one of:")
    assert lines[start + 1 : start + 3] == ["  10.1.2.3:9000", "  [fd00::5]:9000"]
    assert "easyremote-server join --address 10.1.2.3:9000" in text
    assert "127.0.0.1:9000" not in "\n".join(lines[: start + 3])
    assert "--host 0.0.0.0" not in text
    no_network = server_cli.banner(gateway, "round_robin", [])
    assert "no network address was found" in no_network
    assert "easyremote-server join --port 9000" in no_network
    assert "--host 0.0.0.0" in server_cli.banner(Server(port=9000), "smart_adaptive")


def test_banner_lines_use_each_roles_own_commands() -> None:
    text = server_cli.banner(Server(port=9000), "smart_adaptive")
    assert "from easyremote.client import Client" in text
    assert "from easyremote import" not in text
    assert "easyremote status" not in text  # the meta package's command
    assert "easyremote-server status 127.0.0.1:9000" in text


def test_cli_imports_no_cloudpickle_or_psutil() -> None:
    # As in a server-only install: the node and client portions are absent.
    code = (
        "import sys\n"
        "sys.path[:] = [p for p in sys.path if not any(k in p.replace('\\\\', '/') for k in "
        "('easyremote-node', 'easyremote-client', 'packages/easyremote/src'))]\n"
        "from easyremote.server import cli\n"
        "bad = [m for m in ('cloudpickle', 'psutil', 'pynvml') if m in sys.modules]\n"
        "print(bad)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=STARTUP_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.fixture()
def own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("EASYREMOTE_HOME", str(home))
    return home


def test_banner_points_to_join_and_shows_no_secret(own_home: Path) -> None:
    with Server(port=0, host="0.0.0.0", tls_self_signed=True) as gateway:
        text = server_cli.banner(gateway, "smart_adaptive", ["10.1.2.3:1"])
        fingerprint = gateway.tls_fingerprint
    local = load_local_credentials()
    assert fingerprint and local is not None
    for secret in (local.client_token, local.node_token):
        assert secret not in text
    # The fingerprint is no secret (any peer sees the certificate): shown to compare with.
    assert f"certificate SHA-256 fingerprint: {fingerprint}" in text
    assert "Authentication: tokens (local token file)" in text
    assert "easyremote-server join --address 10.1.2.3:1" in text
    assert "json.tool" not in text and "<node_token>" not in text
    with Server(port=0, auth=False) as open_gateway:
        assert "Authentication: OFF" in server_cli.banner(open_gateway, "smart_adaptive")


def test_exposed_bind_without_tls_is_one_clear_error(own_home: Path) -> None:
    result = CliRunner().invoke(server_cli.server_command, ["--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 1
    assert "without TLS" in result.output and "--tls-self-signed" in result.output
    result = CliRunner().invoke(
        server_cli.server_command,
        ["--port", "0", "--no-auth", "--tls-self-signed", "--tls-key", __file__],
    )
    assert result.exit_code == 2  # a key without a certificate is a usage error
    assert "pass --tls-cert and --tls-key together" in result.output  # the flags' names


# ------------------------------------------------------- every flag, from env


def _options(command: click.Command) -> list[click.Option]:
    return [
        param
        for param in command.params
        if isinstance(param, click.Option) and param.name not in ("help", "version")
    ]


@pytest.mark.parametrize(
    "command",
    [
        server_cli.server_command,
        server_cli.server_command.commands["join"],
        server_cli.server_command.commands["status"],
    ],
    ids=["gateway", "join", "status"],
)
def test_every_flag_has_a_documented_environment_variable(command: click.Command) -> None:
    for option in _options(command):
        assert isinstance(option.envvar, str) and option.envvar.startswith("EASYREMOTE_"), option
        assert option.show_envvar, option
    assert "token" not in {option.name for option in _options(command)}


def test_flags_and_environment_reach_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    class Captured(Exception):
        pass

    def fake_server(port: int, host: str, **settings: object) -> None:
        seen.update(settings, port=port, host=host)
        raise Captured

    monkeypatch.setattr(server_cli, "Server", fake_server)
    result = CliRunner().invoke(
        server_cli.server_command,
        ["--max-message-bytes", "16MiB", "--max-functions-per-node", "7"],
        env={
            "EASYREMOTE_PORT": "9123",
            "EASYREMOTE_HOST": "0.0.0.0",
            "EASYREMOTE_MAX_PAYLOAD_BYTES": "64MiB",
            "EASYREMOTE_NODE_TIMEOUT": "7.5",
            "EASYREMOTE_MAX_STREAMS_PER_PEER": "12",
            "EASYREMOTE_MAX_FUNCTION_NAME_CHARS": "64",
            "EASYREMOTE_TLS_SELF_SIGNED": "1",
            "EASYREMOTE_MAX_FUNCTIONS_PER_NODE": "999",  # the flag wins
        },
    )
    assert isinstance(result.exception, Captured), result.output
    assert (seen["port"], seen["host"]) == (9123, "0.0.0.0")
    assert seen["max_payload_bytes"] == 64 << 20
    assert seen["max_message_bytes"] == 16 << 20
    assert seen["node_timeout"] == 7.5
    assert seen["max_streams_per_peer"] == 12
    assert seen["max_function_name_chars"] == 64
    assert seen["max_functions_per_node"] == 7
    assert seen["tls_self_signed"] is True


def test_help_names_the_environment_variables() -> None:
    result = CliRunner().invoke(server_cli.server_command, ["--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for name in ("EASYREMOTE_HOST", "EASYREMOTE_PORT", "EASYREMOTE_MAX_PAYLOAD_BYTES"):
        assert name in text
    for command in ("join", "status"):
        assert command in result.output


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 0), ("1048576", 1 << 20), ("64MiB", 64 << 20), ("512kib", 512 << 10), ("1GB", 10**9)],
)
def test_parse_size(text: str, size: int) -> None:
    assert server_cli.parse_size(text) == size


def test_a_bad_size_is_a_usage_error() -> None:
    result = CliRunner().invoke(server_cli.server_command, ["--max-payload-bytes", "lots"])
    assert result.exit_code == 2
    assert "is not a size" in result.output


def test_gateway_options_before_a_command_are_refused() -> None:
    result = CliRunner().invoke(server_cli.server_command, ["--port", "9", "status"])
    assert result.exit_code == 2
    assert "--port configure the gateway itself, not `status`" in result.output


# --------------------------------------------------------------------- join


@pytest.fixture()
def gateway_secrets(own_home: Path) -> tuple[str, str, str]:
    """(client token, node token, fingerprint) as a first gateway start leaves them."""
    local = ensure_local_credentials()
    cert, _ = load_or_create_self_signed()
    return local.client_token, local.node_token, fingerprint_of_pem(cert)


def _shell_env(export_line: str) -> list[str]:
    """What a POSIX shell sets from ``export_line``: token, fingerprint."""
    script = export_line + '\nprintf "%s\\n" "$EASYREMOTE_TOKEN" "$EASYREMOTE_TLS_FINGERPRINT"'
    done = subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_join_prints_pasteable_lines_for_both_roles(
    gateway_secrets: tuple[str, str, str],
) -> None:
    client_token, node_token, fingerprint = gateway_secrets
    result = CliRunner().invoke(server_cli.server_command, ["join", "--address", "10.0.0.5:8080"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    exports = [line for line in lines if not line.startswith("#")][0::2]
    commands = [line for line in lines if not line.startswith("#")][1::2]
    assert all(line.startswith("#") or line in exports + commands for line in lines)
    assert [_shell_env(line) for line in exports] == [
        [node_token, fingerprint],
        [client_token, fingerprint],
    ]
    assert [shlex.split(line) for line in commands] == [
        ["easyremote-node", "10.0.0.5:8080", "mymodule:node"],
        ["easyremote-client", "status", "10.0.0.5:8080"],
    ]
    # The whole output pastes into a shell as is (comments included).
    done = subprocess.run(
        ["sh", "-n"], input=result.output, capture_output=True, text=True, timeout=5
    )
    assert done.returncode == 0, done.stderr


def test_join_json_and_one_role(gateway_secrets: tuple[str, str, str]) -> None:
    client_token, _, fingerprint = gateway_secrets
    result = CliRunner().invoke(
        server_cli.server_command,
        ["join", "--role", "client", "--format", "json"],
        env={"EASYREMOTE_JOIN_ADDRESS": "[fd00::5]", "EASYREMOTE_PORT": "9000"},
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["address"] == "[fd00::5]:9000"
    assert document["tls_fingerprint"] == fingerprint
    assert "node" not in document
    assert document["client"] == {
        "env": {
            "EASYREMOTE_TOKEN": client_token,
            "EASYREMOTE_TLS_FINGERPRINT": fingerprint,
            "EASYREMOTE_GATEWAY": "[fd00::5]:9000",
        },
        "command": "easyremote-client status '[fd00::5]:9000'",
    }


def test_join_defaults_to_a_real_address(
    gateway_secrets: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_join, "machine_addresses", lambda: ["192.0.2.7", "fd00::7"])
    result = CliRunner().invoke(server_cli.server_command, ["join", "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert "easyremote-node 192.0.2.7:8123 mymodule:node" in result.output


def test_join_reads_tokens_from_the_environment_first(own_home: Path) -> None:
    result = CliRunner().invoke(
        server_cli.server_command,
        ["join", "--address", "gw.example:1", "--role", "node"],
        env={"EASYREMOTE_CLIENT_TOKEN": "client-from-env", "EASYREMOTE_NODE_TOKEN": "node-env"},
    )
    assert result.exit_code == 0, result.output
    assert "export EASYREMOTE_TOKEN='node-env'" in result.output
    assert "client-from-env" not in result.output
    assert "TLS is off" in result.output  # no certificate in this home
    assert "EASYREMOTE_TLS_FINGERPRINT" not in result.output
    assert not (own_home / "credentials.json").exists()  # join makes no tokens


def test_join_follows_the_running_gateways_tls(
    gateway_secrets: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_join, "machine_addresses", lambda: ["192.0.2.9"])
    # A generated certificate exists, but this gateway serves plaintext: no pin.
    with Server(port=0) as plain:
        result = CliRunner().invoke(
            server_cli.server_command, ["join", "--address", f"10.0.0.5:{plain.port}"]
        )
    assert result.exit_code == 0, result.output
    assert "EASYREMOTE_TLS_FINGERPRINT" not in result.output
    assert "TLS is off" in result.output
    with Server(port=0, host="0.0.0.0", tls_self_signed=True) as tls:
        result = CliRunner().invoke(
            server_cli.server_command, ["join", "--port", str(tls.port), "--format", "json"]
        )
        fingerprint = tls.tls_fingerprint
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["tls_fingerprint"] == fingerprint == gateway_secrets[2]
    assert "notes" not in json.loads(result.output)


def test_join_before_any_gateway_says_to_start_one(own_home: Path) -> None:
    result = CliRunner().invoke(server_cli.server_command, ["join"])
    assert result.exit_code == 1
    assert "start the gateway first" in result.output
    assert "Traceback" not in result.output


# ------------------------------------------------------------------- status


def test_status_of_a_local_gateway(own_home: Path) -> None:
    with Server(port=0) as gateway:
        table = CliRunner().invoke(server_cli.server_command, ["status", gateway.address])
        as_json = CliRunner().invoke(
            server_cli.server_command,
            ["status", "--format", "json"],
            env={"EASYREMOTE_GATEWAY": gateway.address},
        )
    assert table.exit_code == 0, table.output
    assert f"No nodes connected to {gateway.address}." in table.output
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output) == []


def test_status_of_a_local_tls_gateway_needs_no_settings(own_home: Path) -> None:
    with Server(port=0, host="0.0.0.0", tls_self_signed=True) as gateway:
        result = CliRunner().invoke(
            server_cli.server_command, ["status", f"127.0.0.1:{gateway.port}", "--format", "json"]
        )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == []


def test_status_errors_are_one_line(own_home: Path) -> None:
    with Server(port=0, client_token="c" * 20, node_token="n" * 20) as gateway:
        refused = CliRunner().invoke(
            server_cli.server_command,
            ["status", gateway.address],
            env={"EASYREMOTE_TOKEN": "wrong-token-value"},
        )
        missing = CliRunner().invoke(
            server_cli.server_command,
            ["status", gateway.address, "--node", "nope"],
            env={"EASYREMOTE_CLIENT_TOKEN": "c" * 20},
        )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    unreachable = CliRunner().invoke(server_cli.server_command, ["status", dead])
    for result, text in (
        (refused, f"Error: the gateway at {gateway.address} refused the credentials"),
        (missing, f"Error: no node 'nope' is connected to {gateway.address}"),
        (unreachable, f"Error: cannot reach the gateway at {dead}"),
    ):
        assert result.exit_code == 1, result.output
        assert result.output.startswith(text), result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


# ------------------------------------------------- a real wildcard gateway


def test_wildcard_gateway_banner_lists_no_loopback_to_dial(
    children: list[_Child], tmp_path: Path
) -> None:
    child = _Child(
        "easyremote.server.cli",
        "--port",
        "0",
        "--tls-self-signed",
        extra_env={"EASYREMOTE_HOME": str(tmp_path / "home"), "EASYREMOTE_HOST": "0.0.0.0"},
    )
    children.append(child)
    first = child.expect("listening on ")
    assert "listening on 0.0.0.0:" in first and "all interfaces" in first
    child.expect("Stop the gateway")
    assert child.finish(signal.SIGTERM) == 0, "".join(child.output)
    text = "".join(child.output)
    lines = text.splitlines()
    if "Other machines dial one of:" in lines:
        dial = []
        for line in lines[lines.index("Other machines dial one of:") + 1 :]:
            if not line.startswith("  "):
                break
            dial.append(line.strip())
        assert dial, text
        assert not any(address.startswith(("127.", "[::1]", "localhost")) for address in dial)
        join = next(line for line in lines if "easyremote-server join --address" in line)
        assert join.split()[-1] == dial[0]
    else:
        assert "no network address was found" in text
    for address in server_join.machine_addresses():
        assert not address.startswith("127.") and address != "::1"
    assert "Traceback" not in text


# ------------------------------------------------------------------ logging


def test_log_level_debug_shows_easyremote_only(children: list[_Child]) -> None:
    child = _Child("easyremote.server.cli", "--port", "0", "--log-level", "debug")
    children.append(child)
    child.expect("Stop the gateway")
    assert child.finish(signal.SIGTERM) == 0
    text = "".join(child.output)
    assert "INFO easyremote.server: gateway listening" in text
    # With the root logger at DEBUG, asyncio announces its selector and
    # grpc's Python side logs too; neither must appear.
    assert "Using selector" not in text
    assert " DEBUG asyncio" not in text and " DEBUG grpc" not in text
