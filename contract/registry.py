"""The two registries both sides read: the paper's methods, and the backbone families a key can be folded into.

A backbone family is one timm architecture class and the mmseg backbone it converts to: the renaming of
timm's weights to mmseg's (mmseg's own vit2mmseg and beit2mmseg), the closed set of tensors such a
checkpoint holds and their shapes, which of them follow the pretraining grid (mmseg resamples them),
and which buffers the model derives itself. The owner converts and folds with it; publish, verify and
the cloud's check hook hold checkpoints against it. Nothing here imports torch: the sides hand in names,
shapes and the description of a first layer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from contract.formats import CheckpointMetadata

Kind = Literal["encrypted", "plain"]


@dataclass(frozen=True)
class Method:
    """One of the paper's methods: what data it trains (or tests) on and which pretrained checkpoint it starts from."""

    name: str  # as in configs and provenance: conventional2
    title: str  # as in the paper: conventional 2
    data: Kind
    checkpoint: Kind
    trained_in_cloud: bool = True


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("baseline", "baseline", "plain", "plain"),
        # A baseline model, fine-tuned on plain images by the owner and encrypted by the owner, tested on encrypted data.
        Method("conventional1", "conventional 1", "encrypted", "encrypted", trained_in_cloud=False),
        Method("conventional2", "conventional 2", "encrypted", "plain"),
        Method("proposed", "proposed", "encrypted", "encrypted"),
    )
}


def method_trained_on(data: Kind, checkpoint: Kind) -> Method:
    """The method the cloud trains with ``data`` from a ``checkpoint`` pretrained backbone; ValueError if none."""
    for method in METHODS.values():
        if method.trained_in_cloud and (method.data, method.checkpoint) == (data, checkpoint):
            return method
    raise ValueError(f"{data} data with a {checkpoint} checkpoint is none of the methods {', '.join(METHODS)}")


# --- backbone families -----------------------------------------------------------------------------

# Shapes: 'D' the embedding width, '3D' three times it, 'H' the MLP width, 'P' the patch size, 'A' the
# number of heads, integers literally, '*' any size (a grid that follows the pretraining resolution).
_VIT_LAYER = {
    "ln1.weight": "D", "ln1.bias": "D", "ln2.weight": "D", "ln2.bias": "D",
    "ffn.layers.0.0.weight": "H,D", "ffn.layers.0.0.bias": "H",
    "ffn.layers.1.weight": "D,H", "ffn.layers.1.bias": "D",
}  # fmt: skip
_STEM = {"patch_embed.projection.weight": "D,3,P,P", "patch_embed.projection.bias": "D", "cls_token": "1,1,D"}
PATCH_WEIGHT = "patch_embed.projection.weight"
PATCH_BIAS = "patch_embed.projection.bias"


def _renames(*pairs: tuple[str, str]) -> tuple[tuple[re.Pattern[str], str], ...]:
    return tuple((re.compile(pattern), replacement) for pattern, replacement in pairs)


@dataclass(frozen=True)
class BackboneFamily:
    """A timm architecture class, the mmseg backbone its weights fill, and the tensors such a checkpoint holds."""

    layout: str  # what CheckpointMetadata.layout says
    timm_class: str
    mmseg_class: str
    renames: tuple[tuple[re.Pattern[str], str], ...]  # timm name -> mmseg name, full matches, in order
    tensors: Mapping[str, str]  # mmseg name ('layers.{i}.' for every layer) -> shape
    optional: re.Pattern[str]  # tensors a checkpoint may lack (all of one group, in every layer alike)
    derived: re.Pattern[str] = re.compile(r"(?!)")  # buffers the mmseg model computes itself
    classifier: re.Pattern[str] = field(default=re.compile(r"(head|fc_norm)\..*"))  # timm weights a backbone drops

    @property
    def resampled(self) -> re.Pattern[str]:
        """Tensors whose shape follows the pretraining grid ('*' in a shape): mmseg resamples them. Matched by
        their name within a layer, so that timm's names (``blocks.N.``) match as mmseg's (``layers.N.``) do."""
        names = [name.rpartition("{i}.")[2] for name, shape in self.tensors.items() if "*" in shape and not self.derived.fullmatch(name.replace("{i}", "0"))]
        return re.compile("|".join(rf"(.*\.)?{re.escape(n)}" for n in names) or r"(?!)")

    def to_mmseg(self, names: list[str]) -> dict[str, str]:
        """timm name -> mmseg name for every weight but the classifier's; ValueError naming what mmseg has no place for."""
        converted, unsupported = {}, []
        for name in names:
            if self.classifier.fullmatch(name):
                continue
            for pattern, replacement in self.renames:
                if match := pattern.fullmatch(name):
                    converted[name] = match.expand(replacement)
                    break
            else:
                unsupported.append(name)
        if unsupported:
            raise ValueError(f"mmseg's {self.mmseg_class} has no place for {', '.join(unsupported[:5])}")
        return converted

    def structure_problems(self, shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
        """What keeps tensors of these names and shapes from being exactly a checkpoint of this family: an
        unknown or missing tensor, a gap in the layers, shapes that disagree; [] if nothing does."""
        patterns = [(re.compile(re.escape(t).replace(r"\{i\}", r"(\d+)")), t) for t in self.tensors]
        templates, layers, problems = {}, set(), []
        for name in shapes:
            match, template = next(((m, t) for p, t in patterns if (m := p.fullmatch(name))), (None, None))
            if match is None:
                problems.append(f"unexpected tensor {name!r}")
                continue
            templates[name] = self.tensors[template]
            layers.update(int(index) for index in match.groups())
        depth = max(layers, default=-1) + 1
        if depth == 0:
            problems.append("no layers")
        expected = [t.replace("{i}", str(i)) for t in self.tensors for i in (range(depth) if "{i}" in t else [0])]
        optional = [name for name in expected if self.optional.fullmatch(name)]
        left_out = set(optional) if not any(name in shapes for name in optional) else set()  # all or none
        problems += [
            f"missing tensor {name!r}"
            for name in expected
            if name not in shapes and name not in left_out and not self.derived.fullmatch(name)
        ]
        return problems + _shape_problems(shapes, templates)


def _shape_problems(shapes: Mapping[str, tuple[int, ...]], templates: Mapping[str, str]) -> list[str]:
    """Shapes that do not fit their templates with one value per symbol (the first binding wins)."""
    bound: dict[str, int] = {}
    problems = []
    for name, template in templates.items():
        shape = shapes[name]
        dims = template.split(",")
        if len(shape) != len(dims):
            problems.append(f"{name!r} has {len(shape)} dimensions, not {len(dims)}")
            continue
        for size, dim in zip(shape, dims):
            if dim == "*":
                continue
            if dim.isdigit():
                expected = int(dim)
            else:
                factor, symbol = (int(dim[:-1]), dim[-1]) if len(dim) > 1 else (1, dim)
                if symbol not in bound and size % factor == 0:
                    bound[symbol] = size // factor
                expected = factor * bound.get(symbol, -1)
            if size != expected:
                problems.append(f"{name!r} has shape {tuple(shape)}, which does not fit {template.replace(',', ', ')} ({_bindings(bound)})")
                break
    return problems


def _bindings(bound: Mapping[str, int]) -> str:
    return ", ".join(f"{symbol}={value}" for symbol, value in sorted(bound.items()))


FAMILIES: dict[str, BackboneFamily] = {
    family.layout: family
    for family in (
        BackboneFamily(
            layout=CheckpointMetadata.LAYOUT,
            timm_class="VisionTransformer",
            mmseg_class="VisionTransformer",
            renames=_renames(
                (r"(cls_token|pos_embed)", r"\1"),
                (r"patch_embed\.proj\.(weight|bias)", r"patch_embed.projection.\1"),
                (r"blocks\.(\d+)\.norm([12])\.(weight|bias)", r"layers.\1.ln\2.\3"),
                (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"layers.\1.attn.attn.in_proj_\2"),
                (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"layers.\1.attn.attn.out_proj.\2"),
                (r"blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", r"layers.\1.ffn.layers.0.0.\2"),
                (r"blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", r"layers.\1.ffn.layers.1.\2"),
                (r"norm\.(weight|bias)", r"ln1.\1"),
            ),
            tensors={
                **_STEM,
                "pos_embed": "1,*,D",
                **{f"layers.{{i}}.{name}": shape for name, shape in _VIT_LAYER.items()},
                "layers.{i}.attn.attn.in_proj_weight": "3D,D",
                "layers.{i}.attn.attn.in_proj_bias": "3D",
                "layers.{i}.attn.attn.out_proj.weight": "D,D",
                "layers.{i}.attn.attn.out_proj.bias": "D",
                "ln1.weight": "D",  # timm's final norm: used with final_norm=True (Segmenter)
                "ln1.bias": "D",
            },
            optional=re.compile(r"ln1\.(weight|bias)"),
        ),
        BackboneFamily(
            layout=CheckpointMetadata.BEIT_LAYOUT,
            timm_class="Beit",
            mmseg_class="BEiT",
            renames=_renames(
                (r"cls_token", r"cls_token"),
                (r"patch_embed\.proj\.(weight|bias)", r"patch_embed.projection.\1"),
                (r"blocks\.(\d+)\.(gamma_[12])", r"layers.\1.\2"),
                (r"blocks\.(\d+)\.norm([12])\.(weight|bias)", r"layers.\1.ln\2.\3"),
                (r"blocks\.(\d+)\.attn\.(q_bias|v_bias|relative_position_bias_table)", r"layers.\1.attn.\2"),
                (r"blocks\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)", r"layers.\1.attn.\2.\3"),
                (r"blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", r"layers.\1.ffn.layers.0.0.\2"),
                (r"blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", r"layers.\1.ffn.layers.1.\2"),
            ),
            tensors={
                **_STEM,
                **{f"layers.{{i}}.{name}": shape for name, shape in _VIT_LAYER.items()},
                "layers.{i}.gamma_1": "D",  # layer scale: present with init_values
                "layers.{i}.gamma_2": "D",
                "layers.{i}.attn.q_bias": "D",
                "layers.{i}.attn.v_bias": "D",
                "layers.{i}.attn.relative_position_bias_table": "*,A",
                "layers.{i}.attn.relative_position_index": "*,*",
                "layers.{i}.attn.qkv.weight": "3D,D",
                "layers.{i}.attn.proj.weight": "D,D",
                "layers.{i}.attn.proj.bias": "D",
            },
            optional=re.compile(r"layers\.\d+\.gamma_[12]"),
            derived=re.compile(r"layers\.\d+\.attn\.relative_position_index"),
        ),
    )
}


def family_of_timm(class_name: str) -> BackboneFamily | None:
    """The family of a timm model class (by name), None if no key can be folded into it here."""
    return next((f for f in FAMILIES.values() if f.timm_class == class_name), None)


def family_of_mmseg(class_name: str) -> BackboneFamily | None:
    """The family of an mmseg backbone class (by name), None if cipherseg's checkpoints do not fill it."""
    return next((f for f in FAMILIES.values() if f.mmseg_class == class_name), None)


def fit_problems(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], resampled: re.Pattern[str],
    *, unused: re.Pattern[str] = re.compile(r"(?!)"), derived: re.Pattern[str] = re.compile(r"(?!)"),
) -> list[str]:
    """What keeps a checkpoint's tensors (``found``) from filling a model's (``expected``) exactly; [] if nothing.

    ``resampled`` tensors may differ in shape (the model resamples them), ``derived`` ones come from the
    model, and ``unused`` ones may be in the checkpoint without a place in the model.
    """
    problems = [f"missing {name}" for name in expected if name not in found and not derived.fullmatch(name)]
    problems += [f"unexpected {name}" for name in found if name not in expected and not unused.fullmatch(name)]
    problems += [
        f"{name} has shape {tuple(found[name])}, the model {tuple(shape)}"
        for name, shape in expected.items()
        if name in found and not resampled.fullmatch(name) and tuple(found[name]) != tuple(shape)
    ]
    return problems


@dataclass(frozen=True)
class FirstLayer:
    """A model's first convolution, as the explanation below needs it."""

    name: str
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    @property
    def non_overlapping(self) -> bool:
        return self.kernel == self.stride and not any(self.padding) and self.dilation == (1, 1) and self.groups == 1


def why_no_fold(first: FirstLayer | None, supported: str) -> str:
    """Why a model's first layer cannot read encrypted images here (``supported`` says what can)."""
    if first is None:
        return f"it has no convolutional stem; {supported}"
    (kh, kw), stride = first.kernel, first.stride[0]
    shape = f"a {kh}x{kw} convolution with stride {stride}" + (f" and padding {first.padding[0]}" if any(first.padding) else "")
    if first.non_overlapping:
        return f"its first layer {first.name} is {shape}, a non-overlapping patch embedding, but {supported}"
    return (
        f"its first layer {first.name} is {shape}: its windows overlap and mix pixels of neighbouring blocks, "
        f"so no key can be folded into it; {supported}"
    )
