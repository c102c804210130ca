"""The two long-lived streams: their method paths and the codec of each direction.

Both are registered without gRPC-level (de)serialisers on the sending side:
the ``Outbox`` hands gRPC encoded bytes, and receivers decode with these
codecs, which turn lone payload chunks into ``DataChunk`` views.
"""

from __future__ import annotations

from easyremote.proto.codec import StreamCodec
from easyremote.proto.v1 import client_pb2, node_pb2


def _method_path(service: str, method: str) -> str:
    return f"/{service}/{method}"


NODE_SERVICE = node_pb2.DESCRIPTOR.services_by_name["NodeService"].full_name
CLIENT_SERVICE = client_pb2.DESCRIPTOR.services_by_name["ClientService"].full_name
CONNECT_METHOD = _method_path(NODE_SERVICE, "Connect")
SESSION_METHOD = _method_path(CLIENT_SERVICE, "Session")

# node -> gateway and gateway -> node on NodeService.Connect.
NODE_TO_GATEWAY: StreamCodec[node_pb2.NodeEnvelope] = StreamCodec(node_pb2.NodeEnvelope)
GATEWAY_TO_NODE: StreamCodec[node_pb2.GatewayEnvelope] = StreamCodec(node_pb2.GatewayEnvelope)
# client -> gateway and gateway -> client on ClientService.Session.
CLIENT_TO_GATEWAY: StreamCodec[client_pb2.ClientEnvelope] = StreamCodec(client_pb2.ClientEnvelope)
GATEWAY_TO_CLIENT: StreamCodec[client_pb2.SessionEnvelope] = StreamCodec(client_pb2.SessionEnvelope)
