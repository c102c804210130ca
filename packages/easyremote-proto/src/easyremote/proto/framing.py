"""Payload framing: how large byte strings are cut into chunks."""

from __future__ import annotations

from collections.abc import Iterator

# 1 MiB chunks pipeline well over HTTP/2 (measured: 64 MiB echoed 3x faster than
# as one message) and keep every gRPC message far below the 8 MiB limit.
CHUNK_SIZE = 1 << 20
# Payloads up to this size travel in their header frame alone: cutting a
# 1 MiB-and-a-bit pickle into 1 MiB plus a few bytes would cost a second
# message on every hop for nothing.
INLINE_PAYLOAD_BYTES = 2 * CHUNK_SIZE


def iter_chunks(data: bytes) -> Iterator[tuple[bytes, bool]]:
    """Yields ``(piece, more)`` for a payload, ``more`` telling whether another follows.

    A payload up to ``INLINE_PAYLOAD_BYTES`` (empty ones included) is one
    piece, because every payload is announced by a header frame that carries
    its first piece. Larger ones are cut lazily into ``CHUNK_SIZE`` pieces.
    """
    size = len(data)
    if size <= INLINE_PAYLOAD_BYTES:
        yield data, False
        return
    view = memoryview(data)
    for start in range(0, size, CHUNK_SIZE):
        end = start + CHUNK_SIZE
        yield bytes(view[start:end]), end < size
