"""Turns what users pass (config dicts, keyword options) into CallOptions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from easyremote.client._errors import InvalidArgumentError
from easyremote.proto import strategy_from_name
from easyremote.proto.v1 import client_pb2

CONFIG_KEYS = frozenset(
    {"strategy", "requirements", "cost_limit", "timeout", "node_id", "wait_for_node"}
)
REQUIREMENT_KEYS = frozenset(
    {"gpu_required", "min_gpu_memory_gb", "min_memory_gb", "min_cpu_cores", "tags", "node_ids"}
)


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise InvalidArgumentError(f"{key} must be a non-negative number, not {value!r}")
    return float(value)


def _names(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    try:
        names = [str(item) for item in value]
    except TypeError:
        raise InvalidArgumentError(f"{key} must be a list of strings, not {value!r}") from None
    return names


def build_options(
    function: str,
    config: Mapping[str, Any] | None = None,
    *,
    node_id: str | None = None,
    stream: bool = False,
    default_timeout: float | None = None,
) -> client_pb2.CallOptions:
    """Validates a ``call_with_config`` config and builds the wire options.

    Raises:
        InvalidArgumentError: An unknown key or a value of the wrong type.
    """
    if not isinstance(function, str) or not function:
        raise InvalidArgumentError(f"function name must be a non-empty string, not {function!r}")
    config = dict(config or {})
    unknown = set(config) - CONFIG_KEYS
    if unknown:
        raise InvalidArgumentError(
            f"unknown call option(s) {sorted(unknown)}; accepted: {sorted(CONFIG_KEYS)}"
        )
    options = client_pb2.CallOptions(function=function, stream=stream)
    try:
        options.strategy = strategy_from_name(config.get("strategy"))  # type: ignore[assignment]
    except ValueError as exc:
        raise InvalidArgumentError(str(exc)) from None
    pinned = node_id or config.get("node_id")
    if pinned:
        options.node_id = str(pinned)
    if config.get("cost_limit") is not None:
        options.cost_limit = _number(config["cost_limit"], "cost_limit")
    if config.get("wait_for_node") is not None:
        options.wait_for_node_s = _number(config["wait_for_node"], "wait_for_node")
    timeout = config.get("timeout", default_timeout)
    if timeout is not None:
        seconds = _number(timeout, "timeout")
        if seconds == 0:
            raise InvalidArgumentError("timeout must be positive (use None for no deadline)")
        options.timeout_ms = max(1, int(seconds * 1000))
    requirements = config.get("requirements") or {}
    if not isinstance(requirements, Mapping):
        raise InvalidArgumentError(f"requirements must be a dict, not {requirements!r}")
    unknown = set(requirements) - REQUIREMENT_KEYS
    if unknown:
        raise InvalidArgumentError(
            f"unknown requirement(s) {sorted(unknown)}; accepted: {sorted(REQUIREMENT_KEYS)}"
        )
    req = options.requirements
    req.gpu_required = bool(requirements.get("gpu_required", False))
    if "min_gpu_memory_gb" in requirements:
        req.min_gpu_memory_gb = _number(requirements["min_gpu_memory_gb"], "min_gpu_memory_gb")
    if "min_memory_gb" in requirements:
        req.min_memory_gb = _number(requirements["min_memory_gb"], "min_memory_gb")
    if "min_cpu_cores" in requirements:
        req.min_cpu_cores = int(_number(requirements["min_cpu_cores"], "min_cpu_cores"))
    if "tags" in requirements:
        req.tags.extend(_names(requirements["tags"], "tags"))
    if "node_ids" in requirements:
        req.node_ids.extend(_names(requirements["node_ids"], "node_ids"))
    return options
