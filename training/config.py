"""The command lines' shared part: the arguments every cloud command takes, and loading a config with them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mmengine.config import Config, DictAction

from contract.errors import UserError


def add_common_arguments(parser) -> None:
    """The arguments every command takes: the bundle, the owner's signer, storage, device, config overrides."""
    parser.add_argument("--bundle", required=True, help="bundle location: a directory or an fsspec URL such as s3://bucket/bundle")
    parser.add_argument(
        "--signer",
        help="the owner's public signer file: refuse any bundle the owner did not sign (without it, integrity only)",
    )
    parser.add_argument("--storage-options", help="fsspec storage options for the bundle, as JSON (e.g. an S3 endpoint)")
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto",
        help="where the model runs: a CUDA GPU when there is one (auto), or as chosen",
    )
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config settings, key=value")


def load_config(
    config: str | Path,
    bundle: str,
    *,
    signer: str | None = None,
    storage_options: dict[str, Any] | None = None,
    cfg_options: dict[str, Any] | None = None,
    work_dir: str | Path | None = None,
) -> Config:
    """The config at ``config`` for this bundle, signer and storage options, with overrides applied.

    The runner (training.runner) verifies the bundle and resolves the config's ``{bundle}`` paths.
    ``work_dir`` defaults to ``work_dirs/<config name>``. The config's ``custom_imports`` (for mmseg's own
    tools) are not imported: reading a config stays cheap, and the commands call
    ``training.plugin.register()`` before they build anything from it.
    """
    if not Path(config).is_file():
        raise UserError(f"{config}: no such config file")
    cfg = Config.fromfile(str(config), import_custom_modules=False)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.bundle = bundle
    cfg.signer = signer
    cfg.storage_options = storage_options or {}
    cfg.work_dir = str(work_dir or Path("work_dirs") / Path(config).stem)
    return cfg


def config_from_arguments(args, *, work_dir: str | Path | None = None) -> Config:
    """:func:`load_config` with a command line's common arguments."""
    return load_config(
        args.config,
        args.bundle,
        signer=args.signer,
        storage_options=parse_options(args.storage_options),
        cfg_options=args.cfg_options,
        work_dir=work_dir,
    )


def select_device(choice: str) -> str:
    """'cuda' or 'cpu' for ``--device``; with 'cpu' CUDA is hidden from this process, so that mmengine,
    which takes a GPU whenever it sees one, runs on the CPU."""
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here")
    if choice == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_options(text: str | None) -> dict[str, Any]:
    """Storage options given on the command line as a JSON object."""
    try:
        options = json.loads(text) if text else {}
    except json.JSONDecodeError as error:
        raise UserError(f"--storage-options {text}: not JSON ({error})") from None
    if not isinstance(options, dict):
        raise UserError(f"--storage-options {text}: must be a JSON object")
    return options
