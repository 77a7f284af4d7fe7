"""Options of the owner-side command line: defaults under data/, a TOML config file, flags on top.

Every value is parsed once, here, into its type (``8,4,2`` into three counts, ``fail`` into
:class:`pipeline.errors.OnError`), with one error naming the option and where it came from; the
stages only read typed values. The storage stages have their own roots (see data/README.md):
``data/raw`` holds plain input, ``data/owner`` the key and private working state, ``data/bundle``
what the cloud may read, ``data/cloud`` what the cloud writes.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pipeline.datasets import Dataset, resolve_dataset
from pipeline.errors import OnError, PipelineError

DEFAULT_ARCH = "vit_tiny_patch16_384"
# Where the stages that write one tree put it without --out (the other stages that write one need --out).
OUT_DEFAULTS = {"encrypt-query": "data/cloud/queries", "query": "data/owner/maps", "audit": "data/owner/audit"}


@dataclass(frozen=True)
class Options:
    """Every option of ``python -m pipeline.run``; each has a default that works on the sample."""

    raw: str | None = None  # default: data/raw/<dataset> (see raw_path)
    dataset: str | dict[str, Any] = "cityscapes"  # a built-in's name or a [dataset] table (see spec)
    resize: tuple[int, int] | None = None
    key: str | None = None  # default: data/owner/key.json (see key_path); verify uses a key only if given
    signer: str | None = None  # default: signer.json beside the key (see signer_path)
    store: str = "data/owner/dataset.zarr"
    arch: str = DEFAULT_ARCH
    weights: str | None = None  # default: data/raw/weights/<arch>.safetensors
    encrypted_weights: str = "data/owner/backbone.safetensors"
    bundle: str = "data/bundle"
    checkpoint: str | None = None
    out: str | None = None  # the output of the stages that write one file tree or file
    query: tuple[str, ...] = ()
    server: str = "http://127.0.0.1:8000"  # the cloud's segmentation service (`make serve` starts one here)
    concurrency: int = 4
    legend: bool = False
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    scheduler: str | None = None
    on_error: OnError = OnError.FAIL
    shard_size: int = 8
    plain: bool = False
    names: tuple[str, ...] | None = None
    audit_images: int = 8
    block_size: int = 16
    negative_positive: bool = False
    seed: int = 0
    copies: int = 1
    sample_counts: tuple[int, ...] | None = None  # the dataset sample's splits in order; default (8, 4, 2)
    sample_size: tuple[int, int] = (256, 512)  # height, width
    demo: bool = False
    storage_options: dict[str, Any] = field(default_factory=dict)

    @property
    def raw_path(self) -> str:
        return self.raw or f"data/raw/{self.dataset_name}"

    @property
    def dataset_name(self) -> str:
        return self.dataset if isinstance(self.dataset, str) else str(self.dataset.get("name", "custom"))

    @property
    def layout(self) -> str:
        """The built-in layout the dataset is (or, for a [dataset] table, starts from)."""
        return self.dataset if isinstance(self.dataset, str) else str(self.dataset.get("layout", "custom"))

    def dataset_spec(self) -> Dataset:
        """The dataset: a built-in, or the owner's [dataset] table over the built-in it names."""
        return resolve_dataset(self.dataset, "--dataset" if isinstance(self.dataset, str) else "the config's")

    @property
    def key_path(self) -> str:
        return self.key or "data/owner/key.json"

    @property
    def signer_path(self) -> str:
        return self.signer or str(Path(self.key_path).parent / "signer.json")

    @property
    def weights_path(self) -> str:
        return self.weights or f"data/raw/weights/{self.arch}.safetensors"

    def out_path(self, stage: str) -> str | None:
        return self.out or OUT_DEFAULTS.get(stage)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected text")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _integer(minimum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        number = int(value) if isinstance(value, str) and value.strip().lstrip("-").isdigit() else value
        if isinstance(number, bool) or not isinstance(number, int):
            raise ValueError("expected a whole number")
        if number < minimum:
            raise ValueError(f"must be at least {minimum}")
        return number

    return parse


def _integers(count: int, separator: str, minimum: int) -> Callable[[Any], tuple[int, ...]]:
    def parse(value: Any) -> tuple[int, ...]:
        parts = value.split(separator) if isinstance(value, str) else value
        if not isinstance(parts, (list, tuple)) or len(parts) != count:
            raise ValueError(f"expected {count} whole numbers separated by {separator!r}")
        return tuple(_integer(minimum)(part) for part in parts)

    return parse


def _counts(value: Any) -> tuple[int, ...]:
    parts = value.split(",") if isinstance(value, str) else value
    if not isinstance(parts, (list, tuple)) or not 1 <= len(parts) <= 4:
        raise ValueError("expected one to four whole numbers separated by ','")
    return tuple(_integer(0)(part) for part in parts)


def _names(value: Any) -> tuple[str, ...]:
    parts = value.split(",") if isinstance(value, str) else value
    if not isinstance(parts, (list, tuple)) or not all(isinstance(part, str) for part in parts):
        raise ValueError("expected names separated by ','")
    return tuple(part for part in parts if part)


def _storage_options(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("expected a table of fsspec options")
    return value


def _on_error(value: Any) -> OnError:
    try:
        return OnError(value)
    except ValueError:
        raise ValueError("expected 'fail' or 'skip'") from None


PARSERS: dict[str, Callable[[Any], Any]] = {
    "workers": _integer(1),
    "on_error": _on_error,
    "shard_size": _integer(1),
    "plain": _flag,
    "names": _names,
    "query": _names,
    "concurrency": _integer(1),
    "legend": _flag,
    "audit_images": _integer(2),
    "block_size": _integer(1),
    "negative_positive": _flag,
    "seed": _integer(0),
    "copies": _integer(1),
    "sample_counts": _counts,
    "resize": _integers(2, ",", 1),
    "sample_size": _integers(2, "x", 1),
    "demo": _flag,
    "storage_options": _storage_options,
}
OPTION_NAMES = tuple(f.name for f in fields(Options))


def load_config(path: str | Path) -> dict[str, Any]:
    """Options from a TOML file whose top-level keys are option names (``-`` or ``_``), unparsed."""
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
    """Defaults, overridden by the config file, overridden by flags that were given (not None); every
    value parsed into its type, or a PipelineError naming the option and where it came from."""
    values = {name: (value, f"{config}: option {name.replace('_', '-')}") for name, value in
              (load_config(config) if config else {}).items()}  # fmt: skip
    values.update({name: (value, f"--{name.replace('_', '-')}") for name, value in flags.items() if value is not None})
    parsed = {}
    for name, (value, where) in values.items():
        if name == "dataset":  # a name or a table, checked now (its own messages name where it came from)
            if value != "custom":  # a table's name, for --stage sample, which writes one
                resolve_dataset(value, where)
            parsed[name] = value
            continue
        try:
            parsed[name] = PARSERS.get(name, _text)(value)
        except ValueError as error:
            raise PipelineError(f"{where} {value!r}: {error}") from None
    return replace(Options(), **parsed)
