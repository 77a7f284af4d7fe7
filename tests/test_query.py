import struct
import zlib

import cv2
import numpy as np
import pytest

from contract.query import PNG_RGB, PNG_SIGNATURE, QUERY_TAG, Query, QueryRefused, check_query, tag_text
from pipeline import keys
from pipeline.cipher import BlockCipher
from pipeline.errors import PipelineError
from pipeline.query import encrypt_queries, write_rgb
from pipeline.run import main


def read_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_encrypted_queries_decrypt_to_the_originals(tmp_path):
    key = keys.generate()
    images = [np.random.default_rng(i).integers(0, 256, (32, 64, 3), dtype=np.uint8) for i in range(2)]
    paths = [write_rgb(tmp_path / f"q{i}.png", image) for i, image in enumerate(images)]
    written = encrypt_queries(paths, key, tmp_path / "out")
    assert [p.name for p in written] == ["q0.png", "q1.png"]
    for image, path in zip(images, written):
        encrypted = read_rgb(path)
        assert not np.array_equal(encrypted, image)
        assert np.array_equal(BlockCipher(key).decrypt(encrypted), image)


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda p: p.write_bytes(b"not a png"), "not a PNG file"),
        (lambda p: cv2.imwrite(str(p), np.zeros((30, 32, 3), np.uint8)), "image size 30x32 is not a multiple of the block size 16"),
        (lambda p: cv2.imwrite(str(p), np.zeros((32, 32, 4), np.uint8)), "not an 8-bit RGB PNG .*with alpha"),
        (lambda p: cv2.imwrite(str(p), np.zeros((32, 32, 3), np.uint16)), "not an 8-bit RGB PNG \\(bit depth 16"),
        (lambda p: cv2.imwrite(str(p), np.zeros((32, 32), np.uint8)), "not an 8-bit RGB PNG \\(bit depth 8, colour type 0"),
        (lambda p: cv2.imwrite(str(p.with_suffix(".jpg")), np.zeros((32, 32, 3), np.uint8)) and p.with_suffix(".jpg").rename(p), "not a PNG file"),
        (lambda p: p.mkdir(), "a directory, not an image file"),
        (lambda p: p.write_bytes(cv2.imencode(".png", np.zeros((32, 32, 3), np.uint8))[1].tobytes()[:60]), "cannot decode PNG"),
    ],
    ids=["not-png", "odd-size", "rgba", "16-bit", "grey", "jpeg", "directory", "truncated"],
)
def test_encrypt_query_refuses_what_encrypt_refuses(tmp_path, write, message):
    """Queries are held to the encrypt stage's rules; nothing is written if any query is bad."""
    key = keys.generate()
    good = write_rgb(tmp_path / "good.png", np.zeros((32, 32, 3), np.uint8))
    bad = tmp_path / "bad.png"
    write(bad)
    with pytest.raises(PipelineError, match=f"^{bad}: {message}"):
        encrypt_queries([good, bad], key, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_encrypts_queries(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--stage", "keygen"]) == 0
    image = np.random.default_rng(0).integers(0, 256, (16, 32, 3), dtype=np.uint8)
    write_rgb("query.png", image)
    assert main(["--stage", "encrypt-query", "--query", "query.png", "--out", "sent"]) == 0
    decrypted = BlockCipher(keys.load("data/owner/key.json")).decrypt(read_rgb("sent/query.png"))
    assert np.array_equal(decrypted, image)


def test_encrypt_query_refuses_an_encrypted_query(tmp_path):
    """Encrypting a query again would keep its tag and give the cloud ciphertext of ciphertext; refused."""
    key = keys.generate()
    image = np.random.default_rng(0).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    (sent,) = encrypt_queries([write_rgb(tmp_path / "q.png", image)], key, tmp_path / "once")
    with pytest.raises(PipelineError, match=f"^{sent}: already an encrypted query \\(it names key id {key.key_id}"):
        encrypt_queries([sent], key, tmp_path / "twice")
    assert not (tmp_path / "twice").exists()


# --- the check both sides call ---------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(height: int, width: int, *chunks: bytes, depth: int = 8, colour: int = PNG_RGB) -> bytes:
    """A PNG's signature, IHDR and the given chunks, without image data: all the check reads."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
    return PNG_SIGNATURE + header + b"".join(chunks) + png_chunk(b"IEND", b"")


def tag(text: str | bytes, kind: bytes = b"tEXt") -> bytes:
    text = text.encode("latin-1") if isinstance(text, str) else text
    return png_chunk(kind, QUERY_TAG.encode() + b"\0" + text)


SPEC = keys.generate().spec()
OTHER = keys.generate(negative_positive=True).spec()


@pytest.mark.parametrize(
    "data, reason, message",
    [
        (b"GIF89a" + bytes(40), QueryRefused.NOT_PNG, "not a PNG file"),
        (png_claiming(32, 32, depth=16), QueryRefused.NOT_RGB8, "not an 8-bit RGB PNG \\(bit depth 16"),
        (png_claiming(32, 32, colour=6), QueryRefused.NOT_RGB8, "not an 8-bit RGB PNG .*with alpha"),
        (png_claiming(32, 40), QueryRefused.SIZE, "image size 32x40 is not a multiple of the block size 16"),
        (png_claiming(1048576, 1048576), QueryRefused.SIZE, "image size 1048576x1048576 is larger than cipherseg decodes \\(16777216 pixels at most"),
        (png_claiming(32, 32), QueryRefused.PLAIN, "names no key .*but the model reads images of key id"),
        (png_claiming(32, 32, tag(tag_text(OTHER))), QueryRefused.OTHER_KEY, f"a query of key id {OTHER.key_id} .* but the model reads images of key id {SPEC.key_id}"),
        (png_claiming(32, 32, tag("{not json")), QueryRefused.TAG, "its cipherseg-cipher tag: not valid JSON"),
        (png_claiming(32, 32, tag("[" * 5000 + "]" * 5000)), QueryRefused.TAG, "its cipherseg-cipher tag: not valid JSON \\(recursion limit exceeded"),
        (png_claiming(32, 32, tag('"a string"')), QueryRefused.TAG, "its cipherseg-cipher tag: expected a JSON object"),
        (png_claiming(32, 32, tag('{"key_id": "00"}')), QueryRefused.TAG, "its cipherseg-cipher tag: key_id: not 32 lower-case hex digits"),
        (png_claiming(32, 32, tag("null")), QueryRefused.TAG, "its cipherseg-cipher tag: expected a JSON object"),
        (png_claiming(32, 32, tag(tag_text(SPEC)), tag(tag_text(SPEC))), QueryRefused.TAGGED_TWICE, "names a cipher 2 times"),
        (png_claiming(32, 32, tag(b"\0\0" + zlib.compress(tag_text(SPEC).encode()), b"zTXt")), QueryRefused.TAG, "in a zTXt chunk"),
    ],
    ids=["not-png", "16-bit", "rgba", "odd-size", "huge", "plain", "other-key", "not-json", "deep",
         "not-object", "bad-spec", "null", "twice", "compressed"],  # fmt: skip
)
def test_check_query_refuses_from_the_bytes_alone(data, reason, message):
    """Every refusal is one line with its reason, read from the header and the chunk list: nothing is decoded
    (the 1048576x1048576 header has no image data to decode)."""
    with pytest.raises(QueryRefused, match=message) as refused:
        check_query(data, SPEC, 16)
    assert refused.value.reason == reason and "\n" not in str(refused.value)


def test_check_query_takes_a_query_of_the_models_cipher_wherever_its_tag_is():
    before = png_claiming(32, 48, tag(tag_text(SPEC)), png_chunk(b"IDAT", b"x" * 10))
    after = png_claiming(32, 48, png_chunk(b"IDAT", b"x" * 10), tag(tag_text(SPEC)))
    for data in (before, after):
        assert check_query(data, SPEC, 16) == Query(32, 48, SPEC)
    assert check_query(png_claiming(32, 48), None, 16) == Query(32, 48, None)  # a plain model, a plain image
    with pytest.raises(QueryRefused, match="but the model reads images of plain"):
        check_query(before, None, 16)
