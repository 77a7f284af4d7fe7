"""Decrypting the owner's store back to PNG files: owner-private output (files 0600, folders 0700)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import zarr

from contract.formats import SplitAttributes
from pipeline.cipher import BlockCipher
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
    """Decrypt samples of an encrypted store to ``out/<split>/<city>/<name>_leftImg8bit.png``.

    ``names`` (default: every sample that was not skipped) are ``city_seq_frame``. The PNGs hold
    exactly the pixels of the original files. Returns the written paths.
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
    where = {
        name: (split, i)
        for split in attrs.splits
        for i, name in enumerate(SplitAttributes.parse(dict(root[split].attrs), f"{store}/{split}").names)
    }
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
        split, i = where[name]
        image = cipher.decrypt(root[split]["images"][i])
        path = f"{out.rstrip('/')}/{split}/{name.rsplit('_', 2)[0]}/{name}_leftImg8bit.png"
        _, png = cv2.imencode(".png", image[..., ::-1])  # cv2 encodes BGR
        write_private(path, png.tobytes(), OutputKind.PNG, storage_options)
        written.append(path)
    return written
