"""Checkpoints for mmengine: the bundle's safetensors backbone, resuming under torch >= 2.6, and the checks
mmseg does not make (it loads pretrained weights with strict=False and only logs what did not fit).

:func:`register_loaders` (called by training.plugin) registers loaders for every path ending in
``.safetensors`` or ``.pth`` (local or an fsspec URL; storage options come from ``fsspec.config.conf``), so that
``init_cfg=dict(type='Pretrained', checkpoint='.../backbone.safetensors')`` reads the owner's file.
"""

from __future__ import annotations

import json
import re
from typing import Any

import fsspec
import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import BaseLoop, CheckpointLoader
from mmseg.models.backbones import BEiT, VisionTransformer
from mmseg.registry import HOOKS
from fsspec.core import url_to_fs
from safetensors.torch import load as load_safetensors_bytes

from contract.bundle import read_safetensors_header
from contract.errors import UserError
from contract.formats import (
    CHANNEL_ORDER,
    CheckpointMetadata,
    FormatError,
    ModelProvenance,
    Normalization,
    StoreAttributes,
    describe_cipher,
)
from training.provenance import SAFETENSORS_METADATA, check_reads, model_reads
from training.pth import load_pth


def load_safetensors(filename: str, map_location: Any = None) -> dict[str, Any]:
    """A safetensors file as mmengine checkpoints are laid out: its tensors (on the CPU; mmseg asks for
    map_location='cpu') under ``state_dict``, its metadata under ``meta`` (what the model reads)."""
    with fsspec.open(filename, "rb") as f:
        data = f.read()
    length = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8 : 8 + length]).get("__metadata__") or {}
    return {"state_dict": load_safetensors_bytes(data), "meta": {SAFETENSORS_METADATA: metadata}}


def register_loaders() -> None:
    """Let mmengine read ``.pth`` (with RESUME_GLOBALS) and ``.safetensors`` files, local or fsspec URLs."""
    CheckpointLoader.register_scheme(prefixes=r".*\.pth$", loader=load_pth, force=True)
    CheckpointLoader.register_scheme(prefixes=r".*\.safetensors$", loader=load_safetensors, force=True)


def read_header(location: str) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """Metadata and tensor shapes of a safetensors file (local or an fsspec URL), from its header alone."""
    fs, path = url_to_fs(location)
    return read_safetensors_header(fs, path, location)


# The mmseg backbones a cipherseg checkpoint fills, by the layout its metadata names: those whose first
# layer is a non-overlapping patch embedding (pipeline/weights.py converts timm's ViTs and BEiTs to them).
LAYOUTS = {CheckpointMetadata.LAYOUT: VisionTransformer, CheckpointMetadata.BEIT_LAYOUT: BEiT}
# Weights whose grid follows the pretraining resolution: mmseg resamples them to the model's.
RESAMPLED = re.compile(r"pos_embed|.*\.relative_position_bias_table")
# Buffers a BEiT computes from its own window, which no checkpoint holds.
DERIVED = re.compile(r".*\.relative_position_index")


def backbone_layout(backbone: torch.nn.Module) -> str:
    """The checkpoint layout that fills ``backbone``; UserError saying why for a backbone no key can be folded into."""
    for layout, cls in LAYOUTS.items():
        if isinstance(backbone, cls):
            return layout
    supported = f"cipherseg's checkpoints fill {' and '.join(LAYOUTS)} only"
    name, conv = next(((n, m) for n, m in backbone.named_modules() if isinstance(m, torch.nn.Conv2d)), (None, None))
    if conv is None:
        reason = f"it has no convolutional stem; {supported}"
    else:
        k, stride, padding = conv.kernel_size, conv.stride, conv.padding
        shape = f"a {k[0]}x{k[1]} convolution with stride {stride[0]}" + (f" and padding {padding[0]}" if any(padding) else "")
        if k == stride and not any(padding) and conv.dilation == (1, 1) and conv.groups == 1:
            reason = f"its first layer {name} is {shape}, a non-overlapping patch embedding, but {supported}"
        else:
            reason = (
                f"its first layer {name} is {shape}: its windows overlap and mix pixels of neighbouring blocks, "
                f"so no key can be folded into it; {supported}"
            )
    raise UserError(f"refusing to train: the backbone {type(backbone).__name__} cannot read encrypted images: {reason}")


def backbone_mismatches(
    expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], final_norm: bool
) -> list[str]:
    """What keeps a checkpoint from filling an mmseg VisionTransformer or BEiT exactly; [] if nothing does.

    ``pos_embed`` and BEiT's relative position bias tables may differ in shape (mmseg resamples them),
    and BEiT's relative position indices come from the model's window, not from the checkpoint; without
    ``final_norm`` the backbone has no ``ln1`` for the source's final norm, which SETR does not use.
    """
    unused = {name for name in found if name.startswith("ln1.")} if not final_norm else set()
    problems = [f"missing {name}" for name in expected if name not in found and not DERIVED.fullmatch(name)]
    problems += [f"unexpected {name}" for name in found if name not in expected and name not in unused]
    problems += [
        f"{name} has shape {found[name]}, the model {shape}"
        for name, shape in expected.items()
        if name in found and not RESAMPLED.fullmatch(name) and found[name] != shape
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

    # (data, pretrained checkpoint) -> the paper's method that trains so
    METHODS = {("encrypted", "encrypted"): "proposed", ("plain", "plain"): "baseline", ("encrypted", "plain"): "conventional2"}

    def __init__(self, data: str = "encrypted", checkpoint: str = "encrypted") -> None:
        if (data, checkpoint) not in self.METHODS:
            raise ValueError(f"data {data!r} with a {checkpoint!r} checkpoint is none of the methods {self.METHODS}")
        self.data, self.checkpoint = data, checkpoint

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Record in every checkpoint what the model reads: its provenance (cipher, normalization, method)."""
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        preprocessor = model.data_preprocessor
        provenance = ModelProvenance(
            cipher=runner.train_dataloader.dataset.store_attrs.cipher,
            normalization=Normalization(
                tuple(preprocessor.mean.flatten().tolist()), tuple(preprocessor.std.flatten().tolist())
            ),
            method=self.METHODS[self.data, self.checkpoint],
        )
        checkpoint.setdefault("meta", {})[ModelProvenance.META_KEY] = provenance.to_json()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Refuse to resume or test a model that reads other data than the bundle's."""
        source = str(runner.cfg.get("load_from") or "the loaded checkpoint")
        reads, _ = model_reads(source, checkpoint)
        # The loop this checkpoint is for: resuming training, or else testing.
        loop = runner.train_loop if isinstance(runner._train_loop, BaseLoop) else runner.test_loop
        check_reads(source, reads, loop.dataloader.dataset.store_attrs.cipher, f"the bundle {runner.cfg.get('bundle')}")

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        layout = backbone_layout(model.backbone)  # first: other backbones lack what the checks below read
        init_cfg = runner.cfg.model.backbone.get("init_cfg") or {}
        problems = self.problems(
            runner.train_dataloader.dataset.store_attrs,
            init_cfg.get("checkpoint"),
            {name: tuple(t.shape) for name, t in model.backbone.state_dict().items()},
            model.backbone.final_norm,
            model.data_preprocessor,
            layout=layout,
        )
        if problems:
            raise UserError("refusing to train: " + "; ".join(problems))

    def problems(
        self,
        attrs: StoreAttributes,
        checkpoint: str | None,
        backbone: dict[str, tuple[int, ...]],
        final_norm: bool,
        preprocessor: torch.nn.Module,
        layout: str = CheckpointMetadata.LAYOUT,
    ) -> list[str]:
        """Everything wrong with this combination, as messages; ``layout`` is the backbone's (:func:`backbone_layout`)."""
        problems = []
        data = "encrypted" if attrs.encrypted else "plain"
        if data != self.data:
            problems.append(f"the config expects {self.data} data, the dataset store is {data}")
        if attrs.channel_order != CHANNEL_ORDER:
            problems.append(f"the dataset store holds {attrs.channel_order} images, not {CHANNEL_ORDER}")
        if getattr(preprocessor, "channel_conversion", True):
            problems.append("the data preprocessor swaps channels: the store holds RGB, set bgr_to_rgb=False")
        if checkpoint is None:
            return problems + ["the backbone has no pretrained checkpoint (init_cfg type 'Pretrained')"]

        metadata, shapes = read_header(checkpoint)
        try:
            info = CheckpointMetadata.parse(metadata, checkpoint)
        except FormatError as error:
            return problems + [str(error)]
        kind = "encrypted" if info.encrypted else "plain"
        if kind != self.checkpoint:
            problems.append(f"the config expects a {self.checkpoint} checkpoint, {checkpoint} is {kind}")
        elif info.encrypted and attrs.encrypted and info.cipher != attrs.cipher:
            problems.append(
                f"{checkpoint} is made for {describe_cipher(info.cipher)}, the data is of {describe_cipher(attrs.cipher)}"
            )
        if info.channel_order != CHANNEL_ORDER:
            problems.append(f"{checkpoint} expects {info.channel_order} images, not {CHANNEL_ORDER}")
        for name in ("mean", "std"):
            recorded = list(getattr(info.normalization, name))
            configured = getattr(preprocessor, name).flatten().tolist()
            if not np.allclose(recorded, configured, rtol=1e-6, atol=0):  # float32 buffers
                problems.append(f"{checkpoint} was made for {name} {recorded}, the data preprocessor has {configured}")
        if info.layout != layout:
            return problems + [f"{checkpoint} holds a {info.layout} backbone, the config builds an {layout}"]
        problems += [f"{checkpoint}: {problem}" for problem in backbone_mismatches(backbone, shapes, final_norm)]
        return problems
