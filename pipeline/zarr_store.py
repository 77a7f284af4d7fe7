"""The encrypted dataset store's layout on the owner's side: creating it, and checking that a run
may write into an existing one (see :class:`contract.formats.StoreAttributes` for the layout).

A store's identity is its key, cipher spec, dataset description and layout: the samples of each split
(names and sizes), the padding and resizing, and the shard size. What the samples were made from is each shard's record's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import zarr
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from zarr.codecs import ZstdCodec

from contract.bundle import read_store_attributes
from contract.errors import UserError
from contract.formats import (
    IGNORE_INDEX,
    CipherSpec,
    DatasetDescription,
    FixedLayout,
    SplitAttributes,
    StoreAttributes,
    describe_cipher,
)
from pipeline.errors import PipelineError
from pipeline.inputs import SplitPlan

# Shards of 8 images: ~30-45 MB objects (one S3 PUT each, few objects and records) and a worker
# peak of ~0.37 GiB. Size 4 ran as fast, 16 peaked at 0.53 GiB: smaller shards only add objects,
# larger ones memory and a coarser last wave of tasks (benchmarks/bench_encrypt_stage.py).
DEFAULT_SHARD_SIZE = 8
# Measured on a shard of 8 encrypted 1024x2048 images (zarr, 2 cores): zstd-1 writes in 8 ms per
# image and reads one in 9 ms, 10% smaller than raw on the synthetic sample (~40% on a real photo:
# 3.7 of its 6.3 MB); zstd-3 is slower for nothing; blosc-lz4 saves 2 ms but does not compress.
# The zstd frame checksum (+0.5 ms) gives each inner chunk the integrity check zarr lacks.
CODEC = ZstdCodec(level=1, checksum=True)


def zarr_store(url: str, storage_options: dict[str, Any], *, read_only: bool = False) -> zarr.abc.store.Store:
    """LocalStore for local paths (its writes are atomic: temp file + rename), FsspecStore otherwise."""
    fs, path = url_to_fs(url, **storage_options)
    if isinstance(fs, LocalFileSystem):
        return zarr.storage.LocalStore(path, read_only=read_only)
    return zarr.storage.FsspecStore.from_url(url, storage_options=storage_options, read_only=read_only)


def read_attributes(store: str, storage_options: dict[str, Any]) -> StoreAttributes | None:
    """The attributes of the dataset store at ``store``; None if nothing is there yet.

    Refuses a location that is a file, or a folder that holds something else.
    """
    fs, root = url_to_fs(store, **storage_options)
    if fs.isfile(root):
        raise PipelineError(f"{store}: a file, not a dataset store folder")
    if not fs.exists(f"{root}/zarr.json"):
        if fs.isdir(root) and fs.ls(root):
            raise PipelineError(f"{store}: exists and is not a cipherseg dataset store; refusing to write there")
        return None
    return read_store_attributes(fs, root, store)


def prepare_store(
    store: str,
    storage_options: dict[str, Any],
    plans: Sequence[SplitPlan],
    cipher: CipherSpec | None,
    dataset: DatasetDescription,
    *,
    shard_size: int,
    resize: tuple[int, int] | None,
) -> zarr.Group:
    """Create the store and its arrays, or check that an existing one has this run's identity.

    Marks the store incomplete until :func:`finish_store`.
    """
    attributes = StoreAttributes(
        cipher=cipher,
        dataset=dataset,
        padded_to=plans[0].padded_to,
        resize=resize,
        shard_size=shard_size,
        splits={plan.name: plan.layout for plan in plans},
    )
    found = read_attributes(store, storage_options)
    if found is None:
        root = zarr.create_group(zarr_store(store, storage_options), attributes=attributes.to_json())
    else:
        root = zarr.open_group(zarr_store(store, storage_options), mode="r+")
        _check_identity(store, root, found, attributes, plans)
        root.attrs.put(attributes.to_json())
    for plan in plans:
        group = root.require_group(plan.name)
        group.attrs.put(split_attributes(plan).to_json())
        for array in attributes.arrays(plan.name):
            _require_array(group, array, plan, shard_size)
    return root


def split_attributes(plan: SplitPlan) -> SplitAttributes:
    return SplitAttributes(names=tuple(s.name for s in plan.samples), sizes=tuple(s.size for s in plan.samples))


def finish_store(root: zarr.Group, attributes: StoreAttributes) -> None:
    """Record the run's skips and mark the store complete (last: the store is then whole)."""
    root.attrs.put(attributes.to_json())


def _require_array(group: zarr.Group, name: str, plan: SplitPlan, shard_size: int) -> None:
    """The split's ``images`` (3 bytes a pixel, black where empty) or ``labels`` (1, the ignore index)."""
    channels, fill_value = (3, 0) if name == "images" else (1, IGNORE_INDEX)
    layout = plan.layout.layout
    if isinstance(layout, FixedLayout):
        sample = (layout.height, layout.width, 3)[: 3 if channels == 3 else 2]
        shape, chunks, shards = (len(plan.samples), *sample), (1, *sample), (shard_size, *sample)
        dimensions = ("sample", "y", "x", "channel")[: len(shape)]
    else:
        chunk = layout.chunk_pixels * channels
        shard = layout.shard_chunks * chunk
        shape, chunks, shards, dimensions = (-(-len(plan.samples) // shard_size) * shard,), (chunk,), (shard,), None
    group.require_array(
        name, shape=shape, dtype="uint8", chunks=chunks, shards=shards, compressors=CODEC, fill_value=fill_value, dimension_names=dimensions
    )


def _check_identity(
    store: str, root: zarr.Group, found: StoreAttributes, expected: StoreAttributes, plans: Sequence[SplitPlan]
) -> None:
    if found.cipher != expected.cipher:
        raise PipelineError(
            f"{store}: written with {describe_cipher(found.cipher)}; this run has {describe_cipher(expected.cipher)}"
        )
    if found.shard_size != expected.shard_size:
        raise PipelineError(f"{store}: written with shard size {found.shard_size}, not {expected.shard_size}")
    if set(found.splits) != set(expected.splits):
        raise PipelineError(f"{store}: holds splits {sorted(found.splits)}, the input {sorted(expected.splits)}; write to a new store")
    for what in ("dataset", "padded_to", "resize"):
        if getattr(found, what) != getattr(expected, what):
            raise PipelineError(f"{store}: written with another {what.replace('_', ' ')} than this run's; write to a new store")
    for plan in plans:
        try:
            split = SplitAttributes.parse(dict(root[plan.name].attrs), f"{store}/{plan.name}/zarr.json")
        except (KeyError, UserError):
            raise PipelineError(f"{store}: split {plan.name} is incomplete; write to a new store") from None
        if split.names != tuple(s.name for s in plan.samples):
            raise PipelineError(
                f"{store}: the set of input images changed (split {plan.name}: {len(split.names)} samples in the store, "
                f"{len(plan.samples)} in the input, not the same ones); write to a new store"
            )
        # Sizes may change where a shard is redone (a repaired input), as long as the arrays keep their layout.
        if found.splits[plan.name] != plan.layout:
            raise PipelineError(f"{store}: split {plan.name} is laid out for images of other sizes than the input's; write to a new store")
