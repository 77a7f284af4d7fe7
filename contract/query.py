"""Queries: the images a key-holder sends the cloud to segment, checked from their bytes alone.

A query is an 8-bit RGB PNG whose sides are multiples of the block size, of at most
:data:`MAX_QUERY_PIXELS` pixels, that names the cipher it is encrypted with (its public
:class:`~contract.formats.CipherSpec`, as JSON) in one ``tEXt`` chunk, :data:`QUERY_TAG`. The
key-holder's tools write that chunk; the cloud compares it with what its model reads, so that a
query of another key, or a plain image, is refused rather than segmented into noise. An image whose
sides were no multiples of the block size was padded by the key-holder (black, at the bottom and
right, as the store's images) and names its size before padding in a second ``tEXt`` chunk,
:data:`QUERY_SIZE_TAG` (``HxW``): the cloud crops its maps to it. A plain image for a plain model (the
owner's, back from the cloud) may be of any size: the cloud pads it so, and crops its map back.

:func:`check_query` is the one check, and both sides call it: the cloud (``training.predict``,
``training.serve``) before it decodes a query, the key-holder's client before it sends one, so the
client refuses exactly what the cloud would. It reads the PNG's chunk headers only: an image that
claims to be huge is refused before anything is allocated for it. :class:`ServiceInfo` is what a
running service tells its clients about the model it serves.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal, NamedTuple, Self

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from contract.errors import FormatError
from contract.formats import CipherSpec, Document, Text, describe_cipher

QUERY_TAG = "cipherseg-cipher"
QUERY_SIZE_TAG = "cipherseg-size"
# A service holds up to its queue's length of decoded queries at once: a query is bounded tighter than
# what either side decodes (MAX_IMAGE_PIXELS), at eight Cityscapes frames (48 MiB decoded).
MAX_QUERY_PIXELS = 4096 * 4096

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_RGB = 2  # the IHDR colour type of RGB
PNG_HEADER_BYTES = 26  # the signature and the IHDR chunk up to its bit depth and colour type
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


class PngHeader(NamedTuple):
    height: int
    width: int
    bit_depth: int
    colour_type: int


def png_header(data: bytes) -> PngHeader | None:
    """The header of a PNG from its first :data:`PNG_HEADER_BYTES` bytes (or more); None if not a PNG."""
    if len(data) < PNG_HEADER_BYTES or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return PngHeader(height, width, data[24], data[25])


def _problem(header: PngHeader | None, block_size: int | None) -> tuple[str, str] | None:
    """(reason, message) of what is wrong with a query of this header, None if nothing."""
    if header is None:
        return QueryRefused.NOT_PNG, "not a PNG file"
    height, width, depth, colour = header
    if height * width > MAX_QUERY_PIXELS:
        return QueryRefused.SIZE, f"image size {height}x{width} is larger than cipherseg decodes ({MAX_QUERY_PIXELS} pixels at most)"
    if (depth, colour) != (8, PNG_RGB):
        alpha = ", with alpha" if colour == 6 else ""
        return QueryRefused.NOT_RGB8, f"not an 8-bit RGB PNG (bit depth {depth}, colour type {colour}{alpha})"
    if block_size and (height % block_size or width % block_size):
        return QueryRefused.SIZE, f"image size {height}x{width} is not a multiple of the block size {block_size}"
    return None


class QueryRefused(FormatError):
    """A query the cloud does not segment; ``reason`` names the kind, for status codes and counts."""

    NOT_PNG = "not-png"
    NOT_RGB8 = "not-rgb8"
    SIZE = "size"
    TAG = "tag"
    TAGGED_TWICE = "tagged-twice"
    SIZE_TAG = "size-tag"
    PLAIN = "plain-image"
    OTHER_KEY = "other-key"
    CORRUPT = "corrupt"  # found when decoding: the cloud's side says so

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Query:
    """A query's size, the cipher it names (None: it names none, a plain image) and the size of its image
    before the key-holder padded it (its own size when it names none): the size of its map."""

    height: int
    width: int
    cipher: CipherSpec | None
    size: tuple[int, int]


def read_query(data: bytes, block_size: int | None) -> Query:
    """The size and cipher of the PNG ``data``; QueryRefused if it is no image a model could read. Its sides
    must be multiples of ``block_size``, unless None: a plain image for a plain model, which the cloud pads
    as the owner pads the store's images.

    The image itself is not decoded: the header and the chunk list say all this.
    """
    header = png_header(data)
    problem = _problem(header, block_size)
    if problem:
        raise QueryRefused(*problem)
    own = (header.height, header.width)
    size = _size_of(_tags(data, QUERY_SIZE_TAG), own, block_size or 1)
    return Query(*own, named_cipher(data), size)


def named_cipher(data: bytes) -> CipherSpec | None:
    """The cipher an image's :data:`QUERY_TAG` names (None: it names none, or it is no PNG); QueryRefused if
    its tags are no one cipher."""
    return _cipher_of(_tags(data, QUERY_TAG)) if png_header(data) else None


def check_query(data: bytes, reads: CipherSpec | None, block_size: int) -> Query:
    """:func:`read_query`, and the query must be of ``reads``, the cipher of what the model reads (None: plain)."""
    query = read_query(data, block_size if reads is not None else None)
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


def _tags(data: bytes, name: str) -> list[tuple[bytes, bytes]]:
    """(chunk type, text) of every text chunk named ``name``, wherever it is in the file."""
    keyword = name.encode() + b"\0"
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
    ((kind, text),) = tags
    if kind != b"tEXt":
        raise QueryRefused(QueryRefused.TAG, f"names its cipher in a {kind.decode()} chunk, not in tEXt as queries do")
    try:
        return CipherSpec.parse(text, f"its {QUERY_TAG} tag")  # closed: JSON of a cipher spec and nothing else
    except FormatError as error:
        raise QueryRefused(QueryRefused.TAG, str(error)) from None


def _size_of(tags: list[tuple[bytes, bytes]], own: tuple[int, int], block_size: int) -> tuple[int, int]:
    """The size before padding one size tag names: on each side at most the image's own, by less than a block."""
    if not tags:
        return own
    (kind, text), *others = tags
    numbers = text.split(b"x") if kind == b"tEXt" and not others and len(text) <= 16 else []
    size = tuple(int(n) for n in numbers if n.isdigit())
    if len(numbers) != 2 or len(size) != 2 or not all(0 < side <= mine < side + block_size for side, mine in zip(size, own)):
        raise QueryRefused(
            QueryRefused.SIZE_TAG,
            f"its {QUERY_SIZE_TAG} tag is not one size before padding to {own[0]}x{own[1]} (HxW in one tEXt chunk)",
        )
    return size


def tag_text(cipher: CipherSpec) -> str:
    """The text of the :data:`QUERY_TAG` chunk that names ``cipher``."""
    return cipher.model_dump_json()


# --- what a service tells its clients ------------------------------------------------------------


Byte = Annotated[int, Field(ge=0, le=255)]
Colour = Annotated[tuple[Byte, Byte, Byte], Field(strict=False)]


class ServiceInfo(Document):
    """What a segmentation service serves (``GET /v1/model``): the cipher its model reads (None: plain
    images), the block size query sides must be multiples of, the largest request body it takes, and
    its dataset's classes with their colours and their own label values (Cityscapes' labelIds, ADE20K's
    1-150; indexed by class), so that a client writes the maps the cloud's own ``training.predict`` writes."""

    FORMAT: ClassVar[str] = "cipherseg-service"
    VERSION: ClassVar[int] = 1

    format: Literal["cipherseg-service"] = "cipherseg-service"
    format_version: Literal[1] = 1
    cipher: CipherSpec | None
    block_size: Annotated[int, Field(ge=1, le=256)]
    max_body_bytes: Annotated[int, Field(ge=1)]
    classes: Annotated[tuple[Text, ...], Field(strict=False, min_length=1, max_length=255)]
    palette: Annotated[tuple[Colour, ...], Field(strict=False, max_length=255)]
    label_ids: Annotated[tuple[Byte, ...], Field(strict=False, max_length=255)]
    unlabelled: Byte  # the label value of pixels no class is predicted for

    @model_validator(mode="after")
    def _one_per_class(self) -> Self:
        if not len(self.classes) == len(self.palette) == len(self.label_ids):
            raise PydanticCustomError(
                "classes", f"{len(self.classes)} classes, {len(self.palette)} colours and {len(self.label_ids)} labelIds"
            )
        return self
