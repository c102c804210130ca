"""EasyRemote: make a GPU box's Python functions callable from anywhere.

Three roles, one small public gateway::

    from easyremote import Server, ComputeNode, Client, remote

    Server(port=8080).start_background()              # the gateway (a VPS)

    node = ComputeNode("localhost:8080", "gpu-node-1")  # a GPU host, dials out
    @node.register
    def train_model(data): ...
    node.serve(blocking=False)

    Client("localhost:8080").call("train_model", "x")   # any app

This meta package re-exports the API of ``easyremote.server``,
``easyremote.node`` and ``easyremote.client``.
"""

# The role packages are portions of the `easyremote` namespace installed as
# separate distributions; keep the namespace open so all of them import even
# when installed from different locations (editable installs).
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

from easyremote.client import (
    AsyncCallStream,
    AsyncClient,
    AuthenticationError,
    CallCancelledError,
    CallStream,
    CallTimeoutError,
    Client,
    EasyRemoteError,
    GatewayUnavailableError,
    InvalidArgumentError,
    NoAvailableNodesError,
    NodeLostError,
    NodeNotFoundError,
    NodeStatus,
    PayloadTooLargeError,
    PermissionDeniedError,
    ProtocolMismatchError,
    QueueFullError,
    RemoteExecutionError,
    SerializationError,
    StreamInterruptedError,
    call,
    remote,
    set_default_gateway,
)
from easyremote.node import ComputeNode, NodeError, current_call
from easyremote.server import GatewayError, Server
from easyremote.version import __version__

__all__ = [
    "AsyncCallStream",
    "AsyncClient",
    "AuthenticationError",
    "CallCancelledError",
    "CallStream",
    "CallTimeoutError",
    "Client",
    "ComputeNode",
    "EasyRemoteError",
    "GatewayError",
    "GatewayUnavailableError",
    "InvalidArgumentError",
    "NoAvailableNodesError",
    "NodeError",
    "NodeLostError",
    "NodeNotFoundError",
    "NodeStatus",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "ProtocolMismatchError",
    "QueueFullError",
    "RemoteExecutionError",
    "SerializationError",
    "Server",
    "StreamInterruptedError",
    "__version__",
    "call",
    "current_call",
    "remote",
    "set_default_gateway",
]
