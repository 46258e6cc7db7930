"""PEM files for the P4Runtime channel checked offline, with the stdlib only: each holds what its
setting needs in base64 that decodes to DER that OpenSSL parses, and a certificate and its key
belong together (gRPC itself reports none of this until it connects)."""

from __future__ import annotations

import base64
import binascii
import re
import ssl
from pathlib import Path

_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.S)
_KEY_LABELS = ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY")


class PemError(ValueError):
    """What is wrong with a PEM file's content (the caller names the file and setting)."""


def pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """(label, DER) of every PEM block; PemError when there is none or one does not decode."""
    blocks = []
    for match in _BLOCK.finditer(data):
        label, body = match.group(1).decode(), match.group(2)
        if b"Proc-Type:" in body or label == "ENCRYPTED PRIVATE KEY":
            raise PemError(f"the {label} is encrypted; gRPC needs it unencrypted")
        try:
            der = base64.b64decode(b"".join(body.split()), validate=True)
        except binascii.Error as exc:
            raise PemError(f"the {label} block is not valid base64 ({exc})") from None
        if not der or der[0] != 0x30:  # DER of a certificate or key is an ASN.1 SEQUENCE
            raise PemError(f"the {label} block does not hold DER")
        blocks.append((label, der))
    if not blocks:
        raise PemError("not PEM: no -----BEGIN ...----- block")
    return blocks


def check_certificates(data: bytes) -> int:
    """The number of certificates in `data`; PemError unless each one parses."""
    blocks = pem_blocks(data)
    certificates = [der for label, der in blocks if label == "CERTIFICATE"]
    if not certificates:
        raise PemError(f"no CERTIFICATE block (found {', '.join(lb for lb, _ in blocks)})")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for number, der in enumerate(certificates, 1):
        try:
            context.load_verify_locations(cadata=der)
        except ssl.SSLError as exc:
            raise PemError(f"certificate {number} does not parse ({exc.reason})") from None
    return len(certificates)


def check_private_key(data: bytes) -> None:
    """PemError unless `data` holds exactly one unencrypted private key block."""
    labels = [label for label, _ in pem_blocks(data)]
    keys = [label for label in labels if label in _KEY_LABELS]
    if len(keys) != 1:
        raise PemError(f"expected one PRIVATE KEY block, found {', '.join(labels)}")


def check_key_pair(cert: Path, key: Path) -> None:
    """PemError unless OpenSSL parses the key and it is the certificate's."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        # An empty password: an encrypted key fails here instead of prompting on a terminal.
        context.load_cert_chain(cert, key, password=b"")
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise PemError(
                f"the key in {key} is not the key of the certificate in {cert}"
            ) from None
        raise PemError(f"OpenSSL cannot load {cert} with {key} ({exc.reason})") from None
