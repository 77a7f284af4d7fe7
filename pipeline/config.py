"""Options of the owner-side command line: defaults under data/, a TOML config file, flags on top.

The storage stages have their own roots (see data/README.md): ``data/raw`` holds plain input,
``data/owner`` the key and private working state, ``data/bundle`` what the cloud may read,
``data/cloud`` what the cloud writes.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError

DEFAULT_ARCH = "vit_tiny_patch16_384"


@dataclass(frozen=True)
class Options:
    """Every option of ``python -m pipeline.run``; each has a default that works on the sample."""

    raw: str = "data/raw/cityscapes"
    key: str | None = None  # default: data/owner/key.json (see key_path); verify uses a key only if given
    store: str = "data/owner/dataset.zarr"
    arch: str = DEFAULT_ARCH
    weights: str | None = None  # default: data/raw/weights/<arch>.safetensors
    encrypted_weights: str = "data/owner/backbone.safetensors"
    bundle: str = "data/bundle"
    checkpoint: str | None = None
    out: str | None = None
    query: list[str] | None = None
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    scheduler: str | None = None
    on_error: str = "fail"
    shard_size: int = 8
    plain: bool = False
    names: str | None = None
    audit_images: int = 8
    block_size: int = 16
    negative_positive: bool = False
    seed: int = 0
    copies: int = 1
    sample_counts: str = "8,4,2"
    sample_size: str = "256x512"
    storage_options: dict[str, Any] = field(default_factory=dict)

    @property
    def key_path(self) -> str:
        return self.key or "data/owner/key.json"

    @property
    def weights_path(self) -> str:
        return self.weights or f"data/raw/weights/{self.arch}.safetensors"


OPTION_NAMES = tuple(f.name for f in fields(Options))


def load_config(path: str | Path) -> dict[str, Any]:
    """Options from a TOML file whose top-level keys are option names (``-`` or ``_``)."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise PipelineError(f"{path}: not a readable TOML config file ({error})") from None
    values = {name.replace("-", "_"): value for name, value in document.items()}
    unknown = sorted(set(values) - set(OPTION_NAMES))
    if unknown:
        raise PipelineError(f"{path}: unknown option(s) {', '.join(unknown)}")
    return values


def resolve(config: str | Path | None, flags: dict[str, Any]) -> Options:
    """Defaults, overridden by the config file, overridden by flags that were given (not None)."""
    values = load_config(config) if config else {}
    values.update({name: value for name, value in flags.items() if value is not None})
    options = Options()
    try:
        options = replace(options, **values)
    except TypeError as error:
        raise PipelineError(f"bad option: {error}") from None
    for f in fields(Options):
        _check_type(f.name, getattr(options, f.name), getattr(Options(), f.name), config)
    if options.on_error not in ("fail", "skip"):
        raise PipelineError(f"--on-error must be 'fail' or 'skip', not {options.on_error!r}")
    if options.workers < 1:
        raise PipelineError(f"--workers must be at least 1, not {options.workers}")
    return options


def _check_type(name: str, value: Any, default: Any, config: str | Path | None) -> None:
    if value is None or default is None:
        return
    if type(value) is not type(default):
        where = f"{config}: " if config else ""
        raise PipelineError(
            f"{where}option {name} must be {type(default).__name__}, not {type(value).__name__}"
        )
