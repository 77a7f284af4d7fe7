"""Datasets as the owner has them on disk: where each split's images and labels are, and what the labels mean.

A dataset is found as mmseg's ``BaseSegDataset`` finds it: per split an image folder and a label folder,
``<img_dir>/<stem><img_suffix>`` labelled by ``<ann_dir>/<stem><seg_map_suffix>`` (``stem`` may hold
sub-folders, as Cityscapes' cities), every image under the folder or the stems a split file lists (mmseg's
``ann_file``). Built in (``--dataset``): ``cityscapes`` (the whole release: gtFine for train, val and the
unlabelled test, gtCoarse for train_extra), ``ade20k``, ``voc`` (VOC2012 with its split files) and ``custom``
(mmseg's generic ``img_dir/<split>``, ``ann_dir/<split>``: every folder of ``img_dir`` a split). An owner's
own dataset is a ``[dataset]`` table in the owner's config file: the fields of :class:`Dataset`, over the
built-in its ``layout`` names (``custom`` unless given). What the labels mean
(:class:`contract.formats.DatasetDescription`) goes into the store; where the files were does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any

from pydantic import Field, model_validator

from contract.errors import FormatError
from contract.formats import (
    ClassName,
    Colour,
    DatasetDescription,
    Format,
    RelativePath,
    Split,
    _text,
)
from pipeline.errors import PipelineError

Suffix = _text(r"^[^\x00-\x1f\x7f/\\]+$", "a file name suffix (no '/')", min_length=1, max_length=100)


class SplitSource(Format):
    """Where one split's files are, relative to the raw root; ``ann_dir`` None: a split without labels."""

    img_dir: RelativePath
    ann_dir: RelativePath | None = None
    split_file: RelativePath | None = None  # one stem (relative to img_dir, without the suffix) per line
    seg_map_suffix: Suffix | None = None  # this split's own, when it differs from the dataset's


class Dataset(Format):
    """A dataset on the owner's disk and what its labels mean (the fields of a ``[dataset]`` table).

    ``splits`` None: every folder of ``img_dir`` is a split, labelled by the folder of the same name in
    ``ann_dir`` if there is one. ``palette`` empty: mmseg's (random colours, seed 42). ``label_map``: raw
    label value -> class index, after ``reduce_zero_label`` (as mmseg's ``LoadAnnotations``).
    """

    layout: Annotated[str, Field(max_length=40)] = "custom"  # the built-in a [dataset] table starts from
    name: _text(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$", "a dataset name (letters, digits, '_', '.', '-')")
    classes: Annotated[tuple[ClassName, ...], Field(strict=False, min_length=1, max_length=255)]
    palette: Annotated[tuple[Colour, ...], Field(strict=False, max_length=255)] = ()
    reduce_zero_label: bool = False
    label_map: Annotated[dict[_text(r"^[0-9]{1,3}$", "a label value"), Annotated[int, Field(ge=0, le=255)]], Field(max_length=256)] = {}
    img_suffix: Suffix = ".jpg"
    seg_map_suffix: Suffix = ".png"
    img_dir: RelativePath = "img_dir"
    ann_dir: RelativePath = "ann_dir"
    splits: Annotated[dict[Split, SplitSource], Field(min_length=1, max_length=64)] | None = None

    @model_validator(mode="after")
    def _described(self) -> Dataset:
        self.description  # noqa: B018 (refuse a description the store could not hold, now)
        return self

    @property
    def description(self) -> DatasetDescription:
        """What the store records of it."""
        try:
            return DatasetDescription(
                name=self.name,
                classes=self.classes,
                palette=self.palette or mmseg_palette(len(self.classes)),
                reduce_zero_label=self.reduce_zero_label,
                label_map=tuple(sorted((int(raw), value) for raw, value in self.label_map.items())),
            )
        except FormatError as error:
            raise ValueError(str(error).removeprefix("dataset: ")) from None

    def __str__(self) -> str:
        return self.name


def mmseg_palette(count: int) -> tuple[tuple[int, int, int], ...]:
    """The palette mmseg's BaseSegDataset makes for classes that come without one: numpy's legacy
    generator seeded with 42, ``randint(0, 255, (count, 3))``."""
    import numpy as np

    return tuple(map(tuple, np.random.RandomState(42).randint(0, 255, size=(count, 3)).tolist()))


@cache
def cityscapes() -> Dataset:
    """Cityscapes: labelIds mapped to the 19 trainIds by the official label table (cityscapesscripts)."""
    from cityscapesscripts.helpers.labels import labels

    trained = sorted((label for label in labels if 0 <= label.trainId < 255), key=lambda label: label.trainId)
    fine = {"img_dir": "leftImg8bit/{}", "ann_dir": "gtFine/{}"}
    return Dataset(
        layout="cityscapes",
        name="cityscapes",
        classes=tuple(label.name for label in trained),
        palette=tuple(label.color for label in trained),
        label_map={str(label.id): label.trainId if 0 <= label.trainId < 255 else 255 for label in labels if label.id >= 0},
        img_suffix="_leftImg8bit.png",
        seg_map_suffix="_gtFine_labelIds.png",
        splits={
            "train": {key: value.format("train") for key, value in fine.items()},
            "val": {key: value.format("val") for key, value in fine.items()},
            "test": {"img_dir": "leftImg8bit/test"},  # its gtFine labels are dummies
            "train_extra": {
                "img_dir": "leftImg8bit/train_extra",
                "ann_dir": "gtCoarse/train_extra",
                "seg_map_suffix": "_gtCoarse_labelIds.png",
            },
        },
    )


BUILT_IN: dict[str, Any] = {
    "cityscapes": cityscapes,
    "ade20k": lambda: Dataset(
        layout="ade20k",
        name="ade20k",
        classes=ADE20K_CLASSES,
        palette=ADE20K_PALETTE,
        reduce_zero_label=True,  # label 0 is 'other', in none of the 150 classes
        splits={
            "train": {"img_dir": "images/training", "ann_dir": "annotations/training"},
            "val": {"img_dir": "images/validation", "ann_dir": "annotations/validation"},
        },
    ),
    "voc": lambda: Dataset(
        layout="voc",
        name="voc",
        classes=VOC_CLASSES,
        palette=VOC_PALETTE,
        splits={
            split: {"img_dir": "JPEGImages", "ann_dir": "SegmentationClass", "split_file": f"ImageSets/Segmentation/{split}.txt"}
            for split in ("train", "val")
        },
    ),
    "custom": None,  # the classes are the owner's: a [dataset] table names them
}


def resolve_dataset(value: str | Mapping[str, Any], where: str = "--dataset") -> Dataset:
    """The dataset an option names: a built-in's name, or a ``[dataset]`` table (over the built-in its
    ``layout`` names). PipelineError naming ``where`` for anything else."""
    if isinstance(value, str):
        if value not in BUILT_IN:
            raise PipelineError(f"{where} {value!r}: not a built-in dataset ({', '.join(BUILT_IN)})")
        if BUILT_IN[value] is None:
            raise PipelineError(
                f"{where} {value!r}: a dataset of your own; describe it in the config file's [dataset] table "
                "(its classes at least; docs/datasets.md)"
            )
        return BUILT_IN[value]()
    if not isinstance(value, Mapping):
        raise PipelineError(f"{where}: expected a built-in dataset's name or a [dataset] table")
    base_name = value.get("layout", "custom")
    if base_name not in BUILT_IN:
        raise PipelineError(f"{where}: layout {base_name!r} is not a built-in dataset ({', '.join(BUILT_IN)})")
    base = BUILT_IN[base_name]() if BUILT_IN[base_name] else None
    document = {**(base.model_dump(exclude_defaults=True) if base else {}), "layout": base_name, **value}
    try:
        return Dataset.parse(document, f"{where} [dataset]")
    except FormatError as error:
        raise PipelineError(str(error)) from None


def exported_path(dataset: str, split: str, name: str) -> str:
    """Where ``--stage decrypt`` writes a sample, relative to its output folder: Cityscapes' own tree for
    Cityscapes (``<split>/<city>/<name>_leftImg8bit.png``), ``<split>/<name>.png`` otherwise."""
    if dataset == "cityscapes":
        return f"{split}/{name.rsplit('_', 2)[0]}/{name}_leftImg8bit.png"
    return f"{split}/{name}.png"


# mmseg 1.2.2's ADE20KDataset and PascalVOCDataset metainfo ('bed ' as mmseg spells it).
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed ", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence",
    "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column",
    "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator",
    "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway",
    "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole", "land",
    "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name",
    "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)
ADE20K_PALETTE = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
    (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
    (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4), (255, 51, 7),
    (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255), (255, 7, 71), (255, 9, 224),
    (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255), (8, 255, 214), (7, 255, 224), (255, 184, 6),
    (10, 255, 71), (255, 41, 10), (7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7),
    (255, 122, 8), (0, 255, 20), (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20),
    (0, 163, 255), (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0),
    (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255), (11, 200, 200),
    (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112), (0, 255, 133), (255, 0, 0), (255, 163, 0),
    (255, 102, 0), (194, 255, 0), (0, 143, 255), (51, 255, 0), (0, 82, 255), (0, 255, 41), (0, 255, 173),
    (10, 0, 255), (173, 255, 0), (0, 255, 153), (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102),
    (255, 173, 0), (255, 0, 20), (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204),
    (0, 255, 194), (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255),
    (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255), (163, 255, 0),
    (255, 235, 0), (8, 184, 170), (133, 0, 255), (0, 255, 92), (184, 0, 255), (255, 0, 31), (0, 184, 255),
    (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255), (112, 224, 255), (70, 184, 160),
    (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163), (255, 204, 0), (255, 0, 143), (0, 255, 235),
    (133, 255, 0), (255, 0, 235), (245, 0, 255), (255, 0, 122), (255, 245, 0), (10, 190, 212),
    (214, 255, 0), (0, 204, 255), (20, 0, 255), (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204),
    (41, 0, 255), (41, 255, 0), (173, 0, 255), (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184),
    (0, 92, 255), (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
)
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
VOC_PALETTE = (
    (0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128),
    (128, 128, 128), (64, 0, 0), (192, 0, 0), (64, 128, 0), (192, 128, 0), (64, 0, 128), (192, 0, 128),
    (64, 128, 128), (192, 128, 128), (0, 64, 0), (128, 64, 0), (0, 192, 0), (128, 192, 0), (0, 64, 128),
)
