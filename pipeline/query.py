"""The user's side of serving: encrypt query images before they go to the cloud.

A query is what the encrypt stage accepts: an 8-bit RGB PNG whose sides are multiples of the block
size (and not a query already: an image that names a cipher is refused, so nothing is encrypted
twice). The encrypted image is PNG (lossless: the ciphertext must survive byte for byte), so that
reading it back as RGB gives the ciphertext the cloud's model expects, and names its cipher (public:
the key id and settings) in a text chunk, which the cloud checks against its model
(:mod:`contract.query`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from contract.formats import CipherSpec, describe_cipher
from contract.outputs import OutputKind, write_file
from contract.query import QUERY_TAG, QueryRefused, read_query as read_header, tag_text
from pipeline.cipher import BlockCipher
from pipeline.errors import PipelineError
from pipeline.keys import Key


def read_bytes(path: str | Path) -> bytes:
    """The bytes of an image file; PipelineError naming the file if it cannot be read."""
    path = Path(path)
    if path.is_dir():
        raise PipelineError(f"{path}: a directory, not an image file")
    try:
        return path.read_bytes()
    except OSError as error:
        raise PipelineError(f"{path}: cannot read ({error.strerror})") from None


def check_plain(data: bytes, block_size: int, where: str | Path) -> None:
    """Refuse what cannot become a query: no 8-bit RGB PNG of a size of whole blocks, or a query already."""
    try:
        cipher = read_header(data, block_size).cipher
    except QueryRefused as error:
        raise PipelineError(f"{where}: {error}") from None
    if cipher is not None:
        raise PipelineError(
            f"{where}: already an encrypted query (it names {describe_cipher(cipher)}); encrypt the plain image"
        )


def read_query(path: str | Path, block_size: int) -> np.ndarray:
    """An HxWx3 uint8 RGB image from a plain query file; PipelineError naming the file and the problem."""
    data = read_bytes(path)
    check_plain(data, block_size, path)
    return decode_rgb(data, path)


def decode_rgb(data: bytes, where: str | Path) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    if image is None:
        raise PipelineError(f"{where}: cannot decode PNG (truncated or corrupt)")
    return image


def encode_rgb(image: np.ndarray, cipher: CipherSpec | None = None) -> bytes:
    """An RGB image as PNG, naming ``cipher`` in its text chunk when given."""
    info = PngInfo()
    if cipher is not None:
        info.add_text(QUERY_TAG, tag_text(cipher))
    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(buffer, format="PNG", pnginfo=info, compress_level=1)
    return buffer.getvalue()


def write_rgb(path: str | Path, image: np.ndarray, cipher: CipherSpec | None = None) -> Path:
    """Write an RGB image as PNG, naming ``cipher`` in its text chunk when given."""
    return write_file(path, encode_rgb(image, cipher), OutputKind.PNG)


def encrypt_queries(images: Sequence[str | Path], key: Key, out: str | Path) -> list[Path]:
    """Encrypt each query image with ``key`` into ``out/<name>.png``; returns the written paths.

    Every query is checked before any is written.
    """
    plain = [read_query(path, key.block_size) for path in images]
    cipher = BlockCipher(key)
    return [
        write_rgb(Path(out) / f"{Path(path).stem}.png", cipher.encrypt(image), key.spec())
        for path, image in zip(images, plain)
    ]
