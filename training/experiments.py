"""The paper's Table I, reproduced: ``python -m training.experiments table1 --scale small|full --out DIR``.

Runs the methods of Table I (baseline, conventional 1, conventional 2, proposed) and two rows the
paper lacks (the proposed method with the paper's augmentation applied to ciphertext, and with flip
and multi-scale done by the owner before encryption) for every chosen backbone and decoder, with
the same iterations, batch size and seed, evaluates each on the val split, and writes to ``--out``:
``report.md`` (the table, with the paper's values beside it), ``table.csv``, ``bars.png`` and
``fig5.png`` (input, encrypted input, ground truth and every method's prediction, like the paper's
Fig. 5).

The runner plays both roles of the experiment, but keeps them apart as the system does: it never
touches a key. Every owner step (sample, keygen, encrypt, encrypt-weights, publish, the owner's
augmentation, and encrypting conventional 1's fine-tuned model) runs through the owner's command
line, ``python -m pipeline.run``, in a subprocess, on an owner root under ``--work`` that the runner
only passes around as paths; the cloud steps read the published bundles (``python -m
training.train``, then :func:`training.test.evaluate` and :func:`training.predict.segment`).

Small scale (``docs/table1-small``: about 8 minutes on 2 CPU cores)::

    python -m training.experiments table1 --scale small --out docs/table1-small

generates the synthetic Cityscapes sample, proxy-pretrains a ViT-Ti/16 on other generated scenes
(training/pretrain.py; or give a timm checkpoint with ``--weights vit-tiny=PATH``) and fine-tunes
the tiny SETR configs (64x64 crops) from it.

Full scale (the paper's setting: Cityscapes, 80k iterations, 8 GPUs x batch 1)::

    python -m training.experiments table1 --scale full --out reports/table1 --work /scratch/table1 \\
        --raw /data/cityscapes \\
        --weights vit-base=/weights/vit_base_patch16_384.augreg_in21k_ft_in1k.safetensors \\
        --weights vit-large=/weights/vit_large_patch16_384.augreg_in21k_ft_in1k.safetensors \\
        --gpus 8

``--raw`` is a Cityscapes root (leftImg8bit/ and gtFine/ with labelIds), the weights are local timm
checkpoints of ``vit_base_patch16_384`` and ``vit_large_patch16_384`` (.safetensors, .pth or .npz;
nothing is downloaded). ``--backbones``, ``--decoders`` and ``--methods`` choose rows; ``--iters``
shortens the schedule. Each training runs under ``torchrun`` on ``--gpus`` GPUs; the rest runs on
one. Disk: the owner's stores and three bundles per backbone, each about the size of Cityscapes' PNGs
(the owner-augmented one ``1 + --copies`` times the training split). The paper-augmentation row
needs a ``*_proposed_paper-augmentation.py`` config for the backbone and decoder (there is one for
ViT-B/16 Naive and the tiny Naive); other combinations skip that row and say so.
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


@dataclass(frozen=True)
class Backbone:
    label: str  # as in the table; the paper's name where it has one
    arch: str  # timm architecture
    configs: str  # config path under training/configs, with {decoder} and {method}


@dataclass(frozen=True)
class Method:
    label: str
    config: str  # the method part of the config name
    bundle: str  # "plain", "encrypted" or "augmented" (the owner-augmented encrypted bundle)
    trained: bool = True  # conventional 1 is the baseline's model, encrypted by the owner


BACKBONES = {
    "vit-tiny": Backbone("ViT-tiny", "vit_tiny_patch16_224", "tiny/setr_tiny_{decoder}_{method}.py"),
    "vit-base": Backbone(
        "ViT-base", "vit_base_patch16_384", "setr_vit-b16_{decoder}_8xb1-80k_cityscapes-768x768_{method}.py"
    ),
    "vit-large": Backbone(
        "ViT-Large", "vit_large_patch16_384", "setr_vit-l16_{decoder}_8xb1-80k_cityscapes-768x768_{method}.py"
    ),
}
DECODERS = {"mla": "MLA", "pup": "PUP", "naive": "Naive"}
METHODS = {
    "baseline": Method("baseline", "baseline", "plain"),
    "conventional1": Method("conventional 1", "conventional1", "encrypted", trained=False),
    "conventional2": Method("conventional 2", "conventional2", "encrypted"),
    "proposed": Method("proposed", "proposed", "encrypted"),
    "paper-augmentation": Method("proposed + paper augmentation on ciphertext", "proposed_paper-augmentation", "encrypted"),
    "owner-augmentation": Method("proposed + flip, multi-scale by the owner", "proposed", "augmented"),
}
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
    decoders: tuple[str, ...]
    methods: tuple[str, ...] = tuple(METHODS)
    iters: int | None = None
    batch_size: int | None = None  # per GPU; None keeps the config's
    raw: str | None = None
    weights: dict[str, str] = field(default_factory=dict)  # backbone -> timm checkpoint; else proxy-pretrained
    sample_counts: str = "48,12,0"
    sample_size: str = "256x512"  # the tiny paper-augmentation config's resize scale assumes it
    pretrain_counts: str = "96,0,0"
    pretrain_steps: int = 1500
    copies: int = 2  # owner-augmented copies of each training image
    gpus: int = 0
    examples: int = 2  # rows of fig5.png


SCALES = {
    "small": Settings(backbones=("vit-tiny",), decoders=("naive",), iters=300, batch_size=4),
    "full": Settings(backbones=("vit-base", "vit-large"), decoders=("mla", "pup", "naive"), gpus=8),
}


@dataclass
class Row:
    backbone: str
    decoder: str
    method: str
    metrics: dict[str, float]
    train_s: float
    paper: tuple[float, float, float] | None


def owner(*args: str) -> None:
    """One owner step, through the owner's command line (the runner never holds the key itself)."""
    _run([sys.executable, "-m", "pipeline.run", *args])


def owner_key(work: Path) -> Path:
    """Where the owner's key file is: a path the runner passes on, never opens."""
    return work / "owner" / "key.json"


def owner_signer(work: Path) -> Path:
    """The owner's public signer file, which keygen writes beside the key: what the cloud checks bundles with."""
    return owner_key(work).parent / "signer.json"


def prepare_owner(settings: Settings, work: Path) -> dict[str, dict[str, Path]]:
    """Every owner step before training: data, key, stores, checkpoints and the published bundles.

    Returns {backbone: {"plain" | "encrypted" | "augmented": bundle}}; paths under ``work``.
    """
    root = work / "owner"
    key = ["--key", str(owner_key(work))]
    raw = settings.raw or str(root / "cityscapes")
    if settings.raw is None:
        owner("--stage", "sample", "--raw", raw, "--sample-counts", settings.sample_counts,
              "--sample-size", settings.sample_size, "--weights", str(root / "unused-random-init.safetensors"))  # fmt: skip
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

    bundles = {}
    for name in settings.backbones:
        backbone = BACKBONES[name]
        weights = settings.weights.get(name) or str(pretrained_backbone(settings, backbone, work / "pretrain"))
        checkpoints = {"plain": root / name / "plain.safetensors", "encrypted": root / name / "encrypted.safetensors"}
        common = ["--weights", weights, "--arch", backbone.arch]
        owner("--stage", "encrypt-weights", "--plain", *common, "--encrypted-weights", str(checkpoints["plain"]))
        owner("--stage", "encrypt-weights", *key, *common, "--encrypted-weights", str(checkpoints["encrypted"]))
        bundles[name] = {}
        for kind, store in stores.items():
            bundle = work / "bundles" / name / kind
            checkpoint = checkpoints["plain" if kind == "plain" else "encrypted"]
            owner("--stage", "publish", *key, "--store", str(store), "--encrypted-weights", str(checkpoint),
                  "--bundle", str(bundle))  # fmt: skip
            bundles[name][kind] = bundle
    return bundles


def pretrained_backbone(settings: Settings, backbone: Backbone, root: Path) -> Path:
    """A plain timm checkpoint of ``backbone`` proxy-pretrained on generated scenes of another seed (public data)."""
    from training.pretrain import pretrain

    out = root / f"{backbone.arch}.safetensors"
    if out.exists():
        return out
    raw, store, init = root / "cityscapes", root / "plain.zarr", root / f"{backbone.arch}_random-init.safetensors"
    # The owner's tools only as a generator and a format converter: no key, nothing private.
    owner("--stage", "sample", "--raw", str(raw), "--seed", "1", "--sample-counts", settings.pretrain_counts,
          "--sample-size", settings.sample_size, "--arch", backbone.arch, "--weights", str(init))  # fmt: skip
    owner("--stage", "encrypt", "--plain", "--raw", str(raw), "--store", str(store))
    log.info("proxy pretraining %s for %d steps", backbone.arch, settings.pretrain_steps)
    return pretrain(store, init, backbone.arch, out, steps=settings.pretrain_steps)


def config_path(backbone: Backbone, decoder: str, method: Method) -> Path:
    return CONFIGS / backbone.configs.format(decoder=decoder, method=method.config)


def train(
    settings: Settings, config: Path, bundle: Path, signer: Path, work_dir: Path, options: Sequence[str] = ()
) -> Path:
    """Fine-tune with ``python -m training.train`` (under torchrun with ``gpus``); returns the last checkpoint."""
    overrides = list(options)
    if settings.iters:
        n = settings.iters
        overrides += [f"train_cfg.max_iters={n}", f"param_scheduler.0.end={n}", f"default_hooks.checkpoint.interval={n}"]
    if settings.batch_size:
        overrides.append(f"train_dataloader.batch_size={settings.batch_size}")
    launch = [sys.executable, "-m", "training.train"]
    if settings.gpus > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={settings.gpus}",
                  "-m", "training.train", "--launcher", "pytorch"]  # fmt: skip
    command = [*launch, str(config), "--bundle", str(bundle), "--signer", str(signer), "--work-dir", str(work_dir)]
    _run(command + (["--cfg-options", *overrides] if overrides else []))
    return Path((work_dir / "last_checkpoint").read_text().strip())


def cloud_config(config: Path, bundle: Path, signer: Path, work_dir: Path, options: Sequence[str] = ()):
    """The config as training.test and training.predict load it, with a fresh experiment name."""
    from training.config import load_config

    cfg_options = dict(o.split("=", 1) for o in options)
    cfg = load_config(config, str(bundle), signer=str(signer), work_dir=work_dir, cfg_options=cfg_options)
    cfg.experiment_name = uuid.uuid4().hex  # mmengine keys its loggers by name: one per runner
    return cfg


def run_combination(
    settings: Settings, backbone_name: str, decoder: str, bundles: dict[str, Path], work: Path
) -> tuple[list[Row], dict[str, tuple[object, Path]]]:
    """Train and evaluate every method for one backbone and decoder; rows, and {method: (cfg, checkpoint)}."""
    from training.export import export
    from training.test import evaluate

    backbone = BACKBONES[backbone_name]
    rows, models = [], {}
    for name in settings.methods:
        method = METHODS[name]
        config, bundle = config_path(backbone, decoder, method), bundles[method.bundle]
        if not config.exists():
            log.warning("skipping %s / %s / %s: no config %s", backbone.label, decoder, method.label, config.name)
            continue
        work_dir = work / "cloud" / backbone_name / decoder / name
        plain_checkpoint = bundles["plain"] / "backbone.safetensors"
        # Conventional 2 starts from the plain checkpoint: the one the baseline's bundle carries.
        options = [f"model.backbone.init_cfg.checkpoint={plain_checkpoint}"] if name == "conventional2" else []
        started = time.monotonic()
        if method.trained:
            log.info("training %s / %s / %s", backbone.label, decoder, method.label)
            checkpoint = train(settings, config, bundle, owner_signer(work), work_dir, options)
        else:  # conventional 1: the cloud hands the baseline's model to the owner, who encrypts it
            plain = export(str(models["baseline"][1]), work_dir.parent / "baseline" / "weights.safetensors")
            checkpoint = work_dir / "encrypted-by-the-owner.safetensors"
            owner("--stage", "encrypt-weights", "--key", str(owner_key(work)), "--checkpoint", str(plain),
                  "--out", str(checkpoint), "--encrypted-weights", str(plain_checkpoint))  # fmt: skip
        train_s = time.monotonic() - started
        # Evaluated on the val split of the bundle of its kind: the owner-augmented one's is the encrypted one's.
        cfg = cloud_config(config, bundles[method.bundle], owner_signer(work), work_dir, options)
        metrics = evaluate(cfg, str(checkpoint))
        metrics = {m: float(metrics[m]) for m in METRICS}
        log.info("%s / %s / %s: %s", backbone.label, decoder, method.label, metrics)
        paper = PAPER.get((backbone.label, DECODERS[decoder], method.label))
        rows.append(Row(backbone.label, DECODERS[decoder], method.label, metrics, train_s, paper))
        models[name] = (cfg, checkpoint)
    return rows, models


def table1(settings: Settings, out: Path, work: Path, command: str) -> list[Row]:
    """Run the experiment and write the report to ``out``; returns the table's rows."""
    if "conventional1" in settings.methods and "baseline" not in settings.methods:
        raise ValueError("conventional 1 is the baseline's model encrypted: --methods needs baseline too")
    methods = tuple(m for m in METHODS if m in settings.methods)  # baseline before conventional 1
    settings = replace(settings, methods=methods)
    started = time.monotonic()
    bundles = prepare_owner(settings, work)
    rows, figure_models = [], None
    for backbone in settings.backbones:
        for decoder in settings.decoders:
            found, models = run_combination(settings, backbone, decoder, bundles[backbone], work)
            rows += found
            figure_models = figure_models or (f"{BACKBONES[backbone].label}, {DECODERS[decoder]}", models, bundles[backbone])
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "table.csv")
    bar_chart(rows, out / "bars.png")
    fig5(*figure_models, out / "fig5.png", settings.examples)
    write_report(rows, settings, out / "report.md", command, time.monotonic() - started)
    return rows


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def write_csv(rows: list[Row], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["backbone", "decoder", "method", *METRICS, *(f"paper_{m}" for m in METRICS), "train_s"])
        for r in rows:
            paper = r.paper or ("",) * 3
            ours = (f"{r.metrics[m]:.2f}" for m in METRICS)
            writer.writerow([r.backbone, r.decoder, r.method, *ours, *paper, f"{r.train_s:.0f}"])


def markdown_table(rows: list[Row]) -> str:
    """Table I's shape: backbone, decoder, method, our aAcc, mIoU, mAcc, and the paper's beside them."""
    lines = [
        "| backbone | decoder | method | aAcc | mIoU | mAcc | paper aAcc | paper mIoU | paper mAcc |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    previous = (None, None)
    for r in rows:
        backbone = r.backbone if r.backbone != previous[0] else ""
        decoder = r.decoder if (r.backbone, r.decoder) != previous else ""
        previous = (r.backbone, r.decoder)
        ours = " | ".join(_cell(r.metrics[m]) for m in METRICS)
        paper = " | ".join(_cell(v) for v in (r.paper or (None,) * 3))
        lines.append(f"| {backbone} | {decoder} | {r.method} | {ours} | {paper} |")
    return "\n".join(lines)


def write_report(rows: list[Row], settings: Settings, path: Path, command: str, seconds: float) -> None:
    baseline = {(r.backbone, r.decoder): r.metrics for r in rows if r.method == "baseline"}
    proposed = [r for r in rows if r.method == "proposed" and (r.backbone, r.decoder) in baseline]
    differences = (abs(r.metrics[m] - baseline[r.backbone, r.decoder][m]) for r in proposed for m in METRICS)
    agreement = max(differences, default=None)
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
        "Metrics on the val split, percent (mmseg's IoUMetric). Every row trains with the same "
        "iterations, batch size and seed; conventional 1 is not trained in the cloud (the baseline's model, "
        "its patch embedding encrypted by the owner). The paper's columns are its Table I where it has "
        "the backbone, decoder and method.",
        "",
        markdown_table(rows),
        "",
    ]
    if agreement is not None:
        lines += [f"Largest |proposed − baseline| over the metrics: {agreement:.2f} points.", ""]
    lines += ["![bars](bars.png)", "", "![Fig. 5](fig5.png)", ""]
    path.write_text("\n".join(lines))


def bar_chart(rows: list[Row], path: Path) -> None:
    """One panel per metric; a group of bars (one per method) per backbone and decoder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((r.backbone, r.decoder) for r in rows))
    methods = list(dict.fromkeys(r.method for r in rows))
    value = {(r.backbone, r.decoder, r.method): r.metrics for r in rows}
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.6), sharey=True)
    width = 0.8 / len(methods)
    for ax, metric in zip(axes, METRICS):
        for i, method in enumerate(methods):
            heights = [value.get((*g, method), {}).get(metric, np.nan) for g in groups]
            ax.bar(np.arange(len(groups)) + (i - (len(methods) - 1) / 2) * width, heights, width, label=method)
        ax.set_xticks(np.arange(len(groups)), [f"{b}\n{d}" for b, d in groups])
        ax.set_title(metric)
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("percent")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=min(3, len(methods)), fontsize="small")
    fig.tight_layout(rect=(0, 0.15, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def fig5(title: str, models: dict[str, tuple[object, Path]], bundles: dict[str, Path], path: Path, examples: int) -> None:
    """The paper's Fig. 5: input, encrypted input, ground truth and each method's prediction, for val images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from mmengine.runner import load_checkpoint
    from mmseg.apis import init_model
    from mmseg.datasets import CityscapesDataset

    from training.predict import segment
    from training.store import open_store

    plain, encrypted = (open_store(str(bundles[kind] / "dataset.zarr"))["val"] for kind in ("plain", "encrypted"))
    colours = np.zeros((256, 3), np.uint8)  # black for 255 (ignored)
    colours[:19] = CityscapesDataset.METAINFO["palette"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    predictions = {}
    for name, (cfg, checkpoint) in models.items():
        model = init_model(cfg, device=device)  # not init_model's checkpoint: it wants mmengine's 'meta'
        load_checkpoint(model, str(checkpoint), map_location=device)
        source = plain if METHODS[name].bundle == "plain" else encrypted
        predictions[METHODS[name].label] = [colours[segment(model, source["images"][i])] for i in range(examples)]
    columns = {"input": [plain["images"][i] for i in range(examples)],
               "encrypted input": [encrypted["images"][i] for i in range(examples)],
               "ground truth": [colours[plain["labels"][i]] for i in range(examples)], **predictions}  # fmt: skip
    h, w = plain["images"].shape[1:3]
    size = (1.9 * len(columns), 1.9 * examples * h / w + 0.6)
    fig, axes = plt.subplots(examples, len(columns), figsize=size, squeeze=False)
    for j, (label, images) in enumerate(columns.items()):
        axes[0, j].set_title(label.replace(" + ", "\n+ "), fontsize=7)
        for i, image in enumerate(images):
            axes[i, j].imshow(image)
            axes[i, j].axis("off")
    fig.suptitle(f"Segmentation maps ({title})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _run(command: list[str]) -> None:
    """Run a step, its output shown only if it fails."""
    log.info("$ %s", shlex.join(command))
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{shlex.join(command)} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.experiments", description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=["table1"])
    parser.add_argument("--scale", choices=tuple(SCALES), default="small")
    parser.add_argument("--out", required=True, help="report directory")
    parser.add_argument("--work", help="working directory: owner root, bundles, runs (default data/experiments/table1-SCALE)")
    parser.add_argument("--backbones", help=f"comma-separated, of {', '.join(BACKBONES)}")
    parser.add_argument("--decoders", help=f"comma-separated, of {', '.join(DECODERS)}")
    parser.add_argument("--methods", help=f"comma-separated, of {', '.join(METHODS)}")
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
        "backbones": tuple(args.backbones.split(",")) if args.backbones else None,
        "decoders": tuple(args.decoders.split(",")) if args.decoders else None,
        "methods": tuple(args.methods.split(",")) if args.methods else None,
        "iters": args.iters, "batch_size": args.batch_size, "raw": args.raw,
        "weights": dict(w.split("=", 1) for w in args.weights) or None,
        "pretrain_steps": args.pretrain_steps, "sample_counts": args.sample_counts, "sample_size": args.sample_size,
        "gpus": args.gpus,
    }  # fmt: skip
    settings = replace(SCALES[args.scale], **{k: v for k, v in chosen.items() if v is not None})
    unknown = [n for group, known in ((settings.backbones, BACKBONES), (settings.decoders, DECODERS),
               (settings.methods, METHODS), (settings.weights, BACKBONES)) for n in group if n not in known]  # fmt: skip
    if unknown:
        parser.error(f"unknown backbone, decoder or method: {', '.join(unknown)}")
    if args.scale == "full" and (not settings.raw or set(settings.backbones) - set(settings.weights)):
        parser.error("--scale full needs --raw (Cityscapes) and --weights BACKBONE=PATH for every backbone")
    out = Path(args.out)
    command = shlex.join(["python", "-m", "training.experiments", *(argv if argv is not None else sys.argv[1:])])
    table1(settings, out, Path(args.work or f"data/experiments/table1-{args.scale}"), command)
    print(f"report written to {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
