"""The encrypt stage end to end on small synthetic Cityscapes trees: content, resume, kill, bad input."""

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zarr

from pipeline import keys
from pipeline.cipher import BlockCipher
from pipeline.dataset import TRAIN_IDS, decrypt_samples, encrypt_dataset, local_cluster
from pipeline.errors import PipelineError
from pipeline.sample import write_sample

pytest_plugins = ["s3"]

COUNTS = {"train": 6, "val": 3, "test": 2}
SIZE = (64, 128)
SHARDS = {"train": 3, "val": 2, "test": 1}  # shard size 2
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scheduler():
    """One local cluster for most runs here (starting one costs ~2 s); runs with workers=N make their own."""
    with local_cluster(2) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    write_sample(root, counts=COUNTS, size=SIZE, seed=3)
    return root


@pytest.fixture(scope="module")
def key() -> keys.Key:
    return keys.generate()


@pytest.fixture(scope="module")
def encrypted(raw, key, tmp_path_factory):
    """A complete encrypted store, written by a run with its own local cluster (the workers= path)."""
    store = tmp_path_factory.mktemp("enc") / "dataset.zarr"
    summary = encrypt_dataset(str(raw), str(store), key, workers=2, shard_size=2)
    return store, summary


def copy_tree(raw: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "raw"
    shutil.copytree(raw, copy)
    return copy


def run(raw, store, key, scheduler, **options):
    options = {"workers": 2, "scheduler": scheduler, "shard_size": 2, **options}
    return encrypt_dataset(str(raw), str(store), key, **options)


def image_path(raw: Path, split: str, name: str) -> Path:
    return raw / "leftImg8bit" / split / name.rsplit("_", 2)[0] / f"{name}_leftImg8bit.png"


def label_path(raw: Path, split: str, name: str) -> Path:
    return raw / "gtFine" / split / name.rsplit("_", 2)[0] / f"{name}_gtFine_labelIds.png"


def rgb(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]


def assert_content(store: Path, raw: Path, key: keys.Key | None, skipped: tuple[str, ...] = ()) -> None:
    """Every stored sample is its source file (decrypted, trainIds), skipped ones zeros / 255."""
    root = zarr.open_group(str(store), mode="r")
    assert root.attrs["complete"] is True
    for split in root.attrs["splits"]:
        group = root[split]
        images = group["images"][:]
        if key is not None:
            images = BlockCipher(key).decrypt(images)
        for i, name in enumerate(group.attrs["names"]):
            if name in skipped:
                assert not images[i].any()
                if split != "test":
                    assert (group["labels"][i] == 255).all()
                continue
            assert np.array_equal(images[i], rgb(image_path(raw, split, name))), (split, name)
            if split != "test":
                labels = cv2.imread(str(label_path(raw, split, name)), cv2.IMREAD_UNCHANGED)
                assert np.array_equal(group["labels"][i], TRAIN_IDS[labels]), (split, name)


def shard_object(store: Path, split: str, array: str, index: int) -> Path:
    """The file of one shard: chunk key c/<index>/0/0[/0] (sharded along the sample axis only)."""
    return Path(store, split, array, "c", str(index), *["0"] * (3 if array == "images" else 2))


def records(store: Path) -> dict[Path, int]:
    """Shard record files and their modification times."""
    return {p: p.stat().st_mtime_ns for p in store.glob("*/shards/*.json")}


# --- content -----------------------------------------------------------------------------------


def test_train_ids_follow_cityscapesscripts():
    from cityscapesscripts.helpers.labels import labels

    expected = np.full(256, 255)
    for label in labels:
        if label.id >= 0 and label.trainId not in (-1, 255):
            expected[label.id] = label.trainId
    assert np.array_equal(TRAIN_IDS, expected)
    road, car, unlabeled, bicycle = 7, 26, 0, 33
    assert (TRAIN_IDS[road], TRAIN_IDS[car], TRAIN_IDS[unlabeled], TRAIN_IDS[bicycle]) == (0, 13, 255, 18)
    assert sorted(set(TRAIN_IDS.tolist())) == [*range(19), 255]


def test_round_trip(encrypted, raw, key):
    store, summary = encrypted
    assert summary.samples == COUNTS
    assert (summary.shards_written, summary.shards_reused, summary.skipped) == (6, 0, [])
    assert_content(store, raw, key)
    # The ciphertext is not the image.
    root = zarr.open_group(str(store), mode="r")
    first = image_path(raw, "train", root["train"].attrs["names"][0])
    assert not np.array_equal(root["train/images"][0], rgb(first))


def test_layout_and_attrs(encrypted, raw, key):
    store, _ = encrypted
    root = zarr.open_group(str(store), mode="r")
    attrs = dict(root.attrs)
    assert attrs["format"] == "cipherseg-dataset" and attrs["format_version"] == 1
    assert attrs["encrypted"] is True
    assert (attrs["key_id"], attrs["block_size"], attrs["negative_positive"]) == (key.key_id, 16, False)
    assert attrs["channel_order"] == "RGB"
    assert attrs["splits"] == COUNTS and attrs["shard_size"] == 2
    assert attrs["codec"]["name"] == "zstd" and attrs["codec"]["configuration"]["level"] == 1
    assert len(attrs["source_fingerprint"]) == 64
    assert attrs["complete"] is True and attrs["skipped"] == []
    for split, n in COUNTS.items():
        group = root[split]
        files = sorted((raw / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
        assert group.attrs["names"] == [f.name.removesuffix("_leftImg8bit.png") for f in files]
        assert group.attrs["labelled"] is (split != "test")
        assert group.attrs["skipped"] == []
        images = group["images"]
        assert (images.shape, images.dtype) == ((n, *SIZE, 3), np.uint8)
        assert (images.chunks, images.shards) == ((1, *SIZE, 3), (2, *SIZE, 3))
        if split == "test":
            assert "labels" not in group
        else:
            labels = group["labels"]
            assert (labels.shape, labels.chunks, labels.shards) == ((n, *SIZE), (1, *SIZE), (2, *SIZE))
        assert len(list((store / split / "shards").glob("*.json"))) == SHARDS[split]
    record = json.loads((store / "train" / "shards" / "2.json").read_text())
    assert record["names"] == root["train"].attrs["names"][4:] and record["skipped"] == []
    assert set(record["sha256"]) == {"train/images/c/2/0/0/0", "train/labels/c/2/0/0"}


def test_plain_store(raw, scheduler, tmp_path, caplog):
    store = tmp_path / "plain.zarr"
    with caplog.at_level(logging.INFO, logger="pipeline"):
        run(raw, store, None, scheduler)
    assert_content(store, raw, None)
    attrs = zarr.open_group(str(store), mode="r").attrs
    assert (attrs["encrypted"], attrs["key_id"], attrs["block_size"]) == (False, None, None)
    assert "encrypt: 11/11 images" in caplog.text  # the end-of-run progress line (stderr is no TTY)


def test_decrypt_samples_exports_the_originals(encrypted, raw, key, tmp_path):
    store, _ = encrypted
    written = decrypt_samples(str(store), key, str(tmp_path / "out"))
    assert len(written) == sum(COUNTS.values())
    for split in COUNTS:
        for source in (raw / "leftImg8bit" / split).glob("*/*.png"):
            exported = tmp_path / "out" / split / source.parent.name / source.name
            assert np.array_equal(rgb(exported), rgb(source))
    assert decrypt_samples(str(store), key, str(tmp_path / "one"), names=["frankfurt_000000_000019"]) == [
        str(tmp_path / "one" / "val" / "frankfurt" / "frankfurt_000000_000019_leftImg8bit.png")
    ]
    with pytest.raises(PipelineError, match="no sample named 'nowhere_000000_000019'"):
        decrypt_samples(str(store), key, str(tmp_path / "x"), names=["nowhere_000000_000019"])
    with pytest.raises(PipelineError, match=f"{store}: encrypted with key id"):
        decrypt_samples(str(store), keys.generate(), str(tmp_path / "x"))


# --- resume ------------------------------------------------------------------------------------


def test_second_run_reuses_every_shard(encrypted, raw, key, scheduler):
    store, _ = encrypted
    before = records(store)
    summary = run(raw, store, key, scheduler)
    assert (summary.shards_written, summary.shards_reused) == (0, 6)
    assert records(store) == before


def test_damaged_or_missing_shard_is_redone(raw, key, scheduler, tmp_path):
    store = tmp_path / "dataset.zarr"
    run(raw, store, key, scheduler)
    before = records(store)
    damaged = shard_object(store, "train", "images", 1)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    shard_object(store, "val", "labels", 0).unlink()

    summary = run(raw, store, key, scheduler)
    assert (summary.shards_written, summary.shards_reused) == (2, 4)
    after = records(store)
    redone = {p for p in before if after[p] != before[p]}
    assert redone == {store / "train" / "shards" / "1.json", store / "val" / "shards" / "0.json"}
    assert_content(store, raw, key)


def test_sigkill_mid_run_then_resume(tmp_path, key):
    """Kill a real run (coordinator and workers) after some shards; the resumed run redoes only the rest."""
    raw = tmp_path / "raw"
    write_sample(raw, counts={"train": 1}, size=(512, 1024), seed=5)
    image = next(raw.glob("leftImg8bit/train/*/*.png"))
    label = next(raw.glob("gtFine/train/*/*_labelIds.png"))
    for i in range(1, 40):  # copies make a long enough run without rendering 40 scenes
        shutil.copy(image, image.parent / f"aachen_{i + 100:06d}_000019_leftImg8bit.png")
        shutil.copy(label, label.parent / f"aachen_{i + 100:06d}_000019_gtFine_labelIds.png")
    key_file = keys.save(key, tmp_path / "key.json")
    store = tmp_path / "dataset.zarr"
    script = (
        "import sys\nfrom pipeline.dataset import encrypt_dataset\nfrom pipeline.keys import load\n"
        "if __name__ == '__main__':\n"
        "    encrypt_dataset(sys.argv[1], sys.argv[2], load(sys.argv[3]), workers=2, shard_size=2)\n"
    )
    (tmp_path / "encrypt.py").write_text(script)
    process = subprocess.Popen(
        [sys.executable, str(tmp_path / "encrypt.py"), str(raw), str(store), str(key_file)],
        cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while len(records(store)) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # the whole group: the coordinator and the Dask workers
    process.wait()
    done = records(store)
    assert 3 <= len(done) < 20, "the run was not caught mid-way"
    assert zarr.open_group(str(store), mode="r").attrs["complete"] is False

    summary = encrypt_dataset(str(raw), str(store), key, workers=1, shard_size=2)
    assert (summary.shards_reused, summary.shards_written) == (len(done), 20 - len(done))
    assert {p: records(store)[p] for p in done} == done  # finished shards were not redone
    assert_content(store, raw, key)


# --- bad input ---------------------------------------------------------------------------------


def names(raw: Path, split: str) -> list[str]:
    return sorted(p.name.removesuffix("_leftImg8bit.png") for p in (raw / "leftImg8bit" / split).glob("*/*.png"))


def corrupt(path: Path) -> None:
    """Damage the compressed pixels, keeping the size (so the input fingerprint stays the same)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))


def damage(raw: Path) -> dict[str, tuple[str, Path, str]]:
    """Break one sample per case: {name: (split, the file to be reported, words of the reason)}."""
    train, val = names(raw, "train"), names(raw, "val")
    truncated = image_path(raw, "train", train[0])
    truncated.write_bytes(truncated.read_bytes()[:300])  # the header survives: found when decoding
    label_path(raw, "train", train[1]).unlink()
    corrupt(image_path(raw, "train", train[2]))
    cv2.imwrite(str(label_path(raw, "train", train[3])), np.zeros((32, 64), np.uint8))
    cv2.imwrite(str(image_path(raw, "train", train[4])), np.zeros((32, 64, 3), np.uint8))
    cv2.imwrite(str(image_path(raw, "val", val[0])), np.zeros((60, 120, 3), np.uint8))
    return {
        train[0]: ("train", truncated, "cannot decode PNG"),
        train[1]: ("train", image_path(raw, "train", train[1]), "no label file"),
        train[2]: ("train", image_path(raw, "train", train[2]), "cannot decode PNG"),
        train[3]: ("train", label_path(raw, "train", train[3]), "label size 32x64 differs"),
        train[4]: ("train", image_path(raw, "train", train[4]), "image size 32x64 differs from the other images"),
        val[0]: ("val", image_path(raw, "val", val[0]), "not a multiple of the block size 16"),
    }


def repair(raw: Path, copy: Path, split: str, name: str) -> None:
    for path in (image_path, label_path):
        shutil.copy(path(raw, split, name), path(copy, split, name))


def test_bad_input_fails_naming_the_file(raw, key, scheduler, tmp_path):
    copy = copy_tree(raw, tmp_path)
    problems = damage(copy)
    store = tmp_path / "a.zarr"
    # Problems found while planning raise in plan order, before anything is written.
    for name, (split, file, words) in problems.items():
        if "cannot decode" not in words:
            with pytest.raises(PipelineError, match=f"^{re.escape(str(file))}: .*{words}"):
                run(copy, store, key, scheduler)
            assert not store.exists()
            repair(raw, copy, split, name)
    # Undecodable files are found by the shard tasks.
    undecodable = "|".join(re.escape(str(file)) for _, file, _ in problems.values())
    with pytest.raises(PipelineError, match=f"^({undecodable}): cannot decode PNG"):
        run(copy, store, key, scheduler)
    assert zarr.open_group(str(store), mode="r").attrs["complete"] is False

    # Skip mode stores what it can; fail mode redoes the shard with the skip, and fails again;
    # once the file is repaired, only that shard is redone.
    truncated, corrupted = names(copy, "train")[0], names(copy, "train")[2]
    repair(raw, copy, "train", truncated)
    store = tmp_path / "b.zarr"
    assert len(run(copy, store, key, scheduler, on_error="skip").skipped) == 1
    before = records(store)
    with pytest.raises(PipelineError, match=f"^{re.escape(str(problems[corrupted][1]))}: cannot decode PNG"):
        run(copy, store, key, scheduler)
    assert records(store) == before
    repair(raw, copy, "train", corrupted)
    summary = run(copy, store, key, scheduler)
    assert (summary.shards_written, summary.skipped) == (1, [])
    assert {p for p in before if records(store)[p] != before[p]} == {store / "train" / "shards" / "1.json"}
    assert_content(store, copy, key)


def test_bad_input_is_skipped_and_recorded(raw, key, scheduler, tmp_path):
    copy = copy_tree(raw, tmp_path)
    problems = damage(copy)
    store = tmp_path / "dataset.zarr"
    summary = run(copy, store, key, scheduler, on_error="skip")
    reported = {entry["file"]: entry["reason"] for entry in summary.skipped}
    # Recorded relative to the raw root: the store is published, the owner's paths are private.
    relative = {str(file.relative_to(copy)) for _, file, _ in problems.values()}
    assert set(reported) == relative
    for _, file, words in problems.values():
        assert words in reported[str(file.relative_to(copy))]
    root = zarr.open_group(str(store), mode="r")
    assert root.attrs["skipped"] == summary.skipped
    for split in ("train", "val"):
        assert root[split].attrs["skipped"] == sorted(n for n, (s, _, _) in problems.items() if s == split)
    assert root.attrs["splits"] == COUNTS  # skipped samples keep their slot, as zeros
    assert_content(store, copy, key, skipped=tuple(problems))
    assert run(copy, store, key, scheduler, on_error="skip").shards_written == 0


def test_not_a_png_and_no_usable_image(raw, key, scheduler, tmp_path):
    copy = copy_tree(raw, tmp_path)
    for path in (copy / "leftImg8bit" / "test").glob("*/*.png"):
        path.write_bytes(b"not an image")
    first = min((copy / "leftImg8bit" / "test").glob("*/*.png"))
    with pytest.raises(PipelineError, match=f"^{first}: not a PNG file"):
        run(copy, tmp_path / "a.zarr", key, scheduler)
    with pytest.raises(PipelineError, match="no usable image in split 'test'"):
        run(copy, tmp_path / "b.zarr", key, scheduler, on_error="skip")


def test_missing_root_or_images(tmp_path, key, scheduler):
    with pytest.raises(PipelineError, match="no leftImg8bit/ folder"):
        run(tmp_path / "nowhere", tmp_path / "a.zarr", key, scheduler)
    (tmp_path / "empty" / "leftImg8bit" / "train").mkdir(parents=True)
    with pytest.raises(PipelineError, match="no leftImg8bit/<split>/<city>/\\*_leftImg8bit.png images"):
        run(tmp_path / "empty", tmp_path / "a.zarr", key, scheduler)


def test_resume_with_another_key_or_input_is_refused(encrypted, raw, key, scheduler, tmp_path):
    store, _ = encrypted
    before = records(store)
    with pytest.raises(PipelineError, match=f"^{store}: this store was written with key id {key.key_id}"):
        run(raw, store, keys.generate(), scheduler)
    with pytest.raises(PipelineError, match=f"^{store}: this store was written with key id .*; this run has no key"):
        run(raw, store, None, scheduler)
    with pytest.raises(PipelineError, match=f"^{store}: this store was written with shard size 2, not 4"):
        run(raw, store, key, scheduler, shard_size=4)
    copy = copy_tree(raw, tmp_path)
    next((copy / "gtFine" / "val").glob("*/*_labelIds.png")).unlink()
    with pytest.raises(PipelineError, match=f"^{store}: this store was made from different input files"):
        run(copy, store, key, scheduler, on_error="skip")
    assert records(store) == before
    assert zarr.open_group(str(store), mode="r").attrs["complete"] is True


def test_refuses_a_foreign_folder(raw, key, scheduler, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(PipelineError, match="is not a cipherseg dataset store; refusing"):
        run(raw, tmp_path / "mine", key, scheduler)
    assert os.listdir(tmp_path / "mine") == ["thesis.tex"]


def test_s3_store_and_raw(raw, key, scheduler, s3_bucket, s3_options, tmp_path):
    """The same stage with the raw tree and the store on an S3 server (moto), through fsspec."""
    import s3fs

    s3fs.S3FileSystem(**s3_options).put(f"{raw}/", f"{s3_bucket}/raw", recursive=True)
    store = f"{s3_bucket}/dataset.zarr"
    summary = run(f"{s3_bucket}/raw", store, key, scheduler, storage_options=s3_options)
    assert (summary.samples, summary.shards_written) == (COUNTS, 6)
    assert run(f"{s3_bucket}/raw", store, key, scheduler, storage_options=s3_options).shards_reused == 6

    out = tmp_path / "out"
    written = decrypt_samples(store, key, f"{s3_bucket}/out", storage_options=s3_options)
    assert len(written) == sum(COUNTS.values())
    s3fs.S3FileSystem(**s3_options).get(f"{s3_bucket}/out/", f"{out}/", recursive=True)
    for split in COUNTS:
        for source in (raw / "leftImg8bit" / split).glob("*/*.png"):
            assert np.array_equal(rgb(out / split / source.parent.name / source.name), rgb(source))
