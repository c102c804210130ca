"""Messages of the long-lived streams: protobuf envelopes, payload chunks framed by hand.

Every message on a node's ``Connect`` stream and a client's ``Session`` stream is
a protobuf envelope (``repeated frames = 1``). A payload chunk, though, is sent
as an envelope holding that one ``Chunk`` frame and nothing else, and both ends
encode and decode that shape directly: the sender writes the few header bytes
and appends the payload; the receiver checks the header and takes the payload
as a ``memoryview`` of the received message. The bytes on the wire are exactly
what protobuf would write for the same envelope, so any protobuf library reads
them, and a message of any other shape simply takes the protobuf path.

Why: with upb, relaying a chunk through protobuf copied its bytes about six
times in the gateway (parse, attribute read, assignment, envelope packing,
serialisation); framed by hand, the only copies left are gRPC's own and one
join. Measured on a 64 MiB echo, that was most of the gateway's CPU time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

EnvelopeT = TypeVar("EnvelopeT", bound=Message)

_VARINT = 0
_LEN = 2
_MAX_VARINT_SHIFT = 63
_ONE_BYTE_VARINTS = [bytes((value,)) for value in range(0x80)]


@dataclass(slots=True)
class DataChunk:
    """A continuation piece of a payload, as sent and received on a stream.

    Attributes:
        call_id: The call it belongs to, in the receiver's numbering once
            relayed (the gateway rewrites it).
        data: The bytes; a view into the received message when decoded.
        more: Whether another chunk of the same payload follows.
    """

    call_id: int
    data: bytes | memoryview
    more: bool


def _tag(number: int, wire_type: int) -> int:
    if not 0 < number < 16:
        # One-byte tags keep the hand framing trivial; a proto change that
        # breaks this must change the codec too.
        raise ValueError(f"field number {number} needs a multi-byte tag")
    return number << 3 | wire_type


def encode_varint(value: int) -> bytes:
    """Protobuf's base-128 varint encoding of an unsigned 64-bit integer.

    Raises:
        ValueError: ``value`` is negative or needs more than 64 bits.
    """
    if 0 <= value < 0x80:
        return _ONE_BYTE_VARINTS[value]
    if not 0 <= value < 1 << 64:
        raise ValueError(f"{value} is not an unsigned 64-bit integer")
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decodes a varint at ``pos``; returns (value, next position).

    Raises:
        IndexError: The buffer ends inside the varint.
        ValueError: The varint does not fit 64 bits. Protobuf would silently
            cut it to 64 bits; the fast path leaves such odd input to protobuf
            rather than reading it differently.
    """
    result = 0
    shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            if result >> 64:
                raise ValueError("varint longer than 64 bits")
            return result, pos
        shift += 7
        if shift > _MAX_VARINT_SHIFT:
            raise ValueError("varint longer than 64 bits")


class StreamCodec(Generic[EnvelopeT]):
    """Encodes and decodes the messages of one direction of one stream.

    Args:
        envelope_type: The envelope message class, e.g. ``NodeEnvelope``; its
            frame type must have a ``chunk`` field of type ``Chunk``.
    """

    def __init__(self, envelope_type: type[EnvelopeT]) -> None:
        frames = envelope_type.DESCRIPTOR.fields_by_name["frames"]
        frame_type = frames.message_type
        assert frame_type is not None, "frames must be a message field"
        chunk_field = frame_type.fields_by_name["chunk"]
        chunk_type = chunk_field.message_type
        assert chunk_type is not None, "chunk must be a message field"
        chunk = chunk_type.fields_by_name
        self._parse = envelope_type.FromString
        self._kind_tags = {
            field.name: bytes((_tag(field.number, _LEN),))
            for field in frame_type.fields
            if field.message_type is not None
        }
        self._frames_tag = _tag(frames.number, _LEN)
        self._chunk_tag = _tag(chunk_field.number, _LEN)
        self._call_id_tag = _tag(chunk["call_id"].number, _VARINT)
        self._data_tag = _tag(chunk["data"].number, _LEN)
        self._more_tag = _tag(chunk["more"].number, _VARINT)
        self._more_true = bytes((self._more_tag, 1))
        self._frames_prefix = bytes((self._frames_tag,))

    # ------------------------------------------------------------- decoding

    def decode(self, message: bytes) -> EnvelopeT | DataChunk:
        """A received message: a ``DataChunk`` if it is a lone chunk, else the envelope.

        Used as the gRPC deserializer, so protobuf errors surface as they would
        with the generated one.
        """
        chunk = self._decode_chunk(message)
        if chunk is not None:
            return chunk
        return self._parse(message)

    def _decode_chunk(self, buf: bytes) -> DataChunk | None:
        try:
            if not buf or buf[0] != self._frames_tag:
                return None
            end = len(buf)
            size, pos = _read_varint(buf, 1)
            if pos + size != end or buf[pos] != self._chunk_tag:
                return None
            size, pos = _read_varint(buf, pos + 1)
            if pos + size != end:
                return None
            call_id = 0
            more = False
            data: bytes | memoryview = b""
            while pos < end:
                tag = buf[pos]
                if tag == self._data_tag:
                    size, pos = _read_varint(buf, pos + 1)
                    if pos + size > end:
                        return None
                    data = memoryview(buf)[pos : pos + size]
                    pos += size
                elif tag == self._call_id_tag:
                    call_id, pos = _read_varint(buf, pos + 1)
                elif tag == self._more_tag:
                    value, pos = _read_varint(buf, pos + 1)
                    more = value != 0
                else:
                    return None  # unknown field: let protobuf handle it
            return DataChunk(call_id, data, more)
        except (IndexError, ValueError):
            return None  # malformed: protobuf reports it properly

    # ------------------------------------------------------------- encoding

    def encode_chunk(self, chunk: DataChunk) -> bytes:
        """One chunk as one message, byte for byte what protobuf would write."""
        data = chunk.data
        size = len(data)
        head = bytearray()
        if chunk.call_id:
            head.append(self._call_id_tag)
            head += encode_varint(chunk.call_id)
        if size:
            head.append(self._data_tag)
            head += encode_varint(size)
        tail = self._more_true if chunk.more else b""
        chunk_size = len(head) + size + len(tail)
        chunk_len = encode_varint(chunk_size)
        frame_size = 1 + len(chunk_len) + chunk_size
        prefix = bytearray((self._frames_tag,))
        prefix += encode_varint(frame_size)
        prefix.append(self._chunk_tag)
        prefix += chunk_len
        prefix += head
        return b"".join((prefix, data, tail))

    def encode_frame(self, kind: str, message: Message) -> bytes:
        """A frame whose ``kind`` field holds ``message``, already serialised.

        The outbox sends such bytes like a frame message; building them skips
        the frame object and the copy of ``message`` into it.
        """
        body = message.SerializeToString()
        return b"".join((self._kind_tags[kind], encode_varint(len(body)), body))

    def encode_frames(self, frames: Sequence[Any]) -> bytes:
        """Frames (protobuf messages, or bytes from ``encode_frame``) as one envelope.

        Each frame is serialised on its own and prefixed by hand: the bytes
        are what protobuf writes for the envelope, at less than half the cost
        of building one (upb copies every frame into it).
        """
        prefix = self._frames_prefix
        if len(frames) == 1:
            frame = frames[0]
            body = frame if type(frame) is bytes else frame.SerializeToString()
            return b"".join((prefix, encode_varint(len(body)), body))
        parts: list[bytes] = []
        for frame in frames:
            body = frame if type(frame) is bytes else frame.SerializeToString()
            parts += (prefix, encode_varint(len(body)), body)
        return b"".join(parts)
