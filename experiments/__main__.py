"""The experiments' command line: ``python -m experiments table1 ...`` and ``python -m experiments bars DIR``
(see :mod:`experiments`)."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import experiments
from experiments.catalogue import BACKBONES, DECODERS, METHODS, SCALES, SEGMENTORS


def _names(text: str | None) -> tuple[str, ...] | None:
    """A comma-separated list ('' is none), or None where the option was not given."""
    return None if text is None else tuple(n for n in text.split(",") if n)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments", description=experiments.__doc__.splitlines()[0])
    commands = p.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    bars = commands.add_parser("bars", help="draw DIR/bars.png again from DIR/table.csv (no training)")
    bars.add_argument("dir", type=Path, metavar="DIR", help="a report directory that table1 wrote")
    t = commands.add_parser("table1", help="the paper's Table I: train, evaluate, write the report to --out")
    t.add_argument("--scale", choices=tuple(SCALES), default="small", help="the scale's settings (default: %(default)s)")
    t.add_argument("--out", required=True, help="report directory")
    t.add_argument("--work", help="working directory: owner root, bundles, runs (default data/experiments/table1-SCALE)")
    t.add_argument("--backbones", help=f"comma-separated, of {', '.join(BACKBONES)}")
    t.add_argument("--decoders", help=f"SETR decoders, comma-separated, of {', '.join(DECODERS)}")
    t.add_argument("--segmentors", help=f"beyond SETR (baseline and proposed), of {', '.join(SEGMENTORS)}; '' for none")
    t.add_argument("--methods", help=f"comma-separated, of {', '.join(METHODS)}")
    t.add_argument("--seeds", type=int, help="train each SETR baseline with seeds 0 .. N-1 (the seed spread)")
    t.add_argument("--iters", type=int, help="training iterations of every run (default: the scale's)")
    t.add_argument("--batch-size", type=int, help="images per GPU (or CPU) and iteration")
    t.add_argument("--raw", help="a Cityscapes root (default: generate the synthetic sample)")
    t.add_argument("--weights", action="append", default=[], metavar="BACKBONE=PATH", help="a local timm checkpoint")
    t.add_argument("--pretrain-steps", type=int, help="proxy pretraining steps (backbones without --weights)")
    t.add_argument("--sample-counts", help="TRAIN,VAL,TEST images of the generated sample")
    t.add_argument("--sample-size", help="HxW of the generated images")
    t.add_argument("--gpus", type=int, help="GPUs per training run (torchrun when more than one)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.experiment == "bars":
        from experiments.figures import bar_chart
        from experiments.report import read_csv

        table = args.dir / "table.csv"
        if not table.is_file():
            p.error(f"{table}: no such file (the table that `table1 --out {args.dir}` writes)")
        bar_chart(read_csv(table), args.dir / "bars.png")
        print(f"drawn {args.dir / 'bars.png'} from {table}")
        return 0

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
        p.error(f"unknown backbone, decoder, segmentor or method: {', '.join(unknown)}")
    if settings.seeds < 1:
        p.error("--seeds must be at least 1")
    if args.scale == "full" and (not settings.raw or set(settings.backbones) - set(settings.weights)):
        p.error("--scale full needs --raw (Cityscapes) and --weights BACKBONE=PATH for every backbone")
    from experiments.table1 import table1
    from training.plugin import register

    register()
    out = Path(args.out)
    command = shlex.join(["python", "-m", "experiments", *(argv if argv is not None else sys.argv[1:])])
    table1(settings, out, Path(args.work or f"data/experiments/table1-{args.scale}"), command)
    print(f"report written to {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
