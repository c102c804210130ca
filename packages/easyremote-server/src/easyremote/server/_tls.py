"""The gateway's TLS certificate: the user's files, or a generated self-signed pair.

The generated pair is kept (owner-only) in ``~/.easyremote/tls/`` so its
fingerprint, which nodes and clients pin, survives restarts.
"""

from __future__ import annotations

import datetime
import os
import secrets
import socket
import ssl
from pathlib import Path

import grpc

from easyremote.proto.credentials import CredentialsError, check_private, home
from easyremote.proto.tls import PINNED_TARGET_NAME, format_fingerprint

_BUNDLE_FILE = "gateway.pem"  # key and certificate together: one atomic file
_CERT_FILE = "gateway-cert.pem"  # the certificate alone, for peers' CA files
_CERT_MARK = b"-----BEGIN CERTIFICATE-----"


def self_signed_paths() -> tuple[Path, Path]:
    """(bundle of key and certificate, certificate alone)."""
    directory = home() / "tls"
    return directory / _BUNDLE_FILE, directory / _CERT_FILE


def load_or_create_self_signed() -> tuple[bytes, bytes]:
    """The generated (certificate, key) PEM pair, made on first use.

    Key and certificate live in one owner-only file replaced atomically, so
    they always match, even when two gateways generate at the same moment.
    """
    bundle_path, cert_path = self_signed_paths()
    directory = bundle_path.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_private(directory, directory=True)
    if not bundle_path.exists():
        cert, key = _generate()
        _write_private(bundle_path, key + cert)
    check_private(bundle_path)
    bundle = bundle_path.read_bytes()
    split = bundle.find(_CERT_MARK)
    if split <= 0:
        raise CredentialsError(f"{bundle_path} is not a key and certificate bundle")
    key, cert = bundle[:split], bundle[split:]
    if not cert_path.exists() or cert_path.read_bytes() != cert:
        _write_private(cert_path, cert)
    return cert, key


def _write_private(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


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
    """SHA-256 fingerprint (``AB:CD:...``) of the first certificate in ``cert_pem``.

    A chain file's first certificate is the server's own, the one peers see.

    Raises:
        ValueError: No PEM certificate in the data.
    """
    start = cert_pem.find(_CERT_MARK)
    end_mark = b"-----END CERTIFICATE-----"
    end = cert_pem.find(end_mark, start)
    if start < 0 or end < 0:
        raise ValueError("no PEM certificate found")
    block = cert_pem[start : end + len(end_mark)].decode("ascii")
    return format_fingerprint(ssl.PEM_cert_to_DER_cert(block))


def certificate_name(cert_pem: bytes) -> str | None:
    """A DNS name the first certificate in ``cert_pem`` is valid for, else None.

    Peers on the gateway's own machine dial a loopback address but verify the
    certificate against this name.
    """
    # Imported here: only gateways serving their own certificate pay for it.
    from cryptography import x509  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return None
    try:
        names = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if names:
        return str(names[0])
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(common[0].value) if common else None


def server_credentials(cert_pem: bytes, key_pem: bytes) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials([(key_pem, cert_pem)])
