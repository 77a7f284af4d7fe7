"""Loading a 768x768 training crop: the bundle's Zarr store against encrypted PNG files.

Both read the same encrypted 1024x2048 images and their trainId labels, one process, no workers.
Zarr: LoadZarrImage + LoadZarrAnnotations + BlockAlignedRandomCrop (the configs' pipeline). Baseline:
mmseg's LoadImageFromFile + LoadAnnotations + RandomCrop on the PNG files the user-side tools write
(lossless RGB PNG). Target: Zarr >= 3x the samples/s of the PNG files. Also reported: what reading
only the crop region from the store would give (a chunk is one image, so zarr still decodes it all).
"""

import tempfile
import time
from pathlib import Path

from training.plugin import register

register()  # mmseg on mmcv-lite, cipherseg's components registered

import cv2
import numpy as np
import zarr
from mmengine.registry import init_default_scope
from mmseg.registry import TRANSFORMS

from pipeline import keys
from pipeline.encrypt import encrypt_dataset
from pipeline.query import encrypt_queries
from pipeline.sample import write_sample
from training.store import open_store

COUNT = 16
SIZE = (1024, 2048)
CROP = 768
PASSES = 2


def samples_per_second(pipeline: list, samples: list[dict]) -> float:
    """Samples/s of running ``pipeline`` over ``samples`` PASSES times (fixed crop seeds)."""
    transforms = [TRANSFORMS.build(t) for t in pipeline]
    np.random.seed(0)
    start = time.perf_counter()
    for _ in range(PASSES):
        for sample in samples:
            results = dict(sample, seg_fields=[])
            for transform in transforms:
                results = transform(results)
            assert results["img"].shape == (CROP, CROP, 3)
    return PASSES * len(samples) / (time.perf_counter() - start)


def crop_reads_per_second(store: str) -> tuple[float, float]:
    """Reads/s of whole images and of 768x768 regions of them from the store's training images."""
    images = open_store(store)["train"]["images"]
    rates = []
    for region in (np.s_[:, :], np.s_[128 : 128 + CROP, 640 : 640 + CROP]):
        start = time.perf_counter()
        for _ in range(PASSES):
            for i in range(images.shape[0]):
                images[(i, *region)]
        rates.append(PASSES * images.shape[0] / (time.perf_counter() - start))
    return rates[0], rates[1]


def main() -> None:
    init_default_scope("mmseg")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        key = keys.generate()
        images = write_sample(tmp / "raw", counts={"train": COUNT}, size=SIZE)
        store = str(tmp / "dataset.zarr")
        encrypt_dataset(str(tmp / "raw"), store, key, workers=2)
        encrypt_queries(images, key, tmp / "png")
        split = zarr.open_group(store, mode="r")["train"]
        files = []
        for i, (name, image) in enumerate(zip(split.attrs["names"], images)):
            label = tmp / "png" / f"{name}_labelTrainIds.png"
            cv2.imwrite(str(label), split["labels"][i])
            files.append(dict(img_path=str(tmp / "png" / f"{image.stem}.png"), seg_map_path=str(label), reduce_zero_label=False))

        png = samples_per_second(
            [
                dict(type="LoadImageFromFile"),
                dict(type="LoadAnnotations"),
                dict(type="RandomCrop", crop_size=(CROP, CROP), cat_max_ratio=0.75),
            ],
            files,
        )
        common = dict(zarr_store=store, zarr_split="train", storage_options={})
        zarr_rate = samples_per_second(
            [
                dict(type="LoadZarrImage"),
                dict(type="LoadZarrAnnotations"),
                dict(type="BlockAlignedRandomCrop", crop_size=(CROP, CROP), block_size=16, cat_max_ratio=0.75),
            ],
            [dict(common, sample_index=i) for i in range(COUNT)],
        )
        whole, region = crop_reads_per_second(store)
    print(f"{CROP}x{CROP} crops of {COUNT} encrypted {SIZE[0]}x{SIZE[1]} images, one process:")
    print(f"  PNG files (mmseg loaders)  {png:6.1f} samples/s  1.00x (baseline)")
    print(f"  Zarr bundle store          {zarr_rate:6.1f} samples/s  {zarr_rate / png:.2f}x  (target >= 3x)")
    print(f"  store read, whole image    {whole:6.1f} images/s")
    print(f"  store read, crop region    {region:6.1f} images/s  {region / whole:.2f}x of whole")


if __name__ == "__main__":
    main()
