"""mmseg transforms for block-encrypted images: loading from the Zarr store and key-safe augmentation.

The block transform shuffles the values inside every PxP block with one permutation. A transform
keeps the encrypted model equivalent to the plain one only if it commutes with that shuffle:
crops whose offsets and size are multiples of P, and one affine map applied to every value
(brightness, contrast). Resizing, flipping, rotating, unaligned crops and per-channel colour
changes (saturation, hue) do not; with the negative-positive option (x -> 255 - x at key-chosen
positions) brightness and contrast do not either.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import zarr
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness
from mmseg.datasets.transforms import PackSegInputs, PhotoMetricDistortion, RandomCrop
from mmseg.registry import TRANSFORMS

from training.store import open_store


def _split(results: dict) -> zarr.Group:
    return open_store(results["zarr_store"], results["storage_options"])[results["zarr_split"]]


@TRANSFORMS.register_module()
class LoadZarrImage(BaseTransform):
    """Read sample ``sample_index`` of the split's ``images`` array (H, W, 3 uint8, the store's channel order)."""

    def transform(self, results: dict) -> dict:
        image = _split(results)["images"][results["sample_index"]]
        results["img"] = image
        results["img_shape"] = results["ori_shape"] = image.shape[:2]
        return results


@TRANSFORMS.register_module()
class LoadZarrAnnotations(BaseTransform):
    """Read sample ``sample_index`` of the split's ``labels`` array as ``gt_seg_map`` (trainIds, 255 ignored)."""

    def transform(self, results: dict) -> dict:
        label = _split(results)["labels"][results["sample_index"]]
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

    Both are one affine map of every value (mmseg's ``convert``), which commutes with any
    permutation of the values.
    """

    def __init__(self, brightness_delta: int = 32, contrast_range: Sequence[float] = (0.5, 1.5)) -> None:
        super().__init__(brightness_delta=brightness_delta, contrast_range=contrast_range)

    def transform(self, results: dict) -> dict:
        results["img"] = self.contrast(self.brightness(results["img"]))
        return results

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(brightness_delta={self.brightness_delta}, "
            f"contrast_range=({self.contrast_lower}, {self.contrast_upper}))"
        )


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
        if kind is KeySafePhotoMetricDistortion and not negative_positive:
            continue
        unsafe.append(kind.__name__)
    return unsafe
