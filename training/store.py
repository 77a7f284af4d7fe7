"""Read access to the bundle's Zarr dataset store, local or through fsspec (``s3://`` and the like)."""

from __future__ import annotations

import zarr

from contract.errors import UserError
from contract.formats import StoreAttributes


def open_store(location: str, storage_options: dict | None = None) -> zarr.Group:
    """The store's root group, read-only."""
    if storage_options:  # zarr refuses storage options for a plain local path
        return zarr.open_group(location, mode="r", storage_options=storage_options)
    return zarr.open_group(location, mode="r")


def store_attrs(location: str, storage_options: dict | None = None) -> StoreAttributes:
    """The attributes of a complete cipherseg dataset store; UserError if it is none or is incomplete."""
    attrs = StoreAttributes.parse(dict(open_store(location, storage_options).attrs), f"{location}/zarr.json")
    if not attrs.complete:
        raise UserError(f"{location}: the dataset store is incomplete (its encryption did not finish)")
    return attrs
