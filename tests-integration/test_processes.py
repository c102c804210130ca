"""Gateway, two nodes and clients as separate processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import os
import pickle
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from _procs import APPS, Cluster

from easyremote import (
    AsyncClient,
    CallTimeoutError,
    Client,
    ComputeNode,
    InvalidArgumentError,
    NoAvailableNodesError,
    NodeError,
    NodeNotFoundError,
    RemoteExecutionError,
    SerializationError,
)
from easyremote.proto import CHUNK_SIZE, PROTOCOL_VERSION, channel_options
from easyremote.proto.credentials import load_local_credentials
from easyremote.proto.v1 import client_pb2, client_pb2_grpc, common_pb2


def test_main_only_dataclass_travels_by_value(cluster: Cluster) -> None:
    result = subprocess.run(
        [sys.executable, str(APPS / "dataclass_client.py"), cluster.address],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK Job:Job(name='resnet', size=21)" in result.stdout


def test_async_def_function(cluster: Cluster) -> None:
    with Client(cluster.address) as client:
        assert client.call("async_double", 21) == 42


def test_async_generator_streams_items_as_produced(cluster: Cluster) -> None:
    # The generator blocks after its first item until we create the marker,
    # so receiving "second" proves "first" arrived while it was still running.
    with tempfile.TemporaryDirectory() as tmp:
        marker = Path(tmp) / "go"
        with Client(cluster.address) as client:
            stream = client.call_stream("agen_until_marker", str(marker))
            assert next(stream) == "first"
            marker.touch()
            assert list(stream) == ["second"]


def test_async_for_over_sync_client_stream(cluster: Cluster) -> None:
    async def collect() -> list[int]:
        with Client(cluster.address) as client:
            return [item async for item in client.call_stream("count_to", 5)]

    assert asyncio.run(collect()) == [0, 1, 2, 3, 4]


def test_async_client_stream_and_call(cluster: Cluster) -> None:
    async def run() -> tuple[int, list[int]]:
        async with AsyncClient(cluster.address) as client:
            value = await client.call("async_double", 4)
            items = [item async for item in client.call_stream("count_to", 3)]
            return value, items

    assert asyncio.run(run()) == (8, [0, 1, 2])


def test_64_mib_echo_is_byte_exact(cluster: Cluster) -> None:
    payload = os.urandom(64 << 20)
    with Client(cluster.address) as client:
        echoed = client.call("echo", payload)
    assert len(echoed) == len(payload)
    assert echoed == payload


def test_a_plain_protobuf_peer_that_packs_chunks_with_other_frames_is_served(
    cluster: Cluster,
) -> None:
    # EasyRemote peers send each chunk as a lone, hand-framed envelope; the
    # protocol allows chunks packed with other frames, which takes the
    # gateway's protobuf path. The replies are read with the generated
    # protobuf classes: hand-framed chunks must be plain protobuf to them.
    credentials = load_local_credentials()
    assert credentials is not None
    payload = os.urandom(3 * CHUNK_SIZE + 12345)
    pickled = pickle.dumps(((payload,), {}), protocol=pickle.HIGHEST_PROTOCOL)
    first, middle, last = pickled[:CHUNK_SIZE], pickled[CHUNK_SIZE:-99], pickled[-99:]
    answered = threading.Event()

    def requests() -> Iterator[client_pb2.ClientEnvelope]:
        hello = client_pb2.ClientEnvelope()
        hello.frames.add().hello.versions.protocol = PROTOCOL_VERSION
        yield hello
        packed = client_pb2.ClientEnvelope()
        start = packed.frames.add().start
        start.call_id = 7
        start.options.function = "echo"
        start.data = first
        start.more = True
        packed.frames.add().chunk.CopyFrom(common_pb2.Chunk(call_id=7, data=middle, more=True))
        yield packed
        tail = client_pb2.ClientEnvelope()
        tail.frames.add().chunk.CopyFrom(common_pb2.Chunk(call_id=7, data=last))
        yield tail
        # Half-closing the stream means "client gone": keep it open meanwhile.
        answered.wait(30)

    with grpc.insecure_channel(cluster.address, options=channel_options()) as channel:
        replies = client_pb2_grpc.ClientServiceStub(channel).Session(
            requests(),
            metadata=(("authorization", f"Bearer {credentials.client_token}"),),
            timeout=30,
        )
        parts: list[bytes] = []
        done = False
        for envelope in replies:
            for frame in envelope.frames:
                kind = frame.WhichOneof("kind")
                if kind == "result":
                    assert frame.result.kind == common_pb2.RESULT_KIND_VALUE, frame.result
                    parts = [frame.result.data]
                    done = not frame.result.more
                elif kind == "chunk":
                    assert frame.chunk.call_id == 7
                    parts.append(frame.chunk.data)
                    done = not frame.chunk.more
            if done:
                answered.set()
                replies.cancel()
                break
    assert pickle.loads(b"".join(parts)) == payload


def test_200_calls_from_16_threads_all_correct_on_both_nodes(cluster: Cluster) -> None:
    with Client(cluster.address) as client:
        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(lambda i: (i, client.call("inc", i)), range(200)))
    for i, (value, _node) in results:
        assert value == i + 1
    served = Counter(node for _, (_, node) in results)
    assert set(served) == {"node-a", "node-b"}, served


def test_identical_idle_nodes_alternate(cluster: Cluster) -> None:
    with Client(cluster.address) as client:
        order = [client.call("whoami") for _ in range(6)]
    assert all(a != b for a, b in itertools.pairwise(order)), order


def test_remote_exception_carries_type_message_traceback(cluster: Cluster) -> None:
    with Client(cluster.address) as client:
        with pytest.raises(RemoteExecutionError) as caught:
            client.call("fail", "boom")
    error = caught.value
    assert error.remote_type == "ValueError"
    assert error.message == "boom"
    assert "raise ValueError(message)" in error.remote_traceback
    assert isinstance(error.remote_exception, ValueError)
    # A user exception never trips anything: the next call works.
    with Client(cluster.address) as client:
        assert client.call("async_double", 1) == 2


def test_unknown_function_and_node_fail_fast(cluster: Cluster) -> None:
    with Client(cluster.address) as client:
        with pytest.raises(NoAvailableNodesError, match="no connected node serves 'missing'"):
            client.call("missing")
        with pytest.raises(NodeNotFoundError):
            client.call_node("no-such-node", "whoami")
        assert client.call_node("node-b", "whoami") == "node-b"


def test_call_kind_mismatch_is_a_clear_error(cluster: Cluster) -> None:
    with Client(cluster.address) as client:
        with pytest.raises(InvalidArgumentError, match="generator function"):
            client.call("count_to", 3)
        with pytest.raises(InvalidArgumentError, match="not a generator"):
            list(client.call_stream("whoami"))


def test_status_reports_live_nodes(cluster: Cluster) -> None:
    with Client(cluster.address) as client:
        nodes = {n.node_id: n for n in client.list_nodes()}
        status = client.get_node_status("node-a")
    assert {"node-a", "node-b"} <= set(nodes)
    assert status.state == "healthy"
    assert "whoami" in status.function_names
    assert status.resources.cpu_count >= 1
    assert status.max_concurrency == 8
    assert status.to_dict()["node_id"] == "node-a"


def test_calls_to_a_stopped_gateway_fail_with_a_connection_error() -> None:
    with Cluster() as first:
        address = first.start_gateway()
        first.start_node("node-r")
        first.wait_for_nodes(["node-r"])
        with Client(address) as client:
            assert client.call("whoami") == "node-r"
    # Cluster exit stopped both processes; nothing is left listening.
    with Client(address, retry_attempts=0, connection_timeout=2) as client:
        with pytest.raises(ConnectionError):
            client.call("whoami")


def test_deadline_is_a_timeout_error_and_the_gateway_keeps_serving(cluster: Cluster) -> None:
    with Client(cluster.address) as client:
        with pytest.raises(TimeoutError) as caught:
            client.call_with_config("nap", {"timeout": 0.3}, 5)
        assert isinstance(caught.value, CallTimeoutError)
        assert "within 0.3 s" in str(caught.value)
        assert client.call("async_double", 2) == 4


def test_unpicklable_values_fail_clearly_on_either_side(cluster: Cluster) -> None:
    with Client(cluster.address) as client:
        with pytest.raises(SerializationError, match="could not pickle the arguments"):
            client.call("echo", threading.Lock())
        with pytest.raises(SerializationError, match="could not pickle the result"):
            client.call("unpicklable_result")


def test_argument_the_node_cannot_import_names_both_versions(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A class from a module only the client has travels by reference and
    # cannot be unpickled on the node: the error must say so, with versions.
    (tmp_path / "client_only_mod.py").write_text("class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import client_only_mod

    with Client(cluster.address) as client:
        with pytest.raises(SerializationError) as caught:
            client.call("echo", client_only_mod.Thing())
    message = str(caught.value)
    assert "could not unpickle the arguments of 'echo'" in message
    assert "caller runs CPython" in message and "this node runs CPython" in message


def test_duplicate_node_id_is_refused_at_once(cluster: Cluster) -> None:
    node = ComputeNode(cluster.address, "node-a", connection_timeout=5)

    @node.register
    def whoami() -> str:
        return "impostor"

    with pytest.raises(NodeError, match="already connected"):
        node.serve(blocking=False)
    with Client(cluster.address) as client:
        assert {client.call("whoami") for _ in range(4)} == {"node-a", "node-b"}
