"""Publishing: the owner's store and checkpoint become a signed bundle, or nothing is committed.

Publish copies exactly the store format's objects, signs the manifest, never publishes any form of
the key, never deletes what it did not write, and leaves either no manifest or a complete signed
bundle however it ends (SIGKILL included).
"""

import base64
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import zarr
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from contract.bundle import CHECKPOINT, DATASET, MANIFEST, SIGNATURE, verify_bundle
from contract.canonical import canonical_checkpoint_header, canonical_store_object, is_metadata, parse_safetensors_header
from contract.errors import UserError
from contract.formats import CheckpointMetadata, Manifest, ShardRecord, StoreAttributes
from contract.signing import save_signer
from pipeline import bundle as publishing
from pipeline import keys
from contract.bundle import PENDING
from pipeline.bundle import check_published, publish
from pipeline.encrypt import encrypt_dataset
from pipeline.errors import PipelineError
from pipeline.run import main as run_main
from pipeline.sample import write_random_vit, write_sample
from pipeline.atomic import PARTIAL
from pipeline.weights import encrypt_checkpoint

pytest_plugins = ["s3"]

ARCH = "test_vit"  # timm's smallest ViT with 16x16 patches (a 1.2 MB checkpoint)
SPLITS = {"train": 3, "val": 2, "test": 1}
SHARD = "train/images/c/0/0/0/0"  # store names; in the bundle under dataset.zarr/
SHARD2 = "train/images/c/1/0/0/0"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def owner(tmp_path_factory, dask_scheduler):
    """The owner's side, once: raw data and variants of it, stores of the owner's key, of another key and
    plain, and a checkpoint of each."""
    root = tmp_path_factory.mktemp("publish-owner")
    key, other_key = keys.generate(), keys.generate()
    raw = root / "raw"
    write_sample(raw, counts=SPLITS, size=(32, 64))
    # Variants: one training image replaced (its shard changes), the last one removed (a shard fewer).
    changed, fewer = Path(shutil.copytree(raw, root / "raw-changed")), Path(shutil.copytree(raw, root / "raw-fewer"))
    first = next((changed / "leftImg8bit" / "train").rglob("aachen_000000_*"))
    shutil.copyfile(next((raw / "leftImg8bit" / "val").rglob("*.png")), first)
    for path in (fewer / "leftImg8bit" / "train").rglob("bochum_000000_*"):
        path.unlink()
    for path in (fewer / "gtFine" / "train").rglob("bochum_000000_*"):
        path.unlink()

    vit = write_random_vit(root / "timm.safetensors", ARCH)
    stores = {}
    for name, source, store_key in [
        ("store", raw, key), ("changed", changed, key), ("fewer", fewer, key), ("other", raw, other_key), ("plain", raw, None),
    ]:
        stores[name] = root / "owner" / f"{name}.zarr"
        encrypt_dataset(str(source), str(stores[name]), store_key, workers=1, scheduler=dask_scheduler, shard_size=2)
    return SimpleNamespace(
        root=root,
        raw=raw,
        key=key,
        other_key=other_key,
        signer=key.signer(),
        key_file=keys.save(key, root / "owner" / "key.json"),
        store=stores["store"],
        changed=stores["changed"],
        fewer=stores["fewer"],
        other_store=stores["other"],
        plain_store=stores["plain"],
        checkpoint=encrypt_checkpoint(vit, ARCH, key, root / "owner" / "backbone.safetensors"),
        other_checkpoint=encrypt_checkpoint(vit, ARCH, other_key, root / "owner" / "other.safetensors"),
        plain_checkpoint=encrypt_checkpoint(vit, ARCH, None, root / "owner" / "plain.safetensors"),
    )


@pytest.fixture
def store_copy(owner, tmp_path):
    """A copy of the owner's encrypted store, for this test to change."""
    return Path(shutil.copytree(owner.store, tmp_path / "store.zarr"))


@pytest.fixture
def published(owner, tmp_path):
    """A bundle freshly published from the owner's store."""
    path = tmp_path / "bundle"
    publish(str(owner.store), str(owner.checkpoint), str(path), owner.key)
    return path


# --- helpers ------------------------------------------------------------------------------------


def files(root: Path) -> dict[str, bytes]:
    """Every regular file under root, by relative name (temporaries and staging folders included)."""
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            if not path.is_symlink():
                found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


def store_attributes(store: Path) -> StoreAttributes:
    return StoreAttributes.parse(dict(zarr.open_group(store, mode="r").attrs), "store")


def store_objects(store: Path) -> set[str]:
    return store_attributes(store).objects()


def expected_bundle(store: Path, checkpoint: Path) -> dict[str, bytes]:
    """What a bundle of ``store`` and ``checkpoint`` holds besides its manifest and signature: the shards
    byte for byte, every metadata object and the checkpoint's header in their closed form."""
    attributes = store_attributes(store)
    objects = {}
    for name in store_objects(store):
        data = (store / name).read_bytes()
        objects[f"{DATASET}/{name}"] = canonical_store_object(name, data, attributes, name) if is_metadata(name) else data
    data = checkpoint.read_bytes()
    length = 8 + int.from_bytes(data[:8], "little")
    header = parse_safetensors_header(data[8:length], "checkpoint", data_length=len(data) - length)
    _, closed = canonical_checkpoint_header(header, "checkpoint")
    return {**objects, CHECKPOINT: closed.to_bytes() + data[length:]}


def entry(data: bytes) -> dict:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def flip(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def assert_nothing_committed(bundle: Path, *secrets: bytes, key=None) -> None:
    """No manifest (a signature of the last one may stay: it verifies nothing alone), and no file in the
    bundle folder (under any name, temporaries too) holding a secret or any form of ``key``."""
    assert not (bundle / MANIFEST).exists()
    patterns = list(secrets) + (list(key.secret_patterns().values()) if key else [])
    for name, data in files(bundle).items() if bundle.exists() else ():
        assert not any(pattern in data for pattern in patterns), f"{name} holds the secret"
    with pytest.raises(UserError, match="no manifest.json: not a bundle, or its publication did not finish"):
        verify_bundle(str(bundle))


# --- what publish writes ------------------------------------------------------------------------


def test_publish_copies_exactly_the_store_objects_and_signs_the_manifest(owner, store_copy, tmp_path):
    """Only the store format's objects and the checkpoint are copied, byte for byte; anything else in the
    store folder is left out and named; the manifest describes them and the owner's signer verifies it."""
    (store_copy / "notes.txt").write_text("my notes")
    (store_copy / "train" / "zarr.json~").write_text("an editor's backup")
    (store_copy / "key.json").write_bytes(owner.key_file.read_bytes())  # a key file, left where it should not be
    (store_copy / "train" / "shards" / f"0.json.1234{PARTIAL}").write_text('{"names": [')  # a SIGKILLed write
    (store_copy / "link").symlink_to(owner.key_file)
    bundle = tmp_path / "bundle"

    summary = publish(str(store_copy), str(owner.checkpoint), str(bundle), owner.key)

    expected = expected_bundle(store_copy, owner.checkpoint)
    found = files(bundle)
    manifest_bytes, signature_bytes = found.pop(MANIFEST), found.pop(SIGNATURE)
    assert found == expected
    assert set(summary.left_out) == {
        "notes.txt", "train/zarr.json~", "key.json", f"train/shards/0.json.1234{PARTIAL}",
        "link: a symbolic link (a bundle holds regular files only)",
    }
    assert (summary.copied, summary.reused, summary.removed, summary.ignored) == (len(expected), 0, (), ())

    manifest = Manifest.parse(manifest_bytes, MANIFEST)
    assert summary.manifest == manifest
    assert {name: e.to_json() for name, e in manifest.objects.items()} == {name: entry(data) for name, data in expected.items()}
    assert manifest.cipher == owner.key.spec()
    with safe_open(owner.checkpoint, framework="pt") as f:
        assert manifest.normalization == CheckpointMetadata.parse_metadata(f.metadata(), "checkpoint").normalization
    assert (manifest.channel_order, manifest.splits) == ("RGB", SPLITS)
    assert manifest.created.endswith("+00:00") and manifest.tool_version == version("cipherseg")
    assert manifest.signer == owner.signer.fingerprint and manifest.sequence == 1
    assert json.loads(signature_bytes)["signer"] == owner.signer.fingerprint
    assert summary.bytes == sum(map(len, expected.values()))

    assert verify_bundle(str(bundle), signer=owner.signer).signer == owner.signer.fingerprint
    check_published(str(bundle), owner.key)  # and no form of the key anywhere


def test_a_plain_store_with_a_plain_checkpoint_publishes_signed(owner, tmp_path):
    """The baseline's bundle: no cipher, but signed by the owner like any other."""
    summary = publish(str(owner.plain_store), str(owner.plain_checkpoint), str(tmp_path / "bundle"), owner.key)
    assert summary.manifest.cipher is None
    verified = check_published(str(tmp_path / "bundle"), owner.key)
    assert verified.manifest.cipher is None and verified.signer == owner.signer.fingerprint


@pytest.mark.parametrize(
    "store, checkpoint, says",
    [
        ("other_store", "other_checkpoint", "{other_store}: encrypted with key id {other}, not with the owner's key {key}"),
        ("store", "other_checkpoint", "{other_checkpoint}: made for key id {other} .*, but the dataset store {store} holds data of key id"),
        ("store", "plain_checkpoint", "{plain_checkpoint}: made for plain \\(no key\\), but the dataset store {store} holds data of key"),
        ("plain_store", "checkpoint", "{checkpoint}: made for key id {key} .*, but the dataset store {plain_store} holds data of plain"),
    ],
    ids=["store-of-another-key", "checkpoint-of-another-key", "plain-checkpoint", "plain-store"],
)
def test_data_of_another_key_is_refused(owner, tmp_path, store, checkpoint, says):
    """Data of another key (or plain data with an encrypted checkpoint) is refused before anything is written."""
    names = {
        name: re.escape(str(getattr(owner, name)))
        for name in ("store", "other_store", "plain_store", "checkpoint", "other_checkpoint", "plain_checkpoint")
    }
    with pytest.raises(UserError, match="^" + says.format(**names, key=owner.key.key_id, other=owner.other_key.key_id)):
        publish(str(getattr(owner, store)), str(getattr(owner, checkpoint)), str(tmp_path / "bundle"), owner.key)
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize(
    "attributes, says",
    [
        ({"complete": False}, "the dataset store is incomplete"),
        ({"channel_order": "BGR"}, "attributes.channel_order: Input should be 'RGB'"),
        ({"format": "something-else"}, "not a cipherseg-dataset"),
        ({"format_version": 2}, "cipherseg-dataset version 2, this cipherseg reads version 3"),
        ({"note": "anything"}, "'attributes.note' is no field of this format"),
    ],
    ids=["incomplete", "bgr", "foreign", "old-version", "unknown-attribute"],
)
def test_a_bad_store_is_refused(owner, store_copy, tmp_path, attributes, says):
    zarr.open_group(store_copy, mode="r+").attrs.update(attributes)
    with pytest.raises(UserError, match=says):
        publish(str(store_copy), str(owner.checkpoint), str(tmp_path / "bundle"), owner.key)
    assert not (tmp_path / "bundle").exists()


def test_missing_and_foreign_inputs_are_named(owner, tmp_path):
    bundle = str(tmp_path / "bundle")
    with pytest.raises(UserError, match=f"^{re.escape(str(tmp_path))}/nowhere.zarr: no such directory"):
        publish(str(tmp_path / "nowhere.zarr"), str(owner.checkpoint), bundle, owner.key)
    with pytest.raises(UserError, match=f"^{re.escape(str(tmp_path))}/nowhere.safetensors: not found"):
        publish(str(owner.store), str(tmp_path / "nowhere.safetensors"), bundle, owner.key)
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(UserError, match="junk.safetensors: not a safetensors file"):
        publish(str(owner.store), str(tmp_path / "junk.safetensors"), bundle, owner.key)
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize("where", ["inside-the-store", "around-the-store", "the-store"])
def test_a_bundle_overlapping_the_store_is_refused(owner, store_copy, where):
    bundle = {"inside-the-store": store_copy / "bundle", "around-the-store": store_copy.parent, "the-store": store_copy}[where]
    before = files(store_copy)
    with pytest.raises(PipelineError, match="overlaps the dataset store"):
        publish(str(store_copy), str(owner.checkpoint), str(bundle), owner.key)
    assert files(store_copy) == before


def test_a_bundle_location_that_is_no_folder_is_refused(owner, tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "folder")
    for name in ("file", "link"):
        with pytest.raises(PipelineError, match=f"{name}: not a folder"):
            publish(str(owner.store), str(owner.checkpoint), str(tmp_path / name), owner.key)
    assert list((tmp_path / "folder").iterdir()) == []


# --- the key never leaves ------------------------------------------------------------------------


def key_forms(key: keys.Key) -> dict[str, bytes]:
    """The secret (and the signing seed) as a careless tool could write it: raw, hex, base64 in either
    alphabet, padded or not, at each byte alignment inside a longer base64 text."""
    seed = key._signing_seed()
    forms = {"raw": key.secret, "hex": key.secret.hex().encode(), "HEX": key.secret.hex().upper().encode()}
    for alphabet, encode in (("base64", base64.b64encode), ("urlsafe", base64.urlsafe_b64encode)):
        for offset in range(3):
            text = encode(b"cipherseg-note " + b"." * offset + key.secret)  # 15 bytes before: offset is the alignment
            forms[f"{alphabet}-at-{offset}"] = text  # padded at offsets 0 and 2
            if text.endswith(b"="):
                forms[f"{alphabet}-at-{offset}-unpadded"] = text.rstrip(b"=")
    forms["seed-hex"] = seed.hex().encode()
    forms["seed-base64-inside"] = base64.b64encode(b"x" + seed + b"tail")
    return forms


# A fixed key whose base64 holds '+' or '/' at every alignment, so that each URL-safe form is one only
# the URL-safe patterns can find (a random key's does with probability ~0.75).
FIXED_KEY = keys.Key(hashlib.sha256(b"cipherseg: a fixed key for the tests 1").digest())
FORMS = list(key_forms(FIXED_KEY))
assert len(set(key_forms(FIXED_KEY).values())) == len(FORMS)  # each form a distinct test (not a test itself)


@pytest.mark.parametrize("form", FORMS)
def test_the_key_in_any_form_stops_publish_before_anything_is_committed(owner, tmp_path, form):
    """A shard (binary: no schema says what its bytes may be) holding the key fails the publish: no manifest,
    no signature, and the secret in no file of the bundle folder, under any name. (A plain store, which
    any key publishes, lets the fixed key above be the owner's.)"""
    store = Path(shutil.copytree(owner.plain_store, tmp_path / "store.zarr"))
    planted = key_forms(FIXED_KEY)[form]
    (store / SHARD).write_bytes((store / SHARD).read_bytes() + planted)
    bundle = tmp_path / "bundle"
    with pytest.raises(PipelineError, match=f"{re.escape(str(store))}/{SHARD}: contains the (secret|signing) key"):
        publish(str(store), str(owner.plain_checkpoint), str(bundle), FIXED_KEY)
    assert_nothing_committed(bundle, planted, key=FIXED_KEY)
    assert files(bundle)  # it failed in the copy pass, after other objects were copied


# --- nothing outside the contract is published ------------------------------------------------------

# Forms of the secret a scan for encodings does not look for: the closed schema refuses every one of them.
SMUGGLED = {
    "hex-with-separators": lambda secret: ":".join(f"{b:02x}" for b in secret),
    "gzip-in-base64": lambda secret: base64.b64encode(gzip.compress(secret)).decode(),
    "base32": lambda secret: base64.b32encode(secret).decode(),
    "json-list-of-bytes": lambda secret: list(secret),
    "reversed-hex": lambda secret: secret.hex()[::-1],
    "base64": lambda secret: base64.b64encode(secret).decode(),
}


def smuggle_into_json(name: str, into_attributes: bool):
    """Add a ``note`` to the store's metadata object ``name`` (to its zarr attributes, or beside its fields)."""

    def smuggle(owner, store: Path, tmp_path: Path, value) -> tuple[Path, str]:
        document = json.loads((store / name).read_bytes())
        (document["attributes"] if into_attributes else document)["note"] = value
        (store / name).write_text(json.dumps(document))
        return owner.checkpoint, f"{store}/{name}"

    return smuggle


def smuggle_into_checkpoint(as_tensor: bool):
    """Add the value to the checkpoint's metadata, or as a tensor of its own."""

    def smuggle(owner, store: Path, tmp_path: Path, value) -> tuple[Path, str]:
        with safe_open(owner.checkpoint, framework="pt") as f:
            metadata = f.metadata()
        tensors = load_file(owner.checkpoint)
        if as_tensor:
            tensors["note"] = torch.tensor(list(json.dumps(value).encode()), dtype=torch.uint8)
        else:
            metadata["note"] = json.dumps(value)
        leaky = tmp_path / "leaky.safetensors"
        save_file(tensors, leaky, metadata=metadata)
        return leaky, str(leaky)

    return smuggle


PLACES = {
    "store-attributes": smuggle_into_json("zarr.json", into_attributes=True),
    "split-attributes": smuggle_into_json("train/zarr.json", into_attributes=True),
    "array-attributes": smuggle_into_json("val/labels/zarr.json", into_attributes=True),
    "shard-record": smuggle_into_json("train/shards/0.json", into_attributes=False),
    "checkpoint-metadata": smuggle_into_checkpoint(as_tensor=False),
    "checkpoint-tensor": smuggle_into_checkpoint(as_tensor=True),
}


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("encoding", SMUGGLED)
def test_nothing_outside_the_contract_is_published(owner, store_copy, tmp_path, place, encoding):
    """The key, in a form no scan looks for, in any place of the store or checkpoint that the contract does
    not define (an attribute, a field, a tensor): publish refuses the object by name before writing anything."""
    value = SMUGGLED[encoding](owner.key.secret)
    checkpoint, where = PLACES[place](owner, store_copy, tmp_path, value)
    bundle = tmp_path / "bundle"
    with pytest.raises(UserError, match=f"^{re.escape(where)}: .*(no field of this format|unexpected tensor 'note')"):
        publish(str(store_copy), str(checkpoint), str(bundle), owner.key)
    assert not bundle.exists()


def test_the_closed_form_is_what_verify_takes(owner, published):
    """A bundle the owner's key signed but whose metadata is not in the closed form publish writes (a note
    in the store's attributes, as an insider's tool could add): verify refuses it, with and without the key."""
    document = json.loads((published / DATASET / "zarr.json").read_bytes())
    document["attributes"]["note"] = SMUGGLED["base32"](owner.key.secret)
    (published / DATASET / "zarr.json").write_text(json.dumps(document))
    manifest = json.loads((published / MANIFEST).read_bytes())
    manifest["objects"][f"{DATASET}/zarr.json"] = entry((published / DATASET / "zarr.json").read_bytes())
    (published / MANIFEST).write_text(json.dumps(manifest))
    (published / SIGNATURE).write_bytes(owner.key.sign((published / MANIFEST).read_bytes()).to_bytes())
    for check in (lambda: verify_bundle(str(published), signer=owner.signer), lambda: check_published(str(published), owner.key)):
        with pytest.raises(UserError, match=f"{DATASET}/zarr.json: 'attributes.note' is no field of this format"):
            check()


def test_a_reused_shard_is_the_bundles_checked_copy(owner, store_copy, published):
    """A shard the bundle holds as its record lists it is not read from the store again: damage to the
    store's copy (here the key appended) never reaches the bundle."""
    (store_copy / SHARD).write_bytes((store_copy / SHARD).read_bytes() + owner.key.secret)
    summary = publish(str(store_copy), str(owner.checkpoint), str(published), owner.key)
    assert summary.copied == 1  # the checkpoint
    assert (published / DATASET / SHARD).read_bytes() == (owner.store / SHARD).read_bytes()
    check_published(str(published), owner.key)


# --- publishing again ----------------------------------------------------------------------------


def shard_entries(store: Path) -> dict[str, dict]:
    """The shard objects' entries by bundle name, as their completion records state them."""
    entries = {}
    for name in store_objects(store):
        if "/shards/" in name:
            record = ShardRecord.parse((store / name).read_bytes(), name)
            entries.update({f"{DATASET}/{obj}": e.to_json() for obj, e in record.objects.items()})
    return entries


def test_republishing_copies_only_changed_objects(owner, published):
    """Objects whose bytes the last publish listed are reused (the checkpoint is always copied again); a
    changed shard, and the metadata that describes it, are copied again; every publish is one later."""
    old, new = shard_entries(owner.store), shard_entries(owner.changed)
    unchanged = {name for name in new if old.get(name) == new[name]}
    assert f"{DATASET}/{SHARD2}" in unchanged and f"{DATASET}/{SHARD}" not in unchanged  # how the stores differ

    first = Manifest.parse((published / MANIFEST).read_bytes(), MANIFEST)
    again = publish(str(owner.store), str(owner.checkpoint), str(published), owner.key)
    assert (again.reused, again.copied) == (len(again.manifest.objects) - 1, 1)
    assert (first.sequence, again.manifest.sequence) == (1, 2)

    summary = publish(str(owner.changed), str(owner.checkpoint), str(published), owner.key)
    same = {name for name, e in summary.manifest.objects.items() if again.manifest.objects.get(name) == e} - {CHECKPOINT}
    assert unchanged <= same and f"{DATASET}/{SHARD}" not in same
    assert (summary.reused, summary.copied) == (len(same), len(summary.manifest.objects) - len(same))
    assert summary.removed == () and summary.manifest.sequence == 3
    found = files(published)
    del found[MANIFEST], found[SIGNATURE]
    assert found == expected_bundle(owner.changed, owner.checkpoint)
    verify_bundle(str(published), signer=owner.signer)


def test_republishing_removes_stale_objects_the_last_manifest_listed(owner, published):
    """Objects of the last publish that the new store does not have are removed; nothing else."""
    old = set(json.loads((published / MANIFEST).read_bytes())["objects"])
    summary = publish(str(owner.fewer), str(owner.checkpoint), str(published), owner.key)
    stale = sorted(old - set(summary.manifest.objects))
    assert f"{DATASET}/{SHARD2}" in stale and f"{DATASET}/train/shards/1.json" in stale
    assert summary.removed == tuple(stale)
    assert not any((published / name).exists() for name in stale)
    assert verify_bundle(str(published), signer=owner.signer).manifest.splits == {**SPLITS, "train": 2}


def test_a_bundle_object_damaged_in_place_is_copied_again(owner, published):
    """A republish does not trust a damaged copy that has the listed size: it publishes a bundle that verifies."""
    flip(published / DATASET / SHARD, 100)
    summary = publish(str(owner.store), str(owner.checkpoint), str(published), owner.key)
    assert summary.copied == 2  # the damaged shard and the checkpoint
    verify_bundle(str(published), signer=owner.signer)


@pytest.mark.parametrize(
    "name",
    ["notes.txt", "x~", f"{DATASET}/key.json", f"{DATASET}/train/images/c/9/0/0/0", f"{DATASET}/notes{PARTIAL}.txt"],
)
def test_files_the_user_put_into_the_bundle_folder_are_never_deleted(owner, published, name):
    """A file no publish wrote is refused by name and left alone, even where a stale object could be."""
    data = owner.key_file.read_bytes() if name.endswith("key.json") else b"the user's"
    (published / name).parent.mkdir(parents=True, exist_ok=True)
    (published / name).write_bytes(data)  # written directly: keys.save would refuse this place
    before = files(published)
    with pytest.raises(PipelineError, match=f"^{re.escape(str(published))}/{re.escape(name)}: no publish of this owner put this here"):
        publish(str(owner.fewer), str(owner.checkpoint), str(published), owner.key)  # it would remove stale objects
    assert files(published) == before


@pytest.mark.parametrize("damage", ["unreadable", "edited", "another-owner"])
def test_a_previous_manifest_the_owner_did_not_sign_is_ignored(owner, published, damage):
    """Publish removes only what a manifest of this owner's, validly signed, listed: a damaged, edited or
    foreign one is named and ignored, and what it lists is then no publish's of this owner: refused, kept."""
    if damage == "unreadable":
        flip(published / MANIFEST, 0)
    elif damage == "edited":
        (published / MANIFEST).write_bytes((published / MANIFEST).read_bytes().replace(b'"sequence": 1', b'"sequence": 9'))
    else:
        (published / SIGNATURE).write_bytes(owner.other_key.sign((published / MANIFEST).read_bytes()).to_bytes())
    before = files(published)
    with pytest.raises(PipelineError, match="no publish of this owner put this here \\(an unsigned record is ignored: manifest.json\\)"):
        publish(str(owner.fewer), str(owner.checkpoint), str(published), owner.key)
    assert files(published) == before


@pytest.mark.parametrize("record", [MANIFEST, PENDING])
def test_an_unsigned_record_never_makes_publish_delete_the_owners_files(owner, tmp_path, record):
    """An unsigned manifest or pending record in the target folder that lists the owner's key and signer
    files (there by mistake) deletes nothing: publish names the record and refuses, and both files stay."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    key_file, signer_file = bundle / "key.json", save_signer(owner.signer, bundle / "signer.json")
    key_file.write_bytes(owner.key_file.read_bytes())
    listed = {"key.json": entry(key_file.read_bytes()), "signer.json": entry(signer_file.read_bytes())}
    document = {"format": "cipherseg-publish-pending", "format_version": 1, "signer": owner.signer.fingerprint,
                "sequence": 1, "objects": sorted(listed)}  # fmt: skip
    if record == MANIFEST:
        document = {"format": "cipherseg-bundle", "format_version": 3, "objects": listed}
    (bundle / record).write_text(json.dumps(document))
    before = files(bundle)
    with pytest.raises(PipelineError, match=f"no publish of this owner put this here \\(an unsigned record is ignored: {record}\\)"):
        publish(str(owner.store), str(owner.checkpoint), str(bundle), owner.key)
    assert files(bundle) == before


def test_a_stale_object_changed_since_the_last_publish_is_not_removed(owner, published):
    """The last manifest's objects are removed only while they hash to what it recorded."""
    flip(published / DATASET / SHARD2, 10)
    before = files(published)
    with pytest.raises(PipelineError, match=f"{DATASET}/{SHARD2}: changed since the last publish; not removing it"):
        publish(str(owner.fewer), str(owner.checkpoint), str(published), owner.key)
    assert files(published) == before


def test_a_file_in_a_new_bundle_folder_is_refused(owner, tmp_path):
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "notes.txt").write_text("mine")
    with pytest.raises(PipelineError, match="bundle/notes.txt: no publish of this owner put this here"):
        publish(str(owner.store), str(owner.checkpoint), str(tmp_path / "bundle"), owner.key)
    assert files(tmp_path / "bundle") == {"notes.txt": b"mine"}


def test_a_link_in_the_bundle_folder_is_refused(owner, published):
    (published / DATASET / "link").symlink_to(owner.key_file)
    with pytest.raises(PipelineError, match=f"{DATASET}/link: a symbolic link .*; a bundle location holds regular files only"):
        publish(str(owner.store), str(owner.checkpoint), str(published), owner.key)
    assert (published / MANIFEST).exists()  # refused before anything changed


@pytest.mark.parametrize(
    "place",
    [
        "store", "store/train", "bundle", "bundle/dataset.zarr", "bundle/dataset.zarr/train/images",
        "interrupted-bundle",  # no manifest, no signature: its pending record marks it
        "configured-bundle", "configured-bundle/sub",
    ],
)
def test_keys_save_refuses_any_place_inside_a_store_or_bundle(owner, store_copy, published, tmp_path, place):
    """A key file is never written where publish or encrypt write (and a publish would take it for the user's)."""
    folders = {
        "store": store_copy, "bundle": published, "interrupted-bundle": tmp_path / "interrupted",
        "configured-bundle": tmp_path / "future-bundle",
    }
    interrupted = Path(shutil.copytree(published, tmp_path / "interrupted"))
    (interrupted / MANIFEST).unlink()  # as a publish killed before its last write leaves it
    (interrupted / SIGNATURE).unlink()
    (interrupted / PENDING).write_text(json.dumps({"format": "cipherseg-publish-pending", "objects": []}))
    first, *rest = place.split("/")
    target = Path(folders[first], *rest, "key.json")
    with pytest.raises(PipelineError, match="inside the dataset store or bundle"):
        keys.save(owner.key, target, not_inside=[tmp_path / "future-bundle"])
    assert not target.exists()


def test_a_shard_damaged_after_encryption_is_never_published(owner, store_copy, tmp_path):
    """Its completion record no longer matches: publish names it and asks for the encrypt stage again."""
    flip(store_copy / SHARD2, 50)
    where = re.escape(f"{store_copy}/{SHARD2}")
    with pytest.raises(PipelineError, match=f"^{where}: changed since it was written .*run --stage encrypt again"):
        publish(str(store_copy), str(owner.checkpoint), str(tmp_path / "bundle"), owner.key)
    assert_nothing_committed(tmp_path / "bundle")
    assert (store_copy / SHARD2).read_bytes() not in files(tmp_path / "bundle").values()


def test_a_store_missing_an_object_is_refused(owner, store_copy, tmp_path):
    (store_copy / SHARD2).unlink()
    with pytest.raises(PipelineError, match=f"{re.escape(str(store_copy))}/{SHARD2}: missing .*run --stage encrypt again"):
        publish(str(store_copy), str(owner.checkpoint), str(tmp_path / "bundle"), owner.key)
    assert not (tmp_path / "bundle").exists()


def test_a_failed_republish_leaves_no_manifest_and_the_next_one_completes(owner, published, monkeypatch):
    copy = publishing._copy
    calls = []

    def failing(*args):
        calls.append(args[1])
        if len(calls) == 1:  # the one object a republish of the same store copies: the checkpoint
            raise OSError("connection lost")
        return copy(*args)

    monkeypatch.setattr(publishing, "_copy", failing)
    with pytest.raises(OSError, match="connection lost"):
        publish(str(owner.store), str(owner.checkpoint), str(published), owner.key)
    assert_nothing_committed(published)
    monkeypatch.setattr(publishing, "_copy", copy)
    publish(str(owner.store), str(owner.checkpoint), str(published), owner.key)
    verify_bundle(str(published), signer=owner.signer)
    assert not (published / PENDING).exists()


def test_the_command_line_publishes_and_reports_a_refusal_in_one_line(owner, tmp_path, monkeypatch, capsys):
    """--stage publish writes the bundle and the signer file; a refusal is one line and exit code 2."""
    monkeypatch.chdir(tmp_path)
    options = ["--key", str(owner.key_file), "--store", str(owner.store), "--encrypted-weights", str(owner.checkpoint)]
    signer_file = tmp_path / "signer.json"
    assert run_main(["--stage", "publish", *options, "--bundle", "bundle", "--signer", str(signer_file)]) == 0
    assert "the signer file" in capsys.readouterr().out
    assert verify_bundle("bundle", signer=owner.signer) and signer_file.exists()
    (tmp_path / "bundle" / "notes.txt").write_text("mine")
    assert run_main(["--stage", "publish", *options, "--bundle", "bundle", "--signer", str(signer_file)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: bundle/notes.txt: no publish of this owner put this here; refusing to publish into a folder with other files"]


# --- SIGKILL at every write step -----------------------------------------------------------------

KILL_DRIVER = r'''
"""Publish STORE into TARGET (reset from TEMPLATE, or empty) again and again, SIGKILLing a forked
child at write step n = 1, 2, ...; after each kill, report what it left and whether the next publish
completes. Prints the reports as one JSON list."""
import hashlib, json, os, shutil, signal, sys
from pathlib import Path

import contract.bundle
from contract.bundle import CHECKPOINT, DATASET, MANIFEST, SIGNATURE, verify_bundle
from contract.canonical import canonical_checkpoint_header, canonical_store_object, is_metadata, parse_safetensors_header
from contract.errors import UserError
from fsspec.implementations.local import LocalFileSystem
from pipeline import bundle as publishing
from pipeline.keys import load

store, checkpoint, template, target, key_path = sys.argv[1:6]
key = load(key_path)
steps = []
kill_at = 0


def step(what):
    steps.append(what)
    if len(steps) == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


def tripwire(function, what):
    def wrapped(*args, **kwargs):
        step(what)
        return function(*args, **kwargs)
    return wrapped


def chunks(fs, path, start=0, read=publishing.read_chunks):
    for i, chunk in enumerate(read(fs, path, start)):
        if i:
            step("between chunks")
        yield chunk


def publish_in_child(n):
    """Publish in a forked child, killed at step n (0: never): its wait status and steps."""
    global kill_at
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            kill_at = n
            contract.bundle.CHUNK = 256 << 10  # the checkpoint takes several chunks
            publishing.put_atomic = tripwire(publishing.put_atomic, "put")
            publishing._copy = tripwire(publishing._copy, "copy")
            publishing.read_chunks = chunks
            LocalFileSystem.rm_file = tripwire(LocalFileSystem.rm_file, "remove")
            LocalFileSystem.mv = tripwire(LocalFileSystem.mv, "move")
            os.replace = tripwire(os.replace, "rename")
            publishing.publish(store, checkpoint, target, key)
            Path(target + ".steps").write_text(json.dumps(steps))
            code = 0
        finally:
            os._exit(code)
    return os.waitpid(pid, 0)[1]


def digests(root):
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            found[os.path.relpath(path, root)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return found


def check(signer):
    try:
        verify_bundle(target, signer=signer)
    except UserError as error:
        return str(error)
    return "ok"


def reset():
    shutil.rmtree(target, ignore_errors=True)
    if template != "-":
        shutil.copytree(template, target)


old = digests(template) if template != "-" else {}
reset()
assert publish_in_child(0) == 0, "publish without a kill failed"
new = digests(target)  # what a publish writes: the store's objects in closed form
planned = json.loads(Path(target + ".steps").read_text())
reports = [{"n": 0, "step": "none", "killed": False, "after": check(key.signer()), "torn": [], "again": "ok"}]
for n in range(1, len(planned) + 1):
    reset()
    status = publish_in_child(n)
    present = digests(target)
    torn = sorted(
        name for name, digest in present.items()
        if not any(part.endswith(".partial") for part in name.split("/"))
        and name not in publishing.CONTROL
        and digest not in (new.get(name), old.get(name))
    )
    report = {
        "n": n,
        "step": planned[n - 1],
        "killed": os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL,
        "manifest": MANIFEST in present,
        "after": check(key.signer()),
        "torn": torn,
    }
    try:
        publishing.publish(store, checkpoint, target, key)
        report["again"] = check(key.signer())
    except UserError as error:
        report["again"] = f"publish failed: {error}"
    reports.append(report)
print(json.dumps(reports))
'''


@pytest.mark.slow  # a publish killed at each of its writes, a process each: ~4-8 s
@pytest.mark.parametrize("scenario", ["first-publish", "republish"])
def test_sigkill_at_any_write_step_leaves_no_manifest_or_a_complete_bundle(owner, published, tmp_path, scratch, scenario):
    """Killed at every write step in turn (before each put, copy, rename and removal, and between the
    chunks of a copy): the bundle folder has no manifest, or a complete bundle the signer verifies;
    no object is torn under its name; and the next publish completes and verifies."""
    driver = tmp_path / "driver.py"
    driver.write_text(KILL_DRIVER)
    template = "-" if scenario == "first-publish" else str(shutil.copytree(published, scratch / "template"))
    store = owner.store if scenario == "first-publish" else owner.fewer  # republish: stale objects to remove
    result = subprocess.run(
        [sys.executable, str(driver), str(store), str(owner.checkpoint), template, str(scratch / "target"), str(owner.key_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    reports = json.loads(result.stdout.splitlines()[-1])
    assert reports[0]["after"] == "ok"  # the run without a kill
    kills = reports[1:]
    kinds = {report["step"] for report in kills}
    assert {"put", "copy", "rename", "between chunks"} <= kinds
    if scenario == "republish":
        assert {"move", "remove"} <= kinds
    assert len(kills) > (40 if scenario == "first-publish" else 20)
    for report in kills:
        assert report["killed"], report
        assert report["torn"] == [], report
        if report["manifest"]:
            assert report["after"] == "ok", report  # the last complete bundle, signed
        else:
            assert report["after"].endswith("no manifest.json: not a bundle, or its publication did not finish"), report
        assert report["again"] == "ok", report


# --- object storage ------------------------------------------------------------------------------


def training_dataset(bundle: str, storage_options: dict | None = None):
    """The cloud's training dataset over the bundle's train split, with its loading transforms, pinned to the
    bundle's manifest as a run pins it after verifying the bundle."""
    import fsspec
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    with fsspec.open(f"{bundle}/{MANIFEST}", "rb", **(storage_options or {})) as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    init_default_scope("mmseg")
    pipeline = [dict(type="LoadZarrImage"), dict(type="LoadZarrAnnotations")]
    dataset = dict(type="ZarrSegDataset", bundle=bundle, manifest_sha256=digest, split="train", pipeline=pipeline)
    return DATASETS.build(dict(dataset, storage_options=storage_options or {}))


@pytest.mark.slow  # a local S3 server: ~6 s
def test_publish_and_verify_on_s3(owner, s3_bucket, s3_options):
    """The same publish and check through fsspec on an S3 bucket: signed, reused on republish, a
    damaged remote shard refused, and the cloud's data loader reads what the owner encrypted."""
    import s3fs

    url = f"{s3_bucket}/bundle"
    summary = publish(str(owner.store), str(owner.checkpoint), url, owner.key, storage_options=s3_options)
    fs = s3fs.S3FileSystem(**s3_options)
    prefix = url.removeprefix("s3://") + "/"
    remote = {path.removeprefix(prefix): fs.cat_file(path) for path in fs.find(url)}
    assert remote.pop(PENDING, None) is None
    manifest = Manifest.parse(remote.pop(MANIFEST), MANIFEST)
    remote.pop(SIGNATURE)
    assert remote == expected_bundle(owner.store, owner.checkpoint)
    assert {name: e.to_json() for name, e in manifest.objects.items()} == {name: entry(data) for name, data in remote.items()}
    assert summary.copied == len(remote)

    fs.pipe_file(f"{s3_bucket}/bundle-old/evil.py", b"a sibling prefix, no part of the bundle")
    assert verify_bundle(url, signer=owner.signer, storage_options=s3_options).signer == owner.signer.fingerprint
    check_published(url, owner.key, storage_options=s3_options)
    again = publish(str(owner.store), str(owner.checkpoint), url, owner.key, storage_options=s3_options)
    assert again.copied == 1  # the checkpoint; every other object is reused

    remote_data = training_dataset(url, storage_options=s3_options)
    local = zarr.open_group(owner.store, mode="r")["train"]
    assert len(remote_data) == SPLITS["train"]
    remote_sample = remote_data[0]  # one sample: moto answers slowly
    assert (remote_sample["img"] == local["images"][0]).all()
    assert (remote_sample["gt_seg_map"] == local["labels"][0]).all()

    shard = f"{url}/{DATASET}/{SHARD}"
    data = bytearray(fs.cat_file(shard))
    data[10] ^= 0x80
    fs.pipe_file(shard, bytes(data))
    with pytest.raises(UserError, match=f"{DATASET}/{SHARD}: sha256 .* is not the manifest's"):
        verify_bundle(url, signer=owner.signer, storage_options=s3_options)

    fs.pipe_file(f"{url}/notes.txt", b"the user's")
    with pytest.raises(PipelineError, match=f"{url}/notes.txt: no publish of this owner put this here"):
        publish(str(owner.store), str(owner.checkpoint), url, owner.key, storage_options=s3_options)
    assert fs.cat_file(f"{url}/notes.txt") == b"the user's"


def test_the_key_never_reaches_s3(owner, store_copy, s3_bucket, s3_options):
    """An upload that fails the scan is aborted: no object of the bucket holds the key, and no manifest."""
    import s3fs

    (store_copy / SHARD).write_bytes((store_copy / SHARD).read_bytes() + base64.b64encode(owner.key.secret))
    url = f"{s3_bucket}/bundle"
    with pytest.raises(PipelineError, match=f"{SHARD}: contains the secret key in (URL-safe )?base64"):
        publish(str(store_copy), str(owner.checkpoint), url, owner.key, storage_options=s3_options)
    fs = s3fs.S3FileSystem(**s3_options)
    fs.invalidate_cache()
    names = [path.removeprefix(s3_bucket.removeprefix("s3://") + "/") for path in fs.find(s3_bucket)]
    assert MANIFEST not in [name.removeprefix("bundle/") for name in names]
    assert names  # objects before it were copied
    patterns = owner.key.secret_patterns().values()
    for path in fs.find(s3_bucket):
        data = fs.cat_file(path)
        assert not any(pattern in data for pattern in patterns), path
    uploads = fs.call_s3("list_multipart_uploads", Bucket=s3_bucket.removeprefix("s3://"))
    assert not uploads.get("Uploads")


# --- the cloud needs nothing but the bundle and the signer file ------------------------------------

AUDIT = SimpleNamespace(installed=False, on=False, opened=[])


def record_opened(event: str, args: tuple) -> None:
    """An audit hook: while on, every path opened or listed (by any thread)."""
    if AUDIT.on and event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes)):
        AUDIT.opened.append(os.fsdecode(args[0]))


def test_the_cloud_verifies_and_loads_data_with_the_bundle_alone(owner, tmp_path, tmp_path_factory):
    """The cloud's verification and data loading open nothing outside the bundle but the signer file,
    and work with the owner's files gone. (In this process: audit hooks cannot be removed, so the hook
    records only while this test turns it on.)"""
    from contract.signing import load_signer

    private, path = tmp_path / "owner", tmp_path / "bundle"
    store = Path(shutil.copytree(owner.store, private / "dataset.zarr"))
    checkpoint = Path(shutil.copyfile(owner.checkpoint, private / "backbone.safetensors"))
    publish(str(store), str(checkpoint), str(path), owner.key)
    signer_file = save_signer(owner.signer, tmp_path / "cloud" / "signer.json")
    shutil.rmtree(private)

    if not AUDIT.installed:
        sys.addaudithook(record_opened)
        AUDIT.installed = True
    AUDIT.opened.clear()
    AUDIT.on = True
    try:
        verified = verify_bundle(str(path), signer=load_signer(signer_file))
        data = training_dataset(str(path))
        loaded = [data[i]["gt_seg_map"].shape for i in range(len(data))]
    finally:
        AUDIT.on = False

    assert verified.signer == owner.signer.fingerprint
    assert loaded == [(32, 64)] * SPLITS["train"]
    root = tmp_path_factory.getbasetemp().resolve()  # this session's files, the owner's among them
    touched = {Path(os.path.realpath(p)) for p in AUDIT.opened}
    touched = {p for p in touched if p.is_relative_to(root)}
    bundle = path.resolve()
    assert {bundle / MANIFEST, bundle / SIGNATURE, bundle / DATASET / SHARD} <= touched
    assert sorted(str(p) for p in touched if not p.is_relative_to(bundle)) == [str(signer_file.resolve())]
