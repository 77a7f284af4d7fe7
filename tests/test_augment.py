"""Owner-side augmentation before encryption: flipped, rescaled copies the encrypt stage takes as they are."""

import cv2
import numpy as np
import zarr

from pipeline.augment import augment
from pipeline.run import main
from pipeline.sample import write_sample


def test_augment_stage_adds_copies_of_the_training_images_only(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "augmented"
    write_sample(raw, counts={"train": 2, "val": 1}, size=(64, 128))
    assert main(["--stage", "augment", "--raw", str(raw), "--out", str(out), "--copies", "2"]) == 0

    originals = sorted(p.name for p in (raw / "leftImg8bit" / "train").glob("*/*.png"))
    train = sorted(p.name for p in (out / "leftImg8bit" / "train").glob("*/*.png"))
    assert len(train) == 6 and set(originals) < set(train)
    assert len(list((out / "leftImg8bit" / "val").glob("*/*.png"))) == 1
    for image in (out / "leftImg8bit" / "train").glob("*/*.png"):
        if image.name in originals:
            continue
        label = image.parents[3] / "gtFine" / "train" / image.parent.name / image.name.replace("leftImg8bit", "gtFine_labelIds")
        assert cv2.imread(str(image)).shape == (64, 128, 3)  # the split keeps one size, a multiple of 16
        assert cv2.imread(str(label), cv2.IMREAD_UNCHANGED).shape == (64, 128)
    # Plain images: the owner's alone.
    assert {p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()} == {0o600}
    assert {p.stat().st_mode & 0o777 for p in [out, *out.rglob("*")] if p.is_dir()} == {0o700}
    # The result is a Cityscapes tree the encrypt stage takes.
    assert main(["--stage", "encrypt", "--plain", "--raw", str(out), "--store", str(tmp_path / "s.zarr"), "--workers", "1"]) == 0


def test_copies_keep_the_cityscapes_name_pattern_through_encryption_and_training(tmp_path):
    """Every image of the augmented tree, and every sample of its store (as the training dataset names it), is named
    <city>_<seq>_<frame> as cityscapesscripts parses it: a copy is another frame of its image's sequence."""
    from cityscapesscripts.helpers.csHelpers import getCsFileInfo

    raw, out, store = tmp_path / "raw", tmp_path / "augmented", tmp_path / "s.zarr"
    write_sample(raw, counts={"train": 2, "val": 1}, size=(32, 64))
    assert main(["--stage", "augment", "--raw", str(raw), "--out", str(out), "--copies", "2"]) == 0
    assert main(["--stage", "encrypt", "--plain", "--raw", str(out), "--store", str(store), "--workers", "1"]) == 0

    for image in (out / "leftImg8bit" / "train").glob("*/*.png"):
        parsed = getCsFileInfo(str(image))
        assert (parsed.city, parsed.type, parsed.type2) == (image.parent.name, "leftImg8bit", "")
    names = zarr.open_group(str(store), mode="r")["train"].attrs["names"]  # what the training dataset names its samples
    parsed = [getCsFileInfo(f"{name}_leftImg8bit.png") for name in names]
    assert len({(p.city, p.sequenceNb, p.frameNb) for p in parsed}) == len(names) == 6
    originals = {(p.city, p.sequenceNb, p.frameNb) for p in parsed if len(p.frameNb) == 6}
    copies = {(p.city, p.sequenceNb, p.frameNb[-6:]) for p in parsed if len(p.frameNb) > 6}
    assert len(originals) == 2 and copies == originals  # each copy: its image's sequence, another frame


def test_a_tree_augmented_before_is_refused_rather_than_overwritten(tmp_path, capsys):
    raw, once, twice = tmp_path / "raw", tmp_path / "once", tmp_path / "twice"
    write_sample(raw, counts={"train": 1}, size=(32, 64))
    assert main(["--stage", "augment", "--raw", str(raw), "--out", str(once), "--copies", "2"]) == 0
    assert main(["--stage", "augment", "--raw", str(once), "--out", str(twice)]) == 2
    assert "which " + str(once) + " holds already" in capsys.readouterr().err


def test_augment_flips_and_rescales_image_and_labels_alike():
    rng = np.random.default_rng(0)
    label = np.repeat(np.arange(32, dtype=np.uint8)[None, :], 16, axis=0)  # labelId = column
    image = np.stack([label * 8] * 3, axis=-1)
    for _ in range(20):
        new_image, new_label = augment(image, label, rng)
        assert new_image.shape == image.shape and new_label.shape == label.shape
        kept = new_label > 0  # 0: padding ('unlabeled'), or the column labelled 0
        # Labels go with their pixels (a mismatched flip would be off by up to 248): nearest-neighbour
        # labels and bilinear images sample a column apart at most, 8 or 16 grey levels.
        assert np.abs(new_image[..., 0][kept].astype(int) - 8 * new_label[kept].astype(int)).max() <= 16
