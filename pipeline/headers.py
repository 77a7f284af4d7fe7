"""Image file headers: an image's format, size, bit depth and colour from a few bytes, before anything is decoded.

PNG and JPEG are read as far as their image header (PNG: IHDR, and an eXIf chunk before the image data;
JPEG: the frame header, and an Exif APP1 segment before it), a few KiB for almost every file, fetched in
rounds of batched range reads (:func:`read_headers`). The size is the one decoders give: OpenCV, and mmseg's
``LoadImageFromFile`` with it, turn an image by its EXIF orientation, so 5-8 swap height and width.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COLOURS = {0: "grey", 2: "RGB", 3: "palette", 4: "grey with alpha", 6: "RGB with alpha"}  # IHDR colour types
JPEG_COMPONENTS = {1: "grey", 3: "RGB", 4: "CMYK"}
# JPEG frame headers (SOF0-15 without DHT C4, JPG C8 and DAC CC)
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
FIRST_READ = 4096  # bytes of every file read first: the header of almost every PNG and JPEG
MAX_HEADER_BYTES = 1 << 20  # a header that is not within the first MiB is not one
_ROUNDS = 32


@dataclass(frozen=True)
class Header:
    """What an image file's header says: ``format`` PNG or JPEG, the decoded size, bits per sample and colour."""

    format: str
    height: int
    width: int
    depth: int
    colour: str

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    def __str__(self) -> str:
        return f"{self.depth}-bit {self.colour} {self.format}"


class _Need(Exception):
    """The parser needs ``length`` bytes at ``offset`` that were not read yet."""

    def __init__(self, offset: int, length: int) -> None:
        super().__init__(offset, length)
        self.offset, self.length = offset, length


class _Pieces:
    """The parts of a file read so far: ``get`` returns bytes read, or raises _Need for the rest."""

    def __init__(self, size: int | None = None) -> None:
        self.pieces: dict[int, bytes] = {}
        self.size = size  # known once a read came back short

    def add(self, offset: int, data: bytes, asked: int) -> None:
        self.pieces[offset] = data
        if len(data) < asked:
            self.size = offset + len(data)

    def get(self, offset: int, length: int) -> bytes:
        for start, data in self.pieces.items():
            if start <= offset and offset + length <= start + len(data):
                return data[offset - start : offset - start + length]
        if self.size is not None and offset + length > self.size:
            raise EOFError
        raise _Need(offset, length)

    @property
    def read(self) -> int:
        return sum(map(len, self.pieces.values()))


def parse_header(get: Callable[[int, int], bytes]) -> Header | str:
    """The header of the file ``get(offset, length)`` reads; a reason (str) if it is neither PNG nor JPEG,
    or cut short. Raises _Need for bytes not read yet."""
    try:
        start = get(0, 8)
    except EOFError:
        return "not a PNG or JPEG file (too short)"
    if start == PNG_SIGNATURE:
        return _png(get)
    if start[:2] == b"\xff\xd8":
        return _jpeg(get)
    return "not a PNG or JPEG file"


def header_of(data: bytes) -> Header | str:
    """The header of a file held whole in memory (a reason if it has none)."""
    pieces = _Pieces(len(data))
    pieces.add(0, data, len(data))
    try:
        return parse_header(pieces.get)
    except (_Need, EOFError):
        return "cut short in its header"


def read_headers(fs, paths: Sequence[str]) -> dict[str, Header | str]:
    """The header of every file at ``paths`` on ``fs`` (a reason instead where there is none), in batched
    range reads: the first KiB of every file, then the few parts some still need."""
    files = {path: _Pieces() for path in paths}
    found: dict[str, Header | str] = {}
    asks = {path: (0, FIRST_READ) for path in paths}
    for _ in range(_ROUNDS):
        if not asks:
            break
        names = list(asks)
        starts = [asks[name][0] for name in names]
        ends = [offset + length for offset, length in asks.values()]
        datas = fs.cat_ranges(names, starts, ends, on_error="return") if names else []
        asks = {}
        for name, start, end, data in zip(names, starts, ends, datas):
            if isinstance(data, Exception):
                found[name] = "unreadable" if not isinstance(data, FileNotFoundError) else "file disappeared"
                continue
            pieces = files[name]
            pieces.add(start, data, end - start)
            try:
                found[name] = parse_header(pieces.get)
            except EOFError:
                found[name] = "cut short in its header"
            except _Need as need:
                if pieces.read + need.length > MAX_HEADER_BYTES:
                    found[name] = f"no image header within its first {MAX_HEADER_BYTES >> 20} MiB"
                else:
                    asks[name] = (need.offset, max(need.length, FIRST_READ))
    for name in asks:
        found[name] = f"no image header within its first {MAX_HEADER_BYTES >> 20} MiB"
    return found


def _png(get: Callable[[int, int], bytes]) -> Header | str:
    """IHDR (the first chunk), and any eXIf chunk before the image data (IDAT)."""
    length, kind = struct.unpack(">I4s", get(8, 8))
    if kind != b"IHDR" or length < 13:
        return "not a PNG file (no IHDR chunk first)"
    width, height, depth, colour = struct.unpack(">IIBB", get(16, 10))
    orientation, offset = 1, 8 + 12 + length
    while True:
        length, kind = struct.unpack(">I4s", get(offset, 8))
        if kind in (b"IDAT", b"IEND"):
            break
        if kind == b"eXIf":
            orientation = _orientation(get(offset + 8, length))
        offset += 12 + length
    if orientation in (5, 6, 7, 8):
        height, width = width, height
    return Header("PNG", height, width, depth, PNG_COLOURS.get(colour, f"colour type {colour}"))


def _jpeg(get: Callable[[int, int], bytes]) -> Header | str:
    """The markers up to the first frame header (SOFn), and an Exif APP1 segment on the way."""
    offset, orientation = 2, 1
    while True:
        marker = get(offset, 2)
        if marker[0] != 0xFF:
            return "not a JPEG file (no marker where one should be)"
        if marker[1] == 0xFF:  # fill byte
            offset += 1
            continue
        kind = marker[1]
        if kind == 0x01 or 0xD0 <= kind <= 0xD8:  # markers without a segment
            offset += 2
            continue
        if kind in (0xD9, 0xDA):
            return "not a JPEG file (no frame header before its image data)"
        (length,) = struct.unpack(">H", get(offset + 2, 2))
        if kind in _SOF:
            depth, height, width, components = struct.unpack(">BHHB", get(offset + 4, 6))
            if height == 0:
                return "a JPEG whose height comes after its image data (DNL), which cipherseg does not read"
            if orientation in (5, 6, 7, 8):
                height, width = width, height
            return Header("JPEG", height, width, depth, JPEG_COMPONENTS.get(components, f"{components} components"))
        if kind == 0xE1 and length > 8 and get(offset + 4, 6) == b"Exif\0\0":
            orientation = _orientation(get(offset + 10, length - 8))
        offset += 2 + length


def _orientation(tiff: bytes) -> int:
    """The orientation tag (0x0112) of IFD0 of an EXIF block (TIFF layout); 1 (as stored) if it has none."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    (first,) = struct.unpack(order + "I", tiff[4:8])
    if first + 2 > len(tiff):
        return 1
    (count,) = struct.unpack(order + "H", tiff[first : first + 2])
    for entry in range(first + 2, min(first + 2 + 12 * count, len(tiff) - 11), 12):
        tag, kind, _, value = struct.unpack(order + "HHI4s", tiff[entry : entry + 12])
        if tag == 0x0112 and kind == 3:  # SHORT
            return struct.unpack(order + "H", value[:2])[0]
    return 1
