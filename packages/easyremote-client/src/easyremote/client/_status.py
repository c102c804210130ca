"""Typed views of the gateway's node status (convertible to dicts).

They live in ``easyremote.proto.status`` so that every role's command line
(the gateway's too, which cannot import the client) builds the same objects;
these are the same classes, re-exported.
"""

from easyremote.proto.status import FunctionStatus, GpuStatus, NodeStatus, ResourceStatus

__all__ = ["FunctionStatus", "GpuStatus", "NodeStatus", "ResourceStatus"]
