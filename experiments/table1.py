"""The paper's Table I, run: the owner's side (data, keys, stores, checkpoints, bundles), each model trained
and evaluated on the cloud's side, then the table, the report and the figures.

The runner plays both roles of the experiment, but keeps them apart as the system does: it never touches a
key. Every owner step (sample, keygen, encrypt, encrypt-weights, publish, the owner's augmentation,
encrypting conventional 1's fine-tuned model, and encrypt-query for Fig. 4) runs through the owner's
command line (:mod:`experiments.harness`) on an owner root under ``work`` that the runner only passes around
as paths; the cloud steps read the published bundles (``python -m training.train``, then
:func:`training.test.evaluate` and :class:`training.inference.Segmenter`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from experiments import harness
from experiments.catalogue import BACKBONES, HEADS, METHODS, METRICS, PAPER, Run, Settings, plan
from experiments.figures import bar_chart, fig4, fig5
from experiments.report import Row, write_csv, write_report

log = logging.getLogger("experiments")


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
    root, key = work / "owner", owner_key(work)
    raw = settings.raw or str(root / "cityscapes")
    if settings.raw is None:
        harness.owner("--stage", "sample", "--raw", raw, "--sample-counts", settings.sample_counts,
                      "--sample-size", settings.sample_size)  # fmt: skip
    if not key.exists():
        harness.owner("--stage", "keygen", "--key", key)
    sources_of = {"plain": raw, "encrypted": raw}  # bundle kind -> the raw tree its store is made of
    if any(METHODS[m].bundle == "augmented" for m in settings.methods):
        augmented = root / "cityscapes-augmented"
        harness.owner("--stage", "augment", "--raw", raw, "--out", augmented, "--copies", str(settings.copies))
        sources_of["augmented"] = augmented

    pretrained = pretrained_backbones(settings, work / "pretrain")
    bundles, sources = {}, {}
    for name in settings.backbones:
        backbone = BACKBONES[name]
        weights, sources[backbone.label] = pretrained[name]
        # One store per kind, shared by the backbones' bundles (encrypted once; later builds resume it).
        bundles[name] = {
            kind: harness.build_bundle(
                tree, weights, backbone.arch, key, store=root / f"{kind}.zarr", checkpoint=root / name / f"{kind}.safetensors",
                bundle=work / "bundles" / name / kind, plain=kind == "plain",
            )
            for kind, tree in sources_of.items()
        }  # fmt: skip
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
                store, raw = root / "plain.zarr", root / "cityscapes"
                harness.owner("--stage", "sample", "--raw", raw, "--seed", "1", "--sample-counts",
                              settings.pretrain_counts, "--sample-size", settings.sample_size)  # fmt: skip
                harness.plain_store(raw, store)
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


def train(settings: Settings, config: Path, bundle: Path, signer: Path, work_dir: Path, options: Sequence[str] = ()) -> Path:
    """Fine-tune on the cloud's side with the settings' schedule and batch size; returns the last checkpoint.

    No validation while training: :func:`execute` evaluates the last checkpoint once.
    """
    overrides = [*options, "val_cfg=None", "val_dataloader=None", "val_evaluator=None"]
    if settings.iters:
        overrides += schedule_options(config, settings.iters)
    if settings.batch_size:
        overrides.append(f"train_dataloader.batch_size={settings.batch_size}")
    harness.train(config, bundle, signer, work_dir, overrides, gpus=settings.gpus)
    return harness.last_checkpoint(work_dir)


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
        harness.owner("--stage", "encrypt-weights", "--key", owner_key(work), "--checkpoint", plain, "--out", checkpoint,
                      "--encrypted-weights", plain_checkpoint)  # fmt: skip
    train_s = time.monotonic() - started
    # Evaluated on the val split of the bundle of its kind: the owner-augmented one's is the encrypted one's.
    cfg = cloud_config(run.config, bundles[method.bundle], owner_signer(work), work_dir, options)
    metrics = {m: float(v) for m, v in evaluate(cfg, str(checkpoint)).items() if m in METRICS}
    log.info("%s: %s", label, metrics)
    paper = PAPER.get((backbone.paper, HEADS[run.decoder], method.label)) if run.seed == 0 else None
    return Row(backbone.label, HEADS[run.decoder], method.label, run.seed, metrics, train_s, paper), cfg, checkpoint


def encrypted_examples(work: Path, plain_bundle: Path) -> dict[str, np.ndarray]:
    """The first val image as a user holds it, and as the owner's key and a negative-positive key encrypt it
    (``encrypt-query``, the user's side of the owner's command line): {"plain" | "shuffled" | "negative-positive": RGB}."""
    from PIL import Image

    import zarr

    root = work / "fig4"
    root.mkdir(parents=True, exist_ok=True)
    images = {"plain": zarr.open_group(str(plain_bundle / "dataset.zarr"), mode="r")["val"]["images"][0]}
    query = root / "query.png"
    Image.fromarray(images["plain"]).save(query)
    negative_positive = work / "owner" / "negative-positive" / "key.json"
    if not negative_positive.exists():
        harness.owner("--stage", "keygen", "--negative-positive", "--key", negative_positive)
    for name, key in (("shuffled", owner_key(work)), ("negative-positive", negative_positive)):
        harness.owner("--stage", "encrypt-query", "--key", key, "--query", query, "--out", root / name)
        images[name] = np.asarray(Image.open(root / name / query.name).convert("RGB"))
    return images


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
