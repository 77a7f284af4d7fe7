"""Images of many sizes (the ragged layout) on ADE20K-like data: JPEG photographs of 307-512 x 410-683
pixels, grey PNG labels, every side padded by the owner to a multiple of 16. Each figure against a
baseline measured in the same run:

1. The encrypt stage (one worker, on a started cluster) against the floor of the same work without it:
   one process, no Dask, no encryption, no bookkeeping: decode every JPEG and label PNG, map the labels,
   pad, write with the store's codec and ragged layout. Target: <= 1.10x the floor. The stage writing a
   plain store (the same work but the cipher) is measured too: what the cipher itself costs.
2. Reading one training sample (image and labels, as LoadZarrImage and LoadZarrAnnotations slice the flat
   arrays) reads its own chunks and the shard index: bytes read against the sample's stored bytes (its
   chunks' compressed sizes, from the shard index). Target: <= 1.05x for every sample.
3. The store's size against the same samples stored unpadded (each image and label compressed alone with
   the store's codec), and against one fixed size for all (padded to the largest). Target: <= 1.05x.
4. Training crops (512x512, the ADE20K configs') of the encrypted bundle through the configs' loading
   pipeline, every object checked, against mmseg's LoadImageFromFile + LoadAnnotations + RandomCrop on
   the JPEG/PNG files, and on the same images as PNG. Target: >= 3x the samples/s of the files.
"""

import hashlib
import struct
import tempfile
import time
from pathlib import Path

from training.plugin import register

register()  # mmseg on mmcv-lite, cipherseg's components registered

import cv2
import numcodecs
import numpy as np
import zarr
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS
from zarr.storage import LocalStore, WrapperStore

from benchmarks.bench_loading import samples_per_second
from contract.formats import SplitAttributes, StoreAttributes
from pipeline import keys
from pipeline.bundle import publish
from pipeline.cluster import local_cluster
from pipeline.datasets import resolve_dataset
from pipeline.encrypt import encrypt_dataset
from pipeline.sample import write_dataset, write_random_vit
from pipeline.zarr_store import CODEC
from pipeline.weights import encrypt_checkpoint

COUNTS = {"train": 128, "val": 16}
SIZE = (512, 683)  # ADE20K's usual; each side 0.6-1 times it
REPEATS = 5
CROP = 512
ARCH = "vit_tiny_patch16_224"


def floor_seconds(raw: Path, out: Path, store: Path) -> float:
    """Decode + label map + pad + zstd write of every sample in one process, into the stage's own layout
    (the arrays of ``store``, an existing store of the same samples, re-created empty under ``out``)."""
    attributes = StoreAttributes.parse(dict(zarr.open_group(str(store), mode="r").attrs), str(store))
    source = zarr.open_group(str(store), mode="r")
    lookup = np.array(attributes.dataset.lookup(), np.uint8)
    root = zarr.create_group(str(out))
    start = time.perf_counter()
    folders = {"train": "training", "val": "validation"}
    for split in attributes.splits:
        sizes = SplitAttributes.parse(dict(source[split].attrs), split).sizes
        names = SplitAttributes.parse(dict(source[split].attrs), split).names
        group = root.create_group(split)
        arrays = {
            name: group.create_array(name, shape=source[split][name].shape, dtype="uint8", chunks=source[split][name].chunks,
                                     shards=source[split][name].shards, compressors=CODEC, config={"write_empty_chunks": True})
            for name in ("images", "labels")
        }  # fmt: skip
        placement = attributes.placement(split, sizes)
        chunk, shard_chunks = source[split]["labels"].chunks[0], source[split]["labels"].shards[0] // source[split]["labels"].chunks[0]
        for first in range(0, len(names), attributes.shard_size):
            region = first // attributes.shard_size * shard_chunks * chunk
            (last, (h, w)) = placement[min(first + attributes.shard_size, len(names)) - 1]
            used = last + -(-h * w // chunk) * chunk - region
            images, labels = np.zeros(3 * used, np.uint8), np.full(used, 255, np.uint8)
            for i in range(first, min(first + attributes.shard_size, len(names))):
                offset, (h, w) = placement[i]
                image = cv2.imread(str(raw / "images" / folders[split] / f"{names[i]}.jpg"), cv2.IMREAD_COLOR_RGB)
                label = lookup[cv2.imread(str(raw / "annotations" / folders[split] / f"{names[i]}.png"), cv2.IMREAD_UNCHANGED)]
                view = images[3 * (offset - region) : 3 * (offset - region + h * w)].reshape(h, w, 3)
                view[: image.shape[0], : image.shape[1]] = image
                labels[offset - region : offset - region + h * w].reshape(h, w)[: label.shape[0], : label.shape[1]] = label
            arrays["images"][3 * region : 3 * (region + used)] = images
            arrays["labels"][region : region + used] = labels
    return time.perf_counter() - start


def stage_seconds(raw: Path, out: Path, key: keys.Key | None, cluster) -> float:
    start = time.perf_counter()
    encrypt_dataset(str(raw), str(out), key, workers=1, dataset=resolve_dataset("ade20k"), scheduler=cluster.scheduler_address)
    return time.perf_counter() - start


class CountingStore(WrapperStore):
    """A zarr store that counts the bytes every read returns."""

    read = 0

    def _with_store(self, store):
        return type(self)(store)

    async def get(self, key, prototype, byte_range=None):
        found = await self._store.get(key, prototype, byte_range)
        CountingStore.read += 0 if found is None else len(found)
        return found


def chunk_sizes(shard: bytes, chunks: int) -> list[int]:
    """The compressed size of every inner chunk of a shard, from its index (at its end: offset and size
    per chunk, 8 bytes each, little-endian, then a crc32c)."""
    index = shard[-(16 * chunks + 4) : -4]
    return [size if offset != 2**64 - 1 else 0 for offset, size in struct.iter_unpack("<QQ", index)]


def read_amplification(store: Path) -> tuple[float, float]:
    """(largest, mean) of bytes read / stored bytes over every train sample, images and labels."""
    attributes = StoreAttributes.parse(dict(zarr.open_group(str(store), mode="r").attrs), str(store))
    root = zarr.open_group(CountingStore(LocalStore(str(store), read_only=True)), mode="r")
    split = root["train"]
    sizes = SplitAttributes.parse(dict(split.attrs), "train").sizes
    ratios = []
    for i, (start, (h, w)) in enumerate(attributes.placement("train", sizes)):
        stored = 0
        for name, channels in (("images", 3), ("labels", 1)):
            array = split[name]
            chunk, per_shard = array.chunks[0], array.shards[0] // array.chunks[0]
            shard_index = start * channels // array.shards[0]
            shard = (store / attributes.shard_object("train", name, shard_index)).read_bytes()
            first = start * channels // chunk - shard_index * per_shard
            stored += sum(chunk_sizes(shard, per_shard)[first : first + -(-h * w * channels // chunk)])
        images, labels = split["images"], split["labels"]  # the arrays' metadata read before counting, as a loader has it
        CountingStore.read = 0
        images[3 * start : 3 * (start + h * w)], labels[start : start + h * w]
        ratios.append(CountingStore.read / stored)
    return max(ratios), float(np.mean(ratios))


def store_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in store.rglob("*") if p.is_file())


def unpadded_bytes(store: Path, raw: Path) -> tuple[int, int]:
    """The bytes of every sample's image and label compressed alone at its own size, and at the largest size."""
    zstd = numcodecs.Zstd(level=CODEC.level, checksum=CODEC.checksum)  # the store's codec, on one sample
    root = zarr.open_group(str(store), mode="r")
    lookup = np.array(resolve_dataset("ade20k").description.lookup(), np.uint8)
    folders = {"train": "training", "val": "validation"}
    alone = largest = 0
    for split in COUNTS:
        names = SplitAttributes.parse(dict(root[split].attrs), split).names
        pairs = [(cv2.imread(str(raw / "images" / folders[split] / f"{n}.jpg"), cv2.IMREAD_COLOR_RGB),
                  lookup[cv2.imread(str(raw / "annotations" / folders[split] / f"{n}.png"), cv2.IMREAD_UNCHANGED)]) for n in names]  # fmt: skip
        alone += sum(len(zstd.encode(image)) + len(zstd.encode(label)) for image, label in pairs)
        h, w = (max(p[0].shape[k] for p in pairs) for k in (0, 1))
        for image, label in pairs:
            big, big_label = np.zeros((h, w, 3), np.uint8), np.full((h, w), 255, np.uint8)
            big[: image.shape[0], : image.shape[1]], big_label[: label.shape[0], : label.shape[1]] = image, label
            largest += len(zstd.encode(big)) + len(zstd.encode(big_label))
    return alone, largest


def crops_against_files(raw: Path, bundle: Path) -> tuple[float, float, float]:
    """Samples/s of mmseg's loaders on the JPEG files, on the same images as PNG files, and of the bundle."""
    digest = hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
    dataset = DATASETS.build(dict(type="ZarrSegDataset", bundle=str(bundle), manifest_sha256=digest, split="train", pipeline=[]))
    ours = [dataset.get_data_info(i) for i in range(len(dataset))]
    files = {suffix: [] for suffix in (".jpg", ".png")}
    for info in ours:
        image = raw / "images" / "training" / f"{info['img_path']}.jpg"
        cv2.imwrite(str(image.with_suffix(".png")), cv2.imread(str(image), cv2.IMREAD_COLOR))
        for suffix, samples in files.items():
            samples.append(dict(img_path=str(image.with_suffix(suffix)), reduce_zero_label=True,
                                seg_map_path=str(raw / "annotations" / "training" / f"{info['img_path']}.png")))  # fmt: skip
    mmseg = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), dict(type="RandomCrop", crop_size=(CROP, CROP), cat_max_ratio=0.75)]
    jpeg, png = (samples_per_second(mmseg, samples, crop=None) for samples in files.values())
    bundled = samples_per_second(
        [dict(type="LoadZarrImage"), dict(type="LoadZarrAnnotations"),
         dict(type="BlockAlignedRandomCrop", crop_size=(CROP, CROP), block_size=16, cat_max_ratio=0.75)],
        ours, crop=None,
    )  # fmt: skip
    return jpeg, png, bundled


def main() -> None:
    init_default_scope("mmseg")
    key = keys.generate()
    with tempfile.TemporaryDirectory() as tmp, local_cluster(1) as cluster:
        tmp = Path(tmp)
        raw = tmp / "ade20k"
        write_dataset("ade20k", raw, counts=COUNTS, size=SIZE, seed=0)
        n = sum(COUNTS.values())
        plain = tmp / "plain.zarr"
        encrypt_dataset(str(raw), str(plain), None, workers=1, dataset=resolve_dataset("ade20k"), scheduler=cluster.scheduler_address)
        floor_seconds(raw, tmp / "warm.zarr", plain)  # imports, caches
        floors, stages, plains = [], [], []
        for r in range(REPEATS):  # interleaved, best of each: other processes may share the cores
            floors.append(floor_seconds(raw, tmp / f"floor{r}.zarr", plain) / n)
            stages.append(stage_seconds(raw, tmp / f"stage{r}.zarr", key, cluster) / n)
            plains.append(stage_seconds(raw, tmp / f"plain{r}.zarr", None, cluster) / n)
        floor, stage, plain_stage = min(floors), min(stages), min(plains)
        print(f"{n} ADE20K-like images (JPEG, {int(SIZE[0] * 0.6)}-{SIZE[0]} x {int(SIZE[1] * 0.6)}-{SIZE[1]}), best of {REPEATS} interleaved runs:")
        print(f"  floor (JPEG + label decode, label map, pad, zstd write into the ragged layout, 1 process)  {floor * 1e3:6.1f} ms/image")
        print(f"  encrypt stage, 1 worker  {stage * 1e3:6.1f} ms/image = {stage / floor:.2f}x the floor (target <= 1.10)")
        print(f"  the same stage writing a plain store (no cipher)  {plain_stage * 1e3:6.1f} ms/image = {plain_stage / floor:.2f}x the floor")

        largest, mean = read_amplification(plain)
        print(f"  reading one sample: bytes read / its stored bytes, largest {largest:.3f}, mean {mean:.3f} (target <= 1.05)")
        alone, fixed = unpadded_bytes(plain, raw)
        size = store_bytes(plain)
        print(f"  the plain store {size / 2**20:.2f} MiB = {size / alone:.3f}x the samples compressed alone, unpadded "
              f"({alone / 2**20:.2f} MiB; target <= 1.05); padded to one size for all: {fixed / alone:.2f}x")

        encrypted = tmp / "stage0.zarr"
        weights = write_random_vit(tmp / "vit.safetensors", ARCH)
        encrypt_checkpoint(weights, ARCH, key, tmp / "backbone.safetensors")
        publish(str(encrypted), str(tmp / "backbone.safetensors"), str(tmp / "bundle"), key)
        jpeg, png, bundled = crops_against_files(raw, tmp / "bundle")
        print(f"  {CROP}x{CROP} training crops, one process:")
        print(f"    JPEG images, PNG labels (mmseg loaders)  {jpeg:6.1f} samples/s  1.00x (baseline)")
        print(f"    the same images as PNG (mmseg loaders)   {png:6.1f} samples/s  {png / jpeg:.2f}x")
        print(f"    encrypted bundle (checked)               {bundled:6.1f} samples/s  {bundled / jpeg:.2f}x the JPEGs "
              f"(target >= 3x), {bundled / png:.2f}x the PNGs")


if __name__ == "__main__":
    main()
