"""The paper's Table I, reproduced: ``python -m training.experiments table1 --scale small|full --out DIR``.

Trains and evaluates the methods of Table I (baseline, conventional 1, conventional 2, proposed) for
every chosen backbone and SETR decoder, the proposed method and its baseline for the segmentors beyond
SETR (Segmenter, UperNet-ViT, DPT) on the backbones that have configs for them, and each SETR baseline
again with other seeds (``--seeds``), to show how far a result moves from seed to seed. Every run has
the same iterations and batch size, and all but those extra baselines seed 0. It writes to ``--out``:
``report.md`` (the table with the paper's values beside it, each method's gap to the baseline beside
the baseline's seed spread), ``table.csv``, ``bars.png`` (ours, and the paper's as a reference group),
``fig4.png`` (a val image plain, encrypted by shuffling and with negative-positive too, like the
paper's Fig. 4) and ``fig5.png`` (input, encrypted input, ground truth and every method's prediction,
with a class legend, like the paper's Fig. 5: the last backbone and first decoder, ViT-Large and MLA
in the paper).

The runner plays both roles of the experiment, but keeps them apart as the system does: it never
touches a key. Every owner step (sample, keygen, encrypt, encrypt-weights, publish, the owner's
augmentation, encrypting conventional 1's fine-tuned model, and encrypt-query for Fig. 4) runs through
the owner's command line, ``python -m pipeline.run``, in a subprocess, on an owner root under
``--work`` that the runner only passes around as paths; the cloud steps read the published bundles
(``python -m training.train``, then :func:`training.test.evaluate` and :class:`training.inference.Segmenter`).

Small scale (``docs/table1-small``: about 50 minutes on 2 CPU cores)::

    python -m training.experiments table1 --scale small --out docs/table1-small

generates the synthetic Cityscapes sample (96 train, 48 val images of 256x512), proxy-pretrains a
ViT-Ti/16 and a ViT-S/16 on other generated scenes (training/pretrain.py; cached under ``--work``,
or give timm checkpoints with ``--weights vit-tiny=PATH``) and fine-tunes the tiny configs (64x64
crops, 128x128 inference windows) from them: SETR's three decoders on both backbones, four methods
each, the baseline with seeds 0 and 1, and Segmenter, UperNet-ViT and DPT on ViT-Ti/16.

Full scale (the paper's setting: Cityscapes, 80k iterations, 8 GPUs x batch 1)::

    python -m training.experiments table1 --scale full --out reports/table1 --work /scratch/table1 \\
        --raw /data/cityscapes \\
        --weights vit-base=/weights/vit_base_patch16_384.augreg_in21k_ft_in1k.safetensors \\
        --weights vit-large=/weights/vit_large_patch16_384.augreg_in21k_ft_in1k.safetensors \\
        --gpus 8

``--raw`` is a Cityscapes root (leftImg8bit/ and gtFine/ with labelIds), the weights are local timm
checkpoints of ``vit_base_patch16_384`` and ``vit_large_patch16_384`` (.safetensors, .pth or .npz;
nothing is downloaded). ``--backbones``, ``--decoders``, ``--segmentors`` and ``--methods`` choose
rows (``--segmentors segmenter,upernet,dpt`` adds the ViT-B/16 pairs); ``--iters`` shortens the
schedule, every LR scheduler scaled with it. Each training runs under ``torchrun`` on ``--gpus`` GPUs;
the rest runs on one. Disk: the owner's stores and three bundles per backbone, each about the size of
Cityscapes' PNGs (the owner-augmented one ``1 + --copies`` times the training split). The rows the
paper lacks, ``paper-augmentation`` and ``owner-augmentation`` (the proposed method with mmseg's SETR
augmentation on ciphertext, and with flip and multi-scale done by the owner before encryption), run
when ``--methods`` names them; the first needs a ``*_proposed_paper-augmentation.py`` config (ViT-B/16
Naive and tiny Naive have one).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

log = logging.getLogger("experiments")

CONFIGS = Path(__file__).parent / "configs"
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
    arch: str  # timm architecture
    configs: dict[str, str]  # decoder or segmentor -> config path under training/configs, with {method}
    paper: str  # the paper's backbone whose values the table shows beside this one's


BACKBONES = {
    "vit-tiny": Backbone("ViT-tiny", "vit_tiny_patch16_224", {
        **_setr("tiny/setr_tiny_{decoder}_{method}.py"),
        "segmenter": "tiny/segmenter_tiny_mask_{method}.py",
        "upernet": "tiny/upernet_tiny_mln_{method}.py",
        "dpt": "tiny/dpt_tiny_project_{method}.py",
    }, paper="ViT-base"),
    "vit-small": Backbone(
        "ViT-small", "vit_small_patch16_224", _setr("tiny/setr_small_{decoder}_{method}.py"), paper="ViT-Large"
    ),
    "vit-base": Backbone("ViT-base", "vit_base_patch16_384", {
        **_setr("setr_vit-b16_{decoder}_8xb1-80k_cityscapes-768x768_{method}.py"),
        "segmenter": "segmenter_vit-b16_mask_8xb1-80k_cityscapes-768x768_{method}.py",
        "upernet": "upernet_vit-b16_mln_8xb2-80k_cityscapes-768x768_{method}.py",
        "dpt": "dpt_vit-b16_project_8xb2-80k_cityscapes-768x768_{method}.py",
    }, paper="ViT-base"),
    "vit-large": Backbone(
        "ViT-Large", "vit_large_patch16_384", _setr("setr_vit-l16_{decoder}_8xb1-80k_cityscapes-768x768_{method}.py"),
        paper="ViT-Large",
    ),
}  # fmt: skip
PAPER_BESIDE = {b.label: b.paper for b in BACKBONES.values()}


@dataclass(frozen=True)
class Method:
    label: str
    config: str  # the method part of the config name
    bundle: str  # "plain", "encrypted" or "augmented" (the owner-augmented encrypted bundle)
    trained: bool = True  # conventional 1 is the baseline's model, encrypted by the owner


METHODS = {
    "baseline": Method("baseline", "baseline", "plain"),
    "conventional1": Method("conventional 1", "conventional1", "encrypted", trained=False),
    "conventional2": Method("conventional 2", "conventional2", "encrypted"),
    "proposed": Method("proposed", "proposed", "encrypted"),
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


@dataclass
class Row:
    backbone: str
    decoder: str
    method: str
    seed: int
    metrics: dict[str, float]
    train_s: float
    paper: tuple[float, float, float] | None  # the paper's, for the backbone PAPER_BESIDE names


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


def owner(*args: str) -> None:
    """One owner step, through the owner's command line (the runner never holds the key itself)."""
    _run([sys.executable, "-m", "pipeline.run", *args])


def owner_key(work: Path) -> Path:
    """Where the owner's key file is: a path the runner passes on, never opens."""
    return work / "owner" / "key.json"


def owner_signer(work: Path) -> Path:
    """The owner's public signer file, which keygen writes beside the key: what the cloud checks bundles with."""
    return owner_key(work).parent / "signer.json"


def prepare_owner(settings: Settings, work: Path) -> tuple[dict[str, dict[str, Path]], dict[str, str]]:
    """Every owner step before training: data, key, stores, checkpoints and the published bundles.

    Returns {backbone: {"plain" | "encrypted" | "augmented": bundle}} (paths under ``work``), and
    {backbone label: where its pretrained weights came from}.
    """
    root = work / "owner"
    key = ["--key", str(owner_key(work))]
    raw = settings.raw or str(root / "cityscapes")
    if settings.raw is None:
        owner("--stage", "sample", "--raw", raw, "--sample-counts", settings.sample_counts,
              "--sample-size", settings.sample_size)  # fmt: skip
    if not owner_key(work).exists():
        owner("--stage", "keygen", *key)
    stores = {"plain": root / "plain.zarr", "encrypted": root / "encrypted.zarr"}
    owner("--stage", "encrypt", "--plain", "--raw", raw, "--store", str(stores["plain"]))
    owner("--stage", "encrypt", *key, "--raw", raw, "--store", str(stores["encrypted"]))
    if any(METHODS[m].bundle == "augmented" for m in settings.methods):
        augmented = str(root / "cityscapes-augmented")
        owner("--stage", "augment", "--raw", raw, "--out", augmented, "--copies", str(settings.copies))
        stores["augmented"] = root / "augmented.zarr"
        owner("--stage", "encrypt", *key, "--raw", augmented, "--store", str(stores["augmented"]))

    pretrained = pretrained_backbones(settings, work / "pretrain")
    bundles, sources = {}, {}
    for name in settings.backbones:
        backbone = BACKBONES[name]
        weights, sources[backbone.label] = pretrained[name]
        checkpoints = {"plain": root / name / "plain.safetensors", "encrypted": root / name / "encrypted.safetensors"}
        common = ["--weights", str(weights), "--arch", backbone.arch]
        owner("--stage", "encrypt-weights", "--plain", *common, "--encrypted-weights", str(checkpoints["plain"]))
        owner("--stage", "encrypt-weights", *key, *common, "--encrypted-weights", str(checkpoints["encrypted"]))
        bundles[name] = {}
        for kind, store in stores.items():
            bundle = work / "bundles" / name / kind
            checkpoint = checkpoints["plain" if kind == "plain" else "encrypted"]
            owner("--stage", "publish", *key, "--store", str(store), "--encrypted-weights", str(checkpoint),
                  "--bundle", str(bundle))  # fmt: skip
            bundles[name][kind] = bundle
    return bundles, sources


def pretrained_backbones(settings: Settings, root: Path) -> dict[str, tuple[Path, str]]:
    """{backbone: (a plain timm checkpoint, where it came from)}: given, cached under ``root``, or proxy-pretrained
    now for ``pretrain_steps`` steps on generated scenes of another seed (public data)."""
    from training.pretrain import pretrain

    found, store = {}, None
    for name in settings.backbones:
        arch = BACKBONES[name].arch
        cached = root / f"{arch}_{settings.pretrain_steps}-steps.safetensors"
        if name in settings.weights:
            found[name] = Path(settings.weights[name]), f"given, {settings.weights[name]}"
        elif cached.exists():
            found[name] = cached, f"proxy-pretrained, cached by an earlier run ({cached.name}; not in the wall time)"
        else:
            if store is None:  # the owner's tools only as a generator and a format converter: no key, nothing private
                store, raw = root / "plain.zarr", str(root / "cityscapes")
                owner("--stage", "sample", "--raw", raw, "--seed", "1", "--sample-counts", settings.pretrain_counts,
                      "--sample-size", settings.sample_size)  # fmt: skip
                owner("--stage", "encrypt", "--plain", "--raw", raw, "--store", str(store))
            log.info("proxy pretraining %s for %d steps", arch, settings.pretrain_steps)
            started = time.monotonic()
            pretrain(store, arch, cached, steps=settings.pretrain_steps)
            found[name] = cached, f"proxy-pretrained in this run, {settings.pretrain_steps} steps in {time.monotonic() - started:.0f} s"
    return found


def schedule_options(config: Path, iters: int) -> list[str]:
    """``--cfg-options`` that set the config's schedule to ``iters`` iterations, every LR scheduler scaled with it."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(config))
    scale = iters / cfg.train_cfg.max_iters
    options = [f"train_cfg.max_iters={iters}", f"default_hooks.checkpoint.interval={iters}"]
    for i, scheduler in enumerate(cfg.param_scheduler):
        options += [f"param_scheduler.{i}.{end}={round(scheduler[end] * scale)}" for end in ("begin", "end")]
    return options


def train(
    settings: Settings, config: Path, bundle: Path, signer: Path, work_dir: Path, options: Sequence[str] = ()
) -> Path:
    """Fine-tune with ``python -m training.train`` (under torchrun with ``gpus``); returns the last checkpoint.

    No validation while training: :func:`execute` evaluates the last checkpoint once.
    """
    overrides = [*options, "val_cfg=None", "val_dataloader=None", "val_evaluator=None"]
    if settings.iters:
        overrides += schedule_options(config, settings.iters)
    if settings.batch_size:
        overrides.append(f"train_dataloader.batch_size={settings.batch_size}")
    launch = [sys.executable, "-m", "training.train"]
    if settings.gpus > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={settings.gpus}",
                  "-m", "training.train", "--launcher", "pytorch"]  # fmt: skip
    command = [*launch, str(config), "--bundle", str(bundle), "--signer", str(signer), "--work-dir", str(work_dir)]
    _run([*command, "--cfg-options", *overrides])
    return Path((work_dir / "last_checkpoint").read_text().strip())


def cloud_config(config: Path, bundle: Path, signer: Path, work_dir: Path, options: Sequence[str] = ()):
    """The config as training.test and training.predict load it, with a fresh experiment name."""
    from mmengine.config import Config

    from training.config import load_config

    cfg_options = dict(o.split("=", 1) for o in options)
    cfg = load_config(config, str(bundle), signer=str(signer), work_dir=work_dir, cfg_options=cfg_options)
    # Unformatted: a runner formats its config with yapf each time it logs or dumps it, 1.4 s a time here.
    cfg = Config(cfg.to_dict(), filename=cfg.filename, format_python_code=False)
    cfg.experiment_name = uuid.uuid4().hex  # mmengine keys its loggers by name: one per runner
    return cfg


def execute(
    settings: Settings, run: Run, bundles: dict[str, Path], work: Path, baseline: Path | None
) -> tuple[Row, object, Path]:
    """Train (or have the owner encrypt ``baseline``, conventional 1) and evaluate one run: its row, config and model."""
    from training.export import export
    from training.test import evaluate

    backbone, method = BACKBONES[run.backbone], METHODS[run.method]
    work_dir = work / "cloud" / run.backbone / run.decoder / (run.method + (f"-seed{run.seed}" if run.seed else ""))
    plain_checkpoint = bundles["plain"] / "backbone.safetensors"
    # Conventional 2 starts from the plain checkpoint: the one the baseline's bundle carries.
    options = [f"model.backbone.init_cfg.checkpoint={plain_checkpoint}"] if run.method == "conventional2" else []
    seed = [f"randomness.seed={run.seed}"] if run.seed else []  # training's: crops, their order, the heads' init
    label = f"{backbone.label} / {HEADS[run.decoder]} / {method.label}" + (f" / seed {run.seed}" if run.seed else "")
    started = time.monotonic()
    if method.trained:
        log.info("training %s", label)
        checkpoint = train(settings, run.config, bundles[method.bundle], owner_signer(work), work_dir, options + seed)
    else:  # conventional 1: the cloud hands the baseline's model to the owner, who encrypts it
        plain = export(str(baseline), work_dir / "baseline.safetensors")
        checkpoint = work_dir / "encrypted-by-the-owner.safetensors"
        owner("--stage", "encrypt-weights", "--key", str(owner_key(work)), "--checkpoint", str(plain),
              "--out", str(checkpoint), "--encrypted-weights", str(plain_checkpoint))  # fmt: skip
    train_s = time.monotonic() - started
    # Evaluated on the val split of the bundle of its kind: the owner-augmented one's is the encrypted one's.
    cfg = cloud_config(run.config, bundles[method.bundle], owner_signer(work), work_dir, options)
    metrics = {m: float(v) for m, v in evaluate(cfg, str(checkpoint)).items() if m in METRICS}
    log.info("%s: %s", label, metrics)
    paper = PAPER.get((backbone.paper, HEADS[run.decoder], method.label)) if run.seed == 0 else None
    return Row(backbone.label, HEADS[run.decoder], method.label, run.seed, metrics, train_s, paper), cfg, checkpoint


def table1(settings: Settings, out: Path, work: Path, command: str) -> list[Row]:
    """Run the experiment and write the report to ``out``; returns the table's rows."""
    if "conventional1" in settings.methods and "baseline" not in settings.methods:
        raise ValueError("conventional 1 is the baseline's model encrypted: --methods needs baseline too")
    methods = tuple(m for m in METHODS if m in settings.methods)  # baseline before conventional 1
    settings = replace(settings, methods=methods)
    runs = plan(settings)
    if not runs:
        raise ValueError("nothing to run: no config for the chosen backbones, decoders and methods")
    started = time.monotonic()
    bundles, sources = prepare_owner(settings, work)
    # Fig. 5 as the paper's: its larger backbone and MLA, here the last backbone and first decoder.
    shown = next(((r.backbone, r.decoder) for r in runs if r.backbone == settings.backbones[-1]), None)
    shown = shown or (runs[0].backbone, runs[0].decoder)
    rows, checkpoints, figure_models = [], {}, {}
    for run in runs:
        baseline = checkpoints.get((run.backbone, run.decoder, "baseline", 0))
        row, cfg, checkpoints[run.backbone, run.decoder, run.method, run.seed] = execute(
            settings, run, bundles[run.backbone], work, baseline
        )
        rows.append(row)
        if (run.backbone, run.decoder) == shown and run.seed == 0:
            figure_models[run.method] = (cfg, checkpoints[run.backbone, run.decoder, run.method, 0])
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "table.csv")
    bar_chart(rows, out / "bars.png")
    fig4(encrypted_examples(work, bundles[runs[0].backbone]["plain"]), out / "fig4.png")
    title = f"{BACKBONES[shown[0]].label}, {HEADS[shown[1]]}"
    fig5(title, figure_models, bundles[shown[0]], out / "fig5.png", settings.examples)
    write_report(rows, settings, sources, out / "report.md", command, time.monotonic() - started)
    return rows


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _method(row: Row) -> str:
    return row.method + (f", seed {row.seed}" if row.seed else "")


def write_csv(rows: list[Row], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["backbone", "decoder", "method", "seed", *METRICS, "paper_backbone",
                         *(f"paper_{m}" for m in METRICS), "train_s"])  # fmt: skip
        for r in rows:
            paper = r.paper or ("",) * 3
            ours = (f"{r.metrics[m]:.2f}" for m in METRICS)
            beside = PAPER_BESIDE[r.backbone] if r.paper else ""
            writer.writerow([r.backbone, r.decoder, r.method, r.seed, *ours, beside, *paper, f"{r.train_s:.0f}"])


def markdown_table(rows: list[Row]) -> str:
    """Table I's shape: backbone, decoder, method, our aAcc, mIoU, mAcc, and the paper's beside them."""
    lines = [
        "| backbone (paper's) | decoder | method | aAcc | mIoU | mAcc | paper aAcc | paper mIoU | paper mAcc |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    previous = (None, None)
    for r in rows:
        paper_backbone = PAPER_BESIDE[r.backbone]
        backbone = (r.backbone + (f" ({paper_backbone})" if paper_backbone != r.backbone else "")) if r.backbone != previous[0] else ""
        decoder = r.decoder if (r.backbone, r.decoder) != previous else ""
        previous = (r.backbone, r.decoder)
        ours = " | ".join(_cell(r.metrics[m]) for m in METRICS)
        paper = " | ".join(_cell(v) for v in (r.paper or (None,) * 3))
        lines.append(f"| {backbone} | {decoder} | {_method(r)} | {ours} | {paper} |")
    return "\n".join(lines)


def baseline_seeds(rows: list[Row]) -> dict[tuple[str, str], list[dict[str, float]]]:
    """{(backbone, decoder): the baseline's metrics, one per seed}."""
    seeds: dict[tuple[str, str], list[dict[str, float]]] = {}
    for r in rows:
        if r.method == "baseline":
            seeds.setdefault((r.backbone, r.decoder), []).append(r.metrics)
    return seeds


def seed_spread(rows: list[Row]) -> dict[tuple[str, str], float]:
    """{(backbone, decoder): max - min of the baseline's mIoU over its seeds}, where it has more than one."""
    spread = {cell: [m["mIoU"] for m in seeds] for cell, seeds in baseline_seeds(rows).items()}
    return {cell: max(v) - min(v) for cell, v in spread.items() if len(v) > 1}


def gap_table(rows: list[Row]) -> str:
    """mIoU per backbone and decoder: each method minus the baseline, ours and the paper's, beside the seed spread."""
    main = {(r.backbone, r.decoder, r.method): r for r in rows if r.seed == 0}
    spread = seed_spread(rows)
    compared = [m.label for m in METHODS.values() if m.label != "baseline" and any(k[2] == m.label for k in main)]
    paper_compared = [m for m in compared if any(key[2] == m for key in PAPER)]
    lines = [
        "| backbone | decoder | baseline | seed spread | "
        + " | ".join(f"{m} − baseline" for m in compared)
        + "".join(f" | paper: {m} − baseline" for m in paper_compared)
        + " |",
        "|---|---|---:|---:|" + "---:|" * (len(compared) + len(paper_compared)),
    ]
    for backbone, decoder in dict.fromkeys((r.backbone, r.decoder) for r in rows):
        base = main.get((backbone, decoder, "baseline"))
        if base is None:
            continue
        gaps = [main.get((backbone, decoder, m)) for m in compared]
        ours = [f"{g.metrics['mIoU'] - base.metrics['mIoU']:+.2f}" if g else "—" for g in gaps]
        paper_base = PAPER.get((PAPER_BESIDE[backbone], decoder, "baseline"))
        theirs = [PAPER.get((PAPER_BESIDE[backbone], decoder, m)) for m in paper_compared]
        theirs = [f"{p[1] - paper_base[1]:+.2f}" if p and paper_base else "—" for p in theirs]
        cells = [backbone, decoder, f"{base.metrics['mIoU']:.2f}", _cell(spread.get((backbone, decoder))), *ours, *theirs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(
    rows: list[Row], settings: Settings, sources: dict[str, str], path: Path, command: str, seconds: float
) -> None:
    baseline = {(r.backbone, r.decoder): r.metrics for r in rows if r.method == "baseline" and r.seed == 0}
    proposed = [r for r in rows if r.method == "proposed" and (r.backbone, r.decoder) in baseline]
    differences = (abs(r.metrics[m] - baseline[r.backbone, r.decoder][m]) for r in proposed for m in METRICS)
    agreement = max(differences, default=None)
    spread = seed_spread(rows)
    chosen = {k: v for k, v in settings.__dict__.items() if k not in ("weights",)}
    lines = [
        "# Table I, reproduced",
        "",
        f"Command: `{command}`  ",
        f"Wall time: {seconds / 60:.1f} min ({seconds:.0f} s) on {os.cpu_count()} CPU cores"
        + (f" and {settings.gpus} GPUs" if settings.gpus else ""),
        "",
        f"Settings: {', '.join(f'{k}={v}' for k, v in chosen.items())}",
        "",
        "Pretrained backbones: " + "; ".join(f"{label}: {source}" for label, source in sources.items()) + ".",
        "",
        (
            "Metrics on the val split, percent (mmseg's IoUMetric). Every row trains with the same iterations and "
            "batch size, and with seed 0 but for the rows marked with another seed (the baseline again, to show "
            "how far a result moves from seed to seed). Conventional 1 is not trained in the cloud: it is the "
            "baseline's model, its patch embedding encrypted by the owner. The paper's columns are its Table I for "
            "the paper's backbone named in brackets (where our backbones are not the paper's: its ViT-B/16 beside "
            "the smaller, its ViT-L/16 beside the larger), the same decoder and method: a reference for the "
            "pattern across methods, not for the values (other data, other model sizes)."
        ),
        "",
        markdown_table(rows),
        "",
    ]
    if any(r.method == "baseline" for r in rows):
        lines += [
            "## Each method against the baseline (mIoU)",
            "",
            (
                "Each method's mIoU minus the baseline's (seed 0) in the same cell, and the paper's; the seed "
                "spread is the range of the baseline's mIoU over its seeds."
            ),
            "",
            gap_table(rows),
            "",
        ]
    if spread:
        pooled = float(np.sqrt(np.mean(np.square(list(spread.values()))) / 2))
        lines += [
            (
                f"Seed spread over {len(spread)} cells: mean {np.mean(list(spread.values())):.2f}, largest "
                f"{max(spread.values()):.2f} mIoU points; the standard deviation of one run's mIoU, pooled over "
                f"the cells, is about {pooled:.2f} points (sqrt of the mean squared difference over 2)."
            ),
            "",
        ]
    if agreement is not None:
        lines += [f"Largest |proposed − baseline| over the metrics and cells: {agreement:.2f} points.", ""]
    lines += ["![bars](bars.png)", "", "![Fig. 4](fig4.png)", "", "![Fig. 5](fig5.png)", ""]
    path.write_text("\n".join(lines))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(rows: list[Row], path: Path) -> None:
    """One panel per metric: a group of bars (one per method) per backbone and decoder, the baseline's seed range
    as an error bar, and the paper's Table I as a hatched reference group where it has the decoders."""
    plt = _pyplot()
    main = {(r.backbone, r.decoder, r.method): r.metrics for r in rows if r.seed == 0}
    ours = list(dict.fromkeys((r.backbone, r.decoder) for r in rows))
    methods = list(dict.fromkeys(r.method for r in rows))
    paper_groups = [(b, d) for b in dict.fromkeys(k[0] for k in PAPER) for d in dict.fromkeys(d for _, d in ours)
                    if (b, d, "baseline") in PAPER]  # fmt: skip
    seeds = baseline_seeds(rows)
    groups = ours + paper_groups
    x = np.arange(len(groups)) + np.array([0] * len(ours) + [1] * len(paper_groups))  # a gap before the paper's
    width = 0.8 / len(methods)
    colours = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(len(METRICS), 1, figsize=(max(8.0, 0.75 * len(groups) + 2), 2.7 * len(METRICS) + 1), sharex=True)
    for k, (ax, metric) in enumerate(zip(axes, METRICS)):
        for i, method in enumerate(methods):
            offset = (i - (len(methods) - 1) / 2) * width
            heights = [main.get((*g, method), {}).get(metric, np.nan) for g in ours]
            low_high = [[h - min(s[metric] for s in seeds[g]), max(s[metric] for s in seeds[g]) - h]
                        if method == "baseline" and len(seeds.get(g, [])) > 1 else [0, 0] for g, h in zip(ours, heights)]  # fmt: skip
            ax.bar(x[: len(ours)] + offset, heights, width, color=colours[method], label=method,
                   yerr=np.array(low_high).T if method == "baseline" else None, capsize=2)  # fmt: skip
            paper = [PAPER.get((*g, method), (np.nan,) * 3)[k] for g in paper_groups]
            ax.bar(x[len(ours) :] + offset, paper, width, color=colours[method], alpha=0.55, hatch="///", edgecolor="white")
        if paper_groups:
            ax.axvspan(x[len(ours)] - 0.6, x[-1] + 0.6, color="0.93", zorder=0)
        ax.set_ylabel(f"{metric} (%)")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", color="0.85", linewidth=0.6)
        ax.set_axisbelow(True)
    axes[-1].set_xticks(x, [f"{b}\n{d}" for b, d in ours] + [f"paper: {b}\n{d}" for b, d in paper_groups], fontsize=8)
    paper_note = (
        "hatched, on grey: the paper's Table I (Cityscapes; ViT-B/16 and ViT-L/16 at 384), a reference for the "
        "pattern, not the same models or data"
    )
    notes = [paper_note] if paper_groups else []
    notes += ["error bars: the baseline's range over its seeds"] if any(len(s) > 1 for s in seeds.values()) else []
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(methods), fontsize=9, frameon=False,
               title="\n".join(notes) or None, title_fontsize=8)  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.75 / fig.get_figheight()))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def encrypted_examples(work: Path, plain_bundle: Path) -> dict[str, np.ndarray]:
    """The first val image as a user holds it, and as the owner's key and a negative-positive key encrypt it
    (``encrypt-query``, the user's side of the owner's command line): {"plain" | "shuffled" | "negative-positive": RGB}."""
    from PIL import Image

    from training.store import open_store

    root = work / "fig4"
    root.mkdir(parents=True, exist_ok=True)
    images = {"plain": open_store(str(plain_bundle / "dataset.zarr"))["val"]["images"][0]}
    query = root / "query.png"
    Image.fromarray(images["plain"]).save(query)
    negative_positive = work / "owner" / "negative-positive" / "key.json"
    if not negative_positive.exists():
        owner("--stage", "keygen", "--negative-positive", "--key", str(negative_positive))
    for name, key in (("shuffled", owner_key(work)), ("negative-positive", negative_positive)):
        owner("--stage", "encrypt-query", "--key", str(key), "--query", str(query), "--out", str(root / name))
        images[name] = np.asarray(Image.open(root / name / query.name).convert("RGB"))
    return images


def fig4(images: dict[str, np.ndarray], path: Path, block: int = 16) -> None:
    """The paper's Fig. 4: a plain image and its encryptions, whole and a 4x4-block detail with the block grid."""
    from matplotlib.patches import Rectangle

    plt = _pyplot()
    titles = {"plain": "plain", "shuffled": "encrypted: block-wise pixel shuffling",
              "negative-positive": "encrypted: shuffling + negative-positive"}  # fmt: skip
    h, w = images["plain"].shape[:2]
    size = 4 * block
    y, x = (max(0, min(n // 2 // block * block, n - size)) for n in (h, w))  # block-aligned, near the centre
    fig, axes = plt.subplots(2, len(images), figsize=(4.2 * len(images), 4.2 * h / w + 4.6), squeeze=False,
                             gridspec_kw={"height_ratios": (h / w, 1)})  # fmt: skip
    for j, (name, image) in enumerate(images.items()):
        top, detail = axes[0, j], axes[1, j]
        top.imshow(image)
        top.add_patch(Rectangle((x - 0.5, y - 0.5), size, size, fill=False, edgecolor="yellow", linewidth=1.5))
        top.set_title(titles[name], fontsize=10)
        detail.imshow(image[y : y + size, x : x + size], interpolation="nearest")
        lines = np.arange(block, size, block) - 0.5
        detail.hlines(lines, -0.5, size - 0.5, color="yellow", linewidth=0.8)
        detail.vlines(lines, -0.5, size - 0.5, color="yellow", linewidth=0.8)
        detail.set_title(f"detail: {size}x{size} pixels, {block}x{block} blocks", fontsize=9)
        for ax in (top, detail):
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def fig5(title: str, models: dict[str, tuple[object, Path]], bundles: dict[str, Path], path: Path, examples: int) -> None:
    """The paper's Fig. 5: input, encrypted input, ground truth and each method's prediction (one row each) for
    ``examples`` val images (one column each), with the Cityscapes palette's legend."""
    import torch
    from matplotlib.patches import Patch

    from training.inference import LabelMaps, Segmenter
    from training.store import open_store

    plt = _pyplot()
    plain, encrypted = (open_store(str(bundles[kind] / "dataset.zarr"))["val"] for kind in ("plain", "encrypted"))
    maps = LabelMaps.cityscapes()
    colours = maps.colours  # black for 255 (ignored)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    predictions = {}
    for name, (cfg, checkpoint) in models.items():
        segmenter = Segmenter(cfg, str(checkpoint), device)
        source = plain if METHODS[name].bundle == "plain" else encrypted
        predictions[METHODS[name].label] = [colours[m] for m in segmenter.segment([source["images"][i] for i in range(examples)])]
    panels = {"input": [plain["images"][i] for i in range(examples)],
              "encrypted input": [encrypted["images"][i] for i in range(examples)],
              "ground truth": [colours[plain["labels"][i]] for i in range(examples)], **predictions}  # fmt: skip
    h, w = plain["images"].shape[1:3]
    fig, axes = plt.subplots(len(panels), examples, figsize=(4.2 * examples + 1.3, 4.2 * h / w * len(panels) + 1.6),
                             squeeze=False)  # fmt: skip
    for i, (label, images) in enumerate(panels.items()):
        axes[i, 0].set_ylabel(label.replace(" + ", "\n+ "), fontsize=10)
        for j, image in enumerate(images):
            axes[i, j].imshow(image, interpolation="nearest")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
    classes = [*maps.classes, "ignored"]
    handles = [Patch(facecolor=colours[i if i < 19 else 255] / 255, edgecolor="0.5", label=c) for i, c in enumerate(classes)]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=9, frameon=False)
    fig.suptitle(f"Segmentation maps ({title}; val images)", fontsize=11)
    fig.tight_layout(rect=(0, 1.1 / fig.get_figheight(), 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _run(command: list[str]) -> None:
    """Run a step, its output shown only if it fails."""
    log.info("$ %s", shlex.join(command))
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{shlex.join(command)} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}")


def _names(text: str | None) -> tuple[str, ...] | None:
    """A comma-separated list ('' is none), or None where the option was not given."""
    return None if text is None else tuple(n for n in text.split(",") if n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.experiments", description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=["table1"])
    parser.add_argument("--scale", choices=tuple(SCALES), default="small")
    parser.add_argument("--out", required=True, help="report directory")
    parser.add_argument("--work", help="working directory: owner root, bundles, runs (default data/experiments/table1-SCALE)")
    parser.add_argument("--backbones", help=f"comma-separated, of {', '.join(BACKBONES)}")
    parser.add_argument("--decoders", help=f"SETR decoders, comma-separated, of {', '.join(DECODERS)}")
    parser.add_argument("--segmentors", help=f"beyond SETR (baseline and proposed), of {', '.join(SEGMENTORS)}; '' for none")
    parser.add_argument("--methods", help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--seeds", type=int, help="train each SETR baseline with seeds 0 .. N-1 (the seed spread)")
    parser.add_argument("--iters", type=int, help="training iterations of every run (default: the scale's)")
    parser.add_argument("--batch-size", type=int, help="images per GPU (or CPU) and iteration")
    parser.add_argument("--raw", help="a Cityscapes root (default: generate the synthetic sample)")
    parser.add_argument("--weights", action="append", default=[], metavar="BACKBONE=PATH", help="a local timm checkpoint")
    parser.add_argument("--pretrain-steps", type=int, help="proxy pretraining steps (backbones without --weights)")
    parser.add_argument("--sample-counts", help="TRAIN,VAL,TEST images of the generated sample")
    parser.add_argument("--sample-size", help="HxW of the generated images")
    parser.add_argument("--gpus", type=int, help="GPUs per training run (torchrun when more than one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from training.plugin import register

    register()

    chosen = {
        "backbones": _names(args.backbones), "decoders": _names(args.decoders), "segmentors": _names(args.segmentors),
        "methods": _names(args.methods), "seeds": args.seeds, "iters": args.iters, "batch_size": args.batch_size,
        "raw": args.raw, "weights": dict(w.split("=", 1) for w in args.weights) or None,
        "pretrain_steps": args.pretrain_steps, "sample_counts": args.sample_counts, "sample_size": args.sample_size,
        "gpus": args.gpus,
    }  # fmt: skip
    settings = replace(SCALES[args.scale], **{k: v for k, v in chosen.items() if v is not None})
    unknown = [n for group, known in ((settings.backbones, BACKBONES), (settings.decoders, DECODERS),
               (settings.segmentors, SEGMENTORS), (settings.methods, METHODS), (settings.weights, BACKBONES))
               for n in group if n not in known]  # fmt: skip
    if unknown:
        parser.error(f"unknown backbone, decoder, segmentor or method: {', '.join(unknown)}")
    if settings.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.scale == "full" and (not settings.raw or set(settings.backbones) - set(settings.weights)):
        parser.error("--scale full needs --raw (Cityscapes) and --weights BACKBONE=PATH for every backbone")
    out = Path(args.out)
    command = shlex.join(["python", "-m", "training.experiments", *(argv if argv is not None else sys.argv[1:])])
    table1(settings, out, Path(args.work or f"data/experiments/table1-{args.scale}"), command)
    print(f"report written to {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
