"""Image cipher speed on one 1024x2048x3 image, against np.copy and the straightforward version.

Targets: at least 6x the straightforward reshape/transpose/fancy-index implementation and at
least 1.5 GB/s on one core.
"""

import time

import numpy as np

from pipeline import keys
from pipeline.cipher import BlockCipher, from_blocks, to_blocks


def straightforward_encrypt(images: np.ndarray, key: keys.Key) -> np.ndarray:
    """The paper's definition written the obvious way: blocks to vectors, fancy-index, back."""
    batch = images.reshape(-1, *images.shape[-3:])
    vectors = to_blocks(batch, key.block_size)[:, key.permutation]
    if key.flip is not None:
        vectors = np.where(key.flip, 255 - vectors, vectors).astype(np.uint8)
    return from_blocks(vectors, batch.shape, key.block_size).reshape(images.shape)


def best_seconds(fn, repeats: int = 15) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    image = np.random.default_rng(0).integers(0, 256, (1024, 2048, 3), dtype=np.uint8)
    for negative_positive in (False, True):
        key = keys.generate(16, negative_positive)
        cipher = BlockCipher(key)
        copy = best_seconds(lambda: np.copy(image))
        naive = best_seconds(lambda: straightforward_encrypt(image, key))
        fast = best_seconds(lambda: cipher.encrypt(image))
        gbs = image.nbytes / fast / 1e9
        print(f"negative_positive={negative_positive}")
        print(f"  np.copy          {copy * 1e3:7.2f} ms")
        print(f"  straightforward  {naive * 1e3:7.2f} ms")
        print(f"  BlockCipher      {fast * 1e3:7.2f} ms  {gbs:.2f} GB/s (target >= 1.5)")
        print(f"  speed-up over straightforward: {naive / fast:.1f}x (target >= 6)")
        print(f"  cost relative to np.copy:      {fast / copy:.1f}x")


if __name__ == "__main__":
    main()
