import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from contract.query import PNG_RGB, PNG_SIGNATURE, QUERY_SIZE_TAG, QUERY_TAG, Query, QueryRefused, check_query, tag_text
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
        (lambda p: p.write_bytes(b"not a png"), "not a PNG or JPEG file"),
        (lambda p: cv2.imwrite(str(p), np.zeros((32, 32, 4), np.uint8)), "a 8-bit RGB with alpha PNG, not an 8-bit"),
        (lambda p: cv2.imwrite(str(p), np.zeros((32, 32, 3), np.uint16)), "a 16-bit RGB PNG, not an 8-bit"),
        (lambda p: p.mkdir(), "a directory, not an image file"),
        (lambda p: p.write_bytes(cv2.imencode(".png", np.zeros((32, 32, 3), np.uint8))[1].tobytes()[:60]), "cannot decode it"),
    ],
    ids=["not-png", "rgba", "16-bit", "directory", "truncated"],
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


def test_a_query_of_any_size_is_padded_and_names_its_size(tmp_path):
    """A JPEG or grey query of sides no multiple of the block size: padded black before encrypting, as the
    store's images, and its size before padding named for the cloud to crop its maps to."""
    key = keys.generate(negative_positive=True)
    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "photo.jpg"), image)
    cv2.imwrite(str(tmp_path / "grey.png"), image[..., 0])
    for source, (written,) in ((name, encrypt_queries([tmp_path / name], key, tmp_path / name.replace(".", "-"))) for name in ("photo.jpg", "grey.png")):
        decrypted = BlockCipher(key).decrypt(read_rgb(written))
        assert decrypted.shape == (32, 48, 3) and not decrypted[30:].any() and not decrypted[:, 40:].any()
        assert np.array_equal(decrypted[:30, :40], cv2.cvtColor(cv2.imread(str(tmp_path / source)), cv2.COLOR_BGR2RGB))
        assert Image.open(written).text[QUERY_SIZE_TAG] == "30x40"


def test_encrypt_query_refuses_an_encrypted_query(tmp_path):
    """Encrypting a query again would keep its tag and give the cloud ciphertext of ciphertext; refused."""
    key = keys.generate()
    image = np.random.default_rng(0).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    (sent,) = encrypt_queries([write_rgb(tmp_path / "q.png", image)], key, tmp_path / "once")
    with pytest.raises(PipelineError, match=f"^{sent}: already an encrypted query \\(it names key id {key.key_id}"):
        encrypt_queries([sent], key, tmp_path / "twice")
    assert not (tmp_path / "twice").exists()
    tagged = Image.open(sent)  # a tag that names no cipher is refused too: it is no plain image either
    info = PngInfo()
    info.add_text(QUERY_TAG, "{not json")
    tagged.save(tmp_path / "tagged.png", pnginfo=info)
    with pytest.raises(PipelineError, match="tagged.png: already tagged as a query \\(its cipherseg-cipher tag: not valid JSON"):
        encrypt_queries([tmp_path / "tagged.png"], key, tmp_path / "twice")


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
        assert check_query(data, SPEC, 16) == Query(32, 48, SPEC, (32, 48))
    assert check_query(png_claiming(32, 48), None, 16) == Query(32, 48, None, (32, 48))  # a plain model, a plain image
    with pytest.raises(QueryRefused, match="but the model reads images of plain"):
        check_query(before, None, 16)


def size_tag(text: str, kind: bytes = b"tEXt") -> bytes:
    return png_chunk(kind, QUERY_SIZE_TAG.encode() + b"\0" + text.encode())


@pytest.mark.parametrize(
    "chunks",
    [[size_tag("40x40")], [size_tag("16x32")], [size_tag("0x30")], [size_tag("30x")], [size_tag("3 0x30")],
     [size_tag("30x30"), size_tag("30x30")], [size_tag("30x30", b"zTXt")], [size_tag("30x30x1")], [size_tag("1" * 40 + "x30")]],
    ids=["larger", "a-block-less", "zero", "one-side", "space", "twice", "compressed", "three-sides", "long"],
)
def test_a_size_tag_is_one_size_before_padding_or_refused(chunks):
    """The size a padded query names is at most its own on each side, by less than a block: anything else
    would crop the map to what the image is not."""
    with pytest.raises(QueryRefused, match="its cipherseg-size tag is not one size before padding to 32x32") as refused:
        check_query(png_claiming(32, 32, tag(tag_text(SPEC)), *chunks), SPEC, 16)
    assert refused.value.reason == QueryRefused.SIZE_TAG
    assert check_query(png_claiming(32, 32, tag(tag_text(SPEC)), size_tag("17x32")), SPEC, 16).size == (17, 32)


def test_a_plain_image_for_a_plain_model_may_be_of_any_size():
    """The cloud pads a plain image as the owner pads the store's (its map cropped back); an encrypted query
    comes padded by the key-holder, so one of no whole blocks is refused."""
    assert check_query(png_claiming(30, 40), None, 16) == Query(30, 40, None, (30, 40))
    with pytest.raises(QueryRefused, match="image size 30x40 is not a multiple of the block size 16"):
        check_query(png_claiming(30, 40, tag(tag_text(SPEC))), SPEC, 16)
