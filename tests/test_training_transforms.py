"""Cloud-side building blocks: key-safe transforms, the dataset over a verified bundle and its refusal of unsafe
transforms."""

import hashlib

import cv2
import numpy as np
import pytest
import torch
import zarr
from mmengine.registry import init_default_scope
from mmseg.datasets.transforms import PackSegInputs, PhotoMetricDistortion, RandomCrop, RandomFlip, Resize
from mmseg.registry import DATASETS

from contract.errors import UserError
from pipeline.cipher import BlockCipher
from pipeline.shards import train_ids
from training.transforms import BlockAlignedRandomCrop, KeySafePhotoMetricDistortion, key_unsafe_transforms


pytest_plugins = ["training_fixtures"]


@pytest.fixture(scope="module")
def stores(owner):
    return {kind: str(getattr(owner, kind) / "dataset.zarr") for kind in ("plain", "encrypted")}


@pytest.fixture(scope="module")
def bundles(owner):
    """Each published bundle, and the sha256 of its manifest (what a run pins after verifying it)."""
    return {
        kind: (str(bundle), hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest())
        for kind, bundle in owner.bundles.items()
    }


@pytest.fixture(scope="module")
def checkpoints(owner):
    return {kind: str(getattr(owner, kind) / "backbone.safetensors") for kind in ("plain", "encrypted")}


def augment(image: np.ndarray, label: np.ndarray, seed: int) -> np.ndarray:
    np.random.seed(seed)
    results = {"img": image, "gt_seg_map": label, "seg_fields": ["gt_seg_map"]}
    for transform in (BlockAlignedRandomCrop(64, cat_max_ratio=0.75), KeySafePhotoMetricDistortion()):
        results = transform(results)
    return results["img"]


def test_key_safe_augmentation_commutes_with_the_cipher_bit_for_bit(owner, stores):
    split = zarr.open_group(stores["plain"], mode="r")["train"]
    images, labels = split["images"][:], split["labels"][:]
    cipher = BlockCipher(owner.key)
    for seed in range(12):
        image, label = images[seed % len(images)], labels[seed % len(labels)]
        assert np.array_equal(augment(cipher.encrypt(image), label, seed), cipher.encrypt(augment(image, label, seed)))


def test_the_crop_is_block_aligned_and_keeps_cat_max_ratio():
    image = np.zeros((96, 128, 3), np.uint8)
    label = np.zeros((96, 128), np.uint8)
    label[:, 100:] = 1  # only crops reaching x >= 100 hold two classes
    crop = BlockAlignedRandomCrop((48, 32), cat_max_ratio=0.99)
    for seed in range(20):
        np.random.seed(seed)
        y0, y1, x0, x1 = crop.crop_bbox({"img": image, "gt_seg_map": label})
        assert y0 % 16 == x0 % 16 == 0 and (y1 - y0, x1 - x0) == (48, 32)
    with pytest.raises(ValueError, match="multiple of the block size"):
        BlockAlignedRandomCrop(40)


def test_unsafe_transforms_are_named():
    transforms = [
        BlockAlignedRandomCrop(64),
        KeySafePhotoMetricDistortion(),
        RandomCrop(64),
        Resize(scale=(64, 64)),
        RandomFlip(prob=0.5),
        PhotoMetricDistortion(),
        PackSegInputs(),
    ]
    assert key_unsafe_transforms(transforms, 16, False) == ["RandomCrop", "Resize", "RandomFlip", "PhotoMetricDistortion"]
    # With negative-positive blocks (255 - x at key-chosen positions) the key-safe step adapts to the data;
    # forced to brightness and plain contrast, which do not commute with inversion, it is unsafe.
    assert key_unsafe_transforms(transforms, 16, True) == key_unsafe_transforms(transforms, 16, False)
    forced = KeySafePhotoMetricDistortion(negative_positive=False)
    assert key_unsafe_transforms([forced], 16, True) == ["KeySafePhotoMetricDistortion"]
    assert key_unsafe_transforms([forced], 16, False) == []
    assert key_unsafe_transforms([BlockAlignedRandomCrop(64, block_size=16)], 32, False) == ["BlockAlignedRandomCrop"]


def dataset(bundle: tuple[str, str], split: str = "train", pipeline: tuple = ("LoadZarrImage", "LoadZarrAnnotations"), **kwargs):
    """The cloud's dataset over a published bundle (its location and manifest digest)."""
    import training.datasets  # noqa: F401  (registers the dataset)

    init_default_scope("mmseg")
    transforms = [dict(type=name, prob=0.5) if name == "RandomFlip" else dict(type=name) for name in pipeline]
    location, digest = bundle
    return DATASETS.build(
        dict(type="ZarrSegDataset", bundle=location, manifest_sha256=digest, split=split, pipeline=transforms, **kwargs)
    )


def test_the_dataset_refuses_unsafe_transforms_on_encrypted_data_only(owner, bundles):
    flip = ("LoadZarrImage", "RandomFlip")
    with pytest.raises(UserError, match="RandomFlip in the pipeline does not commute"):
        dataset(bundles["encrypted"], pipeline=flip)
    assert len(dataset(bundles["encrypted"], pipeline=flip, allow_key_unsafe_transforms=True)) == owner.counts["train"]
    assert len(dataset(bundles["plain"], pipeline=flip)) == owner.counts["train"]


def test_the_dataset_reads_the_store(owner, bundles):
    sample = dataset(bundles["plain"], split="val")[1]
    image, = (owner.raw / "leftImg8bit" / "val").glob(f"*/{sample['img_path']}_leftImg8bit.png")
    label, = (owner.raw / "gtFine" / "val").glob(f"*/{sample['img_path']}_gtFine_labelIds.png")
    assert np.array_equal(sample["img"], cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB))
    assert np.array_equal(sample["gt_seg_map"], train_ids()[cv2.imread(str(label), cv2.IMREAD_UNCHANGED)])
    assert sample["img_shape"] == owner.size


def as_is(sample):
    return sample


@pytest.mark.parametrize("start_method", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])  # spawn: ~13 s of imports
def test_the_dataset_works_in_dataloader_worker_processes(owner, bundles, start_method):
    """Every worker opens the store itself: nothing opened crosses a fork or a pickle."""
    data = dataset(bundles["encrypted"])
    reference = [data[i] for i in range(len(data))]
    loader = torch.utils.data.DataLoader(
        data, batch_size=None, num_workers=2, collate_fn=as_is, multiprocessing_context=start_method
    )
    samples = sorted(loader, key=lambda sample: sample["sample_index"])
    assert [s["img_path"] for s in samples] == [r["img_path"] for r in reference]
    for sample, expected in zip(samples, reference):
        assert np.array_equal(sample["img"], expected["img"])
        assert np.array_equal(sample["gt_seg_map"], expected["gt_seg_map"])
