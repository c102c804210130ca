"""``easyremote-server join``: what another machine pastes to join this gateway.

The lines hold what that machine needs and cannot find by itself: the token
of its role, read as the gateway reads it, and the TLS pin of the certificate
the gateway serves (what the running gateway recorded, else the generated
certificate), with the address other machines dial and, where a value is only
a guess, a note that says so.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from easyremote.proto.addresses import host_port, machine_addresses
from easyremote.proto.credentials import ENV_TOKEN, CredentialsError, load_local_credentials
from easyremote.proto.local_gateways import read_record
from easyremote.proto.status_cli import ENV_GATEWAY
from easyremote.proto.tls import ENV_TLS_CA, ENV_TLS_FINGERPRINT, PINNED_TARGET_NAME
from easyremote.server._security import ENV_CLIENT_TOKEN, ENV_NODE_TOKEN
from easyremote.server._tls import fingerprint_of_pem, self_signed_paths


def _shell_value(value: str) -> str:
    # Always single-quoted, as users expect to see secrets quoted; a quote
    # inside becomes '"'"'.
    return "'" + value.replace("'", "'\"'\"'") + "'"


def _gateway_tokens() -> tuple[str, str] | None:
    """(client, node) tokens as the gateway resolves them, or None if there are none yet."""
    # Stripped as the gateway strips them: a pasted newline is not part of a token.
    client = os.environ.get(ENV_CLIENT_TOKEN, "").strip()
    node = os.environ.get(ENV_NODE_TOKEN, "").strip()
    if not client or not node:
        local = load_local_credentials()
        if local is None:
            return None
        client = client or local.client_token
        node = node or local.node_token
    return client, node


def _pinnable(cert_pem: bytes) -> bool:
    """True for a certificate peers can pin: one naming easyremote-gateway."""
    from cryptography import x509  # noqa: PLC0415 - only `join --tls-cert` needs it

    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return PINNED_TARGET_NAME in names.get_values_for_type(x509.DNSName)


def _join_address(address: str | None, port: int) -> tuple[str, str | None]:
    """(``host:port`` other machines dial, a note when it is only a guess)."""
    if address:
        if address.startswith("["):  # [v6]:port, or [v6] alone
            return (address if re.search(r"\]:\d+$", address) else f"{address}:{port}"), None
        if address.count(":") == 1:  # name:port or v4:port
            return address, None
        return host_port(address, port), None  # a name, a v4 or a bare v6 address
    found = machine_addresses()
    if found:
        return host_port(found[0], port), None
    guess = host_port(socket.gethostname(), port)
    return guess, f"no network address found: replace {guess} with one the machine reaches"


_TLS_OFF = (
    "TLS is off: tokens would cross the network in clear text. Restart the gateway "
    "with --tls-self-signed, or, on a network you trust, add EASYREMOTE_ALLOW_INSECURE=1 "
    "to the exports (Python code passes allow_insecure=True)"
)


def _certificate_pin(path: Path, *, generated: bool) -> tuple[str | None, list[str]]:
    try:
        cert_pem = path.read_bytes()
        fingerprint = fingerprint_of_pem(cert_pem)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read a certificate from {path}: {exc}") from exc
    if not generated and not _pinnable(cert_pem):
        return None, [
            f"{path} is not EasyRemote's generated certificate, so peers cannot pin it: "
            f"give them its CA instead (export {ENV_TLS_CA}=/path/to/ca.pem)"
        ]
    return fingerprint, []


def _tls_pin(dial: str, tls_cert: str | None) -> tuple[str | None, list[str]]:
    """(the pin peers use, or None; notes) for the gateway reached at ``dial``.

    ``--tls-cert`` first; else what the gateway running on this machine on
    that port recorded at its start; else the generated certificate, if any.

    Raises:
        CredentialsError: The local gateway record is unsafe.
    """
    if tls_cert:
        return _certificate_pin(Path(tls_cert), generated=False)
    try:
        port: int | None = int(dial.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        port = None
    record = read_record(port) if port else None
    if record is not None:
        if record.tls_fingerprint:
            return record.tls_fingerprint, []
        if record.tls_server_name:
            return None, [
                f"the gateway serves its own certificate (for {record.tls_server_name}): "
                f"give peers its CA (export {ENV_TLS_CA}=/path/to/ca.pem)"
            ]
        return None, [_TLS_OFF]
    generated = self_signed_paths()[1]
    if not generated.is_file():
        return None, [_TLS_OFF]
    pin, notes = _certificate_pin(generated, generated=True)
    notes.append(
        f"no gateway runs on port {port} of this machine now; the pin is that of the "
        "generated certificate (--tls-self-signed)"
    )
    return pin, notes


def join_lines(
    address: str,
    roles: Sequence[str],
    client_token: str,
    node_token: str,
    fingerprint: str | None,
) -> dict[str, dict[str, Any]]:
    """What each role's machine sets and runs to join the gateway at ``address``.

    Args:
        address: ``host:port`` the other machine dials.
        roles: ``"node"`` and/or ``"client"``.
        client_token: The gateway's client token.
        node_token: The gateway's node token.
        fingerprint: The TLS pin, or None without TLS.

    Returns:
        Per role: ``env`` (variables to export: the token, the pin and
        ``EASYREMOTE_GATEWAY``) and ``command`` (to run).
    """
    quoted = shlex.quote(address)
    commands = {
        "node": f"easyremote-node {quoted} mymodule:node",
        "client": f"easyremote-client status {quoted}",
    }
    tokens = {"node": node_token, "client": client_token}
    result: dict[str, dict[str, Any]] = {}
    for role in roles:
        env = {ENV_TOKEN: tokens[role]}
        if fingerprint:
            env[ENV_TLS_FINGERPRINT] = fingerprint
        # Then `status` and `Client()` there need no address either.
        env[ENV_GATEWAY] = address
        result[role] = {"env": env, "command": commands[role]}
    return result


def join_text(
    address: str | None,
    port: int,
    role: str | None,
    tls_cert: str | None,
    output_format: str,
) -> str:
    """What ``easyremote-server join`` prints: per role, what to export and run.

    Args:
        address: ``host:port`` other machines dial, or None for this
            machine's first network address with ``port``.
        port: The gateway's port, when ``address`` has none.
        role: ``"node"`` or ``"client"``, or None for both.
        tls_cert: The certificate the gateway serves, or None to look it up.
        output_format: ``"shell"`` (lines to paste into a POSIX shell) or ``"json"``.

    Returns:
        The text, without a final newline; it holds the tokens.

    Raises:
        click.ClickException: No gateway tokens yet, an unsafe token file or
            gateway record, or an unreadable certificate.
    """
    try:
        tokens = _gateway_tokens()
    except CredentialsError as exc:
        raise click.ClickException(str(exc)) from exc
    if tokens is None:
        raise click.ClickException(
            "this machine has no gateway tokens yet: start the gateway first "
            "(easyremote-server --host 0.0.0.0 --tls-self-signed), which makes them"
        )
    client_token, node_token = tokens
    dial, note = _join_address(address, port)
    notes = [note] if note else []
    try:
        fingerprint, tls_notes = _tls_pin(dial, tls_cert)
    except CredentialsError as exc:
        raise click.ClickException(str(exc)) from exc
    notes += tls_notes
    roles = [role] if role else ["node", "client"]
    joined = join_lines(dial, roles, client_token, node_token, fingerprint)
    if output_format == "json":
        document: dict[str, Any] = {"address": dial, "tls_fingerprint": fingerprint, **joined}
        if notes:
            document["notes"] = notes
        return json.dumps(document, indent=2)
    titles = {
        "node": "On a node machine (with easyremote-node installed):",
        "client": "On a client machine (with easyremote-client installed); Python then uses "
        f'Client("{dial}") from easyremote.client:',
    }
    lines = [f"# Join the EasyRemote gateway at {dial}. Keep this secret: it holds tokens."]
    lines += [f"# {note}" for note in notes]
    for name, spec in joined.items():
        exports = " ".join(f"{key}={_shell_value(value)}" for key, value in spec["env"].items())
        lines += [f"# {titles[name]}", f"export {exports}", spec["command"]]
    return "\n".join(lines)


__all__ = ["join_lines", "join_text"]
