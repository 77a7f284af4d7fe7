import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import audit, keys, sample
from pipeline.audit import KeyEstimate
from pipeline.cipher import BlockCipher, from_blocks, to_blocks
from pipeline.errors import PipelineError
from pipeline.run import main

SECRET = bytes(range(32))


def street_scenes(root, count, size):
    """``count`` images of the synthetic sample: smooth and colourful like photographs."""
    sample.write_sample(root, counts={"val": count}, size=size, seed=3)
    return audit.read_images(str(root), count)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return street_scenes(tmp_path_factory.mktemp("sample"), 4, (64, 128))


def noise(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("negative_positive", [False, True])
def test_the_keys_own_transform_decrypts_like_the_cipher(negative_positive):
    key = keys.Key(SECRET, 8, negative_positive)
    images = noise((2, 16, 24, 3))
    encrypted = BlockCipher(key).encrypt(images)
    exact = KeyEstimate(8, key.permutation, key.flip)
    assert np.array_equal(audit.decrypt_estimate(encrypted, exact), images)
    assert audit.fraction_correct(exact, key) == 1.0
    assert np.array_equal(from_blocks(to_blocks(images, 8), images.shape, 8), images)


def test_ssim_and_psnr():
    image = noise((32, 32, 3))
    assert audit.ssim(image, image) == pytest.approx(1.0)
    assert abs(audit.ssim(image, noise((32, 32, 3), seed=1))) < 0.1
    assert audit.psnr(image, np.clip(image.astype(int) + 1, 0, 255)) > 45


def test_encryption_hides_the_image_but_not_its_thumbnail(scenes):
    shuffle, inverted = keys.Key(SECRET, 8, False), keys.Key(SECRET, 8, True)
    plain_thumbnail = audit.block_means(scenes, 8)
    assert audit.visual_protection(scenes, shuffle)["ssim"] < 0.3
    assert audit.visual_protection(scenes, inverted)["ssim"] < audit.visual_protection(scenes, shuffle)["ssim"]
    assert np.allclose(audit.block_means(BlockCipher(shuffle).encrypt(scenes), 8), plain_thumbnail)
    # Inversions blur the thumbnail as read, but the attacker estimates them from the ciphertext:
    # exactly right up to one global inversion.
    encrypted = BlockCipher(inverted).encrypt(scenes)
    normalised = audit.block_means(encrypted, 8, audit.estimate_flips(encrypted, 8))
    assert np.allclose(normalised, plain_thumbnail) or np.allclose(255 - normalised, plain_thumbnail)


@settings(max_examples=30, deadline=None)
@given(
    p=st.sampled_from([2, 4, 8]),
    negative_positive=st.booleans(),
    secret=st.binary(min_size=32, max_size=32),
    seed=st.integers(0, 2**32 - 1),
)
def test_one_known_pair_with_distinct_columns_recovers_the_whole_key(p, negative_positive, secret, seed):
    key = keys.Key(secret, p, negative_positive)
    plain = noise((1, 4 * p, 4 * p, 3), seed)  # 16 random blocks: no two positions agree in all of them
    estimate, recovered = audit.known_plaintext_attack(plain, BlockCipher(key).encrypt(plain), p, negative_positive)
    assert recovered.all()
    assert audit.fraction_correct(estimate, key) == 1.0


@pytest.mark.parametrize("negative_positive", [False, True])
def test_known_plaintext_cannot_tell_apart_positions_that_always_agree(negative_positive):
    key = keys.Key(SECRET, 8, negative_positive)
    cipher = BlockCipher(key)
    plain = noise((3, 32, 32, 3))
    plain[..., 1] = plain[..., 0]  # red equals green everywhere: only blue positions are unique
    encrypted = cipher.encrypt(plain)
    estimate, recovered = audit.known_plaintext_attack(plain[:1], encrypted[:1], 8, negative_positive)
    blue = key.permutation % 3 == 2
    assert np.array_equal(recovered, blue)
    assert (estimate.permutation[recovered] == key.permutation[recovered]).all()
    # The guesses are consistent: images with the same ambiguity decrypt exactly.
    assert np.array_equal(audit.decrypt_estimate(encrypted[1:], estimate), plain[1:])
    with pytest.raises(ValueError, match="not encryptions"):
        audit.known_plaintext_attack(plain[:1], encrypted[1:2], 8, negative_positive)


@pytest.mark.parametrize("negative_positive", [False, True])
def test_ciphertext_only_attack_recovers_the_key_from_natural_images(scenes, negative_positive):
    key = keys.Key(SECRET, 8, negative_positive)
    encrypted = BlockCipher(key).encrypt(scenes)
    best = audit.best_variant(audit.ciphertext_only_attack(encrypted[:2], 8, negative_positive), key)
    assert audit.fraction_correct(best, key) > 0.9
    assert audit.ssim(scenes, audit.decrypt_estimate(encrypted, best)) > 0.9


def test_ciphertext_only_attack_at_block_size_16_from_one_image(tmp_path):
    image = street_scenes(tmp_path, 1, (256, 512))
    key = keys.Key(SECRET, 16, False)
    encrypted = BlockCipher(key).encrypt(image)
    best = audit.best_variant(audit.ciphertext_only_attack(encrypted, 16, False), key)
    assert audit.fraction_correct(best, key) > 0.9


def test_ciphertext_only_attack_is_at_chance_on_white_noise():
    key = keys.Key(SECRET, 8, True)
    images = noise((4, 64, 64, 3))
    encrypted = BlockCipher(key).encrypt(images)
    best = audit.best_variant(audit.ciphertext_only_attack(encrypted, 8, True), key)
    # Chance is 1 of 192 positions, a few more at best of the 12 variants scored.
    assert audit.fraction_correct(best, key) < 0.03
    assert audit.ssim(images, audit.decrypt_estimate(encrypted, best)) < 0.1


def test_report_on_the_sample(scenes, tmp_path):
    report = audit.write_report(scenes[:3], keys.Key(SECRET, 8, True), tmp_path / "audit")
    results = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert (tmp_path / "audit" / "figure.png").stat().st_size > 0
    text = report.read_text()
    for name in audit.SETTINGS.values():
        assert name in text
        assert [r["pairs"] for r in results[name]["known_plaintext"]] == [1, 2]
        assert [r["images"] for r in results[name]["ciphertext_only"]] == [1, 2, 3]
    assert results["shuffle + negative-positive"]["key_setting"] and not results["shuffle"]["key_setting"]
    assert SECRET.hex() not in json.dumps(results)


def test_report_refuses_a_bundle_and_too_few_images(scenes, tmp_path):
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "manifest.json").write_text("{}")
    key = keys.Key(SECRET, 8, False)
    with pytest.raises(PipelineError, match="inside the bundle"):
        audit.write_report(scenes, key, tmp_path / "bundle" / "audit")
    with pytest.raises(PipelineError, match="at least 2 images"):
        audit.write_report(scenes[:1], key, tmp_path / "audit")


@pytest.mark.slow  # the whole audit on the sample: ~4 s
def test_audit_stage_writes_the_owners_report(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sample.write_sample("data/raw/cityscapes", counts={"val": 3}, size=(64, 128))
    assert main(["--stage", "keygen", "--block-size", "8"]) == 0
    assert main(["--stage", "audit", "--audit-images", "2"]) == 0
    results = json.loads((tmp_path / "data/owner/audit/audit.json").read_text())
    assert results["images"] == 2 and results["key"]["key_id"] == keys.load("data/owner/key.json").key_id
    assert "known_model" not in results  # no checkpoints here
    report = tmp_path / "data/owner/audit"
    assert {p.stat().st_mode & 0o777 for p in report.iterdir()} == {0o600}  # it shows plain images
    assert report.stat().st_mode & 0o777 == 0o700
    sample.write_random_vit("data/raw/weights/vit_tiny_patch16_384.safetensors", "vit_tiny_patch16_384")
    assert main(["--stage", "keygen", "--key", "k16.json"]) == 0  # the model's patch size
    assert main(["--stage", "encrypt-weights", "--key", "k16.json"]) == 0
    assert main(["--stage", "audit", "--key", "k16.json", "--audit-images", "2"]) == 0
    results = json.loads((tmp_path / "data/owner/audit/audit.json").read_text())
    assert results["known_model"]["positions_correct"] == 1.0
    assert main(["--stage", "audit", "--raw", "nowhere"]) == 2
    assert "no leftImg8bit/val" in capsys.readouterr().err


@pytest.mark.parametrize("negative_positive", [False, True])
def test_known_model_attack_reads_the_key_off_the_published_checkpoint(negative_positive):
    import torch

    from pipeline.weights import Normalization, encrypt_patch_embedding

    key = keys.Key(SECRET, 16, negative_positive)
    plain = torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    pretrained = Normalization(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))  # per-channel: scaled columns
    encrypted, _ = encrypt_patch_embedding(plain, torch.zeros(64), key, pretrained, pretrained.uniform())
    estimate = audit.known_model_attack(plain.numpy(), encrypted.numpy())
    assert audit.fraction_correct(estimate, key) == 1.0
    # The attack needs the very model the checkpoint was folded from: another one tells it nothing.
    unrelated = audit.known_model_attack(torch.randn(64, 3, 16, 16).numpy(), encrypted.numpy())
    assert audit.fraction_correct(unrelated, key) < 0.02
