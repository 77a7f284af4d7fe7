"""Every stored format both sides read: closed schemas (pydantic models), parsed here and nowhere else.

    CipherSpec          what a key does to images, without the key: key id, block size, negative-positive
    Normalization       the mean and std (RGB, 0-255 scale) a patch embedding reads its input with
    DatasetDescription  what the labels mean: class names, palette, ignore index, the owner's label mapping
    StoreAttributes     the root attributes of the dataset store (a Zarr v3 group): the dataset, each split's layout
    SplitAttributes     the attributes of one split's group: sample names and original sizes
    StoreGroup, SplitGroup, ArrayMetadata
                        the store's zarr.json documents, as far as cipherseg writes them
    ShardRecord         the completion record of one shard: its objects' sizes and sha256, its inputs
    CheckpointMetadata  the metadata of a cipherseg safetensors checkpoint (a flat string map)
    ModelProvenance     what a model fine-tuned in the cloud reads, kept in its training checkpoint
    Manifest            the bundle's manifest: every object's size and sha256, the description, the sequence
    KeyFile             the owner's secret key file (never published; pipeline.keys derives from it)
    PendingRecord       what an unfinished publish may write or remove, signed by the owner

Every model is closed: an unknown field, a value of another type (``true`` is no number, ``"3"`` no
integer), a string or list beyond its bound, JSON nested deeper than any format needs, or another
format or version is refused with one :class:`FormatError` naming the object. What is published is
re-serialised from these models, so no field outside them can carry anything. JSON Schemas of the
models are in docs/schemas/ (``python -m contract.schemas``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from contract.errors import FormatError, quoted

CHANNEL_ORDER = "RGB"  # what the store holds and the checkpoints read
# The label value every mmseg head, data preprocessor and metric ignores by default; a dataset whose raw
# labels ignore another value maps it here (DatasetDescription.label_map).
IGNORE_INDEX = 255
# The largest image either side decodes, checked from its header before anything is allocated: 2**27
# pixels (~400 MB as 8-bit RGB; a Cityscapes frame has 2**21).
MAX_IMAGE_PIXELS = 1 << 27
MAX_DOCUMENT = 64 << 20  # bytes: a manifest of a million objects is ~150 MB... of 300k shards, well under this
MAX_SAMPLES = 10_000_000
MAX_OBJECTS = 10_000_000

# --- field types ----------------------------------------------------------------------------------

_PATTERNS: dict[str, str] = {}  # pattern -> what it admits, for messages


def _text(pattern: str, what: str, **constraints: Any) -> Any:
    """A string type that must match ``pattern`` (``what`` names it in messages)."""
    _PATTERNS[pattern] = what
    return Annotated[str, StringConstraints(pattern=pattern, **constraints)]


Hex32 = _text(r"^[0-9a-f]{32}$", "32 lower-case hex digits")
Sha256 = _text(r"^[0-9a-f]{64}$", "a sha256 digest (64 lower-case hex digits)")
# Text we show in messages and file names: printable, one line.
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
Text = _text(_PRINTABLE, "one line of printable text", max_length=1000)
# A sample's name: a file stem (no folder), e.g. aachen_000000_000019.
SampleName = _text(
    r"^(?!\.\.?$)[^\x00-\x1f\x7f/\\]+$", "a sample name (printable, no '/' or '\\')", min_length=1, max_length=255
)
# A path relative to a root, '/'-separated, without '.', '..' or empty parts.
RelativePath = _text(
    r"^(?!/)(?!.*//)(?!(.*/)?\.\.?(/|$))[^\x00-\x1f\x7f\\]+(?<!/)$",
    "a relative path ('/'-separated, printable, no '.' or '..' parts)",
    min_length=1,
    max_length=1024,
)
# Bytes kept as standard base64 text (ASCII only, padded): 32 and 64 bytes.
Base64Of32 = _text(r"^[A-Za-z0-9+/]{43}=$", "32 bytes in base64")
Base64Of64 = _text(r"^[A-Za-z0-9+/]{86}==$", "64 bytes in base64")
BlockSizeText = _text(r"^[1-9][0-9]{0,2}$", "a block size")  # a checkpoint's block size, as metadata text
ArchName = _text(r"^[A-Za-z0-9_.\-]+$", "a timm architecture name", max_length=100)
Location = _text(_PRINTABLE, "one line of printable text", max_length=2048)  # a path or URL
Timestamp = _text(r"^[0-9T:+\-.Z]+$", "an ISO 8601 time", max_length=40)
Version = _text(r"^[A-Za-z0-9.+\-]+$", "a version", max_length=40)
Secret = _text(r"^[0-9a-f]{64}$", "64 lower-case hex digits")
# A split of the store: lower-case letters, digits and '_' (train, val, test, train_extra, ...).
Split = _text(r"^[a-z][a-z0-9_]{0,31}$", "a split name (lower-case letters, digits and '_', 32 at most)")
DatasetName = _text(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$", "a dataset name (letters, digits, '_', '.', '-')")
Count = Annotated[int, Field(ge=1, le=MAX_SAMPLES)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Format(BaseModel):
    """A closed, immutable model: unknown fields and loose types are refused (see the module docstring)."""

    model_config = ConfigDict(
        strict=True, extra="forbid", frozen=True, allow_inf_nan=False, regex_engine="python-re"
    )

    @classmethod
    def parse(cls, source: bytes | str | Mapping[str, Any] | None, where: str) -> Self:
        """The model from its stored JSON (bytes or text) or an already decoded JSON value; FormatError
        naming ``where`` for anything the model does not accept."""
        if not isinstance(source, (bytes, str)):
            try:
                source = json.dumps(source)
            except (TypeError, ValueError, RecursionError):
                raise FormatError(f"{quoted(where)}: not a JSON document") from None
        if len(source) > MAX_DOCUMENT:
            raise FormatError(f"{quoted(where)}: larger than {MAX_DOCUMENT} bytes, too large for what it should be")
        try:
            return cls.model_validate_json(source)
        except ValidationError as error:
            raise FormatError(f"{quoted(where)}: {describe_error(error)}") from None

    def to_json(self) -> dict[str, Any]:
        """The stored JSON value."""
        return self.model_dump(mode="json", round_trip=True)

    def to_bytes(self) -> bytes:
        """The stored form: JSON, one key per line."""
        return (json.dumps(self.to_json(), indent=1) + "\n").encode()


def describe_error(error: ValidationError) -> str:
    """One line for the first problem pydantic found: where in the document, and what is wrong."""
    first = error.errors(include_url=False, include_input=False)[0]
    where = quoted(".".join(str(part) for part in first["loc"]))  # names in a document are the document's
    message = first["msg"]
    if first["type"] == "missing":
        return f"lacks {where!r}"
    if first["type"] == "extra_forbidden":
        return f"{where!r} is no field of this format"
    if first["type"] == "json_invalid":
        return f"not valid JSON ({message.removeprefix('Invalid JSON: ')})"
    if first["type"] in ("model_type", "model_attributes_type", "dict_type") and not where:
        return "expected a JSON object"
    if first["type"] == "string_pattern_mismatch":
        return f"{where}: not {_PATTERNS.get(first['ctx']['pattern'], 'of the expected form')}"
    return f"{where}: {message}" if where else message


class Document(Format):
    """A stored document that names its format and version first: another one is refused as such.

    Built in Python, a document gets its header; parsed, it must have it.
    """

    FORMAT: ClassVar[str]
    VERSION: ClassVar[int | str]
    VERSION_FIELD: ClassVar[str] = "format_version"

    @model_validator(mode="before")
    @classmethod
    def _header(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, dict) and info.mode == "json":
            found = value.get("format")
            if found != cls.FORMAT:
                raise PydanticCustomError("format", f"not a {cls.FORMAT} (its format is {_shown(found)})")
            version = value.get(cls.VERSION_FIELD)
            if type(version) is not type(cls.VERSION) or version != cls.VERSION:  # neither true nor 2.0 is 2
                raise PydanticCustomError(
                    "version",
                    f"{cls.FORMAT} version {_shown(version)}, this cipherseg reads version {cls.VERSION}; "
                    "write it again with this version",
                )
        return value


def _shown(value: Any) -> str:
    """A found value in a message: JSON, cut short (it comes from the document)."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- cipher and normalization ------------------------------------------------------------------


class CipherSpec(Format):
    """The public description of a key: its one-way id and the cipher settings (no secret)."""

    key_id: Hex32
    block_size: Annotated[int, Field(ge=1, le=256)]
    negative_positive: bool

    def __str__(self) -> str:
        inverted = "on" if self.negative_positive else "off"
        return f"key id {self.key_id} (block size {self.block_size}, negative-positive {inverted})"


def describe_cipher(cipher: CipherSpec | None) -> str:
    """How messages name the cipher of some data or model."""
    return "plain (no key)" if cipher is None else str(cipher)


Triple = Annotated[tuple[Finite, Finite, Finite], Field(strict=False)]  # a JSON array of three numbers
PositiveTriple = Annotated[tuple[Positive, Positive, Positive], Field(strict=False)]


class Normalization(Format):
    """Per-channel mean and std of RGB images on the 0-255 scale."""

    mean: Triple
    std: PositiveTriple

    def uniform(self) -> Normalization:
        """One mean and one std for all channels: the cloud's normalization (the fold is then a signed
        permutation, to which SGD and AdamW are equivariant)."""
        return Normalization(mean=(sum(self.mean) / 3,) * 3, std=(sum(self.std) / 3,) * 3)


# --- the dataset store -------------------------------------------------------------------------


class Skip(Format):
    """A sample the encrypt stage could not use: stored as an empty slot (label 255) and recorded."""

    split: Split
    name: SampleName
    file: RelativePath  # relative to the raw root: the owner's own directory layout is not published
    reason: Text


Skips = Annotated[tuple[Skip, ...], Field(strict=False, max_length=MAX_SAMPLES)]
Byte = Annotated[int, Field(ge=0, le=255)]
ClassName = _text(_PRINTABLE, "one line of printable text", min_length=1, max_length=100)
Colour = Annotated[tuple[Byte, Byte, Byte], Field(strict=False)]  # RGB, a JSON array of three integers
MAX_CLASSES = IGNORE_INDEX  # class indices 0..254: 255 is the ignore index


class DatasetDescription(Format):
    """What a dataset's labels mean, as mmseg's dataset metainfo says it, and how the owner made them.

    The store's labels are class indices ``0..len(classes) - 1``, ``ignore_index`` where nothing is
    labelled (and in the owner's padding). The owner made them from the raw label files as mmseg's
    ``LoadAnnotations`` does: ``reduce_zero_label`` (0 -> ignore, v -> v - 1), then ``label_map``
    (raw value -> class index, pairs; a value it does not name stays as it is).
    """

    name: DatasetName
    classes: Annotated[tuple[ClassName, ...], Field(strict=False, min_length=1, max_length=MAX_CLASSES)]
    palette: Annotated[tuple[Colour, ...], Field(strict=False, min_length=1, max_length=MAX_CLASSES)]
    ignore_index: Literal[255] = IGNORE_INDEX
    reduce_zero_label: bool = False
    label_map: Annotated[tuple[Annotated[tuple[Byte, Byte], Field(strict=False)], ...], Field(strict=False, max_length=256)] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if len(self.palette) != len(self.classes):
            raise PydanticCustomError("palette", f"{len(self.classes)} classes but {len(self.palette)} palette colours")
        raw = [pair[0] for pair in self.label_map]
        if raw != sorted(set(raw)):
            raise PydanticCustomError("label_map", "label_map names each raw value once, in increasing order")
        wrong = [value for _, value in self.label_map if value >= len(self.classes) and value != self.ignore_index]
        if wrong:
            raise PydanticCustomError("label_map", f"label_map maps to {wrong[0]}, no class index nor the ignore index")
        return self

    def lookup(self) -> tuple[int, ...]:
        """Raw label value -> stored value, for every byte (mmseg's LoadAnnotations, in its order)."""
        table = list(range(256))
        if self.reduce_zero_label:
            table = [self.ignore_index if value in (0, 255) else value - 1 for value in table]
        mapped = dict(self.label_map)
        return tuple(mapped.get(value, value) for value in table)

    def unlabelled_value(self) -> int:
        """The raw label value of pixels in no class: the first the label mapping sends to the ignore index (0 if none)."""
        lookup = self.lookup()
        return next((raw for raw in range(256) if lookup[raw] == self.ignore_index), 0)

    def raw_values(self) -> tuple[int, ...]:
        """Class index -> the raw label value that means it (the smallest such), for maps in the dataset's
        own values (Cityscapes' labelIds, ADE20K's 1-150); the ignore index -> 0 unless 0 is a class."""
        lookup = self.lookup()
        values = []
        for index in range(len(self.classes)):
            values.append(next((raw for raw in range(256) if lookup[raw] == index), index))
        return tuple(values)


class FixedLayout(Format):
    """Every sample of the split is stored at one size: ``images`` (N, H, W, 3), ``labels`` (N, H, W),
    one sample per inner chunk, ``shard_size`` samples per shard."""

    kind: Literal["fixed"] = "fixed"
    height: Annotated[int, Field(ge=1, le=MAX_IMAGE_PIXELS)]
    width: Annotated[int, Field(ge=1, le=MAX_IMAGE_PIXELS)]


class RaggedLayout(Format):
    """The samples of the split have different sizes: ``images`` and ``labels`` are flat uint8 arrays of
    the samples' pixels one after another (3 and 1 bytes a pixel), every sample starting on an inner chunk
    of ``chunk_pixels`` pixels; shard ``s`` holds samples ``s * shard_size ..`` in ``shard_chunks`` chunks
    (those it does not fill are absent). Where a sample lies follows from the sizes alone
    (:func:`ragged_offsets`), so reading one reads its own chunks only."""

    kind: Literal["ragged"] = "ragged"
    chunk_pixels: Annotated[int, Field(ge=1, le=MAX_IMAGE_PIXELS)]
    shard_chunks: Annotated[int, Field(ge=1, le=MAX_SAMPLES)]


class SplitLayout(Format):
    """One split of the store: its samples (skipped ones included), whether it has labels, how it is stored."""

    samples: Count
    labelled: bool
    layout: Annotated[FixedLayout | RaggedLayout, Field(discriminator="kind")]

    @property
    def ragged(self) -> bool:
        return isinstance(self.layout, RaggedLayout)


class StoreAttributes(Document):
    """The dataset store's root attributes: what the data is, and how the store is laid out.

    Per split (:class:`SplitLayout`): ``<split>/images`` uint8 RGB (``channel_order``), encrypted unless
    ``cipher`` is None, and for labelled splits ``<split>/labels`` uint8 class indices (the ignore index
    where nothing is labelled), both :class:`FixedLayout` or :class:`RaggedLayout`; ``shard_size``
    samples per shard (one object); ``<split>/shards/<i>.json`` the shard's :class:`ShardRecord`. Every
    stored side is a multiple of ``padded_to`` (the block size, for an encrypted store): the owner pads
    images (black) and labels (ignore) at the bottom and right, and the split's attributes keep each
    sample's size before padding. ``resize`` is the owner's resizing first, in mmseg's notation (long and
    short edge at most). ``complete`` is set last, when every shard is written.
    """

    FORMAT: ClassVar[str] = "cipherseg-dataset"
    VERSION: ClassVar[int] = 3

    format: Literal["cipherseg-dataset"] = "cipherseg-dataset"
    format_version: Literal[3] = 3
    cipher: CipherSpec | None
    dataset: DatasetDescription
    padded_to: Annotated[int, Field(ge=1, le=256)]
    resize: Annotated[tuple[Annotated[int, Field(ge=1, le=1 << 16)], Annotated[int, Field(ge=1, le=1 << 16)]], Field(strict=False)] | None = None
    shard_size: Annotated[int, Field(ge=1, le=4096)]
    splits: Annotated[dict[Split, SplitLayout], Field(min_length=1, max_length=64)]
    channel_order: Literal["RGB"] = CHANNEL_ORDER
    complete: bool = False
    skipped: Skips = ()

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.cipher is not None and self.padded_to % self.cipher.block_size:
            raise PydanticCustomError("padding", f"padded to {self.padded_to}, not a multiple of the block size {self.cipher.block_size}")
        for name, split in self.splits.items():
            layout = split.layout
            if isinstance(layout, FixedLayout) and (layout.height % self.padded_to or layout.width % self.padded_to):
                raise PydanticCustomError("padding", f"split {name}: size {layout.height}x{layout.width} is not padded to {self.padded_to}")
        return self

    @property
    def encrypted(self) -> bool:
        return self.cipher is not None

    @property
    def counts(self) -> dict[str, int]:
        """Samples per split, skipped ones included (what the manifest states)."""
        return {name: split.samples for name, split in self.splits.items()}

    def shards(self, split: str) -> range:
        return range(-(-self.splits[split].samples // self.shard_size))

    def arrays(self, split: str) -> tuple[str, ...]:
        return ("images", "labels") if self.splits[split].labelled else ("images",)

    def shard_object(self, split: str, array: str, index: int) -> str:
        """The store key of shard ``index`` of an array sharded along its first axis only (zarr's default
        chunk key encoding: ``c/`` and the shard's grid position)."""
        dimensions = 1 if self.splits[split].ragged else 4 if array == "images" else 3
        return f"{split}/{array}/c/" + "/".join(map(str, (index,) + (0,) * (dimensions - 1)))

    def placement(self, split: str, sizes: Sequence[tuple[int, int]]) -> list[tuple[int | None, tuple[int, int]]]:
        """Where each sample of ``split`` (``sizes``: before padding) is stored: its first pixel in the flat
        arrays of a ragged split (None in a fixed one: sample i is index i), and the size it is stored at."""
        layout = self.splits[split].layout
        if isinstance(layout, FixedLayout):
            return [(None, (layout.height, layout.width))] * len(sizes)
        stored = [padded_size(size, self.padded_to) for size in sizes]
        starts, _ = ragged_offsets([h * w for h, w in stored], self.shard_size, layout.chunk_pixels)
        return list(zip(starts, stored))

    def objects(self) -> set[str]:
        """The name (relative to the store's root) of every object a complete store of this layout holds."""
        names = {"zarr.json"}
        for split in self.splits:
            names |= {f"{split}/zarr.json", *(f"{split}/{array}/zarr.json" for array in self.arrays(split))}
            for index in self.shards(split):
                names |= {self.shard_object(split, array, index) for array in self.arrays(split)}
                names.add(shard_record(split, index))
        return names


def shard_record(split: str, index: int) -> str:
    return f"{split}/shards/{index}.json"


def padded_size(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """A sample's stored size: each side of ``size`` (height, width) rounded up to a multiple of ``multiple``."""
    return tuple(-(-side // multiple) * multiple for side in size)


def ragged_offsets(pixels: Sequence[int], shard_size: int, chunk_pixels: int) -> tuple[list[int], int]:
    """Where each sample of a ragged split starts (in pixels of the flat arrays), for samples of
    ``pixels`` stored pixels each, and the chunks the fullest shard needs (RaggedLayout.shard_chunks).
    Sample ``i`` of shard ``s`` starts where the samples before it in the shard end, rounded up to a
    chunk; the shard starts at ``s * shard_chunks`` chunks."""
    chunks = [-(-count // chunk_pixels) for count in pixels]
    per_shard = [sum(chunks[start : start + shard_size]) for start in range(0, len(chunks), shard_size)]
    shard_chunks = max(max(per_shard, default=0), 1)
    starts = []
    for start in range(0, len(chunks), shard_size):
        offset = start // shard_size * shard_chunks
        for count in chunks[start : start + shard_size]:
            starts.append(offset * chunk_pixels)
            offset += count
    return starts, shard_chunks


Size = Annotated[tuple[Annotated[int, Field(ge=0, le=MAX_IMAGE_PIXELS)], Annotated[int, Field(ge=0, le=MAX_IMAGE_PIXELS)]], Field(strict=False)]


class SplitAttributes(Format):
    """A split group's attributes: sample ``i`` of its arrays is ``names[i]``, of size ``sizes[i]``
    (height, width) before the owner's padding; (0, 0) for a sample skipped when it was planned."""

    names: Annotated[tuple[SampleName, ...], Field(strict=False, min_length=1, max_length=MAX_SAMPLES)]
    sizes: Annotated[tuple[Size, ...], Field(strict=False, min_length=1, max_length=MAX_SAMPLES)]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if len(self.sizes) != len(self.names):
            raise PydanticCustomError("sizes", f"{len(self.names)} names but {len(self.sizes)} sizes")
        return self


class _Group(Format):
    zarr_format: Literal[3]
    node_type: Literal["group"]
    consolidated_metadata: None = None


class StoreGroup(_Group):
    """The store root's zarr.json."""

    attributes: StoreAttributes


class SplitGroup(_Group):
    """A split group's zarr.json."""

    attributes: SplitAttributes


Shape = Annotated[tuple[Annotated[int, Field(ge=0, le=1 << 31)], ...], Field(strict=False, min_length=1, max_length=4)]


class _Endian(Format):
    endian: Literal["little", "big"]


class BytesCodec(Format):
    name: Literal["bytes"]
    configuration: _Endian | None = Field(default=None, exclude_if=lambda value: value is None)  # zarr: absent, never null


class _ZstdConfiguration(Format):
    level: Annotated[int, Field(ge=-131072, le=22)]
    checksum: bool


class ZstdCodec(Format):
    name: Literal["zstd"]
    configuration: _ZstdConfiguration


class Crc32cCodec(Format):
    name: Literal["crc32c"]


InnerCodec = Annotated[BytesCodec | ZstdCodec | Crc32cCodec, Field(discriminator="name")]


class _ShardingConfiguration(Format):
    chunk_shape: Shape
    codecs: Annotated[tuple[InnerCodec, ...], Field(strict=False, min_length=1, max_length=4)]
    index_codecs: Annotated[tuple[InnerCodec, ...], Field(strict=False, min_length=1, max_length=4)]
    index_location: Literal["start", "end"]


class ShardingCodec(Format):
    name: Literal["sharding_indexed"]
    configuration: _ShardingConfiguration


class _ChunkShape(Format):
    chunk_shape: Shape


class _RegularGrid(Format):
    name: Literal["regular"]
    configuration: _ChunkShape


class _Separator(Format):
    separator: Literal["/"]


class _KeyEncoding(Format):
    name: Literal["default"]
    configuration: _Separator


class _NoAttributes(Format):
    """An array's own attributes: none (what describes the data is the store's)."""


DimensionName = _text(r"^[a-z_]+$", "a dimension name", max_length=32)


class ArrayMetadata(Format):
    """An array's zarr.json as the store holds it: uint8, sharded, no attributes of its own."""

    zarr_format: Literal[3]
    node_type: Literal["array"]
    shape: Shape
    data_type: Literal["uint8"]
    chunk_grid: _RegularGrid
    chunk_key_encoding: _KeyEncoding
    fill_value: Annotated[int, Field(ge=0, le=255)]
    codecs: Annotated[tuple[ShardingCodec], Field(strict=False)]
    attributes: _NoAttributes = _NoAttributes()
    dimension_names: Annotated[tuple[DimensionName, ...], Field(strict=False, max_length=4)] | None = None
    storage_transformers: Annotated[tuple[()], Field(strict=False)] = ()

    @property
    def shard_shape(self) -> tuple[int, ...]:
        return self.chunk_grid.configuration.chunk_shape

    @property
    def chunk_shape(self) -> tuple[int, ...]:
        return self.codecs[0].configuration.chunk_shape


class ObjectEntry(Format):
    """An object's size in bytes and sha256."""

    size: Annotated[int, Field(ge=0, le=1 << 50)]
    sha256: Sha256


class ShardRecord(Document):
    """A shard's completion record: the shard is done while its objects still hash to ``objects``.

    ``inputs`` fingerprints the input files the shard was made from (a digest of their names, sizes
    and modification times, like rsync's check): a changed or repaired input redoes its shard.
    """

    FORMAT: ClassVar[str] = "cipherseg-shard"
    VERSION: ClassVar[int] = 1

    format: Literal["cipherseg-shard"] = "cipherseg-shard"
    format_version: Literal[1] = 1
    names: Annotated[tuple[SampleName, ...], Field(strict=False, min_length=1, max_length=4096)]
    inputs: Sha256
    objects: Annotated[dict[RelativePath, ObjectEntry], Field(max_length=8)]  # store key -> entry
    skipped: Skips = ()


# --- checkpoints -------------------------------------------------------------------------------

Layout = Literal["mmseg.VisionTransformer", "mmseg.BEiT", "mmseg.segmentor"]
_JSON_BOOL = Literal["true", "false"]


class CheckpointMetadata(Document):
    """The metadata of a cipherseg safetensors checkpoint: safetensors keeps a flat map of strings, so
    numbers, flags and lists are stored as their JSON text (readable with any safetensors viewer).

    ``normalization`` is what the cloud must normalize images with to use the checkpoint (uniform);
    ``source_normalization`` is what the plain source model read, needed to undo the fold. ``layout``
    names what the tensors fill: a pretrained backbone of one of mmseg's classes (the owner converts
    timm's ViTs and BEiTs to them), or a whole fine-tuned segmentor (the backbone under ``backbone.``).
    """

    FORMAT: ClassVar[str] = "cipherseg-checkpoint"
    VERSION: ClassVar[str] = "1"
    LAYOUT: ClassVar[str] = "mmseg.VisionTransformer"
    BEIT_LAYOUT: ClassVar[str] = "mmseg.BEiT"
    SEGMENTOR_LAYOUT: ClassVar[str] = "mmseg.segmentor"

    format: Literal["cipherseg-checkpoint"] = "cipherseg-checkpoint"
    format_version: Literal["1"] = "1"
    encrypted: _JSON_BOOL
    key_id: Hex32 | None = None
    block_size: BlockSizeText | None = None
    negative_positive: _JSON_BOOL | None = None
    norm_mean: Annotated[str, StringConstraints(max_length=200)]
    norm_std: Annotated[str, StringConstraints(max_length=200)]
    source_norm_mean: Annotated[str, StringConstraints(max_length=200)]
    source_norm_std: Annotated[str, StringConstraints(max_length=200)]
    channel_order: Literal["RGB"]
    layout: Layout = "mmseg.VisionTransformer"
    source_arch: ArchName | None = None
    source_sha256: Sha256 | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        cipher = (self.key_id, self.block_size, self.negative_positive)
        if self.encrypted == "true" and None in cipher:
            missing = next(name for name, v in zip(("key_id", "block_size", "negative_positive"), cipher) if v is None)
            raise PydanticCustomError("incomplete", f"an encrypted checkpoint's metadata lacks {missing!r}")
        if self.encrypted == "false" and cipher != (None, None, None):
            raise PydanticCustomError("plain", "a plain checkpoint's metadata names a key")
        self.normalization, self.source_normalization  # noqa: B018 (parse them: refuse bad ones now)
        return self

    @classmethod
    def of(
        cls,
        cipher: CipherSpec | None,
        normalization: Normalization,
        source_normalization: Normalization,
        *,
        layout: str = LAYOUT,
        source_arch: str | None = None,
        source_sha256: str | None = None,
    ) -> CheckpointMetadata:
        """The metadata of a checkpoint with these typed values."""
        return cls(
            encrypted=json.dumps(cipher is not None),
            key_id=cipher.key_id if cipher else None,
            block_size=str(cipher.block_size) if cipher else None,
            negative_positive=json.dumps(cipher.negative_positive) if cipher else None,
            norm_mean=json.dumps(list(normalization.mean)),
            norm_std=json.dumps(list(normalization.std)),
            source_norm_mean=json.dumps(list(source_normalization.mean)),
            source_norm_std=json.dumps(list(source_normalization.std)),
            channel_order=CHANNEL_ORDER,
            layout=layout,
            source_arch=source_arch,
            source_sha256=source_sha256,
        )

    @property
    def cipher(self) -> CipherSpec | None:
        if self.encrypted == "false":
            return None
        return CipherSpec(key_id=self.key_id, block_size=int(self.block_size), negative_positive=self.negative_positive == "true")

    @property
    def normalization(self) -> Normalization:
        return _normalization(self.norm_mean, self.norm_std)

    @property
    def source_normalization(self) -> Normalization:
        return _normalization(self.source_norm_mean, self.source_norm_std)

    @property
    def is_encrypted(self) -> bool:
        return self.encrypted == "true"

    @classmethod
    def parse_metadata(cls, metadata: Mapping[str, str] | None, where: str) -> CheckpointMetadata:
        """The metadata of a safetensors file (its ``__metadata__`` map; None if it has none)."""
        if not metadata:
            raise FormatError(f"{quoted(where)}: not a cipherseg checkpoint (no metadata)")
        return cls.parse(dict(metadata), where)

    def to_metadata(self) -> dict[str, str]:
        """The safetensors ``__metadata__`` map."""
        return {name: value for name, value in self.to_json().items() if value is not None}


def _normalization(mean: str, std: str) -> Normalization:
    try:
        return Normalization.model_validate_json(f'{{"mean": {mean}, "std": {std}}}')
    except ValidationError as error:
        raise PydanticCustomError("normalization", f"normalization {describe_error(error)}") from None


Method = Literal["baseline", "proposed", "conventional1", "conventional2"]


class BundleReference(Format):
    """Which publication of a bundle a model was trained on: its manifest's sha256 and sequence number,
    and the owner that signed it (None: its integrity alone was checked)."""

    location: Location
    manifest_sha256: Sha256
    sequence: Annotated[int, Field(ge=1)]
    signer: Hex32 | None


class ModelProvenance(Document):
    """What a model fine-tuned in the cloud reads, recorded in its training checkpoint's ``meta``.

    ``cipher`` is the cipher of the images it was trained on and reads (None: plain images);
    ``method`` is the paper's method that made it; ``bundle`` the publication it was trained on.
    """

    FORMAT: ClassVar[str] = "cipherseg-model"
    VERSION: ClassVar[int] = 2
    META_KEY: ClassVar[str] = "cipherseg"  # where in mmengine's checkpoint ``meta`` it is kept

    format: Literal["cipherseg-model"] = "cipherseg-model"
    format_version: Literal[2] = 2
    cipher: CipherSpec | None
    normalization: Normalization
    method: Method
    channel_order: Literal["RGB"] = CHANNEL_ORDER
    bundle: BundleReference | None = None


# --- the bundle --------------------------------------------------------------------------------


class Manifest(Document):
    """The bundle's manifest: every other object's size and sha256, and what the bundle holds.

    Signed by the owner (``manifest.sig``, see :mod:`contract.signing`); ``signer`` is the fingerprint
    of the owner's signing key, for messages (the signature itself is what proves it). ``sequence``
    grows by one with every publish of the bundle: the cloud refuses to go back to an older one.
    """

    FORMAT: ClassVar[str] = "cipherseg-bundle"
    VERSION: ClassVar[int] = 3

    format: Literal["cipherseg-bundle"] = "cipherseg-bundle"
    format_version: Literal[3] = 3
    created: Timestamp
    tool_version: Version
    signer: Hex32
    sequence: Annotated[int, Field(ge=1, le=1 << 62)]
    cipher: CipherSpec | None
    channel_order: Literal["RGB"]
    normalization: Normalization
    splits: Annotated[dict[Split, Count], Field(min_length=1, max_length=64)]
    objects: Annotated[dict[RelativePath, ObjectEntry], Field(max_length=MAX_OBJECTS)]

    @property
    def encrypted(self) -> bool:
        return self.cipher is not None

    def to_bytes(self) -> bytes:
        document = self.to_json()
        document["objects"] = {name: document["objects"][name] for name in sorted(document["objects"])}
        return json.dumps(document, indent=1).encode()


class KeyFile(Document):
    """The owner's key file: the 256-bit secret (hex) and the cipher settings, with the key id derived
    from them (pipeline.keys checks it). Written once, 0600; never published."""

    FORMAT: ClassVar[str] = "cipherseg-key"
    VERSION: ClassVar[int] = 1
    VERSION_FIELD: ClassVar[str] = "version"

    format: Literal["cipherseg-key"] = "cipherseg-key"
    version: Literal[1] = 1
    secret: Secret
    key_id: Hex32
    block_size: Annotated[int, Field(ge=1, le=256)]
    negative_positive: bool


class PendingRecord(Document):
    """What an unfinished publish may write or remove in the bundle (names relative to it), and the
    sequence number it publishes; signed by the owner over :meth:`signed_bytes`. Present only while no
    manifest is: a publish trusts it (to remove what it lists) only with the owner's valid signature."""

    FORMAT: ClassVar[str] = "cipherseg-publish-pending"
    VERSION: ClassVar[int] = 1

    format: Literal["cipherseg-publish-pending"] = "cipherseg-publish-pending"
    format_version: Literal[1] = 1
    signer: Hex32
    sequence: Annotated[int, Field(ge=1, le=1 << 62)]
    objects: Annotated[tuple[RelativePath, ...], Field(strict=False, max_length=MAX_OBJECTS)]
    signature: Base64Of64 | None = None  # Ed25519, over signed_bytes()

    @property
    def signature_bytes(self) -> bytes:
        return base64.b64decode(self.signature or "")

    def signed_bytes(self) -> bytes:
        """The canonical bytes the signature covers: the record without its signature."""
        document = self.model_dump(mode="json", exclude={"signature"})
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


class AcceptedBundles(Document):
    """The cloud's record of the newest publication it accepted of each bundle (a small state file in a
    work directory): ``"<signer> <location>"`` -> sequence number."""

    FORMAT: ClassVar[str] = "cipherseg-accepted-bundles"
    VERSION: ClassVar[int] = 1

    format: Literal["cipherseg-accepted-bundles"] = "cipherseg-accepted-bundles"
    format_version: Literal[1] = 1
    accepted: Annotated[dict[Annotated[str, Field(max_length=2100)], Annotated[int, Field(ge=1)]], Field(max_length=100_000)] = {}
