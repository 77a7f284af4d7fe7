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
from pipeline.job import build_bundle
from pipeline.keys import Key, generate
from pipeline.sample import write_random_vit, write_sample
from pipeline.weights import pretrained_normalization

ARCH = "vit_tiny_patch16_224"  # the tiny configs' backbone
SIZE = (96, 128)  # (H, W): multiples of the 16-pixel block, larger than the tiny configs' 64x64 crops
COUNTS = {"train": 4, "val": 2}
CLOUD = pretrained_normalization(ARCH).uniform()  # what the owner's checkpoints tell the cloud to use


@pytest.fixture(scope="session")
def owner(tmp_path_factory, dask_scheduler) -> SimpleNamespace:
    """The owner's key, raw data and timm checkpoint, the plain and encrypted bundles made from them, and
    the settings they were made with (arch, size, counts, and the cloud normalization)."""
    root = tmp_path_factory.mktemp("owner")
    key, raw = generate(), root / "cityscapes"
    write_sample(raw, counts=COUNTS, size=SIZE)
    weights = write_random_vit(root / f"{ARCH}.safetensors", ARCH)
    for kind in ("plain", "encrypted"):
        build_bundle(
            raw, weights, ARCH, key, store=root / kind / "dataset.zarr", checkpoint=root / kind / "backbone.safetensors",
            bundle=root / "bundles" / kind, plain=kind == "plain", workers=1, scheduler=dask_scheduler,
        )  # fmt: skip
    return SimpleNamespace(
        arch=ARCH,
        size=SIZE,
        counts=COUNTS,
        cloud=CLOUD,
        key=key,
        raw=raw,
        weights=weights,
        plain=root / "plain",
        encrypted=root / "encrypted",
        bundles={kind: root / "bundles" / kind for kind in ("plain", "encrypted")},
        signer=save_signer(key.signer(), root / "signer.json"),
    )


@pytest.fixture(scope="session")
def keyed_bundle(owner, dask_scheduler) -> Callable[[Path, Key], SimpleNamespace]:
    """Publish the owner's data with another key: (folder, key) -> the key, the bundle and its signer file."""

    def publish_with(root: Path, key: Key) -> SimpleNamespace:
        build_bundle(
            owner.raw, owner.weights, owner.arch, key, store=root / "store.zarr", checkpoint=root / "backbone.safetensors",
            bundle=root / "bundle", workers=1, scheduler=dask_scheduler,
        )  # fmt: skip
        return SimpleNamespace(key=key, bundle=root / "bundle", signer=save_signer(key.signer(), root / "signer.json"))

    return publish_with
