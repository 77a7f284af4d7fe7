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

from contract import datasets as descriptions
from contract.errors import FormatError
from contract.formats import (
    ClassName,
    Colour,
    DatasetDescription,
    DatasetName,
    Format,
    RelativePath,
    Split,
    _text,
)
from pipeline.errors import PipelineError

Suffix = _text(r"^[^\x00-\x1f\x7f/\\]+$", "a file name suffix (no '/')", min_length=1, max_length=100)
LabelValue = _text(r"^[0-9]{1,3}$", "a label value")  # a TOML table's key


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
    name: DatasetName
    classes: Annotated[tuple[ClassName, ...], Field(strict=False, min_length=1, max_length=255)]
    palette: Annotated[tuple[Colour, ...], Field(strict=False, max_length=255)] = ()
    reduce_zero_label: bool = False
    label_map: Annotated[dict[LabelValue, Annotated[int, Field(ge=0, le=255)]], Field(max_length=256)] = {}
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


def described(description: DatasetDescription) -> dict[str, Any]:
    """The fields of a :class:`Dataset` that say what its labels mean, from a description."""
    return dict(
        name=description.name,
        classes=description.classes,
        palette=description.palette,
        reduce_zero_label=description.reduce_zero_label,
        label_map={str(raw): value for raw, value in description.label_map},
    )


@cache
def cityscapes() -> Dataset:
    """Cityscapes: labelIds mapped to the 19 trainIds by the official label table (contract.datasets)."""
    fine = {"img_dir": "leftImg8bit/{}", "ann_dir": "gtFine/{}"}
    return Dataset(
        layout="cityscapes",
        **described(descriptions.cityscapes()),
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
        **described(descriptions.ade20k()),
        splits={
            "train": {"img_dir": "images/training", "ann_dir": "annotations/training"},
            "val": {"img_dir": "images/validation", "ann_dir": "annotations/validation"},
        },
    ),
    "voc": lambda: Dataset(
        layout="voc",
        **described(descriptions.voc()),
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
