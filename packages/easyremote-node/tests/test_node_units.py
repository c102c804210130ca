"""Function kinds, registration options and resource probing."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from easyremote.node import (
    ComputeNode,
    FunctionKind,
    GpuSnapshot,
    NvmlReader,
    ResourceSnapshot,
    StaticProbe,
    SystemProbe,
)
from easyremote.node._functions import kind_of


def test_kind_of_every_function_shape() -> None:
    def plain() -> int:
        return 1

    async def coro() -> int:
        return 1

    def gen():  # type: ignore[no-untyped-def]
        yield 1

    async def agen():  # type: ignore[no-untyped-def]
        yield 1

    assert kind_of(plain) is FunctionKind.SYNC
    assert kind_of(coro) is FunctionKind.ASYNC
    assert kind_of(gen) is FunctionKind.SYNC_GENERATOR
    assert kind_of(agen) is FunctionKind.ASYNC_GENERATOR


def test_register_bare_and_with_options() -> None:
    node = ComputeNode("localhost:1", "n")

    @node.register
    def a() -> None: ...

    @node.register(
        name="renamed", load_balancing=False, max_concurrency=2, idempotent=False, timeout=3
    )
    def b() -> None: ...

    assert a is not None and b is not None
    spec = node.functions["renamed"].to_spec()
    assert (spec.load_balancing, spec.max_concurrency, spec.idempotent, spec.timeout_ms) == (
        False,
        2,
        False,
        3000,
    )
    assert node.functions["a"].to_spec().load_balancing is True
    with pytest.raises(ValueError):
        node.register(max_concurrency=0)(a)


def test_cpu_only_host_reports_zero_gpus_through_the_real_nvml_path() -> None:
    # On CI there is no NVIDIA driver: nvmlInit fails and that means zero GPUs.
    snapshot = SystemProbe().snapshot()
    assert snapshot.cpu_count >= 1
    assert snapshot.memory_total_bytes > 0
    try:
        import pynvml

        pynvml.nvmlInit()
        pytest.skip("this host has an NVIDIA driver")
    except Exception:  # noqa: BLE001
        assert snapshot.gpus == ()


def test_nvml_readings_are_mapped(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.SimpleNamespace(
        NVML_TEMPERATURE_GPU=0,
        nvmlInit=lambda: None,
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: b"NVIDIA H100",
        nvmlDeviceGetUUID=lambda h: "GPU-1234",
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=80, used=30, free=50),
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=42),
        nvmlDeviceGetTemperature=lambda h, kind: 61,
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    (gpu,) = NvmlReader().gpus()
    assert gpu == GpuSnapshot(0, "NVIDIA H100", "GPU-1234", 80, 30, 50, 42.0, 61.0)


def test_nvml_failures_mean_zero_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> Any:
        raise RuntimeError("driver not loaded")

    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=broken))
    assert NvmlReader().gpus() == ()


def test_static_probe_declares_resources() -> None:
    snapshot = ResourceSnapshot(cpu_count=64, gpus=(GpuSnapshot(0, "A100"),))
    proto = StaticProbe(snapshot).snapshot().to_proto()
    assert proto.cpu_count == 64 and proto.gpus[0].name == "A100"
