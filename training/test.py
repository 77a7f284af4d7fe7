"""Evaluate a fine-tuned model on a bundle split: ``python -m training.test CONFIG CHECKPOINT --bundle LOCATION``.

The bundle is verified first, as for training, and the model must read the bundle's data (the key
its checkpoint records is the bundle's). Scores are mmseg's (``--metric iou``: aAcc, mIoU and mAcc in
percent, the per-class table logged) or Cityscapes' own (``--metric cityscapes``: cityscapesscripts'
evaluation, class and category mIoU), written as JSON (``--out``, default ``<work dir>/metrics.json``)
with the per-class values and the bundle publications the model was trained and tested on.
``--format-only DIR`` writes a Cityscapes test-server submission instead (labelIds PNGs; the test split
has no labels: ``--split test``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from contract.errors import UserError, quoted, run_reporting
from contract.outputs import OutputKind, check_output, write_file
from training.config import add_common_arguments, removed_on_refusal

METRICS = {"iou": ("aAcc", "mIoU", "mAcc"), "cityscapes": ("mIoU", "category mIoU")}


def evaluate(cfg, checkpoint: str, device: str = "cpu", metric: str = "iou", submission: str | None = None) -> dict[str, Any]:
    """Scores of ``checkpoint`` on the config's test split (``metric``: see the module docstring) and
    ``per_class``, and which publications of the bundle the model was trained on (``trained_on``, from its
    provenance) and tested on; with ``submission``, a test-server submission written there instead."""
    from training.config import build_runner
    from training.provenance import model_reads
    from training.resolve import run_of

    trained_on = model_reads(checkpoint).bundle
    cfg.load_from = checkpoint
    if submission:
        evaluator = dict(type="BundleCityscapesMetric", output_dir=submission, format_only=True, keep_results=True)
    elif metric == "cityscapes":
        evaluator = dict(type="BundleCityscapesMetric", output_dir=str(Path(cfg.work_dir) / "cityscapes"))
    else:
        evaluator = dict(cfg.test_evaluator, type="PerClassIoUMetric")
    cfg.test_evaluator = evaluator
    runner = build_runner(cfg, device)
    summary = runner.test()
    scores = {} if submission else {name: float(summary[name]) for name in METRICS[metric]}
    per_class = {} if submission else runner.test_loop.evaluator.metrics[0].per_class
    return {
        **scores,
        "per_class": per_class,
        "trained_on": trained_on.to_json() if trained_on else None,
        "tested_on": run_of(runner).verified.reference().to_json(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.test", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the config the model was trained with")
    parser.add_argument("checkpoint", help="the fine-tuned model (.pth from training, or a .safetensors export or owner's file)")
    parser.add_argument("--work-dir", help="where logs go (default work_dirs/<config name>)")
    parser.add_argument("--out", help="metrics JSON file (default <work dir>/metrics.json)")
    parser.add_argument(
        "--metric", choices=tuple(METRICS), default="iou",
        help="mmseg's IoU metric (default), or Cityscapes' own evaluation by cityscapesscripts",
    )  # fmt: skip
    parser.add_argument("--format-only", metavar="DIR", help="write a Cityscapes test-server submission to DIR instead of scoring")
    parser.add_argument("--split", help="the bundle's split to test on (default: the config's, val)")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    return run_reporting(lambda: run_test(args))


def run_test(args: argparse.Namespace) -> None:
    from training.plugin import register

    register()
    from training.config import config_from_arguments, select_device

    device = select_device(args.device)
    if not Path(args.checkpoint).is_file() and "://" not in args.checkpoint:
        raise UserError(f"{quoted(args.checkpoint)}: no such checkpoint file")
    cfg = config_from_arguments(args, work_dir=args.work_dir)
    if args.split:
        cfg.test_dataloader.dataset.split = args.split
    out = Path(args.out or Path(cfg.work_dir) / "metrics.json")
    check_output(out, OutputKind.JSON)
    with removed_on_refusal(cfg.work_dir):
        metrics = evaluate(cfg, args.checkpoint, device, args.metric, args.format_only)
    write_file(out, (json.dumps(metrics, indent=2) + "\n").encode(), OutputKind.JSON)
    if args.format_only:
        print(f"a Cityscapes submission in {args.format_only}")
    else:
        print("  ".join(f"{name} {metrics[name]:.2f}" for name in METRICS[args.metric]) + f"  (per class: {out})")
    trained, tested = metrics["trained_on"], metrics["tested_on"]
    if trained:
        print(f"model trained on publication {trained['sequence']} of {trained['location']} (manifest {trained['manifest_sha256'][:16]}...)")
    print(f"tested on publication {tested['sequence']} of {tested['location']} (manifest {tested['manifest_sha256'][:16]}...)")


if __name__ == "__main__":
    sys.exit(main())
