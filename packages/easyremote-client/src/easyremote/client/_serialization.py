"""Pickling on the caller's side, and the versions it announces."""

from __future__ import annotations

from typing import Any

import cloudpickle

from easyremote.client._errors import SerializationError
from easyremote.client.version import __version__
from easyremote.proto import PROTOCOL_VERSION, python_version
from easyremote.proto.payload import Payload, pickle_value, unpickle
from easyremote.proto.v1 import common_pb2

# Payloads above this size are (un)pickled off the event loop by AsyncClient.
INLINE_PICKLE_BYTES = 256 * 1024


def local_versions() -> common_pb2.Versions:
    return common_pb2.Versions(
        protocol=PROTOCOL_VERSION,
        python=python_version(),
        cloudpickle=str(getattr(cloudpickle, "__version__", "unknown")),
        easyremote=__version__,
    )


def dump_arguments(function: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Payload:
    """Pickles call arguments; classes from ``__main__`` travel by value.

    Large ``bytes`` arguments are not copied: the payload refers to them.
    """
    value = (args, kwargs)
    try:
        return pickle_value(value, cloudpickle.Pickler)
    except Exception as exc:
        raise SerializationError(
            f"could not pickle the arguments of {function!r}: {exc!r}"
        ) from exc


def load_result(function: str, data: Payload, node_id: str = "") -> Any:
    """Unpickles a result or stream item produced by a node."""
    try:
        return unpickle(data)
    except Exception as exc:
        mine = local_versions()
        where = f" from node {node_id!r}" if node_id else ""
        raise SerializationError(
            f"could not unpickle the result of {function!r}{where}: {exc!r} (this client runs "
            f"{mine.python} with cloudpickle {mine.cloudpickle}; "
            "see get_node_status() for the node's)",
            node_id=node_id,
        ) from exc
