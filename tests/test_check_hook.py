"""The cloud's checks of what it is about to train: the check hook (data, pretrained checkpoint and model
configuration belong together) and the checkpoint loaders it reads with."""

import json
import re

import pytest
import torch
from mmengine.runner import CheckpointLoader

from contract.registry import fit_problems
from pipeline.keys import generate
from pipeline.weights import encrypt_checkpoint
from training.hooks import CipherSegCheckHook
from training.loaders import read_header

pytest_plugins = ["training_fixtures"]


@pytest.fixture(scope="module")
def checkpoints(owner):
    return {kind: str(getattr(owner, kind) / "backbone.safetensors") for kind in ("plain", "encrypted")}


def test_the_safetensors_loader_reads_the_owners_checkpoint(owner, checkpoints):
    loaded = CheckpointLoader.load_checkpoint(checkpoints["encrypted"], map_location="cpu")
    header = read_header(checkpoints["encrypted"])
    metadata = header.metadata
    assert {name: tuple(t.shape) for name, t in loaded["state_dict"].items()} == header.shapes
    assert loaded["meta"]["safetensors_metadata"] == metadata  # what the model reads, for the check hook
    assert metadata["encrypted"] == "true" and json.loads(metadata["norm_mean"]) == list(owner.cloud.mean)


def test_backbone_mismatches_are_named():
    expected = {"pos_embed": (1, 17, 8), "patch_embed.projection.weight": (8, 3, 16, 16), "cls_token": (1, 1, 8)}
    found = {"pos_embed": (1, 197, 8), "patch_embed.projection.weight": (8, 3, 8, 8), "ln1.weight": (8,), "head.weight": (8,)}
    resampled, unused = re.compile("pos_embed"), re.compile(r"ln1\.weight")
    assert fit_problems(expected, found, resampled, unused=unused) == [
        "missing cls_token",
        "unexpected head.weight",
        "patch_embed.projection.weight has shape (8, 3, 8, 8), the model (8, 3, 16, 16)",
    ]


class Preprocessor(torch.nn.Module):
    def __init__(self, mean, std, bgr_to_rgb=False):
        super().__init__()
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
        self.channel_conversion = bgr_to_rgb


@pytest.mark.parametrize(
    "hook, store, checkpoint, preprocessor, message",
    [
        (dict(), "encrypted", "encrypted", {}, None),
        (dict(data="plain", checkpoint="plain"), "plain", "plain", {}, None),
        (dict(checkpoint="plain"), "encrypted", "plain", {}, None),
        (dict(), "plain", "encrypted", {}, "expects encrypted data, the dataset store is plain"),
        (dict(), "encrypted", "plain", {}, "expects a encrypted checkpoint"),
        (dict(), "encrypted", "encrypted", {"bgr_to_rgb": True}, "swaps channels"),
        (dict(), "encrypted", "encrypted", {"mean": [123.675, 116.28, 103.53]}, "was made for mean"),
    ],
)
def test_the_check_hook_refuses_what_does_not_belong_together(owner, checkpoints, hook, store, checkpoint, preprocessor, message):
    settings = {"mean": list(owner.cloud.mean), "std": list(owner.cloud.std), **preprocessor}
    shapes = read_header(checkpoints[checkpoint]).shapes
    backbone = {name: shape for name, shape in shapes.items() if not name.startswith("ln1.")}
    cipher = owner.key.spec() if store == "encrypted" else None
    problems = CipherSegCheckHook(**hook).problems(cipher, checkpoints[checkpoint], backbone, False, Preprocessor(**settings))
    assert problems == [] if message is None else any(message in problem for problem in problems), problems


def test_the_check_hook_refuses_a_checkpoint_of_another_key(owner, tmp_path):
    other_key = generate()
    other_key_id = other_key.key_id
    other = encrypt_checkpoint(owner.weights, owner.arch, other_key, tmp_path / "other.safetensors")
    preprocessor = Preprocessor(list(owner.cloud.mean), list(owner.cloud.std))
    problems = CipherSegCheckHook().problems(owner.key.spec(), str(other), {}, False, preprocessor)
    assert any(f"is made for key id {other_key_id}" in problem for problem in problems), problems
