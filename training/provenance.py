"""What a model reads, as its checkpoint records it: the cipher of its input images and its normalization.

A checkpoint written by training carries a :class:`contract.formats.ModelProvenance` in mmengine's
``meta["cipherseg"]``; a safetensors file (the owner's conventional-1 model, an export) carries
:class:`contract.formats.CheckpointMetadata`. A checkpoint with neither is refused: nothing tells
which key its inputs must be encrypted with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fsspec.core import url_to_fs

from contract.bundle import read_safetensors_header
from contract.errors import UserError
from contract.formats import CheckpointMetadata, CipherSpec, ModelProvenance, Normalization, describe_cipher

# Where training.checkpoint's safetensors loader keeps a file's metadata in the checkpoint it returns.
SAFETENSORS_METADATA = "safetensors_metadata"


def model_reads(checkpoint: str, loaded: Mapping[str, Any] | None = None) -> tuple[CipherSpec | None, Normalization]:
    """The cipher (None: plain images) and normalization of the inputs the model at ``checkpoint`` reads.

    ``loaded``: the checkpoint as mmengine's loaders return it (training.checkpoint), when at hand.
    """
    if loaded is None:
        if checkpoint.endswith(".safetensors"):  # the header says it all: no need to read the tensors
            fs, path = url_to_fs(checkpoint)
            return _of_metadata(read_safetensors_header(fs, path, checkpoint)[0], checkpoint)
        from training.pth import load_pth

        loaded = load_pth(checkpoint, map_location="cpu")
    meta = loaded.get("meta") or {}
    if ModelProvenance.META_KEY in meta:
        provenance = ModelProvenance.parse(meta[ModelProvenance.META_KEY], f"{checkpoint} (meta.{ModelProvenance.META_KEY})")
        return provenance.cipher, provenance.normalization
    if SAFETENSORS_METADATA in meta:
        return _of_metadata(meta[SAFETENSORS_METADATA], checkpoint)
    raise UserError(f"{checkpoint}: records no provenance (not written by cipherseg): which key its model reads is unknown")


def _of_metadata(metadata: Mapping[str, str], checkpoint: str) -> tuple[CipherSpec | None, Normalization]:
    info = CheckpointMetadata.parse(metadata, checkpoint)
    return info.cipher, info.normalization


def check_reads(checkpoint: str, cipher: CipherSpec | None, data: CipherSpec | None, what: str) -> None:
    """Refuse a model that reads images of another cipher than ``data`` (the cipher of ``what``)."""
    if cipher != data:
        raise UserError(
            f"{checkpoint}: the model reads images of {describe_cipher(cipher)}, but {what} is of {describe_cipher(data)}"
        )
