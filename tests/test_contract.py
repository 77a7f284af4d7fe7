"""The contract both sides read: every format parses what it writes and refuses anything else (an unknown
field, a loose type, a value out of bounds, hostile JSON), with one FormatError naming the object; its
schemas are committed and current; its registries serve both sides."""

import base64
import copy
import json
import re

import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.codecs import ZstdCodec

from contract.canonical import canonical_checkpoint_header, parse_safetensors_header
from contract.errors import FormatError, UserError, one_line, run_reporting
from contract.formats import (
    AcceptedBundles,
    ArrayMetadata,
    BundleReference,
    CheckpointMetadata,
    CipherSpec,
    DatasetDescription,
    FixedLayout,
    KeyFile,
    Manifest,
    ModelProvenance,
    Normalization,
    ObjectEntry,
    PendingRecord,
    RaggedLayout,
    ShardRecord,
    Skip,
    SplitAttributes,
    SplitLayout,
    SplitGroup,
    StoreAttributes,
    StoreGroup,
)
from contract.registry import FAMILIES, METHODS, FirstLayer, method_trained_on, why_no_fold
from contract.schemas import FOLDER, schemas, stale
from contract.signing import Signature, Signer, load_signer, save_signer
from pipeline.keys import generate

KEY_ID = "0123456789abcdef0123456789abcdef"
SHA = "ab" * 32
SPEC = CipherSpec(key_id=KEY_ID, block_size=16, negative_positive=True)
NORM = Normalization(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
SKIP = Skip(split="train", name="aachen_000000_000019", file="leftImg8bit/train/aachen/x.png", reason="not a PNG")
REFERENCE = BundleReference(location="s3://bucket/bundle", manifest_sha256=SHA, sequence=3, signer=KEY_ID)


def array_metadata(tmp_path) -> bytes:
    """An array's zarr.json exactly as zarr writes it for the store."""
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    group.create_array(
        "images", shape=(3, 32, 64, 3), dtype="uint8", chunks=(1, 32, 64, 3), shards=(2, 32, 64, 3),
        compressors=ZstdCodec(level=1, checksum=True), fill_value=0, dimension_names=("sample", "y", "x", "channel"),
    )  # fmt: skip
    return (tmp_path / "s.zarr" / "images" / "zarr.json").read_bytes()


# --- round trips --------------------------------------------------------------------------------

DATASET = DatasetDescription(name="roads", classes=("road", "car"), palette=((1, 2, 3), (4, 5, 6)), label_map=((0, 255), (7, 0)))
FIXED = SplitLayout(samples=3, labelled=True, layout=FixedLayout(height=32, width=64))
RAGGED = SplitLayout(samples=2, labelled=True, layout=RaggedLayout(chunk_pixels=1024, shard_chunks=3))
STORES = [
    StoreAttributes(
        cipher=SPEC, dataset=DATASET, padded_to=16, shard_size=2, complete=True, skipped=(SKIP,),
        splits={"train": FIXED, "val": RAGGED, "test": SplitLayout(samples=1, labelled=False, layout=FixedLayout(height=16, width=16))},
    ),  # fmt: skip
    StoreAttributes(cipher=None, dataset=DATASET, padded_to=1, resize=(2048, 512), shard_size=8, splits={"train_extra": RAGGED}),  # plain, incomplete
]
CHECKPOINTS = [
    CheckpointMetadata.of(SPEC, NORM.uniform(), NORM, source_arch="vit_tiny_patch16_224", source_sha256=SHA),
    CheckpointMetadata.of(None, NORM, NORM),  # plain, without the optional fields
]
MANIFESTS = [
    Manifest(
        cipher=cipher,
        channel_order="RGB",
        normalization=NORM,
        splits={"train": 3, "val": 2},
        objects={"backbone.safetensors": ObjectEntry(size=10, sha256=SHA), "dataset.zarr/zarr.json": ObjectEntry(size=0, sha256="0" * 64)},
        signer="f" * 32,
        sequence=7,
        created="2024-01-01T00:00:00+00:00",
        tool_version="0.1.0",
    )
    for cipher in (SPEC, None)
]
DOCUMENTS = [
    *STORES,
    *MANIFESTS,
    SplitAttributes(names=("a", "b"), sizes=((17, 30), (0, 0))),
    StoreGroup(zarr_format=3, node_type="group", attributes=STORES[0]),
    SplitGroup(zarr_format=3, node_type="group", attributes=SplitAttributes(names=("a",), sizes=((32, 64),))),
    ShardRecord(names=("a", "b"), inputs=SHA, objects={"train/images/c/0/0/0/0": ObjectEntry(size=12, sha256=SHA)}, skipped=(SKIP,)),
    ModelProvenance(cipher=SPEC, normalization=NORM, method="proposed", bundle=REFERENCE),
    ModelProvenance(cipher=None, normalization=NORM, method="baseline"),
    KeyFile(secret="ab" * 32, key_id=KEY_ID, block_size=16, negative_positive=False),
    PendingRecord(signer=KEY_ID, sequence=2, objects=("backbone.safetensors",), signature=base64.b64encode(bytes(64)).decode()),
    AcceptedBundles(accepted={f"{KEY_ID} /data/bundle": 4}),
]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda d: type(d).__name__)
def test_every_document_round_trips(document):
    """parse(to_bytes()) gives the document back, and to_bytes() is stable (the closed form)."""
    parsed = type(document).parse(document.to_bytes(), "x")
    assert parsed == document and parsed.to_bytes() == document.to_bytes()


@pytest.mark.parametrize("metadata", CHECKPOINTS, ids=["encrypted", "plain"])
def test_checkpoint_metadata_round_trips(metadata):
    """The safetensors metadata is a map of strings; parse(to_metadata()) gives the metadata back."""
    stored = metadata.to_metadata()
    assert all(isinstance(value, str) for value in stored.values())
    assert CheckpointMetadata.parse_metadata(stored, "x") == metadata


def test_typed_views_of_the_checkpoint_metadata():
    encrypted, plain = CHECKPOINTS
    assert (encrypted.cipher, encrypted.normalization, encrypted.source_normalization) == (SPEC, NORM.uniform(), NORM)
    assert plain.cipher is None and not plain.is_encrypted


def test_the_array_metadata_zarr_writes_parses_and_zarr_reads_its_closed_form(tmp_path):
    written = array_metadata(tmp_path)
    array = ArrayMetadata.parse(written, "zarr.json")
    assert array.shape == (3, 32, 64, 3) and array.chunk_shape == (1, 32, 64, 3) and array.shard_shape == (2, 32, 64, 3)
    (tmp_path / "s.zarr" / "images" / "zarr.json").write_bytes(array.to_bytes())
    reopened = zarr.open_array(str(tmp_path / "s.zarr" / "images"), mode="r")
    assert (reopened.shape, reopened.chunks, reopened.shards) == ((3, 32, 64, 3), (1, 32, 64, 3), (2, 32, 64, 3))


def test_normalization_reads_integers_as_floats_and_makes_a_uniform_one():
    assert Normalization.parse(b'{"mean": [1, 2, 3], "std": [4, 5, 6]}', "x") == Normalization(mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0))
    assert NORM.uniform().mean == (sum(NORM.mean) / 3,) * 3


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
RECORD = DOCUMENTS[7].to_json()
PROVENANCE = DOCUMENTS[8].to_json()
MANIFEST = MANIFESTS[0].to_json()
SPLIT = SplitAttributes(names=("a", "b"), sizes=((1, 2), (3, 4))).to_json()
KEY = DOCUMENTS[10].to_json()

# (id, model, document): each must be refused with a FormatError naming the object.
BAD = [
    # CipherSpec
    ("cipher-not-object", CipherSpec, ["x"]),
    ("cipher-missing-key-id", CipherSpec, edited(SPEC.to_json(), ("key_id",), delete=True)),
    ("cipher-short-key-id", CipherSpec, edited(SPEC.to_json(), ("key_id",), KEY_ID[:-1])),
    ("cipher-upper-case-key-id", CipherSpec, edited(SPEC.to_json(), ("key_id",), KEY_ID.upper())),
    ("cipher-non-hex-key-id", CipherSpec, edited(SPEC.to_json(), ("key_id",), "g" * 32)),
    ("cipher-bool-block-size", CipherSpec, edited(SPEC.to_json(), ("block_size",), True)),
    ("cipher-float-block-size", CipherSpec, edited(SPEC.to_json(), ("block_size",), 16.0)),
    ("cipher-zero-block-size", CipherSpec, edited(SPEC.to_json(), ("block_size",), 0)),
    ("cipher-huge-block-size", CipherSpec, edited(SPEC.to_json(), ("block_size",), 10**30)),
    ("cipher-str-flag", CipherSpec, edited(SPEC.to_json(), ("negative_positive",), "false")),
    ("cipher-int-flag", CipherSpec, edited(SPEC.to_json(), ("negative_positive",), 0)),
    ("cipher-extra-field", CipherSpec, edited(SPEC.to_json(), ("note",), "hello")),
    # StoreAttributes
    ("store-wrong-format", StoreAttributes, edited(STORE, ("format",), "cipherseg-bundle")),
    ("store-no-format", StoreAttributes, edited(STORE, ("format",), delete=True)),
    ("store-old-version", StoreAttributes, edited(STORE, ("format_version",), 2)),
    ("store-str-version", StoreAttributes, edited(STORE, ("format_version",), "3")),
    ("store-float-version", StoreAttributes, edited(STORE, ("format_version",), 3.0)),
    ("store-bool-shard-size", StoreAttributes, edited(STORE, ("shard_size",), True)),
    ("store-missing-shard-size", StoreAttributes, edited(STORE, ("shard_size",), delete=True)),
    ("store-count-not-layout", StoreAttributes, edited(STORE, ("splits", "train"), 3)),
    ("store-bool-count", StoreAttributes, edited(STORE, ("splits", "train", "samples"), True)),
    ("store-zero-count", StoreAttributes, edited(STORE, ("splits", "train", "samples"), 0)),
    ("store-split-name-upper-case", StoreAttributes, edited(STORE, ("splits", "Extra"), FIXED.to_json())),
    ("store-split-name-traversal", StoreAttributes, edited(STORE, ("splits", "../x"), FIXED.to_json())),
    ("store-no-splits", StoreAttributes, edited(STORE, ("splits",), {})),
    ("store-unknown-layout", StoreAttributes, edited(STORE, ("splits", "train", "layout", "kind"), "buckets")),
    ("store-ragged-zero-chunk", StoreAttributes, edited(STORE, ("splits", "val", "layout", "chunk_pixels"), 0)),
    ("store-unpadded-size", StoreAttributes, edited(STORE, ("splits", "train", "layout", "height"), 33)),
    ("store-padded-off-block", StoreAttributes, edited(STORE, ("padded_to",), 8)),
    ("store-missing-dataset", StoreAttributes, edited(STORE, ("dataset",), delete=True)),
    ("store-palette-short", StoreAttributes, edited(STORE, ("dataset", "palette"), [[1, 2, 3]])),
    ("store-colour-out-of-range", StoreAttributes, edited(STORE, ("dataset", "palette", 0), [1, 2, 256])),
    ("store-class-two-lines", StoreAttributes, edited(STORE, ("dataset", "classes", 0), "a\nb")),
    ("store-other-ignore-index", StoreAttributes, edited(STORE, ("dataset", "ignore_index"), 0)),
    ("store-map-to-no-class", StoreAttributes, edited(STORE, ("dataset", "label_map"), [[0, 2]])),
    ("store-map-unsorted", StoreAttributes, edited(STORE, ("dataset", "label_map"), [[7, 0], [0, 255]])),
    ("store-map-twice", StoreAttributes, edited(STORE, ("dataset", "label_map"), [[7, 0], [7, 1]])),
    ("store-resize-one-side", StoreAttributes, edited(STORE, ("resize",), [512])),
    ("store-str-complete", StoreAttributes, edited(STORE, ("complete",), "true")),
    ("store-bgr", StoreAttributes, edited(STORE, ("channel_order",), "BGR")),
    ("store-bad-cipher", StoreAttributes, edited(STORE, ("cipher", "key_id"), "x")),
    ("store-bad-skip", StoreAttributes, edited(STORE, ("skipped",), [{"split": "train"}])),
    ("store-skip-traversal", StoreAttributes, edited(STORE, ("skipped", 0, "file"), "../../etc/passwd")),
    ("store-skip-two-lines", StoreAttributes, edited(STORE, ("skipped", 0, "reason"), "a\nb")),
    ("store-note", StoreAttributes, edited(STORE, ("note",), "hello")),
    ("store-note-in-cipher", StoreAttributes, edited(STORE, ("cipher", "note"), "hello")),
    # SplitAttributes
    ("split-int-names", SplitAttributes, edited(SPLIT, ("names",), [1, 2])),
    ("split-name-with-slash", SplitAttributes, edited(SPLIT, ("names",), ["a/b"])),
    ("split-name-dot-dot", SplitAttributes, edited(SPLIT, ("names",), [".."])),
    ("split-name-too-long", SplitAttributes, edited(SPLIT, ("names",), ["a" * 256])),
    ("split-missing-sizes", SplitAttributes, edited(SPLIT, ("sizes",), delete=True)),
    ("split-fewer-sizes", SplitAttributes, edited(SPLIT, ("sizes",), [[1, 2]])),
    ("split-negative-size", SplitAttributes, edited(SPLIT, ("sizes", 0), [-1, 2])),
    ("split-str-size", SplitAttributes, edited(SPLIT, ("sizes", 0), ["1", 2])),
    # ShardRecord
    ("record-wrong-format", ShardRecord, edited(RECORD, ("format",), "cipherseg-dataset")),
    ("record-new-version", ShardRecord, edited(RECORD, ("format_version",), 2)),
    ("record-bool-version", ShardRecord, edited(RECORD, ("format_version",), True)),
    ("record-int-names", ShardRecord, edited(RECORD, ("names",), [1])),
    ("record-missing-names", ShardRecord, edited(RECORD, ("names",), delete=True)),
    ("record-short-inputs", ShardRecord, edited(RECORD, ("inputs",), SHA[:-1])),
    ("record-upper-case-sha", ShardRecord, edited(RECORD, ("objects", "train/images/c/0/0/0/0", "sha256"), SHA.upper())),
    ("record-bool-size", ShardRecord, edited(RECORD, ("objects", "train/images/c/0/0/0/0", "size"), True)),
    ("record-negative-size", ShardRecord, edited(RECORD, ("objects", "train/images/c/0/0/0/0", "size"), -1)),
    ("record-traversal-key", ShardRecord, edited(RECORD, ("objects", "../x"), {"size": 1, "sha256": SHA})),
    ("record-note", ShardRecord, edited(RECORD, ("note",), "hello")),
    # ModelProvenance
    ("model-wrong-format", ModelProvenance, edited(PROVENANCE, ("format",), "cipherseg-checkpoint")),
    ("model-old-version", ModelProvenance, edited(PROVENANCE, ("format_version",), 1)),
    ("model-unknown-method", ModelProvenance, edited(PROVENANCE, ("method",), "mine")),
    ("model-missing-normalization", ModelProvenance, edited(PROVENANCE, ("normalization",), delete=True)),
    ("model-zero-std", ModelProvenance, edited(PROVENANCE, ("normalization", "std"), [1, 0, 1])),
    ("model-bad-bundle-digest", ModelProvenance, edited(PROVENANCE, ("bundle", "manifest_sha256"), "x")),
    ("model-zero-sequence", ModelProvenance, edited(PROVENANCE, ("bundle", "sequence"), 0)),
    # Manifest
    ("manifest-old-version", Manifest, edited(MANIFEST, ("format_version",), 2)),
    ("manifest-bool-cipher", Manifest, edited(MANIFEST, ("cipher",), True)),
    ("manifest-two-means", Manifest, edited(MANIFEST, ("normalization", "mean"), [1, 2])),
    ("manifest-bool-mean", Manifest, edited(MANIFEST, ("normalization", "mean"), [True, 1, 1])),
    ("manifest-negative-std", Manifest, edited(MANIFEST, ("normalization", "std"), [1, -1, 1])),
    ("manifest-str-split-count", Manifest, edited(MANIFEST, ("splits",), {"train": "3"})),
    ("manifest-bad-sha", Manifest, edited(MANIFEST, ("objects", "backbone.safetensors", "sha256"), "not a digest")),
    ("manifest-absolute-name", Manifest, edited(MANIFEST, ("objects", "/etc/passwd"), {"size": 1, "sha256": SHA})),
    ("manifest-name-with-newline", Manifest, edited(MANIFEST, ("objects", "a\nerror: b"), {"size": 1, "sha256": SHA})),
    ("manifest-missing-sequence", Manifest, edited(MANIFEST, ("sequence",), delete=True)),
    ("manifest-float-sequence", Manifest, edited(MANIFEST, ("sequence",), 7.0)),
    ("manifest-int-created", Manifest, edited(MANIFEST, ("created",), 20240101)),
    ("manifest-note", Manifest, edited(MANIFEST, ("note",), "hello")),
    # KeyFile
    ("key-short-secret", KeyFile, edited(KEY, ("secret",), "abcd")),
    ("key-infinite-block-size", KeyFile, edited(KEY, ("block_size",), float("inf"))),
    ("key-note", KeyFile, edited(KEY, ("note",), "hello")),
]


@pytest.mark.parametrize("model, document", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_documents_with_a_wrong_field_are_refused(model, document):
    """Wrong types (true is no integer, "3" no number), missing and unknown fields, foreign formats and
    versions, bad digests, names and bounds: a FormatError naming the object, in one line."""
    text = json.dumps(document, allow_nan=True)
    with pytest.raises(FormatError, match=r"^where: ") as error:
        model.parse(text, "where")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "data, says",
    [
        (b"", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b'{"format": "cipherseg-bundle"', "not valid JSON"),
        (b"[]", "expected a JSON object"),
        (b"null", "expected a JSON object"),
        (b"[" * 3000 + b"]" * 3000, "recursion limit exceeded"),
        (b'{"a":' * 3000 + b"1" + b"}" * 3000, "recursion limit exceeded"),
        (json.dumps(MANIFEST).replace('"sequence": 7', '"sequence": Infinity').encode(), "sequence"),
        (json.dumps(MANIFEST).replace('"sequence": 7', '"sequence": NaN').encode(), "sequence"),
        (json.dumps(MANIFEST).replace("[58.395", "[Infinity").encode(), "normalization.std"),
    ],
    ids=["empty", "binary", "cut-short", "list", "null", "nested-lists", "nested-objects", "infinity", "nan", "infinite-std"],
)
def test_hostile_json_is_one_format_error(data, says):
    with pytest.raises(FormatError, match=f"^manifest: .*({says})"):
        Manifest.parse(data, "manifest")


def test_a_document_larger_than_any_format_needs_is_refused():
    with pytest.raises(FormatError, match="too large"):
        Manifest.parse(b" " * (64 << 20) + b"{}", "manifest")


def test_messages_name_fields_and_never_a_second_line():
    with pytest.raises(FormatError) as error:
        Manifest.parse(json.dumps(edited(MANIFEST, ("objects", "a\nerror: b"), {"size": 1, "sha256": SHA})), "the\nmanifest")
    message = str(error.value)
    assert message.startswith("the\\nmanifest: objects.") and "\n" not in message
    assert one_line("x\ny\x1b") == "x\\ny\\x1b" and one_line("plain") == "plain"


def test_run_reporting_prints_one_line_whatever_the_message(capsys):
    def hostile() -> None:
        raise UserError("bundle/a\nerror: forged second line")

    assert run_reporting(hostile) == 2
    assert capsys.readouterr().err == "error: bundle/a\\nerror: forged second line\n"


CHECKPOINT = CHECKPOINTS[0].to_metadata()


@pytest.mark.parametrize(
    "change, says",
    [
        ({"format": "cipherseg-bundle"}, "not a cipherseg-checkpoint"),
        ({"format_version": "2"}, "version"),
        ({"encrypted": "1"}, "encrypted"),
        ({"block_size": "true"}, "block_size: not a block size"),
        ({"negative_positive": "1"}, "negative_positive"),
        ({"key_id": "abc"}, "key_id: not 32 lower-case hex digits"),
        ({"norm_std": "[1, 0, 1]"}, "normalization std.1"),
        ({"norm_mean": '"127"'}, "normalization"),
        ({"norm_mean": "[" * 300}, "at most 200 characters"),
        ({"source_sha256": "abc"}, "source_sha256"),
        ({"channel_order": "BGR"}, "channel_order"),
        ({"note": "hello"}, "'note' is no field"),
        ({"encrypted": "false"}, "a plain checkpoint's metadata names a key"),
    ],
    ids=lambda change: "-".join(f"{k}={v[:10]}" for k, v in change.items()) if isinstance(change, dict) else "",
)
def test_checkpoint_metadata_with_a_wrong_field_is_refused(change, says):
    with pytest.raises(FormatError, match=f"^ckpt: .*({says})"):
        CheckpointMetadata.parse_metadata({**CHECKPOINT, **change}, "ckpt")


@pytest.mark.parametrize(
    "field", ["format", "encrypted", "norm_mean", "norm_std", "source_norm_mean", "source_norm_std", "channel_order",
              "key_id", "block_size", "negative_positive"],
)  # fmt: skip
def test_checkpoint_metadata_missing_a_field_is_refused(field):
    """An encrypted checkpoint needs its whole cipher; every checkpoint its normalizations."""
    metadata = {name: value for name, value in CHECKPOINT.items() if name != field}
    with pytest.raises(FormatError, match=f"^ckpt: .*{'not a cipherseg-checkpoint' if field == 'format' else repr(field)}"):
        CheckpointMetadata.parse_metadata(metadata, "ckpt")
    with pytest.raises(FormatError, match="not a cipherseg checkpoint \\(no metadata\\)"):
        CheckpointMetadata.parse_metadata(None, "ckpt")


# --- the checkpoint's header ---------------------------------------------------------------------


def header(tensors: dict, metadata: dict | None = None) -> bytes:
    document = {"__metadata__": metadata or CHECKPOINT} | tensors
    return json.dumps(document).encode()


def vit_tensors(width: int = 8, depth: int = 1, hidden: int = 16) -> dict:
    """A tiny mmseg VisionTransformer's header entries, contiguous float32 data."""
    shapes = {"cls_token": (1, 1, width), "pos_embed": (1, 5, width), "patch_embed.projection.weight": (width, 3, 16, 16),
              "patch_embed.projection.bias": (width,)}  # fmt: skip
    for i in range(depth):
        shapes |= {
            f"layers.{i}.ln1.weight": (width,), f"layers.{i}.ln1.bias": (width,), f"layers.{i}.ln2.weight": (width,),
            f"layers.{i}.ln2.bias": (width,), f"layers.{i}.attn.attn.in_proj_weight": (3 * width, width),
            f"layers.{i}.attn.attn.in_proj_bias": (3 * width,), f"layers.{i}.attn.attn.out_proj.weight": (width, width),
            f"layers.{i}.attn.attn.out_proj.bias": (width,), f"layers.{i}.ffn.layers.0.0.weight": (hidden, width),
            f"layers.{i}.ffn.layers.0.0.bias": (hidden,), f"layers.{i}.ffn.layers.1.weight": (width, hidden),
            f"layers.{i}.ffn.layers.1.bias": (width,),
        }  # fmt: skip
    entries, offset = {}, 0
    for name, shape in shapes.items():
        size = 4
        for side in shape:
            size *= side
        entries[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    return entries


def data_length(tensors: dict) -> int:
    return max(entry["data_offsets"][1] for entry in tensors.values())


def test_a_backbone_header_is_accepted_and_closed():
    tensors = vit_tensors(depth=2)
    parsed = parse_safetensors_header(header(tensors, {**CHECKPOINT}), "ckpt", data_length=data_length(tensors))
    metadata, closed = canonical_checkpoint_header(parsed, "ckpt")
    assert metadata == CHECKPOINTS[0] and closed.metadata == CHECKPOINT and closed.tensors == parsed.tensors
    assert closed.to_bytes()[8:].rstrip().endswith(b"}") and len(closed.to_bytes()) % 8 == 0


@pytest.mark.parametrize(
    "change, says",
    [
        (lambda t: t | {"note": {"dtype": "U8", "shape": [4], "data_offsets": [data_length(t), data_length(t) + 4]}}, "unexpected tensor 'note'"),
        (lambda t: {n: e for n, e in t.items() if n != "layers.1.ln2.bias"}, "(missing tensor 'layers.1.ln2.bias'|not where)"),
        (lambda t: t | {"layers.1.ffn.layers.1.weight": {**t["layers.1.ffn.layers.1.weight"], "shape": [8, 17]}}, "not of its size|does not fit"),
        (lambda t: t | {"cls_token": {**t["cls_token"], "data_offsets": [4, 36]}}, "not where the tensors before it end"),
        (lambda t: t | {"cls_token": {**t["cls_token"], "dtype": "X9"}}, "not a safetensors header"),
        (lambda t: t | {"__metadata__": {"a": {"b": 1}}}, "not a safetensors header"),
        (lambda t: t | {"__metadata__": ["x"]}, "not a safetensors header"),
    ],
    ids=["extra-tensor", "missing-tensor", "wrong-shape", "overlap", "bad-dtype", "nested-metadata", "metadata-list"],
)
def test_a_header_outside_the_contract_is_refused(change, says):
    tensors = vit_tensors(depth=2)
    changed = change(tensors)
    document = {"__metadata__": CHECKPOINT} | changed
    length = max((e["data_offsets"][1] for n, e in changed.items() if n != "__metadata__" and isinstance(e, dict) and "data_offsets" in e), default=0)
    with pytest.raises(FormatError, match=says):
        parsed = parse_safetensors_header(json.dumps(document).encode(), "ckpt", data_length=length)
        canonical_checkpoint_header(parsed, "ckpt")


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
    assert len(signer.key_bytes) == 32 and len(signature.signature_bytes) == 64


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
    for i in range(len(signature.signature_bytes)):
        flipped = bytearray(signature.signature_bytes)
        flipped[i] ^= 0x80
        assert not key.signer().verifies(message, Signature.of(signature.signer, bytes(flipped)))
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
        (("public_key",), "é" * 43 + "="),  # not ASCII
        (("public_key",), 12),
        (("fingerprint",), "0" * 32),  # does not match the public key
        (("note",), "hello"),
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
        (("signature",), "ü" * 86 + "=="),
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
    (tmp_path / "deep.json").write_text("[" * 2000 + "]" * 2000)
    with pytest.raises(FormatError, match="recursion limit exceeded"):
        load_signer(tmp_path / "deep.json")


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


# --- schemas and registries ----------------------------------------------------------------------


def test_the_committed_schemas_are_current():
    """docs/schemas/ holds the JSON Schema of every stored format, as the models make them
    (``python -m contract.schemas`` writes them)."""
    assert stale(FOLDER) == []
    manifest = json.loads(schemas()["manifest.schema.json"])
    assert manifest["additionalProperties"] is False and "sequence" in manifest["required"]


def test_the_methods_registry_names_what_each_method_trains_on():
    assert method_trained_on("encrypted", "encrypted") is METHODS["proposed"]
    assert method_trained_on("plain", "plain") is METHODS["baseline"]
    assert method_trained_on("encrypted", "plain") is METHODS["conventional2"]
    assert not METHODS["conventional1"].trained_in_cloud
    with pytest.raises(ValueError, match="none of the methods"):
        method_trained_on("plain", "encrypted")


def test_the_families_rename_timm_weights_and_refuse_what_mmseg_has_no_place_for():
    vit = FAMILIES[CheckpointMetadata.LAYOUT]
    assert vit.to_mmseg(["blocks.3.mlp.fc1.weight", "norm.bias", "head.weight"]) == {
        "blocks.3.mlp.fc1.weight": "layers.3.ffn.layers.0.0.weight",
        "norm.bias": "ln1.bias",
    }
    with pytest.raises(ValueError, match="no place for norm_pre.weight"):
        vit.to_mmseg(["norm_pre.weight"])
    assert vit.resampled.fullmatch("pos_embed") and not vit.resampled.fullmatch("cls_token")
    beit = FAMILIES[CheckpointMetadata.BEIT_LAYOUT]
    assert beit.resampled.fullmatch("blocks.0.attn.relative_position_bias_table")  # timm's name
    assert beit.resampled.fullmatch("layers.0.attn.relative_position_bias_table")  # mmseg's


def test_why_no_key_can_be_folded_into_a_first_layer():
    supported = "only ViTs"
    assert why_no_fold(None, supported) == "it has no convolutional stem; only ViTs"
    overlapping = why_no_fold(FirstLayer("stem.0", (3, 3), (2, 2), (1, 1)), supported)
    assert "a 3x3 convolution with stride 2 and padding 1: its windows overlap" in overlapping
    assert "a non-overlapping patch embedding" in why_no_fold(FirstLayer("proj", (16, 16), (16, 16), (0, 0)), supported)


# --- fuzzing: no parser raises anything but the one-line error -----------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=30,
)
FIELDS = ("format", "format_version", "cipher", "splits", "objects", "names", "signature", "public_key", "attributes",
          "shape", "codecs", "sequence", "secret", "block_size", "normalization", "mean", "std", "bundle")  # fmt: skip
DOCUMENT_LIKE = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), JSON_VALUES, max_size=8)
PARSERS = [Manifest, StoreGroup, SplitGroup, ArrayMetadata, ShardRecord, ModelProvenance, KeyFile, PendingRecord,
           AcceptedBundles, Signer, Signature, CheckpointMetadata]  # fmt: skip


def parses_or_refuses(model, source) -> None:
    try:
        model.parse(source, "fuzzed")
    except FormatError as error:
        assert "\n" not in str(error) and str(error).startswith("fuzzed: ")


@pytest.mark.parametrize("model", PARSERS, ids=lambda model: model.__name__)
@settings(suppress_health_check=[HealthCheck.too_slow])  # examples: the session's profile (tests/conftest.py)
@given(data=st.binary(max_size=300) | DOCUMENT_LIKE.map(lambda d: json.dumps(d).encode()))
def test_no_parser_raises_anything_but_a_format_error(model, data):
    parses_or_refuses(model, data)


@pytest.mark.parametrize("document", [d for d in DOCUMENTS if not isinstance(d, PendingRecord)], ids=lambda d: type(d).__name__)
@given(data=st.data())
def test_a_document_with_any_field_replaced_parses_or_refuses(document, data):
    """Each field of a valid document replaced by any JSON value: a valid document or one FormatError."""
    stored = document.to_json()
    field = data.draw(st.sampled_from(sorted(stored)))
    parses_or_refuses(type(document), json.dumps({**stored, field: data.draw(JSON_VALUES)}, allow_nan=True))


@given(data=st.binary(max_size=400), length=st.integers(min_value=0, max_value=1 << 20))
def test_the_safetensors_header_parser_raises_nothing_but_a_format_error(data, length):
    try:
        parse_safetensors_header(data, "fuzzed", data_length=length)
    except FormatError as error:
        assert "\n" not in str(error)
