"""The public API is frozen: changes here are deliberate, reviewed API changes."""

from __future__ import annotations

import easyremote
import easyremote.client
import easyremote.node
import easyremote.server
from easyremote.core.nodes import client as functional

SEED_API = {
    "Server",
    "ComputeNode",
    "Client",
    "remote",
    "NoAvailableNodesError",
    "RemoteExecutionError",
}


def test_seed_names_are_importable_from_easyremote() -> None:
    assert set(easyremote.__all__) >= SEED_API
    for name in easyremote.__all__:
        assert getattr(easyremote, name) is not None


def test_functional_mode_module() -> None:
    assert callable(functional.set_default_gateway) and callable(functional.call)


def test_role_exports_are_frozen() -> None:
    assert easyremote.server.__all__ == ["GatewayError", "Server", "__version__"]
    assert {"ComputeNode", "NodeError", "current_call", "StaticProbe", "ResourceSnapshot"} <= set(
        easyremote.node.__all__
    )
    client_errors = {
        "EasyRemoteError",
        "GatewayUnavailableError",
        "NoAvailableNodesError",
        "NodeNotFoundError",
        "QueueFullError",
        "RemoteExecutionError",
        "CallTimeoutError",
        "CallCancelledError",
        "NodeLostError",
        "StreamInterruptedError",
        "SerializationError",
        "InvalidArgumentError",
        "PayloadTooLargeError",
        "AuthenticationError",
        "PermissionDeniedError",
        "ProtocolMismatchError",
    }
    assert client_errors <= set(easyremote.client.__all__)
    for name in client_errors:
        assert getattr(easyremote, name) is getattr(easyremote.client, name)


def test_every_all_entry_exists() -> None:
    for module in (easyremote, easyremote.client, easyremote.node, easyremote.server):
        for name in module.__all__:
            assert hasattr(module, name), (module.__name__, name)
