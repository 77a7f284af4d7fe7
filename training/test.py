"""Evaluate a fine-tuned model on a bundle split: ``python -m training.test CONFIG CHECKPOINT --bundle LOCATION``.

Prints aAcc, mIoU and mAcc (mmseg's IoUMetric, percent) and the per-class table, and writes them
as JSON (``--out``, default ``<work dir>/metrics.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mmengine.runner import Runner

import training.metrics  # noqa: F401  (registers PerClassIoUMetric)
from training.config import add_common_arguments, load_config, parse_options


def evaluate(cfg, checkpoint: str) -> dict[str, Any]:
    """Metrics of ``checkpoint`` on the config's test split: aAcc, mIoU, mAcc and ``per_class``."""
    cfg.load_from = checkpoint
    cfg.test_evaluator = dict(cfg.test_evaluator, type="PerClassIoUMetric")
    runner = Runner.from_cfg(cfg)
    summary = runner.test()
    metric = runner.test_loop.evaluator.metrics[0]
    return {**{name: float(summary[name]) for name in ("aAcc", "mIoU", "mAcc")}, "per_class": metric.per_class}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.test", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the config the model was trained with")
    parser.add_argument("checkpoint", help="the fine-tuned model (.pth from training, or the owner's conventional-1 file)")
    parser.add_argument("--work-dir", help="where logs go (default work_dirs/<config name>)")
    parser.add_argument("--out", help="metrics JSON file (default <work dir>/metrics.json)")
    add_common_arguments(parser)
    args = parser.parse_args(argv)

    cfg = load_config(
        args.config,
        args.bundle,
        work_dir=args.work_dir,
        cfg_options=args.cfg_options,
        storage_options=parse_options(args.storage_options),
    )
    metrics = evaluate(cfg, args.checkpoint)
    out = Path(args.out or Path(cfg.work_dir) / "metrics.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2))
    print(f"aAcc {metrics['aAcc']:.2f}  mIoU {metrics['mIoU']:.2f}  mAcc {metrics['mAcc']:.2f}")
    for name, row in metrics["per_class"].items():
        print(f"  {name:15s} IoU {_cell(row['IoU'])}  Acc {_cell(row['Acc'])}")
    print(f"written to {out}")
    return 0


def _cell(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:6.2f}"


if __name__ == "__main__":
    sys.exit(main())
