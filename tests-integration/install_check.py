"""Proves the three install stories from freshly built wheels.

Usage: install_check.py DIST_DIR  (run by `nox -s tests` and `nox -s install-check`)

1. A venv with only easyremote-server has no cloudpickle, psutil or NVML, and
   its gateway starts.
2. A venv with only easyremote-client imports and calls a function through a
   gateway and a node running elsewhere (the nox venv).
3. A venv with the meta package imports the seed API.

Third-party dependencies come from the package index; our own distributions
only from DIST_DIR (--no-index), so a same-named upload elsewhere can never
stand in for them.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import venv
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from _procs import Cluster

THIRD_PARTY = {
    "server": ["grpcio>=1.66.2", "protobuf>=5.27.2,<8", "click>=8.0", "cryptography>=42"],
    "client": ["grpcio>=1.66.2", "protobuf>=5.27.2,<8", "cloudpickle>=2.0"],
    "meta": [
        "grpcio>=1.66.2",
        "protobuf>=5.27.2,<8",
        "click>=8.0",
        "cryptography>=42",
        "cloudpickle>=2.0",
        "psutil>=5.8",
        "nvidia-ml-py>=12.535",
    ],
}
DISTRIBUTION = {"server": "easyremote-server", "client": "easyremote-client", "meta": "easyremote"}


def make_env(root: Path, story: str, dist: Path) -> Path:
    target = root / story
    venv.EnvBuilder(with_pip=True).create(target)
    python = target / "bin" / "python"
    quiet = ["-q", "--disable-pip-version-check"]
    subprocess.run([python, "-m", "pip", "install", *quiet, *THIRD_PARTY[story]], check=True)
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            *quiet,
            "--no-index",
            "--find-links",
            dist,
            DISTRIBUTION[story],
        ],
        check=True,
    )
    return python


def run(python: Path, code: str) -> str:
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise SystemExit(f"install check failed:\n{code}\n{result.stdout}\n{result.stderr}")
    return result.stdout.strip()


SERVER_CHECK = """
import importlib.util, sys
from easyremote.server import Server
missing = [m for m in ("cloudpickle", "psutil", "pynvml") if importlib.util.find_spec(m) is None]
assert missing == ["cloudpickle", "psutil", "pynvml"], f"installed but must not be: {missing}"
for name in ("easyremote.client", "easyremote.node"):
    assert importlib.util.find_spec(name) is None, name
gateway = Server(port=0).start_background()
gateway.stop()
print("server-only OK")
"""

CLIENT_CHECK = """
import importlib.util, sys
from easyremote.client import Client
assert importlib.util.find_spec("easyremote.server") is None
assert importlib.util.find_spec("psutil") is None
with Client(sys.argv[1] if len(sys.argv) > 1 else "{address}") as client:
    value, node = client.call("inc", 41)
assert value == 42, value
print("client-only OK", node)
"""

META_CHECK = """
from easyremote import Server, ComputeNode, Client, remote
from easyremote import NoAvailableNodesError, RemoteExecutionError
from easyremote.core.nodes.client import set_default_gateway, call
print("meta OK")
"""


def main() -> int:
    dist = Path(sys.argv[1]).resolve()
    wheels = sorted(p.name for p in dist.glob("*.whl"))
    print("wheels:", ", ".join(wheels))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(run(make_env(root, "server", dist), SERVER_CHECK))
        client_python = make_env(root, "client", dist)
        with Cluster() as cluster:
            cluster.start_gateway()
            cluster.start_node("install-check-node")
            cluster.wait_for_nodes(["install-check-node"])
            print(run(client_python, CLIENT_CHECK.replace("{address}", cluster.address)))
        print(run(make_env(root, "meta", dist), META_CHECK))
    return 0


if __name__ == "__main__":
    sys.exit(main())
