"""Augmentation by the owner, before encryption: flipped and rescaled copies of the training images.

Flips and rescaling do not commute with the block cipher, so the cloud cannot apply them to
ciphertext (training/transforms.py), but the owner can apply them to the plain images: the encrypt
stage then encrypts the copies like any other image. A copy keeps its image's size (rescaled, then
cropped or padded back; padding is black and 'unlabeled'), because a split of the store has one
image size, a multiple of the block size.

A copy keeps Cityscapes' name pattern, ``<city>_<seq>_<frame>``, which cityscapesscripts and mmseg's
Cityscapes tools parse: copy i of ``aachen_000012_000019`` is frame ``i * 1000000 + 19`` of the same
sequence, ``aachen_000012_1000019``. Cityscapes' frames have six digits, so no copy takes the name of a
real frame.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from pipeline.errors import PipelineError
from contract.outputs import OutputKind, kind_of
from pipeline.atomic import write_private

SCALES = (0.5, 2.0)  # the paper's (mmseg's) RandomResize ratio range
CITYSCAPES_NAME = re.compile(r"(?P<city>[^_]+)_(?P<seq>\d+)_(?P<frame>\d+)")
COPY_FRAMES = 1_000_000  # beyond Cityscapes' six-digit frame numbers


def augment_tree(raw: str | Path, out: str | Path, *, copies: int = 1, seed: int = 0) -> list[Path]:
    """Copy the Cityscapes tree ``raw`` to ``out`` and add ``copies`` augmented copies of each training image.

    A copy is flipped with probability 0.5, rescaled by a factor drawn from :data:`SCALES`, and cut
    back to the image's size at a random place. val and test are copied unchanged. The new tree
    holds plain images: it is owner-private (files 0600, folders 0700). Returns the copies' image paths.
    """
    raw, out = Path(raw), Path(out)
    images = sorted((raw / "leftImg8bit" / "train").glob("*/*_leftImg8bit.png"))
    if not images:
        raise PipelineError(f"{raw}: no leftImg8bit/train/<city>/*_leftImg8bit.png images to augment")
    if copies < 1:
        raise PipelineError(f"copies must be at least 1, not {copies}")
    for source in sorted(p for p in raw.rglob("*") if p.is_file()):
        data = source.read_bytes()
        write_private(str(out / source.relative_to(raw)), data, kind_of(data[:4096]))
    rng = np.random.default_rng(seed)
    taken = {path.name for path in images}
    written = []
    for path in images:
        stem = path.name.removesuffix("_leftImg8bit.png")
        name = CITYSCAPES_NAME.fullmatch(stem)
        if name is None:
            raise PipelineError(f"{path}: not named <city>_<seq>_<frame>_leftImg8bit.png, so no copy can be named like it")
        labels = raw / "gtFine" / "train" / path.parent.name / f"{stem}_gtFine_labelIds.png"
        image, label = cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.imread(str(labels), cv2.IMREAD_UNCHANGED)
        if image is None or label is None or label.shape != image.shape[:2]:
            raise PipelineError(f"{path}: unreadable, or its labels ({labels}) are missing or of another size")
        for i in range(1, copies + 1):
            new_image, new_label = augment(image, label, rng)
            copy = f"{name['city']}_{name['seq']}_{i * COPY_FRAMES + int(name['frame']):06d}"
            target = out / "leftImg8bit" / "train" / path.parent.name / f"{copy}_leftImg8bit.png"
            if target.name in taken:  # a tree augmented before: its copies' frames are taken
                raise PipelineError(f"{path}: its copy {i} would be {target.name}, which {raw} holds already")
            write_private(str(target), _png(new_image), OutputKind.PNG)
            write_private(str(out / "gtFine" / "train" / path.parent.name / f"{copy}_gtFine_labelIds.png"), _png(new_label), OutputKind.PNG)
            written.append(target)
    return written


def augment(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random flip and rescaling of an image (H, W, 3) and its labelIds (H, W), cut back to (H, W)."""
    h, w = label.shape
    if rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    scale = rng.uniform(*SCALES)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # cv2 sizes are (width, height)
    image = cv2.resize(np.ascontiguousarray(image), size, interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(np.ascontiguousarray(label), size, interpolation=cv2.INTER_NEAREST)
    y, x = rng.integers(0, max(size[1] - h, 0) + 1), rng.integers(0, max(size[0] - w, 0) + 1)
    image, label = image[y : y + h, x : x + w], label[y : y + h, x : x + w]
    out_image, out_label = np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.uint8)  # labelId 0: unlabeled
    out_image[: image.shape[0], : image.shape[1]], out_label[: label.shape[0], : label.shape[1]] = image, label
    return out_image, out_label


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()
