import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pipeline import keys
from pipeline.cipher import BlockCipher
from pipeline.errors import PipelineError


def blocks_of(images: np.ndarray, p: int) -> np.ndarray:
    """Canonical block vectors (row, column, channel order) of an NxHxWx3 batch."""
    n, h, w, _ = images.shape
    return images.reshape(n, h // p, p, w // p, p, 3).transpose(0, 1, 3, 2, 4, 5).reshape(-1, 3 * p * p)


@st.composite
def keys_and_images(draw):
    p = draw(st.sampled_from([1, 2, 4, 8, 16]))
    key = keys.Key(draw(st.binary(min_size=32, max_size=32)), p, draw(st.booleans()))
    n = draw(st.integers(1, 2))
    h, w = p * draw(st.integers(1, 4)), p * draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    images = np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    return key, images


@settings(max_examples=60, deadline=None)
@given(keys_and_images())
def test_decrypt_inverts_encrypt(case):
    key, images = case
    cipher = BlockCipher(key)
    encrypted = cipher.encrypt(images)
    assert np.array_equal(cipher.decrypt(encrypted), images)
    assert np.array_equal(cipher.decrypt(cipher.encrypt(images[0])), images[0])


@settings(max_examples=30, deadline=None)
@given(keys_and_images())
def test_writing_into_a_given_array_gives_the_same_result(case):
    key, images = case
    cipher = BlockCipher(key)
    out = np.zeros_like(images)
    assert cipher.encrypt(images, out=out) is out
    assert np.array_equal(out, cipher.encrypt(images))
    back = np.zeros_like(images)
    assert cipher.decrypt(out, out=back) is back
    assert np.array_equal(back, images)


@pytest.mark.parametrize(
    "make_out, message",
    [
        (lambda images: images, "must not overlap"),
        (lambda images: np.zeros((2, 32, 32, 3), np.uint8), "shape"),
        (lambda images: np.zeros((1, 32, 64, 3), np.uint8)[:, :, ::2], "contiguous"),
        (lambda images: np.zeros(images.shape, np.int16), "uint8"),
    ],
)
def test_a_bad_output_array_is_refused(make_out, message):
    images = np.random.default_rng(3).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(PipelineError, match=message):
        BlockCipher(keys.generate()).encrypt(images, out=make_out(images))


@settings(max_examples=60, deadline=None)
@given(keys_and_images())
def test_matches_the_papers_definition(case):
    key, images = case
    vectors = blocks_of(images, key.block_size)[:, key.permutation]  # the paper's definition, written the obvious way
    if key.flip is not None:
        vectors = np.where(key.flip, 255 - vectors, vectors)
    n, h, w, _ = images.shape
    p = key.block_size
    expected = vectors.reshape(n, h // p, w // p, p, p, 3).transpose(0, 1, 3, 2, 4, 5).reshape(images.shape)
    assert np.array_equal(BlockCipher(key).encrypt(images), expected)


@settings(max_examples=40, deadline=None)
@given(keys_and_images())
def test_every_block_is_a_permutation_of_its_plain_block(case):
    key, images = case
    if key.negative_positive:
        key = keys.Key(key.secret, key.block_size)
    plain = np.sort(blocks_of(images, key.block_size), axis=1)
    encrypted = np.sort(blocks_of(BlockCipher(key).encrypt(images), key.block_size), axis=1)
    assert np.array_equal(plain, encrypted)


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_a_different_key_gives_a_different_ciphertext(secret_a, secret_b):
    assume(secret_a != secret_b)
    image = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    a = BlockCipher(keys.Key(secret_a, 16)).encrypt(image)
    b = BlockCipher(keys.Key(secret_b, 16)).encrypt(image)
    assert not np.array_equal(a, b)


def test_one_permutation_for_all_blocks():
    # An image made of one repeated block encrypts to one repeated block.
    block = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    image = np.tile(block, (3, 5, 1))
    encrypted = BlockCipher(keys.generate()).encrypt(image)
    assert np.array_equal(encrypted, np.tile(encrypted[:16, :16], (3, 5, 1)))
    assert not np.array_equal(encrypted[:16, :16], block)


def test_encryption_hides_the_image():
    ramp = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, :, None], (64, 256, 3)).copy()
    encrypted = BlockCipher(keys.generate()).encrypt(ramp)
    assert np.mean(encrypted != ramp) > 0.9


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((30, 32, 3), np.uint8), "not a multiple of the block size 16"),
        (np.zeros((32, 32), np.uint8), "HxWx3"),
        (np.zeros((32, 32, 4), np.uint8), "HxWx3"),
        (np.zeros((32, 32, 3), np.float32), "uint8"),
    ],
)
def test_bad_images_are_refused(images, message):
    with pytest.raises(PipelineError, match=message):
        BlockCipher(keys.generate()).encrypt(images)


def test_input_is_not_modified():
    image = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    before = image.copy()
    BlockCipher(keys.generate(16, True)).encrypt(image)
    assert np.array_equal(image, before)
