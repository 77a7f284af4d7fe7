"""The GPU check: ``bash checks/gpu.sh`` on a fresh CUDA machine (set-up included), or ``python -m checks.gpu``.

Trains SETR-MLA on ViT-L/16 at the paper's settings (the config as it is: 768x768 crops, SGD at lr
0.002 with heads at 10x, poly schedule; batch 2 on the one GPU) from a random-init ViT-L/16 on
generated 1024x2048 images, as proposed (encrypted bundle) and as baseline (plain bundle), 200
iterations each, then validates; reports iterations/s, peak GPU memory (torch.cuda.max_memory_allocated)
and how closely the proposed losses follow the baseline's, printed and written as markdown
(``--out``, default docs/gpu-check.md).

GPU kernels are not bitwise reproducible (bilinear upsampling's backward, for one, adds with
atomics), so beyond float rounding the two runs also drift apart as two runs of one method do;
``--repeat`` trains the baseline a second time to measure that floor. ``--dry-run`` runs the same
steps with the tiny MLA config on a CPU in about a minute.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from checks.runs import METHODS, Run, loss_difference, owner_bundles, pixels_differing, train
from experiments.harness import CONFIGS, REPO


@dataclass(frozen=True)
class Preset:
    """What the check trains, and on what."""

    config: str  # under training/configs, with {method}
    arch: str  # the timm ViT the owner generates
    size: str  # of the generated images, HxW
    counts: str  # generated images, TRAIN,VAL,TEST
    iters: int
    batch_size: int


PRESETS = {
    "gpu": Preset("setr_vit-l16_mla_8xb1-80k_cityscapes-768x768_{method}.py", "vit_large_patch16_384", "1024x2048",
                  "8,1,0", iters=200, batch_size=2),  # fmt: skip
    "dry-run": Preset("tiny/setr_tiny_mla_{method}.py", "vit_tiny_patch16_224", "128x256", "2,1,0", iters=3, batch_size=2),
}
FIRST_TOLERANCE = 1e-5  # the first iteration: the same computation up to float summation order
LATE_TOLERANCE = 1e-2  # the mean loss of the last iterations, after drift on non-reproducible kernels


@dataclass
class Figures:
    """What the report says about a pair of runs."""

    warmup: int  # iterations left out of the rate
    first: float  # relative loss difference at the first iteration
    early: float  # the largest over the first 10 iterations
    median: float
    largest: float
    late: float  # of the mean loss over the last iterations
    window: int  # how many last iterations
    pixels: tuple[int, int]  # identical, total


def compare(a: Run, b: Run) -> Figures:
    """How closely run ``a`` follows run ``b``."""
    difference = loss_difference(a, b)
    n = len(difference)
    window = min(50, n)
    late = abs(a.losses["loss"][-window:].mean() - b.losses["loss"][-window:].mean()) / b.losses["loss"][-window:].mean()
    total = sum(p.size for p in b.predictions.values())
    return Figures(
        warmup=max(1, n // 10),
        first=float(difference[0]),
        early=float(difference[:10].max()),
        median=float(np.median(difference)),
        largest=float(difference.max()),
        late=float(late),
        window=window,
        pixels=(total - pixels_differing(a, b), total),
    )


def rate(r: Run, warmup: int) -> float:
    """Iterations per second after the warm-up."""
    return (len(r.seconds) - warmup) / r.seconds[warmup:].sum()


def report(preset: Preset, iters: int, runs: dict[str, Run], times: dict[str, float], command: str) -> tuple[str, bool]:
    """The markdown report and whether the agreement is within the tolerances."""
    agreement = compare(runs["proposed"], runs["baseline"])
    floor = compare(runs["baseline (repeat)"], runs["baseline"]) if "baseline (repeat)" in runs else None
    passed = agreement.first <= FIRST_TOLERANCE and agreement.late <= LATE_TOLERANCE and agreement.pixels[1] > 0
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.processor() or 'no CUDA'})"
    lines = [
        f"# GPU check: SETR-MLA, proposed against baseline ({'PASSED' if passed else 'FAILED'})",
        "",
        f"`{command}` on {device}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
        f"Python {platform.python_version()}.",
        "",
        f"Config `training/configs/{preset.config}` as it is, from a random-init `{preset.arch}`, on generated "
        f"{preset.size} images ({preset.counts} train, val, test); {iters} iterations of batch "
        f"{preset.batch_size} per method, seed 0, cuDNN benchmark mode off, then mmengine's validation of the val "
        "image(s).",
        "",
        "| run | iterations/s | s/iteration | peak GPU memory | loss: first, mean of last "
        f"{agreement.window} | training command |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in runs.items():
        memory = f"{r.memory_mib / 1024:.1f} GiB" if r.memory_mib is not None else "n/a (no CUDA)"
        its = rate(r, agreement.warmup)
        lines.append(
            f"| {name} | {its:.2f} | {1 / its:.3f} | {memory} | {r.losses['loss'][0]:.4f}, "
            f"{r.losses['loss'][-agreement.window:].mean():.4f} | {r.wall:.0f} s |"
        )
    lines += [
        "",
        f"Iterations/s leave out the first {agreement.warmup} iterations (warm-up). Peak memory: the largest "
        "`torch.cuda.max_memory_allocated` mmengine logged over the iterations.",
        "",
        "Relative difference of a run's losses from the baseline's (every logged loss, the largest per "
        "iteration):",
        "",
        "| pair | first iteration | first 10 | median | largest | mean of last "
        f"{agreement.window} | label maps identical |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, f in (("proposed / baseline", agreement), ("baseline repeated / baseline", floor)):
        if f is not None:
            lines.append(
                f"| {name} | {f.first:.1e} | {f.early:.1e} | {f.median:.1e} | {f.largest:.1e} | {f.late:.1e} | "
                f"{f.pixels[0]}/{f.pixels[1]} px |"
            )
    lines += [
        "",
        f"Tolerances: {FIRST_TOLERANCE:.0e} at the first iteration (the same computation up to float summation "
        f"order), {LATE_TOLERANCE:.0e} on the mean loss of the last iterations (GPU kernels are not bitwise "
        "reproducible, so two runs of one method drift apart too: `--repeat` measures that floor).",
        "",
        "Wall time: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in times.items()) + ".",
        "",
    ]
    return "\n".join(lines), passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m checks.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the same steps with the tiny MLA config, on a CPU")
    parser.add_argument("--iters", type=int, help="iterations per run (default 200; dry run 3)")
    parser.add_argument("--repeat", action="store_true", help="train the baseline twice: the floor of agreement")
    parser.add_argument("--work", type=Path, help="bundles and runs, a new directory (default under work_dirs/)")
    parser.add_argument("--out", type=Path, help="the report (default docs/gpu-check.md; dry run: in --work)")
    parser.add_argument("--setup-seconds", type=float, help="set-up time to report (checks/gpu.sh gives it)")
    args = parser.parse_args(argv)
    preset = PRESETS["dry-run" if args.dry_run else "gpu"]
    iters = args.iters or preset.iters
    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device: run this on a GPU machine, or try the steps with --dry-run", file=sys.stderr)
        return 2
    default = REPO / "work_dirs" / ("gpu-check-dry-run" if args.dry_run else "gpu-check") / time.strftime("%Y%m%d-%H%M%S")
    work = args.work or default
    if work.exists() and any(work.iterdir()):
        print(f"{work} is not empty: give a new --work directory", file=sys.stderr)
        return 2
    out = args.out or (work / "report.md" if args.dry_run else REPO / "docs" / "gpu-check.md")
    command = shlex.join(["python", "-m", "checks.gpu", *(argv if argv is not None else sys.argv[1:])])

    times = {"set-up": args.setup_seconds} if args.setup_seconds is not None else {}
    start = time.perf_counter()
    print(f"owner: {preset.counts} generated {preset.size} images, random-init {preset.arch}, key, bundles", flush=True)
    bundles, signer = owner_bundles(work, preset.arch, preset.size, preset.counts)
    times["owner"] = time.perf_counter() - start
    # cuDNN's benchmark mode picks algorithms by timing them, which may differ between the runs and
    # round differently; convolutions are a small part of SETR's work.
    options = [f"train_dataloader.batch_size={preset.batch_size}", "env_cfg.cudnn_benchmark=False"]
    plan = [(method, method) for method in METHODS] + ([("baseline (repeat)", "baseline")] if args.repeat else [])
    runs = {}
    for i, (label, method) in enumerate(plan):
        config = CONFIGS / preset.config.format(method=method)
        print(f"cloud: {config.name}, {iters} iterations", flush=True)
        runs[label] = train(config, bundles[method], signer, work / f"run{i}-{method}", iters, options)
        times[f"{label} training"] = runs[label].wall
    times["in all"] = time.perf_counter() - start + (args.setup_seconds or 0)

    text, passed = report(preset, iters, runs, times, command)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"written to {out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
