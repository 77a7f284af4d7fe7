"""Checkpoint loaders for mmengine: the bundle's safetensors backbone (checked against the manifest when it
is read) and mmengine's own .pth files under torch >= 2.6 (resuming without unpickling arbitrary code).

:func:`register_loaders` (called by training.plugin) registers them for every path ending in
``.safetensors`` or ``.pth`` (local or an fsspec URL; storage options come from ``fsspec.config.conf``).
A path may carry the sha256 its bytes must have, as ``<path>#sha256=<hex>`` (the convention of pip's
URLs): the run's resolution (training.resolve) names the bundle's checkpoint so, and the loader
refuses bytes that changed after the bundle was verified.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from typing import Any

import fsspec
import numpy as np
import torch
from fsspec.core import url_to_fs
from mmengine.logging import HistoryBuffer
from numpy._core.multiarray import _reconstruct, scalar
from safetensors.torch import load as load_safetensors_bytes

from contract.bundle import read_safetensors_header
from contract.canonical import SafetensorsHeader, parse_safetensors_header, read_header_bytes
from contract.errors import UserError, quoted

# What mmengine's full training checkpoints hold besides tensors (the message hub's logs, numpy
# arrays and scalars): allowed for torch.load's weights_only mode, the default since torch 2.6, so
# that --resume works without unpickling arbitrary code. numpy pickles scalars' dtypes through
# getattr; weights_only still refuses to call anything it fetches that is not in this list. Allowed
# only while a .pth is loaded here, not process-wide.
RESUME_GLOBALS = [
    HistoryBuffer,
    np.ndarray,
    np.dtype,
    _reconstruct,
    scalar,
    getattr,
    *(type(np.dtype(code)) for code in "?bBhHiIlLqQefdg"),
]
# Where the safetensors loader keeps a file's metadata in the checkpoint it returns.
SAFETENSORS_METADATA = "safetensors_metadata"
_DIGEST = re.compile(r"(?P<path>.*)#sha256=(?P<sha256>[0-9a-f]{64})")


def with_digest(location: str, sha256: str) -> str:
    """``location`` naming the sha256 its bytes must have when read."""
    return f"{location}#sha256={sha256}"


def split_digest(location: str) -> tuple[str, str | None]:
    """``location`` without its ``#sha256=`` suffix, and that digest (None if it names none)."""
    match = _DIGEST.fullmatch(location)
    return (match["path"], match["sha256"]) if match else (location, None)


def load_from_pth(filename: str, map_location: Any = None) -> dict[str, Any]:
    """An mmengine checkpoint (local or an fsspec URL), unpickled in weights_only mode with RESUME_GLOBALS."""
    try:
        with fsspec.open(filename, "rb") as f, torch.serialization.safe_globals(RESUME_GLOBALS):
            checkpoint = torch.load(f, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{quoted(filename)}: no such checkpoint file") from None
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, OSError) as error:
        # torch's messages suggest weights_only=False: not advice to pass on.
        named = re.search(r"GLOBAL ([\w.]+)", str(error))
        reason = f"it names {named.group(1)}, which is never unpickled" if named else "damaged, or not a torch file"
        raise UserError(f"{quoted(filename)}: not a readable mmengine checkpoint ({reason})") from None
    if not isinstance(checkpoint, dict):
        raise UserError(f"{quoted(filename)}: not an mmengine checkpoint (no dictionary of weights)")
    return checkpoint


def load_from_safetensors(filename: str, map_location: Any = None) -> dict[str, Any]:
    """A safetensors file as mmengine checkpoints are laid out: its tensors (on the CPU; mmseg asks for
    map_location='cpu') under ``state_dict``, its metadata under ``meta`` (what the model reads). With a
    ``#sha256=`` suffix, the bytes read must have that digest."""
    path, expected = split_digest(filename)
    with fsspec.open(path, "rb") as f:
        data = f.read()
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise UserError(f"{quoted(path)}: changed since the bundle was verified (its sha256 is not the manifest's)")
    header = _header(data, path)
    return {"state_dict": load_safetensors_bytes(data), "meta": {SAFETENSORS_METADATA: header.metadata}}


def _header(data: bytes, where: str) -> SafetensorsHeader:
    length = read_header_bytes(data[:8], where)
    return parse_safetensors_header(data[8 : 8 + length], where, data_length=len(data) - 8 - length)


def register_loaders() -> None:
    """Let mmengine read ``.pth`` (with RESUME_GLOBALS) and ``.safetensors`` files, local or fsspec URLs.

    The loaders' names end in what mmengine's log line shows ("Loads checkpoint by safetensors backend").
    """
    from mmengine.runner import CheckpointLoader  # here: reading a checkpoint's provenance needs no runner

    CheckpointLoader.register_scheme(prefixes=r".*\.pth$", loader=load_from_pth, force=True)
    CheckpointLoader.register_scheme(prefixes=r".*\.safetensors(#sha256=[0-9a-f]{64})?$", loader=load_from_safetensors, force=True)


def read_header(location: str) -> SafetensorsHeader:
    """The header of a safetensors file (local or an fsspec URL; a ``#sha256=`` suffix is ignored)."""
    path, _ = split_digest(location)
    fs, inner = url_to_fs(path)
    return read_safetensors_header(fs, inner, path)
