"""Evaluate a fine-tuned model on a bundle split: ``python -m training.test CONFIG CHECKPOINT --bundle LOCATION``.

The bundle is verified first, as for training, and the model must read the bundle's data (the key
its checkpoint records is the bundle's). mmseg logs the per-class table; aAcc, mIoU and mAcc
(percent) and the per-class IoU and accuracy are written as JSON (``--out``, default
``<work dir>/metrics.json``).
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


def evaluate(cfg, checkpoint: str, device: str = "cpu") -> dict[str, Any]:
    """Metrics of ``checkpoint`` on the config's test split: aAcc, mIoU, mAcc and ``per_class``, and which
    publications of the bundle the model was trained on (``trained_on``, from its provenance) and tested on."""
    from training.config import build_runner
    from training.provenance import model_reads
    from training.resolve import run_of

    trained_on = model_reads(checkpoint).bundle
    cfg.load_from = checkpoint
    cfg.test_evaluator = dict(cfg.test_evaluator, type="PerClassIoUMetric")
    runner = build_runner(cfg, device)
    summary = runner.test()
    metric = runner.test_loop.evaluator.metrics[0]
    return {
        **{name: float(summary[name]) for name in ("aAcc", "mIoU", "mAcc")},
        "per_class": metric.per_class,
        "trained_on": trained_on.to_json() if trained_on else None,
        "tested_on": run_of(runner).verified.reference().to_json(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.test", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the config the model was trained with")
    parser.add_argument("checkpoint", help="the fine-tuned model (.pth from training, or a .safetensors export or owner's file)")
    parser.add_argument("--work-dir", help="where logs go (default work_dirs/<config name>)")
    parser.add_argument("--out", help="metrics JSON file (default <work dir>/metrics.json)")
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
    out = Path(args.out or Path(cfg.work_dir) / "metrics.json")
    check_output(out, OutputKind.JSON)
    with removed_on_refusal(cfg.work_dir):
        metrics = evaluate(cfg, args.checkpoint, device)
    write_file(out, (json.dumps(metrics, indent=2) + "\n").encode(), OutputKind.JSON)
    print(f"aAcc {metrics['aAcc']:.2f}  mIoU {metrics['mIoU']:.2f}  mAcc {metrics['mAcc']:.2f}  (per class: {out})")
    trained, tested = metrics["trained_on"], metrics["tested_on"]
    if trained:
        print(f"model trained on publication {trained['sequence']} of {trained['location']} (manifest {trained['manifest_sha256'][:16]}...)")
    print(f"tested on publication {tested['sequence']} of {tested['location']} (manifest {tested['manifest_sha256'][:16]}...)")


if __name__ == "__main__":
    sys.exit(main())
