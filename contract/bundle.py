"""The bundle the owner publishes and the cloud reads, and the keyless check the cloud runs first.

    <bundle>/dataset.zarr/...        the objects of the dataset store (StoreAttributes.objects())
    <bundle>/backbone.safetensors    the checkpoint
    <bundle>/manifest.json           Manifest: size and sha256 of every object above, the description, the sequence
    <bundle>/manifest.sig            the owner's Ed25519 signature of manifest.json's bytes

Every access goes through fsspec (local directories and ``s3://`` alike). On a local filesystem a
bundle holds regular files and directories only: symbolic links, hard links (whose bytes another
name outside the bundle can change) and special files are refused, so nothing the check accepts can
lead outside the bundle. Every metadata object and the checkpoint's header must be in the closed form
publish writes (:mod:`contract.canonical`).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from contract.canonical import (
    SafetensorsHeader,
    canonical_checkpoint_header,
    canonical_store_object,
    is_metadata,
    parse_safetensors_header,
    read_header_bytes,
    store_attributes,
)
from contract.errors import FormatError, UserError, quoted
from contract.formats import (
    MAX_DOCUMENT,
    BundleReference,
    CheckpointMetadata,
    CipherSpec,
    Manifest,
    Normalization,
    ObjectEntry,
    StoreAttributes,
    describe_cipher,
)
from contract.signing import Signature, Signer

DATASET = "dataset.zarr"
CHECKPOINT = "backbone.safetensors"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
# While a publish runs: its signed note of what it may write or remove, and the last manifest (still signed
# by manifest.sig until the new signature replaces it). The cloud never reads either.
PENDING = "publish.pending.json"
PREVIOUS = "manifest.previous.json"
CONTROL = (MANIFEST, SIGNATURE, PENDING, PREVIOUS)

CHUNK = 4 << 20
_HASH_THREADS = 8  # object stores answer many reads at once; locally the disk and hashlib share


# --- locations and listings --------------------------------------------------------------------


def open_location(location: str, storage_options: Mapping[str, Any] | None = None) -> tuple[AbstractFileSystem, str]:
    """The filesystem and root path of a bundle or store location, which must be a directory."""
    fs, root = url_to_fs(location, **(storage_options or {}))
    root = root.rstrip("/") or "/"
    if isinstance(fs, LocalFileSystem):
        if os.path.islink(root) and not os.path.exists(root):
            raise UserError(f"{quoted(location)}: a symbolic link to nothing")
        if not os.path.exists(root):
            raise UserError(f"{quoted(location)}: no such directory")
        if not os.path.isdir(root):
            raise UserError(f"{quoted(location)}: a file, not a directory")
    return fs, root


@dataclass(frozen=True)
class Listing:
    """The regular files under a root (name relative to the root -> size), and what else is there."""

    objects: dict[str, int]
    problems: list[str]  # "<name>: <what it is>" for links, special files and unreadable entries


def list_objects(fs: AbstractFileSystem, root: str, *, hard_links: bool = True) -> Listing:
    """Every object under ``root``; on a local filesystem, symbolic links and special files are problems,
    and so are hard links unless ``hard_links``."""
    if not isinstance(fs, LocalFileSystem):
        fs.invalidate_cache(root)  # listings are cached per filesystem instance: see what is there now
        found = fs.find(root, detail=True) if fs.exists(root) else {}
        return Listing({posixpath.relpath(path, root): info["size"] for path, info in found.items()}, [])

    objects, problems = {}, []
    if not os.path.lexists(root):
        return Listing(objects, problems)

    def failed(error: OSError) -> None:
        problems.append(f"{quoted(posixpath.relpath(error.filename, root))}: unreadable ({error.strerror})")

    for directory, dirnames, filenames in os.walk(root, onerror=failed):
        for name in dirnames + filenames:
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, root).replace(os.sep, "/")
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                problems.append(f"{quoted(relative)}: a symbolic link (a bundle holds regular files only)")
            elif stat.S_ISREG(info.st_mode) and info.st_nlink > 1 and not hard_links:
                problems.append(f"{quoted(relative)}: a hard link (another name can change its bytes after they were checked)")
            elif stat.S_ISREG(info.st_mode):
                objects[relative] = info.st_size
            elif not stat.S_ISDIR(info.st_mode):
                problems.append(f"{quoted(relative)}: a special file, not a regular file")
    return Listing(objects, problems)


def read_document(fs: AbstractFileSystem, path: str, where: str, limit: int = MAX_DOCUMENT) -> bytes:
    """The bytes of a small object (JSON metadata), at most ``limit``; UserError naming ``where``."""
    try:
        with fs.open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise UserError(f"{quoted(where)}: not found") from None
    except IsADirectoryError:
        raise UserError(f"{quoted(where)}: a directory, not a file") from None
    if len(data) > limit:
        raise FormatError(f"{quoted(where)}: larger than {limit} bytes, too large for what it should be")
    return data


def read_chunks(fs: AbstractFileSystem, path: str, start: int = 0) -> Iterator[bytes]:
    with fs.open(path, "rb") as f:
        f.seek(start)
        while chunk := f.read(CHUNK):
            yield chunk


class PatternScanner:
    """Finds any of some byte strings in a stream of chunks, also across chunk boundaries."""

    def __init__(self, patterns: Mapping[str, bytes]) -> None:
        self.patterns = dict(patterns)
        self.overlap = max(map(len, self.patterns.values()), default=1) - 1
        self.tail = b""
        self.found: dict[str, None] = {}  # in the order of ``patterns``: the plainest form named first

    def update(self, chunk: bytes) -> None:
        if not self.patterns:
            return
        window = self.tail + chunk
        self.found = {name: None for name, pattern in self.patterns.items() if name in self.found or pattern in window}
        self.tail = window[-self.overlap :] if self.overlap else b""


def digest_of(chunks: Iterator[bytes], patterns: Mapping[str, bytes] | None = None) -> tuple[ObjectEntry, list[str]]:
    """The size and sha256 of a stream of chunks, and which of ``patterns`` (name -> bytes) occur in it."""
    digest, size, scanner = hashlib.sha256(), 0, PatternScanner(patterns or {})
    for chunk in chunks:
        digest.update(chunk)
        scanner.update(chunk)
        size += len(chunk)
    return ObjectEntry(size=size, sha256=digest.hexdigest()), list(scanner.found)


def hash_object(
    fs: AbstractFileSystem, path: str, patterns: Mapping[str, bytes] | None = None
) -> tuple[ObjectEntry, list[str]]:
    """An object's size and sha256, and which of ``patterns`` (name -> bytes) occur in it."""
    return digest_of(read_chunks(fs, path), patterns)


# --- what the objects say about themselves ------------------------------------------------------


def read_store_attributes(fs: AbstractFileSystem, root: str, where: str) -> StoreAttributes:
    """The attributes of the dataset store at ``root``, from its zarr.json (``where`` names the store)."""
    where = f"{where}/zarr.json"
    return store_attributes(read_document(fs, f"{root}/zarr.json", where), where)


def read_safetensors_header(fs: AbstractFileSystem, path: str, where: str) -> SafetensorsHeader:
    """The metadata and tensors of a safetensors file, from its header (checked against the file's size)."""
    try:
        with fs.open(path, "rb") as f:
            length = read_header_bytes(f.read(8), where)
            header = f.read(length)
            size = fs.size(path)
    except FileNotFoundError:
        raise UserError(f"{quoted(where)}: not found") from None
    except IsADirectoryError:
        raise UserError(f"{quoted(where)}: a directory, not a checkpoint file") from None
    if len(header) != length:
        raise FormatError(f"{quoted(where)}: not a safetensors file (cut short in its header)")
    return parse_safetensors_header(header, where, data_length=size - 8 - length)


def read_checkpoint_metadata(fs: AbstractFileSystem, path: str, where: str) -> CheckpointMetadata:
    return CheckpointMetadata.parse_metadata(read_safetensors_header(fs, path, where).metadata, where)


@dataclass(frozen=True)
class Description:
    """What a bundle holds, as its manifest states it: agreed on by its store and its checkpoint."""

    cipher: CipherSpec | None
    channel_order: str
    normalization: Normalization
    splits: dict[str, int]


def describe(store: StoreAttributes, checkpoint: CheckpointMetadata, store_where: str, checkpoint_where: str) -> Description:
    """The description of a store and a checkpoint that belong together; UserError if they do not."""
    if not store.complete:
        raise UserError(f"{quoted(store_where)}: the dataset store is incomplete (its encrypt run did not finish)")
    if checkpoint.cipher != store.cipher:
        raise UserError(
            f"{quoted(checkpoint_where)}: made for {describe_cipher(checkpoint.cipher)}, "
            f"but the dataset store {quoted(store_where)} holds data of {describe_cipher(store.cipher)}"
        )
    return Description(store.cipher, store.channel_order, checkpoint.normalization, dict(store.splits))


def bundle_objects(store: StoreAttributes) -> set[str]:
    """The name of every object a bundle of this store holds besides the manifest and its signature."""
    return {CHECKPOINT, *(f"{DATASET}/{name}" for name in store.objects())}


# --- the check ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verified:
    """A bundle that passed :func:`verify_bundle`."""

    location: str
    manifest: Manifest
    manifest_sha256: str
    signer: str | None  # the fingerprint of the owner it was checked against; None: integrity only

    @property
    def bytes(self) -> int:
        return sum(entry.size for entry in self.manifest.objects.values())

    def reference(self) -> BundleReference:
        """Which publication this is, as a model's provenance records it."""
        return BundleReference(
            location=self.location, manifest_sha256=self.manifest_sha256, sequence=self.manifest.sequence, signer=self.signer
        )

    def summary(self) -> str:
        """One line for logs: what was checked, and what was not."""
        what = (
            f"publication {self.manifest.sequence}, {len(self.manifest.objects)} objects, "
            f"{self.bytes / 2**20:.1f} MiB, {describe_cipher(self.manifest.cipher)}"
        )
        if self.signer:
            return f"{quoted(self.location)}: verified, signed by owner {self.signer}; {what}"
        return (
            f"{quoted(self.location)}: integrity verified ({what}); authenticity NOT checked: "
            "give the owner's signer file (--signer) to check who published it"
        )


def verify_bundle(
    location: str,
    *,
    signer: Signer | None = None,
    patterns: Mapping[str, bytes] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Verified:
    """Check a bundle: what ``signer`` signed (if given), and that it is whole, closed and self-consistent.

    With ``signer``, the manifest must carry that owner's valid signature: then every object is the
    owner's. Always: the bundle holds exactly the objects its manifest lists, each of the listed
    size and sha256, no link or special file; the objects are those a bundle of its dataset store
    has, every metadata object and the checkpoint's header in closed form; the store and checkpoint
    agree with each other and with the manifest. ``patterns`` (name -> bytes) are looked for in every
    object: none may occur (the owner passes its key's forms). Raises UserError naming each object at fault.
    """
    location = location.rstrip("/")
    fs, root = open_location(location, storage_options)
    listing = list_objects(fs, root, hard_links=False)
    if MANIFEST not in listing.objects:
        if any(name.startswith(f"{MANIFEST}/") for name in listing.objects) or any(
            problem.startswith(f"{MANIFEST}:") for problem in listing.problems
        ):
            raise UserError(f"{quoted(location)}/{MANIFEST}: not a regular file")
        raise UserError(f"{quoted(location)}: no {MANIFEST}: not a bundle, or its publication did not finish")
    manifest_bytes = read_document(fs, f"{root}/{MANIFEST}", f"{location}/{MANIFEST}")
    if signer is not None:
        _check_signature(fs, root, location, listing, manifest_bytes, signer)
    manifest = Manifest.parse(manifest_bytes, f"{location}/{MANIFEST}")

    problems = list(listing.problems)
    listed = manifest.objects
    # An unfinished publish's notes are the owner's notes to itself: never read here.
    present = {name: size for name, size in listing.objects.items() if name not in CONTROL}
    for name in sorted(listed.keys() - present.keys()):
        inside = any(other.startswith(f"{name}/") for other in present)
        problems.append(f"{quoted(name)}: {'a directory where an object should be' if inside else 'listed in the manifest but missing'}")
    problems += [f"{quoted(name)}: not listed in the manifest" for name in sorted(present.keys() - listed.keys())]
    checked = sorted(listed.keys() & present.keys())
    results = _hash_all(fs, root, checked, patterns)
    documents = {}
    for name, (entry, found, data) in zip(checked, results):
        expected = listed[name]
        if entry.size != expected.size:
            problems.append(f"{quoted(name)}: {entry.size} bytes, the manifest says {expected.size}")
        elif entry.sha256 != expected.sha256:
            problems.append(f"{quoted(name)}: sha256 {entry.sha256[:16]}... is not the manifest's {expected.sha256[:16]}...")
        elif data is not None:
            documents[name] = data
        problems += [f"{quoted(name)}: contains {what}" for what in found]
    if patterns:
        for name in CONTROL:
            if name in listing.objects:
                problems += [f"{name}: contains {what}" for what in hash_object(fs, f"{root}/{name}", patterns)[1]]
    if problems:
        raise UserError(failure(location, problems))

    # Every object is the one the manifest lists: now what they say must be closed and agree.
    store_where, checkpoint_where = f"{location}/{DATASET}", f"{location}/{CHECKPOINT}"
    store = store_attributes(documents[f"{DATASET}/zarr.json"], f"{store_where}/zarr.json") if f"{DATASET}/zarr.json" in documents else None
    if store is None:
        raise UserError(failure(location, [f"{DATASET}/zarr.json: missing (not a bundle of a dataset store)"]))
    header = read_safetensors_header(fs, f"{root}/{CHECKPOINT}", checkpoint_where)
    checkpoint, closed_header = canonical_checkpoint_header(header, checkpoint_where)
    description = describe(store, checkpoint, store_where, checkpoint_where)
    expected_objects = bundle_objects(store)
    problems = [f"{quoted(name)}: not an object of this bundle's format" for name in sorted(listed.keys() - expected_objects)]
    problems += [f"{quoted(name)}: missing from the manifest (the bundle is incomplete)" for name in sorted(expected_objects - listed.keys())]
    if problems:
        raise UserError(failure(location, problems))
    if header.to_bytes() != closed_header.to_bytes():
        problems.append(f"{CHECKPOINT}: its header is not in the closed form publish writes")
    for name, data in documents.items():
        relative = name.removeprefix(f"{DATASET}/")
        try:
            if canonical_store_object(relative, data, store, f"{location}/{name}") != data:
                problems.append(f"{quoted(name)}: not in the closed form publish writes")
        except FormatError as error:
            problems.append(str(error).removeprefix(f"{quoted(location)}/"))
    stated = Description(manifest.cipher, manifest.channel_order, manifest.normalization, manifest.splits)
    problems += [
        f"{MANIFEST}: {name} is {getattr(stated, name)!r}, but the bundle's objects say {getattr(description, name)!r}"
        for name in ("cipher", "channel_order", "normalization", "splits")
        if getattr(stated, name) != getattr(description, name)
    ]
    if problems:
        raise UserError(failure(location, problems))
    return Verified(location, manifest, hashlib.sha256(manifest_bytes).hexdigest(), signer.fingerprint if signer else None)


def _check_signature(
    fs: AbstractFileSystem, root: str, location: str, listing: Listing, manifest: bytes, signer: Signer
) -> None:
    if SIGNATURE not in listing.objects:
        raise UserError(f"{quoted(location)}: not signed (no {SIGNATURE}); refusing it as owner {signer.fingerprint}'s bundle")
    where = f"{location}/{SIGNATURE}"
    signature = Signature.parse(read_document(fs, f"{root}/{SIGNATURE}", where, limit=4096), where)
    if not signer.verifies(manifest, signature):
        by = "" if signature.signer == signer.fingerprint else f" (it names signer {signature.signer})"
        raise UserError(
            f"{quoted(location)}/{MANIFEST}: not signed by owner {signer.fingerprint}{by}: "
            "the manifest was changed after signing, or another owner published it"
        )


def _hash_all(
    fs: AbstractFileSystem, root: str, names: list[str], patterns: Mapping[str, bytes] | None
) -> list[tuple[ObjectEntry, list[str], bytes | None]]:
    """Each object's entry and the patterns found in it; a metadata object's bytes too (it is read whole)."""

    def one(name: str) -> tuple[ObjectEntry, list[str], bytes | None]:
        if is_metadata(name) and name != CHECKPOINT:
            data = read_document(fs, f"{root}/{name}", name)
            return (*digest_of(iter([data]), patterns), data)
        return (*hash_object(fs, f"{root}/{name}", patterns), None)

    if len(names) < 2:
        return [one(name) for name in names]
    with ThreadPoolExecutor(_HASH_THREADS) as pool:  # hashlib and reads release the GIL
        return list(pool.map(one, names))


def failure(location: str, problems: list[str], shown: int = 8) -> str:
    """One line: the location, and its problems (the first ``shown`` of them)."""
    more = f"; and {len(problems) - shown} more" if len(problems) > shown else ""
    return (
        f"{quoted(location)}: verification failed ({len(problems)} problem{'s' * (len(problems) > 1)}): "
        + "; ".join(problems[:shown])
        + more
    )
