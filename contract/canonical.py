"""The closed form of what a bundle holds: every metadata object as cipherseg writes it, and nothing else.

Publish re-serialises each metadata object of the store (the zarr.json documents, the shard records)
and the checkpoint's header from its validated model, never copying them byte for byte; verify
requires that each is already in that form. So no attribute, field or tensor outside the contract
can reach the cloud, whatever the owner's store or checkpoint held. Shards are binary and copied as
they are (their digests are in the shard records, written by the encrypt stage).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter, ValidationError

from contract.errors import FormatError, quoted
from contract.formats import (
    CHANNEL_ORDER,
    IGNORE_INDEX,
    ArrayMetadata,
    CheckpointMetadata,
    Format,
    ShardRecord,
    SplitGroup,
    StoreAttributes,
    StoreGroup,
    describe_error,
    shard_object,
)
from contract.registry import FAMILIES

MAX_HEADER = 100_000_000  # the safetensors format's own limit on its JSON header

# --- the store's metadata -------------------------------------------------------------------------

_SPLIT_GROUP = re.compile(r"(?P<split>[a-z_]+)/zarr\.json")
_ARRAY = re.compile(r"(?P<split>[a-z_]+)/(?P<array>images|labels)/zarr\.json")
_RECORD = re.compile(r"(?P<split>[a-z_]+)/shards/(?P<index>\d+)\.json")


def is_metadata(name: str) -> bool:
    """Whether store object ``name`` is a metadata document (as opposed to a shard)."""
    return name.endswith(".json")


def store_attributes(data: bytes, where: str) -> StoreAttributes:
    """The store's attributes from its root zarr.json."""
    return StoreGroup.parse(data, where).attributes


def canonical_store_object(name: str, data: bytes, attributes: StoreAttributes, where: str) -> bytes:
    """The closed form of the store's metadata object ``name`` (relative to the store) whose bytes are
    ``data``, checked against the store's layout; FormatError naming ``where`` if it does not fit."""
    if name == "zarr.json":
        group = StoreGroup.parse(data, where)
        if group.attributes != attributes:
            raise FormatError(f"{quoted(where)}: the store's attributes changed while it was read")
        return group.to_bytes()
    if match := _SPLIT_GROUP.fullmatch(name):
        group = SplitGroup.parse(data, where)
        count = attributes.splits.get(match["split"])
        if len(group.attributes.names) != count:
            raise FormatError(f"{quoted(where)}: names {len(group.attributes.names)} samples, the store's attributes {count}")
        return group.to_bytes()
    if match := _ARRAY.fullmatch(name):
        array = ArrayMetadata.parse(data, where)
        _check_array(array, match["split"], match["array"], attributes, where)
        return array.to_bytes()
    if match := _RECORD.fullmatch(name):
        record = ShardRecord.parse(data, where)
        split, index = match["split"], int(match["index"])
        expected = {shard_object(split, array, index) for array in attributes.arrays(split)}
        if set(record.objects) != expected:
            raise FormatError(f"{quoted(where)}: records {sorted(record.objects)}, not the shard's objects {sorted(expected)}")
        start = index * attributes.shard_size
        if len(record.names) != min(attributes.shard_size, attributes.splits[split] - start):
            raise FormatError(f"{quoted(where)}: names {len(record.names)} samples, not the shard's")
        return record.to_bytes()
    raise FormatError(f"{quoted(where)}: not a metadata object of the store's format")


def _check_array(array: ArrayMetadata, split: str, name: str, attributes: StoreAttributes, where: str) -> None:
    """The array's layout: (N, H, W, 3) images or (N, H, W) labels, one sample per chunk, shard_size per shard."""
    if split not in attributes.splits or name not in attributes.arrays(split):
        raise FormatError(f"{quoted(where)}: the store's attributes have no such array")
    dimensions = 4 if name == "images" else 3
    shape = array.shape
    problems = []
    if len(shape) != dimensions or shape[0] != attributes.splits[split] or (dimensions == 4 and shape[3] != 3):
        problems.append(f"shape {list(shape)} is not ({attributes.splits[split]}, H, W{', 3' if dimensions == 4 else ''})")
    elif array.chunk_shape != (1, *shape[1:]) or array.shard_shape != (attributes.shard_size, *shape[1:]):
        problems.append(f"chunks {list(array.chunk_shape)} and shards {list(array.shard_shape)} are not one and {attributes.shard_size} samples")
    if array.fill_value != (0 if name == "images" else IGNORE_INDEX):
        problems.append(f"fill value {array.fill_value}")
    if problems:
        raise FormatError(f"{quoted(where)}: not the layout of the store's {name}: {'; '.join(problems)}")


# --- the checkpoint's header ----------------------------------------------------------------------

DType = Literal["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"]
ITEM_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


class TensorEntry(Format):
    dtype: DType
    shape: Annotated[tuple[Annotated[int, Field(ge=0, le=1 << 40)], ...], Field(strict=False, max_length=8)]
    data_offsets: Annotated[tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]], Field(strict=False)]


_TensorName = Annotated[str, Field(min_length=1, max_length=300, pattern=r"^[A-Za-z0-9_.]+$")]
_MetadataMap = Annotated[dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=4096)]], Field(max_length=64)]
_HEADER = TypeAdapter(
    dict[_TensorName, TensorEntry | _MetadataMap],
    config={"strict": True, "regex_engine": "python-re"},
)


@dataclass(frozen=True)
class SafetensorsHeader:
    """A safetensors file's header: its metadata map and its tensors, in the order of their data."""

    metadata: dict[str, str]
    tensors: dict[str, TensorEntry]

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: entry.shape for name, entry in self.tensors.items()}

    @property
    def data_length(self) -> int:
        return max((entry.data_offsets[1] for entry in self.tensors.values()), default=0)

    def to_bytes(self) -> bytes:
        """The header as safetensors stores it: an 8-byte little-endian length, then JSON padded with
        spaces to a multiple of 8 bytes."""
        document = {"__metadata__": self.metadata} | {name: entry.to_json() for name, entry in self.tensors.items()}
        text = json.dumps(document, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        return len(text).to_bytes(8, "little") + text


def parse_safetensors_header(data: bytes, where: str, data_length: int | None = None) -> SafetensorsHeader:
    """The header whose JSON is ``data``; the tensors' data must follow each other without a gap or an
    overlap, each of the size its dtype and shape give, over exactly ``data_length`` bytes when given."""
    try:
        document = _HEADER.validate_json(data)
    except ValidationError as error:
        raise FormatError(f"{quoted(where)}: not a safetensors header ({describe_error(error)})") from None
    metadata = document.pop("__metadata__", {})
    if not isinstance(metadata, dict) or any(not isinstance(entry, TensorEntry) for entry in document.values()):
        raise FormatError(f"{quoted(where)}: not a safetensors header (a tensor entry where metadata should be, or the reverse)")
    tensors = dict(sorted(document.items(), key=lambda item: item[1].data_offsets))
    end = 0
    for name, entry in tensors.items():
        start, stop = entry.data_offsets
        size = math.prod(entry.shape) * ITEM_SIZE[entry.dtype]
        if start != end or stop - start != size:
            raise FormatError(f"{quoted(where)}: tensor {name!r} is not where the tensors before it end, or not of its size")
        end = stop
    if data_length is not None and end != data_length:
        raise FormatError(f"{quoted(where)}: {data_length} bytes of tensor data, the header describes {end}")
    return SafetensorsHeader(dict(metadata), tensors)


def canonical_checkpoint_header(header: SafetensorsHeader, where: str) -> tuple[CheckpointMetadata, SafetensorsHeader]:
    """The closed form of a bundle checkpoint's header: its metadata re-serialised from its model, and
    exactly the tensors of its backbone family (a pretrained backbone, never a whole segmentor)."""
    metadata = CheckpointMetadata.parse_metadata(header.metadata, where)
    family = FAMILIES.get(metadata.layout)
    if family is None:
        raise FormatError(f"{quoted(where)}: a {metadata.layout} checkpoint, not a pretrained backbone")
    if metadata.channel_order != CHANNEL_ORDER:
        raise FormatError(f"{quoted(where)}: reads {metadata.channel_order} images, not {CHANNEL_ORDER}")
    problems = family.structure_problems(header.shapes)
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise FormatError(f"{quoted(where)}: not a {family.mmseg_class} backbone: {'; '.join(problems[:3])}{more}")
    return metadata, SafetensorsHeader(metadata.to_metadata(), header.tensors)


def read_header_bytes(first: bytes, where: str) -> int:
    """The length of a safetensors header from the file's first 8 bytes."""
    length = int.from_bytes(first[:8], "little") if len(first) >= 8 else 0
    if not 0 < length <= MAX_HEADER:
        raise FormatError(f"{quoted(where)}: not a safetensors file (a header of {length} bytes)")
    return length

