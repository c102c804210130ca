"""TLS for clients and nodes: trust a CA file, or pin the gateway's certificate.

Pinning fits the gateway's generated self-signed certificate: the gateway
prints its SHA-256 fingerprint, and a peer given that fingerprint fetches the
certificate, compares, and only then opens the gRPC channel, trusting that one
certificate alone. A mismatch stops before any token is sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
from dataclasses import dataclass

import grpc
from grpc import aio

from easyremote.proto.credentials import CredentialsError, address_host, is_loopback_host

ENV_TLS_CA = "EASYREMOTE_TLS_CA"
ENV_TLS_FINGERPRINT = "EASYREMOTE_TLS_FINGERPRINT"
# The name the generated certificate carries; pinned peers verify against it.
PINNED_TARGET_NAME = "easyremote-gateway"


@dataclass(frozen=True)
class TlsSettings:
    """How a client or node secures its channel (both None: plaintext)."""

    ca_file: str | None = None
    fingerprint: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.ca_file or self.fingerprint)


def resolve_tls(ca_file: str | None, fingerprint: str | None) -> TlsSettings:
    """Arguments first, then ``EASYREMOTE_TLS_CA`` / ``EASYREMOTE_TLS_FINGERPRINT``."""
    ca = ca_file or os.environ.get(ENV_TLS_CA) or None
    pin = fingerprint or os.environ.get(ENV_TLS_FINGERPRINT) or None
    return TlsSettings(ca, normalize_fingerprint(pin) if pin else None)


def normalize_fingerprint(text: str) -> str:
    """``AB:CD:...`` or ``abcd...`` to 64 lower-case hex digits; ValueError otherwise."""
    digits = text.replace(":", "").replace(" ", "").lower()
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(f"not a SHA-256 fingerprint: {text!r} (want 64 hex digits)")
    return digits


def format_fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate as ``AB:CD:...``."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def fetch_certificate(address: str, timeout: float) -> bytes:
    """The DER certificate the server at ``address`` presents (not verified here)."""
    host = address_host(address)
    port = int(address.rsplit(":", 1)[1])
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the caller compares the fingerprint
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=host or None) as tls:
            der = tls.getpeercert(binary_form=True)
    if not der:
        raise CredentialsError(f"{address} presented no TLS certificate")
    return der


def channel_credentials(
    address: str, tls: TlsSettings, timeout: float
) -> tuple[grpc.ChannelCredentials, list[tuple[str, str]]]:
    """Credentials (and channel options) for a verified TLS channel to ``address``.

    Blocking (the pin check opens a connection): run it off the event loop.

    Raises:
        CredentialsError: the certificate does not match the pin.
        OSError: the gateway could not be reached for the pin check.
    """
    if tls.fingerprint:
        der = fetch_certificate(address, timeout)
        seen = hashlib.sha256(der).hexdigest()
        if seen != tls.fingerprint:
            raise CredentialsError(
                f"the gateway at {address} presented a certificate with fingerprint "
                f"{format_fingerprint(der)}, not the pinned one; refusing to connect "
                "(no token was sent)"
            )
        pem = ssl.DER_cert_to_PEM_cert(der).encode()
        options = [("grpc.ssl_target_name_override", PINNED_TARGET_NAME)]
        return grpc.ssl_channel_credentials(root_certificates=pem), options
    assert tls.ca_file is not None
    with open(tls.ca_file, "rb") as ca:
        roots = ca.read()
    return grpc.ssl_channel_credentials(root_certificates=roots), []


def refuse_plaintext_token(
    address: str, token: str | None, tls: TlsSettings, allow_insecure: bool
) -> None:
    """Raises CredentialsError before a token would cross a network in clear text."""
    if not token or tls.enabled or allow_insecure:
        return
    if is_loopback_host(address_host(address)):
        return
    raise CredentialsError(
        f"refusing to send a token in plaintext to {address}: anyone on the path could "
        "read it and run code on your nodes. Pin the gateway's certificate "
        f"(tls_fingerprint=... or {ENV_TLS_FINGERPRINT}; the gateway prints it) or give "
        f"its CA (tls_ca_file=... or {ENV_TLS_CA}). On a network you trust "
        "(VPN, private LAN) pass allow_insecure=True."
    )


async def open_channel(
    address: str, tls: TlsSettings, options: list[tuple[str, int | str]], timeout: float
) -> aio.Channel:
    """A plaintext channel, or a TLS one verified per ``tls`` (pin checked first)."""
    if not tls.enabled:
        return aio.insecure_channel(address, options=options)
    loop = asyncio.get_running_loop()
    credentials, extra = await loop.run_in_executor(
        None, channel_credentials, address, tls, timeout
    )
    return aio.secure_channel(address, credentials, options=[*options, *extra])
