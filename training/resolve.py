"""A run on a bundle: verify the bundle a config names, then read nothing but what was verified.

A config names its bundle once, ``bundle = LOCATION``, beside the optional ``signer`` (the owner's
public signer file), ``storage_options`` (fsspec options for ``s3://`` and the like) and
``min_sequence`` (see :mod:`contract.freshness`). The loops below, which every shipped config uses,
resolve the run when mmengine builds them, so that mmseg's own ``tools/train.py`` and
``tools/test.py`` check exactly what ``python -m training.train`` and ``training.test`` check:

- the bundle is verified (with the signer: that the owner signed it) and is no older than the newest
  publication accepted before (a state file in the work directory);
- every ``{bundle}`` in the datasets and the model's init configs becomes the bundle's location;
- every dataset reads the verified bundle (its manifest pinned by sha256; each object hashed again
  when first read in a process), and every pretrained checkpoint is the bundle's (pinned by sha256)
  or a plain public one; a training run's ``load_from`` is inside the bundle or its work directory.
  Whatever the config or ``--cfg-options`` say, anything else is refused.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import fsspec
from fsspec.core import split_protocol
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.runner import IterBasedTrainLoop, TestLoop, ValLoop
from mmseg.datasets import BaseSegDataset
from mmseg.registry import LOOPS

from contract.bundle import CHECKPOINT, Verified, verify_bundle
from contract.errors import FormatError, UserError, quoted
from contract.formats import CheckpointMetadata
from contract.freshness import STATE_FILE, accept
from contract.signing import load_signer
from training.datasets import ZarrSegDataset
from training.loaders import read_header, split_digest, with_digest

PLACEHOLDER = "{bundle}"
DATASET_TYPE = "ZarrSegDataset"
# What a dataset config may set: ZarrSegDataset's own settings and those it passes to mmseg's BaseSegDataset.
_DATASET_SETTINGS = {
    name for cls in (ZarrSegDataset, BaseSegDataset) for name in inspect.signature(cls.__init__).parameters
} - {"self", "kwargs"}


def verify_config(cfg: Mapping[str, Any]) -> Verified:
    """Verify the bundle ``cfg`` names (signer, storage options, freshness state in its work directory)."""
    bundle = (cfg.get("bundle") or "").rstrip("/")
    if not bundle:
        raise UserError("the config names no bundle: give --bundle LOCATION (or --cfg-options bundle=LOCATION)")
    signer = cfg.get("signer")
    storage_options = dict(cfg.get("storage_options") or {})
    verified = verify_bundle(bundle, signer=load_signer(signer) if signer else None, storage_options=storage_options)
    if storage_options:  # mmengine's checkpoint loaders take no options: fsspec's configuration carries them
        fsspec.config.conf.setdefault(split_protocol(bundle)[0] or "file", {}).update(storage_options)
    floor = accept(verified, Path(cfg.get("work_dir") or ".", STATE_FILE), cfg.get("min_sequence"))
    print_log(verified.summary(), logger="current", level=logging.INFO if signer else logging.WARNING)
    if floor is not None and floor > 1:
        print_log(f"publication {verified.manifest.sequence} is no older than publication {floor} accepted before", logger="current")
    return verified


@dataclass(frozen=True)
class BundleRun:
    """A run's verified bundle, and how its configs are made to read it alone."""

    verified: Verified
    storage_options: dict[str, Any]

    @property
    def location(self) -> str:
        return self.verified.location

    def resolved(self, node: Any) -> Any:
        """A copy of a config node with ``{bundle}`` replaced, every dataset pinned to the verified bundle,
        and every pretrained checkpoint checked; UserError for anything that would read elsewhere."""
        if isinstance(node, Mapping):
            resolved = {key: self.resolved(value) for key, value in node.items()}
            if resolved.get("type") == DATASET_TYPE:
                self._pin_dataset(resolved)
            if resolved.get("type") == "Pretrained" and isinstance(resolved.get("checkpoint"), str):
                resolved["checkpoint"] = self._pretrained(resolved["checkpoint"])
            return resolved
        if isinstance(node, (list, tuple)):
            return type(node)(self.resolved(value) for value in node)
        if isinstance(node, str) and PLACEHOLDER in node:
            return node.replace(PLACEHOLDER, self.location)
        return node

    def _pin_dataset(self, dataset: dict[str, Any]) -> None:
        unknown = sorted(dataset.keys() - _DATASET_SETTINGS - {"type"})
        if unknown:
            raise UserError(f"{unknown[0]!r} is no setting of {DATASET_TYPE}: a dataset reads the bundle it names ('bundle')")
        if not _same_location(str(dataset.get("bundle")), self.location):
            raise UserError(
                f"the config's {dataset.get('split')} dataset reads {quoted(dataset.get('bundle'))}, not the verified "
                f"bundle {quoted(self.location)}; a run reads the bundle it verified and nothing else"
            )
        dataset.update(manifest_sha256=self.verified.manifest_sha256, storage_options=self.storage_options)

    def _pretrained(self, checkpoint: str) -> str:
        path, _ = split_digest(checkpoint)
        if _same_location(path, f"{self.location}/{CHECKPOINT}"):
            return with_digest(path, self.verified.manifest.objects[CHECKPOINT].sha256)
        try:  # outside the bundle: only a plain public model (conventional 2 starts from one)
            encrypted = CheckpointMetadata.parse_metadata(read_header(path).metadata, path).is_encrypted
        except (FormatError, FileNotFoundError):
            encrypted = True
        if encrypted:
            raise UserError(
                f"{quoted(path)}: not the verified bundle's checkpoint; a pretrained checkpoint outside the bundle "
                "must be a plain cipherseg checkpoint (--stage encrypt-weights --plain)"
            )
        return path

    def check_load_from(self, load_from: str | None, work_dir: str) -> None:
        """A training run starts from a checkpoint inside the bundle or its own work directory only."""
        if load_from and not any(_inside(load_from, root) for root in (self.location, work_dir)):
            raise UserError(
                f"load_from {quoted(load_from)}: outside the verified bundle and the work directory; "
                "a training run reads nothing else"
            )


def _local(location: str) -> str:
    return location.rstrip("/") if "://" in location else os.path.realpath(location)


def _same_location(a: str, b: str) -> bool:
    return _local(a) == _local(b)


def _inside(path: str, root: str) -> bool:
    path, root = _local(path), _local(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


_RUNS: WeakKeyDictionary[Any, BundleRun] = WeakKeyDictionary()


def run_of(runner) -> BundleRun:
    """The runner's verified bundle: verified on first use, and its model's init configs resolved."""
    if runner not in _RUNS:
        run = BundleRun(verify_config(runner.cfg), dict(runner.cfg.get("storage_options") or {}))
        model = getattr(runner.model, "module", runner.model)
        for module in model.modules():
            if isinstance(module, BaseModule) and module.init_cfg:
                module.init_cfg = run.resolved(module.init_cfg)
        _RUNS[runner] = run
    return _RUNS[runner]


def resolve_config(cfg) -> BundleRun:
    """Verify the bundle ``cfg`` names and resolve the config in place (for commands without a runner)."""
    run = BundleRun(verify_config(cfg), dict(cfg.get("storage_options") or {}))
    for name in ("model", "train_dataloader", "val_dataloader", "test_dataloader"):
        if cfg.get(name):
            cfg[name] = run.resolved(cfg[name].to_dict() if hasattr(cfg[name], "to_dict") else cfg[name])
    return run


def _dataloader(runner, dataloader: Any) -> Any:
    if not isinstance(dataloader, Mapping):
        raise UserError("cipherseg's loops take a dataloader config (a dict), to check what it reads")
    return run_of(runner).resolved(dataloader)


@LOOPS.register_module()
class CipherSegIterBasedTrainLoop(IterBasedTrainLoop):
    """mmengine's iteration-based training loop on the verified bundle (see the module docstring)."""

    def __init__(self, runner, dataloader, *args, **kwargs) -> None:
        dataloader = _dataloader(runner, dataloader)
        run_of(runner).check_load_from(runner.cfg.get("load_from"), runner.work_dir)
        super().__init__(runner, dataloader, *args, **kwargs)


@LOOPS.register_module()
class CipherSegValLoop(ValLoop):
    """mmengine's validation loop on the verified bundle."""

    def __init__(self, runner, dataloader, *args, **kwargs) -> None:
        super().__init__(runner, _dataloader(runner, dataloader), *args, **kwargs)


@LOOPS.register_module()
class CipherSegTestLoop(TestLoop):
    """mmengine's test loop on the verified bundle."""

    def __init__(self, runner, dataloader, *args, **kwargs) -> None:
        super().__init__(runner, _dataloader(runner, dataloader), *args, **kwargs)
