"""Loading a training config and pointing it at a bundle; shared by the train, test and predict commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fsspec
from fsspec.core import split_protocol
from mmengine.config import Config, DictAction

import training.checkpoint  # noqa: F401  (registers the safetensors loader and resume globals)

PLACEHOLDER = "{bundle}"


def load_config(
    config: str | Path,
    bundle: str,
    *,
    work_dir: str | Path | None = None,
    cfg_options: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Config:
    """The config at ``config`` with every ``{bundle}`` replaced by the bundle location.

    ``storage_options`` (for ``s3://`` and other fsspec URLs) go to the datasets and, through
    fsspec's configuration, to the checkpoint loader. ``work_dir`` defaults to
    ``work_dirs/<config name>``.
    """
    cfg = Config.fromfile(str(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    bundle = bundle.rstrip("/")
    _substitute(cfg._cfg_dict, bundle)
    if storage_options:
        fsspec.config.conf.setdefault(split_protocol(bundle)[0] or "file", {}).update(storage_options)
        for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
            if cfg.get(loader):
                cfg[loader].dataset.storage_options = storage_options
    cfg.work_dir = str(work_dir or Path("work_dirs") / Path(config).stem)
    return cfg


def parse_options(text: str | None) -> dict[str, Any]:
    """Storage options given on the command line as a JSON object."""
    options = json.loads(text) if text else {}
    if not isinstance(options, dict):
        raise ValueError(f"storage options must be a JSON object, not {text}")
    return options


def add_common_arguments(parser) -> None:
    """The arguments every command takes: the bundle, its storage options and config overrides."""
    parser.add_argument("--bundle", required=True, help="bundle location: a directory or an fsspec URL such as s3://bucket/bundle")
    parser.add_argument("--storage-options", help="fsspec storage options for the bundle, as JSON (e.g. an S3 endpoint)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config settings, key=value")


def _substitute(node: Any, bundle: str) -> None:
    """Replace the placeholder in every string of a (nested) config dict or list, in place."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in list(items):
        if isinstance(value, str) and PLACEHOLDER in value:
            node[key] = value.replace(PLACEHOLDER, bundle)
        elif isinstance(value, (dict, list)):
            _substitute(value, bundle)
