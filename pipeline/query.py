"""The user's side of serving: encrypt query images before they go to the cloud.

A query is what the encrypt stage accepts: an 8-bit RGB PNG whose sides are multiples of the block
size. The encrypted image is written as PNG (lossless: the ciphertext must survive byte for byte),
so that reading it back as RGB gives the ciphertext the cloud's model expects, and names its cipher
(public: the key id and settings) in a text chunk, which the cloud checks against its model.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from contract.formats import QUERY_TAG, CipherSpec
from contract.outputs import OutputKind, write_file

from pipeline.cipher import BlockCipher
from pipeline.errors import PipelineError
from pipeline.inputs import PNG_HEADER_BYTES, image_problem, png_header
from pipeline.keys import Key


def read_query(path: str | Path, block_size: int) -> np.ndarray:
    """An HxWx3 uint8 RGB image from a query file; PipelineError naming the file and the problem."""
    path = Path(path)
    if path.is_dir():
        raise PipelineError(f"{path}: a directory, not an image file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise PipelineError(f"{path}: cannot read ({error.strerror})") from None
    problem = image_problem(png_header(data[:PNG_HEADER_BYTES]), block_size)
    if problem:
        raise PipelineError(f"{path}: {problem}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    if image is None:
        raise PipelineError(f"{path}: cannot decode PNG (truncated or corrupt)")
    return image


def write_rgb(path: str | Path, image: np.ndarray, cipher: CipherSpec | None = None) -> Path:
    """Write an RGB image as PNG, naming ``cipher`` in its text chunk when given."""
    info = PngInfo()
    if cipher is not None:
        info.add_text(QUERY_TAG, cipher.model_dump_json())
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
        write_rgb(Path(out) / f"{Path(path).stem}.png", cipher.encrypt(image), key.spec())
        for path, image in zip(images, plain)
    ]
