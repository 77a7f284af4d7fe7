"""The user's side of serving: encrypt query images before they go to the cloud.

Images are PNG files read as RGB; the encrypted images are written as PNG so that reading them
back as RGB gives the ciphertext the cloud's model expects (the bundle's channel order is RGB).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from pipeline.cipher import BlockCipher
from pipeline.errors import PipelineError
from pipeline.keys import Key


def read_rgb(path: str | Path) -> np.ndarray:
    """An HxWx3 uint8 RGB image from an image file; PipelineError naming the file otherwise."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise PipelineError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_rgb(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB image as PNG (lossless: the ciphertext must survive byte for byte)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise PipelineError(f"{path}: could not write the image")
    return path


def encrypt_queries(images: Sequence[str | Path], key: Key, out: str | Path) -> list[Path]:
    """Encrypt each query image with ``key`` into ``out/<name>.png``; returns the written paths."""
    cipher = BlockCipher(key)
    written = []
    for path in map(Path, images):
        plain = read_rgb(path)
        try:
            encrypted = cipher.encrypt(plain)
        except PipelineError as error:
            raise PipelineError(f"{path}: {error}") from None
        written.append(write_rgb(Path(out) / f"{path.stem}.png", encrypted))
    return written
