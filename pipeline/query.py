"""The user's side of serving: encrypt query images before they go to the cloud.

A query is what the encrypt stage accepts: an 8-bit PNG or JPEG image of any size (and not a query
already: an image that names a cipher is refused, so nothing is encrypted twice), padded like the
store's images (black, at the bottom and right, to multiples of the block size). The encrypted image
is PNG (lossless: the ciphertext must survive byte for byte), so that reading it back as RGB gives
the ciphertext the cloud's model expects; it names its cipher (public: the key id and settings),
which the cloud checks against its model, and a padded one its size before padding, to which the
cloud crops its maps (:mod:`contract.query`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from contract.formats import CipherSpec, describe_cipher, padded_size
from contract.outputs import OutputKind, write_file
from contract.query import QUERY_SIZE_TAG, QUERY_TAG, QueryRefused, named_cipher, tag_text
from pipeline.cipher import BlockCipher
from pipeline.errors import PipelineError
from pipeline.headers import Header, header_of
from pipeline.inputs import image_problem
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


def check_plain(data: bytes, where: str | Path) -> Header:
    """The header of an image that can become a query; refused: no image the encrypt stage takes, or a query already."""
    header = header_of(data)
    problem = image_problem(header)
    if problem:
        raise PipelineError(f"{where}: {problem}")
    try:
        cipher = named_cipher(data)
    except QueryRefused as error:
        raise PipelineError(f"{where}: already tagged as a query ({error}); encrypt the plain image") from None
    if cipher is not None:
        raise PipelineError(
            f"{where}: already an encrypted query (it names {describe_cipher(cipher)}); encrypt the plain image"
        )
    return header


def plain_image(data: bytes, where: str | Path, block_size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The RGB image (H, W, 3 uint8) of checked image bytes, padded to multiples of ``block_size``, and its
    size before padding."""
    header = check_plain(data, where)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    if image is None or image.shape[:2] != header.size:
        raise PipelineError(f"{where}: cannot decode it (truncated or corrupt)")
    padded = np.zeros((*padded_size(header.size, block_size), 3), np.uint8)
    padded[: header.height, : header.width] = image
    return padded, header.size


def encode_rgb(image: np.ndarray, cipher: CipherSpec | None = None, size: tuple[int, int] | None = None) -> bytes:
    """An RGB image as PNG, naming ``cipher`` in its text chunk when given, and ``size`` (the image's size
    before padding) when it differs from the image's own."""
    info = PngInfo()
    if cipher is not None:
        info.add_text(QUERY_TAG, tag_text(cipher))
    if size is not None and tuple(size) != image.shape[:2]:
        info.add_text(QUERY_SIZE_TAG, f"{size[0]}x{size[1]}")
    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(buffer, format="PNG", pnginfo=info, compress_level=1)
    return buffer.getvalue()


def write_rgb(path: str | Path, image: np.ndarray, cipher: CipherSpec | None = None, size: tuple[int, int] | None = None) -> Path:
    """Write an RGB image as PNG, as :func:`encode_rgb` encodes it."""
    return write_file(path, encode_rgb(image, cipher, size), OutputKind.PNG)


def encrypt_queries(images: Sequence[str | Path], key: Key, out: str | Path) -> list[Path]:
    """Encrypt each query image with ``key`` into ``out/<name>.png``; returns the written paths.

    Every query is checked before any is written.
    """
    plain = [plain_image(read_bytes(path), path, key.block_size) for path in images]
    cipher = BlockCipher(key)
    return [
        write_rgb(Path(out) / f"{Path(path).stem}.png", cipher.encrypt(image), key.spec(), size)
        for path, (image, size) in zip(images, plain)
    ]
