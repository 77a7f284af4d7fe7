"""The check mmseg does not make: data, pretrained checkpoint and model configuration belong together.

mmseg loads pretrained weights with strict=False and only logs what did not fit; this hook refuses to
train instead, records in every checkpoint what the model reads (its provenance), and refuses to
resume or test a checkpoint of another key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

from contract.errors import FormatError, UserError
from contract.formats import (
    CHANNEL_ORDER,
    CheckpointMetadata,
    CipherSpec,
    DatasetDescription,
    ModelProvenance,
    Normalization,
    describe_cipher,
)
from contract.registry import FAMILIES, BackboneFamily, FirstLayer, family_of_mmseg, fit_problems, method_trained_on, why_no_fold
from training.loaders import read_header
from training.provenance import check_reads, model_reads
from training.resolve import run_of
from training.verified_store import bundle_attributes


def backbone_family(backbone: torch.nn.Module) -> BackboneFamily:
    """The family of checkpoints that fill ``backbone``; UserError saying why for a backbone no key can be folded into."""
    family = next((f for cls in type(backbone).__mro__ if (f := family_of_mmseg(cls.__name__))), None)
    if family is not None:
        return family
    supported = f"cipherseg's checkpoints fill {' and '.join(f.mmseg_class for f in FAMILIES.values())} only"
    name, conv = next(((n, m) for n, m in backbone.named_modules() if isinstance(m, torch.nn.Conv2d)), (None, None))
    first = None if conv is None else FirstLayer(name, conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups)
    reason = why_no_fold(first, supported)
    raise UserError(f"refusing to train: the backbone {type(backbone).__name__} cannot read encrypted images: {reason}")


def _model(runner) -> torch.nn.Module:
    return runner.model.module if is_model_wrapper(runner.model) else runner.model


def check_classes(model: torch.nn.Module | Mapping, dataset: DatasetDescription, where: str) -> None:
    """UserError unless the segmentor (or its head's config) predicts as many classes as ``dataset`` has (mmseg
    would fail deep in the loss or the metric, or quietly leave classes out)."""
    predicted = getattr(model, "num_classes", None)
    if predicted is not None and predicted != len(dataset.classes):
        raise UserError(
            f"the model predicts {predicted} classes, but {where} holds {dataset.name} with {len(dataset.classes)}: "
            f"set num_classes={len(dataset.classes)} in the config's heads"
        )


def inference_problems(test_cfg: dict | None, cipher: CipherSpec | None) -> list[str]:
    """Why slide inference would cut the blocks of encrypted images (its windows must start on blocks)."""
    if cipher is None or not test_cfg or test_cfg.get("mode") != "slide":
        return []
    sides = [*test_cfg.get("crop_size", ()), *test_cfg.get("stride", ())]
    if all(side % cipher.block_size == 0 for side in sides):
        return []
    return [
        f"slide inference with windows {tuple(test_cfg['crop_size'])} and stride {tuple(test_cfg['stride'])} cuts the "
        f"encrypted images' {cipher.block_size}x{cipher.block_size} blocks: make both multiples of {cipher.block_size}"
    ]


@HOOKS.register_module()
class CipherSegCheckHook(Hook):
    """Refuses to train unless data, pretrained checkpoint and model configuration belong together.

    ``data`` and ``checkpoint`` say what the method expects ('encrypted' or 'plain'); an encrypted
    checkpoint must be of the data's key. The checkpoint must fill the backbone exactly, and its
    normalization and channel order (which the owner's fold assumes) must be the data preprocessor's.
    """

    priority = "VERY_HIGH"

    def __init__(self, data: str = "encrypted", checkpoint: str = "encrypted") -> None:
        self.method = method_trained_on(data, checkpoint)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Record in every checkpoint what the model reads: its provenance (cipher, normalization, method, bundle)."""
        preprocessor = _model(runner).data_preprocessor
        run = run_of(runner)
        provenance = ModelProvenance(
            cipher=run.verified.manifest.cipher,
            normalization=Normalization(
                mean=tuple(preprocessor.mean.flatten().tolist()), std=tuple(preprocessor.std.flatten().tolist())
            ),
            method=self.method.name,
            bundle=run.verified.reference(),
        )
        checkpoint.setdefault("meta", {})[ModelProvenance.META_KEY] = provenance.to_json()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Refuse to resume or test a model that reads other data than the bundle's."""
        source = str(runner.cfg.get("load_from") or "the loaded checkpoint")
        run = run_of(runner)
        check_reads(source, model_reads(source, checkpoint).cipher, run.verified.manifest.cipher, f"the bundle {run.verified.location}")

    def before_test(self, runner) -> None:
        """Refuse to test a model of another number of classes, or whose windows cut the blocks."""
        self._check_data(runner)

    def _check_data(self, runner) -> None:
        run, model = run_of(runner), _model(runner)
        check_classes(model, bundle_attributes(run.verified, run.storage_options).dataset, f"the bundle {run.verified.location}")
        problems = inference_problems(getattr(model, "test_cfg", None), run.verified.manifest.cipher)
        if problems:
            raise UserError("refusing to run: " + "; ".join(problems))

    def before_train(self, runner) -> None:
        model = _model(runner)
        family = backbone_family(model.backbone)  # first: other backbones lack what the checks below read
        self._check_data(runner)
        init_cfg = model.backbone.init_cfg or {}
        problems = self.problems(
            run_of(runner).verified.manifest.cipher,
            init_cfg.get("checkpoint") if isinstance(init_cfg, dict) else None,
            {name: tuple(t.shape) for name, t in model.backbone.state_dict().items()},
            model.backbone.final_norm,
            model.data_preprocessor,
            family=family,
        )
        if problems:
            raise UserError("refusing to train: " + "; ".join(problems))

    def problems(
        self,
        cipher: CipherSpec | None,
        checkpoint: str | None,
        backbone: dict[str, tuple[int, ...]],
        final_norm: bool,
        preprocessor: torch.nn.Module,
        family: BackboneFamily = FAMILIES[CheckpointMetadata.LAYOUT],
    ) -> list[str]:
        """Everything wrong with this combination, as messages; ``family`` is the backbone's (:func:`backbone_family`)."""
        problems = []
        data = "encrypted" if cipher else "plain"
        if data != self.method.data:
            problems.append(f"the config expects {self.method.data} data, the dataset store is {data}")
        if getattr(preprocessor, "channel_conversion", True):
            problems.append(f"the data preprocessor swaps channels: the store holds {CHANNEL_ORDER}, set bgr_to_rgb=False")
        if checkpoint is None:
            return problems + ["the backbone has no pretrained checkpoint (init_cfg type 'Pretrained')"]

        try:
            header = read_header(checkpoint)
            info = CheckpointMetadata.parse_metadata(header.metadata, checkpoint)
        except FormatError as error:
            return problems + [str(error)]
        kind = "encrypted" if info.is_encrypted else "plain"
        if kind != self.method.checkpoint:
            problems.append(f"the config expects a {self.method.checkpoint} checkpoint, {checkpoint} is {kind}")
        elif info.cipher is not None and cipher is not None and info.cipher != cipher:
            problems.append(f"{checkpoint} is made for {describe_cipher(info.cipher)}, the data is of {describe_cipher(cipher)}")
        for name in ("mean", "std"):
            recorded = list(getattr(info.normalization, name))
            configured = getattr(preprocessor, name).flatten().tolist()
            if not np.allclose(recorded, configured, rtol=1e-6, atol=0):  # float32 buffers
                problems.append(f"{checkpoint} was made for {name} {recorded}, the data preprocessor has {configured}")
        if info.layout != family.layout:
            return problems + [f"{checkpoint} holds a {info.layout} backbone, the config builds an {family.layout}"]
        unused = re.compile(r"ln1\.(weight|bias)" if not final_norm else r"(?!)")  # SETR does not use timm's final norm
        problems += [
            f"{checkpoint}: {problem}"
            for problem in fit_problems(backbone, header.shapes, family.resampled, unused=unused, derived=family.derived)
        ]
        return problems
