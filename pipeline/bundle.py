"""Publishing: the owner's dataset store and checkpoint -> the signed bundle the cloud is given.

Verify, then commit. Publish copies exactly the objects the store format defines (array metadata,
shards, completion records: :meth:`contract.formats.StoreAttributes.objects`) and the checkpoint,
and leaves out anything else in the store folder, naming it. Every object is hashed and scanned for
the owner's key in the one pass that copies it, and becomes visible under its name only once it
passed (:func:`pipeline.storage.commit_on_success`); a shard must also hash to what its completion
record says, so a shard damaged after it was written is never published. The manifest and its
signature are written only when every object passed: a publish that fails, for any reason or at
any moment (SIGKILL included), leaves no manifest, and nothing verifies.

Publish deletes only objects that the bundle's previous manifest listed, or that an interrupted
publish noted in its pending record: nothing else in the bundle location is ever removed.

Order of writes: the manifest renamed to the pending record (one step: a bundle with a manifest
holds nothing else), pending record (what this publish may write or remove), remove signature,
remove stale objects, copy, signature, remove the pending record, manifest.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from contract.bundle import (
    CHECKPOINT,
    DATASET,
    MANIFEST,
    PENDING,
    SIGNATURE,
    PatternScanner,
    describe,
    hash_object,
    list_objects,
    open_location,
    read_checkpoint_metadata,
    read_chunks,
    read_document,
    read_store_attributes,
    verify_bundle,
    Verified,
)
from contract.errors import UserError
from contract.formats import Manifest, ObjectEntry, ShardRecord, as_object, parse_json, shard_record
from pipeline.errors import PipelineError
from pipeline.keys import Key
from pipeline.storage import commit_on_success, is_temporary, put_atomic

_PENDING_FORMAT = "cipherseg-publish-pending"


@dataclass(frozen=True)
class PublishSummary:
    """What a publish did."""

    bundle: str
    manifest: Manifest
    copied: int
    reused: int
    removed: tuple[str, ...]
    left_out: tuple[str, ...]  # what the store folder holds beyond the store's objects

    @property
    def bytes(self) -> int:
        return sum(entry.size for entry in self.manifest.objects.values())


def publish(
    store: str, checkpoint: str, bundle: str, key: Key, *, storage_options: Mapping[str, Any] | None = None
) -> PublishSummary:
    """Publish the dataset store and checkpoint as the bundle at ``bundle``, signed with ``key``'s signing key.

    A bundle is encrypted, or plain (store and checkpoint written without a key: the paper's
    baseline), and signed by the owner either way. Refuses an incomplete store, a store and a
    checkpoint that do not belong together, data of another key than ``key``, a source object
    holding any form of the key, and a bundle location holding anything no publish put there.
    Shards unchanged since the last publish are not copied again.
    """
    options = dict(storage_options or {})
    store_fs, store_root = open_location(store, options)
    attributes = read_store_attributes(store_fs, store_root, store)
    checkpoint_fs, checkpoint_path = url_to_fs(checkpoint, **options)
    description = describe(attributes, read_checkpoint_metadata(checkpoint_fs, checkpoint_path, checkpoint), store, checkpoint)
    if attributes.cipher is not None and attributes.cipher.key_id != key.key_id:
        raise PipelineError(f"{store}: encrypted with key id {attributes.cipher.key_id}, not with the owner's key {key.key_id}")

    listing = list_objects(store_fs, store_root)
    expected = attributes.objects()
    missing = sorted(expected - listing.objects.keys())
    if missing:
        raise PipelineError(f"{store}/{missing[0]}: missing ({len(missing)} objects of the store are); run --stage encrypt again")
    left_out = tuple(sorted(listing.objects.keys() - expected) + listing.problems)
    records = _shard_digests(store_fs, store_root, store, attributes)
    sources = {f"{DATASET}/{name}": (store_fs, f"{store_root}/{name}", f"{store}/{name}") for name in expected}
    sources[CHECKPOINT] = (checkpoint_fs, checkpoint_path, checkpoint)

    fs, root = _bundle_location(bundle, options, store_fs, store_root)
    present = list_objects(fs, root)
    if present.problems:
        raise PipelineError(f"{bundle}/{present.problems[0]}; a bundle location holds regular files only")
    previous_entries = _previous_entries(fs, root, bundle) if MANIFEST in present.objects else {}
    previous = previous_entries.keys() | _pending_objects(fs, root, bundle, present.objects)
    temporaries = {name for name in present.objects if is_temporary(name)}
    ours = previous | sources.keys() | temporaries | {MANIFEST, SIGNATURE, PENDING}
    foreign = sorted(present.objects.keys() - ours)
    if foreign:
        raise PipelineError(f"{bundle}/{foreign[0]}: no publish put this here; refusing to publish into a folder with other files")

    # From here on the bundle changes: note first what this publish may write or remove. The manifest
    # becomes the first note in one rename, so that no bundle with a manifest holds a pending record.
    if MANIFEST in present.objects:
        fs.mv(f"{root}/{MANIFEST}", f"{root}/{PENDING}")
    _write_pending(fs, root, previous | sources.keys())
    if SIGNATURE in present.objects:
        fs.rm_file(f"{root}/{SIGNATURE}")
    stale = sorted((previous & present.objects.keys()) - sources.keys()) + sorted(temporaries)
    for name in stale:
        fs.rm_file(f"{root}/{name}")

    patterns = key.secret_patterns()
    entries, copied = {}, 0
    for name, (source_fs, source, where) in sorted(sources.items()):
        recorded = records.get(name)
        if (
            recorded is not None
            and previous_entries.get(name) == recorded
            and present.objects.get(name) == recorded.size
            and hash_object(fs, f"{root}/{name}", patterns) == (recorded, [])
        ):
            entries[name] = recorded  # the very bytes the last publish copied and checked, still intact
            continue
        entries[name] = _copy(source_fs, source, where, fs, f"{root}/{name}", recorded, patterns)
        copied += 1

    manifest = Manifest(
        cipher=description.cipher,
        channel_order=description.channel_order,
        normalization=description.normalization,
        splits=description.splits,
        objects=entries,
        signer=key.signer().fingerprint,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        tool_version=version("cipherseg"),
    )
    data = manifest.to_bytes()
    scanner = PatternScanner(patterns)
    scanner.update(data)
    if scanner.found:  # cannot happen with honest metadata; a last guard before committing
        raise PipelineError(f"{bundle}/{MANIFEST}: would contain {next(iter(scanner.found))}; nothing published")
    put_atomic(fs, f"{root}/{SIGNATURE}", key.sign(data).to_bytes())
    fs.rm_file(f"{root}/{PENDING}")
    put_atomic(fs, f"{root}/{MANIFEST}", data)  # last: the bundle is now complete and signed
    return PublishSummary(bundle, manifest, copied, len(entries) - copied, tuple(stale), left_out)


def _shard_digests(fs: AbstractFileSystem, root: str, store: str, attributes) -> dict[str, ObjectEntry]:
    """The size and sha256 of every shard as its writer recorded them, by bundle object name."""
    digests = {}
    for split in attributes.splits:
        for index in attributes.shards(split):
            name = shard_record(split, index)
            where = f"{store}/{name}"
            record = ShardRecord.parse(parse_json(read_document(fs, f"{root}/{name}", where), where), where)
            digests.update({f"{DATASET}/{obj}": entry for obj, entry in record.objects.items()})
    return digests


def _bundle_location(bundle: str, options: dict[str, Any], store_fs, store_root: str) -> tuple[AbstractFileSystem, str]:
    fs, root = url_to_fs(bundle, **options)
    root = root.rstrip("/")
    if isinstance(fs, LocalFileSystem):
        if Path(root).is_symlink() or (Path(root).exists() and not Path(root).is_dir()):
            raise PipelineError(f"{bundle}: not a folder (a file or a link); a bundle is published into a folder")
        if isinstance(store_fs, LocalFileSystem):
            a, b = Path(root).resolve(), Path(store_root).resolve()
            if a == b or a.is_relative_to(b) or b.is_relative_to(a):
                raise PipelineError(f"{bundle}: overlaps the dataset store {store_root}; publish to a folder of its own")
    return fs, root


def _previous_entries(fs: AbstractFileSystem, root: str, bundle: str) -> dict[str, ObjectEntry]:
    """The entries of the manifest of the bundle's last publish."""
    where = f"{bundle}/{MANIFEST}"
    try:
        return Manifest.parse(read_document(fs, f"{root}/{MANIFEST}", where), where).objects
    except UserError as error:
        raise PipelineError(f"{error}; not a manifest this publish can replace: remove it by hand") from None


def _pending_objects(fs: AbstractFileSystem, root: str, bundle: str, present: Mapping[str, int]) -> set[str]:
    """What an interrupted publish noted it might write or remove here (its first note: the last manifest)."""
    if PENDING not in present:
        return set()
    where = f"{bundle}/{PENDING}"
    document = as_object(parse_json(read_document(fs, f"{root}/{PENDING}", where), where), where)
    if document.get("format") not in (_PENDING_FORMAT, Manifest.FORMAT) or not isinstance(document.get("objects"), (list, dict)):
        raise PipelineError(f"{where}: not a publish record; remove it if it is not yours")
    return {name for name in document["objects"] if isinstance(name, str)}


def _write_pending(fs: AbstractFileSystem, root: str, names: set[str]) -> None:
    document = {"format": _PENDING_FORMAT, "objects": sorted(names)}
    fs.makedirs(root, exist_ok=True)
    put_atomic(fs, f"{root}/{PENDING}", json.dumps(document, indent=1).encode())


def _copy(
    source_fs: AbstractFileSystem,
    source: str,
    where: str,
    fs: AbstractFileSystem,
    target: str,
    recorded: ObjectEntry | None,
    patterns: Mapping[str, bytes],
) -> ObjectEntry:
    """Copy one object, hashing and scanning it on the way; it appears at ``target`` only if it passed."""
    fs.makedirs(posixpath.dirname(target), exist_ok=True)
    with commit_on_success(fs, target) as out:
        digest, size, scanner = hashlib.sha256(), 0, PatternScanner(patterns)
        for chunk in read_chunks(source_fs, source):
            digest.update(chunk)
            scanner.update(chunk)
            out.write(chunk)
            size += len(chunk)
        if scanner.found:
            raise PipelineError(f"{where}: contains {next(iter(scanner.found))}; refusing to publish it (nothing was published)")
        entry = ObjectEntry(size, digest.hexdigest())
        if recorded is not None and entry != recorded:
            raise PipelineError(f"{where}: changed since it was written (its completion record differs); run --stage encrypt again to repair it")
    return entry


def check_published(bundle: str, key: Key, *, storage_options: Mapping[str, Any] | None = None) -> Verified:
    """The owner's check of a published bundle: signed with ``key``'s signing key, whole, and free of the key."""
    return verify_bundle(bundle, signer=key.signer(), patterns=key.secret_patterns(), storage_options=storage_options)
