"""Loading training samples from a published bundle: against encrypted PNG files, and what checking every
object against the verified manifest costs.

1. A 768x768 training crop of encrypted 1024x2048 images, one process, no workers. Zarr: the configs'
   pipeline (LoadZarrImage + LoadZarrAnnotations + BlockAlignedRandomCrop) on the bundle, every object
   checked when first read. Baseline: mmseg's LoadImageFromFile + LoadAnnotations + RandomCrop on the
   PNG files the user-side tools write (lossless RGB PNG). Target: Zarr >= 3x the samples/s of the PNGs.
2. The check (training.verified_store.VerifyingStore): a first epoch over the tiny configs' data (256x512 images,
   8 per shard) in a fresh process' view, where every shard is read whole and hashed once, against the
   same samples read from the store with zarr alone; the difference per training step (batch 2) against
   the tiny SETR-Naive training step measured in the same run. Target: at most 5% of the step.
"""

import hashlib
import tempfile
import time
from pathlib import Path

from training.plugin import register

register()  # mmseg on mmcv-lite, cipherseg's components registered

import cv2
import numpy as np
import zarr
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, TRANSFORMS

from benchmarks.bench_train_step import ARCH, step_times
from pipeline import keys
from pipeline.job import build_bundle
from pipeline.query import encrypt_queries
from pipeline.sample import write_random_vit, write_sample

COUNT = 16
SIZE = (1024, 2048)
CROP = 768
PASSES = 2
TINY = {"count": 64, "size": (256, 512), "batch": 2}


def published(root: Path, raw: Path, key, size: tuple[int, int]) -> tuple[Path, str]:
    """``raw`` encrypted with ``key`` and published at ``root/bundle``; the bundle and its manifest's sha256."""
    weights = write_random_vit(root / "vit.safetensors", ARCH)
    build_bundle(raw, weights, ARCH, key, store=root / "dataset.zarr", checkpoint=root / "backbone.safetensors", bundle=root / "bundle", workers=2)
    return root / "bundle", hashlib.sha256((root / "bundle" / "manifest.json").read_bytes()).hexdigest()


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


def crops_against_png(tmp: Path) -> None:
    key = keys.generate()
    images = write_sample(tmp / "raw", counts={"train": COUNT}, size=SIZE)
    bundle, digest = published(tmp, tmp / "raw", key, SIZE)
    encrypt_queries(images, key, tmp / "png")
    split = zarr.open_group(str(bundle / "dataset.zarr"), mode="r")["train"]
    files = []
    for i, (name, image) in enumerate(zip(split.attrs["names"], images)):
        label = tmp / "png" / f"{name}_labelTrainIds.png"
        cv2.imwrite(str(label), split["labels"][i])
        files.append(dict(img_path=str(tmp / "png" / f"{image.stem}.png"), seg_map_path=str(label), reduce_zero_label=False))
    png = samples_per_second(
        [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), dict(type="RandomCrop", crop_size=(CROP, CROP), cat_max_ratio=0.75)],
        files,
    )
    common = dict(bundle=str(bundle), manifest_sha256=digest, zarr_split="train", storage_options={})
    zarr_rate = samples_per_second(
        [
            dict(type="LoadZarrImage"),
            dict(type="LoadZarrAnnotations"),
            dict(type="BlockAlignedRandomCrop", crop_size=(CROP, CROP), block_size=16, cat_max_ratio=0.75),
        ],
        [dict(common, sample_index=i) for i in range(COUNT)],
    )
    print(f"{CROP}x{CROP} crops of {COUNT} encrypted {SIZE[0]}x{SIZE[1]} images, one process:")
    print(f"  PNG files (mmseg loaders)  {png:6.1f} samples/s  1.00x (baseline)")
    print(f"  Zarr bundle (checked)      {zarr_rate:6.1f} samples/s  {zarr_rate / png:.2f}x  (target >= 3x)")


def first_epoch(bundle: Path, digest: str, order: np.ndarray) -> tuple[float, float]:
    """Seconds to load ``order``'s samples once through a fresh dataset (every shard checked on its first
    read), and with zarr alone from the same store."""
    pipeline = [dict(type="LoadZarrImage"), dict(type="LoadZarrAnnotations")]
    dataset = DATASETS.build(dict(type="ZarrSegDataset", bundle=str(bundle), manifest_sha256=digest, split="train", pipeline=pipeline))
    start = time.perf_counter()
    for i in order:
        dataset[int(i)]
    checked = time.perf_counter() - start
    split = zarr.open_group(str(bundle / "dataset.zarr"), mode="r")["train"]
    start = time.perf_counter()
    for i in order:
        split["images"][int(i)], split["labels"][int(i)]
    return checked, time.perf_counter() - start


def check_against_step(tmp: Path) -> None:
    key = keys.generate()
    write_sample(tmp / "raw", counts={"train": TINY["count"], "val": 1}, size=TINY["size"])
    bundle, digest = published(tmp, tmp / "raw", key, TINY["size"])
    order = np.random.default_rng(0).permutation(TINY["count"])
    epochs = [first_epoch(bundle, digest, order) for _ in range(3)]
    checked, plain = (float(np.median([e[k] for e in epochs])) for k in (0, 1))
    per_sample = (checked - plain) / TINY["count"]
    step = float(np.median(step_times("proposed", bundle, tmp / "work")))
    per_step = per_sample * TINY["batch"]
    print(f"first epoch over {TINY['count']} samples of {TINY['size'][0]}x{TINY['size'][1]} (8 per shard), median of 3:")
    print(f"  zarr alone                 {1e3 * plain / TINY['count']:6.2f} ms/sample  1.00x (baseline)")
    print(f"  checked (VerifyingStore)   {1e3 * checked / TINY['count']:6.2f} ms/sample  {checked / plain:.2f}x")
    print(f"  the check per training step (batch {TINY['batch']}): {1e3 * per_step:.2f} ms, "
          f"{100 * per_step / step:.2f}% of the tiny SETR-Naive step ({1e3 * step:.0f} ms)  (target <= 5%)")  # fmt: skip


def main() -> None:
    init_default_scope("mmseg")
    with tempfile.TemporaryDirectory() as tmp:
        crops_against_png(Path(tmp))
    with tempfile.TemporaryDirectory() as tmp:
        check_against_step(Path(tmp))


if __name__ == "__main__":
    main()
