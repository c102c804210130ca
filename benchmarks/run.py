"""EasyRemote against a raw grpc.aio relay, measured in one run on loopback.

Every role is its own process, for both systems: the gateway (or relay), the
compute nodes (or relay workers), and this process as the client and load
generator. The relay (``relay.py``) is the floor: the same dial-out, two-hop
shape with one raw gRPC message per request and per reply and nothing else.

Workloads:

* W1: sequential latency of ``inc(x) = x + 1`` (p50 and p99), async client;
  EasyRemote also with its synchronous ``Client``.
* W2: throughput with 16 calls in flight on one client connection.
* W3: echo of 1 MiB and 64 MiB payloads, checked byte for byte.
* W4: makespan of 30 calls of ``sleep(0.1)`` submitted at once to 3 workers
  of one slot each.

W1 to W3 use one node (one relay worker); W4 uses three single-slot ones.

The machine's speed drifts over tens of seconds, so the systems are measured
in rounds: in each round every workload group runs on the relay and then on
EasyRemote back to back, the order flipping from round to round. Each metric
is the median over rounds, and the ratios come from those medians.

Usage:

    python3 -m nox -s bench                      # needs the packages installed
    python benchmarks/run.py [--quick] [--rounds N] [--only w1,w3] [--systems relay] [--record]

Prints a table and writes ``.bench/results.json`` at the repository root
(git-ignored); ``--record`` writes the committed ``benchmarks/results.json``
instead, ``--output FILE`` any other file. A ratio above 1 means EasyRemote
did better than the relay.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import faulthandler
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import _output
import grpc
from relay import RelayClient

HERE = Path(__file__).resolve().parent
RESULTS_NAME = "results.json"
SYSTEMS = ("easyremote", "relay")
WORKLOADS = ("w1", "w2", "w3", "w4")

READY_TIMEOUT_S = 20.0
CALL_TIMEOUT_S = 60.0
STOP_GRACE_S = 5.0
MIB = 1 << 20
# Bounds per workload, generous next to the expected seconds: a hang must end
# the run with an error, never stall it.
WORKLOAD_TIMEOUT_S = {"w1": 180.0, "w1_sync": 180.0, "w2": 60.0, "w3": 300.0, "w4": 60.0}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Iteration counts per round; ``--quick`` swaps in smaller ones."""

    # Five: single rounds of W1 disagree by up to +-15% on a shared 2-core VM,
    # and a median of three still swung 0.84x-1.24x between runs minutes apart.
    rounds: int = 5
    w1_calls: int = 1000
    w1_warmup: int = 200
    w2_in_flight: int = 16
    w2_seconds: float = 2.0
    # High enough that the time, not the count, ends W2 on this kind of host.
    w2_max_calls: int = 10000
    w2_warmup: int = 200
    w3_sizes: tuple[tuple[int, int], ...] = ((1 * MIB, 20), (64 * MIB, 2))
    w4_calls: int = 30
    w4_workers: int = 3
    w4_runs: int = 3
    sleep_s: float = 0.1


FULL = Settings()
QUICK = Settings(
    rounds=1,
    w1_calls=300,
    w1_warmup=50,
    w2_seconds=1.0,
    w2_max_calls=1500,
    w2_warmup=50,
    w3_sizes=((1 * MIB, 5), (64 * MIB, 1)),
    w4_runs=1,
)


@dataclasses.dataclass(frozen=True)
class Metric:
    """One row of the table: where its numbers live and which way is better."""

    workload: str
    key: str
    label: str
    higher_is_better: bool


METRICS = (
    Metric("w1", "p50_ms", "W1 inc latency p50 (ms), async client", False),
    Metric("w1", "p99_ms", "W1 inc latency p99 (ms), async client", False),
    Metric("w1_sync", "p50_ms", "W1 p50 (ms), sync Client, sync def on node", False),
    Metric("w1_sync", "p99_ms", "W1 p99 (ms), sync Client, sync def on node", False),
    Metric("w2", "calls_per_s", "W2 inc throughput, 16 in flight (calls/s)", True),
    Metric("w3", "1MiB_mb_per_s", "W3 echo 1 MiB (MB/s)", True),
    Metric("w3", "64MiB_mb_per_s", "W3 echo 64 MiB (MB/s)", True),
    Metric("w4", "makespan_s", "W4 makespan 30 x sleep(0.1), 3x1 slot (s)", False),
)


class Driver(Protocol):
    """The client side of one system: the three benchmark operations."""

    async def inc(self, value: int) -> int:
        """Returns ``value + 1`` computed remotely."""
        ...

    async def echo(self, data: bytes) -> bytes:
        """Returns ``data`` after a round trip through a worker."""
        ...

    async def sleep(self) -> None:
        """Holds one worker slot for 0.1 s."""
        ...

    async def wait_ready(self, workers: list[str], deadline: float) -> None:
        """Returns once every worker in ``workers`` can take calls."""
        ...

    async def close(self) -> None:
        """Closes the client connection."""
        ...


class RelayDriver:
    """The relay through ``relay.RelayClient``."""

    def __init__(self, address: str) -> None:
        self._client = RelayClient(address, timeout=CALL_TIMEOUT_S)

    async def inc(self, value: int) -> int:
        return await self._client.inc(value)

    async def echo(self, data: bytes) -> bytes:
        return await self._client.echo(data)

    async def sleep(self) -> None:
        await self._client.sleep()

    async def wait_ready(self, workers: list[str], deadline: float) -> None:
        # The relay does not name its workers; their number is enough since
        # every worker in this run was started by us.
        while True:
            try:
                if await self._client.worker_count(timeout=2.0) >= len(workers):
                    return
            except grpc.RpcError:
                pass  # relay not listening yet
            if time.monotonic() > deadline:
                raise TimeoutError(f"relay workers {workers} did not attach in time")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        await self._client.close()


class EasyRemoteDriver:
    """EasyRemote through its ``AsyncClient``."""

    FUNCTIONS = frozenset({"inc", "inc_sync", "echo", "sleep_task"})

    def __init__(self, address: str) -> None:
        from easyremote.client import AsyncClient

        self._client = AsyncClient(address, timeout=CALL_TIMEOUT_S)

    async def inc(self, value: int) -> int:
        result: int = await self._client.call("inc", value)
        return result

    async def echo(self, data: bytes) -> bytes:
        result: bytes = await self._client.call("echo", data)
        return result

    async def sleep(self) -> None:
        await self._client.call("sleep_task")

    async def wait_ready(self, workers: list[str], deadline: float) -> None:
        from easyremote.client import EasyRemoteError

        wanted = set(workers)
        while True:
            try:
                nodes = await asyncio.wait_for(self._client.list_nodes(), 2.0)
                ready = {n.node_id for n in nodes if set(n.function_names) >= self.FUNCTIONS}
                if wanted <= ready:
                    return
            except (EasyRemoteError, grpc.RpcError, TimeoutError):
                pass  # gateway not up yet, or mid-handshake
            if time.monotonic() > deadline:
                raise TimeoutError(f"EasyRemote nodes {sorted(wanted)} did not register in time")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        await self._client.close()


# --------------------------------------------------------------------- processes


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """A gateway (or relay) and its workers, each a subprocess we own.

    Only the processes in ``self._procs`` are ever signalled, by their Popen
    handles; ``stop()`` is safe to call more than once.
    """

    def __init__(self, system: str, workers: int, slots: int, log_dir: Path) -> None:
        self.system = system
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.worker_names = [f"{system}-w{i + 1}" for i in range(workers)]
        self._slots = slots
        self._log_dir = log_dir
        self._procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        self.killed: list[str] = []

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = self._log_dir / f"{name}-{self.port}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with log.open("wb") as out:
            # Output goes to a file, not a pipe: a full pipe would stall the child.
            proc = subprocess.Popen(
                [sys.executable, *argv], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        self._procs.append((name, proc, log))

    def start(self) -> None:
        """Starts the gateway and the workers; readiness is polled separately."""
        if self.system == "relay":
            script = str(HERE / "relay.py")
            self._spawn("relay", [script, "relay", "--port", str(self.port)])
            for name in self.worker_names:
                argv = [script, "worker", "--relay", self.address, "--name", name]
                self._spawn(name, [*argv, "--slots", str(self._slots)])
        else:
            self._spawn("gateway", [str(HERE / "_er_gateway.py"), str(self.port)])
            for name in self.worker_names:
                argv = [str(HERE / "_er_node.py"), self.address, name, str(self._slots)]
                self._spawn(name, argv)

    def check_alive(self) -> None:
        """Raises if any process of ours has exited (with its log's tail)."""
        for name, proc, log in self._procs:
            code = proc.poll()
            if code is not None:
                raise RuntimeError(f"{self.system} {name} exited with {code}:\n{_tail(log)}")

    def stop(self) -> None:
        """Stops workers first (so they drain), then the gateway; kills stragglers."""
        workers = [p for p in self._procs if p[0] not in ("relay", "gateway")]
        gateways = [p for p in self._procs if p[0] in ("relay", "gateway")]
        for group in (workers, gateways):
            for _, proc, _ in group:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for name, proc, _ in group:
                try:
                    proc.wait(timeout=STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    self.killed.append(name)
                    proc.kill()
                    proc.wait(timeout=STOP_GRACE_S)
        self._procs.clear()

    def logs(self) -> str:
        """Every process's log tail, for error reports."""
        return "\n".join(f"--- {name}:\n{_tail(log)}" for name, _, log in self._procs)


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


@contextlib.contextmanager
def running(system: str, workers: int, slots: int, log_dir: Path) -> Iterator[Cluster]:
    """Starts a cluster and always stops it, whatever happens in the block."""
    cluster = Cluster(system, workers, slots, log_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        if cluster.killed:
            print(f"  warning: {system}: had to SIGKILL {cluster.killed}", file=sys.stderr)


def make_driver(system: str, address: str) -> Driver:
    """The async client for ``system`` at ``address``."""
    if system == "relay":
        return RelayDriver(address)
    return EasyRemoteDriver(address)


async def connect(system: str, address: str, workers: list[str]) -> Driver:
    """A driver whose workers are all registered (bounded poll, no fixed sleeps)."""
    driver = make_driver(system, address)
    try:
        await driver.wait_ready(workers, time.monotonic() + READY_TIMEOUT_S)
    except BaseException:
        await driver.close()
        raise
    return driver


# --------------------------------------------------------------------- workloads


def _percentile(sorted_values: list[float], fraction: float) -> float:
    """Linear-interpolated percentile of already sorted values."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    position = fraction * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def latency_summary(samples_s: list[float]) -> dict[str, float]:
    """p50/p99/mean/min/max in milliseconds from per-call seconds."""
    ordered = sorted(s * 1000.0 for s in samples_s)
    return {
        "p50_ms": _percentile(ordered, 0.50),
        "p99_ms": _percentile(ordered, 0.99),
        "mean_ms": statistics.fmean(ordered),
        "min_ms": ordered[0],
        "max_ms": ordered[-1],
        "calls": len(ordered),
    }


async def w1_latency(driver: Driver, settings: Settings) -> dict[str, Any]:
    """Sequential ``inc`` calls, one at a time; per-call wall time."""
    for i in range(settings.w1_warmup):
        await driver.inc(i)
    samples: list[float] = []
    for i in range(settings.w1_calls):
        start = time.perf_counter()
        result = await driver.inc(i)
        samples.append(time.perf_counter() - start)
        if result != i + 1:
            raise AssertionError(f"inc({i}) returned {result!r}")
    return latency_summary(samples)


def w1_sync_latency(address: str, workers: list[str], settings: Settings) -> dict[str, Any]:
    """W1 with EasyRemote's synchronous ``Client`` (its own loop, none of ours)."""
    from easyremote.client import Client, EasyRemoteError

    bound = time.monotonic() + WORKLOAD_TIMEOUT_S["w1_sync"]
    samples: list[float] = []
    with Client(address, timeout=CALL_TIMEOUT_S) as client:
        ready_by = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                nodes = client.list_nodes()
                if set(workers) <= {n.node_id for n in nodes}:
                    break
            except EasyRemoteError:
                pass  # gateway not answering yet
            if time.monotonic() > ready_by:
                raise TimeoutError(f"EasyRemote nodes {workers} did not register in time")
            time.sleep(0.05)
        for i in range(settings.w1_warmup):
            client.call("inc_sync", i)
        for i in range(settings.w1_calls):
            start = time.perf_counter()
            result = client.call("inc_sync", i)
            samples.append(time.perf_counter() - start)
            if result != i + 1:
                raise AssertionError(f"inc({i}) returned {result!r}")
            if time.monotonic() > bound:
                raise TimeoutError("W1 with the sync Client ran past its bound")
    return latency_summary(samples)


async def w2_throughput(driver: Driver, settings: Settings) -> dict[str, Any]:
    """``w2_in_flight`` tasks call ``inc`` back to back until time or count runs out."""
    for i in range(settings.w2_warmup):
        await driver.inc(i)
    completed = 0
    stop_at = 0.0

    async def caller() -> None:
        nonlocal completed
        # Count is claimed before the call so the total never overshoots the cap.
        while time.perf_counter() < stop_at and completed < settings.w2_max_calls:
            completed += 1
            await driver.inc(completed)

    start = time.perf_counter()
    stop_at = start + settings.w2_seconds
    await asyncio.gather(*(caller() for _ in range(settings.w2_in_flight)))
    elapsed = time.perf_counter() - start
    return {
        "calls_per_s": completed / elapsed,
        "calls": completed,
        "seconds": elapsed,
        "in_flight": settings.w2_in_flight,
    }


async def w3_echo(driver: Driver, settings: Settings) -> dict[str, Any]:
    """Echo round trips; MB/s = payload bytes / 1e6 / seconds per echo (mean)."""
    warm = os.urandom(64 * 1024)
    if await driver.echo(warm) != warm:
        raise AssertionError("warm-up echo was not byte-exact")
    out: dict[str, Any] = {}
    for size, reps in settings.w3_sizes:
        payload = os.urandom(size)
        seconds: list[float] = []
        for _ in range(reps):
            start = time.perf_counter()
            reply = await driver.echo(payload)
            seconds.append(time.perf_counter() - start)
            # Checked outside the timed span: verification is not transport cost.
            if type(reply) is not bytes or reply != payload:
                raise AssertionError(f"echo of {size} bytes was not byte-exact")
            del reply
        name = f"{size // MIB}MiB"
        out[f"{name}_mb_per_s"] = size * reps / sum(seconds) / 1e6
        out[f"{name}_seconds"] = seconds
    out["byte_exact"] = True
    return out


async def w4_makespan(driver: Driver, settings: Settings) -> dict[str, Any]:
    """All sleep calls submitted at once; wall time until the last one returns."""
    runs: list[float] = []
    for _ in range(settings.w4_runs):
        start = time.perf_counter()
        await asyncio.gather(*(driver.sleep() for _ in range(settings.w4_calls)))
        runs.append(time.perf_counter() - start)
    ideal = settings.w4_calls / settings.w4_workers * settings.sleep_s
    return {"makespan_s": statistics.median(runs), "runs_s": runs, "ideal_s": ideal}


# ---------------------------------------------------------------- load generator
#
# Each phase's client runs in a fresh subprocess. grpc.aio binds every live
# event loop in a process to one shared poller (grpc/grpc#25364): EasyRemote's
# sync Client keeps a background loop alive, which would wake on, and slow,
# every later phase in the same process, and spew BlockingIOError. A fresh
# process per phase also keeps either system's leftovers (threads, buffers)
# from touching the other's numbers.

LOAD_COMMAND = "load-generator"
# Process start-up, imports and closing get this allowance on top of the bounds.
PHASE_SLACK_S = 30.0
# Once a load generator has written its numbers it has this long to exit.
EXIT_GRACE_S = 10.0


async def run_async_workloads(
    system: str, address: str, workers: list[str], workloads: list[str], settings: Settings
) -> dict[str, dict[str, Any]]:
    """The selected async workloads against one cluster, in order."""
    steps = {"w1": w1_latency, "w2": w2_throughput, "w3": w3_echo, "w4": w4_makespan}
    driver = await connect(system, address, workers)
    out: dict[str, dict[str, Any]] = {}
    try:
        for name in workloads:
            out[name] = await asyncio.wait_for(
                steps[name](driver, settings), WORKLOAD_TIMEOUT_S[name]
            )
            _progress(system, name, out[name])
    finally:
        await driver.close()
    return out


def phase_bound(workloads: list[str]) -> float:
    """Seconds one load-generator process may take, start-up included."""
    return READY_TIMEOUT_S + sum(WORKLOAD_TIMEOUT_S[w] for w in workloads) + PHASE_SLACK_S


def load_generator_main(argv: list[str]) -> int:
    """The client process of one phase; writes its numbers (or error) as JSON."""
    parser = argparse.ArgumentParser(prog=f"run.py {LOAD_COMMAND}")
    parser.add_argument("--system", choices=SYSTEMS, required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--workers", required=True, help="comma list of worker names")
    parser.add_argument("--workloads", required=True, help="comma list: w1..w4 or w1_sync")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    workers = args.workers.split(",")
    workloads = args.workloads.split(",")
    # Past its own bounds this process is stuck somewhere unbounded: dump every
    # thread's stack halfway through the slack, before the parent kills it.
    faulthandler.dump_traceback_later(phase_bound(workloads) - PHASE_SLACK_S / 2, exit=False)
    try:
        if workloads == ["w1_sync"]:
            report: dict[str, Any] = {
                "results": {"w1_sync": w1_sync_latency(args.address, workers, settings)}
            }
            _progress(args.system, "w1_sync", report["results"]["w1_sync"])
        else:
            report = {
                "results": asyncio.run(
                    run_async_workloads(args.system, args.address, workers, workloads, settings)
                )
            }
    except Exception:  # noqa: BLE001 - reported to the parent, which decides
        report = {"error": traceback.format_exc()}
    # Written whole then renamed: the parent treats the file's presence as
    # "numbers are final", so it must never see half of it.
    partial = args.out.with_suffix(".partial")
    partial.write_text(json.dumps(report))
    os.replace(partial, args.out)
    # From here only interpreter exit is left; should that hang, show where
    # before the parent's EXIT_GRACE_S runs out.
    faulthandler.dump_traceback_later(EXIT_GRACE_S / 2, exit=False)
    return 1 if "error" in report else 0


def run_phase(
    cluster: Cluster, workloads: list[str], quick: bool, log_dir: Path
) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Runs one load-generator process against ``cluster``.

    While it runs, the cluster's processes are watched: a crashed gateway or
    worker ends the phase at once with its log instead of a long timeout.

    Returns:
        The phase's numbers, and a problem that does not void them (the load
        generator measured everything but then failed to exit), or None.

    Raises:
        RuntimeError, TimeoutError: The phase produced no numbers.
    """
    stem = f"load-{cluster.system}-{'_'.join(workloads)}-{cluster.port}"
    out, err_log = log_dir / f"{stem}.json", log_dir / f"{stem}.stderr"
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        LOAD_COMMAND,
        f"--system={cluster.system}",
        f"--address={cluster.address}",
        f"--workers={','.join(cluster.worker_names)}",
        f"--workloads={','.join(workloads)}",
        f"--out={out}",
        *(["--quick"] if quick else []),
    ]
    bound = phase_bound(workloads)
    deadline = time.monotonic() + bound
    reported_at: float | None = None
    problem: str | None = None
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with err_log.open("wb") as err:
        # stdout (progress lines) is shared with ours; stderr is kept for reports.
        child = subprocess.Popen(argv, stderr=err, env=env)
    try:
        while child.poll() is None:
            cluster.check_alive()
            now = time.monotonic()
            if reported_at is None and out.exists():
                reported_at = now
            if reported_at is not None and now - reported_at > EXIT_GRACE_S:
                # Numbers are in; only the exit hangs. Keep them, but report it.
                child.kill()
                child.wait(timeout=STOP_GRACE_S)
                problem = (
                    f"{cluster.system} load generator ({','.join(workloads)}) wrote its "
                    f"results but did not exit within {EXIT_GRACE_S:.0f} s; killed. "
                    f"Its stderr:\n{_tail(err_log, 60)}"
                )
                break
            if now > deadline:
                raise TimeoutError(
                    f"{cluster.system} {workloads} ran past {bound:.0f} s; "
                    f"load generator stderr:\n{_tail(err_log, 60)}"
                )
            time.sleep(0.2)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=STOP_GRACE_S)
    try:
        report = json.loads(out.read_text())
    except (OSError, ValueError) as exc:
        raise RuntimeError(
            f"load generator exited {child.returncode} without results; "
            f"stderr:\n{_tail(err_log, 60)}"
        ) from exc
    if "error" in report:
        raise RuntimeError(f"{cluster.system} {workloads} failed:\n{report['error']}")
    results: dict[str, dict[str, Any]] = report["results"]
    return results, problem


def _progress(system: str, workload: str, numbers: dict[str, Any]) -> None:
    shown = {k: round(v, 3) for k, v in numbers.items() if isinstance(v, float)}
    print(f"  {system:<10} {workload:<8} {shown}", flush=True)


@dataclasses.dataclass(frozen=True)
class Group:
    """Workloads that share one cluster shape, run as one step of a round."""

    label: str
    workloads: tuple[str, ...]
    workers: int
    slots: int


def workload_groups(only: set[str], settings: Settings) -> list[Group]:
    """The selected workloads grouped by cluster shape, in run order."""
    groups: list[Group] = []
    single = tuple(w for w in ("w1", "w2", "w3") if w in only)
    if single:
        # One node with room for every in-flight call: W2 measures the
        # transport, not a slot limit (the relay worker is unlimited).
        groups.append(Group(",".join(single), single, workers=1, slots=64))
    if "w4" in only:
        groups.append(Group("w4", ("w4",), workers=settings.w4_workers, slots=1))
    return groups


def run_group(
    system: str, group: Group, quick: bool, log_dir: Path
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """One system's phase(s) for one group, on a cluster started for it alone.

    Returns:
        The numbers, and problems that do not void them (a load generator
        measured everything but then failed to exit).

    Raises:
        RuntimeError, TimeoutError: A phase produced no numbers; the cluster
            is stopped either way.
    """
    results: dict[str, dict[str, Any]] = {}
    problems: list[str] = []

    def phase(cluster: Cluster, workloads: list[str]) -> None:
        try:
            numbers, problem = run_phase(cluster, workloads, quick, log_dir)
        except BaseException:
            print(cluster.logs(), file=sys.stderr)
            raise
        results.update(numbers)
        if problem is not None:
            print(f"  {system} PROBLEM: {problem}", file=sys.stderr, flush=True)
            problems.append(problem)

    with running(system, group.workers, group.slots, log_dir) as cluster:
        phase(cluster, list(group.workloads))
        if system == "easyremote" and "w1" in group.workloads:
            phase(cluster, ["w1_sync"])
    return results, problems


def round_order(systems: list[str], index: int) -> list[str]:
    """Who goes first flips every round, so a steady drift hits both alike."""
    return list(systems) if index % 2 == 0 else list(reversed(systems))


def run_rounds(
    systems: list[str], settings: Settings, quick: bool, only: set[str], log_dir: Path
) -> tuple[dict[str, list[dict[str, dict[str, Any]]]], dict[str, str]]:
    """Every round: each group on each system, back to back.

    A system whose phase fails is recorded and left out of later phases; the
    other system carries on. Problems that kept their numbers are errors too,
    but do not stop the system.

    Returns:
        Per system, one ``{workload: numbers}`` per round; and the errors.
    """
    per_round: dict[str, list[dict[str, dict[str, Any]]]] = {s: [] for s in systems}
    failed: dict[str, str] = {}
    problems: dict[str, list[str]] = {s: [] for s in systems}
    groups = workload_groups(only, settings)
    for index in range(settings.rounds):
        order = round_order(systems, index)
        print(f"== round {index + 1}/{settings.rounds}: {' then '.join(order)}", flush=True)
        for system in systems:
            per_round[system].append({})
        for group in groups:
            for system in order:
                if system in failed:
                    continue
                print(f"-- {system} ({group.label})", flush=True)
                try:
                    numbers, found = run_group(system, group, quick, log_dir)
                except Exception:  # noqa: BLE001 - one system failing must not hide the other's
                    failed[system] = f"round {index + 1}, {group.label}:\n" + traceback.format_exc()
                    print(f"  {system} FAILED:\n{failed[system]}", file=sys.stderr, flush=True)
                    continue
                per_round[system][index].update(numbers)
                problems[system].extend(f"round {index + 1}: {p}" for p in found)
    errors: dict[str, str] = {}
    for system in systems:
        parts = ([failed[system]] if system in failed else []) + problems[system]
        if parts:
            errors[system] = "\n\n".join(parts)
    return per_round, errors


def median_numbers(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over rounds of every numeric field; flags must hold in every round.

    Lists (per-echo seconds, W4 runs) stay in the per-round record only.
    """
    out: dict[str, Any] = {}
    keys = list(dict.fromkeys(k for numbers in rounds for k in numbers))
    for key in keys:
        values = [numbers[key] for numbers in rounds if key in numbers]
        if all(isinstance(v, bool) for v in values):
            out[key] = all(values)
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            out[key] = statistics.median(values)
    out["rounds"] = len(rounds)
    return out


def summarize(
    per_round: dict[str, list[dict[str, dict[str, Any]]]],
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per system and workload, the medians over the rounds that measured it."""
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for system, rounds in per_round.items():
        summary[system] = {}
        for name in ("w1", "w1_sync", "w2", "w3", "w4"):
            measured = [r[name] for r in rounds if name in r]
            if measured:
                summary[system][name] = median_numbers(measured)
    return summary


def ratio(metric: Metric, easyremote: float | None, relay: float | None) -> float | None:
    """Above 1 means EasyRemote did better, whichever direction is better."""
    if easyremote is None or relay is None or easyremote <= 0 or relay <= 0:
        return None
    return easyremote / relay if metric.higher_is_better else relay / easyremote


def _value(results: dict[str, dict[str, dict[str, Any]]], system: str, m: Metric) -> Any:
    return results.get(system, {}).get(m.workload, {}).get(m.key)


def render_table(
    results: dict[str, dict[str, dict[str, Any]]], rounds: int, systems: list[str]
) -> str:
    """The plain-text comparison table of the medians over ``rounds`` rounds."""
    rows = [("workload", "easyremote", "relay", "ratio")]
    for m in METRICS:
        er, rl = _value(results, "easyremote", m), _value(results, "relay", m)
        if er is None and rl is None:
            continue
        r = ratio(m, er, rl)
        cells = [_fmt(er), _fmt(rl)]
        for i, system in enumerate(("easyremote", "relay")):
            got = results.get(system, {}).get(m.workload, {}).get("rounds", rounds)
            if cells[i] != "-" and got != rounds:
                cells[i] += f" ({got} of {rounds} rounds)"
        rows.append((m.label, cells[0], cells[1], "-" if r is None else f"{r:.2f}x"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    both = len(systems) > 1
    lines = [
        f"{rounds} round{'s' if rounds != 1 else ''}"
        + (", relay and easyremote back to back, alternating who goes first" if both else "")
        + ": values are medians over rounds, ratios of the medians",
        "ratio > 1: EasyRemote better (latency, makespan: relay/easyremote; "
        "rates: easyremote/relay)",
        "W3 MB/s = payload bytes / 1e6 / mean seconds per echo round trip "
        "(the payload crosses each hop twice)",
        "",
    ]
    for i, row in enumerate(rows):
        numbers = (cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))
        cells = [row[0].ljust(widths[0]), *numbers]
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 1000 else f"{value:.3g}"


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "grpcio": grpc.__version__,
        # Other work on the machine skews every number; this says how much there was.
        "load_average_1_5_15": list(os.getloadavg()),
    }
    try:
        from easyremote.client import __version__ as er_version

        info["easyremote"] = er_version
    except ImportError:
        info["easyremote"] = None
    return info


def build_report(
    per_round: dict[str, list[dict[str, dict[str, Any]]]],
    results: dict[str, dict[str, dict[str, Any]]],
    errors: dict[str, str],
    settings: Settings,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The results.json document: machine, settings, per-workload numbers, ratios.

    Per workload: each system's medians over rounds, the ratios of those
    medians, every round's own numbers (None where a round has none) and the
    ratio within each round, as a measure of the spread.
    """
    workloads: dict[str, Any] = {}
    for name in ("w1", "w1_sync", "w2", "w3", "w4"):
        entry: dict[str, Any] = {system: results.get(system, {}).get(name) for system in SYSTEMS}
        if all(v is None for v in entry.values()):
            continue
        metrics = [m for m in METRICS if m.workload == name]
        entry["ratio"] = {
            m.key: ratio(m, _value(results, "easyremote", m), _value(results, "relay", m))
            for m in metrics
        }
        rounds = {
            system: [r.get(name) for r in per_round[system]]
            for system in SYSTEMS
            if system in per_round
        }
        entry["rounds"] = rounds
        er_rounds, relay_rounds = rounds.get("easyremote", []), rounds.get("relay", [])
        entry["ratio_per_round"] = {
            m.key: [
                ratio(m, (er or {}).get(m.key), (rl or {}).get(m.key))
                # A one-system run has no pairs: no per-round ratios.
                for er, rl in zip(er_rounds, relay_rounds, strict=False)
            ]
            for m in metrics
        }
        workloads[name] = entry
    return {
        "machine": machine_info(),
        "settings": {**dataclasses.asdict(settings), "quick": args.quick},
        "only": sorted(args.only),
        "systems": list(args.systems),
        "round_order": [round_order(args.systems, i) for i in range(settings.rounds)],
        "values": "per system: median over rounds of each metric; ratio: of those medians; "
        "rounds: every round's own numbers; ratio_per_round: within each round",
        "ratio_meaning": "above 1: EasyRemote better (latency/makespan relay/easyremote, "
        "rates easyremote/relay)",
        "w3_mb_per_s_definition": "payload bytes / 1e6 / mean seconds per echo round trip",
        "workloads": workloads,
        "errors": errors,
    }


def _parse_list(text: str, allowed: tuple[str, ...], what: str) -> set[str]:
    chosen = {part.strip().lower() for part in text.split(",") if part.strip()}
    unknown = chosen - set(allowed)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"{what} must be a comma list of {', '.join(allowed)}")
    return chosen


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("--rounds must be a whole number of at least 1")
    return value


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    # nox or CI may SIGTERM us: unwind like Ctrl-C so every finally stops the
    # subprocesses we started.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Runs the selected workloads on both systems; prints and writes results."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [LOAD_COMMAND]:
        return load_generator_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer iterations and 1 round (smoke run)"
    )
    parser.add_argument(
        "--rounds",
        type=_positive_int,
        default=None,
        help=f"rounds of every phase, medians reported (default {FULL.rounds}; "
        f"{QUICK.rounds} with --quick)",
    )
    parser.add_argument(
        "--only",
        type=lambda s: _parse_list(s, WORKLOADS, "--only"),
        default=set(WORKLOADS),
        help="comma list of workloads: w1,w2,w3,w4 (default: all)",
    )
    parser.add_argument(
        "--systems",
        type=lambda s: _parse_list(s, SYSTEMS, "--systems"),
        default=set(SYSTEMS),
        help="comma list: easyremote,relay (default: both)",
    )
    _output.add_arguments(parser, RESULTS_NAME, "--output")
    args = parser.parse_args(argv)
    args.systems = [s for s in ("relay", "easyremote") if s in args.systems]
    settings = QUICK if args.quick else FULL
    if args.rounds is not None:
        settings = dataclasses.replace(settings, rounds=args.rounds)
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)

    try:
        with tempfile.TemporaryDirectory(prefix="easyremote-bench-") as tmp:
            per_round, errors = run_rounds(args.systems, settings, args.quick, args.only, Path(tmp))
    except KeyboardInterrupt:
        # Every subprocess was stopped by the finally blocks on the way out.
        print("interrupted; no results written", file=sys.stderr)
        return 130

    results = summarize(per_round)
    print()
    print(render_table(results, settings.rounds, args.systems))
    report = build_report(per_round, results, errors, settings, args)
    args.output = _output.path(args.output, args.record, RESULTS_NAME)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    if errors:
        print(f"FAILED: {', '.join(sorted(errors))} (tracebacks above and in the JSON)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
