"""The gateway's gRPC method table, registered by hand.

The generated ``add_*Servicer_to_server`` functions would (de)serialise the two
long-lived streams with protobuf alone. Here their requests are decoded by the
stream codecs (payload chunks stay views of the received message) and their
replies are sent as the bytes the outbox already encoded. The unary methods
keep the generated protobuf (de)serialisers.
"""

from __future__ import annotations

import grpc
from grpc import aio

from easyremote.proto.streams import (
    CLIENT_SERVICE,
    CLIENT_TO_GATEWAY,
    NODE_SERVICE,
    NODE_TO_GATEWAY,
)
from easyremote.proto.v1 import client_pb2, common_pb2
from easyremote.server._client_servicer import ClientServicer
from easyremote.server._node_servicer import NodeServicer


def add_handlers(server: aio.Server, nodes: NodeServicer, clients: ClientServicer) -> None:
    """Registers NodeService and ClientService on ``server``."""
    node_methods = {
        "Connect": grpc.stream_stream_rpc_method_handler(
            nodes.Connect, request_deserializer=NODE_TO_GATEWAY.decode
        ),
    }
    client_methods = {
        "Session": grpc.stream_stream_rpc_method_handler(
            clients.Session, request_deserializer=CLIENT_TO_GATEWAY.decode
        ),
        "Call": grpc.unary_unary_rpc_method_handler(
            clients.Call,
            request_deserializer=client_pb2.UnaryCallRequest.FromString,
            response_serializer=common_pb2.CallResult.SerializeToString,
        ),
        "ListNodes": grpc.unary_unary_rpc_method_handler(
            clients.ListNodes,
            request_deserializer=client_pb2.ListNodesRequest.FromString,
            response_serializer=client_pb2.ListNodesReply.SerializeToString,
        ),
        "GetNodeStatus": grpc.unary_unary_rpc_method_handler(
            clients.GetNodeStatus,
            request_deserializer=client_pb2.GetNodeStatusRequest.FromString,
            response_serializer=client_pb2.NodeStatus.SerializeToString,
        ),
    }
    for service, methods in ((NODE_SERVICE, node_methods), (CLIENT_SERVICE, client_methods)):
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, methods),))
        # The registered-method fast path the generated code also uses.
        server.add_registered_method_handlers(service, methods)  # type: ignore[attr-defined]
