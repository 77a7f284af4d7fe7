"""The shard writer: one Dask task writes one whole shard of a split, and its completion record.

The shard is the unit of writing (never two writers in one shard, which loses data silently), of
memory (a worker holds one shard) and of resuming: a shard is done while its record exists, was
made from the same inputs (their stamps), and its objects still hash to what the record says. Any
other shard is removed before it is written again, so a damaged one (any byte, its index included)
is repaired rather than read. The writer hashes the bytes as zarr hands them to the store: nothing
is read back.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from functools import cache
from typing import Any

import cv2
import numpy as np
import zarr
from fsspec.core import url_to_fs
from zarr.storage import WrapperStore

from contract.bundle import hash_object
from contract.errors import UserError
from contract.formats import ObjectEntry, ShardRecord, Skip, shard_object, shard_record
from pipeline.cipher import BlockCipher
from pipeline.errors import OnError
from pipeline.inputs import Sample
from pipeline.keys import Key
from pipeline.atomic import put_atomic
from pipeline.zarr_store import zarr_store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardTask:
    """What one task writes: shard ``index`` of ``split``, whose first sample is sample ``start``."""

    split: str
    index: int
    start: int
    height: int
    width: int
    labelled: bool
    samples: tuple[Sample, ...]
    inputs: str  # pipeline.inputs.fingerprint of the samples

    @property
    def arrays(self) -> tuple[str, ...]:
        return ("images", "labels") if self.labelled else ("images",)


@dataclass(frozen=True)
class ShardResult:
    split: str
    index: int
    images: int
    written: bool  # False: a valid record was found and the shard left alone
    skipped: tuple[Skip, ...]
    error: str | None = None  # bad input under OnError.FAIL: an answer, not a crash for Dask to log


@dataclass(frozen=True)
class ShardWriter:
    """The run's shared settings (no secret: the key reaches each worker once, beside the tasks)."""

    raw: str
    store: str
    storage_options: dict[str, Any]
    policy: OnError

    def __call__(self, task: ShardTask, secret_key: Key | None) -> ShardResult:
        """Write ``task``'s shard encrypted with ``secret_key`` (plain if None), unless it is done already."""
        fs, root = url_to_fs(self.store, **self.storage_options)
        objects = [shard_object(task.split, array, task.index) for array in task.arrays]
        record_path = f"{root}/{shard_record(task.split, task.index)}"
        record = self._read_record(fs, record_path)
        if record is not None and self._still_valid(record, task, fs, root, objects):
            return ShardResult(task.split, task.index, len(task.samples), False, record.skipped)

        for path in (record_path, *(f"{root}/{name}" for name in objects)):  # record first: never a stale one
            if fs.exists(path):
                fs.rm_file(path)
        cipher = BlockCipher(secret_key) if secret_key is not None else None
        images, labels, problems = _load_samples(self.raw, self.storage_options, task, cipher)
        try:
            skipped = tuple(self.policy.handle(problem, self.raw) for problem in problems)
        except UserError as error:
            return ShardResult(task.split, task.index, len(task.samples), False, (), str(error))

        written: dict[str, ObjectEntry] = {}
        group = zarr.open_group(_HashingStore(zarr_store(self.store, self.storage_options), written), path=task.split, mode="r+")
        # write_empty_chunks: otherwise zarr compares every chunk with the fill value, to leave out
        # empty ones: ~12 ms per 1024x2048 image, as much as compressing and writing it.
        end = task.start + len(task.samples)
        for name, data in (("images", images), ("labels", labels)) if task.labelled else (("images", images),):
            group[name].with_config({"write_empty_chunks": True})[task.start : end] = data  # one whole shard
        record = ShardRecord(
            names=tuple(s.name for s in task.samples), inputs=task.inputs, objects={name: written[name] for name in objects}, skipped=skipped
        )
        put_atomic(fs, record_path, record.to_bytes())
        return ShardResult(task.split, task.index, len(task.samples), True, skipped)

    def _read_record(self, fs, path: str) -> ShardRecord | None:
        try:
            return ShardRecord.parse(fs.cat_file(path), path)
        except FileNotFoundError:
            return None
        except UserError as error:  # a damaged record: the shard is simply redone
            log.warning("%s: unreadable shard record (%s); writing the shard again", path, error)
            return None

    def _still_valid(self, record: ShardRecord, task: ShardTask, fs, root: str, objects: list[str]) -> bool:
        """The record counts if it is of these inputs and its objects still hash to it; a shard with
        skips is redone under OnError.FAIL (which then reports them)."""
        if record.inputs != task.inputs or set(record.objects) != set(objects):
            return False
        if record.skipped and self.policy is OnError.FAIL:
            return False
        for name in objects:
            try:
                if hash_object(fs, f"{root}/{name}")[0] != record.objects[name]:
                    return False
            except FileNotFoundError:
                return False
        return True


class _HashingStore(WrapperStore):
    """A zarr store that records the size and sha256 of every object as it is written."""

    def __init__(self, store: zarr.abc.store.Store, written: dict[str, ObjectEntry]) -> None:
        super().__init__(store)
        self.written = written

    def _with_store(self, store: zarr.abc.store.Store) -> _HashingStore:
        return type(self)(store, self.written)

    async def set(self, key: str, value) -> None:
        data = value.as_numpy_array()
        # Hashed beside the write, in a thread (hashlib releases the GIL): ~4 ms per 1024x2048
        # image that overlaps the store's own write instead of adding to it.
        digest, _ = await asyncio.gather(asyncio.to_thread(_sha256, data), self._store.set(key, value))
        self.written[key] = ObjectEntry(size=data.nbytes, sha256=digest)


def _sha256(data: np.ndarray) -> str:
    return hashlib.sha256(data).hexdigest()


@cache
def train_ids() -> np.ndarray:
    """labelId -> trainId (cityscapesscripts' table); ignored classes -> 255."""
    from cityscapesscripts.helpers.labels import labels

    lut = np.full(256, 255, dtype=np.uint8)
    for label in labels:
        if 0 <= label.id < 256 and 0 <= label.trainId < 255:
            lut[label.id] = label.trainId
    return lut


class _Unusable(Exception):
    def __init__(self, file: str, reason: str) -> None:
        super().__init__(file, reason)
        self.file, self.reason = file, reason


def _load_samples(
    raw: str, storage_options: dict[str, Any], task: ShardTask, cipher: BlockCipher | None
) -> tuple[np.ndarray, np.ndarray | None, list[Skip]]:
    """Decode the shard's images (RGB, encrypted with ``cipher`` unless None) and labels (trainIds);
    unusable samples stay zeros / 255."""
    n, h, w = len(task.samples), task.height, task.width
    images = np.zeros((n, h, w, 3), np.uint8)
    labels = np.full((n, h, w), 255, np.uint8) if task.labelled else None
    fs, root = url_to_fs(raw, **storage_options)
    files = [f"{root}/{p}" for s in task.samples if s.problem is None for p in (s.image, s.label) if p]
    contents = fs.cat(files, on_error="return") if files else {}  # one batched read (concurrent on S3)

    def decode(relative: str, flags: int, shape: tuple[int, ...]) -> np.ndarray:
        return _decode(relative, contents[f"{root}/{relative}"], flags, shape)

    problems = []
    for i, sample in enumerate(task.samples):
        try:
            if sample.problem:
                problems.append(sample.problem)
                continue
            image = decode(sample.image, cv2.IMREAD_COLOR_RGB, (h, w, 3))
            if labels is not None:
                cv2.LUT(decode(sample.label, cv2.IMREAD_UNCHANGED, (h, w)), train_ids(), dst=labels[i])
            if cipher is None:
                images[i] = image
            else:  # straight into the shard while the decoded image is in cache: no second copy
                cipher.encrypt(image, out=images[i])
        except _Unusable as problem:
            problems.append(Skip(split=task.split, name=sample.name, file=problem.file, reason=problem.reason))
    return images, labels, problems


def _decode(file: str, data: bytes | Exception, flags: int, shape: tuple[int, ...]) -> np.ndarray:
    """One decoded PNG of the expected shape, or _Unusable."""
    if isinstance(data, FileNotFoundError):
        raise _Unusable(file, "file disappeared after planning")
    if isinstance(data, Exception):
        raise data  # a storage error, not bad input: fail the task, a rerun resumes
    array = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if array is None:
        raise _Unusable(file, "cannot decode PNG (truncated or corrupt)")
    if array.shape != shape or array.dtype != np.uint8:
        raise _Unusable(file, f"decodes to {array.dtype} {array.shape}, expected uint8 {shape}")
    return array
