"""What the checks share: the owner's bundles, made with the owner's command line, and training runs with the
cloud's, read back from their work directories (the steps themselves: :mod:`experiments.harness`). The checks
never hold a key: they only pass the key file's path on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from experiments import harness

METHODS = ("proposed", "baseline")


def owner_bundles(work: Path, arch: str, size: str, counts: str) -> tuple[dict[str, Path], Path]:
    """The owner's side: a generated Cityscapes sample (``counts`` 'TRAIN,VAL,TEST' images of ``size``
    'HxW'), a random-init timm checkpoint of ``arch`` and a new key; from them the baseline's plain
    bundle and the proposed method's encrypted one, both published and signed.

    Returns ({method: bundle}, the owner's public signer file).
    """
    root = work / "owner"
    raw, weights, key = root / "cityscapes", root / f"{arch}.safetensors", root / "key.json"
    harness.owner("--stage", "sample", "--raw", raw, "--sample-counts", counts, "--sample-size", size, "--arch", arch,
                  "--weights", weights)  # fmt: skip
    harness.owner("--stage", "keygen", "--key", key)
    bundles = {}
    for method in METHODS:
        bundles[method] = harness.build_bundle(
            raw, weights, arch, key, store=root / f"{method}.zarr", checkpoint=root / f"{method}.safetensors",
            bundle=work / "bundles" / method, plain=method != "proposed",
        )  # fmt: skip
    return bundles, key.parent / "signer.json"


@dataclass
class Run:
    """A finished training run, read back from its work directory."""

    losses: dict[str, np.ndarray]  # every loss the model logs ('loss', 'decode.loss_ce', ...), per iteration
    seconds: np.ndarray  # of every iteration (mmengine's IterTimerHook)
    memory_mib: float | None  # peak torch.cuda.max_memory_allocated over the iterations; None without CUDA
    predictions: dict[str, np.ndarray]  # the final validation's label map of every val image, by name ({} without)
    checkpoint: Path  # the model after the last iteration
    wall: float  # seconds of the whole command


def train(
    config: Path, bundle: Path, signer: Path, work_dir: Path, iters: int, options: Sequence[str] = (), validate: bool = True
) -> Run:
    """The cloud's training on ``config`` for ``iters`` iterations from seed 0, then mmengine's validation
    (none if not ``validate``); ``options`` are more ``--cfg-options``.

    Every iteration is logged unsmoothed, and the validation writes its label maps, so that runs of
    two methods can be compared value by value.
    """
    predictions = work_dir / "predictions"
    overrides = [
        f"train_cfg.max_iters={iters}",
        f"default_hooks.checkpoint.interval={iters}",
        "default_hooks.logger.interval=1",
        "log_processor.window_size=1",
        "randomness.seed=0",  # the same crops, order and head initialisation for every method
    ]
    if validate:
        overrides.append(f"val_evaluator.output_dir={predictions}")
    else:
        overrides += ["val_cfg=None", "val_dataloader=None", "val_evaluator=None"]
    wall = harness.train(config, bundle, signer, work_dir, [*overrides, *options])
    (scalars,) = work_dir.glob("*/vis_data/scalars.json")
    records = [json.loads(line) for line in scalars.read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    memory = [r["memory"] for r in steps if "memory" in r]
    return Run(
        losses={k: np.array([r[k] for r in steps]) for k in steps[0] if "loss" in k},
        seconds=np.array([r["time"] for r in steps]),
        memory_mib=max(memory) if memory else None,
        predictions={p.stem: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(predictions.glob("*.png"))},
        checkpoint=work_dir / f"iter_{iters}.pth",
        wall=wall,
    )


def loss_difference(proposed: Run, baseline: Run) -> np.ndarray:
    """Per iteration, the largest relative difference over every logged loss."""
    return np.max([np.abs(proposed.losses[k] - b) / np.abs(b) for k, b in baseline.losses.items()], axis=0)


def pixels_differing(proposed: Run, baseline: Run) -> int:
    """How many pixels of the validation label maps differ between the runs (all of them if the images do not match)."""
    if proposed.predictions.keys() != baseline.predictions.keys():
        return sum(p.size for p in baseline.predictions.values())
    return sum(int(np.count_nonzero(proposed.predictions[n] != p)) for n, p in baseline.predictions.items())
