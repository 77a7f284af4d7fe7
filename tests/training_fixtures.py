"""The data owner's side for the training tests, made with the owner's own tools: a synthetic Cityscapes
tree, a random-init ViT-Ti/16 (the tiny configs' backbone), and from them a plain and an encrypted store
and checkpoint (``owner.plain``, ``owner.encrypted``), each also published and signed by the owner
(``owner.bundles``; the owner's public signer file is ``owner.signer``); ``keyed_bundle`` publishes the
same data with another key.

Use it from a test module with ``pytest_plugins = ["training_fixtures"]``; the bundles are made once
per test session. The training package itself never sees the key.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from contract.signing import save_signer
from pipeline.bundle import publish
from pipeline.encrypt import encrypt_dataset
from pipeline.keys import Key, generate
from pipeline.sample import write_random_vit, write_sample
from pipeline.weights import encrypt_checkpoint, pretrained_normalization

ARCH = "vit_tiny_patch16_224"  # the tiny configs' backbone
SIZE = (96, 128)  # (H, W): multiples of the 16-pixel block, larger than the tiny configs' 64x64 crops
COUNTS = {"train": 4, "val": 2}
CLOUD = pretrained_normalization(ARCH).uniform()  # what the owner's checkpoints tell the cloud to use


def write_bundle(root: Path, raw: Path, weights: Path, key: Key | None, scheduler: str) -> Path:
    """An unpublished bundle (no manifest): the dataset store and checkpoint for ``key``, plain if None."""
    encrypt_dataset(str(raw), str(root / "dataset.zarr"), key, workers=1, scheduler=scheduler)
    encrypt_checkpoint(weights, ARCH, key, root / "backbone.safetensors")
    return root


@pytest.fixture(scope="session")
def owner(tmp_path_factory, dask_scheduler) -> SimpleNamespace:
    """The owner's key, raw data and timm checkpoint, the plain and encrypted bundles made from them, and
    the settings they were made with (arch, size, counts, and the cloud normalization)."""
    root = tmp_path_factory.mktemp("owner")
    key, raw = generate(), root / "cityscapes"
    write_sample(raw, counts=COUNTS, size=SIZE)
    weights = write_random_vit(root / f"{ARCH}.safetensors", ARCH)
    sources = {kind: write_bundle(root / kind, raw, weights, k, dask_scheduler) for kind, k in (("plain", None), ("encrypted", key))}
    for kind, source in sources.items():
        publish(str(source / "dataset.zarr"), str(source / "backbone.safetensors"), str(root / "bundles" / kind), key)
    return SimpleNamespace(
        arch=ARCH,
        size=SIZE,
        counts=COUNTS,
        cloud=CLOUD,
        key=key,
        raw=raw,
        weights=weights,
        plain=sources["plain"],
        encrypted=sources["encrypted"],
        bundles={kind: root / "bundles" / kind for kind in sources},
        signer=save_signer(key.signer(), root / "signer.json"),
    )


@pytest.fixture(scope="session")
def keyed_bundle(owner, dask_scheduler) -> Callable[[Path, Key], SimpleNamespace]:
    """Publish the owner's data with another key: (folder, key) -> the key, the bundle and its signer file."""

    def publish_with(root: Path, key: Key) -> SimpleNamespace:
        encrypt_dataset(str(owner.raw), str(root / "store.zarr"), key, workers=1, scheduler=dask_scheduler)
        encrypt_checkpoint(owner.weights, owner.arch, key, root / "backbone.safetensors")
        publish(str(root / "store.zarr"), str(root / "backbone.safetensors"), str(root / "bundle"), key)
        return SimpleNamespace(key=key, bundle=root / "bundle", signer=save_signer(key.signer(), root / "signer.json"))

    return publish_with
