"""Which values the standard pickler can serialise exactly like cloudpickle.

For plain data (numbers, strings, bytes, None and small tuples, lists and
dicts of them) ``pickle.dumps`` writes the same bytes cloudpickle would, about
five times faster (0.9 us instead of 4.8 us for a small argument tuple). Both
peers still unpickle with the standard ``pickle.loads``. Anything else —
functions, classes from ``__main__``, arbitrary objects — must go through
cloudpickle, which pickles them by value.
"""

from __future__ import annotations

_SCALARS = frozenset({int, float, complex, str, bytes, bool, type(None)})
# Bounds keep the check itself cheap; larger structures take cloudpickle.
_MAX_ITEMS = 32
_MAX_DEPTH = 4


def is_plain_data(value: object, depth: int = 0) -> bool:
    """True when ``value`` is plain data the standard pickler handles exactly."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if depth >= _MAX_DEPTH:
        return False
    if kind is tuple or kind is list:
        items: tuple[object, ...] | list[object] = value  # type: ignore[assignment]
        return len(items) <= _MAX_ITEMS and all(is_plain_data(v, depth + 1) for v in items)
    if kind is dict:
        mapping: dict[object, object] = value  # type: ignore[assignment]
        return len(mapping) <= _MAX_ITEMS and all(
            type(k) is str and is_plain_data(v, depth + 1) for k, v in mapping.items()
        )
    return False
