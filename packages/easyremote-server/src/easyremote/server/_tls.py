"""The gateway's TLS certificate: the user's files, or a generated self-signed pair.

The generated pair is kept (owner-only) in ``~/.easyremote/tls/`` so its
fingerprint, which nodes and clients pin, survives restarts.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import socket
import ssl
from pathlib import Path

import grpc

from easyremote.proto.credentials import check_private, home
from easyremote.proto.tls import PINNED_TARGET_NAME, format_fingerprint

_CERT_FILE = "gateway-cert.pem"
_KEY_FILE = "gateway-key.pem"


def self_signed_paths() -> tuple[Path, Path]:
    directory = home() / "tls"
    return directory / _CERT_FILE, directory / _KEY_FILE


def load_or_create_self_signed() -> tuple[bytes, bytes]:
    """The generated (certificate, key) PEM pair, made on first use."""
    cert_path, key_path = self_signed_paths()
    if cert_path.exists() and key_path.exists():
        check_private(key_path)
        return cert_path.read_bytes(), key_path.read_bytes()
    cert, key = _generate()
    cert_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_private(cert_path.parent, directory=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    cert_path.write_bytes(cert)
    return cert, key


def _generate() -> tuple[bytes, bytes]:
    # Imported here: only gateways that generate a certificate pay for it.
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, PINNED_TARGET_NAME)])
    now = datetime.datetime.now(datetime.timezone.utc)
    names: list[x509.GeneralName] = [
        x509.DNSName(PINNED_TARGET_NAME),
        x509.DNSName("localhost"),
        x509.DNSName(socket.gethostname()),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem


def fingerprint_of_pem(cert_pem: bytes) -> str:
    """SHA-256 fingerprint (``AB:CD:...``) of a PEM certificate."""
    return format_fingerprint(ssl.PEM_cert_to_DER_cert(cert_pem.decode()))


def fingerprint_hex(cert_pem: bytes) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert_pem.decode())).hexdigest()


def server_credentials(cert_pem: bytes, key_pem: bytes) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials([(key_pem, cert_pem)])
