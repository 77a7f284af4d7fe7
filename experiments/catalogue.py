"""What the experiments can run: the backbones and their configs, the methods of the paper's Table I, the
paper's own values, the settings of a run and its two scales, and the plan of runs they make."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from contract.registry import METHODS as PAPER_METHODS
from experiments.harness import CONFIGS

log = logging.getLogger("experiments")

METRICS = ("aAcc", "mIoU", "mAcc")
DECODERS = {"mla": "MLA", "pup": "PUP", "naive": "Naive"}  # SETR's, Table I's order
SEGMENTORS = {"segmenter": "Segmenter", "upernet": "UperNet-ViT", "dpt": "DPT"}  # beyond SETR
HEADS = {**DECODERS, **SEGMENTORS}
PAIR = ("baseline", "proposed")  # what the segmentors beyond SETR run: the method and what it must match


def _setr(template: str) -> dict[str, str]:
    """Each SETR decoder's config, from a template with {decoder} and {method}."""
    return {decoder: template.replace("{decoder}", decoder) for decoder in DECODERS}


@dataclass(frozen=True)
class Backbone:
    label: str  # as in the table; the paper's name where it has one
    short: str  # the architecture's usual short name, for the figures
    arch: str  # timm architecture
    configs: dict[str, str]  # decoder or segmentor -> config path under training/configs, with {method}
    paper: str  # the paper's backbone whose values the table shows beside this one's


BACKBONES = {
    "vit-tiny": Backbone("ViT-tiny", "ViT-Ti/16", "vit_tiny_patch16_224", {
        **_setr("tiny/setr_tiny_{decoder}_{method}.py"),
        "segmenter": "tiny/segmenter_tiny_mask_{method}.py",
        "upernet": "tiny/upernet_tiny_mln_{method}.py",
        "dpt": "tiny/dpt_tiny_project_{method}.py",
    }, paper="ViT-base"),
    "vit-small": Backbone(
        "ViT-small", "ViT-S/16", "vit_small_patch16_224", _setr("tiny/setr_small_{decoder}_{method}.py"),
        paper="ViT-Large",
    ),
    "vit-base": Backbone("ViT-base", "ViT-B/16", "vit_base_patch16_384", {
        **_setr("setr_vit-b16_{decoder}_8xb1-80k_cityscapes-768x768_{method}.py"),
        "segmenter": "segmenter_vit-b16_mask_8xb1-80k_cityscapes-768x768_{method}.py",
        "upernet": "upernet_vit-b16_mln_8xb2-80k_cityscapes-768x768_{method}.py",
        "dpt": "dpt_vit-b16_project_8xb2-80k_cityscapes-768x768_{method}.py",
    }, paper="ViT-base"),
    "vit-large": Backbone(
        "ViT-Large", "ViT-L/16", "vit_large_patch16_384",
        _setr("setr_vit-l16_{decoder}_8xb1-80k_cityscapes-768x768_{method}.py"), paper="ViT-Large",
    ),
}  # fmt: skip
PAPER_BESIDE = {b.label: b.paper for b in BACKBONES.values()}
SHORT = {b.label: b.short for b in BACKBONES.values()}


@dataclass(frozen=True)
class Method:
    label: str
    config: str  # the method part of the config name
    bundle: str  # "plain", "encrypted" or "augmented" (the owner-augmented encrypted bundle)
    trained: bool = True  # conventional 1 is the baseline's model, encrypted by the owner


METHODS = {
    # The paper's four, as the contract's registry defines them, and two rows the paper lacks.
    **{m.name: Method(m.title, m.name, m.data, trained=m.trained_in_cloud) for m in PAPER_METHODS.values()},
    "paper-augmentation": Method("proposed + paper augmentation on ciphertext", "proposed_paper-augmentation", "encrypted"),
    "owner-augmentation": Method("proposed + flip, multi-scale by the owner", "proposed", "augmented"),
}
TABLE_I = ("baseline", "conventional1", "conventional2", "proposed")
# The paper's Table I: (backbone, decoder, method) -> (aAcc, mIoU, mAcc).
PAPER = {
    ("ViT-base", "MLA", "baseline"): (94.74, 71.79, 81.50),
    ("ViT-base", "MLA", "conventional 2"): (89.09, 39.87, 46.61),
    ("ViT-base", "MLA", "proposed"): (94.54, 70.99, 80.85),
    ("ViT-base", "PUP", "baseline"): (93.90, 64.35, 74.68),
    ("ViT-base", "PUP", "conventional 2"): (89.40, 44.65, 54.44),
    ("ViT-base", "PUP", "proposed"): (94.06, 67.08, 75.08),
    ("ViT-base", "Naive", "baseline"): (93.79, 68.14, 78.39),
    ("ViT-base", "Naive", "conventional 2"): (88.78, 40.59, 49.94),
    ("ViT-base", "Naive", "proposed"): (94.52, 70.64, 80.80),
    ("ViT-Large", "MLA", "baseline"): (95.20, 73.26, 81.43),
    ("ViT-Large", "MLA", "conventional 2"): (92.33, 53.55, 62.32),
    ("ViT-Large", "MLA", "proposed"): (94.88, 72.57, 80.69),
    ("ViT-Large", "PUP", "baseline"): (94.66, 67.14, 76.13),
    ("ViT-Large", "PUP", "conventional 2"): (89.25, 38.59, 44.63),
    ("ViT-Large", "PUP", "proposed"): (94.52, 66.20, 74.57),
    ("ViT-Large", "Naive", "baseline"): (94.96, 71.38, 81.03),
    ("ViT-Large", "Naive", "conventional 2"): (89.60, 42.03, 49.06),
    ("ViT-Large", "Naive", "proposed"): (94.96, 70.51, 79.02),
}


@dataclass(frozen=True)
class Settings:
    """One run's choices. ``iters=None`` keeps the configs' schedule; ``raw=None`` generates the sample."""

    backbones: tuple[str, ...]
    decoders: tuple[str, ...]  # SETR's: every method
    segmentors: tuple[str, ...] = ()  # beyond SETR: PAIR, on the backbones that have their configs
    methods: tuple[str, ...] = tuple(METHODS)
    seeds: int = 1  # SETR baselines are trained with seeds 0 .. seeds - 1, every other run with seed 0
    iters: int | None = None
    batch_size: int | None = None  # per GPU; None keeps the config's
    raw: str | None = None
    weights: dict[str, str] = field(default_factory=dict)  # backbone -> timm checkpoint; else proxy-pretrained
    sample_counts: str = "96,48,0"
    sample_size: str = "256x512"  # the tiny paper-augmentation config's resize scale assumes it
    pretrain_counts: str = "96,0,0"
    pretrain_steps: int = 1000
    copies: int = 2  # owner-augmented copies of each training image
    gpus: int = 0
    examples: int = 2  # val images in fig5.png


SCALES = {
    "small": Settings(
        backbones=("vit-tiny", "vit-small"), decoders=tuple(DECODERS), segmentors=tuple(SEGMENTORS), methods=TABLE_I,
        seeds=2, iters=300, batch_size=4,
    ),
    "full": Settings(backbones=("vit-base", "vit-large"), decoders=tuple(DECODERS), gpus=8),
}  # fmt: skip


@dataclass(frozen=True)
class Run:
    """One row of the table: a model trained (or, for conventional 1, encrypted by the owner) and evaluated."""

    backbone: str
    decoder: str  # a SETR decoder or a segmentor
    method: str
    seed: int
    config: Path


def plan(settings: Settings) -> list[Run]:
    """Every run, in order: per backbone, the SETR decoders, then the segmentors beyond SETR."""
    runs = []
    for name in settings.backbones:
        backbone = BACKBONES[name]
        heads = [(d, settings.methods, settings.seeds) for d in settings.decoders]
        heads += [(s, tuple(m for m in PAIR if m in settings.methods), 1) for s in settings.segmentors]
        for head, methods, seeds in heads:
            if head not in backbone.configs:
                log.info("no %s config for %s: not run", HEADS[head], backbone.label)
                continue
            seeded = [(m, 0) for m in methods] + [("baseline", s) for s in range(1, seeds) if "baseline" in methods]
            for method, seed in seeded:
                config = CONFIGS / backbone.configs[head].format(method=METHODS[method].config)
                if config.exists():
                    runs.append(Run(name, head, method, seed, config))
                else:
                    log.warning("skipping %s / %s / %s: no config %s", backbone.label, HEADS[head], method, config.name)
    return runs
