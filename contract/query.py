"""Queries: the images a key-holder sends the cloud to segment, checked from their bytes alone.

A query is an 8-bit RGB PNG whose sides are multiples of the block size, of at most
:data:`MAX_QUERY_PIXELS` pixels, that names the cipher it is encrypted with (its public
:class:`~contract.formats.CipherSpec`, as JSON) in one ``tEXt`` chunk, :data:`QUERY_TAG`. The
key-holder's tools write that chunk; the cloud compares it with what its model reads, so that a
query of another key, or a plain image, is refused rather than segmented into noise.

:func:`check_query` is the one check, and both sides call it: the cloud (``training.predict``,
``training.serve``) before it decodes a query, the key-holder's client before it sends one, so the
client refuses exactly what the cloud would. It reads the PNG's chunk headers only: an image that
claims to be huge is refused before anything is allocated for it. :class:`ServiceInfo` is what a
running service tells its clients about the model it serves.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, NamedTuple

from contract.formats import CipherSpec, FormatError, as_object, check_header, describe_cipher, field_of

QUERY_TAG = "cipherseg-cipher"
# Eight Cityscapes images (1024x2048): 48 MiB once decoded. A bound the cloud can afford per query.
MAX_QUERY_PIXELS = 4096 * 4096
_MAX_TAG_BYTES = 1024  # a cipher spec's JSON is about 100 bytes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_RGB, PNG_GREY = 2, 0  # IHDR colour types
PNG_HEADER_BYTES = 26  # the signature and the IHDR chunk up to its bit depth and colour type
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


class PngHeader(NamedTuple):
    height: int
    width: int
    bit_depth: int
    colour_type: int


def png_header(data: bytes | Exception) -> PngHeader | None:
    """The header of a PNG from its first :data:`PNG_HEADER_BYTES` bytes (or more); None if not a PNG."""
    if isinstance(data, Exception) or len(data) < PNG_HEADER_BYTES or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return PngHeader(height, width, data[24], data[25])


def format_problem(header: PngHeader | None) -> str | None:
    """Why an image with this header is not an 8-bit RGB PNG (None: it is)."""
    if header is None:
        return "not a PNG file"
    if (header.bit_depth, header.colour_type) != (8, PNG_RGB):
        alpha = ", with alpha" if header.colour_type == 6 else ""
        return f"not an 8-bit RGB PNG (bit depth {header.bit_depth}, colour type {header.colour_type}{alpha})"
    return None


def size_problem(header: PngHeader, block_size: int | None, shape: tuple[int, int] | None = None) -> str | None:
    """Why an image of this size cannot be encrypted in blocks (None: it can); ``shape``: the size it must have."""
    height, width = header.height, header.width
    if block_size and (height % block_size or width % block_size):
        return f"image size {height}x{width} is not a multiple of the block size {block_size}"
    if shape and (height, width) != shape:
        return f"image size {height}x{width} differs from the other images of its split ({shape[0]}x{shape[1]})"
    return None


def image_problem(header: PngHeader | None, block_size: int | None, shape: tuple[int, int] | None = None) -> str | None:
    """Why an image with this PNG header cannot be encrypted (None: it can)."""
    return format_problem(header) or size_problem(header, block_size, shape)


class QueryRefused(FormatError):
    """A query the cloud does not segment; ``reason`` names the kind, for status codes and counts."""

    NOT_PNG = "not-png"
    NOT_RGB8 = "not-rgb8"
    SIZE = "size"
    TAG = "tag"
    TAGGED_TWICE = "tagged-twice"
    PLAIN = "plain-image"
    OTHER_KEY = "other-key"
    CORRUPT = "corrupt"  # found when decoding: the cloud's side says so

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Query:
    """A query's size and the cipher it names (None: it names none, a plain image)."""

    height: int
    width: int
    cipher: CipherSpec | None


def read_query(data: bytes, block_size: int) -> Query:
    """The size and cipher of the PNG ``data``; QueryRefused if it is no image a model could read.

    The image itself is not decoded: the header and the chunk list say all this.
    """
    header = png_header(data)
    problem = format_problem(header)
    if problem:
        raise QueryRefused(QueryRefused.NOT_PNG if header is None else QueryRefused.NOT_RGB8, problem)
    problem = size_problem(header, block_size)
    if problem:
        raise QueryRefused(QueryRefused.SIZE, problem)
    if header.height * header.width > MAX_QUERY_PIXELS:
        raise QueryRefused(
            QueryRefused.SIZE,
            f"image size {header.height}x{header.width} is more than the {MAX_QUERY_PIXELS} pixels a query may have",
        )
    return Query(header.height, header.width, _cipher_of(_query_tags(data)))


def check_query(data: bytes, reads: CipherSpec | None, block_size: int) -> Query:
    """:func:`read_query`, and the query must be of ``reads``, the cipher of what the model reads (None: plain)."""
    query = read_query(data, block_size)
    if query.cipher != reads:
        if query.cipher is None:
            raise QueryRefused(
                QueryRefused.PLAIN,
                f"names no key (not encrypted by the key-holder's client or --stage encrypt-query), "
                f"but the model reads images of {describe_cipher(reads)}",
            )
        raise QueryRefused(
            QueryRefused.OTHER_KEY, f"a query of {describe_cipher(query.cipher)}, but the model reads images of {describe_cipher(reads)}"
        )
    return query


def _query_tags(data: bytes) -> list[tuple[bytes, bytes]]:
    """(chunk type, text) of every text chunk named :data:`QUERY_TAG`, wherever it is in the file."""
    keyword = QUERY_TAG.encode() + b"\0"
    found, offset = [], len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        start = offset + 8
        if kind in _TEXT_CHUNKS and data.startswith(keyword, start):
            found.append((kind, data[start + len(keyword) : start + length]))
        if kind == b"IEND":
            break
        offset = start + length + 4  # and the CRC
    return found


def _cipher_of(tags: list[tuple[bytes, bytes]]) -> CipherSpec | None:
    """The cipher one tag names; refused: several tags, a tag in another chunk type, a tag that is no cipher."""
    if not tags:
        return None
    if len(tags) > 1:
        raise QueryRefused(
            QueryRefused.TAGGED_TWICE, f"names a cipher {len(tags)} times: encrypted more than once, or altered"
        )
    (kind, text), = tags
    if kind != b"tEXt":
        raise QueryRefused(QueryRefused.TAG, f"names its cipher in a {kind.decode()} chunk, not in tEXt as queries do")
    if len(text) > _MAX_TAG_BYTES:
        raise QueryRefused(QueryRefused.TAG, f"its cipher tag is {len(text)} bytes, more than a cipher spec's {_MAX_TAG_BYTES}")
    try:
        document = json.loads(text.decode("latin-1"))  # tEXt is Latin-1
    except (ValueError, RecursionError):
        raise QueryRefused(QueryRefused.TAG, "its cipher tag is not JSON") from None
    if document is None:
        raise QueryRefused(QueryRefused.TAG, "its cipher tag names no cipher")
    try:
        return CipherSpec.parse(document, "its cipher tag")
    except FormatError as error:
        raise QueryRefused(QueryRefused.TAG, str(error)) from None


def tag_text(cipher: CipherSpec) -> str:
    """The text of the :data:`QUERY_TAG` chunk that names ``cipher``."""
    return json.dumps(cipher.to_json())


# --- what a service tells its clients ------------------------------------------------------------


@dataclass(frozen=True)
class ServiceInfo:
    """What a segmentation service serves (``GET /v1/model``): the cipher its model reads (None: plain
    images), the block size query sides must be multiples of, the largest request body it takes, and
    its classes with their colours and Cityscapes labelIds (indexed by trainId), so that a client
    writes the same maps the cloud's own ``training.predict`` writes."""

    FORMAT = "cipherseg-service"
    VERSION = 1

    cipher: CipherSpec | None
    block_size: int
    max_body_bytes: int
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    label_ids: tuple[int, ...]

    @classmethod
    def parse(cls, value: Any, where: str) -> ServiceInfo:
        document = as_object(value, where)
        check_header(document, cls.FORMAT, cls.VERSION, where)
        classes = field_of(document, "classes", list, where)
        palette = field_of(document, "palette", list, where)
        label_ids = field_of(document, "label_ids", list, where)
        if not all(isinstance(name, str) for name in classes):
            raise FormatError(f"{where}: 'classes' must be strings")
        if not (len(palette) == len(label_ids) == len(classes)):
            raise FormatError(f"{where}: {len(classes)} classes, {len(palette)} colours and {len(label_ids)} labelIds")
        if not all(isinstance(c, list) and len(c) == 3 and all(_byte(v) for v in c) for c in palette):
            raise FormatError(f"{where}: 'palette' must be [r, g, b] triples of 0-255")
        if not all(_byte(v) for v in label_ids):
            raise FormatError(f"{where}: 'label_ids' must be numbers 0-255")
        return cls(
            cipher=CipherSpec.parse(field_of(document, "cipher", (dict, type(None)), where), where),
            block_size=_positive(field_of(document, "block_size", int, where), "block_size", where),
            max_body_bytes=_positive(field_of(document, "max_body_bytes", int, where), "max_body_bytes", where),
            classes=tuple(classes),
            palette=tuple(tuple(c) for c in palette),
            label_ids=tuple(label_ids),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.FORMAT,
            "format_version": self.VERSION,
            "cipher": self.cipher.to_json() if self.cipher else None,
            "block_size": self.block_size,
            "max_body_bytes": self.max_body_bytes,
            "classes": list(self.classes),
            "palette": [list(c) for c in self.palette],
            "label_ids": list(self.label_ids),
        }


def _byte(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255


def _positive(value: int, name: str, where: str) -> int:
    if value < 1:
        raise FormatError(f"{where}: {name!r} must be positive, not {value}")
    return value
