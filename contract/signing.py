"""The owner's public signer file and the bundle's detached signature (Ed25519, ``cryptography``).

The owner signs the exact bytes of ``manifest.json``; the signature goes beside it in
``manifest.sig``. Whoever holds the owner's signer file (the public key: safe to hand to anyone)
can check that a manifest, and through its sha256 list every object of the bundle, is the owner's.
The signing key itself is derived from the owner's key file (``pipeline.keys``); nothing here can sign.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from contract.errors import UserError
from contract.formats import FormatError, as_object, check_header, field_of, parse_json

ALGORITHM = "ed25519"
_MAX_FILE = 4096  # a signer or signature file is a few hundred bytes


def _fingerprint(public_key: bytes) -> str:
    return hashlib.sha256(b"cipherseg/v1/signer\0" + public_key).hexdigest()[:32]


def _b64(value: Any, length: int, where: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except binascii.Error:
        raw = b""
    if len(raw) != length:
        raise FormatError(f"{where}: expected {length} bytes in base64")
    return raw


@dataclass(frozen=True)
class Signature:
    """A detached signature of a manifest, naming the signer that made it."""

    FORMAT = "cipherseg-signature"
    VERSION = 1

    signer: str  # fingerprint of the signing key, for messages
    signature: bytes  # 64 bytes of Ed25519

    @classmethod
    def parse(cls, data: bytes, where: str) -> Signature:
        document = as_object(parse_json(data, where), where)
        check_header(document, cls.FORMAT, cls.VERSION, where)
        if document.get("algorithm") != ALGORITHM:
            raise FormatError(f"{where}: signature algorithm {document.get('algorithm')!r} is not {ALGORITHM}")
        return cls(field_of(document, "signer", str, where), _b64(document.get("signature"), 64, where))

    def to_bytes(self) -> bytes:
        document = {
            "format": self.FORMAT,
            "format_version": self.VERSION,
            "algorithm": ALGORITHM,
            "signer": self.signer,
            "signature": base64.b64encode(self.signature).decode(),
        }
        return json.dumps(document, indent=1).encode()


@dataclass(frozen=True)
class Signer:
    """The owner's public verification key, as kept in the signer file the cloud is given."""

    FORMAT = "cipherseg-signer"
    VERSION = 1

    public_key: bytes  # 32 bytes of Ed25519

    @property
    def fingerprint(self) -> str:
        """A short public id of the signer, shown in messages and recorded in manifests."""
        return _fingerprint(self.public_key)

    def verifies(self, message: bytes, signature: Signature) -> bool:
        """Whether ``signature`` is this signer's signature of ``message``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature.signature, message)
        except InvalidSignature:
            return False
        return True

    @classmethod
    def parse(cls, data: bytes, where: str) -> Signer:
        document = as_object(parse_json(data, where), where)
        check_header(document, cls.FORMAT, cls.VERSION, where)
        if document.get("algorithm") != ALGORITHM:
            raise FormatError(f"{where}: signer algorithm {document.get('algorithm')!r} is not {ALGORITHM}")
        signer = cls(_b64(document.get("public_key"), 32, where))
        if document.get("fingerprint") != signer.fingerprint:
            raise FormatError(f"{where}: corrupt signer file (its fingerprint does not match its public key)")
        return signer

    def to_bytes(self) -> bytes:
        document = {
            "format": self.FORMAT,
            "format_version": self.VERSION,
            "algorithm": ALGORITHM,
            "public_key": base64.b64encode(self.public_key).decode(),
            "fingerprint": self.fingerprint,
        }
        return (json.dumps(document, indent=1) + "\n").encode()


def load_signer(path: str | Path) -> Signer:
    """Read a signer file (a local path); UserError naming it if it is missing or not one."""
    path = Path(path)
    try:
        if not path.is_file():
            raise UserError(f"{path}: no signer file here (the owner's --stage keygen writes it beside the key)")
        data = path.read_bytes()[: _MAX_FILE + 1]
    except OSError as error:
        raise UserError(f"{path}: cannot read the signer file ({error.strerror})") from None
    if len(data) > _MAX_FILE:
        raise FormatError(f"{path}: too large for a signer file")
    return Signer.parse(data, str(path))


def save_signer(signer: Signer, path: str | Path) -> Path:
    """Write the public signer file; an existing file must be this signer's (it is never replaced)."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if load_signer(path) != signer:
            raise UserError(f"{path}: holds another owner's signer; refusing to replace it")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(signer.to_bytes())
    return path
