"""Tokens: where they live, how they travel, who may use which.

The gateway accepts two credentials: a *client* token (call functions, query
status) and a *node* token (register a node). On one machine they need no
configuration: the gateway writes both, on its first start, to an owner-only
file that clients and nodes of the same user read when they dial a loopback
address. Elsewhere they come from ``EASYREMOTE_TOKEN`` or a ``token=``
argument. Tokens travel as gRPC metadata (``authorization: Bearer ...``) and
are never logged.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

ROLE_CLIENT = "client"
ROLE_NODE = "node"
AUTH_METADATA_KEY = "authorization"
_BEARER = "Bearer "

ENV_HOME = "EASYREMOTE_HOME"
ENV_TOKEN = "EASYREMOTE_TOKEN"
CREDENTIALS_FILE = "credentials.json"
# Longest token accepted in metadata; anything longer is not ours.
MAX_TOKEN_CHARS = 512


class CredentialsError(Exception):
    """Credentials are unusable or unsafe (e.g. a token file others can read)."""


@dataclass(frozen=True)
class LocalCredentials:
    """The tokens of the gateways of this user on this machine."""

    client_token: str
    node_token: str

    def for_role(self, role: str) -> str:
        return self.node_token if role == ROLE_NODE else self.client_token


def home() -> Path:
    """EasyRemote's per-user directory (``EASYREMOTE_HOME``, else ``~/.easyremote``)."""
    configured = os.environ.get(ENV_HOME)
    return Path(configured) if configured else Path.home() / ".easyremote"


def credentials_path() -> Path:
    """Where the local tokens are kept."""
    return home() / CREDENTIALS_FILE


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return secrets.token_urlsafe(32)


def check_private(path: Path, *, directory: bool = False) -> None:
    """Raises CredentialsError unless only the current user can use ``path``."""
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    problem = ""
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        problem = f"is owned by uid {info.st_uid}, not by this user (uid {os.getuid()})"
    elif mode & 0o077:
        problem = f"can be used by other users (mode {mode:04o})"
    if problem:
        wanted = "700" if directory else "600"
        raise CredentialsError(
            f"refusing to use {path}: it {problem}. Tokens in it would let others run "
            f"code on your nodes. Fix it with `chmod {wanted} {path}`, or delete it "
            "and restart the gateway to make new tokens."
        )


def load_local_credentials() -> LocalCredentials | None:
    """The local tokens, or None if no gateway of this user made them yet."""
    path = credentials_path()
    if not path.exists():
        return None
    check_private(path.parent, directory=True)
    check_private(path)
    try:
        data = json.loads(path.read_text())
        client, node = data["client_token"], data["node_token"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CredentialsError(f"{path} is not a valid EasyRemote token file: {exc!r}") from exc
    if not (isinstance(client, str) and isinstance(node, str) and client and node):
        raise CredentialsError(f"{path} is not a valid EasyRemote token file: tokens missing")
    return LocalCredentials(client, node)


def ensure_local_credentials() -> LocalCredentials:
    """Loads the local tokens, creating them (owner-only) on first use.

    The file appears whole or not at all: it is written under a temporary
    name and hard-linked into place, which fails if another gateway got there
    first (then its tokens are used).
    """
    existing = load_local_credentials()
    if existing is not None:
        return existing
    path = credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_private(path.parent, directory=True)
    created = LocalCredentials(new_token(), new_token())
    payload = json.dumps(
        {"client_token": created.client_token, "node_token": created.node_token}, indent=2
    )
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(payload + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            loaded = load_local_credentials()
            if loaded is None:
                raise CredentialsError(f"{path} vanished while being created") from None
            return loaded
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return created


def loopback_listener_uids(port: int) -> set[int] | None:
    """User ids owning loopback/wildcard TCP listeners on ``port`` (Linux), else None."""
    uids: set[int] = set()
    found_table = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as rows:
                lines = rows.read().splitlines()[1:]
        except OSError:
            continue
        found_table = True
        for line in lines:
            fields = line.split()
            if len(fields) < 8 or fields[3] != "0A":  # 0A: LISTEN
                continue
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                uids.add(int(fields[7]))
    return uids if found_table else None


def _check_local_listener(address: str) -> None:
    # A local token must not go to another user's process that took the
    # gateway's port (say, while the gateway restarts).
    if not hasattr(os, "getuid"):
        return
    try:
        port = int(address.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return
    owners = loopback_listener_uids(port)
    if owners and os.getuid() not in owners:
        raise CredentialsError(
            f"port {port} on this machine is held by another user (uid "
            f"{', '.join(map(str, sorted(owners)))}), not by your gateway; refusing to "
            "send it your local token"
        )


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IPs (``127.0.0.0/8``, ``::1``)."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def address_host(address: str) -> str:
    """The host part of ``host:port`` (IPv6 in brackets or bare)."""
    if address.startswith("["):
        return address[1 : address.index("]")]
    host, _, _ = address.rpartition(":")
    return host or address


def resolve_token(role: str, explicit: str | None, address: str) -> str | None:
    """The token to present: the argument, else ``EASYREMOTE_TOKEN``, else the local file.

    The local file is only read for loopback addresses: it holds this
    machine's tokens, which are of no use (and no business) elsewhere.
    Surrounding whitespace is dropped. Peers call this at every (re)connect,
    so one started before its gateway wrote the file finds it afterwards.
    """
    # Pasted tokens often carry a trailing newline or space: not part of them.
    if explicit and explicit.strip():
        return explicit.strip()
    from_env = os.environ.get(ENV_TOKEN, "").strip()
    if from_env:
        return from_env
    if is_loopback_host(address_host(address)):
        local = load_local_credentials()
        if local is not None:
            _check_local_listener(address)
            return local.for_role(role)
    return None


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries ``token``."""
    return ((AUTH_METADATA_KEY, _BEARER + token),) if token else ()


def token_from_metadata(metadata: object) -> str | None:
    """The bearer token in incoming metadata, or None."""
    if not metadata:
        return None
    for item in metadata:  # type: ignore[attr-defined]
        key, value = item[0], item[1]
        if key == AUTH_METADATA_KEY and isinstance(value, str):
            token = value[len(_BEARER) :] if value.startswith(_BEARER) else ""
            return token if 0 < len(token) <= MAX_TOKEN_CHARS else None
    return None


def tokens_equal(presented: str, expected: str) -> bool:
    """Constant-time comparison, so timing does not leak the token."""
    return secrets.compare_digest(presented.encode(), expected.encode())


def remove_local_credentials() -> None:
    """Deletes the local token file (tests; ``easyremote-server --new-tokens``)."""
    with contextlib.suppress(FileNotFoundError):
        credentials_path().unlink()
