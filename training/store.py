"""Read access to the bundle's Zarr dataset store, local or through fsspec (``s3://`` and the like)."""

from __future__ import annotations

import json
import os
from functools import cache
from typing import Any

import zarr

STORE_FORMAT = "cipherseg-dataset"


def open_store(location: str, storage_options: dict | None = None) -> zarr.Group:
    """The store's root group, read-only; opened once per process (see :func:`_open`)."""
    return _open(location, json.dumps(storage_options or {}, sort_keys=True), os.getpid())


@cache
def _open(location: str, options: str, pid: int) -> zarr.Group:
    # Keyed by pid: a dataloader worker forked from the main process must not share its open
    # connections (s3fs sessions are not fork-safe), so every process opens the store itself.
    storage_options = json.loads(options)
    if storage_options:  # zarr refuses storage options for a plain local path
        return zarr.open_group(location, mode="r", storage_options=storage_options)
    return zarr.open_group(location, mode="r")


def store_attrs(location: str, storage_options: dict | None = None) -> dict[str, Any]:
    """The attributes of a cipherseg dataset store; ValueError if it is none or is incomplete."""
    attrs = dict(open_store(location, storage_options).attrs)
    if attrs.get("format") != STORE_FORMAT:
        raise ValueError(f"{location}: not a cipherseg dataset store (format {attrs.get('format')!r})")
    if attrs.get("complete") is not True:
        raise ValueError(f"{location}: the dataset store is incomplete (its encryption did not finish)")
    return attrs
