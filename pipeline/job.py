"""The owner's whole job as one call: a raw tree and a pretrained checkpoint -> the signed bundle the cloud is given.

    build_bundle   encrypt (Dask) -> encrypt-weights -> publish (signed)

The command line's ``--stage all``, the tests, the benchmarks and the experiments (through the command
line) all build bundles with it; each step is also a stage of its own (pipeline.encrypt,
pipeline.weights, pipeline.bundle).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.bundle import PublishSummary, publish
from pipeline.encrypt import EncryptSummary, encrypt_dataset
from pipeline.errors import OnError
from pipeline.keys import Key
from pipeline.zarr_store import DEFAULT_SHARD_SIZE
from pipeline.weights import encrypt_checkpoint


@dataclass(frozen=True)
class BuiltBundle:
    """What :func:`build_bundle` did: the encrypt run, the checkpoint it wrote, the publication."""

    encrypted: EncryptSummary
    checkpoint: Path
    published: PublishSummary


def build_bundle(
    raw: str | Path,
    weights: str | Path,
    arch: str,
    key: Key,
    *,
    store: str | Path,
    checkpoint: str | Path,
    bundle: str | Path,
    plain: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    on_error: OnError = OnError.FAIL,
    shard_size: int = DEFAULT_SHARD_SIZE,
    storage_options: Mapping[str, Any] | None = None,
) -> BuiltBundle:
    """Encrypt the raw tree ``raw`` into the dataset store ``store`` and the timm checkpoint ``weights`` (of
    architecture ``arch``) into ``checkpoint`` with ``key``, and publish both as ``bundle``, signed by ``key``.

    ``plain``: store and checkpoint without the key (the paper's baseline), still signed by its owner.
    The encrypt run resumes and a republish reuses what is unchanged, so a rerun redoes only what changed.
    """
    options = dict(storage_options or {})
    cipher = None if plain else key
    encrypted = encrypt_dataset(
        str(raw), str(store), cipher, workers=workers or os.cpu_count() or 1, scheduler=scheduler,
        on_error=on_error, shard_size=shard_size, storage_options=options,
    )  # fmt: skip
    written = encrypt_checkpoint(weights, arch, cipher, checkpoint)
    published = publish(str(store), str(written), str(bundle), key, storage_options=options)
    return BuiltBundle(encrypted, written, published)
