"""Pickled payloads: which values take the standard pickler, and copy-free pieces.

For plain data (numbers, strings, bytes, None and small tuples, lists and
dicts of them) ``pickle.dumps`` writes the same bytes cloudpickle would, about
five times faster (0.9 us instead of 4.8 us for a small argument tuple). Both
peers still unpickle with the standard ``pickle.loads``. Anything else —
functions, classes from ``__main__``, arbitrary objects — must go through
cloudpickle, which pickles them by value.
"""

from __future__ import annotations

import pickle
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

_SCALARS = frozenset({int, float, complex, str, bytes, bool, type(None)})
# Bounds keep the check itself cheap; larger structures take cloudpickle.
_MAX_ITEMS = 32
_MAX_DEPTH = 4


_BUFFERS = (str, bytes)
# Plain data whose strings and bytes add up to no more than this is pickled
# with ``pickle.dumps`` (one C call); larger goes through a Payload.
_SMALL_PLAIN_BYTES = 64 << 10
_LINE_STEP = 256
_PROTO = pickle.PROTO[0]


def _plain_size(value: object, depth: int) -> int:
    """Total length of the strings and bytes in plain data; -1 if not plain data."""
    kind = type(value)
    if kind in _SCALARS:
        return len(value) if kind in _BUFFERS else 0  # type: ignore[arg-type]
    if depth >= _MAX_DEPTH:
        return -1
    total = 0
    if kind is tuple or kind is list:
        items: tuple[object, ...] | list[object] = value  # type: ignore[assignment]
        if len(items) > _MAX_ITEMS:
            return -1
        for item in items:
            size = _plain_size(item, depth + 1)
            if size < 0:
                return -1
            total += size
        return total
    if kind is dict:
        mapping: dict[object, object] = value  # type: ignore[assignment]
        if len(mapping) > _MAX_ITEMS:
            return -1
        for key, item in mapping.items():
            size = _plain_size(item, depth + 1) if type(key) is str else -1
            if size < 0:
                return -1
            total += size
        return total
    return -1


def pickle_value(value: object, pickler: Callable[..., Any]) -> Payload:
    """Pickles ``value``: plain data with the standard pickler, the rest with ``pickler``.

    Args:
        value: Anything picklable.
        pickler: The pickler class for values that are not plain data
            (cloudpickle's, so functions and ``__main__`` classes travel by
            value).
    """
    size = _plain_size(value, 0)
    if size < 0:
        return pickle_payload(value, pickler)
    if size <= _SMALL_PLAIN_BYTES:
        return Payload((pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL),))
    return pickle_payload(value)


class Payload:
    """Pickled bytes, kept as the pieces they were written or received in.

    A pickle of a large ``bytes`` object would otherwise be copied whole at
    least twice on each end: into the pickler's buffer on the way out, and
    from the joined chunks into the new object on the way in (plus the page
    faults of those fresh 64 MiB buffers). Instead the sender's pickler writes
    into a ``Payload`` (``pickle.Pickler`` hands large ``bytes`` objects to
    ``write`` as they are, so they are kept by reference), and the receiver
    unpickles straight from the received chunks (``unpickle``), so the only
    copy of a large buffer is into its new object.

    Args:
        parts: Initial pieces, e.g. the chunks of a received payload in order.
    """

    __slots__ = ("parts", "size")

    def __init__(self, parts: Iterable[bytes | memoryview] = ()) -> None:
        kept: list[bytes | memoryview] = []
        size = 0
        for part in parts:
            length = len(part)
            if length:
                kept.append(part)
                size += length
        self.parts = kept
        self.size = size

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Appends ``data`` (the file protocol a pickler writes to).

        Only immutable ``bytes`` are kept by reference; other buffers are
        copied, since their owner may change them while they are being sent.
        """
        if type(data) is not bytes:
            data = bytes(data)
        if data:
            self.parts.append(data)
            self.size += len(data)
        return len(data)

    def __len__(self) -> int:
        return self.size

    def tobytes(self) -> bytes:
        """The payload as one ``bytes`` object (no copy when it is one piece)."""
        parts = self.parts
        if len(parts) == 1 and type(parts[0]) is bytes:
            return parts[0]
        return b"".join(parts)


def pickle_payload(value: object, pickler: Callable[..., Any] = pickle.Pickler) -> Payload:
    """Pickles ``value`` (highest protocol) with ``pickler``'s class into a ``Payload``."""
    payload = Payload()
    pickler(payload, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return payload


def unpickle(payload: Payload | bytes) -> Any:
    """Unpickles a payload produced by any peer, reading its pieces in place."""
    if isinstance(payload, bytes):
        return pickle.loads(payload)
    parts = payload.parts
    if len(parts) <= 1:
        return pickle.loads(parts[0] if parts else b"")
    first = parts[0]
    if len(first) < 2 or first[0] != _PROTO or first[1] < 4:
        # Protocols before 4 read text lines all over (GLOBAL and friends):
        # joined once, they unpickle at C speed. Peers send protocol 5.
        return pickle.loads(payload.tobytes())
    return pickle.Unpickler(_PartsReader(parts)).load()


class _PartsReader:
    """A read-only file over a sequence of buffers, for ``pickle.Unpickler``.

    The C unpickler reads a large ``bytes`` object with ``readinto`` on the
    object's own memory, so each byte is copied exactly once.
    """

    __slots__ = ("_parts",)

    def __init__(self, parts: Iterable[bytes | memoryview]) -> None:
        self._parts: deque[memoryview] = deque(memoryview(part).cast("B") for part in parts)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        target = memoryview(buffer).cast("B")
        wanted = len(target)
        filled = 0
        parts = self._parts
        while filled < wanted and parts:
            head = parts[0]
            count = min(len(head), wanted - filled)
            target[filled : filled + count] = head[:count]
            filled += count
            if count == len(head):
                parts.popleft()
            else:
                parts[0] = head[count:]
        return filled

    def read(self, size: int = -1) -> bytes:
        parts = self._parts
        if size < 0:
            size = sum(len(part) for part in parts)
        if parts and len(parts[0]) >= size:
            head = parts[0]
            data = bytes(head[:size])
            if size == len(head):
                parts.popleft()
            else:
                parts[0] = head[size:]
            return data
        out = bytearray(size)
        filled = self.readinto(out)
        del out[filled:]
        return bytes(out)

    def readline(self) -> bytes:
        # Text opcodes (old protocols, GLOBAL) read short lines: scan in small
        # steps so the cost follows the line, not the size of the part.
        line = bytearray()
        parts = self._parts
        while parts:
            head = parts[0]
            end = -1
            for start in range(0, len(head), _LINE_STEP):
                found = bytes(head[start : start + _LINE_STEP]).find(b"\n")
                if found >= 0:
                    end = start + found
                    break
            if end < 0:
                line += head
                parts.popleft()
                continue
            line += head[: end + 1]
            if end + 1 == len(head):
                parts.popleft()
            else:
                parts[0] = head[end + 1 :]
            break
        return bytes(line)
