"""Fine-tune a segmentor on a bundle: ``python -m training.train CONFIG --bundle LOCATION [--signer FILE]``.

The bundle, encrypted or plain (the baseline's), is verified first (keyless: with ``--signer``, that
the owner signed it; always, that it is whole); the config's CipherSegCheckHook then checks that it
is the kind of bundle the method expects, and every checkpoint written records what the model reads
(its provenance). ``--resume`` continues from the latest checkpoint in the work dir.
"""

from __future__ import annotations

import argparse
import sys

from contract.errors import run_reporting
from training.config import add_common_arguments


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
    return run_reporting(lambda: train(args))


def train(args: argparse.Namespace) -> None:
    from training.plugin import register

    register()
    import torch

    from training.config import build_runner, config_from_arguments, removed_on_refusal, select_device

    device = select_device(args.device)
    cfg = config_from_arguments(args, work_dir=args.work_dir)
    cfg.resume = args.resume
    cfg.launcher = args.launcher
    if args.launcher == "pytorch" and device == "cpu":
        # mmengine's pytorch launcher calls torch.cuda.set_device unconditionally; on a machine without
        # CUDA, join torchrun's process group here with gloo, and the runner uses it as it is.
        torch.distributed.init_process_group(backend="gloo")
    with removed_on_refusal(cfg.work_dir):
        build_runner(cfg, device).train()


if __name__ == "__main__":
    sys.exit(main())
