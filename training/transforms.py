"""mmseg transforms for block-encrypted images: loading from the Zarr store and key-safe augmentation.

The block transform shuffles the values inside every PxP block with one permutation. A transform
keeps the encrypted model equivalent to the plain one only if it commutes with that shuffle:
crops whose offsets and size are multiples of P, and one affine map applied to every value
(brightness, contrast). Resizing, flipping, rotating, unaligned crops and per-channel colour
changes (saturation, hue) do not. With the negative-positive option (x -> 255 - x at key-chosen
positions) brightness does not either, and contrast only about mid-grey: c (x - 127.5) + 127.5.
"""

from __future__ import annotations

from training import mmcv_compat

# mmseg imports mmcv.ops: the stand-in must be there first. Usually training.plugin has done it; a
# dataloader worker started with 'spawn' imports this module first, to unpickle the dataset.
mmcv_compat.install()

import json
import os
from collections.abc import Sequence

import numpy as np
import zarr
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness
from mmengine.logging import print_log
from mmseg.datasets.transforms import PackSegInputs, PhotoMetricDistortion, RandomCrop
from mmseg.registry import TRANSFORMS
from numpy import random

from training.verified_store import open_store

_OPEN_SPLITS = 4  # a loading transform reads one split; a few are kept open per process


class _ZarrReader(BaseTransform):
    """Reads the split a sample's data info names from the verified bundle (training.verified_store), opening it once
    per process (a dataloader worker forked from the main process must not share its connections: s3fs
    sessions are not fork-safe)."""

    def __init__(self) -> None:
        self._splits: dict[tuple, zarr.Group] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_splits": {}}  # a worker process opens its own

    def _split(self, results: dict) -> zarr.Group:
        options = results["storage_options"]
        bundle, digest = results["bundle"], results["manifest_sha256"]
        which = (bundle, digest, json.dumps(options, sort_keys=True), results["zarr_split"], os.getpid())
        if which not in self._splits:
            if len(self._splits) >= _OPEN_SPLITS:
                self._splits.clear()
            self._splits[which] = open_store(bundle, digest, options)[results["zarr_split"]]
        return self._splits[which]


@TRANSFORMS.register_module()
class LoadZarrImage(_ZarrReader):
    """Read sample ``sample_index`` of the split's ``images`` array (H, W, 3 uint8, the store's channel order)."""

    def transform(self, results: dict) -> dict:
        image = self._split(results)["images"][results["sample_index"]]
        results["img"] = image
        results["img_shape"] = results["ori_shape"] = image.shape[:2]
        return results


@TRANSFORMS.register_module()
class LoadZarrAnnotations(_ZarrReader):
    """Read sample ``sample_index`` of the split's ``labels`` array as ``gt_seg_map`` (trainIds, 255 ignored);
    nothing for a split without labels (Cityscapes' test split: predictions only)."""

    def transform(self, results: dict) -> dict:
        split = self._split(results)
        if "labels" not in split:
            return results
        label = split["labels"][results["sample_index"]]
        results["gt_seg_map"] = label.reshape(label.shape[:2])  # (H, W) or (H, W, 1) in the store
        results["seg_fields"].append("gt_seg_map")
        return results


@TRANSFORMS.register_module()
class BlockAlignedRandomCrop(RandomCrop):
    """mmseg's RandomCrop (same ``cat_max_ratio`` retries) with offsets and size multiples of ``block_size``."""

    def __init__(self, crop_size: int | tuple[int, int], block_size: int = 16, **kwargs) -> None:
        super().__init__(crop_size, **kwargs)
        if any(side % block_size for side in self.crop_size):
            raise ValueError(f"crop size {self.crop_size} is not a multiple of the block size {block_size}")
        self.block_size = block_size

    @cache_randomness
    def crop_bbox(self, results: dict) -> tuple:
        bbox = self._random_bbox(results["img"].shape)
        if self.cat_max_ratio < 1.0:
            for _ in range(10):  # as RandomCrop: retry while one class dominates the crop
                # np.unique's counts, by bincount: ~10x faster on a 768x768 crop (uint8 labels)
                counts = np.bincount(self.crop(results["gt_seg_map"], bbox).ravel(), minlength=self.ignore_index + 1)
                counts[self.ignore_index] = 0
                counts = counts[counts > 0]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                bbox = self._random_bbox(results["img"].shape)
        return bbox

    def _random_bbox(self, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        p = self.block_size
        if shape[0] % p or shape[1] % p:
            raise ValueError(f"image of size {shape[:2]} is not a multiple of the block size {p}")
        y, x = (p * np.random.randint(0, max(side - crop, 0) // p + 1) for side, crop in zip(shape, self.crop_size))
        return y, y + self.crop_size[0], x, x + self.crop_size[1]


@TRANSFORMS.register_module()
class KeySafePhotoMetricDistortion(PhotoMetricDistortion):
    """PhotoMetricDistortion without its per-channel steps: random brightness, then random contrast.

    Both are one affine map of every value (mmseg's ``convert``), which commutes with any permutation
    of the values. On negative-positive data (the dataset says so per sample) brightness does not
    commute and steps aside (logged once), and contrast is taken about mid-grey, with rounding that
    is symmetric about it, so that inverting a value and changing its contrast commute exactly.
    ``negative_positive`` True or False forces one variant whatever the data (a baseline run on plain
    data that must draw the same augmentation as a negative-positive run).
    """

    def __init__(
        self,
        brightness_delta: int = 32,
        contrast_range: Sequence[float] = (0.5, 1.5),
        negative_positive: bool | None = None,
    ) -> None:
        super().__init__(brightness_delta=brightness_delta, contrast_range=contrast_range)
        self.negative_positive = negative_positive
        self._told = False

    def transform(self, results: dict) -> dict:
        inverted = results.get("negative_positive", False) if self.negative_positive is None else self.negative_positive
        if not inverted:
            results["img"] = self.contrast(self.brightness(results["img"]))
            return results
        if not self._told:
            print_log("negative-positive data: brightness steps aside, contrast is about mid-grey", logger="current")
            self._told = True
        if random.randint(2):  # the draws of mmseg's contrast step
            results["img"] = contrast_about_grey(results["img"], random.uniform(self.contrast_lower, self.contrast_upper))
        return results

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(brightness_delta={self.brightness_delta}, "
            f"contrast_range=({self.contrast_lower}, {self.contrast_upper}), negative_positive={self.negative_positive})"
        )


def contrast_about_grey(image: np.ndarray, alpha: float) -> np.ndarray:
    """alpha (x - 127.5) + 127.5, rounded away from mid-grey and clipped: f(255 - x) = 255 - f(x) exactly."""
    offset = (image.astype(np.float64) - 127.5) * alpha  # negating x - 127.5 negates this exactly
    rounded = np.where(offset >= 0, 127 + np.ceil(offset), 128 + np.floor(offset))
    return np.clip(rounded, 0, 255).astype(np.uint8)


def key_unsafe_transforms(transforms: Sequence, block_size: int, negative_positive: bool) -> list[str]:
    """The names of the transforms that do not commute with the block transform of these settings.

    An allowlist: any transform not known to commute counts as unsafe.
    """
    unsafe = []
    for transform in transforms:
        kind = type(transform)
        if kind in (LoadZarrImage, LoadZarrAnnotations, PackSegInputs):
            continue
        if kind is BlockAlignedRandomCrop and transform.block_size % block_size == 0:
            continue
        if kind is KeySafePhotoMetricDistortion and transform.negative_positive in (None, negative_positive):
            continue
        unsafe.append(kind.__name__)
    return unsafe
