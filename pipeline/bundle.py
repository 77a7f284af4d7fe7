"""The published bundle: everything the cloud may read, and the check the cloud runs first.

    bundle/dataset.zarr/...        every object of the encrypted dataset store, byte for byte
    bundle/backbone.safetensors    the encrypted checkpoint
    bundle/manifest.json           size and sha256 of every other object, the key id and cipher
                                   spec, normalization, channel order, splits, source fingerprint

Publishing removes a stale manifest first and writes the new one last, atomically, so a bundle
with a manifest is always complete. The manifest detects corruption, mix-ups and careless edits;
it is not signed, so it cannot stop someone who rewrites it along with the objects.

Every file access goes through fsspec: local directories and object storage (``s3://``) share
one code path, and source and bundle may live on different filesystems.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import posixpath
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs

from pipeline.errors import PipelineError
from pipeline.keys import BUNDLE_MANIFEST, Key
from pipeline.storage import PARTIAL, put_atomic

FORMAT = "cipherseg-bundle"
FORMAT_VERSION = 1
DATASET = "dataset.zarr"
CHECKPOINT = "backbone.safetensors"
# Both are needed to read the bundle's metadata; a manifest without them is not a bundle's.
REQUIRED = (f"{DATASET}/zarr.json", CHECKPOINT)

_CHUNK = 4 << 20
_MAX_SAFETENSORS_HEADER = 100_000_000  # the safetensors format's own limit
# What a key file is called (keys.save writes key.json by default); no bundle may hold one.
_KEY_FILE_NAMES = ("*key*.json", "*.key")


def publish(store: str, checkpoint: str, bundle: str, *, storage_options: dict | None = None) -> dict[str, Any]:
    """Copy the encrypted dataset store and checkpoint into ``bundle``; write its manifest last.

    A bundle is encrypted, or plain (store and checkpoint written without a key: the paper's
    baseline). Refuses an incomplete store, a store and checkpoint of different keys, a source
    object named like a key file and a bundle location holding anything but a bundle. Objects
    already in the bundle with the same size and sha256 are not copied again; objects of an
    earlier publication that the store no longer has are removed. Returns a summary.
    """
    options = storage_options or {}
    store_fs, store_root = url_to_fs(store, **options)
    checkpoint_fs, checkpoint_path = url_to_fs(checkpoint, **options)
    fs, root = url_to_fs(bundle, **options)

    description = _describe(
        _dataset_attrs(store_fs, store_root, store),
        _checkpoint_metadata(checkpoint_fs, checkpoint_path, checkpoint),
        store,
        checkpoint,
    )
    sources = {
        f"{DATASET}/{name}": (store_fs, path, size)
        for name, (path, size) in _objects(store_fs, store_root).items()
        if not name.endswith(PARTIAL)  # a temporary an interrupted encrypt run left behind
    }
    sources[CHECKPOINT] = (checkpoint_fs, checkpoint_path, checkpoint_fs.size(checkpoint_path))
    for name in sources:
        if _looks_like_key_file(name):
            raise PipelineError(f"{name}: named like a key file; refusing to publish it (from {store} or {checkpoint})")

    present = _objects(fs, root)
    ours = {BUNDLE_MANIFEST, *sources}
    foreign = sorted(
        name for name in present
        if name not in ours and not name.startswith(f"{DATASET}/") and not name.endswith(PARTIAL)
    )
    if foreign:
        raise PipelineError(f"{bundle}: holds {foreign[0]}, which is no part of a bundle; refusing to publish here")
    if BUNDLE_MANIFEST in present:  # first: a bundle with a manifest must always be complete
        fs.rm_file(present[BUNDLE_MANIFEST][0])
    stale = sorted(name for name in present if name not in sources and name != BUNDLE_MANIFEST)
    for name in stale:
        fs.rm_file(present[name][0])

    objects, copied = {}, 0
    for name, (source_fs, source, size) in sorted(sources.items()):
        target = f"{root}/{name}"
        if name in present and present[name][1] == size:
            entry = _digest(source_fs, source)
            if _digest(fs, target) == entry:
                objects[name] = entry
                continue
        objects[name] = _copy(source_fs, source, fs, target)
        copied += 1

    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "tool_version": version("cipherseg"),
        **description,
        "objects": objects,
    }
    put_atomic(fs, f"{root}/{BUNDLE_MANIFEST}", json.dumps(manifest, indent=2).encode())
    return {
        "bundle": bundle,
        "objects": len(objects),
        "copied": copied,
        "removed": len(stale),
        "bytes": sum(entry["size"] for entry in objects.values()),
        "key_id": description["cipher"]["key_id"],
        "splits": description["splits"],
    }


def verify(bundle: str, *, key: Key | None = None, storage_options: dict | None = None) -> dict[str, Any]:
    """Check a bundle against its manifest; with the owner's ``key``, also that it holds no key material.

    Checks that the manifest lists every object and nothing else is there, every size and sha256,
    and that the dataset store and checkpoint carry the manifest's key id, cipher spec, splits,
    source fingerprint, channel order and normalization. With ``key``, every object (the manifest
    included) is scanned for the secret's bytes and hex string. Raises PipelineError naming every
    object at fault and its problem; returns a summary.
    """
    fs, root = url_to_fs(bundle, **(storage_options or {}))
    manifest = _read_manifest(fs, root, bundle)
    listed = manifest["objects"]
    present = _objects(fs, root)

    problems = [f"{name}: missing from the manifest" for name in REQUIRED if name not in listed]
    problems += [f"{name}: listed in the manifest but missing" for name in sorted(listed.keys() - present.keys())]
    if key is not None and key.spec() != manifest["cipher"]:
        problems.append(f"{BUNDLE_MANIFEST}: published for key {manifest['cipher']}, not this key {key.spec()}")
    secrets = {"the secret key bytes": key.secret, "the secret key in hex": key.secret.hex().encode()} if key else {}
    for name, (path, _) in sorted(present.items()):
        entry, found = _scan(fs, path, secrets)
        expected = listed.get(name)
        if name == BUNDLE_MANIFEST:
            pass  # scanned for the key like every object, but it cannot list its own checksum
        elif expected is None:
            problems.append(f"{name}: not listed in the manifest")
        elif entry["size"] != expected["size"]:
            problems.append(f"{name}: {entry['size']} bytes, the manifest says {expected['size']}")
        elif entry["sha256"] != expected["sha256"]:
            problems.append(f"{name}: sha256 {entry['sha256']} does not match the manifest's {expected['sha256']}")
        if _looks_like_key_file(name):
            problems.append(f"{name}: named like a key file")
        problems += [f"{name}: contains {what}" for what in found]
    if problems:
        raise PipelineError(_failure(bundle, problems))

    # The objects are the ones the manifest lists: now their own metadata must agree with it.
    dataset, checkpoint = f"{bundle}/{DATASET}", f"{bundle}/{CHECKPOINT}"
    description = _describe(
        _dataset_attrs(fs, f"{root}/{DATASET}", dataset),
        _checkpoint_metadata(fs, f"{root}/{CHECKPOINT}", checkpoint),
        dataset,
        checkpoint,
    )
    problems = [
        f"{BUNDLE_MANIFEST}: {field} is {manifest[field]!r}, but the bundle's objects say {value!r}"
        for field, value in description.items()
        if manifest[field] != value
    ]
    if problems:
        raise PipelineError(_failure(bundle, problems))
    return {
        "bundle": bundle,
        "objects": len(listed),
        "bytes": sum(entry["size"] for entry in listed.values()),
        "key_id": manifest["cipher"]["key_id"],
        "splits": manifest["splits"],
        "key_checked": key is not None,
    }


def _describe(attrs: dict[str, Any], metadata: dict[str, str], store: str, checkpoint: str) -> dict[str, Any]:
    """The manifest's description of a dataset store and checkpoint, after checking they belong together."""
    if attrs.get("format") != "cipherseg-dataset":
        raise PipelineError(f"{store}: not a cipherseg dataset store (format {attrs.get('format')!r})")
    if attrs.get("complete") is not True:
        raise PipelineError(f"{store}: the dataset store is incomplete (its encryption did not finish)")
    if metadata.get("format") != "cipherseg-checkpoint":
        raise PipelineError(f"{checkpoint}: not a cipherseg checkpoint (format {metadata.get('format')!r})")
    try:
        encrypted = attrs["encrypted"]
        dataset_cipher = {name: attrs[name] for name in ("key_id", "block_size", "negative_positive")}
        description = {
            "encrypted": encrypted,
            "cipher": dataset_cipher,
            "channel_order": attrs["channel_order"],
            "splits": attrs["splits"],
            "source_fingerprint": attrs["source_fingerprint"],
        }
    except KeyError as error:
        raise PipelineError(f"{store}: the dataset store's attributes lack {error}") from None
    try:  # safetensors metadata holds strings only: numbers, flags and lists are JSON-encoded
        checkpoint_encrypted = json.loads(metadata["encrypted"])
        checkpoint_cipher = {  # a plain checkpoint has no cipher: None, as in a plain store
            "key_id": metadata.get("key_id"),
            "block_size": int(metadata["block_size"]) if "block_size" in metadata else None,
            "negative_positive": json.loads(metadata["negative_positive"]) if "negative_positive" in metadata else None,
        }
        normalization = {"mean": json.loads(metadata["norm_mean"]), "std": json.loads(metadata["norm_std"])}
        channel_order = metadata["channel_order"]
    except KeyError as error:
        raise PipelineError(f"{checkpoint}: the checkpoint's metadata lacks {error}") from None
    except (TypeError, ValueError) as error:
        raise PipelineError(f"{checkpoint}: corrupt checkpoint metadata ({error})") from None
    if checkpoint_encrypted != encrypted:
        state = {True: "encrypted", False: "plain"}
        raise PipelineError(
            f"{checkpoint}: the checkpoint is {state[checkpoint_encrypted]}, but the dataset store {store} is {state[encrypted]}"
        )
    if checkpoint_cipher != dataset_cipher:
        raise PipelineError(
            f"{checkpoint}: encrypted for {checkpoint_cipher}, but the dataset store {store} for {dataset_cipher}"
        )
    if channel_order != description["channel_order"]:
        raise PipelineError(
            f"{checkpoint}: expects {channel_order} images, but the dataset store {store} holds {description['channel_order']}"
        )
    return {**description, "normalization": normalization}


def _dataset_attrs(fs: AbstractFileSystem, root: str, store: str) -> dict[str, Any]:
    """The attributes of the Zarr v3 group at ``root``, read from its zarr.json."""
    try:
        document = json.loads(fs.cat_file(f"{root}/zarr.json"))
    except FileNotFoundError:
        raise PipelineError(f"{store}: no dataset store here (no zarr.json)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PipelineError(f"{store}: corrupt zarr.json ({error})") from None
    if not isinstance(document, dict) or document.get("node_type") != "group":
        raise PipelineError(f"{store}: not a Zarr v3 group")
    return document.get("attributes", {})


def _checkpoint_metadata(fs: AbstractFileSystem, path: str, checkpoint: str) -> dict[str, str]:
    """The metadata of a safetensors file, read from its header alone (the tensors stay unread)."""
    try:
        with fs.open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if length > _MAX_SAFETENSORS_HEADER:
                raise ValueError(f"a header of {length} bytes")
            header = json.loads(f.read(length))
    except FileNotFoundError:
        raise PipelineError(f"{checkpoint}: no such checkpoint") from None
    except ValueError as error:  # json's and unicode's errors included
        raise PipelineError(f"{checkpoint}: not a safetensors file ({error})") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def _read_manifest(fs: AbstractFileSystem, root: str, bundle: str) -> dict[str, Any]:
    path = f"{root}/{BUNDLE_MANIFEST}"
    try:
        manifest = json.loads(fs.cat_file(path))
    except FileNotFoundError:
        raise PipelineError(f"{bundle}: no {BUNDLE_MANIFEST}: not a bundle, or its publication did not finish") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PipelineError(f"{bundle}: {BUNDLE_MANIFEST} is not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PipelineError(f"{bundle}: {BUNDLE_MANIFEST} is not a cipherseg bundle manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise PipelineError(f"{bundle}: manifest format version {manifest.get('format_version')!r} is not supported")
    fields = ("encrypted", "cipher", "channel_order", "normalization", "splits", "source_fingerprint", "objects")
    missing = [field for field in fields if field not in manifest]
    if missing:
        raise PipelineError(f"{bundle}: {BUNDLE_MANIFEST} lacks {', '.join(missing)}")
    objects = manifest["objects"]
    if not isinstance(objects, dict) or not all(
        isinstance(entry, dict) and isinstance(entry.get("size"), int) and isinstance(entry.get("sha256"), str)
        for entry in objects.values()
    ):
        raise PipelineError(f"{bundle}: {BUNDLE_MANIFEST} has malformed object entries (each needs size and sha256)")
    return manifest


def _objects(fs: AbstractFileSystem, root: str) -> dict[str, tuple[str, int]]:
    """Every object under ``root``: its name relative to root -> (path, size)."""
    fs.invalidate_cache(root)  # listings are cached per filesystem instance: see what is there now
    return {posixpath.relpath(path, root): (path, info["size"]) for path, info in fs.find(root, detail=True).items()}


def _chunks(fs: AbstractFileSystem, path: str) -> Iterator[bytes]:
    with fs.open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def _copy(source_fs: AbstractFileSystem, source: str, fs: AbstractFileSystem, target: str) -> dict[str, Any]:
    """Stream one object to ``target``, hashing what is copied; its manifest entry."""
    fs.makedirs(posixpath.dirname(target), exist_ok=True)
    digest, size = hashlib.sha256(), 0
    with fs.open(target, "wb") as out:
        for chunk in _chunks(source_fs, source):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return {"size": size, "sha256": digest.hexdigest()}


def _digest(fs: AbstractFileSystem, path: str) -> dict[str, Any]:
    return _scan(fs, path, {})[0]


def _scan(fs: AbstractFileSystem, path: str, patterns: dict[str, bytes]) -> tuple[dict[str, Any], list[str]]:
    """One object's manifest entry, and which of ``patterns`` (name -> bytes) occur in it."""
    digest, size, found = hashlib.sha256(), 0, set()
    overlap = max(map(len, patterns.values()), default=1) - 1
    tail = b""
    for chunk in _chunks(fs, path):
        digest.update(chunk)
        size += len(chunk)
        if patterns:
            # Search the end of the previous chunk too, so a match across a chunk boundary is found.
            window = tail + chunk
            found.update(name for name, pattern in patterns.items() if pattern in window)
            tail = window[-overlap:]
    return {"size": size, "sha256": digest.hexdigest()}, sorted(found)


def _looks_like_key_file(name: str) -> bool:
    return any(fnmatch.fnmatch(posixpath.basename(name).lower(), pattern) for pattern in _KEY_FILE_NAMES)


def _failure(bundle: str, problems: list[str]) -> str:
    return f"{bundle}: verification failed:\n  " + "\n  ".join(problems)
