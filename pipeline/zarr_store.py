"""The encrypted dataset store's layout on the owner's side: creating it, and checking that a run
may write into an existing one (see :class:`contract.formats.StoreAttributes` for the layout).

A store's identity is its key, cipher spec and layout: the samples of each split (names and image
size) and the shard size. What the samples were made from is each shard's record's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import zarr
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from zarr.codecs import ZstdCodec

from contract.bundle import read_store_attributes
from contract.formats import CipherSpec, SplitAttributes, StoreAttributes, describe_cipher
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
    store: str, storage_options: dict[str, Any], plans: Sequence[SplitPlan], cipher: CipherSpec | None, shard_size: int
) -> zarr.Group:
    """Create the store and its arrays, or check that an existing one has this run's identity.

    Marks the store incomplete until :func:`finish_store`.
    """
    attributes = StoreAttributes(cipher=cipher, shard_size=shard_size, splits={plan.name: len(plan.samples) for plan in plans})
    found = read_attributes(store, storage_options)
    if found is None:
        root = zarr.create_group(zarr_store(store, storage_options), attributes=attributes.to_json())
    else:
        root = zarr.open_group(zarr_store(store, storage_options), mode="r+")
        _check_identity(store, root, found, attributes, plans)
        root.attrs.put(attributes.to_json())
    for plan in plans:
        group = root.require_group(plan.name)
        group.attrs.put(SplitAttributes(names=tuple(s.name for s in plan.samples), labelled=plan.labelled).to_json())
        n, h, w = len(plan.samples), plan.height, plan.width
        _require_array(group, "images", (n, h, w, 3), shard_size, fill_value=0)
        if plan.labelled:
            _require_array(group, "labels", (n, h, w), shard_size, fill_value=255)
    return root


def finish_store(root: zarr.Group, attributes: StoreAttributes) -> None:
    """Record the run's skips and mark the store complete (last: the store is then whole)."""
    root.attrs.put(attributes.to_json())


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
    for plan in plans:
        try:
            names = SplitAttributes.parse(dict(root[plan.name].attrs), f"{store}/{plan.name}/zarr.json").names
            shape = root[plan.name]["images"].shape[1:3]
        except KeyError:
            raise PipelineError(f"{store}: split {plan.name} is incomplete; write to a new store") from None
        if names != tuple(s.name for s in plan.samples):
            raise PipelineError(
                f"{store}: the set of input images changed (split {plan.name}: {len(names)} samples in the store, "
                f"{len(plan.samples)} in the input, not the same ones); write to a new store"
            )
        if shape != (plan.height, plan.width):
            raise PipelineError(f"{store}: split {plan.name} holds {shape[0]}x{shape[1]} images, the input {plan.height}x{plan.width}")
