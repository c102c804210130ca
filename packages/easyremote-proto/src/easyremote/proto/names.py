"""Names users type for protocol enums (strategies, node states)."""

from __future__ import annotations

from collections.abc import Mapping

from easyremote.proto.v1 import client_pb2, common_pb2

_S = common_pb2.Strategy

STRATEGY_BY_NAME: Mapping[str, int] = {
    "round_robin": _S.STRATEGY_ROUND_ROBIN,
    "resource_aware": _S.STRATEGY_RESOURCE_AWARE,
    "latency_based": _S.STRATEGY_LATENCY_BASED,
    "cost_aware": _S.STRATEGY_COST_AWARE,
    "smart_adaptive": _S.STRATEGY_SMART_ADAPTIVE,
}
_NAME_BY_STRATEGY = {value: name for name, value in STRATEGY_BY_NAME.items()}

_N = client_pb2.NodeState
_NODE_STATE_NAMES: Mapping[int, str] = {
    _N.NODE_STATE_UNSPECIFIED: "unknown",
    _N.NODE_STATE_HEALTHY: "healthy",
    _N.NODE_STATE_SUSPECT: "suspect",
    _N.NODE_STATE_DRAINING: "draining",
}


def strategy_from_name(name: str | None) -> int:
    """Returns the Strategy enum value for a user-facing name.

    ``None`` or ``""`` selects the gateway's default.

    Raises:
        ValueError: ``name`` is not one of the five strategies.
    """
    if not name:
        return _S.STRATEGY_UNSPECIFIED
    key = name.strip().lower().replace("-", "_")
    try:
        return STRATEGY_BY_NAME[key]
    except KeyError:
        choices = ", ".join(STRATEGY_BY_NAME)
        raise ValueError(f"unknown strategy {name!r}; choose one of: {choices}") from None


def strategy_name(value: int) -> str:
    """Returns the user-facing name of a Strategy value ("default" if unset)."""
    return _NAME_BY_STRATEGY.get(value, "default")


def node_state_name(value: int) -> str:
    """Returns the user-facing name of a NodeState value."""
    return _NODE_STATE_NAMES.get(value, "unknown")
