"""The ``easyremote-server`` command: options, banner, signals, bind errors."""

from __future__ import annotations

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

from easyremote.server import GatewayError, Server
from easyremote.server import cli as server_cli

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

    def __init__(self, *args: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=_env(),
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
    child.expect(f'Client("{address}").call(')
    child.expect(f"easyremote status {address}")
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


def test_banner_for_a_wildcard_host_names_this_machine() -> None:
    text = server_cli.banner(Server(port=9000, host="0.0.0.0"), "round_robin")
    assert "listening on 127.0.0.1:9000 (default strategy: round_robin)" in text
    assert f"{socket.gethostname()}:9000" in text
    assert "--host 0.0.0.0" not in text
    assert "--host 0.0.0.0" in server_cli.banner(Server(port=9000), "smart_adaptive")


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


def test_banner_says_how_remote_peers_authenticate(own_home: Path) -> None:
    with Server(port=0, host="0.0.0.0", tls_self_signed=True) as gateway:
        text = server_cli.banner(gateway, "smart_adaptive")
        fingerprint = gateway.tls_fingerprint
    assert fingerprint and f"TLS certificate SHA-256 fingerprint: {fingerprint}" in text
    assert "Authentication: tokens (local token file)" in text
    assert str(own_home / "credentials.json") in text
    assert f"export EASYREMOTE_TLS_FINGERPRINT={fingerprint}" in text
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
