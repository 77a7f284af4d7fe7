"""The bundle the owner publishes and the cloud reads, and the keyless check the cloud runs first.

    <bundle>/dataset.zarr/...        the objects of the dataset store (StoreAttributes.objects())
    <bundle>/backbone.safetensors    the checkpoint
    <bundle>/manifest.json           Manifest: size and sha256 of every object above, the description
    <bundle>/manifest.sig            the owner's Ed25519 signature of manifest.json's bytes

Every access goes through fsspec (local directories and ``s3://`` alike). On a local filesystem a
bundle holds regular files and directories only: symbolic links and special files are refused,
so nothing the check accepts can lead outside the bundle.
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

from contract.errors import UserError
from contract.formats import (
    CheckpointMetadata,
    CipherSpec,
    FormatError,
    Manifest,
    Normalization,
    ObjectEntry,
    StoreAttributes,
    as_object,
    describe_cipher,
    parse_json,
)
from contract.signing import Signature, Signer

DATASET = "dataset.zarr"
CHECKPOINT = "backbone.safetensors"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
# The owner's note of what an unfinished publish may write or remove: present only while no manifest is.
PENDING = "publish.pending.json"

CHUNK = 4 << 20
_MAX_DOCUMENT = 64 << 20  # a manifest of a million objects is ~150 MB... of 300k shards, well under this
_MAX_SAFETENSORS_HEADER = 100_000_000  # the safetensors format's own limit
_HASH_THREADS = 8  # object stores answer many reads at once; locally the disk and hashlib share


# --- locations and listings --------------------------------------------------------------------


def open_location(location: str, storage_options: Mapping[str, Any] | None = None) -> tuple[AbstractFileSystem, str]:
    """The filesystem and root path of a bundle or store location, which must be a directory."""
    fs, root = url_to_fs(location, **(storage_options or {}))
    root = root.rstrip("/") or "/"
    if isinstance(fs, LocalFileSystem):
        if os.path.islink(root) and not os.path.exists(root):
            raise UserError(f"{location}: a symbolic link to nothing")
        if not os.path.exists(root):
            raise UserError(f"{location}: no such directory")
        if not os.path.isdir(root):
            raise UserError(f"{location}: a file, not a directory")
    return fs, root


@dataclass(frozen=True)
class Listing:
    """The regular files under a root (name relative to the root -> size), and what else is there."""

    objects: dict[str, int]
    problems: list[str]  # "<name>: <what it is>" for links, special files and unreadable entries


def list_objects(fs: AbstractFileSystem, root: str) -> Listing:
    """Every object under ``root``; on a local filesystem, symbolic links and special files are problems."""
    if not isinstance(fs, LocalFileSystem):
        fs.invalidate_cache(root)  # listings are cached per filesystem instance: see what is there now
        found = fs.find(root, detail=True) if fs.exists(root) else {}
        return Listing({posixpath.relpath(path, root): info["size"] for path, info in found.items()}, [])

    objects, problems = {}, []
    if not os.path.lexists(root):
        return Listing(objects, problems)

    def failed(error: OSError) -> None:
        problems.append(f"{posixpath.relpath(error.filename, root)}: unreadable ({error.strerror})")

    for directory, dirnames, filenames in os.walk(root, onerror=failed):
        for name in dirnames + filenames:
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, root).replace(os.sep, "/")
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                problems.append(f"{relative}: a symbolic link (a bundle holds regular files only)")
            elif stat.S_ISREG(mode):
                objects[relative] = os.lstat(path).st_size
            elif not stat.S_ISDIR(mode):
                problems.append(f"{relative}: a special file, not a regular file")
    return Listing(objects, problems)


def read_document(fs: AbstractFileSystem, path: str, where: str, limit: int = _MAX_DOCUMENT) -> bytes:
    """The bytes of a small object (JSON metadata), at most ``limit``; UserError naming ``where``."""
    try:
        with fs.open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise UserError(f"{where}: not found") from None
    except IsADirectoryError:
        raise UserError(f"{where}: a directory, not a file") from None
    if len(data) > limit:
        raise FormatError(f"{where}: larger than {limit} bytes, too large for what it should be")
    return data


def read_chunks(fs: AbstractFileSystem, path: str) -> Iterator[bytes]:
    with fs.open(path, "rb") as f:
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


def hash_object(
    fs: AbstractFileSystem, path: str, patterns: Mapping[str, bytes] | None = None
) -> tuple[ObjectEntry, list[str]]:
    """An object's size and sha256, and which of ``patterns`` (name -> bytes) occur in it."""
    digest, size, scanner = hashlib.sha256(), 0, PatternScanner(patterns or {})
    for chunk in read_chunks(fs, path):
        digest.update(chunk)
        scanner.update(chunk)
        size += len(chunk)
    return ObjectEntry(size, digest.hexdigest()), list(scanner.found)


# --- what the objects say about themselves ------------------------------------------------------


def read_store_attributes(fs: AbstractFileSystem, root: str, where: str) -> StoreAttributes:
    """The attributes of the dataset store at ``root``, from its zarr.json (``where`` names it)."""
    where = f"{where}/zarr.json"
    document = as_object(parse_json(read_document(fs, f"{root}/zarr.json", where), where), where)
    if document.get("zarr_format") != 3 or document.get("node_type") != "group":
        raise FormatError(f"{where}: not a Zarr v3 group")
    return StoreAttributes.parse(document.get("attributes", {}), where)


def read_safetensors_header(
    fs: AbstractFileSystem, path: str, where: str
) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """The metadata and tensor shapes of a safetensors file, from its header alone."""
    try:
        with fs.open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if not 0 < length <= _MAX_SAFETENSORS_HEADER:
                raise FormatError(f"{where}: not a safetensors file (a header of {length} bytes)")
            header = as_object(parse_json(f.read(length), where), where)
    except FileNotFoundError:
        raise UserError(f"{where}: not found") from None
    except IsADirectoryError:
        raise UserError(f"{where}: a directory, not a checkpoint file") from None
    metadata = header.pop("__metadata__", None) or {}
    try:
        shapes = {name: tuple(entry["shape"]) for name, entry in header.items()}
    except (TypeError, KeyError):
        raise FormatError(f"{where}: not a safetensors file (malformed tensor entries)") from None
    return metadata, shapes


def read_checkpoint_metadata(fs: AbstractFileSystem, path: str, where: str) -> CheckpointMetadata:
    return CheckpointMetadata.parse(read_safetensors_header(fs, path, where)[0], where)


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
        raise UserError(f"{store_where}: the dataset store is incomplete (its encrypt run did not finish)")
    if checkpoint.cipher != store.cipher:
        raise UserError(
            f"{checkpoint_where}: made for {describe_cipher(checkpoint.cipher)}, "
            f"but the dataset store {store_where} holds data of {describe_cipher(store.cipher)}"
        )
    if checkpoint.channel_order != store.channel_order:
        raise UserError(
            f"{checkpoint_where}: reads {checkpoint.channel_order} images, "
            f"but the dataset store {store_where} holds {store.channel_order}"
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
    signer: str | None  # the fingerprint of the owner it was checked against; None: integrity only

    @property
    def bytes(self) -> int:
        return sum(entry.size for entry in self.manifest.objects.values())

    def summary(self) -> str:
        """One line for logs: what was checked, and what was not."""
        what = f"{len(self.manifest.objects)} objects, {self.bytes / 2**20:.1f} MiB, {describe_cipher(self.manifest.cipher)}"
        if self.signer:
            return f"{self.location}: verified, signed by owner {self.signer}; {what}"
        return (
            f"{self.location}: integrity verified ({what}); authenticity NOT checked: "
            "give the owner's signer file (--signer) to check who published it"
        )


def verify_bundle(
    location: str,
    *,
    signer: Signer | None = None,
    patterns: Mapping[str, bytes] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Verified:
    """Check a bundle: what ``signer`` signed (if given), and that it is whole and self-consistent.

    With ``signer``, the manifest must carry that owner's valid signature: then every object is the
    owner's. Always: the bundle holds exactly the objects its manifest lists, each of the listed
    size and sha256, no link or special file; the objects are those a bundle of its dataset store
    has; the store and checkpoint agree with each other and with the manifest. ``patterns`` (name
    -> bytes) are looked for in every object: none may occur (the owner passes its key's forms).
    Raises UserError naming each object at fault.
    """
    fs, root = open_location(location, storage_options)
    listing = list_objects(fs, root)
    if MANIFEST not in listing.objects:
        if any(name.startswith(f"{MANIFEST}/") for name in listing.objects) or any(
            problem.startswith(f"{MANIFEST}:") for problem in listing.problems
        ):
            raise UserError(f"{location}/{MANIFEST}: not a regular file")
        raise UserError(f"{location}: no {MANIFEST}: not a bundle, or its publication did not finish")
    manifest_bytes = read_document(fs, f"{root}/{MANIFEST}", f"{location}/{MANIFEST}")
    if signer is not None:
        _check_signature(fs, root, location, listing, manifest_bytes, signer)
    manifest = Manifest.parse(manifest_bytes, f"{location}/{MANIFEST}")

    problems = list(listing.problems)
    listed = manifest.objects
    present = {name: size for name, size in listing.objects.items() if name not in (MANIFEST, SIGNATURE)}
    for name in sorted(listed.keys() - present.keys()):
        inside = any(other.startswith(f"{name}/") for other in present)
        problems.append(f"{name}: {'a directory where an object should be' if inside else 'listed in the manifest but missing'}")
    problems += [f"{name}: not listed in the manifest" for name in sorted(present.keys() - listed.keys())]
    checked = sorted(listed.keys() & present.keys())
    results = _hash_all(fs, [f"{root}/{name}" for name in checked], patterns)
    for name, (entry, found) in zip(checked, results):
        expected = listed[name]
        if entry.size != expected.size:
            problems.append(f"{name}: {entry.size} bytes, the manifest says {expected.size}")
        elif entry.sha256 != expected.sha256:
            problems.append(f"{name}: sha256 {entry.sha256[:16]}... is not the manifest's {expected.sha256[:16]}...")
        problems += [f"{name}: contains {what}" for what in found]
    if patterns:
        for name in (MANIFEST, SIGNATURE):
            if name in listing.objects:
                problems += [f"{name}: contains {what}" for what in hash_object(fs, f"{root}/{name}", patterns)[1]]
    if problems:
        raise UserError(failure(location, problems))

    # Every object is the one the manifest lists: now what they say must agree with it and each other.
    store = read_store_attributes(fs, f"{root}/{DATASET}", f"{location}/{DATASET}")
    checkpoint = read_checkpoint_metadata(fs, f"{root}/{CHECKPOINT}", f"{location}/{CHECKPOINT}")
    description = describe(store, checkpoint, f"{location}/{DATASET}", f"{location}/{CHECKPOINT}")
    expected_objects = bundle_objects(store)
    problems = [f"{name}: not an object of this bundle's format" for name in sorted(listed.keys() - expected_objects)]
    problems += [f"{name}: missing from the manifest (the bundle is incomplete)" for name in sorted(expected_objects - listed.keys())]
    stated = Description(manifest.cipher, manifest.channel_order, manifest.normalization, manifest.splits)
    problems += [
        f"{MANIFEST}: {name} is {getattr(stated, name)!r}, but the bundle's objects say {getattr(description, name)!r}"
        for name in ("cipher", "channel_order", "normalization", "splits")
        if getattr(stated, name) != getattr(description, name)
    ]
    if problems:
        raise UserError(failure(location, problems))
    return Verified(location, manifest, signer.fingerprint if signer else None)


def _check_signature(
    fs: AbstractFileSystem, root: str, location: str, listing: Listing, manifest: bytes, signer: Signer
) -> None:
    if SIGNATURE not in listing.objects:
        raise UserError(f"{location}: not signed (no {SIGNATURE}); refusing it as owner {signer.fingerprint}'s bundle")
    signature = Signature.parse(read_document(fs, f"{root}/{SIGNATURE}", f"{location}/{SIGNATURE}"), f"{location}/{SIGNATURE}")
    if not signer.verifies(manifest, signature):
        by = "" if signature.signer == signer.fingerprint else f" (it names signer {signature.signer})"
        raise UserError(
            f"{location}/{MANIFEST}: not signed by owner {signer.fingerprint}{by}: "
            "the manifest was changed after signing, or another owner published it"
        )


def _hash_all(
    fs: AbstractFileSystem, paths: list[str], patterns: Mapping[str, bytes] | None
) -> list[tuple[ObjectEntry, list[str]]]:
    if len(paths) < 2:
        return [hash_object(fs, path, patterns) for path in paths]
    with ThreadPoolExecutor(_HASH_THREADS) as pool:  # hashlib and reads release the GIL
        return list(pool.map(lambda path: hash_object(fs, path, patterns), paths))


def failure(location: str, problems: list[str], shown: int = 8) -> str:
    """One line: the location, and its problems (the first ``shown`` of them)."""
    more = f"; and {len(problems) - shown} more" if len(problems) > shown else ""
    return f"{location}: verification failed ({len(problems)} problem{'s' * (len(problems) > 1)}): " + "; ".join(problems[:shown]) + more
