"""Runs README's install commands word for word, then proves each install story.

Usage: install_check.py DIST_DIR  (run by `nox -s tests` and `nox -s install-check`,
which build DIST_DIR with the recipe of `nox -s dist`)

README's Install section holds the commands in the ```bash block after the
marker ``<!-- install-commands``: a venv line, the build line, and one
``python3 -m pip install --find-links dist NAME`` line per story. For each
story, in a new folder holding a copy of DIST_DIR as ``dist``, with a new empty
HOME and EASYREMOTE_HOME unset, bash runs the venv line and the story's line
exactly as written. ``python3`` there is the interpreter running this check
(a shim on PATH) until the venv line activates the new venv. The build line is
not run: the nox session has just built DIST_DIR the same way.

Dependencies come from the package index as a user's would, and the index
also holds the seed's ``easyremote`` 2.x, so the meta story proves that
``--find-links dist`` installs our 3.x over it. Then, per story:

* server: no cloudpickle, psutil or NVML; ``easyremote-server --help``.
* node: ``pynvml`` comes from nvidia-ml-py (no ``pynvml`` distribution);
  ``easyremote-node --help``.
* client: no server, no psutil; ``easyremote-client --help``.
* meta: the seed API and ``easyremote --help``.

Last, the banners: ``easyremote-server`` from the server venv, and every
command its "Next steps" print run as printed in the venv of the role it
names (a node from the node venv, Python lines from the client venv, status
from the server venv), then the node banner's steps, ``easyremote-client
status``, and a call from the meta venv, all on loopback with the token the
gateway writes under the shared fresh HOME.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
README = ROOT / "README.md"
MARKER = "<!-- install-commands"
sys.path.insert(0, str(HERE))

from _procs import Proc

INSTALL_PREFIX = ["python3", "-m", "pip", "install", "--find-links", "dist"]
BUILD_LINE = ["python3", "-m", "pip", "install", "nox", "&&", "python3", "-m", "nox", "-s", "dist"]
VENV_LINE = ["python3", "-m", "venv", ".venv", "&&", ".", ".venv/bin/activate"]
INSTALL_TIMEOUT_S = 600
CHECK_TIMEOUT_S = 120


@dataclasses.dataclass(frozen=True)
class Story:
    """What one install line must (and must not) bring."""

    ours: tuple[str, ...]  # our distributions, at the versions in DIST_DIR
    imports: tuple[str, ...]
    absent_modules: tuple[str, ...] = ()
    absent_distributions: tuple[str, ...] = ()
    owners: dict[str, str] = dataclasses.field(default_factory=dict)  # module -> distribution
    script: str | None = None  # a console script that must answer --help


PROTO = "easyremote-proto"
STORIES = {
    "easyremote-server": Story(
        ours=(PROTO, "easyremote-server"),
        imports=("from easyremote.server import Server",),
        absent_modules=("cloudpickle", "psutil", "pynvml", "easyremote.client", "easyremote.node"),
        absent_distributions=("nvidia-ml-py", "pynvml"),
        script="easyremote-server",
    ),
    "easyremote-node": Story(
        ours=(PROTO, "easyremote-node"),
        imports=("from easyremote.node import ComputeNode", "import pynvml"),
        absent_modules=("easyremote.server", "easyremote.client"),
        # nvidia-ml-py provides `import pynvml`; the `pynvml` distribution is deprecated.
        absent_distributions=("pynvml",),
        owners={"pynvml": "nvidia-ml-py"},
        script="easyremote-node",
    ),
    "easyremote-client": Story(
        ours=(PROTO, "easyremote-client"),
        imports=("from easyremote.client import Client",),
        absent_modules=("easyremote.server", "easyremote.node", "psutil"),
        script="easyremote-client",
    ),
    "easyremote": Story(
        ours=(PROTO, "easyremote-server", "easyremote-node", "easyremote-client", "easyremote"),
        imports=(
            "from easyremote import Server, ComputeNode, Client, remote",
            "from easyremote import NoAvailableNodesError, RemoteExecutionError",
            "from easyremote.core.nodes.client import set_default_gateway, call",
        ),
        script="easyremote",
    ),
}

# Runs inside a story's venv; argv[1] is the JSON of the story's expectations.
PROBE = """
import importlib.metadata as md, importlib.util, json, re, sys
spec = json.loads(sys.argv[1])
found = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version for d in md.distributions()}
ours = {n: v for n, v in found.items() if n.startswith("easyremote")}
assert ours == spec["ours"], f"installed {ours}, expected {spec['ours']}"
for name in spec["absent_distributions"]:
    assert name not in found, f"distribution {name} is installed but must not be"
for name in spec["absent_modules"]:
    assert importlib.util.find_spec(name) is None, f"{name} is importable but must not be"
for statement in spec["imports"]:
    exec(statement, {})
owners = md.packages_distributions()
for module, owner in spec["owners"].items():
    assert owners.get(module) == [owner], f"{module} comes from {owners.get(module)}, not {owner}"
print(json.dumps(ours))
"""


def fail(message: str) -> None:
    raise SystemExit(f"install check failed: {message}")


def read_commands(readme: Path) -> tuple[str, dict[str, str]]:
    """The venv line and each story's install line, as README writes them."""
    lines = readme.read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(MARKER)]
    if len(starts) != 1:
        fail(f"{readme} needs exactly one {MARKER!r} marker, found {len(starts)}")
    first = starts[0] + 1
    if first >= len(lines) or lines[first].strip() != "```bash":
        fail(f"the line after {MARKER!r} in {readme} must open a ```bash block")
    venv_line, build_seen, installs = "", False, {}
    for line in lines[first + 1 :]:
        if line.strip() == "```":
            break
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words == VENV_LINE:
            venv_line = line
        elif words == BUILD_LINE:
            build_seen = True
        elif words[:-1] == INSTALL_PREFIX and words[-1] in STORIES:
            installs[words[-1]] = line
        else:
            # A line this check doesn't know would go untested: refuse it.
            fail(f"unexpected line in README's install commands: {line!r}")
    else:
        fail(f"the ```bash block after {MARKER!r} in {readme} is not closed")
    missing = sorted(set(STORIES) - set(installs))
    if not venv_line or not build_seen or missing:
        fail(
            f"README's install commands need {' '.join(VENV_LINE)!r}, "
            f"{' '.join(BUILD_LINE)!r} and one install line per story (missing: {missing})"
        )
    return venv_line, installs


def built_versions(dist: Path) -> dict[str, str]:
    """Distribution name -> version, from the wheel file names in DIST_DIR."""
    versions = {}
    for wheel in dist.glob("*.whl"):
        name, version = wheel.name.split("-")[:2]
        versions[name.replace("_", "-")] = version
    return versions


def clean_env(home: Path, shims: Path) -> dict[str, str]:
    """This process's environment as a fresh user's shell would have it."""
    env = dict(os.environ)
    for name in ("EASYREMOTE_HOME", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "EASYREMOTE_TOKEN"):
        env.pop(name, None)
    # Not the nox venv's bin: `python3` must be the shim until the venv line.
    venv_bin = str(Path(sys.executable).parent) if sys.prefix != sys.base_prefix else None
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin]
    env["PATH"] = os.pathsep.join([str(shims), *path])
    env["HOME"] = str(home)
    # An empty HOME would also mean an empty pip cache: keep the user's, so
    # wheels are not downloaded again. Every venv is still new.
    cache = subprocess.run(
        [sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True
    )
    if cache.returncode == 0 and "PIP_CACHE_DIR" not in env:
        env["PIP_CACHE_DIR"] = cache.stdout.strip()
    return env


def make_shims(root: Path) -> Path:
    """A folder whose `python3` runs the interpreter this check runs on."""
    shims = root / "shims"
    shims.mkdir()
    # The base interpreter, not the nox venv's, so `python3 -m venv` starts
    # from a clean install; exec keeps its own sys.executable.
    base = getattr(sys, "_base_executable", sys.executable)
    script = shims / "python3"
    script.write_text(f'#!/bin/sh\nexec {shlex.quote(base)} "$@"\n')
    script.chmod(0o755)
    return shims


def install(root: Path, story: str, script: str, dist: Path, base_env: dict[str, str]) -> Path:
    """Runs the commands in a new folder and HOME; returns the venv's python."""
    folder = root / story
    home = root / f"{story}-home"
    home.mkdir(parents=True)
    shutil.copytree(dist, folder / "dist")
    env = {**base_env, "HOME": str(home)}
    started = time.monotonic()
    result = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    if result.returncode != 0:
        fail(f"{story}: bash -e -c {script!r} exited {result.returncode}\n{result.stderr}")
    # The venv's bin is on PATH once activated; pip saying otherwise means the
    # story would leave the role's command unreachable.
    if "not on PATH" in result.stderr:
        fail(f"{story}: pip warned about PATH:\n{result.stderr}")
    print(f"{story}: installed in {time.monotonic() - started:.1f} s")
    return folder / ".venv" / "bin" / "python"


def run(python: Path, code: str, *args: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [str(python), "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=CHECK_TIMEOUT_S,
        env=env,
    )
    if result.returncode != 0:
        fail(f"{python}:\n{code}\n{result.stdout}\n{result.stderr}")
    return result.stdout.strip()


def check_story(python: Path, story: str, versions: dict[str, str], env: dict[str, str]) -> None:
    spec = dataclasses.asdict(STORIES[story])
    spec["ours"] = {name: versions[name] for name in STORIES[story].ours}
    print(f"{story}: {run(python, PROBE, json.dumps(spec), env=env)}")
    script = STORIES[story].script
    if script:
        result = subprocess.run(
            [str(python.parent / script), "--help"],
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
            env=env,
        )
        if result.returncode != 0 or "Usage:" not in result.stdout:
            fail(f"{script} --help exited {result.returncode}\n{result.stdout}\n{result.stderr}")


def main() -> int:
    dist = Path(sys.argv[1]).resolve()
    versions = built_versions(dist)
    print("built:", ", ".join(f"{n} {v}" for n, v in sorted(versions.items())))
    if set(versions) != {*STORIES, PROTO}:
        fail(f"{dist} must hold a wheel of each of the five distributions, has {versions}")
    venv_line, installs = read_commands(README)
    with tempfile.TemporaryDirectory(prefix="easyremote-install-") as tmp:
        root = Path(tmp)
        run_home = root / "run-home"
        run_home.mkdir()
        base_env = clean_env(run_home, make_shims(root))
        # Two at a time: CI has two cores, and pip spends part of each install waiting.
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {
                story: pool.submit(
                    install, root, story, f"{venv_line}\n{installs[story]}\n", dist, base_env
                )
                for story in STORIES
            }
            pythons = {story: future.result() for story, future in futures.items()}
        for story, python in pythons.items():
            check_story(python, story, versions, base_env)
        workdir = root / "banners"
        workdir.mkdir()
        follow_the_banners(pythons, base_env, workdir)
    print("install check OK: README's install commands work in fresh venvs")
    return 0


TARGET_MODULE = """
from easyremote.node import ComputeNode

node = ComputeNode("localhost:8080", "install-check-node")


@node.register
def my_function(x):
    return x * 2
"""

META_CALL = """
import sys
from easyremote import Client
with Client(sys.argv[1]) as client:
    assert client.call("my_function", 1) == 2
print("meta call OK")
"""


def next_steps(banner: str) -> list[str]:
    """The commands under a banner's "Next steps" heading, as printed."""
    lines = banner.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "Next steps"), None)
    if start is None:
        fail(f"no 'Next steps' in the banner:\n{banner}")
    steps = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        if line.startswith("    "):  # commands; the 2-space lines describe them
            steps.append(line.strip())
    return steps


def run_steps(
    steps: list[str], pythons: dict[str, Path], env: dict[str, str], workdir: Path
) -> list[Proc]:
    """Runs each printed step in the venv of the role it names; returns long-running ones.

    A step ``easyremote-node GATEWAY TARGET`` serves, so it is started and left
    running; a ``from ...`` line starts a Python snippet that ends with a call
    of ``my_function``, whose ``...`` becomes an argument.
    """
    started: list[Proc] = []
    index = 0
    while index < len(steps):
        step = steps[index]
        words = shlex.split(step)
        if step.startswith("from "):
            code = [step]
            while index + 1 < len(steps) and not steps[index + 1].startswith("easyremote"):
                index += 1
                code.append(steps[index])
            code[-1] = f"print({code[-1].replace('...', '21')})"
            output = run(pythons["easyremote-client"], "\n".join(code), env=env)
            if output != "42":
                fail(f"the banner's Python lines printed {output!r}, not 42:\n{code}")
            print(f"ran as printed (client venv): {' / '.join(code)}")
        elif words[0] == "easyremote-node" and words[1] not in ("status", "serve"):
            python = pythons[words[0]]  # each command is its story's name
            node = Proc([str(python.parent / words[0]), *words[1:]], words[0], env=env, cwd=workdir)
            started.append(node)
            node.expect_containing("registered with the gateway")
            print(f"ran as printed ({words[0]} venv): {step}")
        else:
            python = pythons[words[0]]  # each command is its story's name
            result = subprocess.run(
                [str(python.parent / words[0]), *words[1:]],
                capture_output=True,
                text=True,
                timeout=CHECK_TIMEOUT_S,
                env=env,
                cwd=workdir,
            )
            if result.returncode != 0:
                fail(f"{step!r} exited {result.returncode}\n{result.stdout}{result.stderr}")
            print(f"ran as printed ({words[0]} venv): {step}")
        index += 1
    return started


def follow_the_banners(pythons: dict[str, Path], env: dict[str, str], workdir: Path) -> None:
    """The real CLIs from the single-role venvs, each banner's next steps as printed.

    The gateway runs from the server venv; its banner's steps start a node
    from the node venv (on a module named as printed), call from the client
    venv and show status from the server venv; then the node banner's steps.
    All on this machine under one fresh HOME, where the gateway writes the tokens.
    """
    (workdir / "mymodule.py").write_text(TARGET_MODULE)
    server_bin = pythons["easyremote-server"].parent
    procs: list[Proc] = []
    try:
        gateway = Proc(
            [str(server_bin / "easyremote-server"), "--port", "0"], "gateway", env=env, cwd=workdir
        )
        procs.append(gateway)
        gateway.expect("Stop the gateway")
        banner = "".join(gateway.output)
        procs += run_steps(next_steps(banner), pythons, env, workdir)
        # The node's banner came before its "registered" line, which was awaited.
        node_steps = next_steps("".join(procs[-1].output))
        run_steps(node_steps, pythons, env, workdir)
        address = node_steps[0].split()[-1]
        status = subprocess.run(
            [str(pythons["easyremote-client"].parent / "easyremote-client"), "status", address],
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
            env=env,
        )
        if status.returncode != 0 or "install-check-node" not in status.stdout:
            fail(f"easyremote-client status {address}:\n{status.stdout}{status.stderr}")
        print(run(pythons["easyremote"], META_CALL, address, env=env))
    finally:
        for proc in reversed(procs):
            proc.stop()


if __name__ == "__main__":
    sys.exit(main())
