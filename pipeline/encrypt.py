"""The encrypt stage: a dataset's tree -> one Zarr v3 store of block-encrypted images and plain labels,
one Dask task per shard; an interrupted run resumes, redoing only unfinished or changed shards.

    datasets    where a dataset's files are and what its labels mean (Cityscapes, ADE20K, VOC, the owner's own)
    inputs      plans the samples of each split from listings and the image headers
    zarr_store  creates the store, or checks that an existing one is this run's
    shards      writes one shard and its completion record (a Dask task)
    cluster     the local or remote Dask cluster
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from contract.formats import Skip, StoreAttributes
from pipeline import cluster
from pipeline.datasets import Dataset, cityscapes
from pipeline.errors import OnError, PipelineError
from pipeline.inputs import SplitPlan, fingerprint, plan_dataset
from pipeline.keys import Key
from pipeline.shards import Labels, ShardResult, ShardTask, ShardWriter
from pipeline.zarr_store import DEFAULT_SHARD_SIZE, finish_store, prepare_store

DEFAULT_PADDING = 16  # the sides of a plain store's samples: the block size of the keys it is compared with

log = logging.getLogger(__name__)
_PROGRESS_LOG_SECONDS = 10


@dataclass(frozen=True)
class EncryptSummary:
    """What an encrypt run did."""

    store: str
    samples: dict[str, int]  # images per split, skipped ones included
    shards_written: int
    shards_reused: int
    skipped: tuple[Skip, ...]


def encrypt_dataset(
    raw: str,
    store: str,
    key: Key | None,
    *,
    workers: int,
    dataset: Dataset | None = None,
    resize: tuple[int, int] | None = None,
    padded_to: int = DEFAULT_PADDING,
    scheduler: str | None = None,
    on_error: OnError = OnError.FAIL,
    shard_size: int = DEFAULT_SHARD_SIZE,
    storage_options: dict[str, Any] | None = None,
) -> EncryptSummary:
    """Encrypt the tree of ``dataset`` (default Cityscapes) at ``raw`` into the Zarr store ``store``;
    resumes an interrupted run.

    Samples are resized first if ``resize`` is given (mmseg's scale: long and short edge at most), then
    padded to multiples of the key's block size (``padded_to`` for a plain store). ``key=None`` writes a
    plain store the same way (the unencrypted baseline). Runs on a new local cluster of ``workers``
    processes, or on the Dask cluster at ``scheduler`` (whose workers then receive the key, once each).
    """
    if shard_size < 1:
        raise PipelineError(f"shard size must be at least 1, not {shard_size}")
    storage_options = storage_options or {}
    dataset = dataset or cityscapes()
    padded_to = key.block_size if key else padded_to
    plans = plan_dataset(
        raw, dataset, padded_to=padded_to, shard_size=shard_size, resize=resize, policy=on_error, storage_options=storage_options
    )
    description = dataset.description
    with cluster.client(workers, scheduler) as client:  # before the store: a bad scheduler writes nothing
        root = prepare_store(
            store, storage_options, plans, key.spec() if key else None, description, shard_size=shard_size, resize=resize
        )
        attributes = StoreAttributes.parse(dict(root.attrs), store)
        tasks = _tasks(plans, attributes)
        objects = {(t.split, a, t.index): attributes.shard_object(t.split, a, t.index) for t in tasks for a in t.arrays}
        writer = ShardWriter(raw, store, storage_options, on_error, Labels(description.lookup(), len(description.classes)), objects)
        results = _run(client, writer, tasks, key, total=sum(len(plan.samples) for plan in plans))

    skipped = tuple(sorted((skip for result in results for skip in result.skipped), key=lambda skip: skip.file))
    for plan in plans:
        if sum(skip.split == plan.name for skip in skipped) == len(plan.samples):
            raise PipelineError(f"{raw}: no usable image in split {plan.name!r} (every one was skipped); the store stays incomplete")
    finish_store(root, attributes.model_copy(update={"complete": True, "skipped": skipped}))
    written = sum(result.written for result in results)
    return EncryptSummary(store, {p.name: len(p.samples) for p in plans}, written, len(results) - written, skipped)


def _tasks(plans: Sequence[SplitPlan], attributes: StoreAttributes) -> list[ShardTask]:
    tasks, size = [], attributes.shard_size
    for plan in plans:
        starts, shapes = zip(*attributes.placement(plan.name, [s.size for s in plan.samples]))
        for index, start in enumerate(range(0, len(plan.samples), size)):
            samples = plan.samples[start : start + size]
            shard = dict(shapes=shapes[start : start + size])
            if plan.layout.ragged:
                chunk = plan.layout.layout.chunk_pixels
                first = index * plan.layout.layout.shard_chunks * chunk
                (h, w), last = shapes[start + len(samples) - 1], starts[start + len(samples) - 1]
                end = last + -(-h * w // chunk) * chunk
                # at least one chunk: a shard of skipped samples is still an object of the store
                shard.update(offsets=starts[start : start + size], region=(first, max(end - first, chunk)))
            tasks.append(ShardTask(plan.name, index, start, plan.labelled, samples, inputs=fingerprint(samples), **shard))
    return tasks


def _run(client: Any, writer: ShardWriter, tasks: list[ShardTask], key: Key | None, total: int) -> list[ShardResult]:
    """One task per shard, with progress; the first failure cancels the rest and raises."""
    from distributed import as_completed

    # Scattered once to every worker; each task gets the worker's copy (not the key pickled per task).
    shared_key = client.scatter(key, broadcast=True) if key is not None else None
    results = []
    with progress(total, "encrypt") as advance:
        futures = client.map(writer, tasks, secret_key=shared_key, pure=False)
        for future in as_completed(futures):
            result = future.result()  # re-raises a task's exception; leaving the block cancels the rest
            if result.error:
                raise PipelineError(result.error)
            results.append(result)
            advance(result.images)
    return results


@contextmanager
def progress(total: int, what: str) -> Iterator[Callable[[int], None]]:
    """advance(n) after n more items: a tqdm bar on a terminal, else a log line every 10 s and at the end."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        with tqdm(total=total, unit="img", desc=what) as bar:
            yield bar.update
        return
    start = last = time.monotonic()
    done = 0

    def advance(n: int) -> None:
        nonlocal done, last
        done += n
        now = time.monotonic()
        if now - last >= _PROGRESS_LOG_SECONDS or done == total:
            last = now
            rate = done / max(now - start, 1e-9)
            log.info("%s: %d/%d images, %.1f images/s, %.0f s left", what, done, total, rate, (total - done) / rate)

    yield advance
