"""The dependency-free protocol helpers: error table, framing, names, outbox."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Sequence
from typing import Any, cast

import grpc
import pytest

from easyremote.proto import (
    CHUNK_SIZE,
    DataChunk,
    Outbox,
    OutboxClosedError,
    Payload,
    pickle_payload,
    reason_from_status,
    status_for_reason,
    strategy_from_name,
    strategy_name,
    unpickle,
)
from easyremote.proto.errors import REASON_TO_STATUS
from easyremote.proto.framing import INLINE_PAYLOAD_BYTES, split_payload
from easyremote.proto.v1 import common_pb2


def test_every_reason_has_a_status_and_names_round_trip() -> None:
    for value in common_pb2.ErrorReason.values():
        assert value in REASON_TO_STATUS
        code = status_for_reason(value)
        name = common_pb2.ErrorReason.Name(value)
        assert reason_from_status(code, name) == value


def test_status_without_metadata_maps_to_a_general_reason() -> None:
    assert (
        reason_from_status(grpc.StatusCode.UNAUTHENTICATED)
        == common_pb2.ERROR_REASON_UNAUTHENTICATED
    )
    assert reason_from_status(grpc.StatusCode.UNAVAILABLE) == common_pb2.ERROR_REASON_UNAVAILABLE
    assert reason_from_status(None) == common_pb2.ERROR_REASON_UNSPECIFIED
    assert (
        reason_from_status(grpc.StatusCode.NOT_FOUND, "bogus")
        == common_pb2.ERROR_REASON_NODE_NOT_FOUND
    )


@pytest.mark.parametrize(
    "size",
    [
        0,
        1,
        INLINE_PAYLOAD_BYTES,
        INLINE_PAYLOAD_BYTES + 1,
        CHUNK_SIZE + 1,
        3 * CHUNK_SIZE + 7,
        3 * CHUNK_SIZE + (100 << 10),
    ],
)
def test_payloads_split_into_inline_bytes_or_uncopied_chunks(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    inline, pieces = split_payload(data)
    assert inline + b"".join(pieces) == data
    if size <= INLINE_PAYLOAD_BYTES:
        assert inline is data
        assert pieces == []
        return
    assert inline == b""
    assert all(len(piece) == CHUNK_SIZE for piece in pieces[:-1])
    # A short tail rides with the last piece rather than in a message of its own.
    assert 64 << 10 <= len(pieces[-1]) <= CHUNK_SIZE + (64 << 10) or len(pieces) == 1
    assert all(isinstance(piece, memoryview) and piece.obj is data for piece in pieces)


def test_pickled_payloads_keep_large_bytes_by_reference_and_unpickle_from_chunks() -> None:
    blob = bytes(range(256)) * (3 * CHUNK_SIZE // 256)
    value = ((blob, "text"), {"n": 1})
    payload = pickle_payload(value)
    assert any(part is blob for part in payload.parts)  # not copied into the pickle
    assert payload.tobytes() == pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    inline, pieces = split_payload(payload)
    assert inline == b"" and b"".join(pieces) == payload.tobytes()
    assert sum(isinstance(piece, memoryview) for piece in pieces) >= 1
    assert unpickle(Payload(pieces)) == value
    # Received in odd-sized views, and in old protocols that read lines.
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        raw = pickle.dumps(value, protocol=protocol)
        views = [memoryview(raw)[i : i + 7777] for i in range(0, len(raw), 7777)]
        assert unpickle(Payload(views)) == value
    with pytest.raises(EOFError):
        unpickle(Payload())


def test_strategy_names() -> None:
    assert strategy_from_name(None) == common_pb2.STRATEGY_UNSPECIFIED
    assert strategy_from_name("Round-Robin") == common_pb2.STRATEGY_ROUND_ROBIN
    assert strategy_name(common_pb2.STRATEGY_COST_AWARE) == "cost_aware"
    with pytest.raises(ValueError, match="smart_adaptive"):
        strategy_from_name("fastest")


class _ListCodec:
    """Stands in for a StreamCodec: envelopes are lists, chunks are tagged tuples."""

    def encode_frames(self, frames: Sequence[Any]) -> Any:
        return list(frames)

    def encode_chunk(self, chunk: DataChunk) -> Any:
        return ("chunk", chunk.call_id, bytes(chunk.data), chunk.more)


def _outbox(write: Any, **limits: int) -> Outbox[int]:
    return Outbox(cast(Any, _ListCodec()), write, **limits)


def test_outbox_coalesces_frames_queued_during_a_write() -> None:
    async def scenario() -> list[Any]:
        written: list[Any] = []
        release = asyncio.Event()

        async def write(message: Any) -> None:
            written.append(message)
            if len(written) == 1:
                await release.wait()

        outbox = _outbox(write)
        runner = asyncio.ensure_future(outbox.run())
        outbox.put(1)
        await asyncio.sleep(0)  # let the writer take frame 1 and block in write()
        for frame in (2, 3, 4):
            outbox.put(frame)
        release.set()
        outbox.close()
        await asyncio.wait_for(runner, 5)
        with pytest.raises(OutboxClosedError):
            outbox.put(5)
        return written

    assert asyncio.run(scenario()) == [[1], [2, 3, 4]]


def test_outbox_sends_each_data_chunk_as_a_message_of_its_own() -> None:
    async def scenario() -> list[Any]:
        written: list[Any] = []

        async def write(message: Any) -> None:
            written.append(message)

        outbox = _outbox(write)
        for item in (1, 2, DataChunk(7, b"ab", True), DataChunk(7, b"c", False), 3):
            outbox.put(item)
        outbox.close()
        await asyncio.wait_for(outbox.run(), 5)
        return written

    assert asyncio.run(scenario()) == [
        [1, 2],
        ("chunk", 7, b"ab", True),
        ("chunk", 7, b"c", False),
        [3],
    ]


def test_outbox_writes_a_lone_call_at_once_and_batches_the_rest() -> None:
    async def scenario() -> tuple[list[Any], list[Any], list[Any]]:
        written: list[Any] = []
        release = asyncio.Event()
        in_flight = 0
        most = 0

        async def write(message: Any) -> None:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            written.append(message)
            await release.wait()
            in_flight -= 1

        outbox = _outbox(write)
        outbox.start()
        outbox.put(1, now=True)
        at_once = list(written)  # handed to gRPC inside put: no loop turn
        outbox.put(2)
        outbox.put(3, now=True)  # a write is in flight: queued behind it
        release.set()
        await asyncio.sleep(0)
        outbox.put(4)
        outbox.put(5)
        before_turn = list(written)
        await outbox.aclose(5)
        assert most == 1  # never two writes at once on one stream
        return at_once, before_turn, written

    at_once, before_turn, written = asyncio.run(scenario())
    assert at_once == [[1]]
    assert before_turn == [[1], [2, 3]]
    assert written == [[1], [2, 3], [4, 5]]  # put without now waits for the loop turn


def test_outbox_closes_when_a_write_fails() -> None:
    async def scenario() -> Outbox[int]:
        async def write(message: Any) -> None:
            raise ConnectionError("stream broke")

        outbox = _outbox(write)
        outbox.start()
        outbox.put(1, now=True)
        await asyncio.wait_for(outbox.run(), 5)
        return outbox

    outbox = asyncio.run(scenario())
    assert outbox.closed
    with pytest.raises(OutboxClosedError):
        outbox.put(2)


def test_outbox_shuts_quietly_when_the_rpc_is_cancelled_under_a_write() -> None:
    async def scenario() -> tuple[Outbox[int], list[Any]]:
        loop = asyncio.get_running_loop()
        errors: list[Any] = []
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        gate: asyncio.Future[None] = loop.create_future()

        async def write(message: Any) -> None:
            await gate  # grpc.aio raises CancelledError here once the RPC is cancelled

        outbox = _outbox(write)
        outbox.start()
        outbox.put(1, now=True)
        outbox.put(2)
        gate.cancel()
        await asyncio.wait_for(outbox.run(), 5)
        return outbox, errors

    outbox, errors = asyncio.run(scenario())
    assert outbox.closed
    assert errors == []  # nothing escaped into the event loop


def test_outbox_writes_that_finish_at_once_do_not_recurse() -> None:
    async def scenario() -> int:
        count = 0

        async def write(message: Any) -> None:
            nonlocal count
            count += 1  # never suspends

        outbox = _outbox(write)
        for index in range(3000):
            outbox.put(DataChunk(1, b"x", index < 2999), 1)
        outbox.close()
        await asyncio.wait_for(outbox.run(), 5)
        return count

    assert asyncio.run(scenario()) == 3000


def test_outbox_limits_envelope_bytes_and_blocks_bulk_producers() -> None:
    async def scenario() -> tuple[list[int], bool]:
        sizes: list[int] = []
        gate = asyncio.Event()

        async def write(batch: list[int]) -> None:
            await gate.wait()
            sizes.append(sum(batch))

        outbox = _outbox(write, max_envelope_bytes=10, high_water_bytes=25)
        runner = asyncio.ensure_future(outbox.run())
        outbox.put(10, 10)
        await asyncio.sleep(0)  # the writer takes it and waits at the gate
        for _ in range(3):
            outbox.put(10, 10)
        blocked = asyncio.ensure_future(outbox.put_wait(10, 10))
        await asyncio.sleep(0)
        was_blocked = not blocked.done()
        gate.set()
        await asyncio.wait_for(blocked, 5)
        outbox.close()
        await asyncio.wait_for(runner, 5)
        return sizes, was_blocked

    sizes, was_blocked = asyncio.run(scenario())
    assert sizes == [10, 10, 10, 10, 10]
    assert was_blocked


def test_keepalive_settings_agree_between_peers_and_gateway() -> None:
    from easyremote.proto.transport import channel_options, server_options

    client, server = dict(channel_options()), dict(server_options())
    # Peers must never ping more often than the gateway tolerates, or it
    # answers with a too_many_pings GOAWAY and drops the connection.
    assert int(client["grpc.keepalive_time_ms"]) >= int(
        server["grpc.http2.min_ping_interval_without_data_ms"]
    )
    assert client["grpc.keepalive_permit_without_calls"] == 1
    assert server["grpc.keepalive_permit_without_calls"] == 1
    # Idle streams (a node waiting for work) may ping without data frames.
    assert client["grpc.http2.max_pings_without_data"] == 0
    assert server["grpc.http2.max_pings_without_data"] == 0
