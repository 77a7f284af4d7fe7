"""Cloud-side building blocks: key-safe transforms, the dataset's refusal of unsafe ones, the checkpoint checks."""

import hashlib
import json
import re

import cv2
import numpy as np
import pytest
import torch
import zarr
from mmengine.registry import init_default_scope
from mmengine.runner import CheckpointLoader
from mmseg.datasets.transforms import PackSegInputs, PhotoMetricDistortion, RandomCrop, RandomFlip, Resize
from mmseg.registry import DATASETS

from contract.errors import UserError
from pipeline.cipher import BlockCipher
from pipeline.datasets import cityscapes
from pipeline.keys import generate
from pipeline.weights import encrypt_checkpoint
from contract.registry import fit_problems
from training.hooks import CipherSegCheckHook
from training.loaders import read_header
from training.transforms import BlockAlignedRandomCrop, KeySafePhotoMetricDistortion, key_unsafe_transforms

TRAIN_IDS = np.array(cityscapes().description.lookup(), np.uint8)  # labelId -> trainId


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
    assert np.array_equal(sample["gt_seg_map"], TRAIN_IDS[cv2.imread(str(label), cv2.IMREAD_UNCHANGED)])
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


def test_the_safetensors_loader_reads_the_owners_checkpoint(owner, checkpoints):
    loaded = CheckpointLoader.load_checkpoint(checkpoints["encrypted"], map_location="cpu")
    header = read_header(checkpoints["encrypted"])
    metadata = header.metadata
    assert {name: tuple(t.shape) for name, t in loaded["state_dict"].items()} == header.shapes
    assert loaded["meta"]["safetensors_metadata"] == metadata  # what the model reads, for the check hook
    assert metadata["encrypted"] == "true" and json.loads(metadata["norm_mean"]) == list(owner.cloud.mean)


def test_backbone_mismatches_are_named():
    expected = {"pos_embed": (1, 17, 8), "patch_embed.projection.weight": (8, 3, 16, 16), "cls_token": (1, 1, 8)}
    found = {"pos_embed": (1, 197, 8), "patch_embed.projection.weight": (8, 3, 8, 8), "ln1.weight": (8,), "head.weight": (8,)}
    resampled, unused = re.compile("pos_embed"), re.compile(r"ln1\.weight")
    assert fit_problems(expected, found, resampled, unused=unused) == [
        "missing cls_token",
        "unexpected head.weight",
        "patch_embed.projection.weight has shape (8, 3, 8, 8), the model (8, 3, 16, 16)",
    ]


class Preprocessor(torch.nn.Module):
    def __init__(self, mean, std, bgr_to_rgb=False):
        super().__init__()
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
        self.channel_conversion = bgr_to_rgb


@pytest.mark.parametrize(
    "hook, store, checkpoint, preprocessor, message",
    [
        (dict(), "encrypted", "encrypted", {}, None),
        (dict(data="plain", checkpoint="plain"), "plain", "plain", {}, None),
        (dict(checkpoint="plain"), "encrypted", "plain", {}, None),
        (dict(), "plain", "encrypted", {}, "expects encrypted data, the dataset store is plain"),
        (dict(), "encrypted", "plain", {}, "expects a encrypted checkpoint"),
        (dict(), "encrypted", "encrypted", {"bgr_to_rgb": True}, "swaps channels"),
        (dict(), "encrypted", "encrypted", {"mean": [123.675, 116.28, 103.53]}, "was made for mean"),
    ],
)
def test_the_check_hook_refuses_what_does_not_belong_together(owner, checkpoints, hook, store, checkpoint, preprocessor, message):
    settings = {"mean": list(owner.cloud.mean), "std": list(owner.cloud.std), **preprocessor}
    shapes = read_header(checkpoints[checkpoint]).shapes
    backbone = {name: shape for name, shape in shapes.items() if not name.startswith("ln1.")}
    cipher = owner.key.spec() if store == "encrypted" else None
    problems = CipherSegCheckHook(**hook).problems(cipher, checkpoints[checkpoint], backbone, False, Preprocessor(**settings))
    assert problems == [] if message is None else any(message in problem for problem in problems), problems


def test_the_check_hook_refuses_a_checkpoint_of_another_key(owner, tmp_path):
    other_key = generate()
    other_key_id = other_key.key_id
    other = encrypt_checkpoint(owner.weights, owner.arch, other_key, tmp_path / "other.safetensors")
    preprocessor = Preprocessor(list(owner.cloud.mean), list(owner.cloud.std))
    problems = CipherSegCheckHook().problems(owner.key.spec(), str(other), {}, False, preprocessor)
    assert any(f"is made for key id {other_key_id}" in problem for problem in problems), problems
