import cv2
import numpy as np
import pytest
from PIL import Image

from contract.formats import QUERY_SIZE_TAG
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
