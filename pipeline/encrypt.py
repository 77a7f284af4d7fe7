"""The encrypt stage: a raw Cityscapes tree -> one Zarr v3 store of block-encrypted images and plain
labels, one Dask task per shard; an interrupted run resumes, redoing only unfinished or changed shards.

    inputs      plans the samples of each split from a listing and the PNG headers
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
from pipeline.errors import OnError, PipelineError
from pipeline.inputs import SplitPlan, fingerprint, plan_dataset
from pipeline.keys import Key
from pipeline.shards import ShardResult, ShardTask, ShardWriter
from pipeline.zarr_store import DEFAULT_SHARD_SIZE, finish_store, prepare_store

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
    scheduler: str | None = None,
    on_error: OnError = OnError.FAIL,
    shard_size: int = DEFAULT_SHARD_SIZE,
    storage_options: dict[str, Any] | None = None,
) -> EncryptSummary:
    """Encrypt the Cityscapes tree at ``raw`` into the Zarr store ``store``; resumes an interrupted run.

    ``key=None`` writes a plain store the same way (the unencrypted baseline). Runs on a new local
    cluster of ``workers`` processes, or on the Dask cluster at ``scheduler`` (whose workers then
    receive the key, once each).
    """
    if shard_size < 1:
        raise PipelineError(f"shard size must be at least 1, not {shard_size}")
    storage_options = storage_options or {}
    plans = plan_dataset(raw, key.block_size if key else None, on_error, storage_options)
    tasks = _tasks(plans, shard_size)
    writer = ShardWriter(raw, store, storage_options, on_error)
    with cluster.client(workers, scheduler) as client:  # before the store: a bad scheduler writes nothing
        root = prepare_store(store, storage_options, plans, key.spec() if key else None, shard_size)
        results = _run(client, writer, tasks, key, total=sum(len(plan.samples) for plan in plans))

    skipped = tuple(sorted((skip for result in results for skip in result.skipped), key=lambda skip: skip.file))
    for plan in plans:
        if sum(skip.split == plan.name for skip in skipped) == len(plan.samples):
            raise PipelineError(f"{raw}: no usable image in split {plan.name!r} (every one was skipped); the store stays incomplete")
    attributes = StoreAttributes.parse(dict(root.attrs), store)
    finish_store(root, attributes.model_copy(update={"complete": True, "skipped": skipped}))
    written = sum(result.written for result in results)
    return EncryptSummary(store, {p.name: len(p.samples) for p in plans}, written, len(results) - written, skipped)


def _tasks(plans: Sequence[SplitPlan], shard_size: int) -> list[ShardTask]:
    return [
        ShardTask(plan.name, index, start, plan.height, plan.width, plan.labelled, samples, fingerprint(samples))
        for plan in plans
        for index, start in enumerate(range(0, len(plan.samples), shard_size))
        for samples in [plan.samples[start : start + shard_size]]
    ]


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
