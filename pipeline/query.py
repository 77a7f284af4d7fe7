"""The user's side of serving: encrypt query images before they go to the cloud.

A query is what the encrypt stage accepts: an 8-bit PNG or JPEG image of any size, padded like the
store's images (black, at the bottom and right, to multiples of the block size). The encrypted image
is written as PNG (lossless: the ciphertext must survive byte for byte), so that reading it back as RGB
gives the ciphertext the cloud's model expects; it names its cipher (public: the key id and settings)
in a text chunk, which the cloud checks against its model, and a padded one its size before padding,
to which the cloud crops its maps.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from contract.formats import QUERY_SIZE_TAG, QUERY_TAG, CipherSpec, padded_size
from contract.outputs import OutputKind, write_file

from pipeline.cipher import BlockCipher
from pipeline.errors import PipelineError
from pipeline.headers import header_of
from pipeline.inputs import image_problem
from pipeline.keys import Key


def read_query(path: str | Path, block_size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """An HxWx3 uint8 RGB image from a query file, padded to multiples of ``block_size``, and its size
    before padding; PipelineError naming the file and the problem."""
    path = Path(path)
    if path.is_dir():
        raise PipelineError(f"{path}: a directory, not an image file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise PipelineError(f"{path}: cannot read ({error.strerror})") from None
    header = header_of(data)
    problem = image_problem(header)
    if problem:
        raise PipelineError(f"{path}: {problem}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    if image is None or image.shape[:2] != header.size:
        raise PipelineError(f"{path}: cannot decode it (truncated or corrupt)")
    padded = np.zeros((*padded_size(header.size, block_size), 3), np.uint8)
    padded[: header.height, : header.width] = image
    return padded, header.size


def write_rgb(path: str | Path, image: np.ndarray, cipher: CipherSpec | None = None, size: tuple[int, int] | None = None) -> Path:
    """Write an RGB image as PNG, naming ``cipher`` in its text chunk when given, and ``size`` (the
    image's size before padding, when it differs)."""
    info = PngInfo()
    if cipher is not None:
        info.add_text(QUERY_TAG, cipher.model_dump_json())
    if size is not None and size != image.shape[:2]:
        info.add_text(QUERY_SIZE_TAG, f"{size[0]}x{size[1]}")
    png = io.BytesIO()
    Image.fromarray(image, "RGB").save(png, format="PNG", pnginfo=info, compress_level=1)
    return write_file(path, png.getvalue(), OutputKind.PNG)


def encrypt_queries(images: Sequence[str | Path], key: Key, out: str | Path) -> list[Path]:
    """Encrypt each query image with ``key`` into ``out/<name>.png``; returns the written paths.

    Every query is checked before any is written.
    """
    plain = [read_query(path, key.block_size) for path in images]
    cipher = BlockCipher(key)
    return [
        write_rgb(Path(out) / f"{Path(path).stem}.png", cipher.encrypt(image), key.spec(), size)
        for path, (image, size) in zip(images, plain)
    ]
