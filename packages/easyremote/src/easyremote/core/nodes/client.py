"""Functional mode of the seed document.

Example:
    >>> from easyremote.core.nodes.client import set_default_gateway, call
    >>> set_default_gateway("localhost:8080")
    >>> call("train_model", "sample_data")
"""

from easyremote.client import (
    Client,
    call,
    call_stream,
    get_default_client,
    get_default_gateway,
    set_default_gateway,
)

__all__ = [
    "Client",
    "call",
    "call_stream",
    "get_default_client",
    "get_default_gateway",
    "set_default_gateway",
]
