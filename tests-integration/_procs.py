"""Starting and stopping real EasyRemote processes for integration tests."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import IO

APPS = Path(__file__).parent / "apps"
STARTUP_TIMEOUT_S = 20.0


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.02
) -> None:
    """Polls ``predicate`` until true; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class Proc:
    """A child process whose stdout lines are read in the background."""

    def __init__(
        self,
        args: list[str],
        name: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.popen = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE,
            text=True,
            env=env if env is not None else {**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=cwd,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(self.popen.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self.output.append(line)
            self.lines.put(line.rstrip("\n"))

    def expect(self, prefix: str, timeout: float = STARTUP_TIMEOUT_S) -> str:
        """Returns the first output line starting with ``prefix``."""
        return self._first(lambda line: line.startswith(prefix), repr(prefix), timeout)

    def expect_containing(self, text: str, timeout: float = STARTUP_TIMEOUT_S) -> str:
        """Returns the first output line containing ``text`` (log lines have timestamps)."""
        return self._first(lambda line: text in line, f"a line with {text!r}", timeout)

    def _first(self, match: Callable[[str], bool], what: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if match(line):
                return line
        raise TimeoutError(f"{self.name} did not print {what}; output:\n{''.join(self.output)}")

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5.0)
        return self.popen.returncode


class Cluster:
    """A gateway plus nodes, each its own process, stopped on exit."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []
        self.gateway: Proc | None = None
        self.address = ""

    def start_gateway(self, *extra: str) -> str:
        proc = Proc([sys.executable, str(APPS / "gateway_app.py"), *extra], "gateway")
        self.procs.append(proc)
        self.gateway = proc
        line = proc.expect("LISTENING ")
        self.address = line.split()[1]
        return self.address

    def start_node(self, node_id: str, *extra: str) -> Proc:
        proc = Proc(
            [sys.executable, str(APPS / "node_app.py"), self.address, node_id, *extra], node_id
        )
        self.procs.append(proc)
        proc.expect("REGISTERED")
        return proc

    def wait_for_nodes(self, node_ids: Iterable[str], timeout: float = STARTUP_TIMEOUT_S) -> None:
        from easyremote.client import Client

        wanted = set(node_ids)
        with Client(self.address) as client:
            wait_until(
                lambda: wanted <= {n.node_id for n in client.list_nodes()},
                timeout,
                f"nodes {sorted(wanted)} to register",
            )

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for proc in reversed(self.procs):
            proc.stop()
