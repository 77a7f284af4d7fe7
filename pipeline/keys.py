"""The owner's secret key: generation, the key file, the public key id, the key-derived transform and
the owner's signing key.

A key is 256 random bits plus the cipher settings it is used with. Everything secret-dependent
is drawn from a keyed CSPRNG stream (HMAC-SHA256 in counter mode), so the same key gives the
same permutation on every machine and Python version, and distinct purposes (permutation,
negative-positive mask, key id) use domain-separated labels. The Ed25519 key that signs the
owner's bundles is derived from the same secret (HKDF-SHA256): the owner guards one file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from contract.bundle import CONTROL
from contract.errors import FormatError, quoted
from contract.formats import CipherSpec, KeyFile
from contract.outputs import OutputKind, write_new
from contract.signing import Signature, Signer, read_small
from pipeline.errors import PipelineError

SECRET_BYTES = 32
DEFAULT_BLOCK_SIZE = 16
# What marks a folder as a dataset store or a bundle: a key file must never be written inside one.
_STORE_OR_BUNDLE_MARKERS = ("zarr.json", *CONTROL)


@dataclass(frozen=True)
class Key:
    """A secret key and the cipher settings it belongs to.

    ``permutation`` and ``flip`` act on the canonical block vector: a PxPx3 block of an HWC RGB
    image flattened in (row, column, channel) order, index ``(r * P + c) * 3 + ch``.
    """

    secret: bytes = field(repr=False)
    block_size: int = DEFAULT_BLOCK_SIZE
    negative_positive: bool = False

    def __post_init__(self) -> None:
        if len(self.secret) != SECRET_BYTES:
            raise ValueError(f"a key secret has {SECRET_BYTES} bytes, not {len(self.secret)}")
        if self.block_size < 1:
            raise ValueError(f"block size must be positive, not {self.block_size}")

    @property
    def vector_length(self) -> int:
        return 3 * self.block_size**2

    @cached_property
    def key_id(self) -> str:
        """Public, one-way identifier of the key and its settings (safe to publish)."""
        spec = f"{self.block_size}/{int(self.negative_positive)}".encode()
        return hashlib.sha256(b"cipherseg/v1/key-id\0" + self.secret + b"\0" + spec).hexdigest()[:32]

    @cached_property
    def permutation(self) -> np.ndarray:
        """v'[k] = v[permutation[k]] for every block vector v."""
        words = _keystream(self.secret, f"permutation/{self.block_size}")
        return _fisher_yates(self.vector_length, words)

    @cached_property
    def flip(self) -> np.ndarray | None:
        """Positions k of the shuffled vector that are inverted (v'[k] = 255 - v'[k]), if enabled."""
        if not self.negative_positive:
            return None
        words = _keystream(self.secret, f"negative-positive/{self.block_size}")
        return np.array([next(words) & 1 for _ in range(self.vector_length)], dtype=bool)

    def spec(self) -> CipherSpec:
        """The public description of the cipher this key defines (no secret)."""
        return CipherSpec(key_id=self.key_id, block_size=self.block_size, negative_positive=self.negative_positive)

    def _signing_key(self) -> Ed25519PrivateKey:
        seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"cipherseg/v1/signing-key").derive(self.secret)
        return Ed25519PrivateKey.from_private_bytes(seed)

    def signer(self) -> Signer:
        """The owner's public verification key: what the cloud is given to check the owner's bundles."""
        return Signer.of(self._signing_key().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def sign(self, message: bytes) -> Signature:
        """The owner's Ed25519 signature of ``message`` (a manifest's bytes)."""
        return Signature.of(self.signer().fingerprint, self._signing_key().sign(message))

    def secret_patterns(self) -> dict[str, bytes]:
        """Every form in which this key's secrets could leak into a file: the secret and the signing
        seed as raw bytes, hex (lower and upper case) and base64 (standard and URL-safe, at each of the
        three byte alignments a longer base64 text can give them; padding never enters the pattern)."""
        patterns = {}
        for name, value in (("the secret key", self.secret), ("the signing key", self._signing_seed())):
            patterns[f"{name} bytes"] = value
            patterns[f"{name} in hex"] = value.hex().encode()
            patterns[f"{name} in upper-case hex"] = value.hex().upper().encode()
            for alignment in range(3):
                encoded = base64.b64encode(bytes(alignment) + value)
                # Characters wholly inside the secret's bits: 6-bit groups from the end of the prefix
                # to the start of the partial group at the secret's end.
                first, last = -(-8 * alignment // 6), (8 * (alignment + len(value))) // 6
                core = encoded[first:last]
                patterns[f"{name} in base64 (alignment {alignment})"] = core
                patterns[f"{name} in URL-safe base64 (alignment {alignment})"] = core.translate(_URLSAFE)
        return patterns

    def _signing_seed(self) -> bytes:
        return self._signing_key().private_bytes_raw()


def generate(block_size: int = DEFAULT_BLOCK_SIZE, negative_positive: bool = False) -> Key:
    """A new key with a 256-bit secret from the operating system's CSPRNG."""
    return Key(secrets.token_bytes(SECRET_BYTES), block_size, negative_positive)


def save(key: Key, path: str | Path, *, not_inside: Iterable[str | Path] = ()) -> Path:
    """Write ``key`` to a new file readable by its owner only (mode 0600).

    Refuses to overwrite an existing key, and to write inside a dataset store or a bundle: any folder
    holding a Zarr or bundle marker, named ``*.zarr``, or listed in ``not_inside`` (the configured
    store and bundle, which may not exist yet). Publishing and encrypting remove objects there.
    """
    path = Path(path)
    check_key_path(path, not_inside)
    document = KeyFile(secret=key.secret.hex(), key_id=key.key_id, block_size=key.block_size, negative_positive=key.negative_positive)
    return write_new(path, document.model_dump_json(indent=2).encode() + b"\n", OutputKind.KEY, mode=0o600)


def check_key_path(path: str | Path, not_inside: Iterable[str | Path] = ()) -> None:
    """Refuse a key path where a file is, or inside a dataset store or a bundle (see :func:`save`), before
    anything is written."""
    path = Path(path)
    if path.exists() or path.is_symlink():  # never replace a key: its data would become undecryptable
        raise PipelineError(f"{quoted(path)}: a file already exists there; refusing to overwrite it with a key")
    forbidden = {Path(p).resolve() for p in not_inside if "://" not in str(p)}
    for parent in path.resolve().parents:
        if (
            parent in forbidden
            or parent.suffix == ".zarr"
            or any((parent / marker).exists() for marker in _STORE_OR_BUNDLE_MARKERS)
        ):
            raise PipelineError(f"{quoted(path)}: inside the dataset store or bundle {quoted(parent)}; keep the key outside them")


def load(path: str | Path) -> Key:
    """Read a key file, checking its format and integrity (the stored key id must match)."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{quoted(path)}: no key file here (create one with --stage keygen)")
    try:
        document = KeyFile.parse(read_small(path, "key file"), str(path))
    except FormatError as error:
        raise PipelineError(f"{error} (not a readable cipherseg key file)") from None
    key = Key(bytes.fromhex(document.secret), document.block_size, document.negative_positive)
    if document.key_id != key.key_id:
        raise PipelineError(f"{quoted(path)}: corrupt key file (its key id does not match its secret)")
    return key


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _keystream(secret: bytes, label: str) -> Iterator[int]:
    """Unsigned 32-bit words of HMAC-SHA256(secret, label || counter), counter = 0, 1, ..."""
    prefix = f"cipherseg/v1/{label}\0".encode()
    counter = 0
    while True:
        block = hmac.digest(secret, prefix + counter.to_bytes(8, "big"), "sha256")
        yield from (int.from_bytes(block[i : i + 4], "big") for i in range(0, len(block), 4))
        counter += 1


def _fisher_yates(n: int, words: Iterator[int]) -> np.ndarray:
    """A uniformly random permutation of range(n), unbiased by rejection sampling."""
    items = list(range(n))
    for i in range(n - 1, 0, -1):
        bound = i + 1
        limit = 2**32 - 2**32 % bound  # largest multiple of bound: draws past it would bias j
        word = next(words)
        while word >= limit:
            word = next(words)
        j = word % bound
        items[i], items[j] = items[j], items[i]
    return np.array(items, dtype=np.int64)
