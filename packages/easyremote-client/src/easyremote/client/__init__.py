"""EasyRemote client: call functions on remote compute nodes through a gateway.

Example:
    >>> from easyremote.client import Client
    >>> with Client("localhost:8080") as client:
    ...     client.call("train_model", "sample")
    ...     for item in client.call_stream("stream_process", 5):
    ...         print(item)

``AsyncClient`` is the asyncio twin. Errors all derive from ``EasyRemoteError``.
"""

from easyremote.client._async_client import AsyncCallStream, AsyncClient
from easyremote.client._client import CallStream, Client
from easyremote.client._errors import (
    AuthenticationError,
    CallCancelledError,
    CallTimeoutError,
    EasyRemoteError,
    GatewayUnavailableError,
    InvalidArgumentError,
    NoAvailableNodesError,
    NodeLostError,
    NodeNotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ProtocolMismatchError,
    QueueFullError,
    RemoteExecutionError,
    SerializationError,
    StreamInterruptedError,
)
from easyremote.client._remote import (
    RemoteFunction,
    call,
    call_stream,
    get_default_client,
    get_default_gateway,
    remote,
    set_default_gateway,
)
from easyremote.client._status import FunctionStatus, GpuStatus, NodeStatus, ResourceStatus
from easyremote.client.version import __version__

__all__ = [
    "AsyncCallStream",
    "AsyncClient",
    "AuthenticationError",
    "CallCancelledError",
    "CallStream",
    "CallTimeoutError",
    "Client",
    "EasyRemoteError",
    "FunctionStatus",
    "GatewayUnavailableError",
    "GpuStatus",
    "InvalidArgumentError",
    "NoAvailableNodesError",
    "NodeLostError",
    "NodeNotFoundError",
    "NodeStatus",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "ProtocolMismatchError",
    "QueueFullError",
    "RemoteExecutionError",
    "RemoteFunction",
    "ResourceStatus",
    "SerializationError",
    "StreamInterruptedError",
    "__version__",
    "call",
    "call_stream",
    "get_default_client",
    "get_default_gateway",
    "remote",
    "set_default_gateway",
]
