"""Failures mid-call: a node that goes away, a reader that stops reading."""

from __future__ import annotations

import asyncio
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from _procs import wait_until

from easyremote import (
    AsyncClient,
    Client,
    ComputeNode,
    NodeLostError,
    RemoteExecutionError,
    Server,
)
from easyremote.client._serialization import dump_arguments
from easyremote.proto.runtime import run_sync


def _node(address: str, node_id: str, release: threading.Event, idempotent: bool) -> ComputeNode:
    node = ComputeNode(address, node_id, max_concurrency=2)

    @node.register(idempotent=idempotent)
    def work() -> str:
        # node-a holds the call until the test lets go (or gives up).
        if node_id == "node-a":
            release.wait(10)
        return node_id

    node.serve(blocking=False)
    return node


@pytest.mark.parametrize("idempotent", [True, False])
def test_stopping_a_node_mid_call(gateway: Server, idempotent: bool) -> None:
    release = threading.Event()
    node_a = _node(gateway.address, "node-a", release, idempotent)
    node_b = _node(gateway.address, "node-b", release, idempotent)
    try:
        with Client(gateway.address) as client, ThreadPoolExecutor(1) as pool:
            # Both idle and unmeasured: ties go to node-a first.
            future = pool.submit(client.call, "work")
            wait_until(
                lambda: client.get_node_status("node-a").in_flight == 1, 10, "call on node-a"
            )
            node_a.stop()  # no drain: the call is lost with the node
            if idempotent:
                assert future.result(timeout=10) == "node-b"
            else:
                with pytest.raises(NodeLostError, match="outcome unknown"):
                    future.result(timeout=10)
            assert client.call("work") == "node-b"
    finally:
        release.set()
        node_a.stop()
        node_b.stop()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_closing_a_stream_closes_the_generator_on_the_node(gateway: Server, kind: str) -> None:
    closed = threading.Event()
    produced: list[int] = []
    node = ComputeNode(gateway.address, "streamer")

    if kind == "sync":

        @node.register(name="numbers")
        def numbers_sync():  # type: ignore[no-untyped-def]
            try:
                for i in range(1_000_000):
                    produced.append(i)
                    yield i
            finally:
                closed.set()

    else:

        @node.register(name="numbers")
        async def numbers_async():  # type: ignore[no-untyped-def]
            try:
                for i in range(1_000_000):
                    produced.append(i)
                    yield i
            finally:
                closed.set()

    node.serve(blocking=False)
    try:
        with Client(gateway.address) as client:
            stream = client.call_stream("numbers")
            assert [next(stream) for _ in range(3)] == [0, 1, 2]
            stream.close()
            assert closed.wait(10), "the generator's finally did not run"
            # Flow control: the node ran at most a window ahead of the reader.
            assert len(produced) <= 3 + 16 + 1
    finally:
        node.stop()


def test_cancel_arriving_with_the_call_frees_the_slot(gateway: Server) -> None:
    # Execute and Cancel can share one envelope (frames are coalesced): the
    # node must still answer and free the slot, or it is lost for good.
    node = ComputeNode(gateway.address, "one-slot", max_concurrency=1)

    @node.register
    async def f(x: int) -> int:
        return x

    node.serve(blocking=False)

    async def scenario() -> int:
        client = AsyncClient(gateway.address)
        try:
            options = client.plain_options("f")
            session = await client._connection.session()
            pending = await session.start(options, dump_arguments("f", (1,), {}))
            session.cancel(pending.call_id)
            return int(await asyncio.wait_for(client.call("f", 2), 10))
        finally:
            await client.close()

    try:
        assert run_sync(scenario()) == 2
        record = gateway.registry.get("one-slot")
        assert record is not None
        wait_until(lambda: record.in_flight == 0, 10, "the slot to be free")
    finally:
        node.stop()


def test_system_exit_in_user_code_is_a_remote_error_not_a_dead_node(gateway: Server) -> None:
    node = ComputeNode(gateway.address, "exiter")

    @node.register
    def gen():  # type: ignore[no-untyped-def]
        yield 1
        sys.exit(3)

    @node.register
    async def bye() -> None:
        raise SystemExit(4)

    @node.register
    def ok(x: int) -> int:
        return x

    node.serve(blocking=False)
    try:
        with Client(gateway.address, timeout=10) as client:
            with pytest.raises(RemoteExecutionError, match="SystemExit"):
                list(client.call_stream("gen"))
            with pytest.raises(RemoteExecutionError, match="SystemExit"):
                client.call("bye")
            assert client.call("ok", 5) == 5
    finally:
        node.stop()
