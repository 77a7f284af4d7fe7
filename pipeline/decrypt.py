"""Decrypting the owner's store back to PNG files: owner-private output (files 0600, folders 0700)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import zarr

from contract.formats import SplitAttributes
from pipeline.cipher import BlockCipher
from pipeline.datasets import exported_path
from pipeline.errors import PipelineError
from pipeline.keys import Key
from contract.outputs import OutputKind
from pipeline.atomic import write_private
from pipeline.zarr_store import read_attributes, zarr_store


def decrypt_samples(
    store: str,
    key: Key,
    out: str,
    *,
    names: Sequence[str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> list[str]:
    """Decrypt samples of an encrypted store to PNG files under ``out``: ``<split>/<city>/<name>_leftImg8bit.png``
    for Cityscapes, ``<split>/<name>.png`` otherwise.

    ``names`` (default: every sample that was not skipped) are the samples' names. The PNGs hold exactly
    the pixels the original files decode to (resized, if the owner resized them), without the padding.
    Returns the written paths.
    """
    storage_options = storage_options or {}
    attrs = read_attributes(store, storage_options)
    if attrs is None:
        raise PipelineError(f"{store}: no dataset store here (create one with --stage encrypt)")
    if attrs.cipher is None:
        raise PipelineError(f"{store}: this store is not encrypted; there is nothing to decrypt")
    if attrs.cipher != key.spec():
        raise PipelineError(f"{store}: encrypted with key id {attrs.cipher.key_id}, not with this key ({key.key_id})")
    if not attrs.complete:
        raise PipelineError(f"{store}: the encrypt stage has not finished; run --stage encrypt again first")

    root = zarr.open_group(zarr_store(store, storage_options, read_only=True), mode="r")
    where = {}  # name -> (split, index, first pixel (ragged) or None, size before padding, size stored)
    for split in attrs.splits:
        samples = SplitAttributes.parse(dict(root[split].attrs), f"{store}/{split}")
        for i, (name, size, (start, shape)) in enumerate(zip(samples.names, samples.sizes, attrs.placement(split, samples.sizes))):
            where[name] = (split, i, start, size, shape)
    skipped = {skip.name for skip in attrs.skipped}
    wanted = [name for name in where if name not in skipped] if names is None else list(names)
    for name in wanted:
        if name not in where:
            raise PipelineError(f"{store}: no sample named {name!r}")
        if name in skipped:
            raise PipelineError(f"{store}: sample {name!r} was skipped when encrypting (see the store's attrs)")

    cipher = BlockCipher(key)
    written = []
    for name in wanted:
        split, i, start, (height, width), (h, w) = where[name]
        images = root[split]["images"]
        stored = images[i] if start is None else images[3 * start : 3 * (start + h * w)].reshape(h, w, 3)
        image = cipher.decrypt(stored)[:height, :width]  # without the owner's padding
        path = f"{out.rstrip('/')}/{exported_path(attrs.dataset.name, split, name)}"
        _, png = cv2.imencode(".png", image[..., ::-1])  # cv2 encodes BGR
        write_private(path, png.tobytes(), OutputKind.PNG, storage_options)
        written.append(path)
    return written
