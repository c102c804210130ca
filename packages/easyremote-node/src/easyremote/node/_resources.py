"""Live resources of the host: CPU and memory (psutil), GPUs (NVML).

NVML comes from the ``nvidia-ml-py`` distribution (``import pynvml``). A host
without the NVIDIA driver reports zero GPUs; probing never raises.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psutil

from easyremote.proto.v1 import common_pb2

logger = logging.getLogger("easyremote.node")


@dataclass(frozen=True)
class GpuSnapshot:
    """One GPU as probed."""

    index: int
    name: str
    uuid: str = ""
    memory_total_bytes: int = 0
    memory_used_bytes: int = 0
    memory_free_bytes: int = 0
    utilization_percent: float = 0.0
    temperature_c: float = 0.0


@dataclass(frozen=True)
class ResourceSnapshot:
    """What a node has and uses, at one moment."""

    cpu_count: int
    cpu_percent: float = 0.0
    memory_total_bytes: int = 0
    memory_available_bytes: int = 0
    load_average_1m: float = 0.0
    gpus: Sequence[GpuSnapshot] = field(default_factory=tuple)

    def to_proto(self) -> common_pb2.Resources:
        resources = common_pb2.Resources(
            cpu_count=self.cpu_count,
            cpu_percent=self.cpu_percent,
            memory_total_bytes=self.memory_total_bytes,
            memory_available_bytes=self.memory_available_bytes,
            load_average_1m=self.load_average_1m,
        )
        for gpu in self.gpus:
            resources.gpus.add(
                index=gpu.index,
                name=gpu.name,
                uuid=gpu.uuid,
                memory_total_bytes=gpu.memory_total_bytes,
                memory_used_bytes=gpu.memory_used_bytes,
                memory_free_bytes=gpu.memory_free_bytes,
                utilization_percent=gpu.utilization_percent,
                temperature_c=gpu.temperature_c,
            )
        return resources


class ResourceProbe(Protocol):
    """Anything that can report a node's resources (pluggable for tests and exotic hosts)."""

    def snapshot(self) -> ResourceSnapshot:
        """Returns the current resources; must not raise."""
        ...


class StaticProbe:
    """Reports fixed, declared resources."""

    def __init__(self, snapshot: ResourceSnapshot) -> None:
        self._snapshot = snapshot

    def snapshot(self) -> ResourceSnapshot:
        return self._snapshot


class NvmlReader:
    """Reads GPUs through NVML; zero GPUs when NVML or the driver is missing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nvml: Any = None
        self._failed = False

    def _init(self) -> Any:
        if self._nvml is not None or self._failed:
            return self._nvml
        try:
            # Imported lazily: the module is harmless, but only hosts that
            # probe GPUs should pay for loading it.
            import pynvml  # noqa: PLC0415

            pynvml.nvmlInit()
        except Exception as exc:  # noqa: BLE001 - no driver/library means no GPUs
            logger.debug("NVML unavailable, reporting no GPUs: %s", exc)
            self._failed = True
            return None
        self._nvml = pynvml
        return pynvml

    def gpus(self) -> tuple[GpuSnapshot, ...]:
        with self._lock:
            nvml = self._init()
            if nvml is None:
                return ()
            try:
                count = nvml.nvmlDeviceGetCount()
            except Exception as exc:  # noqa: BLE001
                logger.debug("NVML device count failed: %s", exc)
                return ()
            return tuple(_read_gpu(nvml, index) for index in range(count))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_gpu(nvml: Any, index: int) -> GpuSnapshot:
    # Each reading is optional: some GPUs (MIG slices, older boards) refuse some.
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    values: dict[str, Any] = {"index": index, "name": f"GPU {index}"}
    try:
        values["name"] = _text(nvml.nvmlDeviceGetName(handle))
    except Exception:  # noqa: BLE001
        pass
    try:
        values["uuid"] = _text(nvml.nvmlDeviceGetUUID(handle))
    except Exception:  # noqa: BLE001
        pass
    try:
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        values["memory_total_bytes"] = int(memory.total)
        values["memory_used_bytes"] = int(memory.used)
        values["memory_free_bytes"] = int(memory.free)
    except Exception:  # noqa: BLE001
        pass
    try:
        values["utilization_percent"] = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except Exception:  # noqa: BLE001
        pass
    try:
        values["temperature_c"] = float(
            nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
        )
    except Exception:  # noqa: BLE001
        pass
    return GpuSnapshot(**values)


class SystemProbe:
    """The real host: psutil for CPU and memory, NVML for GPUs."""

    def __init__(self, nvml: NvmlReader | None = None) -> None:
        self._nvml = nvml or NvmlReader()
        # The first cpu_percent(None) call only primes psutil's counters.
        psutil.cpu_percent(interval=None)

    def snapshot(self) -> ResourceSnapshot:
        memory = psutil.virtual_memory()
        try:
            load = os.getloadavg()[0]
        except (OSError, AttributeError):
            load = 0.0
        return ResourceSnapshot(
            cpu_count=psutil.cpu_count(logical=True) or 1,
            cpu_percent=float(psutil.cpu_percent(interval=None)),
            memory_total_bytes=int(memory.total),
            memory_available_bytes=int(memory.available),
            load_average_1m=float(load),
            gpus=self._nvml.gpus(),
        )
