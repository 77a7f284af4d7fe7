"""The synthetic Cityscapes tree must be read by cityscapesscripts exactly like the real one."""

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from cityscapesscripts.helpers.csHelpers import getCsFileInfo
from cityscapesscripts.helpers.labels import id2label, labels

from pipeline.errors import PipelineError
from pipeline.sample import CITIES, write_random_vit, write_sample

COUNTS = {"train": 4, "val": 2, "test": 2}
SIZE = (64, 128)
GT_TYPES = ("labelIds", "color", "instanceIds")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes")
    return root, write_sample(root, counts=COUNTS, size=SIZE, seed=0)


def read(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def gt_path(image: Path, kind: str) -> Path:
    return Path(str(image).replace("/leftImg8bit/", "/gtFine/").replace("_leftImg8bit.png", f"_gtFine_{kind}.png"))


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_matches_cityscapes(tree):
    root, images = tree
    assert sorted(images) == sorted(root.glob("leftImg8bit/*/*/*.png"))
    expected = set()
    for split, n in COUNTS.items():
        split_images = [p for p in images if p.parts[-3] == split]
        assert len(split_images) == n
        assert {p.parent.name for p in split_images} == set(CITIES[split])
        for image in split_images:
            info = getCsFileInfo(image)
            assert (info.city, info.type, info.type2, info.ext) == (image.parent.name, "leftImg8bit", "", "png")
            assert len(info.sequenceNb) == 6 and info.frameNb == "000019"
            for kind in GT_TYPES:
                gt = gt_path(image, kind)
                assert getCsFileInfo(gt)[:5] == (info.city, info.sequenceNb, info.frameNb, "gtFine", kind)
                expected.add(gt)
    assert set(root.rglob("gtFine/*/*/*")) == expected  # and no temporary files left behind

    image = read(images[0])
    assert image.shape == (*SIZE, 3) and image.dtype == np.uint8
    assert read(gt_path(images[0], "labelIds")).dtype == np.uint8
    assert read(gt_path(images[0], "instanceIds")).dtype == np.uint16  # 16-bit PNG like Cityscapes
    assert read(gt_path(images[0], "color")).shape == (*SIZE, 4)  # RGBA like cityscapesscripts writes


def test_labels_follow_the_official_table(tree):
    _, images = tree
    ids = np.array([lab.id for lab in labels if lab.id >= 0])
    to_train = np.full(256, 255, np.uint8)
    for lab in labels:
        if lab.id >= 0:
            to_train[lab.id] = lab.trainId if 0 <= lab.trainId < 255 else 255
    train_ids = set()
    for image in images:
        if image.parts[-3] == "test":
            continue
        label = read(gt_path(image, "labelIds"))
        assert np.isin(label, ids).all()

        color = read(gt_path(image, "color"))
        table = np.array([id2label[int(i)].color for i in range(ids.max() + 1)], np.uint8)
        assert np.array_equal(color[..., 2::-1], table[label]) and (color[..., 3] == 255).all()

        instance = read(gt_path(image, "instanceIds")).astype(int)
        objects = instance >= 1000
        assert np.array_equal(instance[objects] // 1000, label[objects])
        assert np.array_equal(instance[~objects], label[~objects])
        assert all(id2label[int(i)].hasInstances for i in np.unique(label[objects]))
        assert objects.any()
        train_ids |= set(np.unique(to_train[label]).tolist())
    assert len(train_ids - {255}) >= 10 and 255 in train_ids


def test_test_split_has_dummy_labels(tree):
    _, images = tree
    for image in (p for p in images if p.parts[-3] == "test"):
        assert read(image).std() > 10  # a real image, only the labels are dummies
        assert not read(gt_path(image, "labelIds")).any()  # 0: unlabeled
        assert not read(gt_path(image, "instanceIds")).any()
        assert not read(gt_path(image, "color"))[..., :3].any()


def test_images_have_natural_statistics(tree):
    _, images = tree
    for image in images:
        gray = read(image).astype(float).mean(axis=2)
        assert gray.std() > 10
        assert np.corrcoef(gray[:, 1:].ravel(), gray[:, :-1].ravel())[0, 1] > 0.8
        assert np.corrcoef(gray[1:].ravel(), gray[:-1].ravel())[0, 1] > 0.8


def test_deterministic_from_seed(tree, tmp_path):
    root, _ = tree
    reference = files(root)
    # Overwriting another seed's tree in place gives the same bytes as a fresh tree.
    write_sample(tmp_path / "a", counts=COUNTS, size=SIZE, seed=1)
    reseeded = files(tmp_path / "a")
    write_sample(tmp_path / "a", counts=COUNTS, size=SIZE, seed=0)
    assert files(tmp_path / "a") == reference
    assert all(reseeded[name] != data for name, data in reference.items() if name.startswith("leftImg8bit"))
    # More images leave the earlier ones unchanged.
    write_sample(tmp_path / "b", counts={"train": 6, "val": 3}, size=SIZE, seed=0)
    more = files(tmp_path / "b")
    assert all(more[name] == data for name, data in reference.items() if "/test/" not in name)


def test_cityscapes_resolution(tmp_path):
    start = time.perf_counter()
    (image,) = write_sample(tmp_path, counts={"val": 1}, size=(1024, 2048))
    # About 0.4 s on one core; the bound only catches accidental per-pixel Python loops.
    assert time.perf_counter() - start < 5
    assert read(image).shape == (1024, 2048, 3)
    assert read(gt_path(image, "instanceIds")).shape == (1024, 2048)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"size": (0, 128)}, "positive"),
        ({"size": (64, -1)}, "positive"),
        ({"counts": {"training": 1}}, "unknown splits"),
        ({"counts": {"train": -1}}, ">= 0"),
    ],
)
def test_invalid_arguments(tmp_path, kwargs, message):
    with pytest.raises(PipelineError, match=message):
        write_sample(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


def test_random_vit(tmp_path):
    import timm
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    arch = "vit_tiny_patch16_384"
    rng_state = torch.get_rng_state()
    path = write_random_vit(tmp_path / "vit.safetensors", arch, seed=0)
    assert torch.equal(torch.get_rng_state(), rng_state)  # the caller's RNG is left alone
    with safe_open(path, "pt") as f:
        assert f.metadata() == {"arch": arch, "source": "random-init"}
    weights = load_file(path)
    timm_keys = {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "norm.weight"}
    assert timm_keys <= weights.keys()
    timm.create_model(arch).load_state_dict(weights, strict=True)

    # Tensors, not bytes: safetensors writes metadata keys in random order (safetensors#584).
    same = load_file(write_random_vit(tmp_path / "same.safetensors", arch, seed=0))
    assert same.keys() == weights.keys() and all(torch.equal(same[k], weights[k]) for k in weights)
    other = load_file(write_random_vit(tmp_path / "other.safetensors", arch, seed=1))
    assert not torch.equal(other["blocks.0.attn.qkv.weight"], weights["blocks.0.attn.qkv.weight"])


def test_random_vit_unknown_arch(tmp_path):
    with pytest.raises(PipelineError, match="vit_nonexistent_patch16"):
        write_random_vit(tmp_path / "vit.safetensors", "vit_nonexistent_patch16")
    assert not any(tmp_path.iterdir())
