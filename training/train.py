"""Fine-tune a SETR model on a bundle: ``python -m training.train CONFIG --bundle LOCATION``.

The bundle, encrypted or plain (the baseline's), is verified against its manifest first (keyless:
pipeline.bundle.verify); the config's CipherSegCheckHook then checks that it is the kind of bundle
the method expects. ``--resume`` continues from the latest checkpoint in the work dir.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch
from mmengine.logging import print_log
from mmengine.runner import Runner

from pipeline.errors import PipelineError
from training.config import add_common_arguments, load_config, parse_options


def verify_bundle(bundle: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check the bundle against its manifest (no key needed); raises PipelineError on a bad bundle."""
    from pipeline.bundle import verify  # the owner's check, run keyless

    return verify(bundle, storage_options=storage_options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="training config (training/configs/...)")
    parser.add_argument("--work-dir", help="where checkpoints and logs go (default work_dirs/<config name>)")
    parser.add_argument("--resume", action="store_true", help="resume from the latest checkpoint in the work dir")
    parser.add_argument(
        "--launcher", choices=("none", "pytorch", "slurm", "mpi"), default="none",
        help="distributed launcher: 'pytorch' under torchrun (every process verifies the bundle)",
    )
    add_common_arguments(parser)
    args = parser.parse_args(argv)

    storage_options = parse_options(args.storage_options)
    cfg = load_config(
        args.config, args.bundle, work_dir=args.work_dir, cfg_options=args.cfg_options, storage_options=storage_options
    )
    try:
        summary = verify_bundle(args.bundle, storage_options)
    except PipelineError as error:
        print(f"refusing to train on {args.bundle}: {error}", file=sys.stderr)
        return 1
    data = f"key id {summary['key_id']}" if summary["key_id"] else "plain data"
    print_log(f"bundle verified: {summary['objects']} objects, {data}", logger="current")
    cfg.resume = args.resume
    cfg.launcher = args.launcher
    if args.launcher == "pytorch" and not torch.cuda.is_available():
        # mmengine's pytorch launcher calls torch.cuda.set_device unconditionally; on a machine without
        # CUDA, join torchrun's process group here with gloo, and the runner uses it as it is.
        torch.distributed.init_process_group(backend="gloo")
    runner = Runner.from_cfg(cfg)
    runner.train()
    return 0


if __name__ == "__main__":
    sys.exit(main())
