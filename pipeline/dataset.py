"""The encrypt stage: a raw Cityscapes tree -> one Zarr v3 store of block-encrypted images and plain labels.

Store layout (a local path or an fsspec URL such as ``s3://bucket/dataset.zarr``)::

    zarr.json               attrs: format, key id, block size, splits, source fingerprint, complete, skipped
    <split>/zarr.json       attrs: names (sample i is names[i]), labelled, skipped (names)
    <split>/images          uint8 (N, H, W, 3) RGB, encrypted; a chunk is one image, a shard S images
    <split>/labels          uint8 (N, H, W) trainIds, 255 = ignore; not for the unlabelled test split
    <split>/shards/<i>.json completion record of shard i: sha256 of its objects, its skipped files

The work is one Dask task per shard: the shard is the unit of writing (never two writers in one
shard, which loses data silently), of memory (a worker holds one shard) and of resuming (a shard
is done when its record exists and its objects still hash to what the record says).
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import zarr
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from zarr.codecs import ZstdCodec

from pipeline.cipher import BlockCipher
from pipeline.errors import PipelineError
from pipeline.keys import Key
from pipeline.storage import put_atomic

__all__ = [
    "DEFAULT_SHARD_SIZE", "TRAIN_IDS", "DatasetSummary", "encrypt_dataset", "decrypt_samples", "local_cluster",
]

log = logging.getLogger(__name__)

FORMAT = "cipherseg-dataset"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
LABELLED = {"train": True, "val": True, "test": False}  # Cityscapes test labels are dummies
# Shards of 8 images: ~30-45 MB objects (one S3 PUT each, few objects and records) and a worker
# peak of ~0.37 GiB. Size 4 ran as fast, 16 peaked at 0.53 GiB: smaller shards only add objects,
# larger ones memory and a coarser last wave of tasks (benchmarks/bench_encrypt_stage.py).
DEFAULT_SHARD_SIZE = 8
# Measured on a shard of 8 encrypted 1024x2048 images (zarr, 2 cores): zstd-1 writes in 8 ms per
# image and reads one in 9 ms, 10% smaller than raw on the synthetic sample (~40% on real photos,
# NOTES section 4); zstd-3 is slower for nothing; blosc-lz4 saves 2 ms but does not compress.
# The zstd frame checksum (+0.5 ms) gives each inner chunk the integrity check zarr lacks.
CODEC = ZstdCodec(level=1, checksum=True)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_RGB, PNG_GREY = 2, 0  # IHDR colour types
PROGRESS_LOG_SECONDS = 10


@dataclass(frozen=True)
class Sample:
    """One image of the plan: its name, its files relative to the raw root, and any problem found."""

    name: str
    image: str
    label: str | None
    problem: tuple[str, str] | None = None  # (file, reason): planned to be skipped


@dataclass(frozen=True)
class SplitPlan:
    name: str
    height: int
    width: int
    samples: tuple[Sample, ...]

    @property
    def labelled(self) -> bool:
        return LABELLED[self.name]


@dataclass(frozen=True)
class ShardJob:
    """Everything one task needs to write shard ``index`` of a split; small and picklable."""

    raw: str
    store: str
    storage_options: dict[str, Any]
    key: Key | None
    on_error: str
    split: str
    shape: tuple[int, int]  # (height, width) of the split's images
    index: int
    start: int  # position of the shard's first sample in the split
    samples: tuple[Sample, ...]

    @property
    def labelled(self) -> bool:
        return LABELLED[self.split]


@dataclass(frozen=True)
class ShardResult:
    split: str
    index: int
    images: int
    written: bool  # False: a valid record was found and the shard was left alone
    skipped: list[dict[str, str]]  # [{split, name, file, reason}]
    error: str | None = None  # bad input in fail mode


@dataclass(frozen=True)
class DatasetSummary:
    """What an encrypt run did."""

    store: str
    samples: dict[str, int]  # images per split, skipped ones included
    shards_written: int
    shards_reused: int
    skipped: list[dict[str, str]]  # [{file, reason}]


def _train_ids() -> np.ndarray:
    from cityscapesscripts.helpers.labels import labels

    lut = np.full(256, 255, dtype=np.uint8)
    for label in labels:
        if 0 <= label.id < 256 and 0 <= label.trainId < 255:
            lut[label.id] = label.trainId
    return lut


TRAIN_IDS = _train_ids()  # labelId -> trainId (cityscapesscripts' table); ignored classes -> 255


# --- planning -------------------------------------------------------------------------------


def _plan_dataset(
    raw: str, block_size: int | None, on_error: str, storage_options: dict[str, Any]
) -> tuple[list[SplitPlan], str]:
    """The splits to write and the input's fingerprint, from a listing and the PNG headers only.

    A problem raises PipelineError naming the file (``on_error="fail"``), or marks the sample
    to be skipped (``"skip"``).
    """
    fs, root = url_to_fs(raw, **storage_options)
    if not fs.isdir(f"{root}/leftImg8bit"):
        raise PipelineError(f"{raw}: no leftImg8bit/ folder here; expected a Cityscapes root")
    sizes = _list_files(fs, root, "leftImg8bit") | _list_files(fs, root, "gtFine")
    images = sorted(p for p in sizes if p.endswith("_leftImg8bit.png") and p.count("/") == 3)
    by_split = {split: [p for p in images if p.split("/")[1] == split] for split in SPLITS}
    if not any(by_split.values()):
        raise PipelineError(f"{raw}: no leftImg8bit/<split>/<city>/*_leftImg8bit.png images for splits {SPLITS}")

    labels = {p: _label_path(p) for p in images if LABELLED[p.split("/")[1]]}
    files = images + sorted(label for label in labels.values() if label in sizes)
    starts = fs.cat_ranges([f"{root}/{p}" for p in files], 0, 26, on_error="return")
    headers = {path: _png_header(start) for path, start in zip(files, starts)}
    plans = [
        _plan_split(raw, split, paths, labels, headers, block_size, on_error)
        for split, paths in by_split.items()
        if paths
    ]
    fingerprint = hashlib.sha256("".join(f"{p}\0{sizes[p]}\n" for p in sorted(files)).encode()).hexdigest()
    return plans, fingerprint


def _plan_split(raw, split, paths, labels, headers, block_size, on_error) -> SplitPlan:
    """The split's image size is its most common usable one; every other image is a problem."""
    usable = Counter(headers[p][:2] for p in paths if _image_problem(headers[p], block_size) is None)
    shape = usable.most_common(1)[0][0] if usable else None
    samples = []
    for path in paths:
        problem = _problem(path, labels.get(path), headers, shape, block_size)
        if problem and on_error == "fail":
            raise PipelineError(f"{_show(raw, problem[0])}: {problem[1]}")
        name = path.rsplit("/", 1)[1].removesuffix("_leftImg8bit.png")
        samples.append(Sample(name, path, labels.get(path), problem))
    if shape is None:
        file, reason = samples[0].problem
        raise PipelineError(f"{raw}: no usable image in split {split!r} (the first: {_show(raw, file)}: {reason})")
    return SplitPlan(split, *shape, tuple(samples))


def _problem(image, label, headers, shape, block_size) -> tuple[str, str] | None:
    """(file relative to the raw root, reason) if this sample cannot be used."""
    reason = _image_problem(headers[image], block_size, shape)
    if reason:
        return image, reason
    if label is None:
        return None
    if label not in headers:
        return image, f"no label file (expected {label})"
    reason = _label_problem(headers[label], shape)
    return (label, reason) if reason else None


def _image_problem(header, block_size, shape=None) -> str | None:
    if header is None:
        return "not a PNG file"
    height, width, depth, colour = header
    if (depth, colour) != (8, PNG_RGB):
        return f"not an 8-bit RGB PNG (bit depth {depth}, colour type {colour})"
    if block_size and (height % block_size or width % block_size):
        return f"image size {height}x{width} is not a multiple of the block size {block_size}"
    if shape and (height, width) != shape:
        return f"image size {height}x{width} differs from the other images of its split ({shape[0]}x{shape[1]})"
    return None


def _label_problem(header, shape) -> str | None:
    if header is None:
        return "not a PNG file"
    height, width, depth, colour = header
    if (depth, colour) != (8, PNG_GREY):
        return f"not an 8-bit greyscale label PNG (bit depth {depth}, colour type {colour})"
    if (height, width) != shape:
        return f"label size {height}x{width} differs from its image's ({shape[0]}x{shape[1]})"
    return None


def _png_header(data: bytes | Exception) -> tuple[int, int, int, int] | None:
    """(height, width, bit depth, colour type) from the first 26 bytes of a PNG, None if not a PNG."""
    if isinstance(data, Exception) or len(data) < 26 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return height, width, data[24], data[25]


def _list_files(fs, root: str, folder: str) -> dict[str, int]:
    """{path relative to root: size} of every file under root/folder."""
    if not fs.isdir(f"{root}/{folder}"):
        return {}
    found = fs.find(f"{root}/{folder}", detail=True)
    return {path[len(root) + 1 :]: info["size"] for path, info in found.items()}


def _label_path(image: str) -> str:
    """leftImg8bit/<split>/<city>/<name>_leftImg8bit.png -> gtFine/.../<name>_gtFine_labelIds.png"""
    _, split, city, file = image.split("/")
    return f"gtFine/{split}/{city}/{file.removesuffix('_leftImg8bit.png')}_gtFine_labelIds.png"


def _show(raw: str, relative: str) -> str:
    # Messages name the full path; the store records paths relative to the raw root only, since
    # it is published and the owner's own directory layout is none of the cloud's business.
    return f"{raw.rstrip('/')}/{relative}"


# --- the store ------------------------------------------------------------------------------


def _zarr_store(url: str, storage_options: dict[str, Any]):
    """LocalStore for local paths (its writes are atomic: temp file + rename), FsspecStore otherwise."""
    fs, path = url_to_fs(url, **storage_options)
    if isinstance(fs, LocalFileSystem):
        return zarr.storage.LocalStore(path)
    return zarr.storage.FsspecStore.from_url(url, storage_options=storage_options)


def _identity(key: Key | None, shard_size: int, fingerprint: str) -> dict[str, Any]:
    """The attrs that must agree between runs writing into the same store."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "encrypted": key is not None,
        "key_id": key.key_id if key else None,
        "block_size": key.block_size if key else None,
        "negative_positive": key.negative_positive if key else None,
        "shard_size": shard_size,
        "source_fingerprint": fingerprint,
    }


def _prepare_store(store, storage_options, plans, key, shard_size, fingerprint) -> zarr.Group:
    """Create the store and its arrays, or check that an existing one belongs to this run."""
    identity = _identity(key, shard_size, fingerprint)
    attributes = {
        **identity,
        "channel_order": "RGB",
        "splits": {plan.name: len(plan.samples) for plan in plans},
        "codec": {**CODEC.to_dict(), "chunk": "one image", "shard": f"{shard_size} images"},
        "complete": False,
    }
    try:
        root = zarr.open_group(_zarr_store(store, storage_options), mode="r+")
    except FileNotFoundError:
        fs, path = url_to_fs(store, **storage_options)
        if fs.exists(path) and fs.ls(path):
            raise PipelineError(f"{store}: exists and is not a cipherseg dataset store; refusing to write there")
        root = zarr.create_group(_zarr_store(store, storage_options), attributes=attributes)
    else:
        _check_identity(store, dict(root.attrs), identity)
        root.attrs.update(attributes)
    for plan in plans:
        group = root.require_group(plan.name)
        group.attrs.update({"names": [s.name for s in plan.samples], "labelled": plan.labelled})
        n, h, w = len(plan.samples), plan.height, plan.width
        _require_array(group, "images", (n, h, w, 3), shard_size, fill_value=0)
        if plan.labelled:
            _require_array(group, "labels", (n, h, w), shard_size, fill_value=255)
    return root


def _require_array(group: zarr.Group, name: str, shape: tuple[int, ...], shard_size: int, fill_value: int) -> None:
    group.require_array(
        name,
        shape=shape,
        dtype="uint8",
        chunks=(1, *shape[1:]),
        shards=(shard_size, *shape[1:]),
        compressors=CODEC,
        fill_value=fill_value,
        dimension_names=("sample", "y", "x", "channel")[: len(shape)],
    )


def _check_identity(store: str, found: dict[str, Any], expected: dict[str, Any]) -> None:
    if found.get("format") != FORMAT:
        raise PipelineError(f"{store}: not a cipherseg dataset store; refusing to write there")
    if found.get("format_version") != FORMAT_VERSION:
        raise PipelineError(f"{store}: dataset format version {found.get('format_version')} is not supported")

    def cipher(attrs):
        if not attrs["encrypted"]:
            return "no key (a plain store)"
        settings = f"block size {attrs['block_size']}, negative-positive {attrs['negative_positive']}"
        return f"key id {attrs['key_id']} ({settings})"

    if cipher(found) != cipher(expected):
        raise PipelineError(f"{store}: this store was written with {cipher(found)}; this run has {cipher(expected)}")
    if found.get("source_fingerprint") != expected["source_fingerprint"]:
        raise PipelineError(f"{store}: this store was made from different input files; write to a new store")
    if found.get("shard_size") != expected["shard_size"]:
        raise PipelineError(f"{store}: this store was written with shard size {found.get('shard_size')}, "
                            f"not {expected['shard_size']}")


# --- one shard (runs on a Dask worker) -------------------------------------------------------


class _Unusable(Exception):
    def __init__(self, file: str, reason: str) -> None:
        super().__init__(file, reason)
        self.file, self.reason = file, reason


def _write_shard(job: ShardJob) -> ShardResult:
    """Write one shard and its record, unless a valid record says it is already done (a Dask task)."""
    fs, root = url_to_fs(job.store, **job.storage_options)
    group = zarr.open_group(_zarr_store(job.store, job.storage_options), path=job.split, mode="r+")
    # Otherwise zarr compares every chunk with the fill value, to leave out empty ones: ~12 ms per
    # 1024x2048 image, as much as compressing and writing it.
    config = {"write_empty_chunks": True}
    arrays = [group[name].with_config(config) for name in (("images", "labels") if job.labelled else ("images",))]
    objects = [_shard_object(array, job.index) for array in arrays]
    record_path = f"{root}/{job.split}/shards/{job.index}.json"
    n = len(job.samples)

    record = _read_json(fs, record_path)
    if record is not None and _still_valid(record, fs, root, objects, job.on_error):
        return ShardResult(job.split, job.index, n, False, record["skipped"])

    images, labels, skipped = _load_samples(job)
    if skipped and job.on_error == "fail":  # bad input is an answer, not a crash for Dask to log
        problem = skipped[0]
        return ShardResult(job.split, job.index, n, False, [], f"{_show(job.raw, problem['file'])}: {problem['reason']}")
    if job.key is not None:
        images = BlockCipher(job.key).encrypt(images)
    # Whole shards: zarr writes each as one new object, without reading the old one first.
    arrays[0][job.start : job.start + n] = images
    if job.labelled:
        arrays[1][job.start : job.start + n] = labels
    record = {
        "names": [s.name for s in job.samples],
        "sha256": {obj: _sha256(fs, f"{root}/{obj}") for obj in objects},
        "skipped": skipped,
    }
    put_atomic(fs, record_path, json.dumps(record, indent=1).encode())
    return ShardResult(job.split, job.index, n, True, skipped)


def _shard_object(array: zarr.Array, index: int) -> str:
    """The store key of shard ``index`` of an array sharded along its first axis only."""
    return f"{array.path}/{array.metadata.encode_chunk_key((index,) + (0,) * (array.ndim - 1))}"


def _load_samples(job: ShardJob) -> tuple[np.ndarray, np.ndarray | None, list[dict[str, str]]]:
    """Decode the shard's images (RGB) and labels (trainIds); unusable samples stay zeros / 255."""
    n, (h, w) = len(job.samples), job.shape
    images = np.zeros((n, h, w, 3), np.uint8)
    labels = np.full((n, h, w), 255, np.uint8) if job.labelled else None
    fs, root = url_to_fs(job.raw, **job.storage_options)
    files = [f"{root}/{p}" for s in job.samples if s.problem is None for p in (s.image, s.label) if p]
    contents = fs.cat(files, on_error="return") if files else {}  # one batched read (concurrent on S3)

    def decode(relative: str, flags: int, shape: tuple[int, ...]) -> np.ndarray:
        return _decode(relative, contents[f"{root}/{relative}"], flags, shape)

    skipped = []
    for i, sample in enumerate(job.samples):
        try:
            if sample.problem:
                raise _Unusable(*sample.problem)
            image = decode(sample.image, cv2.IMREAD_COLOR_RGB, (h, w, 3))
            if labels is not None:
                cv2.LUT(decode(sample.label, cv2.IMREAD_UNCHANGED, (h, w)), TRAIN_IDS, dst=labels[i])
            images[i] = image
        except _Unusable as problem:
            entry = {"split": job.split, "name": sample.name, "file": problem.file, "reason": problem.reason}
            skipped.append(entry)
    return images, labels, skipped


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


def _still_valid(record: dict[str, Any], fs, root: str, objects: list[str], on_error: str) -> bool:
    """A record counts if every object still hashes to it; a shard with skips is redone in fail mode."""
    if record["skipped"] and on_error == "fail":
        return False
    return all(record["sha256"].get(obj, "") == _sha256(fs, f"{root}/{obj}") for obj in objects)


def _sha256(fs, path: str) -> str | None:
    """Hash of the object as stored; None if it does not exist."""
    try:
        return hashlib.sha256(fs.cat_file(path)).hexdigest()
    except FileNotFoundError:
        return None


def _read_json(fs, path: str) -> dict[str, Any] | None:
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None


# --- the coordinator ------------------------------------------------------------------------


def encrypt_dataset(
    raw: str,
    store: str,
    key: Key | None,
    *,
    workers: int,
    scheduler: str | None = None,
    on_error: str = "fail",
    shard_size: int = DEFAULT_SHARD_SIZE,
    storage_options: dict[str, Any] | None = None,
) -> DatasetSummary:
    """Encrypt the Cityscapes tree at ``raw`` into the Zarr store ``store``; resumes an interrupted run.

    ``key=None`` writes a plain store the same way (the unencrypted baseline). Runs on a new local
    cluster of ``workers`` processes, or on the Dask cluster at ``scheduler`` (whose workers then
    receive the key). ``on_error``: "fail" stops at the first bad input file; "skip" stores zeros
    (label 255) in its place and records it.
    """
    if on_error not in ("fail", "skip"):
        raise PipelineError(f"on_error must be 'fail' or 'skip', not {on_error!r}")
    if shard_size < 1:
        raise PipelineError(f"shard size must be at least 1, not {shard_size}")
    storage_options = storage_options or {}
    plans, fingerprint = _plan_dataset(raw, key.block_size if key else None, on_error, storage_options)
    root = _prepare_store(store, storage_options, plans, key, shard_size, fingerprint)
    jobs = [
        ShardJob(
            raw, store, storage_options, key, on_error, plan.name, (plan.height, plan.width),
            index, start, plan.samples[start : start + shard_size],
        )
        for plan in plans
        for index, start in enumerate(range(0, len(plan.samples), shard_size))
    ]
    results = _run(jobs, workers, scheduler, total=sum(len(plan.samples) for plan in plans))

    entries = sorted((entry for result in results for entry in result.skipped), key=lambda entry: entry["file"])
    for plan in plans:
        root[plan.name].attrs["skipped"] = sorted(e["name"] for e in entries if e["split"] == plan.name)
    skipped = [{"file": entry["file"], "reason": entry["reason"]} for entry in entries]
    root.attrs.update({"complete": True, "skipped": skipped})  # last: marks the store finished
    written = sum(result.written for result in results)
    return DatasetSummary(store, {p.name: len(p.samples) for p in plans}, written, len(results) - written, skipped)


def _run(jobs: list[ShardJob], workers: int, scheduler: str | None, total: int) -> list[ShardResult]:
    """Run one task per shard, reporting progress; the first failure cancels the rest and raises."""
    from distributed import as_completed

    results = []
    with _client(workers, scheduler) as client, _progress(total) as advance:
        futures = client.map(_write_shard, jobs, pure=False)
        for future in as_completed(futures):
            result = future.result()  # re-raises a task's exception; leaving the block cancels the rest
            if result.error:
                raise PipelineError(result.error)
            results.append(result)
            advance(result.images)
    return results


@contextmanager
def _client(workers: int, scheduler: str | None) -> Iterator[Any]:
    from distributed import Client

    logging.getLogger("distributed").setLevel(logging.WARNING)  # its INFO lines would drown the progress
    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except OSError as error:
            raise PipelineError(f"cannot reach the Dask scheduler at {scheduler} ({error})") from None
        with client:
            yield client
        return
    with local_cluster(workers) as cluster, Client(cluster) as client:
        yield client


def local_cluster(workers: int):
    """The local Dask cluster the stage starts: ``workers`` processes of one thread each."""
    import dask
    from distributed import LocalCluster

    # Dask's default MALLOC_TRIM_THRESHOLD_=65536 turns off glibc's adaptive mmap threshold: every
    # image-sized buffer becomes a fresh mapping whose pages fault in again. Measured: +15-20 ms per
    # 1024x2048 image (~20% of the stage). A worker holds one shard, so there is little to trim.
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        # Processes: decoding holds the GIL. Port 0: the default 8787 collides when clusters coexist.
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        )


@contextmanager
def _progress(total: int) -> Iterator[Any]:
    """advance(n) after n more images: a tqdm bar on a terminal, else a log line every 10 s and at the end."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        with tqdm(total=total, unit="img", desc="encrypt") as bar:
            yield bar.update
        return
    start = last = time.monotonic()
    done = 0

    def advance(n: int) -> None:
        nonlocal done, last
        done += n
        now = time.monotonic()
        if now - last >= PROGRESS_LOG_SECONDS or done == total:
            last = now
            rate = done / max(now - start, 1e-9)
            log.info("encrypt: %d/%d images, %.1f images/s, %.0f s left", done, total, rate, (total - done) / rate)

    yield advance


# --- decrypting (the owner only) ------------------------------------------------------------


def decrypt_samples(
    store: str,
    key: Key,
    out: str,
    *,
    names: Sequence[str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> list[str]:
    """Decrypt samples of an encrypted store to ``out/<split>/<city>/<name>_leftImg8bit.png``.

    ``names`` (default: every sample that was not skipped) are ``city_seq_frame``. The PNGs hold
    exactly the pixels of the original files. Returns the written paths.
    """
    storage_options = storage_options or {}
    try:
        root = zarr.open_group(_zarr_store(store, storage_options), mode="r")
    except FileNotFoundError:
        raise PipelineError(f"{store}: no dataset store here (create one with --stage encrypt)") from None
    attrs = dict(root.attrs)
    if attrs.get("format") != FORMAT:
        raise PipelineError(f"{store}: not a cipherseg dataset store")
    if not attrs["encrypted"]:
        raise PipelineError(f"{store}: this store is not encrypted; there is nothing to decrypt")
    if (attrs["key_id"], attrs["block_size"]) != (key.key_id, key.block_size):
        raise PipelineError(f"{store}: encrypted with key id {attrs['key_id']}, not with this key ({key.key_id})")
    if not attrs.get("complete"):
        raise PipelineError(f"{store}: the encrypt stage has not finished; run --stage encrypt again first")

    where = {name: (split, i) for split in attrs["splits"] for i, name in enumerate(root[split].attrs["names"])}
    skipped = {name for split in attrs["splits"] for name in root[split].attrs["skipped"]}
    wanted = [name for name in where if name not in skipped] if names is None else list(names)
    for name in wanted:
        if name not in where:
            raise PipelineError(f"{store}: no sample named {name!r}")
        if name in skipped:
            raise PipelineError(f"{store}: sample {name!r} was skipped when encrypting (see the store's attrs)")

    cipher = BlockCipher(key)
    fs, base = url_to_fs(out, **storage_options)
    written = []
    for name in wanted:
        split, i = where[name]
        image = cipher.decrypt(root[split]["images"][i])
        path = f"{base}/{split}/{name.rsplit('_', 2)[0]}/{name}_leftImg8bit.png"
        _, png = cv2.imencode(".png", image[..., ::-1])  # cv2 encodes BGR
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(path, png.tobytes())
        written.append(path)
    return written
