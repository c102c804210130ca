"""A client whose argument type exists only in its own __main__."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from easyremote import Client


@dataclass
class Job:
    name: str
    size: int

    def weight(self) -> int:
        return self.size * 2


job = Job("resnet", 21)
with Client(sys.argv[1]) as client:
    echoed = client.call("echo", job)
    described = client.call("describe", job)
assert echoed == job, (echoed, job)
assert echoed.weight() == 42
assert described == "Job:Job(name='resnet', size=21)", described
print("OK", described, flush=True)
