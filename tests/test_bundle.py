"""The bundle: publish the owner's encrypted store and checkpoint, verify them on the cloud side."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace

import fsspec
import pytest
import zarr
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from pipeline import bundle as bundle_module
from pipeline.bundle import CHECKPOINT, DATASET, publish, verify
from pipeline.dataset import encrypt_dataset
from pipeline.errors import PipelineError
from pipeline.keys import BUNDLE_MANIFEST, generate
from pipeline.sample import write_random_vit, write_sample
from pipeline.storage import PARTIAL
from pipeline.weights import decrypt_checkpoint, encrypt_checkpoint, pretrained_normalization

pytest_plugins = ["s3"]

ARCH = "vit_tiny_patch16_224"
SPLITS = {"train": 3, "val": 2, "test": 1}
SHARD = "train/images/c/0/0/0/0"  # the first shard of the training images


@pytest.fixture(scope="module")
def owner(tmp_path_factory):
    """The data owner's side: raw data, a key, the encrypted store and checkpoint, a checkpoint of another key."""
    root = tmp_path_factory.mktemp("owner-side")
    raw, private = root / "raw", root / "owner"
    key, other_key = generate(), generate()
    write_sample(raw / "cityscapes", counts=SPLITS, size=(32, 64))
    store = private / "dataset.zarr"
    encrypt_dataset(str(raw / "cityscapes"), str(store), key, workers=1, shard_size=2)
    timm_checkpoint = write_random_vit(raw / "weights" / f"{ARCH}.safetensors", ARCH)
    return SimpleNamespace(
        raw=raw,
        private=private,
        key=key,
        other_key=other_key,
        store=str(store),
        checkpoint=str(encrypt_checkpoint(timm_checkpoint, ARCH, key, private / "backbone.safetensors")),
        other_checkpoint=str(encrypt_checkpoint(timm_checkpoint, ARCH, other_key, private / "other.safetensors")),
    )


@pytest.fixture
def published(owner, tmp_path):
    """A freshly published local bundle."""
    path = tmp_path / "bundle"
    publish(owner.store, owner.checkpoint, str(path))
    return path


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def manifest(path: Path) -> dict:
    return json.loads((path / BUNDLE_MANIFEST).read_text())


def rewrite_manifest(path: Path, edit) -> None:
    document = manifest(path)
    edit(document)
    (path / BUNDLE_MANIFEST).write_text(json.dumps(document))


def entry(data: bytes) -> dict:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# --- round trip ---------------------------------------------------------------------------------


def test_publish_copies_every_object_and_describes_them(owner, tmp_path):
    path = tmp_path / "bundle"
    summary = publish(owner.store, owner.checkpoint, str(path))

    store = files(Path(owner.store))
    bundle = files(path)
    expected = {f"{DATASET}/{name}": data for name, data in store.items()}
    expected[CHECKPOINT] = Path(owner.checkpoint).read_bytes()
    assert bundle.pop(BUNDLE_MANIFEST)
    assert bundle == expected

    document = manifest(path)
    assert document["objects"] == {name: entry(data) for name, data in expected.items()}
    assert document["cipher"] == owner.key.spec()
    assert document["channel_order"] == "RGB"
    cloud = pretrained_normalization(ARCH).uniform()
    assert document["normalization"] == {"mean": list(cloud.mean), "std": list(cloud.std)}
    assert document["splits"] == SPLITS
    assert document["source_fingerprint"] == zarr.open_group(owner.store, mode="r").attrs["source_fingerprint"]
    assert document["created"].endswith("+00:00")
    assert document["tool_version"] == version("cipherseg")
    assert owner.key.secret.hex() not in (path / BUNDLE_MANIFEST).read_text()
    assert summary == {
        "bundle": str(path),
        "objects": len(expected),
        "copied": len(expected),
        "removed": 0,
        "bytes": sum(map(len, expected.values())),
        "key_id": owner.key.key_id,
        "splits": SPLITS,
    }


def test_verify_accepts_a_published_bundle_with_and_without_the_key(owner, published):
    summary = verify(str(published))
    assert summary["key_id"] == owner.key.key_id
    assert summary["splits"] == SPLITS
    assert summary["objects"] == len(manifest(published)["objects"])
    assert summary["key_checked"] is False
    assert verify(str(published), key=owner.key)["key_checked"] is True


def test_publish_leaves_out_temporaries_of_an_interrupted_encrypt_run(owner, store_copy, tmp_path):
    leftover = store_copy / "train" / "shards" / f"0.json.1234{PARTIAL}"
    leftover.write_bytes(b'{"names": [')  # what a SIGKILL mid-write leaves
    publish(str(store_copy), owner.checkpoint, str(tmp_path / "bundle"))
    assert not (tmp_path / "bundle" / DATASET / "train" / "shards" / leftover.name).exists()
    verify(str(tmp_path / "bundle"))


def test_republishing_copies_only_what_changed_and_removes_stale_objects(owner, published):
    assert publish(owner.store, owner.checkpoint, str(published))["copied"] == 0
    flip_byte(published / DATASET / SHARD)
    (published / DATASET / "train" / "images" / "c" / "9").mkdir()
    (published / DATASET / "train" / "images" / "c" / "9" / "stale").write_bytes(b"from an earlier store")
    summary = publish(owner.store, owner.checkpoint, str(published))
    assert (summary["copied"], summary["removed"]) == (1, 1)
    assert verify(str(published))["objects"] == summary["objects"]


def test_a_failed_republish_leaves_no_manifest(owner, published, monkeypatch):
    flip_byte(published / CHECKPOINT)

    def interrupted(*args):
        raise OSError("connection lost")

    monkeypatch.setattr(bundle_module, "_copy", interrupted)
    with pytest.raises(OSError):
        publish(owner.store, owner.checkpoint, str(published))
    assert not (published / BUNDLE_MANIFEST).exists()
    with pytest.raises(PipelineError, match="no manifest.json: not a bundle, or its publication did not finish"):
        verify(str(published))


# --- publish refuses bad input ------------------------------------------------------------------


@pytest.fixture
def store_copy(owner, tmp_path):
    return Path(shutil.copytree(owner.store, tmp_path / "store.zarr"))


def set_attrs(store: Path, **attrs) -> None:
    zarr.open_group(store, mode="r+").attrs.update(attrs)


@pytest.mark.parametrize(
    "attrs, message",
    [
        ({"complete": False}, "incomplete"),
        ({"encrypted": False}, "the checkpoint is encrypted, but the dataset store .* is plain"),
        ({"format": "something-else"}, "not a cipherseg dataset store"),
        ({"channel_order": "BGR"}, "expects RGB images, but the dataset store .* holds BGR"),
    ],
)
def test_publish_refuses_a_bad_store(owner, store_copy, tmp_path, attrs, message):
    set_attrs(store_copy, **attrs)
    with pytest.raises(PipelineError, match=message):
        publish(str(store_copy), owner.checkpoint, str(tmp_path / "bundle"))
    assert not (tmp_path / "bundle").exists()


def test_publish_refuses_a_checkpoint_of_another_key(owner, tmp_path):
    with pytest.raises(PipelineError, match=f"other.safetensors: encrypted for .*{owner.other_key.key_id}.*{owner.key.key_id}"):
        publish(owner.store, owner.other_checkpoint, str(tmp_path / "bundle"))


def test_publish_refuses_a_plain_checkpoint_with_an_encrypted_store(owner, tmp_path):
    plain = decrypt_checkpoint(owner.checkpoint, owner.key, tmp_path / "plain.safetensors")
    with pytest.raises(PipelineError, match="the checkpoint is plain, but the dataset store .* is encrypted"):
        publish(owner.store, str(plain), str(tmp_path / "bundle"))


def test_a_plain_bundle_publishes_and_verifies(owner, tmp_path):
    """The baseline's bundle: store and checkpoint written without a key, through the same code."""
    store = tmp_path / "plain.zarr"
    encrypt_dataset(str(owner.raw / "cityscapes"), str(store), None, workers=1, shard_size=2)
    checkpoint = encrypt_checkpoint(owner.raw / "weights" / f"{ARCH}.safetensors", ARCH, None, tmp_path / "plain.safetensors")
    publish(str(store), str(checkpoint), str(tmp_path / "bundle"))
    summary = verify(str(tmp_path / "bundle"))
    assert summary["key_id"] is None and summary["splits"] == SPLITS
    with pytest.raises(PipelineError, match="published for key"):
        verify(str(tmp_path / "bundle"), key=owner.key)


def test_publish_refuses_missing_and_foreign_inputs(owner, tmp_path):
    with pytest.raises(PipelineError, match="no dataset store here"):
        publish(str(tmp_path / "nowhere"), owner.checkpoint, str(tmp_path / "bundle"))
    with pytest.raises(PipelineError, match="no such checkpoint"):
        publish(owner.store, str(tmp_path / "nowhere.safetensors"), str(tmp_path / "bundle"))
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(PipelineError, match="not a safetensors file"):
        publish(owner.store, str(tmp_path / "junk.safetensors"), str(tmp_path / "bundle"))


@pytest.mark.parametrize("name", ["key.json", "train/owner-key.json", "secret.key"])
def test_publish_refuses_an_object_named_like_a_key_file(owner, store_copy, tmp_path, name):
    (store_copy / name).write_text("{}")
    with pytest.raises(PipelineError, match=f"{DATASET}/{name}: named like a key file"):
        publish(str(store_copy), owner.checkpoint, str(tmp_path / "bundle"))
    assert not (tmp_path / "bundle").exists()


def test_publish_refuses_a_location_that_holds_something_else(owner, tmp_path):
    (tmp_path / "notes.txt").write_text("not a bundle")
    with pytest.raises(PipelineError, match="holds notes.txt, which is no part of a bundle"):
        publish(owner.store, owner.checkpoint, str(tmp_path))
    assert (tmp_path / "notes.txt").exists()


# --- verify catches tampering -------------------------------------------------------------------


def swap_checkpoint(owner, path: Path) -> None:
    shutil.copyfile(owner.other_checkpoint, path / CHECKPOINT)


def swap_checkpoint_and_manifest(owner, path: Path) -> None:
    swap_checkpoint(owner, path)
    rewrite_manifest(path, lambda m: m["objects"].update({CHECKPOINT: entry((path / CHECKPOINT).read_bytes())}))


def edit_manifest_entry(owner, path: Path) -> None:
    rewrite_manifest(path, lambda m: m["objects"][f"{DATASET}/{SHARD}"].update(sha256="0" * 64))


def edit_manifest_splits(owner, path: Path) -> None:
    rewrite_manifest(path, lambda m: m.update(splits={"train": 30, "val": 2}))


def edit_manifest_key_id(owner, path: Path) -> None:
    rewrite_manifest(path, lambda m: m["cipher"].update(key_id=owner.other_key.key_id))


def drop_manifest_entry(owner, path: Path) -> None:
    rewrite_manifest(path, lambda m: m["objects"].pop(f"{DATASET}/{SHARD}"))


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda o, p: flip_byte(p / DATASET / SHARD, 100), f"{DATASET}/{SHARD}: sha256 [0-9a-f]{{64}} does not match"),
        (lambda o, p: (p / DATASET / SHARD).write_bytes(b"short"), f"{DATASET}/{SHARD}: 5 bytes, the manifest says"),
        (swap_checkpoint, f"{CHECKPOINT}: .*does not match the manifest"),
        (swap_checkpoint_and_manifest, f"{CHECKPOINT}: encrypted for .*, but the dataset store"),
        (lambda o, p: (p / DATASET / "extra").write_bytes(b"x"), f"{DATASET}/extra: not listed in the manifest"),
        (lambda o, p: (p / "key.json").write_text("{}"), "key.json: named like a key file"),
        (lambda o, p: (p / DATASET / SHARD).unlink(), f"{DATASET}/{SHARD}: listed in the manifest but missing"),
        (lambda o, p: (p / CHECKPOINT).unlink(), f"{CHECKPOINT}: listed in the manifest but missing"),
        (edit_manifest_entry, f"{DATASET}/{SHARD}: sha256 .* does not match the manifest's 0000"),
        (edit_manifest_splits, "manifest.json: splits is .*'train': 30.*, but the bundle's objects say .*'train': 3"),
        (edit_manifest_key_id, "manifest.json: cipher is .*, but the bundle's objects say"),
        (drop_manifest_entry, f"{DATASET}/{SHARD}: not listed in the manifest"),
        (lambda o, p: (p / BUNDLE_MANIFEST).write_text('{"format": "cipher'), "manifest.json is not valid JSON"),
        (lambda o, p: (p / BUNDLE_MANIFEST).unlink(), "no manifest.json"),
    ],
    ids=[
        "flipped-byte",
        "truncated-shard",
        "swapped-checkpoint",
        "swapped-checkpoint-and-manifest",
        "extra-file",
        "key-file",
        "missing-shard",
        "missing-checkpoint",
        "edited-checksum",
        "edited-splits",
        "edited-key-id",
        "dropped-entry",
        "broken-manifest",
        "no-manifest",
    ],
)
def test_verify_names_the_object_and_the_problem(owner, published, tamper, message):
    tamper(owner, published)
    with pytest.raises(PipelineError, match=message) as error:
        verify(str(published))
    assert str(error.value).startswith(str(published))


def test_verify_reports_every_problem_at_once(published):
    flip_byte(published / DATASET / SHARD)
    (published / CHECKPOINT).unlink()
    with pytest.raises(PipelineError) as error:
        verify(str(published))
    assert str(error.value).count("\n  ") == 2


# --- the owner's key scan -----------------------------------------------------------------------


@pytest.fixture
def small_chunks(monkeypatch):
    """Objects are read in chunks of 1000 bytes, so that planted secrets straddle chunk boundaries."""
    monkeypatch.setattr(bundle_module, "_CHUNK", 1000)


@pytest.mark.parametrize("form", ["bytes", "in hex"])
@pytest.mark.parametrize("offset", [0, 980, 990, 999, 1000, 2990])
def test_the_key_scan_finds_the_secret_anywhere_in_any_object(owner, store_copy, tmp_path, small_chunks, form, offset):
    secret = owner.key.secret if form == "bytes" else owner.key.secret.hex().encode()
    data = bytearray(os.urandom(4000))
    data[offset : offset + len(secret)] = secret
    (store_copy / "train" / "notes.bin").write_bytes(bytes(data))  # an innocent-looking extra object
    path = tmp_path / "bundle"
    publish(str(store_copy), owner.checkpoint, str(path))

    verify(str(path))  # the cloud cannot know: the bundle is consistent
    with pytest.raises(PipelineError, match=f"{DATASET}/train/notes.bin: contains the secret key {form}"):
        verify(str(path), key=owner.key)


def test_the_key_scan_covers_objects_outside_the_manifest(owner, published):
    (published / DATASET / "notes.bin").write_bytes(b"x" * 100 + owner.key.secret.hex().encode() + b"x" * 100)
    with pytest.raises(PipelineError) as error:
        verify(str(published), key=owner.key)
    assert f"{DATASET}/notes.bin: not listed in the manifest" in str(error.value)
    assert f"{DATASET}/notes.bin: contains the secret key in hex" in str(error.value)


def test_the_key_scan_covers_the_manifest(owner, published):
    rewrite_manifest(published, lambda m: m.update(note=owner.key.secret.hex()))
    verify(str(published))
    with pytest.raises(PipelineError, match="manifest.json: contains the secret key in hex"):
        verify(str(published), key=owner.key)


def test_the_key_scan_covers_the_checkpoint(owner, tmp_path, small_chunks):
    with safe_open(owner.checkpoint, framework="pt") as f:
        metadata = f.metadata()
    leaky = tmp_path / "leaky.safetensors"
    save_file(load_file(owner.checkpoint), leaky, metadata={**metadata, "note": owner.key.secret.hex()})
    path = tmp_path / "bundle"
    publish(owner.store, str(leaky), str(path))
    with pytest.raises(PipelineError, match=f"{CHECKPOINT}: contains the secret key in hex"):
        verify(str(path), key=owner.key)


def test_verify_with_another_key_says_so(owner, published):
    with pytest.raises(PipelineError, match=f"published for key .*{owner.key.key_id}.*not this key .*{owner.other_key.key_id}"):
        verify(str(published), key=owner.other_key)


# --- object storage -----------------------------------------------------------------------------


def training_dataset(store: str, **kwargs):
    """The cloud's training dataset over the store's train split, with its loading transforms."""
    import training.datasets  # noqa: F401  (registers the dataset and its transforms)
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    init_default_scope("mmseg")
    pipeline = [dict(type="LoadZarrImage"), dict(type="LoadZarrAnnotations")]
    return DATASETS.build(dict(type="ZarrSegDataset", store=store, split="train", pipeline=pipeline, **kwargs))


def test_publish_and_verify_on_s3(owner, s3_bucket, s3_options):
    url = f"{s3_bucket}/bundle"
    summary = publish(owner.store, owner.checkpoint, url, storage_options=s3_options)
    assert summary["copied"] == summary["objects"]
    fs = fsspec.filesystem("s3", **s3_options)
    remote = {path.removeprefix(url.removeprefix("s3://") + "/"): fs.cat_file(path) for path in fs.find(url)}
    assert remote[f"{DATASET}/{SHARD}"] == (Path(owner.store) / SHARD).read_bytes()
    assert json.loads(remote.pop(BUNDLE_MANIFEST))["objects"] == {name: entry(data) for name, data in remote.items()}

    assert verify(url, key=owner.key, storage_options=s3_options)["key_checked"]
    assert publish(owner.store, owner.checkpoint, url, storage_options=s3_options)["copied"] == 0

    # The cloud's training data loader reads the same samples from object storage.
    remote_data = training_dataset(f"{url}/{DATASET}", storage_options=s3_options)
    local_data = training_dataset(f"{owner.store}")
    for i in range(len(local_data)):
        remote_sample, local_sample = remote_data[i], local_data[i]
        assert remote_sample["img_path"] == local_sample["img_path"]
        assert (remote_sample["img"] == local_sample["img"]).all()
        assert (remote_sample["gt_seg_map"] == local_sample["gt_seg_map"]).all()

    shard = f"{url}/{DATASET}/{SHARD}"
    data = bytearray(fs.cat_file(shard))
    data[10] ^= 0x80
    fs.pipe_file(shard, bytes(data))
    with pytest.raises(PipelineError, match=f"{DATASET}/{SHARD}: sha256 .* does not match"):
        verify(url, storage_options=s3_options)


# --- the cloud needs nothing from the owner -----------------------------------------------------

AUDIT = """
import json, os, sys

opened = []


def record(event, args):
    if event == "open" and isinstance(args[0], (str, bytes)):
        opened.append(os.path.realpath(os.fsdecode(args[0])))
    elif event in ("os.listdir", "os.scandir") and isinstance(args[0], (str, bytes)):
        opened.append(os.path.realpath(os.fsdecode(args[0])))


sys.addaudithook(record)  # before any import: everything verification and loading touch is recorded
from pipeline.bundle import verify

summary = verify(sys.argv[1])

import training.datasets  # the cloud's data loading: the training dataset and its loading transforms
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS

init_default_scope("mmseg")
pipeline = [dict(type="LoadZarrImage"), dict(type="LoadZarrAnnotations")]
data = DATASETS.build(dict(type="ZarrSegDataset", store=sys.argv[1] + "/dataset.zarr", split="train", pipeline=pipeline))
loaded = [list(data[i]["gt_seg_map"].shape) for i in range(len(data))]
print(json.dumps({"opened": opened, "summary": summary, "loaded": loaded}))
"""


def test_the_cloud_verifies_and_loads_data_with_the_bundle_alone(owner, tmp_path, tmp_path_factory):
    raw, private, path = tmp_path / "raw", tmp_path / "owner", tmp_path / "bundle"
    shutil.copytree(owner.raw, raw)
    shutil.copytree(owner.private, private)
    publish(str(private / "dataset.zarr"), str(private / "backbone.safetensors"), str(path))
    shutil.rmtree(raw)
    shutil.rmtree(private)

    result = subprocess.run(
        [sys.executable, "-c", AUDIT, str(path)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["summary"]["key_id"] == owner.key.key_id
    assert report["loaded"] == [[32, 64]] * SPLITS["train"]
    root = tmp_path_factory.getbasetemp().resolve()  # this session's files, the owner's among them
    touched = [Path(p) for p in report["opened"] if Path(p).is_relative_to(root)]
    assert path.resolve() / BUNDLE_MANIFEST in touched
    outside = [str(p) for p in touched if not p.is_relative_to(path.resolve())]
    assert outside == []
