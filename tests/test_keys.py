import collections
import json
import os
import stat

import numpy as np
import pytest

from pipeline import keys
from pipeline.errors import PipelineError

# Known-answer vector: a fixed secret and what the keystream must derive from it on every machine
# and Python version. If this fails, every dataset encrypted so far has become undecryptable.
KNOWN_SECRET = bytes(range(32))
KNOWN_KEY_ID = "0d486da341822e8d15a1297567c47b06"
KNOWN_PERMUTATION_P16 = [414, 240, 357, 545, 611, 725, 250, 696, 652, 215, 242, 58, 758, 49, 520, 499]
KNOWN_PERMUTATION_P2 = [11, 7, 0, 3, 4, 9, 6, 5, 1, 10, 2, 8]
KNOWN_FLIPS_P16 = [0, 2, 3, 4, 6, 8, 9, 11]


def test_known_answer_vector():
    key = keys.Key(KNOWN_SECRET, 16)
    assert key.key_id == KNOWN_KEY_ID
    assert key.permutation[:16].tolist() == KNOWN_PERMUTATION_P16
    assert keys.Key(KNOWN_SECRET, 2).permutation.tolist() == KNOWN_PERMUTATION_P2
    flips = keys.Key(KNOWN_SECRET, 16, negative_positive=True).flip
    assert np.flatnonzero(flips)[:8].tolist() == KNOWN_FLIPS_P16


def test_permutation_is_a_permutation_and_depends_on_the_key():
    a, b = keys.generate(), keys.generate()
    assert sorted(a.permutation.tolist()) == list(range(768))
    assert not np.array_equal(a.permutation, b.permutation)
    assert a.key_id != b.key_id
    assert a.flip is None


def test_key_id_binds_the_settings():
    ids = {keys.Key(KNOWN_SECRET, p, np_).key_id for p in (8, 16) for np_ in (False, True)}
    assert len(ids) == 4


def test_shuffle_is_unbiased():
    # P = 1 gives vectors of 3 values: all 6 permutations must be equally likely.
    counts = collections.Counter(
        tuple(keys.Key(i.to_bytes(32, "big"), 1).permutation) for i in range(6000)
    )
    assert len(counts) == 6
    expected = 1000
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 20.5  # p = 0.001 for 5 degrees of freedom


def test_flip_mask_is_balanced():
    flips = keys.generate(16, negative_positive=True).flip
    assert 300 < flips.sum() < 468


def test_save_writes_owner_only_file_and_load_round_trips(tmp_path):
    key = keys.generate(8, negative_positive=True)
    path = keys.save(key, tmp_path / "owner" / "key.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert keys.load(path) == key


def test_save_refuses_to_overwrite(tmp_path):
    path = keys.save(keys.generate(), tmp_path / "key.json")
    before = path.read_bytes()
    with pytest.raises(PipelineError, match="already exists"):
        keys.save(keys.generate(), path)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "folder, marker, configured",
    [
        ("bundle", "manifest.json", False),  # a published bundle
        ("bundle", "manifest.sig", False),
        ("bundle", None, True),  # a bundle location before its first publish (the configured --bundle)
        ("store", "zarr.json", False),  # a dataset store
        ("dataset.zarr", None, False),  # a store's folder before its first encrypt run
    ],
)
def test_save_refuses_to_write_inside_a_store_or_bundle(tmp_path, folder, marker, configured):
    root = tmp_path / folder
    root.mkdir()
    if marker:
        (root / marker).write_text("{}")
    target = root / "sub" / "key.json"
    with pytest.raises(PipelineError, match="inside the dataset store or bundle"):
        keys.save(keys.generate(), target, not_inside=[root] if configured else [])
    assert not target.exists()
    assert keys.save(keys.generate(), tmp_path / "elsewhere" / "key.json", not_inside=[root]).exists()


def test_the_signing_key_is_derived_from_the_secret():
    """Existing key files keep working: one secret gives one signer, and distinct secrets distinct signers."""
    key = keys.Key(KNOWN_SECRET, 16)
    assert key.signer() == keys.Key(KNOWN_SECRET, 16).signer()
    assert key.signer() != keys.generate().signer()
    message = b"a manifest"
    assert key.signer().verifies(message, key.sign(message))
    assert not key.signer().verifies(message + b".", key.sign(message))
    assert not keys.generate().signer().verifies(message, key.sign(message))


def test_secret_patterns_find_every_encoding_of_the_secret():
    import base64

    key = keys.generate()
    patterns = key.secret_patterns()
    secret = key.secret
    encodings = [secret, secret.hex().encode(), secret.hex().upper().encode()]
    for prefix in (b"", b"x", b"xy", b"xyz"):  # every alignment inside a longer base64 text
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(prefix + secret + b"tail")
            encodings += [text, text.rstrip(b"=")]
    for encoded in encodings:
        assert any(pattern in b"..." + encoded + b"..." for pattern in patterns.values()), encoded
    assert min(map(len, patterns.values())) >= 32  # no short pattern: no false alarms on random data
    assert not any(pattern in os.urandom(1 << 20) for pattern in patterns.values())


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json", "not valid JSON"),
        ('{"format": "something-else"}', "not a cipherseg-key"),
        ('{"format": "cipherseg-key", "version": 99}', "version 99"),
        ('{"format": "cipherseg-key", "version": 1, "secret": "abcd"}', "secret: not 64 lower-case hex digits"),
        ("[" * 2000 + "]" * 2000, "not valid JSON \\(recursion limit exceeded"),
        ('{"format": "cipherseg-key", "version": 1, "secret": "' + "ab" * 32 + '", "key_id": "' + "0" * 32
         + '", "block_size": 16, "negative_positive": false, "note": 1}', "'note' is no field of this format"),
    ],
)
def test_load_rejects_bad_files(tmp_path, content, message):
    path = tmp_path / "key.json"
    path.write_text(content)
    with pytest.raises(PipelineError, match=message) as error:
        keys.load(path)
    assert str(path) in str(error.value)


def test_load_detects_a_corrupted_secret(tmp_path):
    path = keys.save(keys.generate(), tmp_path / "key.json")
    document = json.loads(path.read_text())
    document["secret"] = ("0" if document["secret"][0] != "0" else "1") + document["secret"][1:]
    path.write_text(json.dumps(document))
    with pytest.raises(PipelineError, match="key id does not match"):
        keys.load(path)


def test_load_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(PipelineError, match="keygen"):
        keys.load(tmp_path / "absent.json")
