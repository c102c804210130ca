"""What a client or node presents to its gateway, looked up at every (re)connect.

A peer may start before its gateway (the demo, a service manager starting
everything at once, a node left running across a gateway restart). So the
token and the TLS settings are resolved again for each connection attempt:
from the arguments, the environment, and on the gateway's machine the files
the gateway writes when it starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from easyremote.proto.credentials import CredentialsError, resolve_token
from easyremote.proto.tls import (
    PROBE_TIMEOUT_S,
    PlaintextTokenError,
    TlsSettings,
    refuse_plaintext_token,
    resolve_tls,
    tls_mismatch,
)


@dataclass(frozen=True)
class PeerSettings:
    """What the user gave a client or node (None: look it up)."""

    role: str
    token: str | None = None
    tls_ca_file: str | None = None
    tls_fingerprint: str | None = None
    allow_insecure: bool = False

    def check(self) -> None:
        """Fails at construction on arguments that can never work.

        Raises:
            ValueError: ``tls_fingerprint`` is not a SHA-256 fingerprint.
        """
        resolve_tls(self.tls_ca_file, self.tls_fingerprint)


@dataclass(frozen=True)
class PeerCredentials:
    """The token and TLS settings of one connection attempt."""

    token: str | None
    tls: TlsSettings


def resolve_peer(settings: PeerSettings, address: str) -> PeerCredentials:
    """The credentials to connect to ``address`` with, as of now.

    Raises:
        CredentialsError: Unusable settings (a malformed fingerprint, an
            unsafe token file, a token that would travel in plaintext).
    """
    try:
        tls = resolve_tls(settings.tls_ca_file, settings.tls_fingerprint, address)
    except ValueError as exc:
        raise CredentialsError(str(exc)) from exc
    token = resolve_token(settings.role, settings.token, address)
    refuse_plaintext_token(address, token, tls, settings.allow_insecure)
    return PeerCredentials(token, tls)


def refusal_message(address: str, error: CredentialsError, timeout: float = PROBE_TIMEOUT_S) -> str:
    """What to tell the user about ``error`` from ``resolve_peer``.

    A token withheld from a plaintext connection to another machine usually
    means the gateway serves TLS and this peer has no pin yet: then the port
    is looked at (blocking, up to ``timeout``) and the message says so,
    rather than suggesting ``allow_insecure``, which would only fail next.
    """
    if isinstance(error, PlaintextTokenError):
        mismatch = tls_mismatch(address, TlsSettings(), timeout)
        if mismatch is not None:
            return mismatch
    return str(error)
