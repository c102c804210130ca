"""TLS for clients and nodes: trust a CA file, or pin the gateway's certificate.

Pinning fits the gateway's generated self-signed certificate: the gateway
prints its SHA-256 fingerprint, and a peer given that fingerprint fetches the
certificate, compares, and only then opens the gRPC channel, trusting that one
certificate alone. A mismatch stops before any token is sent.

On the gateway's own machine nothing needs configuring: a peer that dials a
loopback address with no TLS settings of its own follows the record the local
gateway wrote (see ``easyremote.proto.local_gateways``).
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
from easyremote.proto.local_gateways import GatewayRecord, read_record, record_path

ENV_TLS_CA = "EASYREMOTE_TLS_CA"
ENV_TLS_FINGERPRINT = "EASYREMOTE_TLS_FINGERPRINT"
# The name the generated certificate carries; pinned peers verify against it.
PINNED_TARGET_NAME = "easyremote-gateway"
# How long the look at what a port speaks may take, when a connection failed.
PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class TlsSettings:
    """How a client or node secures its channel (nothing set: plaintext).

    Attributes:
        ca_file: PEM CA bundle to verify the gateway's certificate with.
        fingerprint: SHA-256 (64 lower-case hex digits) of the certificate to pin.
        server_name: Name to verify the certificate against instead of the
            dialled host (a local gateway whose certificate names its public host).
        default_roots: Verify against gRPC's bundled public CA roots.
        source: Where the settings came from, for error messages.
    """

    ca_file: str | None = None
    fingerprint: str | None = None
    server_name: str | None = None
    default_roots: bool = False
    source: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.ca_file or self.fingerprint or self.default_roots)


def _setting(value: str | None, variable: str) -> str | None:
    # Pasted values often carry a trailing newline or space: not part of them.
    chosen = value if value is not None and value.strip() else os.environ.get(variable)
    return chosen.strip() if chosen and chosen.strip() else None


def resolve_tls(
    ca_file: str | None, fingerprint: str | None, address: str | None = None
) -> TlsSettings:
    """Arguments first, then the environment, then the local gateway's record.

    ``EASYREMOTE_TLS_CA`` / ``EASYREMOTE_TLS_FINGERPRINT`` stand in for missing
    arguments. With neither, a loopback ``address`` follows the record of the
    gateway of this user listening on that port, if any: its pin, or the name
    its own certificate carries. Called at every (re)connect, so a peer started
    before the gateway finds the record once it exists.

    Raises:
        ValueError: The fingerprint is not 64 hex digits.
        CredentialsError: The local record is unsafe (others can write it).
    """
    ca = _setting(ca_file, ENV_TLS_CA)
    pin = _setting(fingerprint, ENV_TLS_FINGERPRINT)
    record = _local_record(address)
    if ca or pin:
        name = record.tls_server_name if record is not None and ca else None
        source = f"tls_ca_file/{ENV_TLS_CA}" if ca else f"tls_fingerprint/{ENV_TLS_FINGERPRINT}"
        return TlsSettings(ca, normalize_fingerprint(pin) if pin else None, name, source=source)
    if record is None or not record.tls:
        return TlsSettings()
    source = f"the local gateway's record {record_path(record.port)}"
    if record.tls_fingerprint:
        return TlsSettings(fingerprint=normalize_fingerprint(record.tls_fingerprint), source=source)
    return TlsSettings(server_name=record.tls_server_name, default_roots=True, source=source)


def _local_record(address: str | None) -> GatewayRecord | None:
    if address is None or not is_loopback_host(address_host(address)):
        return None
    try:
        port = int(address.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None
    return read_record(port)


def normalize_fingerprint(text: str) -> str:
    """``AB:CD:...`` or ``abcd...`` to 64 lower-case hex digits; ValueError otherwise."""
    digits = "".join(text.split()).replace(":", "").lower()
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(f"not a SHA-256 fingerprint: {text!r} (want 64 hex digits)")
    return digits


def format_fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate as ``AB:CD:...``."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def fetch_certificate(address: str, timeout: float) -> bytes:
    """The DER certificate the server at ``address`` presents (not verified here).

    Raises:
        CredentialsError: The server answered, but not with TLS.
        OSError: The server could not be reached.
    """
    host = address_host(address)
    port = int(address.rsplit(":", 1)[1])
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the caller compares the fingerprint
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((host, port), timeout=timeout) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=host or None) as tls:
                der = tls.getpeercert(binary_form=True)
        except ssl.SSLError as exc:
            if _answered_in_plaintext(exc):
                raise CredentialsError(_plaintext_gateway_message(address)) from exc
            raise
    if not der:
        raise CredentialsError(f"{address} presented no TLS certificate")
    return der


def _answered_in_plaintext(exc: ssl.SSLError) -> bool:
    # What a TLS handshake reads when the other side speaks plain HTTP/2.
    reason = getattr(exc, "reason", None) or ""
    return reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST")


def _plaintext_gateway_message(address: str) -> str:
    return (
        f"the gateway at {address} does not speak TLS (it answered in plaintext), but this "
        "peer is set to use TLS; start the gateway with TLS (easyremote-server "
        f"--tls-self-signed), or unset {ENV_TLS_FINGERPRINT}/{ENV_TLS_CA} for a plaintext gateway"
    )


def probe_tls(address: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """What the server at ``address`` speaks, looked at when a connection failed.

    Returns:
        The fingerprint (``AB:CD:...``) of the certificate it presents when it
        speaks TLS, ``""`` when it answered in plaintext, None when it could
        not be reached or told apart.
    """
    try:
        der = fetch_certificate(address, timeout)
    except CredentialsError:
        return ""
    except (OSError, ValueError, IndexError):
        return None
    return format_fingerprint(der)


def tls_mismatch(address: str, tls: TlsSettings, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why a failed connection to ``address`` failed, when TLS is the cause.

    Blocking (it opens a connection): run it off the event loop.

    Returns:
        A message naming TLS when the peer and the gateway disagree on it
        (a plaintext peer at a TLS port, a TLS peer at a plaintext port), else None.
    """
    seen = probe_tls(address, timeout)
    if seen is None:
        return None
    if tls.enabled and seen == "":
        return _plaintext_gateway_message(address)
    if not tls.enabled and seen:
        return (
            f"the gateway at {address} serves TLS, but this peer connects in plaintext. "
            f"Pin its certificate ({ENV_TLS_FINGERPRINT}=<fingerprint> or tls_fingerprint=...; "
            "`easyremote-server join` on the gateway's machine prints it with the token, "
            f"and the gateway's banner shows it) or give its CA ({ENV_TLS_CA}). It presents a "
            f"certificate with SHA-256 fingerprint {seen}: pin it only if that is the one "
            "your gateway shows"
        )
    return None


def channel_credentials(
    address: str, tls: TlsSettings, timeout: float
) -> tuple[grpc.ChannelCredentials, list[tuple[str, str]]]:
    """Credentials (and channel options) for a verified TLS channel to ``address``.

    Blocking (the pin check opens a connection): run it off the event loop.

    Raises:
        CredentialsError: The certificate does not match the pin, or the
            gateway does not speak TLS.
        OSError: The gateway could not be reached for the pin check.
    """
    if tls.fingerprint:
        der = fetch_certificate(address, timeout)
        seen = hashlib.sha256(der).hexdigest()
        if seen != tls.fingerprint:
            raise CredentialsError(
                f"the gateway at {address} presented a certificate with fingerprint "
                f"{format_fingerprint(der)}, not the pinned one ({tls.source or 'pinned'}); "
                "refusing to connect (no token was sent)"
            )
        pem = ssl.DER_cert_to_PEM_cert(der).encode()
        options = [("grpc.ssl_target_name_override", PINNED_TARGET_NAME)]
        return grpc.ssl_channel_credentials(root_certificates=pem), options
    options = [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []
    if tls.ca_file is None:  # gRPC's bundled public roots
        return grpc.ssl_channel_credentials(), options
    try:
        with open(tls.ca_file, "rb") as ca:
            roots = ca.read()
    except OSError as exc:
        raise CredentialsError(f"cannot read the TLS CA file {tls.ca_file}: {exc}") from exc
    return grpc.ssl_channel_credentials(root_certificates=roots), options


class PlaintextTokenError(CredentialsError):
    """A token would have crossed a network in clear text; it was not sent."""


def refuse_plaintext_token(
    address: str, token: str | None, tls: TlsSettings, allow_insecure: bool
) -> None:
    """Raises PlaintextTokenError before a token would cross a network in clear text."""
    if not token or tls.enabled or allow_insecure:
        return
    if is_loopback_host(address_host(address)):
        return
    raise PlaintextTokenError(
        f"refusing to send a token in plaintext to {address}: anyone on the path could "
        "read it and run code on your nodes. Pin the gateway's certificate "
        f"(tls_fingerprint=... or {ENV_TLS_FINGERPRINT}; `easyremote-server join` on the "
        "gateway's machine prints it) or give "
        f"its CA (tls_ca_file=... or {ENV_TLS_CA}). On a network you trust "
        "(VPN, private LAN) pass allow_insecure=True (CLIs: --allow-insecure)."
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
