"""EasyRemote wire protocol.

Generated gRPC/protobuf modules live in :mod:`easyremote.proto.v1`; this package
adds the helpers every role needs to speak the protocol the same way (the error
table, transport settings, payload framing, the stream codecs and the coalescing
outbox), the credentials, TLS and local gateway records every peer resolves, and
the pieces the three CLIs share (logging set-up, the ``status`` command).

Users of EasyRemote never touch these; they use ``easyremote.client``,
``easyremote.node`` and ``easyremote.server``.
"""

from easyremote.proto.codec import DataChunk, StreamCodec
from easyremote.proto.errors import (
    REASON_METADATA_KEY,
    metadata_reason,
    reason_from_status,
    status_for_reason,
)
from easyremote.proto.framing import CHUNK_SIZE, INLINE_PAYLOAD_BYTES, split_payload
from easyremote.proto.names import (
    STRATEGY_BY_NAME,
    node_state_name,
    strategy_from_name,
    strategy_name,
)
from easyremote.proto.outbox import Outbox, OutboxClosedError
from easyremote.proto.payload import Payload, pickle_payload, pickle_value, unpickle
from easyremote.proto.transport import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    channel_options,
    python_version,
    server_options,
)
from easyremote.proto.version import __version__

__all__ = [
    "CHUNK_SIZE",
    "DataChunk",
    "INLINE_PAYLOAD_BYTES",
    "MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "REASON_METADATA_KEY",
    "Outbox",
    "OutboxClosedError",
    "Payload",
    "STRATEGY_BY_NAME",
    "StreamCodec",
    "__version__",
    "channel_options",
    "metadata_reason",
    "node_state_name",
    "pickle_payload",
    "pickle_value",
    "python_version",
    "reason_from_status",
    "server_options",
    "split_payload",
    "strategy_from_name",
    "strategy_name",
    "unpickle",
    "status_for_reason",
]
