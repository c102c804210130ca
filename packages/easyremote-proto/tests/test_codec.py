"""Stream codecs: hand-framed payload chunks are exactly protobuf's bytes."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.message import DecodeError

from easyremote.proto import DataChunk, StreamCodec
from easyremote.proto.codec import encode_varint
from easyremote.proto.streams import (
    CLIENT_TO_GATEWAY,
    GATEWAY_TO_CLIENT,
    GATEWAY_TO_NODE,
    NODE_TO_GATEWAY,
)
from easyremote.proto.v1 import client_pb2, common_pb2, node_pb2

CODECS: list[tuple[StreamCodec[Any], Any]] = [
    (NODE_TO_GATEWAY, node_pb2.NodeEnvelope),
    (GATEWAY_TO_NODE, node_pb2.GatewayEnvelope),
    (CLIENT_TO_GATEWAY, client_pb2.ClientEnvelope),
    (GATEWAY_TO_CLIENT, client_pb2.SessionEnvelope),
]
CHUNKS = [
    (0, b"", False),
    (1, b"x", False),
    (5, b"abc", True),
    (300, bytes(range(256)) * 3, True),
    (2**64 - 1, bytes(300), False),
    (9, bytes(1 << 20), True),
]


def _protobuf_envelope(envelope_type: Any, call_id: int, data: bytes, more: bool) -> Any:
    envelope = envelope_type()
    chunk = envelope.frames.add().chunk
    chunk.call_id = call_id
    chunk.data = data
    chunk.more = more
    return envelope


@pytest.mark.parametrize(("codec", "envelope_type"), CODECS)
@pytest.mark.parametrize(("call_id", "data", "more"), CHUNKS)
def test_chunk_encoding_is_protobufs_and_decodes_as_a_view(
    codec: StreamCodec[Any], envelope_type: Any, call_id: int, data: bytes, more: bool
) -> None:
    message = codec.encode_chunk(DataChunk(call_id, memoryview(data), more))
    assert message == _protobuf_envelope(envelope_type, call_id, data, more).SerializeToString()
    decoded = codec.decode(message)
    assert decoded == DataChunk(call_id, decoded.data, more)
    assert bytes(decoded.data) == data
    if data:
        assert isinstance(decoded.data, memoryview)
        assert decoded.data.obj is message  # no copy of the payload


@pytest.mark.parametrize(("codec", "envelope_type"), CODECS)
def test_protobuf_written_chunks_in_any_field_order_take_the_fast_path(
    codec: StreamCodec[Any], envelope_type: Any
) -> None:
    # A protobuf writer may emit `more` before `data`: still one lone chunk.
    body = b"\x18\x01" + b"\x08" + encode_varint(42) + b"\x12\x03xyz"
    frame_tag = codec.encode_chunk(DataChunk(1, b"", False))[2]
    frame = bytes((frame_tag,)) + encode_varint(len(body)) + body
    message = b"\x0a" + encode_varint(len(frame)) + frame
    assert envelope_type.FromString(message).frames[0].chunk.data == b"xyz"
    assert codec.decode(message) == DataChunk(42, codec.decode(message).data, True)
    assert bytes(codec.decode(message).data) == b"xyz"


def test_other_envelopes_decode_through_protobuf() -> None:
    heartbeat = node_pb2.NodeEnvelope()
    heartbeat.frames.add().heartbeat.seq = 3
    decoded = NODE_TO_GATEWAY.decode(heartbeat.SerializeToString())
    assert isinstance(decoded, node_pb2.NodeEnvelope)
    assert decoded.frames[0].heartbeat.seq == 3

    two_chunks = node_pb2.NodeEnvelope()
    for call_id in (1, 2):
        two_chunks.frames.add().chunk.call_id = call_id
    decoded = NODE_TO_GATEWAY.decode(two_chunks.SerializeToString())
    assert isinstance(decoded, node_pb2.NodeEnvelope)
    assert [f.chunk.call_id for f in decoded.frames] == [1, 2]

    assert NODE_TO_GATEWAY.decode(b"") == node_pb2.NodeEnvelope()


def test_encode_frames_packs_one_envelope_exactly_as_protobuf() -> None:
    frames = [node_pb2.NodeFrame(), node_pb2.NodeFrame()]
    frames[0].heartbeat.seq = 1
    frames[1].draining.reason = "bye"
    expected = node_pb2.NodeEnvelope()
    for frame in frames:
        expected.frames.add().CopyFrom(frame)
    assert NODE_TO_GATEWAY.encode_frames(frames) == expected.SerializeToString()
    assert (
        NODE_TO_GATEWAY.encode_frames(frames[:1])
        == node_pb2.NodeEnvelope(frames=frames[:1]).SerializeToString()
    )


def test_pre_encoded_frames_mix_with_message_frames() -> None:
    result = common_pb2.CallResult(call_id=7, kind=common_pb2.RESULT_KIND_VALUE, data=b"v")
    welcome = client_pb2.SessionFrame()
    welcome.welcome.max_payload_bytes = 5
    encoded = GATEWAY_TO_CLIENT.encode_frame("result", result)
    envelope = client_pb2.SessionEnvelope.FromString(
        GATEWAY_TO_CLIENT.encode_frames([welcome, encoded, encoded])
    )
    assert [frame.WhichOneof("kind") for frame in envelope.frames] == [
        "welcome",
        "result",
        "result",
    ]
    assert envelope.frames[2].result == result


@pytest.mark.parametrize(
    "cut",
    [1, 2, 3, 5, 8, 20],
)
def test_truncated_or_corrupt_chunks_fail_like_protobuf(cut: int) -> None:
    message = NODE_TO_GATEWAY.encode_chunk(DataChunk(77, bytes(100), True))
    with pytest.raises(DecodeError):
        NODE_TO_GATEWAY.decode(message[:-cut])
    with pytest.raises(DecodeError):
        NODE_TO_GATEWAY.decode(b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")


def test_varints_beyond_64_bits_are_left_to_protobuf() -> None:
    # A 10-byte call_id varint with high bits set: protobuf cuts it to 64 bits.
    message = bytes.fromhex("0a0d1a0b088180808080808080807f")
    decoded = GATEWAY_TO_NODE.decode(message)
    assert isinstance(decoded, node_pb2.GatewayEnvelope)
    expected = node_pb2.GatewayEnvelope.FromString(message)
    assert decoded.frames[0].chunk.call_id == expected.frames[0].chunk.call_id
    for value in (-1, 2**64):
        with pytest.raises(ValueError):
            encode_varint(value)
    assert encode_varint(2**64 - 1) == b"\xff" * 9 + b"\x01"
