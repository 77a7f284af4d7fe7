"""The owner's public signer file and detached signatures (Ed25519, ``cryptography``).

The owner signs the exact bytes of ``manifest.json``; the signature goes beside it in
``manifest.sig``. Whoever holds the owner's signer file (the public key: safe to hand to anyone)
can check that a manifest, and through its sha256 list every object of the bundle, is the owner's.
The signing key itself is derived from the owner's key file (``pipeline.keys``); nothing here can sign.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import ClassVar, Literal, Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import model_validator
from pydantic_core import PydanticCustomError

from contract.errors import FormatError, UserError, quoted
from contract.formats import Base64Of32, Base64Of64, Document, Hex32
from contract.outputs import OutputKind, write_new

_MAX_FILE = 4096  # a signer or signature file is a few hundred bytes


def fingerprint(public_key: bytes) -> str:
    """A short public id of a signing key, shown in messages and recorded in manifests."""
    return hashlib.sha256(b"cipherseg/v1/signer\0" + public_key).hexdigest()[:32]


class Signature(Document):
    """A detached signature of a manifest, naming the signer that made it."""

    FORMAT: ClassVar[str] = "cipherseg-signature"
    VERSION: ClassVar[int] = 1

    format: Literal["cipherseg-signature"] = "cipherseg-signature"
    format_version: Literal[1] = 1
    algorithm: Literal["ed25519"] = "ed25519"
    signer: Hex32  # fingerprint of the signing key, for messages
    signature: Base64Of64

    @classmethod
    def of(cls, signer: str, signature: bytes) -> Signature:
        return cls(signer=signer, signature=base64.b64encode(signature).decode())

    @property
    def signature_bytes(self) -> bytes:
        return base64.b64decode(self.signature)


class Signer(Document):
    """The owner's public verification key, as kept in the signer file the cloud is given."""

    FORMAT: ClassVar[str] = "cipherseg-signer"
    VERSION: ClassVar[int] = 1

    format: Literal["cipherseg-signer"] = "cipherseg-signer"
    format_version: Literal[1] = 1
    algorithm: Literal["ed25519"] = "ed25519"
    public_key: Base64Of32
    fingerprint: Hex32

    @model_validator(mode="after")
    def _fingerprint_matches(self) -> Self:
        if self.fingerprint != fingerprint(self.key_bytes):
            raise PydanticCustomError("fingerprint", "corrupt signer file (its fingerprint does not match its public key)")
        return self

    @classmethod
    def of(cls, public_key: bytes) -> Signer:
        return cls(public_key=base64.b64encode(public_key).decode(), fingerprint=fingerprint(public_key))

    @property
    def key_bytes(self) -> bytes:
        return base64.b64decode(self.public_key)

    def verifies(self, message: bytes, signature: Signature) -> bool:
        """Whether ``signature`` is this signer's signature of ``message``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.key_bytes).verify(signature.signature_bytes, message)
        except InvalidSignature:
            return False
        return True


def read_small(path: str | Path, what: str, limit: int = _MAX_FILE) -> bytes:
    """The bytes of a small local file (at most ``limit`` bytes), or UserError naming it."""
    path = Path(path)
    try:
        if not path.is_file():
            raise UserError(f"{quoted(path)}: no {what} here")
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as error:
        raise UserError(f"{quoted(path)}: cannot read the {what} ({error.strerror})") from None
    if len(data) > limit:
        raise FormatError(f"{quoted(path)}: too large for a {what}")
    return data


def load_signer(path: str | Path) -> Signer:
    """Read a signer file (a local path); UserError naming it if it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{quoted(path)}: no signer file here (the owner's --stage keygen writes it beside the key)")
    return Signer.parse(read_small(path, "signer file"), str(path))


def save_signer(signer: Signer, path: str | Path) -> Path:
    """Write the public signer file; an existing file must be this signer's (it is never replaced)."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if load_signer(path) != signer:
            raise UserError(f"{quoted(path)}: holds another owner's signer; refusing to replace it")
        return path
    write_new(path, signer.to_bytes(), OutputKind.SIGNER, mode=0o644)
    return path
