"""Read access to the bundle's dataset store, local or through fsspec (``s3://`` and the like), checked
against the verified manifest as it is read.

The store is opened through :class:`VerifyingStore`: the first read of any object in a process reads
it whole and compares its size and sha256 with the manifest's (pinned by the manifest's own sha256,
which the run verified), so an object swapped after the bundle was verified stops the run instead of
being trained on; an object the manifest does not list reads as absent.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import zarr
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.storage import WrapperStore

from contract.bundle import DATASET, MANIFEST, read_document
from contract.errors import UserError, quoted
from contract.formats import Manifest, ObjectEntry, StoreAttributes

_CACHED = 2  # whole objects kept after their check: a shard's samples are then read from memory


def bundle_manifest(bundle: str, manifest_sha256: str, storage_options: Mapping[str, Any] | None = None) -> Manifest:
    """The bundle's manifest, which must still be the one verified (``manifest_sha256``)."""
    fs, root = url_to_fs(bundle, **(storage_options or {}))
    where = f"{bundle}/{MANIFEST}"
    data = read_document(fs, f"{root}/{MANIFEST}", where)
    if hashlib.sha256(data).hexdigest() != manifest_sha256:
        raise UserError(f"{quoted(where)}: changed since the bundle was verified; verify it again")
    return Manifest.parse(data, where)


def open_store(bundle: str, manifest_sha256: str, storage_options: Mapping[str, Any] | None = None) -> zarr.Group:
    """The bundle's dataset store, read-only, every object checked against the verified manifest when first read."""
    manifest = bundle_manifest(bundle, manifest_sha256, storage_options)
    prefix = f"{DATASET}/"
    expected = {name.removeprefix(prefix): entry for name, entry in manifest.objects.items() if name.startswith(prefix)}
    location = f"{bundle}/{DATASET}"
    fs, path = url_to_fs(location, **(storage_options or {}))
    if isinstance(fs, LocalFileSystem):
        inner = zarr.storage.LocalStore(path, read_only=True)
    else:
        inner = zarr.storage.FsspecStore.from_url(location, storage_options=dict(storage_options or {}), read_only=True)
    return zarr.open_group(VerifyingStore(inner, expected, location), mode="r", zarr_format=3)


def store_attributes(group: zarr.Group, where: str) -> StoreAttributes:
    """The attributes of an opened store; UserError if it is incomplete."""
    attributes = StoreAttributes.parse(dict(group.attrs), f"{where}/zarr.json")
    if not attributes.complete:
        raise UserError(f"{quoted(where)}: the dataset store is incomplete (its encryption did not finish)")
    return attributes


class VerifyingStore(WrapperStore):
    """A read-only zarr store that serves only the objects of ``expected`` (key -> size and sha256), each
    checked whole when first read in this process (see the module docstring)."""

    def __init__(self, store: zarr.abc.store.Store, expected: Mapping[str, ObjectEntry], where: str) -> None:
        super().__init__(store)
        self.expected, self.where = dict(expected), where
        self.checked: set[str] = set()
        self.recent: OrderedDict[str, Any] = OrderedDict()

    def _with_store(self, store: zarr.abc.store.Store) -> VerifyingStore:
        return type(self)(store, self.expected, self.where)

    async def get(self, key: str, prototype, byte_range=None):
        if key not in self.expected:
            return None
        if key in self.recent:
            self.recent.move_to_end(key)
            return _part(self.recent[key], byte_range)
        if key in self.checked:
            return await self._store.get(key, prototype, byte_range)
        whole = await self._store.get(key, prototype)
        data = b"" if whole is None else whole.to_bytes()
        digest = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        if ObjectEntry(size=len(data), sha256=digest) != self.expected[key]:
            raise UserError(f"{quoted(self.where)}/{quoted(key)}: changed since the bundle was verified (its sha256 is not the manifest's)")
        self.checked.add(key)
        self.recent[key] = whole
        while len(self.recent) > _CACHED:
            self.recent.popitem(last=False)
        return _part(whole, byte_range)

    async def get_partial_values(self, prototype, key_ranges):
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    async def exists(self, key: str) -> bool:
        return key in self.expected


def _part(buffer, byte_range):
    """The part of a whole object's buffer that a zarr byte request asks for."""
    if byte_range is None:
        return buffer
    if isinstance(byte_range, RangeByteRequest):
        return buffer[byte_range.start : byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return buffer[byte_range.offset :]
    if isinstance(byte_range, SuffixByteRequest):
        return buffer[len(buffer) - byte_range.suffix :]
    raise TypeError(f"unexpected byte request {byte_range!r}")
