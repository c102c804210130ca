"""docs/security.md's public-gateway recipe, run word for word on three "machines".

Each machine is an empty home of its own (no ``EASYREMOTE_HOME``), so nothing
is shared but what the recipe pastes: the gateway binds every interface with a
generated certificate, ``easyremote-server join`` prints the lines for the
others, and the GPU box and laptop reach it on 127.0.0.1 with TLS, the pin and
their own token. Only the address (``vps.example.com:8080``) and the port are
replaced; the install lines are README's and are run by the install check.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from _procs import Proc

ROOT = Path(__file__).resolve().parents[1]
SECURITY = ROOT / "docs" / "security.md"
PUBLIC_ADDRESS = "vps.example.com:8080"
FUNCTIONS = """
from easyremote.node import ComputeNode

node = ComputeNode("unused:1", "home-gpu")


@node.register
def shout(text):
    return text.upper() + "!"
"""


def recipe(machine: str) -> list[str]:
    """The commands of one machine's block, comments dropped."""
    text = SECURITY.read_text(encoding="utf-8")
    found = re.search(rf"<!-- recipe: {machine} -->\n```bash\n(.*?)```", text, re.S)
    assert found, f"docs/security.md has no recipe block for {machine}"
    lines = [line.split("  #", 1)[0].strip() for line in found.group(1).splitlines()]
    return [line for line in lines if line]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _machine(tmp_path: Path, name: str) -> dict[str, str]:
    home = tmp_path / name
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("EASYREMOTE_")}
    # The console scripts of the environment the tests run in.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(HOME=str(home), PYTHONUNBUFFERED="1")
    return env


def _run(command: str, env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        ["bash", "-e", "-c", command],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 0, f"{command!r} failed:\n{done.stdout}{done.stderr}"
    return done.stdout


def _paste(join_output: str, role: str) -> str:
    """The export line ``join`` printed for ``role`` (what a user copies)."""
    lines = join_output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"# On a {role} machine"))
    return next(line for line in lines[start:] if line.startswith("export "))


def test_the_public_recipe_works_as_written(tmp_path: Path) -> None:
    port = _free_port()
    address = f"127.0.0.1:{port}"
    vps, gpu_box, laptop = (recipe(m) for m in ("vps", "gpu-box", "laptop"))
    assert [len(vps), len(gpu_box), len(laptop)] == [3, 3, 3]
    assert all("pip install" in steps[0] for steps in (vps, gpu_box, laptop))

    vps_env = _machine(tmp_path, "vps")
    vps_env["EASYREMOTE_PORT"] = str(port)  # the one setting the recipe leaves at 8080
    gateway = Proc(shlex.split(vps[1]), "gateway", env=vps_env)
    node = None
    try:
        gateway.expect_containing(f"gateway listening on 0.0.0.0:{port} (TLS, certificate")
        joined = _run(vps[2].replace(PUBLIC_ADDRESS, address), vps_env, tmp_path / "vps")
        assert f"{address}" in joined and "EASYREMOTE_TLS_FINGERPRINT=" in joined

        gpu_env = _machine(tmp_path, "gpu-box")
        (tmp_path / "gpu-box" / "my_functions.py").write_text(FUNCTIONS)
        node_command = gpu_box[2].replace(PUBLIC_ADDRESS, address)
        node = Proc(
            ["bash", "-e", "-c", f"{_paste(joined, 'node')}\nexec {node_command}"],
            "node",
            env=gpu_env,
            cwd=tmp_path / "gpu-box",
        )
        node.expect_containing(f"node home-gpu registered with the gateway at {address}")

        laptop_env = _machine(tmp_path, "laptop")
        pasted = _paste(joined, "client")
        status = _run(
            f"{pasted}\n{laptop[2].replace(PUBLIC_ADDRESS, address)}",
            laptop_env,
            tmp_path / "laptop",
        )
        assert re.search(r"^home-gpu\s+healthy\s+shout\b", status, re.M), status
        call = f"{pasted}\n{shlex.quote(sys.executable)} -c " + shlex.quote(
            "from easyremote.client import Client; "
            # No address: Client() dials EASYREMOTE_GATEWAY, which the pasted line set.
            "print(Client().call('shout', 'hello'))"
        )
        assert _run(call, laptop_env, tmp_path / "laptop").strip() == "HELLO!"

        # Nothing of the laptop's or the GPU box's came from the VPS's home.
        for machine in ("gpu-box", "laptop"):
            assert not (tmp_path / machine / ".easyremote" / "credentials.json").exists()
    finally:
        if node is not None:
            assert node.stop() == 0, "".join(node.output)
        assert gateway.stop() == 0, "".join(gateway.output)


@pytest.mark.parametrize("machine", ["vps", "gpu-box", "laptop"])
def test_each_machine_needs_at_most_three_commands(machine: str) -> None:
    assert 1 <= len(recipe(machine)) <= 3
