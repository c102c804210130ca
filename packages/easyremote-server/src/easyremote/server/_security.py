"""Who may do what at the gateway: tokens with roles, checked before any handler runs.

Every RPC carries a bearer token. The node role may open ``NodeService``
streams; the client role may use ``ClientService`` (calls and status). A
missing or unknown token is ``UNAUTHENTICATED``; a valid token of the other
role is ``PERMISSION_DENIED``. Nothing of the request is read before that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from grpc import aio

from easyremote.proto.credentials import (
    ROLE_CLIENT,
    ROLE_NODE,
    ensure_local_credentials,
    token_from_metadata,
    tokens_equal,
)
from easyremote.proto.errors import REASON_METADATA_KEY
from easyremote.proto.v1 import common_pb2

logger = logging.getLogger("easyremote.server")

ENV_CLIENT_TOKEN = "EASYREMOTE_CLIENT_TOKEN"
ENV_NODE_TOKEN = "EASYREMOTE_NODE_TOKEN"
_NODE_SERVICE = "/easyremote.proto.v1.NodeService/"
# How long a refused stream waits for the caller's first message.
_DRAIN_FIRST_S = 1.0
_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


@dataclass(frozen=True)
class GatewayTokens:
    """The tokens each role must present; empty means authentication is off."""

    client: str = ""
    node: str = ""
    # Where the tokens came from, for the banner (never the tokens themselves).
    source: str = "off"

    @property
    def enabled(self) -> bool:
        return bool(self.client or self.node)

    def roles_of(self, token: str) -> frozenset[str]:
        """Roles ``token`` grants; both compared in constant time, always."""
        as_client = tokens_equal(token, self.client)
        as_node = tokens_equal(token, self.node)
        roles = set()
        if as_client:
            roles.add(ROLE_CLIENT)
        if as_node:
            roles.add(ROLE_NODE)
        return frozenset(roles)


def check_token_arguments(
    auth: bool, token: str | None, client_token: str | None, node_token: str | None
) -> None:
    """Raises ValueError for token arguments that contradict each other."""
    if not auth and (token or client_token or node_token):
        raise ValueError("tokens were given but auth=False turns authentication off")
    if token and (client_token or node_token):
        raise ValueError("pass either token= (both roles) or client_token=/node_token=")


def resolve_tokens(
    auth: bool, token: str | None, client_token: str | None, node_token: str | None
) -> GatewayTokens:
    """Arguments, then ``EASYREMOTE_CLIENT_TOKEN`` / ``EASYREMOTE_NODE_TOKEN``, then the
    local token file (created on first use).

    ``token=`` is one credential for both roles: allowed because asked for.
    """
    check_token_arguments(auth, token, client_token, node_token)
    if not auth:
        return GatewayTokens()
    if token:
        return GatewayTokens(token, token, "token= (one credential for both roles)")
    client = client_token or os.environ.get(ENV_CLIENT_TOKEN) or ""
    node = node_token or os.environ.get(ENV_NODE_TOKEN) or ""
    source = "arguments/environment"
    if not client or not node:
        local = ensure_local_credentials()
        client = client or local.client_token
        node = node or local.node_token
        source = "local token file"
    if tokens_equal(client, node):
        raise ValueError(
            "the client and node tokens are equal; pass token= to use one credential for both"
        )
    return GatewayTokens(client, node, source)


def _refusal(handler: _Handler, code: grpc.StatusCode, reason: int, message: str) -> _Handler:
    """A handler of the same shape as ``handler`` that only refuses."""

    streaming_in = handler.request_streaming

    async def refuse(request: Any, context: aio.ServicerContext[Any, Any]) -> None:
        if streaming_in:
            # Let the caller's first message (its hello) arrive before the
            # refusal: a client whose write races our status gets a local
            # INTERNAL error instead of the reason. The message is raw bytes
            # here (this handler has no deserializer) and is dropped unread.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(request.__anext__(), _DRAIN_FIRST_S)
        context.set_trailing_metadata(
            ((REASON_METADATA_KEY, common_pb2.ErrorReason.Name(reason)),)  # type: ignore[arg-type]
        )
        await context.abort(code, message)

    streaming_out = handler.response_streaming
    if streaming_in and streaming_out:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if streaming_in:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if streaming_out:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


if TYPE_CHECKING:
    _InterceptorBase = aio.ServerInterceptor[Any, Any]
else:  # grpc's classes are not subscriptable at run time
    _InterceptorBase = aio.ServerInterceptor


class AuthInterceptor(_InterceptorBase):
    """Checks the caller's token and role before the RPC's handler runs."""

    def __init__(self, tokens: GatewayTokens) -> None:
        self._tokens = tokens
        # RPCs seen, and refused for each cause (for tests and operators).
        self.seen = 0
        self.unauthenticated = 0
        self.permission_denied = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler  # unknown method: gRPC answers UNIMPLEMENTED
        self.seen += 1
        method = handler_call_details.method
        needed = ROLE_NODE if method.startswith(_NODE_SERVICE) else ROLE_CLIENT
        token = token_from_metadata(handler_call_details.invocation_metadata)
        roles = self._tokens.roles_of(token) if token else frozenset()
        if not roles:
            self.unauthenticated += 1
            return _refusal(
                handler,
                grpc.StatusCode.UNAUTHENTICATED,
                common_pb2.ERROR_REASON_UNAUTHENTICATED,
                "missing or invalid EasyRemote token: on the gateway's machine it is found "
                "automatically; elsewhere set EASYREMOTE_TOKEN (see docs/security.md)",
            )
        if needed not in roles:
            self.permission_denied += 1
            other = ROLE_NODE if needed == ROLE_CLIENT else ROLE_CLIENT
            action = "register a node" if needed == ROLE_NODE else "call functions or query status"
            return _refusal(
                handler,
                grpc.StatusCode.PERMISSION_DENIED,
                common_pb2.ERROR_REASON_PERMISSION_DENIED,
                f"a {other} token cannot {action}; use the {needed} token",
            )
        return handler
