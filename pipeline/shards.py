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
import io
import logging
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import zarr
from fsspec.core import url_to_fs
from PIL import Image
from zarr.storage import WrapperStore

from contract.bundle import hash_object
from contract.errors import UserError
from contract.formats import IGNORE_INDEX, ObjectEntry, ShardRecord, Skip, shard_record
from pipeline.cipher import BlockCipher
from pipeline.errors import OnError
from pipeline.inputs import Sample
from pipeline.keys import Key
from pipeline.atomic import put_atomic
from pipeline.zarr_store import zarr_store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardTask:
    """What one task writes: shard ``index`` of ``split``, whose first sample is sample ``start``.

    Each sample is stored at ``shapes[i]`` (its padded size). Fixed layout (``offsets`` None): the shard
    is samples ``start ..`` of (N, H, W, 3) arrays. Ragged: sample ``i`` starts at pixel ``offsets[i]`` of
    the flat arrays, and the shard writes pixels ``region`` (first, count).
    """

    split: str
    index: int
    start: int
    labelled: bool
    samples: tuple[Sample, ...]
    shapes: tuple[tuple[int, int], ...]
    inputs: str  # pipeline.inputs.fingerprint of the samples
    offsets: tuple[int, ...] | None = None
    region: tuple[int, int] | None = None

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
    labels: Labels
    objects: dict[tuple[str, str, int], str]  # (split, array, shard) -> its store key

    def __call__(self, task: ShardTask, secret_key: Key | None) -> ShardResult:
        """Write ``task``'s shard encrypted with ``secret_key`` (plain if None), unless it is done already."""
        fs, root = url_to_fs(self.store, **self.storage_options)
        objects = [self.objects[task.split, array, task.index] for array in task.arrays]
        record_path = f"{root}/{shard_record(task.split, task.index)}"
        record = self._read_record(fs, record_path)
        if record is not None and self._still_valid(record, task, fs, root, objects):
            return ShardResult(task.split, task.index, len(task.samples), False, record.skipped)

        for path in (record_path, *(f"{root}/{name}" for name in objects)):  # record first: never a stale one
            if fs.exists(path):
                fs.rm_file(path)
        cipher = BlockCipher(secret_key) if secret_key is not None else None
        images, labels, problems = _load_samples(self.raw, self.storage_options, task, cipher, self.labels)
        try:
            skipped = tuple(self.policy.handle(problem, self.raw) for problem in problems)
        except UserError as error:
            return ShardResult(task.split, task.index, len(task.samples), False, (), str(error))

        written: dict[str, ObjectEntry] = {}
        group = zarr.open_group(_HashingStore(zarr_store(self.store, self.storage_options), written), path=task.split, mode="r+")
        # write_empty_chunks: otherwise zarr compares every chunk with the fill value, to leave out
        # empty ones: ~12 ms per 1024x2048 image, as much as compressing and writing it.
        for name, data in (("images", images), ("labels", labels)) if task.labelled else (("images", images),):
            if task.region is None:
                where = slice(task.start, task.start + len(task.samples))  # one whole shard
            else:  # the shard's chunks that hold its samples; the rest of it stays absent
                channels = 3 if name == "images" else 1
                where = slice(task.region[0] * channels, (task.region[0] + task.region[1]) * channels)
            group[name].with_config({"write_empty_chunks": True})[where] = data
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


@dataclass(frozen=True)
class Labels:
    """How the owner makes stored labels of raw label files: ``lookup`` (raw value -> stored value, the
    dataset description's), and which stored values are none of the ``classes`` indices nor ``ignore``."""

    lookup: tuple[int, ...]
    classes: int
    ignore: int = IGNORE_INDEX

    @property
    def table(self) -> np.ndarray:
        return np.array(self.lookup, np.uint8)

    @property
    def foreign(self) -> np.ndarray | None:
        """1 for a stored value that is no class; None if the lookup makes none (no need to look)."""
        foreign = np.array([value >= self.classes and value != self.ignore for value in range(256)], np.uint8)
        return foreign if foreign[self.table].any() else None


class _Unusable(Exception):
    def __init__(self, file: str, reason: str) -> None:
        super().__init__(file, reason)
        self.file, self.reason = file, reason


def _load_samples(
    raw: str, storage_options: dict[str, Any], task: ShardTask, cipher: BlockCipher | None, labels: Labels
) -> tuple[np.ndarray, np.ndarray | None, list[Skip]]:
    """Decode the shard's images (RGB, resized and padded to their stored size, encrypted with ``cipher``
    unless None) and labels (class indices, padded with the ignore index), straight into the shard's
    buffers; unusable samples stay zeros / ignore."""
    if task.offsets is None:
        count = len(task.samples)
        h, w = task.shapes[0]
        image_buffer, label_buffer = np.zeros((count, h, w, 3), np.uint8), np.full((count, h, w), labels.ignore, np.uint8)
        views = [(image_buffer[i], label_buffer[i]) for i in range(count)]
    else:
        first, count = task.region
        image_buffer, label_buffer = np.zeros(count * 3, np.uint8), np.full(count, labels.ignore, np.uint8)
        views = [
            (image_buffer[3 * (o - first) : 3 * (o - first + h * w)].reshape(h, w, 3), label_buffer[o - first : o - first + h * w].reshape(h, w))
            for o, (h, w) in zip(task.offsets, task.shapes)
        ]
    fs, root = url_to_fs(raw, **storage_options)
    files = [f"{root}/{p}" for s in task.samples if s.problem is None for p in (s.image, s.label) if p]
    contents = fs.cat(files, on_error="return") if files else {}  # one batched read (concurrent on S3)
    table, foreign = labels.table, labels.foreign

    problems = []
    for sample, (image_view, label_view) in zip(task.samples, views):
        try:
            if sample.problem:
                problems.append(sample.problem)
                continue
            image = _decode_image(sample.image, contents[f"{root}/{sample.image}"], sample.source)
            if sample.size != sample.source:  # mmseg's Resize: bilinear for images, nearest for labels
                image = cv2.resize(image, sample.size[::-1], interpolation=cv2.INTER_LINEAR)
            if task.labelled:
                label = cv2.LUT(_decode_label(sample.label, contents[f"{root}/{sample.label}"], sample.source), table)
                if foreign is not None and cv2.countNonZero(cv2.LUT(label, foreign)):
                    values = sorted(set(np.unique(label).tolist()) - set(range(labels.classes)) - {labels.ignore})
                    raise _Unusable(sample.label, f"label value {values[0]} is none of the {labels.classes} classes' nor the ignore index {labels.ignore}")
                if sample.size != sample.source:
                    label = cv2.resize(label, sample.size[::-1], interpolation=cv2.INTER_NEAREST)
                label_view[: sample.size[0], : sample.size[1]] = label
            if image.shape[:2] != image_view.shape[:2]:  # padded at the bottom and right, black
                padded = np.zeros_like(image_view)
                padded[: image.shape[0], : image.shape[1]] = image
                image = padded
            if cipher is None:
                image_view[...] = image
            else:  # straight into the shard while the decoded image is in cache: no second copy
                cipher.encrypt(image, out=image_view)
        except _Unusable as problem:
            image_view[...], label_view[...] = 0, labels.ignore
            problems.append(Skip(split=task.split, name=sample.name, file=problem.file, reason=problem.reason))
    return image_buffer, label_buffer if task.labelled else None, problems


def _decode_image(file: str, data: bytes | Exception, size: tuple[int, int]) -> np.ndarray:
    """An image file decoded to RGB as OpenCV does for mmseg's LoadImageFromFile (EXIF orientation applied)."""
    return _decoded(file, data, lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR_RGB), (*size, 3))


def _decode_label(file: str, data: bytes | Exception, size: tuple[int, int]) -> np.ndarray:
    """A label PNG's values as mmseg's LoadAnnotations reads them (Pillow, unchanged): a palette PNG's
    indices, a grey PNG's values (decoded by OpenCV, which gives the same values faster)."""

    def decode(png: bytes) -> np.ndarray | None:
        if png[25:26] == b"\x03":  # IHDR colour type 3: palette
            try:
                with Image.open(io.BytesIO(png)) as label:
                    return np.asarray(label)
            except (OSError, ValueError):
                return None
        return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)

    return _decoded(file, data, decode, size)


def _decoded(file: str, data: bytes | Exception, decode, shape: tuple[int, ...]) -> np.ndarray:
    """One decoded file of the expected shape, or _Unusable."""
    if isinstance(data, FileNotFoundError):
        raise _Unusable(file, "file disappeared after planning")
    if isinstance(data, Exception):
        raise data  # a storage error, not bad input: fail the task, a rerun resumes
    array = decode(data)
    if array is None:
        raise _Unusable(file, "cannot decode it (truncated or corrupt)")
    if array.shape != shape or array.dtype != np.uint8:
        raise _Unusable(file, f"decodes to {array.dtype} {array.shape}, expected uint8 {shape}")
    return array
