"""The gateway package never loads pickling or host-probing libraries."""

from __future__ import annotations

import subprocess
import sys


def test_server_imports_no_cloudpickle_psutil_or_nvml() -> None:
    # Only the proto and server portions may be importable, as in a
    # server-only install (the dev environment has every package).
    code = (
        "import sys\n"
        "sys.path[:] = [p for p in sys.path if not any(k in p.replace('\\\\', '/') for k in "
        "('easyremote-node', 'easyremote-client', 'packages/easyremote/src'))]\n"
        "import easyremote.server\n"
        "from easyremote.server import Server\n"
        "s = Server(port=0); s.start_background(); s.stop()\n"
        "bad = [m for m in ('cloudpickle', 'psutil', 'pynvml') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
