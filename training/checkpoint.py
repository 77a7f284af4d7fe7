"""Checkpoints for mmengine: the bundle's safetensors backbone, resuming under torch >= 2.6, and the checks
mmseg does not make (it loads pretrained weights with strict=False and only logs what did not fit).

Importing this module registers loaders for every path ending in ``.safetensors`` or ``.pth`` (local
or an fsspec URL; storage options come from ``fsspec.config.conf``), so that
``init_cfg=dict(type='Pretrained', checkpoint='.../backbone.safetensors')`` reads the owner's file.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import fsspec
import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.model import is_model_wrapper
from mmengine.runner import CheckpointLoader
from mmseg.registry import HOOKS
from numpy._core.multiarray import _reconstruct, scalar
from safetensors.torch import load as load_safetensors_bytes

CHECKPOINT_FORMAT = "cipherseg-checkpoint"
# What mmengine's full training checkpoints hold besides tensors (the message hub's logs, numpy
# arrays and scalars): allowed for torch.load's weights_only mode, the default since torch 2.6, so
# that --resume works without unpickling arbitrary code. numpy pickles scalars' dtypes through
# getattr; weights_only still refuses to call anything it fetches that is not in this list. Allowed
# only while mmengine loads a .pth (load_pth), not process-wide: the owner's tools refuse them.
RESUME_GLOBALS = [
    HistoryBuffer,
    np.ndarray,
    np.dtype,
    _reconstruct,
    scalar,
    getattr,
    *(type(np.dtype(code)) for code in "?bBhHiIlLqQefdg"),
]


@CheckpointLoader.register_scheme(prefixes=r".*\.pth$")
def load_pth(filename: str, map_location: Any = None) -> dict[str, Any]:
    """An mmengine checkpoint (local or an fsspec URL), unpickled in weights_only mode with RESUME_GLOBALS."""
    with fsspec.open(filename, "rb") as f, torch.serialization.safe_globals(RESUME_GLOBALS):
        return torch.load(f, map_location=map_location, weights_only=True)


@CheckpointLoader.register_scheme(prefixes=r".*\.safetensors$")
def load_safetensors(filename: str, map_location: Any = None) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (on the CPU; mmseg asks for map_location='cpu')."""
    with fsspec.open(filename, "rb") as f:
        return load_safetensors_bytes(f.read())


def read_header(location: str) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """Metadata and tensor shapes of a safetensors file, from its header alone."""
    with fsspec.open(location, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    metadata = header.pop("__metadata__", None) or {}
    return metadata, {name: tuple(entry["shape"]) for name, entry in header.items()}


def backbone_mismatches(
    expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], final_norm: bool
) -> list[str]:
    """What keeps a checkpoint from filling an mmseg VisionTransformer exactly; [] if nothing does.

    ``pos_embed`` may differ in shape (mmseg resamples it); without ``final_norm`` the backbone has
    no ``ln1`` for the source's final norm, which SETR does not use.
    """
    unused = {name for name in found if name.startswith("ln1.")} if not final_norm else set()
    problems = [f"missing {name}" for name in expected if name not in found]
    problems += [f"unexpected {name}" for name in found if name not in expected and name not in unused]
    problems += [
        f"{name} has shape {found[name]}, the model {shape}"
        for name, shape in expected.items()
        if name in found and name != "pos_embed" and found[name] != shape
    ]
    return problems


@HOOKS.register_module()
class CipherSegCheckHook(Hook):
    """Refuses to train unless data, pretrained checkpoint and model configuration belong together.

    ``data`` and ``checkpoint`` say what the method expects ('encrypted' or 'plain'); an encrypted
    checkpoint must be of the data's key. The checkpoint must fill the backbone exactly, and its
    normalization and channel order (which the owner's fold assumes) must be the data preprocessor's.
    """

    priority = "VERY_HIGH"

    def __init__(self, data: str = "encrypted", checkpoint: str = "encrypted") -> None:
        for name, value in (("data", data), ("checkpoint", checkpoint)):
            if value not in ("encrypted", "plain"):
                raise ValueError(f"{name} must be 'encrypted' or 'plain', not {value!r}")
        self.data, self.checkpoint = data, checkpoint

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        init_cfg = runner.cfg.model.backbone.get("init_cfg") or {}
        problems = self.problems(
            runner.train_dataloader.dataset.store_attrs,
            init_cfg.get("checkpoint"),
            {name: tuple(t.shape) for name, t in model.backbone.state_dict().items()},
            model.backbone.final_norm,
            model.data_preprocessor,
        )
        if problems:
            raise ValueError("refusing to train:\n  " + "\n  ".join(problems))

    def problems(
        self,
        attrs: dict[str, Any],
        checkpoint: str | None,
        backbone: dict[str, tuple[int, ...]],
        final_norm: bool,
        preprocessor: torch.nn.Module,
    ) -> list[str]:
        """Everything wrong with this combination, as messages."""
        problems = []
        data = "encrypted" if attrs.get("encrypted") else "plain"
        if data != self.data:
            problems.append(f"the config expects {self.data} data, the dataset store is {data}")
        if attrs.get("channel_order") != "RGB":
            problems.append(f"the dataset store holds {attrs.get('channel_order')} images, not RGB")
        if getattr(preprocessor, "channel_conversion", True):
            problems.append("the data preprocessor swaps channels: the store holds RGB, set bgr_to_rgb=False")
        if checkpoint is None:
            return problems + ["the backbone has no pretrained checkpoint (init_cfg type 'Pretrained')"]

        metadata, shapes = read_header(checkpoint)
        if metadata.get("format") != CHECKPOINT_FORMAT:
            return problems + [f"{checkpoint}: not a cipherseg checkpoint (format {metadata.get('format')!r})"]
        encrypted = "encrypted" if metadata.get("encrypted") == "true" else "plain"
        if encrypted != self.checkpoint:
            problems.append(f"the config expects a {self.checkpoint} checkpoint, {checkpoint} is {encrypted}")
        elif encrypted == "encrypted" and data == "encrypted":
            ours = (metadata.get("key_id"), int(metadata.get("block_size", 0)), json.loads(metadata.get("negative_positive", "null")))
            theirs = (attrs.get("key_id"), attrs.get("block_size"), attrs.get("negative_positive"))
            if ours != theirs:
                problems.append(f"{checkpoint} is encrypted for (key_id, block_size, negative_positive) {ours}, the data for {theirs}")
        if metadata.get("channel_order") != "RGB":
            problems.append(f"{checkpoint} expects {metadata.get('channel_order')} images, not RGB")
        for name, attribute in (("norm_mean", "mean"), ("norm_std", "std")):
            recorded = json.loads(metadata.get(name, "null"))
            configured = getattr(preprocessor, attribute).flatten().tolist()
            if recorded is None or not np.allclose(recorded, configured, rtol=1e-6, atol=0):  # float32 buffers
                problems.append(f"{checkpoint} was made for {attribute} {recorded}, the data preprocessor has {configured}")
        problems += [f"{checkpoint}: {problem}" for problem in backbone_mismatches(backbone, shapes, final_norm)]
        return problems
