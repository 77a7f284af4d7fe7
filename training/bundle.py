"""The bundle a config names: verified (the keyless check), and the config pointed at it.

A config names its bundle once, ``bundle = LOCATION``, beside the optional ``signer`` (the owner's
public signer file) and ``storage_options`` (fsspec options for ``s3://`` and the like); every string
in the config that starts with ``{bundle}`` (the dataset store, the pretrained checkpoint) is resolved
from it. Light to import (no torch, no mmseg): a command checks its bundle before it loads a model.
"""

from __future__ import annotations

import logging
from typing import Any

import fsspec
from fsspec.core import split_protocol
from mmengine.config import Config
from mmengine.logging import print_log

from contract.bundle import Verified, verify_bundle
from contract.errors import UserError
from contract.signing import load_signer

PLACEHOLDER = "{bundle}"
DATALOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")


def resolve_bundle(cfg: Config) -> Verified:
    """Verify the bundle ``cfg.bundle`` names and point the config at it, in place.

    With ``cfg.signer`` the bundle must be signed by that owner; without, its integrity alone is
    checked, and a warning says so. The storage options reach the datasets and (through fsspec's
    configuration: mmengine's checkpoint loaders take no options) the checkpoint loader.
    """
    bundle = (cfg.get("bundle") or "").rstrip("/")
    if not bundle:
        raise UserError("the config names no bundle: give --bundle LOCATION (or --cfg-options bundle=LOCATION)")
    storage_options = dict(cfg.get("storage_options") or {})
    verified = verify(bundle, cfg.get("signer"), storage_options)
    _substitute(cfg._cfg_dict, bundle)
    if storage_options:
        fsspec.config.conf.setdefault(split_protocol(bundle)[0] or "file", {}).update(storage_options)
        for loader in DATALOADERS:
            if cfg.get(loader):
                cfg[loader].dataset.storage_options = storage_options
    cfg.bundle = bundle
    return verified


def verify(bundle: str, signer: str | None, storage_options: dict[str, Any]) -> Verified:
    """The cloud's first step before reading a bundle: the keyless check, logged in one line."""
    verified = verify_bundle(bundle, signer=load_signer(signer) if signer else None, storage_options=storage_options)
    print_log(verified.summary(), logger="current", level=logging.INFO if signer else logging.WARNING)
    return verified


def _substitute(node: Any, bundle: str) -> None:
    """Replace the placeholder in every string of a (nested) config dict or list, in place."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in list(items):
        if isinstance(value, str) and PLACEHOLDER in value:
            node[key] = value.replace(PLACEHOLDER, bundle)
        elif isinstance(value, (dict, list)):
            _substitute(value, bundle)
