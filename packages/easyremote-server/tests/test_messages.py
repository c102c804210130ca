"""Gateway messages and logs: unknown functions, duplicate node ids, refused credentials."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import pytest

from easyremote.proto.v1 import node_pb2
from easyremote.server._node_servicer import duplicate_id_message
from easyremote.server._registry import NodeRecord, Registry
from easyremote.server._router import MAX_LISTED_FUNCTIONS, unknown_function_message
from easyremote.server._security import (
    AuthInterceptor,
    GatewayTokens,
    RefusalLog,
    check_token_arguments,
    resolve_tokens,
)

CLIENT_TOKEN = "client-secret-token-0123456789"
NODE_TOKEN = "node-secret-token-9876543210"
SERVICE = "/easyremote.proto.v1.ClientService/"
CONNECT = "/easyremote.proto.v1.NodeService/Connect"


def _node(registry: Registry, node_id: str, *functions: str, peer: str = "test") -> NodeRecord:
    hello = node_pb2.NodeHello(node_id=node_id, hostname=f"{node_id}-host")
    for name in functions:
        hello.functions.add(name=name)
    record = NodeRecord.from_hello(hello, None, peer)  # type: ignore[arg-type]
    registry.add(record)
    return record


# ------------------------------------------------------------ unknown functions


def test_unknown_function_suggests_the_closest_served_name() -> None:
    registry = Registry()
    _node(registry, "a", "train", "predict")
    assert unknown_function_message("trian", registry) == (
        "no connected node serves 'trian'; did you mean 'train'? Served: train, predict"
    )


def test_unknown_function_without_a_close_name_lists_what_is_served() -> None:
    registry = Registry()
    _node(registry, "a", "predict", "train")
    _node(registry, "b", "train")
    assert unknown_function_message("zzz", registry) == (
        "no connected node serves 'zzz'; served: predict, train"
    )


def test_unknown_function_list_is_bounded_and_closest_first() -> None:
    registry = Registry()
    names = [f"task_{index:03d}" for index in range(40)] + ["load_data"]
    _node(registry, "a", *names)
    message = unknown_function_message("load_dat", registry)
    assert message.startswith("no connected node serves 'load_dat'; did you mean 'load_data'?")
    listed = message.split("Served: ", 1)[1]
    assert listed.startswith("load_data, ")
    assert listed.endswith(f" and {len(names) - MAX_LISTED_FUNCTIONS} more")
    assert len(listed.split(" and ")[0].split(", ")) == MAX_LISTED_FUNCTIONS


def test_unknown_function_with_thousands_served_stays_bounded() -> None:
    registry = Registry()
    names = [f"function_number_{index}" for index in range(5000)]
    _node(registry, "a", *names)
    message = unknown_function_message("function_numbr_4321", registry)
    assert "did you mean 'function_number_" in message
    assert message.endswith(" and 4990 more")
    long_name = "x" * 10_000
    assert "did you mean" not in unknown_function_message(long_name, registry)


def test_unknown_function_with_no_nodes_says_so() -> None:
    assert unknown_function_message("train", Registry()) == (
        "no connected node serves 'train' (no nodes are connected)"
    )
    registry = Registry()
    _node(registry, "idle")
    assert unknown_function_message("train", registry) == (
        "no connected node serves 'train' (the connected nodes serve no functions)"
    )


# ------------------------------------------------------------ duplicate node ids


def test_duplicate_node_id_names_the_holder_and_how_to_choose_another() -> None:
    holder = _node(Registry(), "gpu-1", peer="ipv4:10.0.0.5:51234")
    assert duplicate_id_message(holder) == (
        "node id 'gpu-1' is already connected to this gateway (held by host 'gpu-1-host', "
        "peer ipv4:10.0.0.5:51234); give this node another id: --node-id on the CLI or "
        "ComputeNode(..., node_id=...)"
    )
    unknown = NodeRecord.from_hello(node_pb2.NodeHello(node_id="x"), None, "unknown")  # type: ignore[arg-type]
    assert duplicate_id_message(unknown).startswith(
        "node id 'x' is already connected to this gateway; give this node another id"
    )


# ------------------------------------------------------------------- tokens


def test_tokens_from_arguments_and_environment_are_stripped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EASYREMOTE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EASYREMOTE_CLIENT_TOKEN", f"  {CLIENT_TOKEN}\n")
    monkeypatch.setenv("EASYREMOTE_NODE_TOKEN", f"\t{NODE_TOKEN} ")
    tokens = resolve_tokens(True, None, None, None)
    assert (tokens.client, tokens.node) == (CLIENT_TOKEN, NODE_TOKEN)
    assert not (tmp_path / "home").exists()  # no local file was needed
    tokens = resolve_tokens(True, None, f" {NODE_TOKEN}x\n", None)
    assert tokens.client == f"{NODE_TOKEN}x"
    assert resolve_tokens(True, " both \n", None, None).client == "both"


def test_blank_tokens_count_as_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EASYREMOTE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EASYREMOTE_CLIENT_TOKEN", "   ")
    monkeypatch.setenv("EASYREMOTE_NODE_TOKEN", NODE_TOKEN)
    tokens = resolve_tokens(True, "  ", " \n", None)
    assert tokens.node == NODE_TOKEN
    assert tokens.client.strip() and tokens.client != NODE_TOKEN  # from the local file
    assert tokens.source == "local token file"
    check_token_arguments(False, " ", "\n", "")  # blank is not given: no contradiction
    with pytest.raises(ValueError, match="auth=False"):
        check_token_arguments(False, " x ", None, None)


# ---------------------------------------------------------------- interceptor


class _Details(NamedTuple):
    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


class _Aborted(Exception):
    pass


class _Context:
    def __init__(self, peer: str) -> None:
        self._peer = peer
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def peer(self) -> str:
        return self._peer

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise _Aborted


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _ok(request: Any, context: Any) -> str:
    return "ok"


def _call(
    interceptor: AuthInterceptor,
    method: str,
    metadata: tuple[tuple[str, str], ...],
    peer: str = "ipv4:10.1.2.3:40000",
) -> tuple[grpc.StatusCode | None, str]:
    """Runs one unary RPC through the interceptor: (refusal code or None, details)."""

    async def continuation(details: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(_ok)

    async def main() -> tuple[grpc.StatusCode | None, str]:
        handler = await interceptor.intercept_service(continuation, _Details(method, metadata))
        context = _Context(peer)
        try:
            result = await handler.unary_unary(b"", context)
        except _Aborted:
            return context.code, context.details
        assert result == "ok"
        return None, ""

    return asyncio.run(main())


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _interceptor(clock: _Clock | None = None, max_keys: int = 1000) -> AuthInterceptor:
    tokens = GatewayTokens(CLIENT_TOKEN, NODE_TOKEN, "test")
    return AuthInterceptor(tokens, RefusalLog(clock=clock or _Clock(), max_keys=max_keys))


def test_node_token_may_read_status_but_not_call() -> None:
    auth = _interceptor()
    for method in ("ListNodes", "GetNodeStatus"):
        assert _call(auth, SERVICE + method, _bearer(NODE_TOKEN)) == (None, "")
        assert _call(auth, SERVICE + method, _bearer(CLIENT_TOKEN)) == (None, "")
    for method in ("Session", "Call"):
        code, details = _call(auth, SERVICE + method, _bearer(NODE_TOKEN))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert details == "a node token cannot call functions; use the client token"
    code, details = _call(auth, CONNECT, _bearer(CLIENT_TOKEN))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details == "a client token cannot register a node; use the node token"
    assert _call(auth, CONNECT, _bearer(NODE_TOKEN)) == (None, "")
    assert auth.permission_denied == 3 and auth.unauthenticated == 0 and auth.seen == 8


def test_presented_tokens_are_compared_without_surrounding_whitespace() -> None:
    auth = _interceptor()
    padded = (("authorization", f"Bearer  {CLIENT_TOKEN} \t"),)
    assert _call(auth, SERVICE + "Call", padded) == (None, "")
    code, _ = _call(auth, SERVICE + "Call", (("authorization", "Bearer    "),))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_refusals_are_logged_with_peer_rpc_and_cause_never_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    auth = _interceptor()
    wrong = "wrong-token-do-not-log-me"
    with caplog.at_level(logging.WARNING, logger="easyremote.server"):
        _call(auth, SERVICE + "Call", ())
        _call(auth, SERVICE + "ListNodes", _bearer(wrong))
        _call(auth, SERVICE + "Session", _bearer(NODE_TOKEN))
    lines = [r.getMessage() for r in caplog.records if r.name == "easyremote.server"]
    assert lines == [
        f"refused {SERVICE}Call from ipv4:10.1.2.3:40000: missing token",
        f"refused {SERVICE}ListNodes from ipv4:10.1.2.3:40000: unknown token",
        f"refused {SERVICE}Session from ipv4:10.1.2.3:40000: "
        "a node token cannot call functions; use the client token",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)
    for secret in (wrong, NODE_TOKEN, CLIENT_TOKEN, wrong[:8], NODE_TOKEN[:8]):
        assert secret not in caplog.text
    assert (auth.unauthenticated, auth.permission_denied) == (2, 1)


def test_refusal_logs_are_rate_limited_per_host_and_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    auth = _interceptor(clock)
    with caplog.at_level(logging.WARNING, logger="easyremote.server"):
        for port in range(5):  # one host, many connections
            _call(auth, SERVICE + "Call", (), peer=f"ipv4:10.1.2.3:{40000 + port}")
        _call(auth, SERVICE + "Call", (), peer="ipv4:10.9.9.9:1")  # another host: own line
        _call(auth, SERVICE + "Call", _bearer("bad"))  # another cause: own line
        clock.now += 59.0
        _call(auth, SERVICE + "Call", ())  # still within the minute
        clock.now += 1.0
        _call(auth, SERVICE + "Call", (), peer="ipv4:10.1.2.3:50000")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4
    assert lines[1].endswith("from ipv4:10.9.9.9:1: missing token")
    assert lines[2].endswith(": unknown token")
    assert lines[3] == (
        f"refused {SERVICE}Call from ipv4:10.1.2.3:50000: missing token; 5 more "
        "refusal(s) from 10.1.2.3 for missing token were not logged in the last 60 s"
    )
    assert auth.unauthenticated == 9  # every refusal still counts


def test_refusal_log_table_is_bounded() -> None:
    clock = _Clock()
    log = RefusalLog(clock=clock, max_keys=3)
    for index in range(10):
        log.refused(f"ipv4:10.0.0.{index}:1", SERVICE + "Call", "missing token")
    assert len(log) == 3
    auth = _interceptor(clock, max_keys=2)
    for index in range(5):
        _call(auth, SERVICE + "Call", (), peer=f"ipv6:[fd00::{index}]:5")
    assert len(auth.refusals) == 2


def test_ipv6_peers_are_keyed_by_host(caplog: pytest.LogCaptureFixture) -> None:
    auth = _interceptor()
    with caplog.at_level(logging.WARNING, logger="easyremote.server"):
        _call(auth, SERVICE + "Call", (), peer="ipv6:[::1]:5000")
        _call(auth, SERVICE + "Call", (), peer="ipv6:[::1]:5001")
    assert len(caplog.records) == 1
