"""The encrypt stage end to end on small synthetic Cityscapes trees (pipeline.encrypt and the modules it
runs: inputs, store, shards, cluster): content, layout, resume that repairs, a killed run, bad input."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zarr

from contract.errors import UserError
from contract.formats import FixedLayout, ShardRecord, SplitLayout, StoreAttributes
from pipeline import keys
from pipeline.cipher import BlockCipher
from pipeline.cluster import local_cluster
from pipeline.datasets import cityscapes
from pipeline.encrypt import encrypt_dataset
from pipeline.errors import OnError, PipelineError
from pipeline.decrypt import decrypt_samples
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


def copy_tree(source: Path, tmp_path: Path, name: str = "raw") -> Path:
    return Path(shutil.copytree(source, tmp_path / name))


def run(raw, store, key, scheduler, **options):
    options = {"workers": 2, "scheduler": scheduler, "shard_size": 2, **options}
    return encrypt_dataset(str(raw), str(store), key, **options)


def image_path(raw: Path, split: str, name: str) -> Path:
    return raw / "leftImg8bit" / split / name.rsplit("_", 2)[0] / f"{name}_leftImg8bit.png"


def label_path(raw: Path, split: str, name: str) -> Path:
    return raw / "gtFine" / split / name.rsplit("_", 2)[0] / f"{name}_gtFine_labelIds.png"


def rgb(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]


def attributes(store: Path) -> StoreAttributes:
    return StoreAttributes.parse(dict(zarr.open_group(str(store), mode="r").attrs), str(store))


def train_ids() -> np.ndarray:
    """labelId -> trainId as the Cityscapes description maps them."""
    return np.array(cityscapes().description.lookup(), np.uint8)


def assert_content(store: Path, raw: Path, key: keys.Key | None, skipped: tuple[str, ...] = ()) -> None:
    """Every stored sample is its source file (decrypted, trainIds), skipped ones zeros / 255 as stored
    (an encrypted zero image would show a negative-positive key's flip mask)."""
    root = zarr.open_group(str(store), mode="r")
    attrs = attributes(store)
    assert attrs.complete
    for split in attrs.splits:
        group = root[split]
        stored = group["images"][:]
        images = BlockCipher(key).decrypt(stored) if key is not None else stored
        for i, name in enumerate(group.attrs["names"]):
            if name in skipped:
                assert not stored[i].any()
                if split != "test":
                    assert (group["labels"][i] == 255).all()
                continue
            assert np.array_equal(images[i], rgb(image_path(raw, split, name))), (split, name)
            if split != "test":
                labels = cv2.imread(str(label_path(raw, split, name)), cv2.IMREAD_UNCHANGED)
                assert np.array_equal(group["labels"][i], train_ids()[labels]), (split, name)


def shard_file(store: Path, split: str, array: str, index: int) -> Path:
    return store / attributes(store).shard_object(split, array, index)


def records(store: Path) -> dict[Path, int]:
    """Shard record files and their modification times: a record is rewritten exactly when its shard is."""
    return {p: p.stat().st_mtime_ns for p in store.glob("*/shards/*.json")}


def redone(before: dict[Path, int], store: Path) -> set[str]:
    after = records(store)
    return {f"{p.parent.parent.name}/{p.stem}" for p in before if after.get(p) != before[p]}


def names(raw: Path, split: str) -> list[str]:
    return sorted(p.name.removesuffix("_leftImg8bit.png") for p in (raw / "leftImg8bit" / split).glob("*/*.png"))


# --- content -----------------------------------------------------------------------------------


def test_train_ids_follow_cityscapesscripts():
    """Every labelId of the official table maps to its trainId (255: ignored); any other value stays as it is
    (mmseg's label_map), which no label file holds: the writer refuses it as no class."""
    from cityscapesscripts.helpers.labels import labels

    table = {label.id: label.trainId if label.trainId not in (-1, 255) else 255 for label in labels if label.id >= 0}
    assert {value: train_ids()[value] for value in table} == table
    road, car, unlabeled, bicycle = 7, 26, 0, 33
    assert [train_ids()[i] for i in (road, car, unlabeled, bicycle)] == [0, 13, 255, 18]


def test_round_trip(encrypted, raw, key):
    store, summary = encrypted
    assert summary.samples == COUNTS
    assert (summary.shards_written, summary.shards_reused, summary.skipped) == (6, 0, ())
    assert_content(store, raw, key)
    root = zarr.open_group(str(store), mode="r")
    first = image_path(raw, "train", root["train"].attrs["names"][0])
    assert not np.array_equal(root["train/images"][0], rgb(first))  # the ciphertext is not the image


def test_layout_and_attributes(encrypted, raw, key):
    store, _ = encrypted
    attrs = attributes(store)
    layout = FixedLayout(height=SIZE[0], width=SIZE[1])
    splits = {split: SplitLayout(samples=n, labelled=split != "test", layout=layout) for split, n in COUNTS.items()}
    description = cityscapes().description
    assert attrs == StoreAttributes(cipher=key.spec(), dataset=description, padded_to=16, shard_size=2, splits=splits, complete=True)
    # Exactly the objects the store format defines: what publish copies and verify expects.
    on_disk = {p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file()}
    assert on_disk == attrs.objects()
    root = zarr.open_group(str(store), mode="r")
    for split, n in COUNTS.items():
        group = root[split]
        assert group.attrs["names"] == names(raw, split)
        assert group.attrs["sizes"] == [list(SIZE)] * n
        images = group["images"]
        assert (images.shape, images.dtype) == ((n, *SIZE, 3), np.uint8)
        assert (images.chunks, images.shards) == ((1, *SIZE, 3), (2, *SIZE, 3))
        assert ("labels" in group) is (split != "test")
    record = ShardRecord.parse((store / "train" / "shards" / "2.json").read_bytes(), "record")
    assert record.names == tuple(names(raw, "train")[4:]) and record.skipped == ()
    assert set(record.objects) == {"train/images/c/2/0/0/0", "train/labels/c/2/0/0"}


def test_records_hold_the_hash_of_the_bytes_written(encrypted):
    """The writer hashes what it hands to the store (no read-back): the record must match the files."""
    import hashlib

    store, _ = encrypted
    for path in store.glob("*/shards/*.json"):
        record = ShardRecord.parse(path.read_bytes(), str(path))
        for name, entry in record.objects.items():
            data = (store / name).read_bytes()
            assert (entry.size, entry.sha256) == (len(data), hashlib.sha256(data).hexdigest())


def test_plain_store(raw, scheduler, tmp_path, caplog):
    store = tmp_path / "plain.zarr"
    with caplog.at_level("INFO", logger="pipeline"):
        run(raw, store, None, scheduler)
    assert_content(store, raw, None)
    assert attributes(store).cipher is None
    assert "encrypt: 11/11 images" in caplog.text  # the end-of-run progress line (stderr is no TTY)


def test_decrypt_samples_exports_the_originals_privately(encrypted, raw, key, tmp_path):
    store, _ = encrypted
    written = decrypt_samples(str(store), key, str(tmp_path / "out"))
    assert len(written) == sum(COUNTS.values())
    for split in COUNTS:
        for source in (raw / "leftImg8bit" / split).glob("*/*.png"):
            exported = tmp_path / "out" / split / source.parent.name / source.name
            assert np.array_equal(rgb(exported), rgb(source))
            assert exported.stat().st_mode & 0o777 == 0o600  # plain images: the owner's alone
    folders = [tmp_path / "out", *(p for p in (tmp_path / "out").rglob("*") if p.is_dir())]
    assert {p.stat().st_mode & 0o777 for p in folders} == {0o700}
    assert decrypt_samples(str(store), key, str(tmp_path / "one"), names=["frankfurt_000000_000019"]) == [
        f"{tmp_path}/one/val/frankfurt/frankfurt_000000_000019_leftImg8bit.png"
    ]
    with pytest.raises(PipelineError, match="no sample named 'nowhere_000000_000019'"):
        decrypt_samples(str(store), key, str(tmp_path / "x"), names=["nowhere_000000_000019"])
    with pytest.raises(PipelineError, match=f"{store}: encrypted with key id"):
        decrypt_samples(str(store), keys.generate(), str(tmp_path / "x"))


# --- resume that repairs -----------------------------------------------------------------------


@pytest.fixture
def fresh(raw, key, scheduler, tmp_path):
    """A complete encrypted store of a private copy of the raw tree: (raw copy, store)."""
    copy = copy_tree(raw, tmp_path)
    store = tmp_path / "dataset.zarr"
    run(copy, store, key, scheduler)
    return copy, store


def test_second_run_reuses_every_shard(encrypted, raw, key, scheduler):
    store, _ = encrypted
    before = records(store)
    summary = run(raw, store, key, scheduler)
    assert (summary.shards_written, summary.shards_reused) == (0, 6)
    assert records(store) == before


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda f: f.write_bytes(f.read_bytes()[:-4] + b"\0\0\0\0"), id="index-tail"),
        pytest.param(lambda f: f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2]), id="truncated"),
        pytest.param(lambda f: f.write_bytes(bytes([f.read_bytes()[0] ^ 1]) + f.read_bytes()[1:]), id="first-byte"),
        pytest.param(lambda f: f.unlink(), id="missing"),
    ],
)
def test_a_damaged_shard_is_removed_and_written_again(fresh, key, scheduler, damage):
    raw, store = fresh
    before = records(store)
    damage(shard_file(store, "train", "images", 1))
    summary = run(raw, store, key, scheduler)
    assert (summary.shards_written, summary.shards_reused) == (1, 5)
    assert redone(before, store) == {"train/1"}
    assert_content(store, raw, key)


def test_a_damaged_or_missing_record_redoes_its_shard(fresh, key, scheduler):
    raw, store = fresh
    before = records(store)
    (store / "val" / "shards" / "0.json").write_text('{"format": "cipherseg-sh')
    (store / "train" / "shards" / "2.json").unlink()
    summary = run(raw, store, key, scheduler)
    assert (summary.shards_written, summary.shards_reused) == (2, 4)
    assert redone(before, store) == {"val/0", "train/2"}
    assert_content(store, raw, key)


def write_padded(path: Path, array: np.ndarray, size: int) -> None:
    """A PNG of exactly ``size`` bytes: decoders stop at its end chunk and ignore what follows."""
    data = cv2.imencode(".png", array)[1].tobytes()
    path.write_bytes(data + bytes(size - len(data)))


def test_a_changed_input_of_the_same_size_redoes_exactly_its_shard(raw, key, scheduler, tmp_path):
    """A relabelled file of the same size is noticed by its modification time (rsync's check)."""
    copy = copy_tree(raw, tmp_path)
    label = label_path(copy, "val", names(copy, "val")[2])
    labels = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    write_padded(label, labels, 64 << 10)
    store = tmp_path / "dataset.zarr"
    run(copy, store, key, scheduler)
    before = records(store)

    labels[labels == 7] = 8  # road -> sidewalk: a relabelling
    write_padded(label, labels, 64 << 10)
    os.utime(label, ns=(time.time_ns(), time.time_ns() + 10**9))
    summary = run(copy, store, key, scheduler)
    assert summary.shards_written == 1
    assert redone(before, store) == {"val/1"}
    assert_content(store, copy, key)


def test_a_repaired_input_redoes_exactly_its_shard(raw, key, scheduler, tmp_path):
    copy = copy_tree(raw, tmp_path)
    broken = image_path(copy, "train", names(copy, "train")[2])
    broken.write_bytes(broken.read_bytes()[:300])  # the header survives: found when decoding
    store = tmp_path / "dataset.zarr"
    assert [s.name for s in run(copy, store, key, scheduler, on_error=OnError.SKIP).skipped] == [names(copy, "train")[2]]
    before = records(store)
    with pytest.raises(PipelineError, match=f"^{re.escape(str(broken))}: cannot decode it"):
        run(copy, store, key, scheduler)  # fail mode redoes the shard with the skip, and fails again
    assert records(store).keys() == before.keys() - {store / "train" / "shards" / "1.json"}
    shutil.copy(image_path(raw, "train", names(raw, "train")[2]), broken)
    summary = run(copy, store, key, scheduler)
    assert (summary.shards_written, summary.skipped) == (1, ())
    assert redone(before, store) == {"train/1"}
    assert_content(store, copy, key)


KILL = """
import os, signal, sys
from distributed import LocalCluster
import pipeline.shards
from pipeline.encrypt import encrypt_dataset
from pipeline.keys import load

raw, store, key, survive = sys.argv[1:5]
records = 0
real_put = pipeline.shards.put_atomic


def put_or_die(fs, path, data):
    # SIGKILL when the run is about to record shard number `survive` + 1: that shard is written, its record not.
    global records
    if records == int(survive):
        os.kill(os.getpid(), signal.SIGKILL)
    real_put(fs, path, data)
    records += 1


pipeline.shards.put_atomic = put_or_die
if __name__ == "__main__":
    # Workers in this process, so that the kill takes them with it at exactly this point.
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        encrypt_dataset(raw, store, load(key), workers=1, scheduler=cluster.scheduler_address, shard_size=2)
"""


@pytest.mark.slow  # a killed run and its resume, each in processes of their own: ~4 s each
@pytest.mark.parametrize("survive", [0, 3])
def test_sigkill_mid_run_then_resume(raw, key, tmp_path, survive):
    """Kill a run at a known point; the resumed run redoes exactly the unfinished shards, finished ones untouched."""
    key_file = keys.save(key, tmp_path / "key.json")
    store = tmp_path / "dataset.zarr"
    (tmp_path / "kill.py").write_text(KILL)
    done = subprocess.run([sys.executable, str(tmp_path / "kill.py"), str(raw), str(store), str(key_file), str(survive)], cwd=ROOT)
    assert done.returncode == -9
    finished = records(store)
    assert len(finished) == survive and not attributes(store).complete

    summary = run(raw, store, key, None, workers=1)
    assert (summary.shards_reused, summary.shards_written) == (survive, 6 - survive)
    assert {p: records(store)[p] for p in finished} == finished
    assert_content(store, raw, key)


# --- bad input ---------------------------------------------------------------------------------


def damage(raw: Path) -> dict[str, tuple[str, Path, str]]:
    """Break one sample per case: {name: (split, the file to be reported, words of the reason)}."""
    train, val = names(raw, "train"), names(raw, "val")
    truncated = image_path(raw, "train", train[0])
    truncated.write_bytes(truncated.read_bytes()[:300])  # the header survives: found when decoding
    label_path(raw, "train", train[1]).unlink()
    alpha = image_path(raw, "train", train[2])
    cv2.imwrite(str(alpha), np.zeros((*SIZE, 4), np.uint8))  # RGBA
    cv2.imwrite(str(label_path(raw, "train", train[3])), np.zeros((32, 64), np.uint8))
    deep = image_path(raw, "train", train[4])
    cv2.imwrite(str(deep), np.zeros((*SIZE, 3), np.uint16))
    jpeg = label_path(raw, "val", val[0])
    jpeg.write_bytes(cv2.imencode(".jpg", np.zeros(SIZE, np.uint8))[1].tobytes())  # a lossy label, named .png
    folder = image_path(raw, "val", val[1])
    folder.unlink()
    folder.mkdir()  # a directory named like an image
    return {
        train[0]: ("train", truncated, "cannot decode it"),
        train[1]: ("train", image_path(raw, "train", train[1]), "no label file"),
        train[2]: ("train", alpha, "RGB with alpha PNG, not an 8-bit grey, RGB, palette PNG"),
        train[3]: ("train", label_path(raw, "train", train[3]), "label size 32x64 differs"),
        train[4]: ("train", deep, "a 16-bit RGB PNG, not an 8-bit"),
        val[0]: ("val", jpeg, "a 8-bit grey JPEG, not an 8-bit grey or palette PNG label"),
        val[1]: ("val", folder, "a directory, not an image file"),
    }


def repair(raw: Path, copy: Path, split: str, name: str) -> None:
    for path in (image_path, label_path):
        if path(copy, split, name).is_dir():
            path(copy, split, name).rmdir()
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
    truncated = problems[names(copy, "train")[0]][1]
    with pytest.raises(PipelineError, match=f"^{re.escape(str(truncated))}: cannot decode it"):
        run(copy, store, key, scheduler)  # found by the shard task
    assert not attributes(store).complete


def test_bad_input_is_skipped_and_recorded(raw, scheduler, tmp_path):
    key = keys.generate(negative_positive=True)
    copy = copy_tree(raw, tmp_path)
    problems = damage(copy)
    store = tmp_path / "dataset.zarr"
    summary = run(copy, store, key, scheduler, on_error=OnError.SKIP)
    # Recorded relative to the raw root: the store is published, the owner's paths are private.
    reported = {skip.file: skip.reason for skip in summary.skipped}
    assert set(reported) == {str(file.relative_to(copy)) for _, file, _ in problems.values()}
    for _, file, words in problems.values():
        assert re.search(words, reported[str(file.relative_to(copy))])
    assert {skip.name for skip in summary.skipped} == set(problems)
    assert attributes(store).skipped == summary.skipped
    assert attributes(store).counts == COUNTS  # skipped samples keep their slot, as zeros
    assert_content(store, copy, key, skipped=tuple(problems))
    assert run(copy, store, key, scheduler, on_error=OnError.SKIP).shards_written == 0


def test_a_split_without_a_usable_sample_is_refused(raw, key, scheduler, tmp_path):
    copy = copy_tree(raw, tmp_path)
    for path in (copy / "leftImg8bit" / "test").glob("*/*.png"):
        path.write_bytes(b"not an image")
    first = min((copy / "leftImg8bit" / "test").glob("*/*.png"))
    with pytest.raises(PipelineError, match=f"^{first}: not a PNG or JPEG file"):
        run(copy, tmp_path / "a.zarr", key, scheduler)
    with pytest.raises(PipelineError, match="no usable image in split 'test'"):
        run(copy, tmp_path / "b.zarr", key, scheduler, on_error=OnError.SKIP)


def test_skipping_every_sample_of_a_split_leaves_the_store_incomplete(raw, key, scheduler, tmp_path):
    """Headers fine, every val label undecodable: found by the tasks, then refused as a whole."""
    copy = copy_tree(raw, tmp_path)
    for path in (copy / "gtFine" / "val").glob("*/*_labelIds.png"):
        path.write_bytes(path.read_bytes()[:100])
    store = tmp_path / "dataset.zarr"
    with pytest.raises(PipelineError, match="no usable image in split 'val' .*every one was skipped"):
        run(copy, store, key, scheduler, on_error=OnError.SKIP)
    assert not attributes(store).complete


def test_missing_root_or_images(tmp_path, key, scheduler):
    with pytest.raises(PipelineError, match="nowhere: no such folder"):
        run(tmp_path / "nowhere", tmp_path / "a.zarr", key, scheduler)
    (tmp_path / "empty" / "leftImg8bit" / "train").mkdir(parents=True)
    with pytest.raises(PipelineError, match="no images of the cityscapes dataset here .*leftImg8bit/train/\\*_leftImg8bit.png"):
        run(tmp_path / "empty", tmp_path / "a.zarr", key, scheduler)


def test_resume_with_another_key_layout_or_input_set_is_refused(encrypted, raw, key, scheduler, tmp_path):
    store, _ = encrypted
    before = records(store)
    with pytest.raises(PipelineError, match=f"^{store}: written with key id {key.key_id}"):
        run(raw, store, keys.generate(), scheduler)
    with pytest.raises(PipelineError, match=f"^{store}: written with key id .*; this run has plain"):
        run(raw, store, None, scheduler)
    with pytest.raises(PipelineError, match=f"^{store}: written with shard size 2, not 4"):
        run(raw, store, key, scheduler, shard_size=4)
    copy = copy_tree(raw, tmp_path)
    image_path(copy, "val", names(copy, "val")[0]).unlink()
    with pytest.raises(PipelineError, match=f"^{store}: the set of input images changed .*write to a new store"):
        run(copy, store, key, scheduler)
    assert records(store) == before
    assert attributes(store).complete


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text("a file"), "a file, not a dataset store folder"),
        (lambda p: (p.mkdir(), (p / "thesis.tex").write_text("precious")), "exists and is not a cipherseg dataset store"),
        (lambda p: (p.mkdir(), (p / "zarr.json").write_text("{not json")), "zarr.json: not valid JSON"),
        (
            lambda p: (p.mkdir(), (p / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": '
                                                               '{"format": "cipherseg-dataset", "format_version": 1}}')),
            "cipherseg-dataset version 1, this cipherseg reads version 3",
        ),
    ],
    ids=["a-file", "a-foreign-folder", "corrupt-zarr-json", "an-older-format"],
)
def test_a_store_location_that_is_no_store_of_ours_is_refused(raw, key, scheduler, tmp_path, make, message):
    store = tmp_path / "store"
    make(store)
    before = {p: p.read_bytes() for p in [store, *store.rglob("*")] if p.is_file()}
    with pytest.raises(UserError, match=message):
        run(raw, store, key, scheduler)
    assert {p: p.read_bytes() for p in [store, *store.rglob("*")] if p.is_file()} == before


def test_an_unreachable_scheduler_fails_fast_and_writes_nothing(raw, key, tmp_path):
    started = time.monotonic()
    with pytest.raises(PipelineError, match="--scheduler tcp://127.0.0.1:9: cannot reach the Dask scheduler"):
        run(raw, tmp_path / "a.zarr", key, "tcp://127.0.0.1:9")
    assert time.monotonic() - started < 15
    assert not (tmp_path / "a.zarr").exists()
    with pytest.raises(PipelineError, match="--scheduler notaurl: not a Dask scheduler address"):
        run(raw, tmp_path / "a.zarr", key, "notaurl")


@pytest.mark.slow  # a local S3 server: ~10 s
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
