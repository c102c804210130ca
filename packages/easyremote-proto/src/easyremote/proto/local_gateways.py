"""What the gateways of this user on this machine tell local peers.

A gateway that listens writes ``$EASYREMOTE_HOME/gateways/<port>.json``: its
process id and how it serves TLS (the SHA-256 fingerprint of a generated
certificate, or the name its own certificate carries). Clients and nodes of
the same user that dial a loopback address read it on every (re)connect, so a
gateway with TLS needs no configuration on its own machine, just as its tokens
need none. Nothing in the record is secret: a wrong fingerprint only makes the
peer refuse to connect.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from easyremote.proto.credentials import CredentialsError, check_private, home

_DIRECTORY = "gateways"


@dataclass(frozen=True)
class GatewayRecord:
    """How a local gateway serves.

    Attributes:
        port: The TCP port it listens on.
        pid: Its process id (a record whose process is gone is ignored).
        tls_fingerprint: SHA-256 of its generated certificate (``AB:CD:...``)
            when it serves the self-signed pair; peers pin it.
        tls_server_name: A name its own certificate carries (``--tls-cert``),
            which local peers verify instead of the loopback address they dial.
    """

    port: int
    pid: int
    tls_fingerprint: str | None = None
    tls_server_name: str | None = None

    @property
    def tls(self) -> bool:
        return bool(self.tls_fingerprint or self.tls_server_name)


def record_path(port: int) -> Path:
    """Where the record of the local gateway on ``port`` lives."""
    return home() / _DIRECTORY / f"{port}.json"


def write_record(record: GatewayRecord) -> Path:
    """Writes ``record`` atomically (owner-only), replacing any earlier one."""
    path = record_path(record.port)
    # Each level owner-only, as the token file's folder is.
    path.parent.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    check_private(path.parent, directory=True)
    data = json.dumps(
        {
            "port": record.port,
            "pid": record.pid,
            "tls_fingerprint": record.tls_fingerprint,
            "tls_server_name": record.tls_server_name,
        }
    )
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(data + "\n")
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return path


def remove_record(port: int, pid: int) -> None:
    """Deletes the record of ``port`` if process ``pid`` wrote it."""
    record = read_record(port, check_alive=False)
    if record is not None and record.pid == pid:
        with contextlib.suppress(FileNotFoundError):
            record_path(port).unlink()


def read_record(port: int, *, check_alive: bool = True) -> GatewayRecord | None:
    """The record of the local gateway on ``port``, or None.

    None as well when the file is unreadable or malformed, or (with
    ``check_alive``) when the process that wrote it has exited: a gateway
    killed without stopping leaves its record behind.

    Raises:
        CredentialsError: The folder or file can be used by other users.
    """
    path = record_path(port)
    try:
        check_private(path.parent, directory=True)
        check_private(path)
        data = json.loads(path.read_text())
        record = GatewayRecord(
            port=int(data["port"]),
            pid=int(data["pid"]),
            tls_fingerprint=data.get("tls_fingerprint") or None,
            tls_server_name=data.get("tls_server_name") or None,
        )
    except FileNotFoundError:
        return None
    except CredentialsError:
        raise
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if check_alive and not _alive(record.pid):
        return None
    return record


def _alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # signal 0 is CTRL_C_EVENT on Windows: never send it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process reuses the pid
        return False
    except OSError:
        return True
    return True
