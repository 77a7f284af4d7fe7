"""Model encryption: the encrypted ViT on encrypted images computes exactly what the plain one does."""

import copy
import json
import os
import re

import numpy as np
import pytest
import timm
import torch
from mmengine.logging import HistoryBuffer
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from pipeline import weights
from pipeline.cipher import BlockCipher
from pipeline.errors import PipelineError
from pipeline.keys import generate
from pipeline.weights import (
    Normalization,
    decrypt_checkpoint,
    encrypt_checkpoint,
    encrypt_finetuned_checkpoint,
    encrypt_patch_embedding,
    load_timm_checkpoint,
    pretrained_normalization,
    timm_to_mmseg,
)

ARCH = "vit_tiny_patch16_224"
OUT_INDICES = (2, 5, 8, 11)
PRETRAINED = pretrained_normalization(ARCH)  # timm's augreg ViTs: 127.5 / 127.5 for every channel
IMAGENET = Normalization(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))  # a per-channel one


@pytest.fixture(scope="module")
def model():
    """A random-init ViT-Ti/16 on 64x64 images."""
    torch.manual_seed(0)
    model = timm.create_model(ARCH, img_size=64).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 1:  # timm initializes biases to 0 and norms to 1: a swap would go unseen
                parameter += 0.1 * torch.randn_like(parameter)
    return model


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module", params=[False, True], ids=["shuffle", "negative-positive"])
def key(request):
    return generate(16, negative_positive=request.param)


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("timm") / f"{ARCH}.safetensors"
    save_file(model.state_dict(), path)
    return path


def normalize(images, norm):
    """The cloud's preprocessing: per-channel normalization of uint8 NHWC images, to NCHW float32."""
    normalized = (images.astype(np.float64) - norm.mean) / norm.std
    return torch.from_numpy(normalized.astype(np.float32)).permute(0, 3, 1, 2)


def test_pretrained_normalization_of_the_papers_models_is_uniform():
    for arch in ("vit_base_patch16_384", "vit_large_patch16_384"):
        assert pretrained_normalization(arch) == Normalization(mean=(127.5,) * 3, std=(127.5,) * 3)
    assert IMAGENET.uniform().mean == (float(np.mean(IMAGENET.mean)),) * 3


def relative_difference(output, reference):
    return float((output - reference).abs().max() / reference.abs().max())


@torch.no_grad()
@pytest.mark.parametrize("pretrained", [PRETRAINED, IMAGENET], ids=["uniform", "per-channel"])
def test_encrypted_timm_model_on_encrypted_images_equals_plain(model, images, key, pretrained):
    cloud = pretrained.uniform()
    encrypted_model = copy.deepcopy(model)
    proj = encrypted_model.patch_embed.proj
    proj.weight.data, proj.bias.data = encrypt_patch_embedding(proj.weight.data, proj.bias.data, key, pretrained, cloud)
    encrypted = BlockCipher(key).encrypt(images)

    plain = model.forward_features(normalize(images, pretrained))
    assert relative_difference(encrypted_model.forward_features(normalize(encrypted, cloud)), plain) < 1e-4
    # The check can fail: the plain model cannot read encrypted images, and swapping the channel
    # order (BGR instead of the RGB the images were encrypted in) breaks the fold.
    assert relative_difference(model.forward_features(normalize(encrypted, cloud)), plain) > 0.1
    bgr = normalize(encrypted[..., ::-1], cloud)
    assert relative_difference(encrypted_model.forward_features(bgr), plain) > 0.1


def sgd_trajectory(weight, bias, inputs, targets, steps=5):
    """Patch-embedding parameters after SGD with momentum on a squared error, from (weight, bias)."""
    weight, bias = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    optimizer = torch.optim.SGD([weight, bias], lr=0.05, momentum=0.9)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (torch.nn.functional.conv2d(inputs, weight, bias, stride=16) - targets).square().mean()
        loss.backward()
        optimizer.step()
    return weight.detach(), bias.detach()


@pytest.mark.parametrize("cloud", [PRETRAINED, IMAGENET], ids=["uniform", "per-channel"])
def test_training_the_encrypted_embedding_follows_the_plain_trajectory(model, images, cloud):
    """With a uniform cloud normalization the fold is a signed permutation, to which SGD is equivariant."""
    key = generate(16)
    weight, bias = model.patch_embed.proj.weight.detach(), model.patch_embed.proj.bias.detach()
    targets = torch.randn(2, weight.shape[0], 4, 4, generator=torch.Generator().manual_seed(0))
    # Both runs start from the pretrained model re-expressed for the cloud's normalization.
    plain_start = encrypt_patch_embedding(weight, bias, None, PRETRAINED, cloud)
    encrypted_start = encrypt_patch_embedding(weight, bias, key, PRETRAINED, cloud)
    plain_end = sgd_trajectory(*plain_start, normalize(images, cloud), targets)
    encrypted_end = sgd_trajectory(*encrypted_start, normalize(BlockCipher(key).encrypt(images), cloud), targets)
    expected = encrypt_patch_embedding(*plain_end, key, cloud, cloud)
    difference = max(relative_difference(e, x) for e, x in zip(encrypted_end, expected))
    if cloud == PRETRAINED:
        assert difference < 1e-5
    else:  # per-channel scales make the fold non-orthogonal: the trajectories drift apart
        assert difference > 1e-3


def mmseg_vit(final_norm=False):
    """mmseg's VisionTransformer as the training stage builds it (SETR settings), ViT-Ti dims."""
    import training  # noqa: F401  (makes mmseg importable with mmcv-lite)
    from mmseg.models.backbones import VisionTransformer

    vit = VisionTransformer(
        img_size=(64, 64),
        patch_size=16,
        embed_dims=192,
        num_layers=12,
        num_heads=3,
        out_indices=OUT_INDICES,
        with_cls_token=True,
        final_norm=final_norm,
        patch_bias=True,  # mmseg's default (False) silently drops the bias the fold needs
        norm_cfg=dict(type="LN", eps=1e-6),
    )
    vit.eval()
    return vit


@torch.no_grad()
def test_encrypted_mmseg_backbone_on_encrypted_images_equals_plain(model, images, key, checkpoint, tmp_path):
    converted = timm_to_mmseg(model.state_dict())
    mmseg_vit(final_norm=True).load_state_dict(converted, strict=True)  # every name has its place

    plain_vit, encrypted_vit = mmseg_vit(), mmseg_vit()
    missing, unexpected = plain_vit.load_state_dict(converted, strict=False)
    assert missing == [] and sorted(unexpected) == ["ln1.bias", "ln1.weight"]  # final_norm=False
    encrypted_state = load_file(encrypt_checkpoint(checkpoint, ARCH, key, tmp_path / "backbone.safetensors"))
    del encrypted_state["ln1.weight"], encrypted_state["ln1.bias"]
    encrypted_vit.load_state_dict(encrypted_state, strict=True)

    encrypted = BlockCipher(key).encrypt(images)
    cloud = PRETRAINED.uniform()
    plain_outputs = plain_vit(normalize(images, PRETRAINED))
    timm_outputs = model.forward_intermediates(normalize(images, PRETRAINED), OUT_INDICES, intermediates_only=True)
    for plain, reference, encrypted_output, plain_on_encrypted in zip(
        plain_outputs, timm_outputs, encrypted_vit(normalize(encrypted, cloud)), plain_vit(normalize(encrypted, cloud))
    ):
        assert relative_difference(plain, reference) < 1e-4  # the renaming is right
        assert relative_difference(encrypted_output, plain) < 1e-4
        assert relative_difference(plain_on_encrypted, plain) > 0.1


def test_checkpoint_metadata(checkpoint, key, tmp_path):
    out = encrypt_checkpoint(checkpoint, ARCH, key, tmp_path / "backbone.safetensors")
    with safe_open(out, framework="pt") as f:
        metadata = f.metadata()
    assert metadata["format"] == "cipherseg-checkpoint" and metadata["format_version"] == "1"
    assert metadata["key_id"] == key.key_id and metadata["block_size"] == "16"
    assert metadata["negative_positive"] == json.dumps(key.negative_positive)
    assert json.loads(metadata["norm_mean"]) == list(PRETRAINED.uniform().mean)
    assert json.loads(metadata["norm_std"]) == list(PRETRAINED.uniform().std)
    assert json.loads(metadata["source_norm_mean"]) == list(PRETRAINED.mean)
    assert metadata["channel_order"] == "RGB" and metadata["layout"] == "mmseg.VisionTransformer"
    assert metadata["source_arch"] == ARCH and metadata["encrypted"] == "true"
    assert metadata["source_sha256"] == weights._sha256(checkpoint)
    assert [p.name for p in tmp_path.iterdir()] == ["backbone.safetensors"]  # no temporary left


def assert_round_trip(decrypted, original):
    assert decrypted.keys() == original.keys()
    for name, tensor in original.items():
        # Exact up to float32 rounding; the bias went through the folded bias, of size ~1.
        atol = 1e-6 if name.endswith("patch_embed.projection.bias") else 0
        torch.testing.assert_close(decrypted[name], tensor, rtol=1e-6, atol=atol)


def test_decrypt_round_trip(model, checkpoint, key, tmp_path):
    encrypted = encrypt_checkpoint(checkpoint, ARCH, key, tmp_path / "backbone.safetensors")
    decrypted = decrypt_checkpoint(encrypted, key, tmp_path / "plain.safetensors")
    assert_round_trip(load_file(decrypted), timm_to_mmseg(model.state_dict()))
    with safe_open(decrypted, framework="pt") as f:
        metadata = f.metadata()
    assert metadata["encrypted"] == "false" and "key_id" not in metadata
    assert metadata["norm_mean"] == metadata["source_norm_mean"]


def test_plain_conversion_keeps_the_model(model, checkpoint, tmp_path):
    out = encrypt_checkpoint(checkpoint, ARCH, None, tmp_path / "plain.safetensors")
    assert_round_trip(load_file(out), timm_to_mmseg(model.state_dict()))
    with safe_open(out, framework="pt") as f:
        assert f.metadata()["encrypted"] == "false" and "key_id" not in f.metadata()


def test_decrypt_mmengine_segmentor_checkpoint(model, checkpoint, key, tmp_path):
    """A fine-tuned segmentor saved as mmengine does: weights under state_dict, backbone prefixed."""
    encrypted_path = encrypt_checkpoint(checkpoint, ARCH, key, tmp_path / "backbone.safetensors")
    encrypted = load_file(encrypted_path)
    head = {"decode_head.conv_seg.weight": torch.randn(19, 192, 1, 1)}
    segmentor = {**{f"backbone.{name}": t for name, t in encrypted.items()}, **head}
    torch.save({"meta": {"iter": 10}, "state_dict": segmentor}, tmp_path / "iter_10.pth")

    with pytest.raises(PipelineError, match="carries no cipherseg metadata"):  # nothing says how it was folded
        decrypt_checkpoint(tmp_path / "iter_10.pth", key, tmp_path / "plain.safetensors")
    decrypted = load_file(
        decrypt_checkpoint(tmp_path / "iter_10.pth", key, tmp_path / "plain.safetensors", reference=encrypted_path)
    )
    expected = {**{f"backbone.{name}": t for name, t in timm_to_mmseg(model.state_dict()).items()}, **head}
    assert_round_trip(decrypted, expected)


def export_npz(model, path):
    """Write ``model`` in the layout of Google's original ViT .npz releases (as timm reads it)."""
    heads = model.blocks[0].attn.num_heads
    arrays = {
        "embedding/kernel": model.patch_embed.proj.weight.permute(2, 3, 1, 0),
        "embedding/bias": model.patch_embed.proj.bias,
        "cls": model.cls_token,
        "Transformer/posembed_input/pos_embedding": model.pos_embed,
        "Transformer/encoder_norm/scale": model.norm.weight,
        "Transformer/encoder_norm/bias": model.norm.bias,
    }
    for i, block in enumerate(model.blocks):
        prefix = f"Transformer/encoderblock_{i}/"
        dim = block.attn.qkv.in_features
        qkv = zip(("query", "key", "value"), block.attn.qkv.weight.chunk(3), block.attn.qkv.bias.chunk(3))
        for name, w, b in qkv:
            arrays[f"{prefix}MultiHeadDotProductAttention_1/{name}/kernel"] = w.T.reshape(dim, heads, -1)
            arrays[f"{prefix}MultiHeadDotProductAttention_1/{name}/bias"] = b.reshape(heads, -1)
        arrays[f"{prefix}MultiHeadDotProductAttention_1/out/kernel"] = block.attn.proj.weight.reshape(
            dim, heads, -1
        ).permute(1, 2, 0)
        arrays[f"{prefix}MultiHeadDotProductAttention_1/out/bias"] = block.attn.proj.bias
        for norm, timm_norm in (("LayerNorm_0", block.norm1), ("LayerNorm_2", block.norm2)):
            arrays[f"{prefix}{norm}/scale"], arrays[f"{prefix}{norm}/bias"] = timm_norm.weight, timm_norm.bias
        for r, fc in enumerate((block.mlp.fc1, block.mlp.fc2)):
            arrays[f"{prefix}MlpBlock_3/Dense_{r}/kernel"] = fc.weight.T
            arrays[f"{prefix}MlpBlock_3/Dense_{r}/bias"] = fc.bias
    np.savez(path, **{name: t.detach().numpy() for name, t in arrays.items()})


def test_load_npz_checkpoint(model, tmp_path):
    export_npz(model, tmp_path / "vit.npz")
    state = load_timm_checkpoint(tmp_path / "vit.npz", ARCH)
    for name, tensor in model.state_dict().items():
        if not name.startswith(("head.", "pos_embed")):  # pos_embed: resampled to the arch's 224 grid
            torch.testing.assert_close(state[name], tensor, rtol=0, atol=0)


def test_timm_to_mmseg_refuses_what_mmseg_cannot_hold():
    with pytest.raises(ValueError, match="norm_pre.weight"):
        timm_to_mmseg({"cls_token": torch.zeros(1), "norm_pre.weight": torch.zeros(1)})


BAD_INPUTS = [
    # stage, input file, architecture, key, expected message
    ("encrypt", "vit.safetensors", "vit_no_such_model", "key", "unknown architecture"),
    ("encrypt", "vit.safetensors", "resnet18", "key", "'resnet18' is not a timm VisionTransformer or Beit: its first layer conv1"),
    ("encrypt", "nope.pth", ARCH, "key", "no such file"),
    ("encrypt", "corrupt.safetensors", ARCH, "key", "not a readable checkpoint"),
    ("encrypt", "missing.safetensors", ARCH, "key", "missing blocks.3.mlp.fc1.weight"),
    ("encrypt", "vit.safetensors", "vit_small_patch16_224", "key", "has shape"),
    ("encrypt", "vit.safetensors", ARCH, "key8", "the patch size must equal the block size"),
    ("decrypt", "corrupt.pth", None, "key", "not a readable checkpoint"),
    ("decrypt", "pickled.pth", None, "key", "it names numpy.* which is never unpickled"),
    ("decrypt", "training.pth", None, "key", "an mmengine training checkpoint: the cloud turns it into safetensors"),
    ("decrypt", "encrypted.safetensors", None, "other_key", "not for this key"),
    ("decrypt", "vit.safetensors", None, "key", "carries no cipherseg metadata"),
]


@pytest.fixture(scope="module")
def bad_inputs(model, tmp_path_factory):
    """The files of BAD_INPUTS, and the keys."""
    directory = tmp_path_factory.mktemp("inputs")
    state = model.state_dict()
    save_file(state, directory / "vit.safetensors")
    missing = {name: t for name, t in state.items() if name != "blocks.3.mlp.fc1.weight"}
    save_file(missing, directory / "missing.safetensors")
    (directory / "corrupt.safetensors").write_bytes(b"not a checkpoint")
    (directory / "corrupt.pth").write_bytes(b"not a checkpoint either")
    # Like an mmengine training checkpoint, whose logs hold numpy arrays and other objects.
    torch.save({"state_dict": state, "meta": {"log": np.zeros(3)}}, directory / "pickled.pth")
    torch.save({"state_dict": state, "message_hub": {"log": HistoryBuffer()}}, directory / "training.pth")
    keys = {"key": generate(16), "other_key": generate(16), "key8": generate(8)}
    encrypt_checkpoint(directory / "vit.safetensors", ARCH, keys["key"], directory / "encrypted.safetensors")
    return directory, keys


@pytest.mark.parametrize("stage, name, arch, key_name, message", BAD_INPUTS)
def test_bad_input_raises_pipeline_error_naming_the_file(
    bad_inputs, tmp_path, stage, name, arch, key_name, message
):
    directory, keys = bad_inputs
    source, out = directory / name, tmp_path / "out.safetensors"
    with pytest.raises(PipelineError, match=message) as error:
        if stage == "encrypt":
            encrypt_checkpoint(source, arch, keys[key_name], out)
        else:
            decrypt_checkpoint(source, keys[key_name], out)
    assert str(error.value).startswith(f"{source}: ")
    assert list(tmp_path.iterdir()) == []  # no output, no temporary


def test_failed_write_leaves_no_partial_file(checkpoint, monkeypatch, tmp_path):
    def save_half_then_fail(tensors, filename, metadata):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(weights, "save_file", save_half_then_fail)
    out = tmp_path / "backbone.safetensors"
    with pytest.raises(PipelineError, match=re.escape(f"{out}: cannot write")):
        encrypt_checkpoint(checkpoint, ARCH, generate(16), out)
    assert list(tmp_path.iterdir()) == []


def test_encrypt_finetuned_checkpoint_is_the_mirror_of_decrypt(model, checkpoint, key, tmp_path):
    """Conventional 1: the owner encrypts a model fine-tuned on plain images (weights-only, as the cloud hands it back)."""
    plain_path = encrypt_checkpoint(checkpoint, ARCH, None, tmp_path / "plain.safetensors")
    head = {"decode_head.conv_seg.weight": torch.randn(19, 192, 1, 1)}
    segmentor = {**{f"backbone.{name}": t for name, t in load_file(plain_path).items()}, **head}
    save_file(segmentor, tmp_path / "finetuned.safetensors")  # no metadata: the reference gives the normalization

    with pytest.raises(PipelineError, match="carries no cipherseg metadata"):
        encrypt_finetuned_checkpoint(tmp_path / "finetuned.safetensors", key, tmp_path / "c1.safetensors")
    encrypted = encrypt_finetuned_checkpoint(
        tmp_path / "finetuned.safetensors", key, tmp_path / "c1.safetensors", reference=plain_path
    )
    state = load_file(encrypted)
    cloud = PRETRAINED.uniform()
    expected = encrypt_patch_embedding(
        segmentor[f"backbone.{weights.PATCH_WEIGHT}"], segmentor[f"backbone.{weights.PATCH_BIAS}"], key, cloud, cloud
    )
    torch.testing.assert_close((state[f"backbone.{weights.PATCH_WEIGHT}"], state[f"backbone.{weights.PATCH_BIAS}"]), expected)
    with safe_open(encrypted, framework="pt") as f:
        assert f.metadata()["key_id"] == key.key_id and f.metadata()["encrypted"] == "true"
    assert_round_trip(load_file(decrypt_checkpoint(encrypted, key, tmp_path / "back.safetensors")), segmentor)
    with pytest.raises(PipelineError, match="encrypted already"):
        encrypt_finetuned_checkpoint(encrypted, key, tmp_path / "twice.safetensors")


class _Payload:
    """What a hostile checkpoint could hold: unpickled normally, it runs a command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_torch_file_is_read_without_running_code_from_it(model, tmp_path):
    """A state dict (timm's .pth, under 'state_dict' or 'model' too) reads; a file that names any other object
    is refused, a function to call included, and nothing of it runs."""
    for container in (None, "state_dict", "model"):
        plain = tmp_path / f"{container}.pth"
        torch.save(model.state_dict() if container is None else {container: model.state_dict()}, plain)
        state, metadata = weights._read_weights(plain)
        assert state.keys() == model.state_dict().keys() and metadata == {}
    marker = tmp_path / "ran"
    hostile = tmp_path / "hostile.pth"
    torch.save({"state_dict": model.state_dict(), "meta": {"hook": _Payload(marker)}}, hostile)
    with pytest.raises(PipelineError, match="hostile.pth: not a readable checkpoint .*names posix.system"):
        weights._read_weights(hostile)
    assert not marker.exists()
