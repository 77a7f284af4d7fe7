"""The formats both sides read, each a typed, versioned class parsed and checked here and nowhere else.

    CipherSpec          what a key does to images, without the key: key id, block size, negative-positive
    Normalization       the mean and std (RGB, 0-255 scale) a patch embedding reads its input with
    StoreAttributes     the root attributes of the encrypted dataset store (a Zarr v3 group)
    SplitAttributes     the attributes of one split's group: sample names, labelled or not
    ShardRecord         the completion record of one shard: its objects' sizes and sha256, its inputs
    CheckpointMetadata  the metadata of a cipherseg safetensors checkpoint (strings only)
    ModelProvenance     what a model fine-tuned in the cloud reads, kept in its training checkpoint
    Manifest            the bundle's manifest: every object's size and sha256, and the description

``parse`` takes the stored JSON form (or, for checkpoints, the safetensors string map) and a ``where``
naming the object for messages; it raises :class:`FormatError` on anything unexpected. ``to_json``
(``to_metadata``) gives the stored form back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from contract.errors import UserError

T = TypeVar("T")

SPLITS = ("train", "val", "test")
LABELLED = {"train": True, "val": True, "test": False}  # Cityscapes' test labels are dummies
CHANNEL_ORDER = "RGB"  # what the store holds and the checkpoints read
METHODS = ("baseline", "proposed", "conventional1", "conventional2")
_HEX = re.compile(r"[0-9a-f]+")


class FormatError(UserError):
    """A stored object that is not what its format says (damaged, foreign or of another version)."""


# --- typed field access ------------------------------------------------------------------------


def field_of(document: Mapping[str, Any], name: str, kind: type[T] | tuple[type, ...], where: str) -> T:
    """``document[name]``, which must be of ``kind`` (bool is not an int here)."""
    if name not in document:
        raise FormatError(f"{where}: lacks {name!r}")
    value = document[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise FormatError(f"{where}: {name!r} must be {names}, not {type(value).__name__} {value!r}")
    return value


def as_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FormatError(f"{where}: expected a JSON object, not {type(value).__name__}")
    return value


def check_header(document: Mapping[str, Any], fmt: str, version: int, where: str) -> None:
    """Check the format name and version every stored document starts with."""
    found = document.get("format")
    if found != fmt:
        raise FormatError(f"{where}: not a {fmt} (format {found!r})")
    found_version = document.get("format_version")
    if type(found_version) is not int or found_version != version:  # neither True nor 2.0 is a version
        raise FormatError(
            f"{where}: {fmt} version {found_version!r}, this cipherseg reads version {version}; "
            "write it again with this version"
        )


def _sha256(value: Any, where: str) -> str:
    if not (isinstance(value, str) and len(value) == 64 and _HEX.fullmatch(value)):
        raise FormatError(f"{where}: {value!r} is not a sha256 hex digest")
    return value


def parse_json(data: bytes, where: str) -> Any:
    """JSON from stored bytes; FormatError naming ``where`` if they are not JSON."""
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FormatError(f"{where}: not valid JSON ({error})") from None


# --- cipher and normalization ------------------------------------------------------------------


@dataclass(frozen=True)
class CipherSpec:
    """The public description of a key: its one-way id and the cipher settings (no secret)."""

    key_id: str
    block_size: int
    negative_positive: bool

    @classmethod
    def parse(cls, value: Any, where: str) -> CipherSpec | None:
        """A spec from its JSON form; ``None`` (JSON null) stands for plain, unencrypted data."""
        if value is None:
            return None
        document = as_object(value, where)
        key_id = field_of(document, "key_id", str, where)
        if len(key_id) != 32 or not _HEX.fullmatch(key_id):
            raise FormatError(f"{where}: key id {key_id!r} is not 32 hex digits")
        block_size = field_of(document, "block_size", int, where)
        if block_size < 1:
            raise FormatError(f"{where}: block size {block_size} is not positive")
        return cls(key_id, block_size, field_of(document, "negative_positive", bool, where))

    def to_json(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "block_size": self.block_size, "negative_positive": self.negative_positive}

    def __str__(self) -> str:
        inverted = "on" if self.negative_positive else "off"
        return f"key id {self.key_id} (block size {self.block_size}, negative-positive {inverted})"


def describe_cipher(cipher: CipherSpec | None) -> str:
    """How messages name the cipher of some data or model."""
    return "plain (no key)" if cipher is None else str(cipher)


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std of RGB images on the 0-255 scale."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def parse(cls, mean: Any, std: Any, where: str) -> Normalization:
        values = []
        for name, value in (("mean", mean), ("std", std)):
            if not (
                isinstance(value, list)
                and len(value) == 3
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            ):
                raise FormatError(f"{where}: normalization {name} must be three numbers, not {value!r}")
            values.append(tuple(float(v) for v in value))
        if min(values[1]) <= 0:
            raise FormatError(f"{where}: normalization std {list(values[1])} is not positive")
        return cls(*values)

    def uniform(self) -> Normalization:
        """One mean and one std for all channels: the cloud's normalization (the fold is then a signed
        permutation, to which SGD and AdamW are equivariant)."""
        return Normalization((sum(self.mean) / 3,) * 3, (sum(self.std) / 3,) * 3)

    def to_json(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}


# --- the dataset store -------------------------------------------------------------------------


@dataclass(frozen=True)
class Skip:
    """A sample the encrypt stage could not use: stored as an empty slot (label 255) and recorded."""

    split: str
    name: str
    file: str  # relative to the raw root: the owner's own directory layout is not published
    reason: str

    @classmethod
    def parse(cls, value: Any, where: str) -> Skip:
        document = as_object(value, where)
        return cls(*(field_of(document, name, str, where) for name in ("split", "name", "file", "reason")))

    def to_json(self) -> dict[str, str]:
        return {"split": self.split, "name": self.name, "file": self.file, "reason": self.reason}


def _skips(value: Any, where: str) -> tuple[Skip, ...]:
    if not isinstance(value, list):
        raise FormatError(f"{where}: 'skipped' must be a list")
    return tuple(Skip.parse(entry, where) for entry in value)


@dataclass(frozen=True)
class StoreAttributes:
    """The dataset store's root attributes: what the data is, and how the store is laid out.

    Layout: ``<split>/images`` (N, H, W, 3) uint8 in ``channel_order``, encrypted unless ``cipher`` is
    None; ``<split>/labels`` (N, H, W) uint8 trainIds (255 = ignore) for labelled splits; one image per
    inner chunk, ``shard_size`` images per shard (one object); ``<split>/shards/<i>.json`` the shard's
    :class:`ShardRecord`. ``complete`` is set last, when every shard is written.
    """

    FORMAT = "cipherseg-dataset"
    VERSION = 2

    cipher: CipherSpec | None
    shard_size: int
    splits: dict[str, int]  # samples per split, skipped ones included
    channel_order: str = CHANNEL_ORDER
    complete: bool = False
    skipped: tuple[Skip, ...] = ()

    @property
    def encrypted(self) -> bool:
        return self.cipher is not None

    @classmethod
    def parse(cls, value: Any, where: str) -> StoreAttributes:
        document = as_object(value, where)
        check_header(document, cls.FORMAT, cls.VERSION, where)
        shard_size = field_of(document, "shard_size", int, where)
        if shard_size < 1:
            raise FormatError(f"{where}: shard size {shard_size} is not positive")
        return cls(
            cipher=CipherSpec.parse(document.get("cipher"), where),
            shard_size=shard_size,
            splits=_splits(field_of(document, "splits", dict, where), where),
            channel_order=field_of(document, "channel_order", str, where),
            complete=field_of(document, "complete", bool, where),
            skipped=_skips(document.get("skipped", []), where),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.FORMAT,
            "format_version": self.VERSION,
            "cipher": self.cipher.to_json() if self.cipher else None,
            "channel_order": self.channel_order,
            "shard_size": self.shard_size,
            "splits": self.splits,
            "complete": self.complete,
            "skipped": [skip.to_json() for skip in self.skipped],
        }

    def shards(self, split: str) -> range:
        return range(-(-self.splits[split] // self.shard_size))

    def objects(self) -> set[str]:
        """The name (relative to the store's root) of every object a complete store of this layout holds."""
        names = {"zarr.json"}
        for split in self.splits:
            arrays = ("images", "labels") if LABELLED[split] else ("images",)
            names |= {f"{split}/zarr.json", *(f"{split}/{array}/zarr.json" for array in arrays)}
            for index in self.shards(split):
                names |= {shard_object(split, array, index) for array in arrays}
                names.add(shard_record(split, index))
        return names


def _splits(splits: dict[str, Any], where: str) -> dict[str, int]:
    """Samples per split: known split names, positive integer counts."""
    for split, count in splits.items():
        if split not in SPLITS or not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise FormatError(f"{where}: bad split {split!r}: {count!r} (splits are {SPLITS}, counts positive)")
    return dict(splits)


def shard_object(split: str, array: str, index: int) -> str:
    """The store key of shard ``index`` of an array sharded along its first axis only (zarr's default
    chunk key encoding: ``c/`` and the shard's grid position)."""
    dimensions = 4 if array == "images" else 3
    return f"{split}/{array}/c/" + "/".join(map(str, (index,) + (0,) * (dimensions - 1)))


def shard_record(split: str, index: int) -> str:
    return f"{split}/shards/{index}.json"


@dataclass(frozen=True)
class SplitAttributes:
    """A split group's attributes: sample ``i`` of its arrays is ``names[i]``."""

    names: tuple[str, ...]
    labelled: bool

    @classmethod
    def parse(cls, value: Any, where: str) -> SplitAttributes:
        document = as_object(value, where)
        names = field_of(document, "names", list, where)
        if not all(isinstance(name, str) for name in names):
            raise FormatError(f"{where}: 'names' must be strings")
        return cls(tuple(names), field_of(document, "labelled", bool, where))

    def to_json(self) -> dict[str, Any]:
        return {"names": list(self.names), "labelled": self.labelled}


@dataclass(frozen=True)
class ObjectEntry:
    """An object's size in bytes and sha256."""

    size: int
    sha256: str

    @classmethod
    def parse(cls, value: Any, where: str) -> ObjectEntry:
        document = as_object(value, where)
        size = field_of(document, "size", int, where)
        if size < 0:
            raise FormatError(f"{where}: negative size {size}")
        return cls(size, _sha256(document.get("sha256"), where))

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class ShardRecord:
    """A shard's completion record: the shard is done while its objects still hash to ``objects``.

    ``inputs`` fingerprints the input files the shard was made from (a digest of their names, sizes
    and modification times, like rsync's check): a changed or repaired input redoes its shard.
    """

    FORMAT = "cipherseg-shard"
    VERSION = 1

    names: tuple[str, ...]
    inputs: str
    objects: dict[str, ObjectEntry]  # store key -> entry
    skipped: tuple[Skip, ...] = ()

    @classmethod
    def parse(cls, value: Any, where: str) -> ShardRecord:
        document = as_object(value, where)
        check_header(document, cls.FORMAT, cls.VERSION, where)
        names = field_of(document, "names", list, where)
        if not all(isinstance(name, str) for name in names):
            raise FormatError(f"{where}: 'names' must be strings")
        objects = field_of(document, "objects", dict, where)
        return cls(
            names=tuple(names),
            inputs=_sha256(document.get("inputs"), where),
            objects={name: ObjectEntry.parse(entry, f"{where} ({name})") for name, entry in objects.items()},
            skipped=_skips(document.get("skipped", []), where),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.FORMAT,
            "format_version": self.VERSION,
            "names": list(self.names),
            "inputs": self.inputs,
            "objects": {name: entry.to_json() for name, entry in self.objects.items()},
            "skipped": [skip.to_json() for skip in self.skipped],
        }


# --- checkpoints -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointMetadata:
    """The metadata of a cipherseg safetensors checkpoint (a flat string map; numbers and flags as JSON).

    ``normalization`` is what the cloud must normalize images with to use the checkpoint (uniform);
    ``source_normalization`` is what the plain source model read, needed to undo the fold.
    """

    FORMAT = "cipherseg-checkpoint"
    VERSION = 1
    # What the tensors fill: a pretrained backbone of one of mmseg's classes (the owner converts timm's
    # ViTs and BEiTs to them), or a whole fine-tuned segmentor (the backbone's weights under ``backbone.``).
    LAYOUT = "mmseg.VisionTransformer"
    BEIT_LAYOUT = "mmseg.BEiT"
    SEGMENTOR_LAYOUT = "mmseg.segmentor"
    LAYOUTS = (LAYOUT, BEIT_LAYOUT, SEGMENTOR_LAYOUT)

    cipher: CipherSpec | None
    normalization: Normalization
    source_normalization: Normalization
    channel_order: str = CHANNEL_ORDER
    layout: str = LAYOUT
    source_arch: str | None = None
    source_sha256: str | None = None

    @property
    def encrypted(self) -> bool:
        return self.cipher is not None

    @classmethod
    def parse(cls, metadata: Mapping[str, str] | None, where: str) -> CheckpointMetadata:
        metadata = metadata or {}
        if metadata.get("format") != cls.FORMAT:
            raise FormatError(f"{where}: not a cipherseg checkpoint (format {metadata.get('format')!r})")
        version = metadata.get("format_version")
        if version != str(cls.VERSION):
            raise FormatError(
                f"{where}: {cls.FORMAT} version {version!r}, this cipherseg reads version {cls.VERSION}"
            )
        values = {}
        for name in ("encrypted", "norm_mean", "norm_std", "source_norm_mean", "source_norm_std", "channel_order"):
            if name not in metadata:
                raise FormatError(f"{where}: the checkpoint's metadata lacks {name!r}")
        for name in ("encrypted", "norm_mean", "norm_std", "source_norm_mean", "source_norm_std"):
            values[name] = parse_json(metadata[name].encode(), f"{where} ({name})")
        encrypted = field_of(values, "encrypted", bool, where)
        cipher = None
        if encrypted:
            try:
                fields = {
                    "key_id": metadata["key_id"],
                    "block_size": json.loads(metadata["block_size"]),
                    "negative_positive": json.loads(metadata["negative_positive"]),
                }
            except KeyError as error:
                raise FormatError(f"{where}: an encrypted checkpoint's metadata lacks {error}") from None
            except json.JSONDecodeError as error:
                raise FormatError(f"{where}: corrupt checkpoint metadata ({error})") from None
            cipher = CipherSpec.parse(fields, where)
        source_sha256 = metadata.get("source_sha256")
        return cls(
            cipher=cipher,
            normalization=Normalization.parse(values["norm_mean"], values["norm_std"], where),
            source_normalization=Normalization.parse(values["source_norm_mean"], values["source_norm_std"], where),
            channel_order=metadata["channel_order"],
            layout=_layout(metadata.get("layout", cls.LAYOUT), where),
            source_arch=metadata.get("source_arch"),
            source_sha256=_sha256(source_sha256, where) if source_sha256 is not None else None,
        )

    def to_metadata(self) -> dict[str, str]:
        cipher = (
            {
                "key_id": self.cipher.key_id,
                "block_size": str(self.cipher.block_size),
                "negative_positive": json.dumps(self.cipher.negative_positive),
            }
            if self.cipher
            else {}
        )
        optional = {"source_arch": self.source_arch, "source_sha256": self.source_sha256}
        return {
            "format": self.FORMAT,
            "format_version": str(self.VERSION),
            "encrypted": json.dumps(self.encrypted),
            **cipher,
            "norm_mean": json.dumps(list(self.normalization.mean)),
            "norm_std": json.dumps(list(self.normalization.std)),
            "source_norm_mean": json.dumps(list(self.source_normalization.mean)),
            "source_norm_std": json.dumps(list(self.source_normalization.std)),
            "channel_order": self.channel_order,
            "layout": self.layout,
            **{name: value for name, value in optional.items() if value is not None},
        }


def _layout(value: str, where: str) -> str:
    if value not in CheckpointMetadata.LAYOUTS:
        raise FormatError(f"{where}: unknown layout {value!r} (one of {', '.join(CheckpointMetadata.LAYOUTS)})")
    return value


@dataclass(frozen=True)
class ModelProvenance:
    """What a model fine-tuned in the cloud reads, recorded in its training checkpoint's ``meta``.

    ``cipher`` is the cipher of the images it was trained on and reads (None: plain images);
    ``method`` is the paper's method that made it.
    """

    FORMAT = "cipherseg-model"
    VERSION = 1
    META_KEY = "cipherseg"  # where in mmengine's checkpoint ``meta`` it is kept

    cipher: CipherSpec | None
    normalization: Normalization
    method: str
    channel_order: str = CHANNEL_ORDER

    @classmethod
    def parse(cls, value: Any, where: str) -> ModelProvenance:
        document = as_object(value, where)
        check_header(document, cls.FORMAT, cls.VERSION, where)
        method = field_of(document, "method", str, where)
        if method not in METHODS:
            raise FormatError(f"{where}: unknown method {method!r} (one of {', '.join(METHODS)})")
        normalization = as_object(document.get("normalization"), where)
        return cls(
            cipher=CipherSpec.parse(document.get("cipher"), where),
            normalization=Normalization.parse(normalization.get("mean"), normalization.get("std"), where),
            method=method,
            channel_order=field_of(document, "channel_order", str, where),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.FORMAT,
            "format_version": self.VERSION,
            "cipher": self.cipher.to_json() if self.cipher else None,
            "normalization": self.normalization.to_json(),
            "channel_order": self.channel_order,
            "method": self.method,
        }


# --- the bundle --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """The bundle's manifest: every other object's size and sha256, and what the bundle holds.

    Signed by the owner (``manifest.sig``, see :mod:`contract.signing`); ``signer`` is the fingerprint
    of the owner's signing key, for messages (the signature itself is what proves it).
    """

    FORMAT = "cipherseg-bundle"
    VERSION = 2

    cipher: CipherSpec | None
    channel_order: str
    normalization: Normalization
    splits: dict[str, int]
    objects: dict[str, ObjectEntry]
    signer: str
    created: str
    tool_version: str

    @property
    def encrypted(self) -> bool:
        return self.cipher is not None

    @classmethod
    def parse(cls, data: bytes, where: str) -> Manifest:
        document = as_object(parse_json(data, where), where)
        check_header(document, cls.FORMAT, cls.VERSION, where)
        normalization = as_object(field_of(document, "normalization", dict, where), where)
        objects = field_of(document, "objects", dict, where)
        return cls(
            cipher=CipherSpec.parse(field_of(document, "cipher", (dict, type(None)), where), where),
            channel_order=field_of(document, "channel_order", str, where),
            normalization=Normalization.parse(normalization.get("mean"), normalization.get("std"), where),
            splits=_splits(field_of(document, "splits", dict, where), where),
            objects={name: ObjectEntry.parse(entry, f"{where} ({name})") for name, entry in objects.items()},
            signer=field_of(document, "signer", str, where),
            created=field_of(document, "created", str, where),
            tool_version=field_of(document, "tool_version", str, where),
        )

    def to_bytes(self) -> bytes:
        document = {
            "format": self.FORMAT,
            "format_version": self.VERSION,
            "created": self.created,
            "tool_version": self.tool_version,
            "signer": self.signer,
            "cipher": self.cipher.to_json() if self.cipher else None,
            "channel_order": self.channel_order,
            "normalization": self.normalization.to_json(),
            "splits": self.splits,
            "objects": {name: self.objects[name].to_json() for name in sorted(self.objects)},
        }
        return json.dumps(document, indent=1).encode()
