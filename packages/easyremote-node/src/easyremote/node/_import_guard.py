"""Stops a TARGET module from serving while ``easyremote-node`` imports it.

A module written to be run (``python tasks.py``) often ends in
``node.serve()``. Imported by ``easyremote-node``, that call would block the
import and serve a node the command line never configured; Ctrl-C would then
start the command line's own node. ``ComputeNode.serve()`` calls
``check_not_importing()`` first, which fails fast while the command line is
inside ``importing_target()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

# The TARGET being imported by the command line, if any. One process imports
# one TARGET at a time, from its main thread.
_importing: str | None = None


def serve_during_import_message(target: str) -> str:
    """The error text for a TARGET that calls ``serve()`` at import.

    Args:
        target: TARGET as given on the command line.

    Returns:
        One paragraph saying what happened and how to fix the module.
    """
    return (
        f"{target!r} calls serve() while easyremote-node imports it; easyremote-node "
        'serves the node itself. Put the call under `if __name__ == "__main__":` '
        "(so `python yourmodule.py` still serves) or drop it."
    )


@contextmanager
def importing_target(target: str) -> Iterator[None]:
    """Marks the import of ``target``: ``serve()`` fails fast inside this block.

    Args:
        target: TARGET as given on the command line (named in the error).

    Yields:
        Nothing; the guard is lifted when the block ends, however it ends.
    """
    global _importing
    previous, _importing = _importing, target
    try:
        yield
    finally:
        _importing = previous


def check_not_importing() -> None:
    """Raises ``NodeError`` when called while the command line imports its TARGET.

    Raises:
        NodeError: ``serve()`` was called by the TARGET module at import.
    """
    if _importing is None:
        return
    # Imported here: _compute_node imports this module to call this function.
    from easyremote.node._compute_node import NodeError  # noqa: PLC0415

    raise NodeError(serve_during_import_message(_importing))


__all__ = ["check_not_importing", "importing_target", "serve_during_import_message"]
