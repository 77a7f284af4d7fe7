"""The command lines' shared part: the arguments every cloud command takes, and loading a config with them."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mmengine.config import Config, DictAction

from contract.errors import UserError, quoted


def add_common_arguments(parser, *, bundle_required: bool = True) -> None:
    """The arguments every command takes: the bundle, the owner's signer, storage, device, config overrides."""
    parser.add_argument(
        "--bundle", required=bundle_required, help="bundle location: a directory or an fsspec URL such as s3://bucket/bundle"
    )
    parser.add_argument(
        "--signer",
        help="the owner's public signer file: refuse any bundle the owner did not sign (without it, integrity only)",
    )
    parser.add_argument("--storage-options", help="fsspec storage options for the bundle, as JSON (e.g. an S3 endpoint)")
    parser.add_argument(
        "--min-sequence", type=int, metavar="N",
        help="accept publication N of the bundle or newer, instead of the newest one accepted before (default: that one)",
    )
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
    min_sequence: int | None = None,
    cfg_options: dict[str, Any] | None = None,
    work_dir: str | Path | None = None,
) -> Config:
    """The config at ``config`` for this bundle, signer and storage options, with overrides applied.

    A signer (or storage options, or a minimum sequence) given here and one in the config or its
    overrides must agree: either counts. cipherseg's loops (training.resolve) verify the bundle and
    resolve the config's ``{bundle}`` paths. ``work_dir`` defaults to ``work_dirs/<config name>``. The
    config's ``custom_imports`` (for mmseg's own tools) are not imported: reading a config stays cheap, and
    the commands call ``training.plugin.register()`` before they build anything from it.
    """
    if not Path(config).is_file():
        raise UserError(f"{quoted(config)}: no such config file")
    cfg = Config.fromfile(str(config), import_custom_modules=False)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    for name, value in (("bundle", bundle), ("signer", signer), ("storage_options", storage_options), ("min_sequence", min_sequence)):
        configured = cfg.get(name)
        if value and configured and value != configured:
            raise UserError(f"--{name.replace('_', '-')} {quoted(value)} and the config's {name} {quoted(configured)} differ; give one")
        cfg[name] = value or configured
    cfg.work_dir = str(work_dir or Path("work_dirs") / Path(config).stem)
    return cfg


def config_from_arguments(args, *, work_dir: str | Path | None = None) -> Config:
    """:func:`load_config` with a command line's common arguments."""
    return load_config(
        args.config,
        args.bundle,
        signer=args.signer,
        storage_options=parse_options(args.storage_options),
        min_sequence=args.min_sequence,
        cfg_options=args.cfg_options,
        work_dir=work_dir,
    )


@contextmanager
def removed_on_refusal(work_dir: str | Path) -> Iterator[None]:
    """Remove ``work_dir`` again if this block made it and then refused (a UserError) before writing a
    checkpoint: nothing is left of a refused command. A work directory that existed before is left as it is."""
    existed = Path(work_dir).exists()
    try:
        yield
    except UserError:
        if not existed and not any(Path(work_dir).rglob("*.pth")):
            shutil.rmtree(work_dir, ignore_errors=True)
        raise


def build_runner(cfg: Config, device: str):
    """mmengine's Runner for ``cfg``, introduced by a short summary: mmengine's dump of the environment and
    the whole config (some 200 lines) goes to the run's log file only, not to the console."""
    from mmengine.runner import Runner

    level = cfg.get("log_level", "INFO")
    cfg.log_level = "WARNING"  # the dump is logged while the runner is made: keep it from the console
    runner = Runner.from_cfg(cfg)
    logger = runner.logger
    console = [h for h in logger.handlers if not isinstance(h, logging.FileHandler)]
    logger.setLevel(level)
    for handler in logger.handlers:
        handler.setLevel(logging.WARNING if handler in console else level)
    runner._log_env(cfg.get("env_cfg", {}))  # mmengine's own dump again, now that the file takes it (pinned)
    for handler in console:
        handler.setLevel(level)
        handler.addFilter(_per_parameter)
    signer = cfg.get("signer") or "none (integrity only)"
    log_file = next((h.baseFilename for h in logger.handlers if isinstance(h, logging.FileHandler)), "none")
    print(
        f"config    {cfg.filename}\nbundle    {cfg.bundle}\nsigner    {signer}\ndevice    {device}\n"
        f"work dir  {runner.work_dir}\nfull log  {log_file} (environment and config)"
    )
    return runner


def _per_parameter(record: logging.LogRecord) -> bool:
    """mmengine's optimizer constructor logs three lines per parameter with its own settings: the log file's."""
    return not record.getMessage().startswith("paramwise_options -- ")


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
