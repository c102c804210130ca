"""Failures mid-call: a node that goes away, a reader that stops reading."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from _procs import wait_until

from easyremote import Client, ComputeNode, NodeLostError, Server


@pytest.fixture()
def gateway() -> Iterator[Server]:
    server = Server(port=0).start_background()
    try:
        yield server
    finally:
        server.stop()


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
