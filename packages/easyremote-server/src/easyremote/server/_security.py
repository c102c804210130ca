"""Who may do what at the gateway: tokens with roles, checked before any handler runs.

Every RPC carries a bearer token. The node role may open ``NodeService``
streams and use the two read-only status RPCs (so ``status`` works on a machine
that holds only the node token); the client role may use all of
``ClientService`` (calls and status). A missing or unknown token is
``UNAUTHENTICATED``; a valid token of the other role is ``PERMISSION_DENIED``.
Nothing of the request is read before that. Refusals are logged (rate-limited,
never with the token).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import OrderedDict
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
from easyremote.server._limits import peer_host
from easyremote.server._wire import peer_of

logger = logging.getLogger("easyremote.server")

ENV_CLIENT_TOKEN = "EASYREMOTE_CLIENT_TOKEN"
ENV_NODE_TOKEN = "EASYREMOTE_NODE_TOKEN"
_NODE_SERVICE = "/easyremote.proto.v1.NodeService/"
# Read-only status RPCs a node token may use as well as a client token.
_STATUS_METHODS = frozenset(
    {
        "/easyremote.proto.v1.ClientService/ListNodes",
        "/easyremote.proto.v1.ClientService/GetNodeStatus",
    }
)
# A refused peer is logged at most once per this many seconds per cause...
REFUSAL_LOG_INTERVAL_S = 60.0
# ...and this many (peer host, cause) pairs are remembered, the oldest dropped.
REFUSAL_LOG_MAX_KEYS = 1000
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


def clean_token(value: str | None) -> str:
    """``value`` without surrounding whitespace; None and blank mean no token ("")."""
    return value.strip() if value else ""


def check_token_arguments(
    auth: bool, token: str | None, client_token: str | None, node_token: str | None
) -> None:
    """Raises ValueError for token arguments that contradict each other.

    Blank arguments count as not given.
    """
    token, client_token, node_token = map(clean_token, (token, client_token, node_token))
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
    Surrounding whitespace (a newline pasted into an env file, say) is dropped
    from arguments and variables; one blank after that counts as unset.
    """
    check_token_arguments(auth, token, client_token, node_token)
    if not auth:
        return GatewayTokens()
    token = clean_token(token)
    if token:
        return GatewayTokens(token, token, "token= (one credential for both roles)")
    client = clean_token(client_token) or clean_token(os.environ.get(ENV_CLIENT_TOKEN))
    node = clean_token(node_token) or clean_token(os.environ.get(ENV_NODE_TOKEN))
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


@dataclass
class _Reported:
    """When a (peer host, cause) was last logged, and refusals since then."""

    at: float
    suppressed: int = 0


class RefusalLog:
    """Logs refused credentials at WARNING, at most once per interval per (host, cause).

    The line after a quiet spell says how many refusals were not logged. The
    token is never part of a line: only the peer, the RPC and the cause are.

    Args:
        interval_s: Least time between two lines for one peer host and cause.
        max_keys: (host, cause) pairs remembered; the oldest are dropped.
        clock: Monotonic time source (tests pass their own).
    """

    def __init__(
        self,
        interval_s: float = REFUSAL_LOG_INTERVAL_S,
        max_keys: int = REFUSAL_LOG_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval_s
        self._max_keys = max_keys
        self._clock = clock
        self._reported: OrderedDict[tuple[str, str], _Reported] = OrderedDict()

    def __len__(self) -> int:
        return len(self._reported)

    def refused(self, peer: str, method: str, cause: str, detail: str = "") -> None:
        """Notes one refusal of ``method`` for ``peer``; logs it unless one just was."""
        host = peer_host(peer)
        key = (host, cause)
        now = self._clock()
        reported = self._reported.get(key)
        if reported is not None and now - reported.at < self._interval:
            reported.suppressed += 1
            return
        suppressed = reported.suppressed if reported is not None else 0
        self._reported[key] = _Reported(now)
        self._reported.move_to_end(key)
        while len(self._reported) > self._max_keys:
            self._reported.popitem(last=False)
        line = f"refused {method} from {peer}: {cause}"
        if detail:
            line += f" ({detail})"
        if suppressed:
            line += (
                f"; {suppressed} more refusal(s) from {host} for {cause} "
                f"were not logged in the last {self._interval:g} s"
            )
        logger.warning("%s", line)


def _refusal(
    handler: _Handler,
    code: grpc.StatusCode,
    reason: int,
    message: str,
    on_refuse: Callable[[str], None],
) -> _Handler:
    """A handler of the same shape as ``handler`` that only refuses.

    ``on_refuse`` gets the caller's peer address, known only inside the RPC.
    """

    streaming_in = handler.request_streaming

    async def refuse(request: Any, context: aio.ServicerContext[Any, Any]) -> None:
        on_refuse(peer_of(context))
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

    def __init__(self, tokens: GatewayTokens, refusals: RefusalLog | None = None) -> None:
        self._tokens = tokens
        # RPCs seen, and refused for each cause (for tests and operators).
        self.seen = 0
        self.unauthenticated = 0
        self.permission_denied = 0
        self.refusals = refusals if refusals is not None else RefusalLog()

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
        token = clean_token(token_from_metadata(handler_call_details.invocation_metadata))
        roles = self._tokens.roles_of(token) if token else frozenset()
        if not roles:
            self.unauthenticated += 1
            cause = "unknown token" if token else "missing token"
            return _refusal(
                handler,
                grpc.StatusCode.UNAUTHENTICATED,
                common_pb2.ERROR_REASON_UNAUTHENTICATED,
                "missing or invalid EasyRemote token: on the gateway's machine it is found "
                "automatically; elsewhere set EASYREMOTE_TOKEN (see docs/security.md)",
                lambda peer: self.refusals.refused(peer, method, cause),
            )
        allowed = _roles_for(method)
        if roles.isdisjoint(allowed):
            self.permission_denied += 1
            message = _wrong_role_message(roles, allowed)
            return _refusal(
                handler,
                grpc.StatusCode.PERMISSION_DENIED,
                common_pb2.ERROR_REASON_PERMISSION_DENIED,
                message,
                # The message is the cause: a node token used to call and a
                # client token used to register are different mistakes, each
                # rate-limited on its own.
                lambda peer: self.refusals.refused(peer, method, message),
            )
        return handler


_NODE_ONLY = frozenset({ROLE_NODE})
_CLIENT_ONLY = frozenset({ROLE_CLIENT})
_EITHER_ROLE = frozenset({ROLE_CLIENT, ROLE_NODE})


def _roles_for(method: str) -> frozenset[str]:
    """The roles whose tokens may use ``method``."""
    if method.startswith(_NODE_SERVICE):
        return _NODE_ONLY
    if method in _STATUS_METHODS:
        return _EITHER_ROLE
    return _CLIENT_ONLY


def _wrong_role_message(roles: frozenset[str], allowed: frozenset[str]) -> str:
    # Tokens of both roles are never equal (resolve_tokens), so a refused
    # token holds exactly one role, and ``allowed`` exactly the other.
    held = ROLE_NODE if ROLE_NODE in roles else ROLE_CLIENT
    needed = ROLE_NODE if ROLE_NODE in allowed else ROLE_CLIENT
    action = "register a node" if needed == ROLE_NODE else "call functions"
    return f"a {held} token cannot {action}; use the {needed} token"
