"""Call options validation and the error table."""

from __future__ import annotations

import grpc
import pytest

from easyremote.client import (
    CallTimeoutError,
    EasyRemoteError,
    GatewayUnavailableError,
    InvalidArgumentError,
    NodeNotFoundError,
    RemoteExecutionError,
)
from easyremote.client._errors import error_from_rpc, error_from_wire, exception_class
from easyremote.client._options import build_options
from easyremote.proto import REASON_METADATA_KEY
from easyremote.proto.v1 import common_pb2


def test_build_options_maps_every_key() -> None:
    options = build_options(
        "train",
        {
            "strategy": "cost_aware",
            "cost_limit": 5.0,
            "timeout": 2.5,
            "wait_for_node": 3,
            "requirements": {
                "gpu_required": True,
                "min_gpu_memory_gb": 8,
                "tags": ["a100"],
                "node_ids": ["n1"],
            },
        },
    )
    assert options.strategy == common_pb2.STRATEGY_COST_AWARE
    assert options.cost_limit == 5.0 and options.timeout_ms == 2500
    assert options.wait_for_node_s == 3.0
    assert options.requirements.gpu_required and list(options.requirements.tags) == ["a100"]


@pytest.mark.parametrize(
    "config",
    [
        {"priority": 1},
        {"strategy": "fastest"},
        {"requirements": {"gpus": 1}},
        {"timeout": -1},
        {"cost_limit": "x"},
        {"wait_for_node": -1},
    ],
)
def test_bad_config_is_rejected_clearly(config: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError):
        build_options("f", config)


def test_every_reason_maps_to_a_class_with_matching_status() -> None:
    for reason in common_pb2.ErrorReason.values():
        cls = exception_class(reason)
        assert issubclass(cls, EasyRemoteError)
        if cls is not EasyRemoteError:
            assert cls.reason == reason


def test_timeout_error_is_also_builtin_timeout_error() -> None:
    error = error_from_wire(
        common_pb2.Error(reason=common_pb2.ERROR_REASON_DEADLINE_EXCEEDED, message="late")
    )
    assert isinstance(error, CallTimeoutError) and isinstance(error, TimeoutError)


def test_remote_error_keeps_type_message_and_traceback() -> None:
    error = error_from_wire(
        common_pb2.Error(
            reason=common_pb2.ERROR_REASON_REMOTE_EXCEPTION,
            message="bad",
            remote_type="ValueError",
            remote_traceback="Traceback ...",
            node_id="n1",
        )
    )
    assert isinstance(error, RemoteExecutionError)
    assert (error.remote_type, error.message, error.node_id) == ("ValueError", "bad", "n1")
    assert "ValueError: bad" in str(error)


class _RpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, reason: str | None) -> None:
        self._code, self._details, self._reason = code, details, reason

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return ((REASON_METADATA_KEY, self._reason),) if self._reason else ()


def test_grpc_errors_map_back_with_cause() -> None:
    original = _RpcError(
        grpc.StatusCode.NOT_FOUND, "node 'x' is not connected", "ERROR_REASON_NODE_NOT_FOUND"
    )
    error = error_from_rpc(original)
    assert isinstance(error, NodeNotFoundError) and error.__cause__ is original
    unavailable = error_from_rpc(_RpcError(grpc.StatusCode.UNAVAILABLE, "down", None))
    assert isinstance(unavailable, GatewayUnavailableError) and isinstance(
        unavailable, ConnectionError
    )
