"""The contract both sides read: every format parses what it writes, and refuses anything else."""

import copy
import json
import re

import pytest

from contract.errors import UserError
from contract.formats import (
    CheckpointMetadata,
    CipherSpec,
    FormatError,
    Manifest,
    ModelProvenance,
    Normalization,
    ObjectEntry,
    ShardRecord,
    Skip,
    SplitAttributes,
    StoreAttributes,
)
from contract.signing import Signature, Signer, load_signer, save_signer
from pipeline.keys import generate

KEY_ID = "0123456789abcdef0123456789abcdef"
SHA = "ab" * 32
SPEC = CipherSpec(KEY_ID, 16, True)
NORM = Normalization((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
SKIP = Skip("train", "aachen_000000_000019", "leftImg8bit/train/aachen/x.png", "not a PNG")


def test_format_errors_are_user_errors():
    """A damaged or foreign object is the user's problem: reported in one line, not as a crash."""
    assert issubclass(FormatError, UserError)


# --- round trips --------------------------------------------------------------------------------

STORES = [
    StoreAttributes(SPEC, 2, {"train": 3, "val": 2, "test": 1}, complete=True, skipped=(SKIP,)),
    StoreAttributes(None, 8, {"val": 1}),  # plain and incomplete
]
CHECKPOINTS = [
    CheckpointMetadata(SPEC, NORM.uniform(), NORM, source_arch="vit_tiny_patch16_224", source_sha256=SHA),
    CheckpointMetadata(None, NORM, NORM),  # plain, without the optional fields
]
MANIFESTS = [
    Manifest(
        cipher=cipher,
        channel_order="RGB",
        normalization=NORM,
        splits={"train": 3, "val": 2},
        objects={"backbone.safetensors": ObjectEntry(10, SHA), "dataset.zarr/zarr.json": ObjectEntry(0, "0" * 64)},
        signer="f" * 32,
        created="2024-01-01T00:00:00+00:00",
        tool_version="0.1.0",
    )
    for cipher in (SPEC, None)
]


@pytest.mark.parametrize("spec", [SPEC, CipherSpec(KEY_ID, 1, False)])
def test_cipher_spec_round_trips(spec):
    """parse(to_json()) gives the spec back; JSON null stands for plain data."""
    assert CipherSpec.parse(json.loads(json.dumps(spec.to_json())), "x") == spec
    assert CipherSpec.parse(None, "x") is None


def test_normalization_round_trips():
    """Integers are read as floats; the stored form gives the same normalization back."""
    assert Normalization.parse(**NORM.to_json(), where="x") == NORM
    assert Normalization.parse([1, 2, 3], [4, 5, 6], "x") == Normalization((1.0, 2.0, 3.0), (4.0, 5.0, 6.0))


@pytest.mark.parametrize("attributes", STORES, ids=["encrypted", "plain"])
def test_store_attributes_round_trip(attributes):
    assert StoreAttributes.parse(json.loads(json.dumps(attributes.to_json())), "x") == attributes


def test_split_attributes_and_skip_round_trip():
    split = SplitAttributes(("a", "b"), False)
    assert SplitAttributes.parse(json.loads(json.dumps(split.to_json())), "x") == split
    assert Skip.parse(SKIP.to_json(), "x") == SKIP


def test_shard_record_round_trips():
    record = ShardRecord(("a", "b"), SHA, {"train/images/c/0/0/0/0": ObjectEntry(12, SHA)}, (SKIP,))
    assert ShardRecord.parse(json.loads(json.dumps(record.to_json())), "x") == record


@pytest.mark.parametrize("metadata", CHECKPOINTS, ids=["encrypted", "plain"])
def test_checkpoint_metadata_round_trips(metadata):
    """The safetensors metadata is a map of strings; parse(to_metadata()) gives the metadata back."""
    stored = metadata.to_metadata()
    assert all(isinstance(value, str) for value in stored.values())
    assert CheckpointMetadata.parse(stored, "x") == metadata


@pytest.mark.parametrize("cipher", [SPEC, None], ids=["encrypted", "plain"])
def test_model_provenance_round_trips(cipher):
    provenance = ModelProvenance(cipher, NORM, "proposed")
    assert ModelProvenance.parse(json.loads(json.dumps(provenance.to_json())), "x") == provenance


@pytest.mark.parametrize("manifest", MANIFESTS, ids=["encrypted", "plain"])
def test_manifest_round_trips(manifest):
    assert Manifest.parse(manifest.to_bytes(), "x") == manifest


# --- rejections ---------------------------------------------------------------------------------


def edited(document, path, value=None, *, delete=False):
    """A deep copy of ``document`` with the field at ``path`` (a tuple of keys) set or deleted."""
    document = copy.deepcopy(document)
    *parents, last = path
    target = document
    for name in parents:
        target = target[name]
    if delete:
        del target[last]
    else:
        target[last] = value
    return document


STORE = STORES[0].to_json()
RECORD = ShardRecord(("a",), SHA, {"train/images/c/0/0/0/0": ObjectEntry(12, SHA)}).to_json()
PROVENANCE = ModelProvenance(SPEC, NORM, "proposed").to_json()
MANIFEST = json.loads(MANIFESTS[0].to_bytes())
SPLIT = SplitAttributes(("a", "b"), True).to_json()

# (id, parse, document): each document must be refused with a FormatError.
BAD = [
    # CipherSpec
    ("cipher-not-object", CipherSpec.parse, ["x"]),
    ("cipher-missing-key-id", CipherSpec.parse, edited(SPEC.to_json(), ("key_id",), delete=True)),
    ("cipher-short-key-id", CipherSpec.parse, edited(SPEC.to_json(), ("key_id",), KEY_ID[:-1])),
    ("cipher-upper-case-key-id", CipherSpec.parse, edited(SPEC.to_json(), ("key_id",), KEY_ID.upper())),
    ("cipher-non-hex-key-id", CipherSpec.parse, edited(SPEC.to_json(), ("key_id",), "g" * 32)),
    ("cipher-bool-block-size", CipherSpec.parse, edited(SPEC.to_json(), ("block_size",), True)),
    ("cipher-float-block-size", CipherSpec.parse, edited(SPEC.to_json(), ("block_size",), 16.0)),
    ("cipher-zero-block-size", CipherSpec.parse, edited(SPEC.to_json(), ("block_size",), 0)),
    ("cipher-str-flag", CipherSpec.parse, edited(SPEC.to_json(), ("negative_positive",), "false")),
    ("cipher-int-flag", CipherSpec.parse, edited(SPEC.to_json(), ("negative_positive",), 0)),
    # StoreAttributes
    ("store-wrong-format", StoreAttributes.parse, edited(STORE, ("format",), "cipherseg-bundle")),
    ("store-no-format", StoreAttributes.parse, edited(STORE, ("format",), delete=True)),
    ("store-old-version", StoreAttributes.parse, edited(STORE, ("format_version",), 1)),
    ("store-str-version", StoreAttributes.parse, edited(STORE, ("format_version",), "2")),
    ("store-float-version", StoreAttributes.parse, edited(STORE, ("format_version",), 2.0)),
    ("store-bool-shard-size", StoreAttributes.parse, edited(STORE, ("shard_size",), True)),
    ("store-missing-shard-size", StoreAttributes.parse, edited(STORE, ("shard_size",), delete=True)),
    ("store-bool-count", StoreAttributes.parse, edited(STORE, ("splits", "train"), True)),
    ("store-zero-count", StoreAttributes.parse, edited(STORE, ("splits", "train"), 0)),
    ("store-unknown-split", StoreAttributes.parse, edited(STORE, ("splits", "extra"), 1)),
    ("store-str-complete", StoreAttributes.parse, edited(STORE, ("complete",), "true")),
    ("store-missing-complete", StoreAttributes.parse, edited(STORE, ("complete",), delete=True)),
    ("store-missing-channel-order", StoreAttributes.parse, edited(STORE, ("channel_order",), delete=True)),
    ("store-bad-cipher", StoreAttributes.parse, edited(STORE, ("cipher", "key_id"), "x")),
    ("store-bad-skip", StoreAttributes.parse, edited(STORE, ("skipped",), [{"split": "train"}])),
    # SplitAttributes
    ("split-int-names", SplitAttributes.parse, edited(SPLIT, ("names",), [1, 2])),
    ("split-str-labelled", SplitAttributes.parse, edited(SPLIT, ("labelled",), "yes")),
    ("split-missing-labelled", SplitAttributes.parse, edited(SPLIT, ("labelled",), delete=True)),
    # ShardRecord
    ("record-wrong-format", ShardRecord.parse, edited(RECORD, ("format",), "cipherseg-dataset")),
    ("record-new-version", ShardRecord.parse, edited(RECORD, ("format_version",), 2)),
    ("record-bool-version", ShardRecord.parse, edited(RECORD, ("format_version",), True)),
    ("record-int-names", ShardRecord.parse, edited(RECORD, ("names",), [1])),
    ("record-missing-names", ShardRecord.parse, edited(RECORD, ("names",), delete=True)),
    ("record-short-inputs", ShardRecord.parse, edited(RECORD, ("inputs",), SHA[:-1])),
    ("record-upper-case-sha", ShardRecord.parse, edited(RECORD, ("objects", "train/images/c/0/0/0/0", "sha256"), SHA.upper())),
    ("record-bool-size", ShardRecord.parse, edited(RECORD, ("objects", "train/images/c/0/0/0/0", "size"), True)),
    ("record-negative-size", ShardRecord.parse, edited(RECORD, ("objects", "train/images/c/0/0/0/0", "size"), -1)),
    ("record-missing-sha", ShardRecord.parse, edited(RECORD, ("objects", "train/images/c/0/0/0/0", "sha256"), delete=True)),
    # ModelProvenance
    ("model-wrong-format", ModelProvenance.parse, edited(PROVENANCE, ("format",), "cipherseg-checkpoint")),
    ("model-bool-version", ModelProvenance.parse, edited(PROVENANCE, ("format_version",), True)),
    ("model-unknown-method", ModelProvenance.parse, edited(PROVENANCE, ("method",), "mine")),
    ("model-missing-normalization", ModelProvenance.parse, edited(PROVENANCE, ("normalization",), delete=True)),
    ("model-zero-std", ModelProvenance.parse, edited(PROVENANCE, ("normalization", "std"), [1, 0, 1])),
    ("model-missing-channel-order", ModelProvenance.parse, edited(PROVENANCE, ("channel_order",), delete=True)),
]


@pytest.mark.parametrize("parse, document", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_documents_with_a_wrong_field_are_refused(parse, document):
    """Wrong types (bool is not an int, a string is not a bool), missing fields, foreign formats and
    versions, bad digests and key ids: a FormatError naming the object."""
    with pytest.raises(FormatError, match=r"^where[: ]"):
        parse(document, "where")


BAD_MANIFESTS = [
    ("wrong-format", ("format",), "cipherseg-dataset"),
    ("old-version", ("format_version",), 1),
    ("str-version", ("format_version",), "2"),
    ("bool-cipher", ("cipher",), True),
    ("short-key-id", ("cipher", "key_id"), "abc"),
    ("str-channel-order", ("channel_order",), 3),
    ("zero-std", ("normalization", "std"), [0, 0, 0]),
    ("negative-std", ("normalization", "std"), [1, -1, 1]),
    ("two-means", ("normalization", "mean"), [1, 2]),
    ("bool-mean", ("normalization", "mean"), [True, 1, 1]),
    ("splits-list", ("splits",), ["train"]),
    ("bool-split-count", ("splits",), {"train": True}),
    ("str-split-count", ("splits",), {"train": "3"}),
    ("unknown-split", ("splits",), {"extra": 3}),
    ("bad-sha", ("objects", "backbone.safetensors", "sha256"), "not a digest"),
    ("bool-size", ("objects", "backbone.safetensors", "size"), False),
    ("objects-list", ("objects",), []),
    ("int-signer", ("signer",), 1),
    ("int-created", ("created",), 20240101),
]


@pytest.mark.parametrize("path, value", [case[1:] for case in BAD_MANIFESTS], ids=[case[0] for case in BAD_MANIFESTS])
def test_manifests_with_a_wrong_field_are_refused(path, value):
    with pytest.raises(FormatError, match=r"^manifest[: ]"):
        Manifest.parse(json.dumps(edited(MANIFEST, path, value)).encode(), "manifest")


@pytest.mark.parametrize("field", ["cipher", "channel_order", "normalization", "splits", "objects", "signer", "created", "tool_version"])
def test_manifests_missing_a_field_are_refused(field):
    with pytest.raises(FormatError, match=r"^manifest[: ]"):
        Manifest.parse(json.dumps(edited(MANIFEST, (field,), delete=True)).encode(), "manifest")


@pytest.mark.parametrize("data", [b"", b"\xff\xfe", b'{"format": "cipherseg-bundle"', b"[]", b"null"])
def test_a_manifest_that_is_not_a_json_object_is_refused(data):
    with pytest.raises(FormatError, match=r"^manifest[: ]"):
        Manifest.parse(data, "manifest")


@pytest.mark.parametrize("std", [[1, 1, 0], [1, -2, 1], [0.0, 0.0, 0.0]])
def test_normalization_with_a_non_positive_std_is_refused(std):
    """Images are divided by std: a zero or negative one is never valid."""
    with pytest.raises(FormatError, match="std .* is not positive"):
        Normalization.parse([0, 0, 0], std, "x")


@pytest.mark.parametrize("mean, std", [([1, 2], [1, 1, 1]), ([1, 2, 3], "1,1,1"), ([1, 2, "3"], [1, 1, 1]), ([1, 2, 3], [1, True, 1])])
def test_normalization_needs_three_numbers(mean, std):
    with pytest.raises(FormatError, match="three numbers"):
        Normalization.parse(mean, std, "x")


CHECKPOINT = CHECKPOINTS[0].to_metadata()


@pytest.mark.parametrize(
    "change",
    [
        {"format": "cipherseg-bundle"},
        {"format_version": "2"},
        {"format_version": "true"},
        {"encrypted": "1"},
        {"encrypted": "yes"},
        {"block_size": "true"},
        {"block_size": "sixteen"},
        {"negative_positive": "1"},
        {"key_id": "abc"},
        {"norm_std": "[1, 0, 1]"},
        {"norm_mean": '"127"'},
        {"source_sha256": "abc"},
    ],
    ids=lambda change: "-".join(f"{k}={v}" for k, v in change.items()),
)
def test_checkpoint_metadata_with_a_wrong_field_is_refused(change):
    with pytest.raises(FormatError, match="^ckpt"):
        CheckpointMetadata.parse({**CHECKPOINT, **change}, "ckpt")


@pytest.mark.parametrize(
    "field",
    ["format", "encrypted", "norm_mean", "norm_std", "source_norm_mean", "source_norm_std", "channel_order",
     "key_id", "block_size", "negative_positive"],
)
def test_checkpoint_metadata_missing_a_field_is_refused(field):
    """An encrypted checkpoint needs its whole cipher; every checkpoint its normalizations."""
    metadata = {name: value for name, value in CHECKPOINT.items() if name != field}
    with pytest.raises(FormatError, match="^ckpt" if field == "format" else f"^ckpt.*lacks {field!r}"):
        CheckpointMetadata.parse(metadata, "ckpt")
    with pytest.raises(FormatError, match="not a cipherseg checkpoint"):
        CheckpointMetadata.parse(None, "ckpt")


# --- the signer file and the signature -----------------------------------------------------------


@pytest.fixture(scope="module")
def owners():
    return generate(), generate()


def test_signer_and_signature_round_trip(owners):
    key = owners[0]
    signer, signature = key.signer(), key.sign(b"manifest")
    assert Signer.parse(signer.to_bytes(), "x") == signer
    assert Signature.parse(signature.to_bytes(), "x") == signature
    assert signature.signer == signer.fingerprint == key.signer().fingerprint  # stable per key
    assert len(signer.public_key) == 32 and len(signature.signature) == 64


def test_a_signature_verifies_only_its_message_with_its_signer(owners):
    """A flipped bit anywhere in the message or the signature, or another owner's signer: not verified."""
    key, other = owners
    message = b'{"format": "cipherseg-bundle", "objects": {}}'
    signature = key.sign(message)
    assert key.signer().verifies(message, signature)
    for i in range(len(message)):
        flipped = bytearray(message)
        flipped[i] ^= 0x01
        assert not key.signer().verifies(bytes(flipped), signature)
    for i in range(len(signature.signature)):
        flipped = bytearray(signature.signature)
        flipped[i] ^= 0x80
        assert not key.signer().verifies(message, Signature(signature.signer, bytes(flipped)))
    assert not other.signer().verifies(message, signature)
    assert not key.signer().verifies(message, other.sign(message))
    assert not key.signer().verifies(message + b" ", signature)


def signer_document(key):
    return json.loads(key.signer().to_bytes())


def signature_document(key):
    return json.loads(key.sign(b"m").to_bytes())


@pytest.mark.parametrize(
    "path, value",
    [
        (("format",), "cipherseg-signature"),
        (("format_version",), 2),
        (("format_version",), True),
        (("algorithm",), "rsa"),
        (("public_key",), "AAAA"),  # 3 bytes
        (("public_key",), "not base64!"),
        (("public_key",), 12),
        (("fingerprint",), "0" * 32),  # does not match the public key
    ],
    ids=lambda value: str(value),
)
def test_a_bad_signer_file_is_refused(owners, path, value):
    with pytest.raises(FormatError, match="^signer.json: "):
        Signer.parse(json.dumps(edited(signer_document(owners[0]), path, value)).encode(), "signer.json")


def test_a_signer_file_with_another_owners_public_key_is_refused(owners):
    """The fingerprint binds the public key: swapping only the key is seen."""
    document = signer_document(owners[0])
    document["public_key"] = signer_document(owners[1])["public_key"]
    with pytest.raises(FormatError, match="fingerprint does not match"):
        Signer.parse(json.dumps(document).encode(), "signer.json")


@pytest.mark.parametrize(
    "path, value",
    [
        (("format",), "cipherseg-signer"),
        (("format_version",), 0),
        (("algorithm",), None),
        (("signature",), "AAAA"),
        (("signature",), None),
        (("signer",), 5),
    ],
    ids=lambda value: str(value),
)
def test_a_bad_signature_file_is_refused(owners, path, value):
    with pytest.raises(FormatError, match="^manifest.sig: "):
        Signature.parse(json.dumps(edited(signature_document(owners[0]), path, value)).encode(), "manifest.sig")


def test_load_signer_names_a_missing_or_foreign_file(owners, tmp_path):
    path = save_signer(owners[0].signer(), tmp_path / "signer.json")
    assert load_signer(path) == owners[0].signer()
    with pytest.raises(UserError, match=f"^{re.escape(str(tmp_path))}/nowhere.json: no signer file here"):
        load_signer(tmp_path / "nowhere.json")
    with pytest.raises(UserError, match=f"^{re.escape(str(tmp_path))}: no signer file here"):
        load_signer(tmp_path)  # a folder
    (tmp_path / "big.json").write_bytes(b" " * 5000)
    with pytest.raises(FormatError, match="too large for a signer file"):
        load_signer(tmp_path / "big.json")
    (tmp_path / "key.json").write_text('{"format": "cipherseg-key"}')
    with pytest.raises(FormatError, match="not a cipherseg-signer"):
        load_signer(tmp_path / "key.json")


def test_save_signer_never_replaces_another_owners_signer(owners, tmp_path):
    """Saving the same signer again is a no-op; another owner's signer file stays as it was."""
    path = tmp_path / "owner" / "signer.json"
    assert save_signer(owners[0].signer(), path) == path
    before = path.read_bytes()
    assert save_signer(owners[0].signer(), path) == path
    with pytest.raises(UserError, match=f"^{re.escape(str(path))}: holds another owner's signer; refusing to replace it"):
        save_signer(owners[1].signer(), path)
    assert path.read_bytes() == before
    assert path.stat().st_mode & 0o777 == 0o644  # public: meant to be handed out


def test_save_signer_refuses_to_replace_a_file_that_is_no_signer(owners, tmp_path):
    path = tmp_path / "signer.json"
    path.write_text("my notes")
    with pytest.raises(FormatError):
        save_signer(owners[0].signer(), path)
    assert path.read_text() == "my notes"
