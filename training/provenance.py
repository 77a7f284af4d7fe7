"""What a model reads, as its checkpoint records it: the cipher of its input images, its normalization,
and the publication of the bundle it was trained on.

A checkpoint written by training carries a :class:`contract.formats.ModelProvenance` in mmengine's
``meta["cipherseg"]``; a safetensors file (the owner's conventional-1 model, an export) carries
:class:`contract.formats.CheckpointMetadata`. A checkpoint with neither is refused: nothing tells
which key its inputs must be encrypted with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contract.errors import UserError, quoted
from contract.formats import CheckpointMetadata, CipherSpec, ModelProvenance, describe_cipher
from training.loaders import SAFETENSORS_METADATA, load_from_pth, read_header


def model_reads(checkpoint: str, loaded: Mapping[str, Any] | None = None) -> ModelProvenance:
    """What the model at ``checkpoint`` reads: the cipher of its inputs (None: plain images), their
    normalization, and (for a model trained here) the method and the bundle publication it came from.

    ``loaded``: the checkpoint as mmengine's loaders return it (training.loaders), when at hand.
    """
    if loaded is None:
        if checkpoint.endswith(".safetensors"):  # the header says it all: no need to read the tensors
            return _of_metadata(read_header(checkpoint).metadata, checkpoint)
        loaded = load_from_pth(checkpoint, map_location="cpu")
    meta = loaded.get("meta") or {}
    if ModelProvenance.META_KEY in meta:
        return ModelProvenance.parse(meta[ModelProvenance.META_KEY], f"{checkpoint} (meta.{ModelProvenance.META_KEY})")
    if SAFETENSORS_METADATA in meta:
        return _of_metadata(meta[SAFETENSORS_METADATA], checkpoint)
    raise UserError(f"{quoted(checkpoint)}: records no provenance (not written by cipherseg): which key its model reads is unknown")


def _of_metadata(metadata: Mapping[str, str], checkpoint: str) -> ModelProvenance:
    """A checkpoint's metadata as a provenance (no method or bundle: the owner made it)."""
    info = CheckpointMetadata.parse_metadata(metadata, checkpoint)
    method = "proposed" if info.cipher else "baseline"
    return ModelProvenance(cipher=info.cipher, normalization=info.normalization, method=method)


def check_reads(checkpoint: str, cipher: CipherSpec | None, data: CipherSpec | None, what: str) -> None:
    """Refuse a model that reads images of another cipher than ``data`` (the cipher of ``what``)."""
    if cipher != data:
        raise UserError(
            f"{quoted(checkpoint)}: the model reads images of {describe_cipher(cipher)}, but {what} is of {describe_cipher(data)}"
        )
