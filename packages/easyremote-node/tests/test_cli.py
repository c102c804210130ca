"""The ``easyremote-node`` command: loading TARGET, building the node, serving, status."""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from easyremote.node import ComputeNode, ResourceSnapshot, StaticProbe
from easyremote.node import cli as node_cli

REPO = Path(__file__).resolve().parents[3]
STARTUP_TIMEOUT_S = 8.0
EXIT_TIMEOUT_S = 8.0

NODE_MODULE = """
from easyremote.node import ComputeNode

node = ComputeNode("unused:1", "from-module", cost_per_hour=2.5, tags=["module-tag"])


@node.register(timeout=5, max_concurrency=2, idempotent=False)
def add(a, b):
    return a + b


@node.register(name="countdown", load_balancing=False)
def count(n):
    yield from range(n, 0, -1)


def double(x):
    return 2 * x


def triple(x):
    return 3 * x


functions = [double, triple]
empty = ComputeNode("unused:1", "empty")
number = 3
no_functions = []
not_functions = [double, 4]
"""


@pytest.fixture
def write_module(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Writes a uniquely named, importable module under tmp_path; undone after."""
    saved_path = list(sys.path)
    sys.path.insert(0, str(tmp_path))
    names: list[str] = []

    def write(source: str) -> str:
        name = f"cli_target_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        names.append(name)
        return name

    yield write
    sys.path[:] = saved_path
    for name in names:
        sys.modules.pop(name, None)


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(node_cli.node_command, list(args))


# --------------------------------------------------------------- bad TARGETs


@pytest.mark.parametrize(
    ("attribute", "message"),
    [
        ("missing", "has no attribute 'missing'"),
        ("number", "is int 3; expected a ComputeNode"),
        ("no_functions", "expected a ComputeNode, a function or a non-empty list"),
        ("not_functions", "holds 4, which is not a function"),
        ("empty", "has no registered functions"),
    ],
)
def test_bad_attribute_exits_2(
    write_module: Callable[[str], str], tmp_path: Path, attribute: str, message: str
) -> None:
    name = write_module(NODE_MODULE)
    result = _invoke("127.0.0.1:1", f"{tmp_path / name}.py:{attribute}")
    assert result.exit_code == 2, result.output
    assert "Invalid value for TARGET" in result.output
    assert message in result.output


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_colon_here", "is not of the form module:attribute"),
        ("mod:", "is not of the form module:attribute"),
        ("no_such_module_for_cli_tests:node", "no module named 'no_such_module_for_cli_tests'"),
        ("/no/such/file.py:node", "no such file"),
    ],
)
def test_bad_target_exits_2(target: str, message: str) -> None:
    result = _invoke("127.0.0.1:1", target)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_module_that_fails_to_import_exits_2(write_module: Callable[[str], str]) -> None:
    name = write_module("raise RuntimeError('broken on purpose')\n")
    result = _invoke("127.0.0.1:1", f"{name}:node")
    assert result.exit_code == 2
    assert f"importing '{name}' failed: RuntimeError: broken on purpose" in result.output


def test_missing_dependency_of_the_module_is_not_reported_as_the_module(
    write_module: Callable[[str], str],
) -> None:
    name = write_module("import no_such_dependency_for_cli_tests\n")
    result = _invoke("127.0.0.1:1", f"{name}:node")
    assert result.exit_code == 2
    assert f"importing '{name}' failed" in result.output
    assert "no_such_dependency_for_cli_tests" in result.output


# ------------------------------------------------------------ loading TARGET


def test_load_module_attribute_from_sys_path(write_module: Callable[[str], str]) -> None:
    name = write_module(NODE_MODULE)
    loaded = node_cli.load_target(f"{name}:node")
    assert isinstance(loaded, ComputeNode)
    assert set(loaded.functions) == {"add", "countdown"}


def test_load_function_and_list_from_a_file(
    write_module: Callable[[str], str], tmp_path: Path
) -> None:
    name = write_module(NODE_MODULE)
    single = node_cli.load_target(f"{tmp_path / name}.py:double")
    assert isinstance(single, list) and [f.__name__ for f in single] == ["double"]
    several = node_cli.load_target(f"{tmp_path / name}.py:functions")
    assert isinstance(several, list) and [f.__name__ for f in several] == ["double", "triple"]


def test_load_dotted_attribute(write_module: Callable[[str], str], tmp_path: Path) -> None:
    name = write_module("class Holder:\n    @staticmethod\n    def work():\n        return 1\n")
    loaded = node_cli.load_target(f"{tmp_path / name}.py:Holder.work")
    assert isinstance(loaded, list) and loaded[0]() == 1


# ---------------------------------------------------------- building the node


def test_compute_node_keeps_function_options_and_own_settings() -> None:
    source = ComputeNode("unused:1", "src", max_concurrency=3, cost_per_hour=2.5, tags=["a"])

    @source.register(timeout=5, max_concurrency=2, idempotent=False, load_balancing=False)
    def add(a: int, b: int) -> int:
        return a + b

    node = node_cli.build_node(source, "127.0.0.1:9")
    assert node is not source
    assert (node.gateway_address, node.node_id) == ("127.0.0.1:9", "src")
    assert (node.max_concurrency, node.cost_per_hour, node.tags) == (3, 2.5, ("a",))
    assert node.functions == source.functions


def test_rebuilt_node_keeps_isolation_credentials_and_probe() -> None:
    probe = StaticProbe(ResourceSnapshot(cpu_count=2))
    pin = "AB" * 32
    source = ComputeNode(
        "unused:1",
        "src",
        isolation="process",
        token="secret",
        tls_fingerprint=pin,
        allow_insecure=True,
        probe=probe,
    )
    source.register(name="one")(lambda: 1)
    node = node_cli.build_node(source, "gw:1")
    assert node.isolation == "process"
    peer = node._peer
    assert (peer.token, peer.tls_fingerprint, peer.allow_insecure) == ("secret", pin, True)
    assert node._probe is probe
    assert node_cli.build_node(source, "gw:1", isolation="thread").isolation == "thread"


def test_cli_options_override_the_compute_node() -> None:
    source = ComputeNode("unused:1", "src", max_concurrency=3, cost_per_hour=2.5, tags=["a"])
    source.register(name="one")(lambda: 1)
    node = node_cli.build_node(
        source, "gw:1", node_id="cli", max_concurrency=7, cost_per_hour=0.0, tags=["b", "c"]
    )
    assert (node.node_id, node.max_concurrency, node.cost_per_hour) == ("cli", 7, 0.0)
    assert node.tags == ("b", "c")


def test_plain_functions_get_default_options() -> None:
    def double(x: int) -> int:
        return 2 * x

    node = node_cli.build_node([double], "gw:1", node_id="n", tags=["t"], cost_per_hour=1.0)
    registered = node.functions["double"]
    assert registered.func is double
    assert registered.load_balancing and registered.idempotent
    assert registered.max_concurrency is None and registered.timeout is None
    assert (node.node_id, node.tags, node.cost_per_hour) == ("n", ("t",), 1.0)


def test_banner_names_node_functions_and_next_command() -> None:
    node = ComputeNode("10.0.0.5:8080", "gpu-1", max_concurrency=4)

    @node.register(timeout=3)
    def train(x: int) -> int:
        return x

    text = node_cli.banner(node)
    assert "EasyRemote node 'gpu-1'" in text and "10.0.0.5:8080" in text
    assert "train (timeout 3 s)" in text
    assert "easyremote-node status 10.0.0.5:8080" in text
    assert "easyremote status" not in text  # the meta package's command
    assert "from easyremote.client import Client" in text
    assert "from easyremote import" not in text
    assert 'Client("10.0.0.5:8080").call("train", ...)' in text
    insecure = node_cli.banner(node, allow_insecure=True)
    assert "easyremote-node status 10.0.0.5:8080 --allow-insecure" in insecure


# ------------------------------------------------------------- a real process


def _env() -> dict[str, str]:
    paths = [str(path) for path in sorted((REPO / "packages").glob("*/src"))]
    inherited = os.environ.get("PYTHONPATH")
    if inherited:
        paths.append(inherited)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}


def _wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def test_serves_a_module_node_and_drains_on_sigterm(tmp_path: Path) -> None:
    from easyremote.client import Client
    from easyremote.server import Server

    target = tmp_path / "served_by_cli.py"
    target.write_text(NODE_MODULE)
    server = Server(port=0).start_background()
    child: subprocess.Popen[str] | None = None
    try:
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "easyremote.node.cli",
                server.address,
                f"{target}:node",
                "--node-id",
                "cli-node",
                "--tag",
                "cli",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=_env(),
        )
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            assert child is not None and child.stdout is not None
            for line in child.stdout:
                lines.put(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        with Client(server.address, retry_attempts=0, connection_timeout=3) as client:
            _wait_until(
                lambda: any(n.node_id == "cli-node" for n in client.list_nodes()),
                STARTUP_TIMEOUT_S,
                "the node to register",
            )
            status = client.get_node_status("cli-node")
            assert client.call("add", 2, 3) == 5
        assert status.tags == ("cli",) and status.cost_per_hour == 2.5
        functions = {f.name: f for f in status.functions}
        assert functions["add"].max_concurrency == 2 and not functions["add"].idempotent
        assert not functions["countdown"].load_balancing and functions["countdown"].streaming

        child.send_signal(signal.SIGTERM)
        assert child.wait(EXIT_TIMEOUT_S) == 0
        reader.join(EXIT_TIMEOUT_S)
        output = "".join(lines.queue)
        assert "EasyRemote node 'cli-node'" in output
        assert f"easyremote-node status {server.address}" in output
        assert "Traceback" not in output
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait(EXIT_TIMEOUT_S)
        server.stop()


# --------------------------------------------- flags, environment variables


def _options(command: click.Command) -> list[click.Option]:
    return [
        param
        for param in command.params
        if isinstance(param, click.Option) and param.name not in ("help", "version")
    ]


@pytest.mark.parametrize("name", ["serve", "status"])
def test_every_flag_has_a_documented_environment_variable(name: str) -> None:
    command = node_cli.node_command.commands[name]
    for option in _options(command):
        assert isinstance(option.envvar, str) and option.envvar.startswith("EASYREMOTE_"), option
        assert option.show_envvar, option
    assert "token" not in {option.name for option in _options(command)}


@pytest.fixture
def captured_serve(monkeypatch: pytest.MonkeyPatch) -> list[ComputeNode]:
    """Nodes the command would serve; serve() returns at once."""
    served: list[ComputeNode] = []
    monkeypatch.setattr(ComputeNode, "serve", lambda self, blocking=True: served.append(self))
    return served


def test_environment_sets_the_node_options(
    write_module: Callable[[str], str], captured_serve: list[ComputeNode]
) -> None:
    name = write_module(NODE_MODULE)
    result = CliRunner().invoke(
        node_cli.node_command,
        ["127.0.0.1:9", f"{name}:functions", "--max-concurrency", "5"],
        env={
            "EASYREMOTE_NODE_ID": "from-env",
            "EASYREMOTE_MAX_CONCURRENCY": "3",  # the flag wins
            "EASYREMOTE_TAGS": "gpu fast",
            "EASYREMOTE_COST_PER_HOUR": "1.5",
            "EASYREMOTE_HEARTBEAT_INTERVAL": "0.5",
            "EASYREMOTE_ALLOW_INSECURE": "1",
            "EASYREMOTE_TLS_FINGERPRINT": "ab" * 32,
        },
    )
    assert result.exit_code == 0, result.output
    (node,) = captured_serve
    assert (node.node_id, node.max_concurrency, node.tags) == ("from-env", 5, ("gpu", "fast"))
    assert (node.cost_per_hour, node.heartbeat_interval) == (1.5, 0.5)
    assert node._peer.allow_insecure and node._peer.tls_fingerprint == "ab" * 32
    assert "easyremote-node status 127.0.0.1:9 --allow-insecure" in result.output


def test_tls_flags_override_a_module_node(
    write_module: Callable[[str], str], tmp_path: Path, captured_serve: list[ComputeNode]
) -> None:
    name = write_module(NODE_MODULE)
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked until connecting\n")
    result = _invoke("127.0.0.1:9", f"{name}:node", "--tls-ca", str(ca), "--allow-insecure")
    assert result.exit_code == 0, result.output
    (node,) = captured_serve
    assert node.node_id == "from-module"  # the module's own settings stay
    assert node._peer.tls_ca_file == str(ca) and node._peer.allow_insecure


def test_a_bad_fingerprint_is_a_usage_error(write_module: Callable[[str], str]) -> None:
    name = write_module(NODE_MODULE)
    result = _invoke("127.0.0.1:9", f"{name}:node", "--tls-fingerprint", "nope")
    assert result.exit_code == 2
    assert "not a SHA-256 fingerprint" in result.output
    assert "Traceback" not in result.output


def test_a_gateway_without_a_port_is_a_usage_error() -> None:
    result = _invoke("--node-id", "x", "status", "mod:node")
    assert result.exit_code == 2
    assert "'status' is not host:port" in result.output


def test_help_shows_serve_options_and_the_status_command() -> None:
    result = _invoke("--help")
    assert result.exit_code == 0
    assert result.output.startswith("Usage: node [OPTIONS] GATEWAY TARGET")
    assert "EASYREMOTE_MAX_CONCURRENCY" in result.output
    assert "status" in result.output
    assert _invoke("--version").exit_code == 0


# ----------------------------------------------------------------- logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    levels = {name: logging.getLogger(name).level for name in ("easyremote", "tasks_pkg")}
    yield
    root.handlers[:], root.level = saved
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_log_level_debug_is_for_easyremote_and_the_target_only(restore_logging: None) -> None:
    assert node_cli.target_logger("tasks_pkg.sub:node") == "tasks_pkg"
    assert node_cli.target_logger("path/to/tasks_pkg.py:node") == "tasks_pkg"
    node_cli.configure_logging("debug", also=["tasks_pkg"])
    assert logging.getLogger("easyremote.node").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("tasks_pkg.sub").isEnabledFor(logging.DEBUG)
    for other in ("grpc", "grpc._cython.cygrpc", "asyncio", "urllib3"):
        assert not logging.getLogger(other).isEnabledFor(logging.INFO), other
        assert logging.getLogger(other).isEnabledFor(logging.WARNING), other
    node_cli.configure_logging("warning")
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "easyremote-cli"]
    assert len(ours) == 1  # configuring again replaces, never stacks


# ----------------------------------------------------------------- status


@pytest.fixture
def gateway_with_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A gateway with separate tokens and one node ("st-1"); yields its address."""
    from easyremote.server import Server

    monkeypatch.setenv("EASYREMOTE_HOME", str(tmp_path / "home"))
    server = Server(port=0, client_token="client-" + "c" * 20, node_token="node-" + "n" * 20)
    server.start_background()
    node = ComputeNode(server.address, "st-1", token="node-" + "n" * 20)
    node.register(name="echo")(lambda x: x)
    try:
        node.serve(blocking=False)
        yield server.address
    finally:
        node.stop()
        server.stop()


def test_status_with_the_node_token(gateway_with_node: str) -> None:
    # A node-only machine has EASYREMOTE_TOKEN set to its node token.
    env = {"EASYREMOTE_TOKEN": "node-" + "n" * 20}
    as_json = _invoke("status", gateway_with_node, "--format", "json")
    assert as_json.exit_code == 1  # no token: refused, in one line
    assert "refused the credentials" in as_json.output
    as_json = CliRunner().invoke(
        node_cli.node_command, ["status", gateway_with_node, "--format", "json"], env=env
    )
    assert as_json.exit_code == 0, as_json.output
    assert [n["node_id"] for n in json.loads(as_json.output)] == ["st-1"]
    one = CliRunner().invoke(
        node_cli.node_command,
        ["status", "--node", "st-1"],
        env={**env, "EASYREMOTE_GATEWAY": gateway_with_node},
    )
    assert one.exit_code == 0, one.output
    assert one.output.startswith("NODE ") and "\necho " in one.output
    missing = CliRunner().invoke(
        node_cli.node_command, ["status", gateway_with_node, "--node", "nope"], env=env
    )
    assert missing.exit_code == 1
    assert f"Error: no node 'nope' is connected to {gateway_with_node}" in missing.output


# --------------------------------------------- serve() called at import


def test_import_guard_raises_only_while_importing() -> None:
    from easyremote.node import NodeError
    from easyremote.node._import_guard import check_not_importing, importing_target

    check_not_importing()
    with importing_target("tasks:node"):
        with pytest.raises(NodeError, match=r"'tasks:node' calls serve\(\) while easyremote-node"):
            check_not_importing()
        with importing_target("inner:node"), pytest.raises(NodeError, match="inner:node"):
            check_not_importing()
        with pytest.raises(NodeError, match="tasks:node"):
            check_not_importing()
    check_not_importing()


def test_a_guarded_serve_at_import_is_a_usage_error(write_module: Callable[[str], str]) -> None:
    # What ComputeNode.serve() does first; exercised here without a gateway.
    name = write_module(
        "from easyremote.node._import_guard import check_not_importing\ncheck_not_importing()\n"
    )
    result = _invoke("127.0.0.1:1", f"{name}:node")
    assert result.exit_code == 2, result.output
    assert f"'{name}:node' calls serve() while easyremote-node imports it" in result.output
    assert 'if __name__ == "__main__":' in result.output
    assert "Traceback" not in result.output


def _serve_checks_the_guard() -> bool:
    return "check_not_importing" in inspect.getsource(ComputeNode.serve)


# Runs once ComputeNode.serve() calls check_not_importing() first (until
# then a module ending in node.serve() would block, so the test is skipped).
@pytest.mark.skipif(
    not _serve_checks_the_guard(),
    reason="ComputeNode.serve() does not call _import_guard.check_not_importing() yet",
)
def test_module_that_serves_at_import_fails_fast(tmp_path: Path) -> None:
    script = tmp_path / "serves_at_import.py"
    script.write_text(
        "from easyremote.node import ComputeNode\n"
        "node = ComputeNode('127.0.0.1:1', 'blocked')\n"
        "node.register(name='one')(lambda: 1)\n"
        "node.serve()\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "easyremote.node.cli", "127.0.0.1:1", f"{script}:node"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=STARTUP_TIMEOUT_S,
    )
    assert time.monotonic() - started < STARTUP_TIMEOUT_S
    assert done.returncode == 2, done.stdout + done.stderr
    assert "calls serve() while easyremote-node imports it" in done.stderr
    assert "Traceback" not in done.stderr
    assert "Connecting" not in done.stdout  # the CLI's own node never started
