"""Publishing: the owner's dataset store and checkpoint -> the signed bundle the cloud is given.

Verify, then commit. Publish writes exactly the objects the store format defines (array metadata,
shards, completion records: :meth:`contract.formats.StoreAttributes.objects`) and the checkpoint,
and leaves out anything else in the store folder, naming it. Every metadata object is re-serialised
from its validated model, and the checkpoint's header from its metadata model and exactly the
tensors of its backbone family (:mod:`contract.canonical`): nothing outside the contract is
published. Every object is hashed and scanned for the owner's key in the one pass that writes it,
and becomes visible under its name only once it passed (:func:`pipeline.atomic.commit_on_success`);
a shard must also hash to what its completion record says. The manifest and its signature are
written only when every object passed: a publish that fails, for any reason or at any moment
(SIGKILL included), leaves no manifest, and nothing verifies, or the last complete publication.

What publish trusts in the bundle folder is what the owner signed: the last manifest (with a valid
signature of this owner) and the pending record of an interrupted publish (signed too). It removes
only objects those name, inside the bundle's own object paths, and a manifest's only while their
bytes still hash to what it recorded. Anything else there is refused, and an unsigned manifest or
pending record is named and ignored. Every publish signs a sequence number one higher than the last.

Order of writes: rename the manifest to manifest.previous.json (from here on nothing verifies; the last
manifest stays signed by manifest.sig), the signed pending record (what this publish may write or remove,
and its sequence), remove stale objects, write the objects, the signature, the manifest (the commit),
remove the pending record and the previous manifest. Killed at any point, the next publish finds a
signed list of everything a publish of this owner wrote there.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterator, Mapping
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
    CONTROL,
    DATASET,
    MANIFEST,
    PENDING,
    PREVIOUS,
    SIGNATURE,
    PatternScanner,
    Verified,
    describe,
    digest_of,
    hash_object,
    list_objects,
    open_location,
    read_chunks,
    read_document,
    read_safetensors_header,
    read_store_attributes,
    verify_bundle,
)
from contract.canonical import canonical_checkpoint_header, canonical_store_object, is_metadata
from contract.errors import UserError, quoted
from contract.formats import Manifest, ObjectEntry, PendingRecord, ShardRecord, StoreAttributes, shard_record
from contract.outputs import OutputKind, check_output
from contract.signing import Signature, Signer
from pipeline.errors import PipelineError
from pipeline.keys import Key
from pipeline.atomic import commit_on_success, is_temporary, put_atomic


@dataclass(frozen=True)
class PublishSummary:
    """What a publish did."""

    bundle: str
    manifest: Manifest
    copied: int
    reused: int
    removed: tuple[str, ...]
    left_out: tuple[str, ...]  # what the store folder holds beyond the store's objects
    ignored: tuple[str, ...]  # unsigned manifests or pending records found in the bundle folder

    @property
    def bytes(self) -> int:
        return sum(entry.size for entry in self.manifest.objects.values())


@dataclass(frozen=True)
class _Source:
    """One object to publish: its closed-form bytes (metadata), or where to stream it from (shards, checkpoint)."""

    where: str
    data: bytes | None = None
    fs: AbstractFileSystem | None = None
    path: str | None = None
    recorded: ObjectEntry | None = None  # a shard's digest as its writer recorded it
    header: bytes | None = None  # the checkpoint's closed-form header, which replaces the file's own
    skip: int = 0  # bytes of the source replaced by ``header``

    def chunks(self) -> Iterator[bytes]:
        if self.data is not None:
            yield self.data
            return
        if self.header is not None:
            yield self.header
        yield from read_chunks(self.fs, self.path, self.skip)


def publish(
    store: str, checkpoint: str, bundle: str, key: Key, *, storage_options: Mapping[str, Any] | None = None
) -> PublishSummary:
    """Publish the dataset store and checkpoint as the bundle at ``bundle``, signed with ``key``'s signing key.

    A bundle is encrypted, or plain (store and checkpoint written without a key: the paper's
    baseline), and signed by the owner either way. Refuses an incomplete store, a store and a
    checkpoint that do not belong together or do not fit the contract, data of another key than
    ``key``, a source object holding any form of the key, and a bundle location holding anything the
    owner's signed records do not name. Shards unchanged since the last publish are not copied again.
    """
    options = dict(storage_options or {})
    sources, attributes, description, left_out = _sources(store, checkpoint, key, options)
    fs, root = _bundle_location(bundle, options, store)
    present = list_objects(fs, root, hard_links=False)
    if present.problems:
        raise PipelineError(f"{quoted(bundle)}/{present.problems[0]}; a bundle location holds regular files only")
    signer = key.signer()
    previous, ignored = _signed_manifest(fs, root, bundle, signer, present.objects)
    pending, unsigned_pending = _signed_pending(fs, root, bundle, signer, present.objects)
    ignored += unsigned_pending
    listed = set(previous.objects if previous else ()) | set(pending.objects if pending else ())
    trusted = {name for name in listed if _bundle_object(name)}
    temporaries = {name for name in present.objects if is_temporary(name)}
    foreign = sorted(present.objects.keys() - trusted - temporaries - set(CONTROL))
    if foreign:
        because = f" (an unsigned record is ignored: {', '.join(ignored)})" if ignored else ""
        raise PipelineError(
            f"{quoted(bundle)}/{quoted(foreign[0])}: no publish of this owner put this here{because}; "
            "refusing to publish into a folder with other files"
        )
    stale = sorted((trusted & present.objects.keys()) - sources.keys())
    for name in stale:  # a manifest's objects only while they are what it recorded
        entry = previous.objects.get(name) if previous else None
        if entry is not None and hash_object(fs, f"{root}/{name}")[0] != entry:
            raise PipelineError(f"{quoted(bundle)}/{quoted(name)}: changed since the last publish; not removing it: remove it by hand")
    sequence = max(previous.sequence if previous else 0, pending.sequence if pending else 0) + 1

    # From here on the bundle changes: it stops verifying, and a signed note says what this publish may write or remove.
    if MANIFEST in present.objects:
        fs.mv(f"{root}/{MANIFEST}", f"{root}/{PREVIOUS}")
    record = PendingRecord(signer=signer.fingerprint, sequence=sequence, objects=tuple(sorted(trusted | sources.keys())))
    fs.makedirs(root, exist_ok=True)
    put_atomic(fs, f"{root}/{PENDING}", _signed(record, key).to_bytes(), OutputKind.ANY)
    for name in (*stale, *sorted(temporaries)):
        fs.rm_file(f"{root}/{name}")

    patterns = key.secret_patterns()
    entries, copied = {}, 0
    previous_entries = previous.objects if previous else {}
    for name, source in sorted(sources.items()):
        expected = source.recorded or (digest_of(iter([source.data]))[0] if source.data is not None else None)
        if (
            expected is not None
            and previous_entries.get(name) == expected
            and present.objects.get(name) == expected.size
            and hash_object(fs, f"{root}/{name}", patterns) == (expected, [])
        ):
            entries[name] = expected  # the very bytes the last publish wrote and checked, still intact
            continue
        entries[name] = _copy(source, fs, f"{root}/{name}", patterns)
        copied += 1

    manifest = Manifest(
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        tool_version=version("cipherseg"),
        signer=signer.fingerprint,
        sequence=sequence,
        cipher=description.cipher,
        channel_order=description.channel_order,
        normalization=description.normalization,
        splits=description.splits,
        objects=entries,
    )
    data = manifest.to_bytes()
    scanner = PatternScanner(patterns)
    scanner.update(data)
    if scanner.found:  # cannot happen with honest metadata; a last guard before committing
        raise PipelineError(f"{quoted(bundle)}/{MANIFEST}: would contain {next(iter(scanner.found))}; nothing published")
    put_atomic(fs, f"{root}/{SIGNATURE}", key.sign(data).to_bytes(), OutputKind.ANY)
    put_atomic(fs, f"{root}/{MANIFEST}", data, OutputKind.ANY)  # the commit: the bundle is now complete and signed
    for name in (PENDING, PREVIOUS):
        if fs.exists(f"{root}/{name}"):
            fs.rm_file(f"{root}/{name}")
    return PublishSummary(bundle, manifest, copied, len(entries) - copied, tuple(stale), left_out, tuple(ignored))


def _sources(
    store: str, checkpoint: str, key: Key, options: dict[str, Any]
) -> tuple[dict[str, _Source], StoreAttributes, Any, tuple[str, ...]]:
    """What the bundle will hold, by name: the store's objects and the checkpoint, checked and in closed form."""
    store_fs, store_root = open_location(store, options)
    attributes = read_store_attributes(store_fs, store_root, store)
    checkpoint_fs, checkpoint_path = url_to_fs(checkpoint, **options)
    header = read_safetensors_header(checkpoint_fs, checkpoint_path, checkpoint)
    metadata, closed = canonical_checkpoint_header(header, checkpoint)
    description = describe(attributes, metadata, store, checkpoint)
    if attributes.cipher is not None and attributes.cipher.key_id != key.key_id:
        raise PipelineError(f"{quoted(store)}: encrypted with key id {attributes.cipher.key_id}, not with the owner's key {key.key_id}")

    listing = list_objects(store_fs, store_root)
    expected = attributes.objects()
    missing = sorted(expected - listing.objects.keys())
    if missing:
        raise PipelineError(f"{quoted(store)}/{missing[0]}: missing ({len(missing)} objects of the store are); run --stage encrypt again")
    left_out = tuple(sorted(map(quoted, listing.objects.keys() - expected)) + listing.problems)
    sources = {}
    for name in sorted(expected):
        where = f"{store}/{name}"
        if is_metadata(name):
            data = canonical_store_object(name, read_document(store_fs, f"{store_root}/{name}", where), attributes, where)
            sources[f"{DATASET}/{name}"] = _Source(where, data=data)
    records = _shard_digests(sources, attributes)
    for name in sorted(expected):
        if not is_metadata(name):
            where = f"{store}/{name}"
            sources[f"{DATASET}/{name}"] = _Source(where, fs=store_fs, path=f"{store_root}/{name}", recorded=records[name])
    original = 8 + int.from_bytes(checkpoint_fs.cat_file(checkpoint_path, start=0, end=8), "little")
    sources[CHECKPOINT] = _Source(checkpoint, fs=checkpoint_fs, path=checkpoint_path, header=closed.to_bytes(), skip=original)
    return sources, attributes, description, left_out


def _shard_digests(sources: Mapping[str, _Source], attributes: StoreAttributes) -> dict[str, ObjectEntry]:
    """The size and sha256 of every shard as its writer recorded them, by store object name."""
    digests = {}
    for split in attributes.splits:
        for index in attributes.shards(split):
            source = sources[f"{DATASET}/{shard_record(split, index)}"]
            digests.update(ShardRecord.parse(source.data, source.where).objects)
    return digests


def _bundle_object(name: str) -> bool:
    """Whether ``name`` is inside a bundle's own object paths (what a publish may ever remove)."""
    return name == CHECKPOINT or name.startswith(f"{DATASET}/")


def _bundle_location(bundle: str, options: dict[str, Any], store: str) -> tuple[AbstractFileSystem, str]:
    fs, root = url_to_fs(bundle, **options)
    root = root.rstrip("/")
    if isinstance(fs, LocalFileSystem):
        if Path(root).is_symlink() or (Path(root).exists() and not Path(root).is_dir()):
            raise PipelineError(f"{quoted(bundle)}: not a folder (a file or a link); a bundle is published into a folder")
        store_fs, store_root = url_to_fs(store, **options)
        if isinstance(store_fs, LocalFileSystem):
            a, b = Path(root).resolve(), Path(store_root).resolve()
            if a == b or a.is_relative_to(b) or b.is_relative_to(a):
                raise PipelineError(f"{quoted(bundle)}: overlaps the dataset store {quoted(store_root)}; publish to a folder of its own")
        for name in CONTROL:  # what publish writes over: never an owner's file
            check_output(Path(root, name), OutputKind.ANY)
    return fs, root


def _signed_manifest(
    fs: AbstractFileSystem, root: str, bundle: str, signer: Signer, present: Mapping[str, int]
) -> tuple[Manifest | None, list[str]]:
    """The bundle's last manifest (or, after an interrupted publish, the previous one) if this owner validly
    signed it; else None, and the names of the manifests found unsigned."""
    ignored = []
    for name in (MANIFEST, PREVIOUS):
        if name not in present:
            continue
        where = f"{bundle}/{name}"
        try:
            data = read_document(fs, f"{root}/{name}", where)
            if SIGNATURE in present:
                signature = Signature.parse(read_document(fs, f"{root}/{SIGNATURE}", f"{bundle}/{SIGNATURE}", 4096), SIGNATURE)
                if signer.verifies(data, signature):
                    return Manifest.parse(data, where), ignored
        except UserError:
            pass
        ignored.append(name)
    return None, ignored


def _signed_pending(
    fs: AbstractFileSystem, root: str, bundle: str, signer: Signer, present: Mapping[str, int]
) -> tuple[PendingRecord | None, list[str]]:
    """The pending record of an interrupted publish if this owner validly signed it; else None (and its name)."""
    if PENDING not in present:
        return None, []
    try:
        record = PendingRecord.parse(read_document(fs, f"{root}/{PENDING}", f"{bundle}/{PENDING}"), f"{bundle}/{PENDING}")
        if record.signature is not None and signer.verifies(record.signed_bytes(), Signature.of(signer.fingerprint, record.signature_bytes)):
            return record, []
    except UserError:
        pass
    return None, [PENDING]


def _signed(record: PendingRecord, key: Key) -> PendingRecord:
    return record.model_copy(update={"signature": key.sign(record.signed_bytes()).signature})


def _copy(source: _Source, fs: AbstractFileSystem, target: str, patterns: Mapping[str, bytes]) -> ObjectEntry:
    """Write one object, hashing and scanning it on the way; it appears at ``target`` only if it passed."""
    fs.makedirs(posixpath.dirname(target), exist_ok=True)
    with commit_on_success(fs, target) as out:
        digest, size, scanner = hashlib.sha256(), 0, PatternScanner(patterns)
        for chunk in source.chunks():
            digest.update(chunk)
            scanner.update(chunk)
            out.write(chunk)
            size += len(chunk)
        if scanner.found:
            raise PipelineError(f"{quoted(source.where)}: contains {next(iter(scanner.found))}; refusing to publish it (nothing was published)")
        entry = ObjectEntry(size=size, sha256=digest.hexdigest())
        if source.recorded is not None and entry != source.recorded:
            raise PipelineError(
                f"{quoted(source.where)}: changed since it was written (its completion record differs); "
                "run --stage encrypt again to repair it"
            )
    return entry


def check_published(bundle: str, key: Key, *, storage_options: Mapping[str, Any] | None = None) -> Verified:
    """The owner's check of a published bundle: signed with ``key``'s signing key, whole, and free of the key."""
    return verify_bundle(bundle, signer=key.signer(), patterns=key.secret_patterns(), storage_options=storage_options)
