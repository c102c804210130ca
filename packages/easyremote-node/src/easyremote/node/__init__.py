"""EasyRemote compute node: serve Python functions through a gateway.

A node dials OUT to the gateway (so it works behind NAT), registers its
functions, reports live resources (psutil, NVML) and runs the calls it is sent.

Example:
    >>> from easyremote.node import ComputeNode
    >>> node = ComputeNode("localhost:8080", "gpu-node-1")
    >>> @node.register
    ... def add(a, b):
    ...     return a + b
    >>> node.serve()
"""

from easyremote.node._compute_node import ComputeNode, NodeError
from easyremote.node._context import CallContext, CancellationRequested, current_call
from easyremote.node._functions import FunctionKind, RegisteredFunction
from easyremote.node._resources import (
    GpuSnapshot,
    NvmlReader,
    ResourceProbe,
    ResourceSnapshot,
    StaticProbe,
    SystemProbe,
)
from easyremote.node.version import __version__

__all__ = [
    "CancellationRequested",
    "CallContext",
    "ComputeNode",
    "FunctionKind",
    "GpuSnapshot",
    "NodeError",
    "NvmlReader",
    "RegisteredFunction",
    "ResourceProbe",
    "ResourceSnapshot",
    "StaticProbe",
    "SystemProbe",
    "__version__",
    "current_call",
]
