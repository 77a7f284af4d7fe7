import numpy as np
import pytest

from pipeline import keys
from pipeline.cipher import BlockCipher
from pipeline.errors import PipelineError
from pipeline.query import encrypt_queries, read_rgb, write_rgb
from pipeline.run import main


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


def test_bad_queries_name_the_file(tmp_path):
    key = keys.generate()
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(PipelineError, match="broken.png: not a readable image"):
        encrypt_queries([tmp_path / "broken.png"], key, tmp_path / "out")
    odd = write_rgb(tmp_path / "odd.png", np.zeros((30, 32, 3), np.uint8))
    with pytest.raises(PipelineError, match="odd.png: .*not a multiple of the block size"):
        encrypt_queries([odd], key, tmp_path / "out")


def test_cli_encrypts_queries(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--stage", "keygen"]) == 0
    image = np.random.default_rng(0).integers(0, 256, (16, 32, 3), dtype=np.uint8)
    write_rgb("query.png", image)
    assert main(["--stage", "encrypt-query", "--query", "query.png", "--out", "sent"]) == 0
    decrypted = BlockCipher(keys.load("data/owner/key.json")).decrypt(read_rgb("sent/query.png"))
    assert np.array_equal(decrypted, image)
