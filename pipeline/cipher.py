"""Block-wise image encryption (paper section III-B).

The image is split into non-overlapping PxP blocks; every block, flattened in the canonical
(row, column, channel) order, is shuffled by the key's one permutation, optionally followed by
the negative-positive transform on key-chosen positions. One permutation for all blocks is what
lets the encrypted patch embedding absorb the transform (see pipeline/weights.py).
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import PipelineError
from pipeline.keys import Key


_MAX_CACHED_WIDTHS = 8


def to_blocks(images: np.ndarray, block_size: int) -> np.ndarray:
    """The canonical block vectors of an NxHxWx3 batch, one row per block: shape (blocks, 3P²).

    The canonical order of a PxPx3 block is (row, column, channel): index (r * P + c) * 3 + ch.
    Keys (pipeline.keys), the fold into the patch embedding (pipeline.weights) and the audit's
    attacks all index block vectors this way; :class:`BlockCipher` applies the same transform
    without materializing the vectors.
    """
    n, h, w, _ = images.shape
    p = block_size
    return images.reshape(n, h // p, p, w // p, p, 3).transpose(0, 1, 3, 2, 4, 5).reshape(-1, 3 * p * p)


def from_blocks(vectors: np.ndarray, shape: tuple[int, ...], block_size: int) -> np.ndarray:
    """The NxHxWx3 batch of ``shape`` whose canonical block vectors are ``vectors`` (inverse of :func:`to_blocks`)."""
    n, h, w, _ = shape
    p = block_size
    return vectors.reshape(n, h // p, w // p, p, p, 3).transpose(0, 1, 3, 2, 4, 5).reshape(shape)


class BlockCipher:
    """Encrypts and decrypts uint8 RGB images, shaped HxWx3 or NxHxWx3, with one key."""

    def __init__(self, key: Key) -> None:
        self.key = key
        self.block_size = key.block_size
        # Per image width and direction; an owner's images have one or two widths. Kept with the
        # instance, so the key lives no longer than the cipher that uses it.
        self._bands: dict[tuple[int, bool], tuple[np.ndarray, np.ndarray | None]] = {}

    def encrypt(self, images: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The encrypted copy of ``images`` (written into ``out`` if given, which must not overlap
        ``images``); H and W must be multiples of the block size."""
        return self._apply(images, out, inverse=False)

    def decrypt(self, images: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The plain copy of encrypted ``images`` (into ``out`` if given); exact inverse of :meth:`encrypt`."""
        return self._apply(images, out, inverse=True)

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Raise PipelineError unless ``shape`` is an image (batch) this cipher can transform."""
        p = self.block_size
        if len(shape) not in (3, 4) or shape[-1] != 3:
            raise PipelineError(f"expected an HxWx3 image or an NxHxWx3 batch, got shape {shape}")
        height, width = shape[-3:-1]
        if height % p or width % p:
            raise PipelineError(
                f"image size {height}x{width} is not a multiple of the block size {p}; "
                "crop or pad the images before encrypting"
            )

    def _apply(self, images: np.ndarray, out: np.ndarray | None, inverse: bool) -> np.ndarray:
        if images.dtype != np.uint8:
            raise PipelineError(f"expected uint8 images, got {images.dtype}")
        self.check_shape(images.shape)
        source = np.ascontiguousarray(images)
        result = np.empty_like(source) if out is None else out
        if result.shape != source.shape or result.dtype != np.uint8 or not result.flags.c_contiguous:
            raise PipelineError(f"output must be a contiguous uint8 array of shape {source.shape}")
        if np.shares_memory(result, source):
            raise PipelineError("output must not overlap the input")
        width = source.shape[-2]
        if (width, inverse) not in self._bands:
            if len(self._bands) >= _MAX_CACHED_WIDTHS:
                self._bands.clear()
            self._bands[width, inverse] = _band_transform(self.key, width, inverse)
        index, xor = self._bands[width, inverse]
        # A band is P whole rows: contiguous, and every block of it is transformed by one
        # precomputed gather. The per-band index stays in cache, so this runs at memory speed.
        band = index.size
        for src, dst in zip(source.reshape(-1, band), result.reshape(-1, band)):
            np.take(src, index, out=dst, mode="clip")  # "clip" avoids the buffered "raise" mode
            if xor is not None:
                np.bitwise_xor(dst, xor, out=dst)
        return result


def _band_transform(key: Key, width: int, inverse: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Gather index and XOR mask that transform one band of P rows of a ``width``-wide image.

    Encryption: out[pos(b, k)] = in[pos(b, perm[k])], then XOR 255 where flip[k].
    Decryption: out[pos(b, j)] = in[pos(b, inv[j])] XOR 255 where flip[inv[j]].
    """
    p = key.block_size
    # Where each canonical position (to_blocks) of a block lies in a band of P rows of the image.
    rows, cols, channels = np.unravel_index(np.arange(key.vector_length), (p, p, 3))
    offset_in_block = (rows * width + cols) * 3 + channels
    block_starts = np.arange(width // p) * p * 3
    position = block_starts[:, None] + offset_in_block[None, :]  # (blocks, 3P²) band offsets

    perm = key.permutation
    source = np.argsort(perm) if inverse else perm
    index = np.empty(position.size, dtype=np.intp)
    index[position] = position[:, source]

    xor = None
    if key.flip is not None:
        flipped = key.flip[source] if inverse else key.flip
        xor = np.zeros(position.size, dtype=np.uint8)
        xor[position] = np.where(flipped, 255, 0).astype(np.uint8)[None, :]
    return index, xor
