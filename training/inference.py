"""The cloud's segmentation core, shared by ``training.predict`` and ``training.serve``: a fine-tuned model
checked against its bundle and loaded once, queries checked and decoded, images segmented alone or in
batches, and the label maps' formats.

Batches: images of one size go through the model in one forward pass (mmseg's slide inference runs each
window for the whole batch at once; the service groups what it gathers by size), and each image gets
exactly the map it gets alone. On a CPU that takes one setting: oneDNN's convolutions choose their
algorithm by batch size (measured: logits 1e-6 apart between a batch and its images alone, on the tiny
SETR PUP and MLA heads and UperNet), so the forward pass runs with oneDNN off; PyTorch's own convolution
computes each image of a batch alone, and was no slower on the tiny configs. On any device
:meth:`Segmenter.batches_exactly` checks it on the model's own windows, and the service batches only
where it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from contract.formats import CipherSpec, DatasetDescription
from contract.query import QueryRefused, check_query

# The maps a query gets: class indices ("trainIds", as Cityscapes names them; 255 where nothing is
# predicted), the dataset's own label values ("labelIds": what cityscapesscripts' evaluation reads) and
# the dataset's palette's colours.
FORMATS = ("trainIds", "labelIds", "color")


def check_model(cfg, checkpoint: str, reads: CipherSpec | None) -> DatasetDescription:
    """Verify the bundle ``cfg`` names (resolving the config to it), and refuse the model at ``checkpoint``, which
    reads images of ``reads`` (its provenance: :func:`training.provenance.model_reads`), unless it reads the
    bundle's data and the config's head predicts its dataset's classes; that dataset. Without a bundle, only a
    plain model runs (the owner's, on the owner's own images), and its classes are Cityscapes'."""
    from training.plugin import register

    register()
    from contract.datasets import cityscapes
    from training.hooks import check_classes
    from training.provenance import check_reads
    from training.resolve import resolve_config
    from training.verified_store import bundle_attributes

    if cfg.get("bundle"):
        verified = resolve_config(cfg).verified
        where = f"the bundle {cfg.bundle}"
        check_reads(checkpoint, reads, verified.manifest.cipher, where)
        dataset = bundle_attributes(verified, cfg.get("storage_options")).dataset
    else:
        where = "Cityscapes (no --bundle names the dataset)"
        check_reads(checkpoint, reads, None, "a run without a bundle")
        dataset = cityscapes()
    check_classes(cfg.model.decode_head, dataset, where)  # before the model is built: its head's settings
    return dataset


def decode_query(data: bytes, reads: CipherSpec | None, block_size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The RGB image (H, W, 3 uint8) of a query for a model that reads images of ``reads`` in blocks of
    ``block_size``: checked (:func:`contract.query.check_query`), decoded and padded to whole blocks (a plain
    image may be of any size); and the size its map is cropped to (the image's before the key-holder or this
    padded it). QueryRefused saying why not."""
    import cv2

    query = check_query(data, reads, block_size)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    if image is None:
        raise QueryRefused(QueryRefused.CORRUPT, "not a readable image")
    height, width = image.shape[:2]
    if height % block_size or width % block_size:  # a plain image: black at the bottom and right, as the owner pads
        image = np.pad(image, ((0, -height % block_size), (0, -width % block_size), (0, 0)))
    return image, query.size


class Segmenter:
    """The model at ``checkpoint``, loaded once on ``device`` (check it first: :func:`check_model`)."""

    def __init__(self, cfg, checkpoint: str, device: str) -> None:
        from training.plugin import register

        register()
        from mmengine.runner import load_checkpoint
        from mmseg.apis import init_model

        self.block_size: int = cfg.model.backbone.patch_size
        self.window = tuple(cfg.model.test_cfg.get("crop_size") or (4 * self.block_size,) * 2)
        self.device = device
        self.model = init_model(cfg, device=device)  # not init_model's checkpoint: it expects mmengine's meta in every file
        load_checkpoint(self.model, checkpoint, map_location=device)

    def segment(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The trainId map (H, W uint8) of each RGB image (H, W, 3 uint8, all of one size), in one forward pass."""
        return [result.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8) for result in self._forward(images)]

    def batches_exactly(self, batch_size: int) -> bool:
        """Whether ``batch_size`` random images of one window, segmented together, get exactly the logits each
        gets alone on this device."""
        import torch

        generator = torch.Generator().manual_seed(0)
        images = [torch.randint(0, 256, (*self.window, 3), dtype=torch.uint8, generator=generator).numpy() for _ in range(batch_size)]
        together = self._forward(images)
        return all(
            torch.equal(self._forward([image])[0].seg_logits.data, result.seg_logits.data)
            for image, result in zip(images, together)
        )

    def _forward(self, images: Sequence[np.ndarray]) -> list:
        """mmseg's test step on images of one size: their SegDataSamples."""
        import torch
        from mmseg.structures import SegDataSample

        shape = images[0].shape[:2]
        data = dict(
            inputs=[torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1) for image in images],
            data_samples=[SegDataSample(metainfo=dict(img_shape=shape, ori_shape=shape)) for _ in images],
        )
        with torch.no_grad(), _without_onednn():
            return self.model.test_step(data)


@contextmanager
def _without_onednn():
    """oneDNN off for a forward pass (see the module docstring), as it was afterwards."""
    import torch

    enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = enabled


@dataclass(frozen=True)
class LabelMaps:
    """A dataset's classes, by class index: colour (RGB; black for 255 and anything unknown) and the dataset's
    own label value (for 255 and anything unknown: the value its label mapping ignores, 'unlabeled')."""

    classes: tuple[str, ...]
    colours: np.ndarray  # (256, 3) uint8
    label_ids: np.ndarray  # (256,) uint8

    LEGEND_ROWS: ClassVar[int] = 40  # rows of a legend column: ADE20K's 150 classes in four columns

    @classmethod
    def of(cls, dataset: DatasetDescription) -> LabelMaps:
        colours = np.zeros((256, 3), np.uint8)
        colours[: len(dataset.palette)] = dataset.palette
        label_ids = np.full(256, dataset.unlabelled_value(), np.uint8)
        label_ids[: len(dataset.classes)] = dataset.raw_values()
        return cls(tuple(dataset.classes), colours, label_ids)

    def png(self, train_ids: np.ndarray, fmt: str) -> bytes:
        """A class index map as a PNG of the format ``fmt`` (one of :data:`FORMATS`)."""
        import cv2

        if fmt == "labelIds":
            image = self.label_ids[train_ids]
        elif fmt == "color":
            image = cv2.cvtColor(self.colours[train_ids], cv2.COLOR_RGB2BGR)
        else:
            image = train_ids
        return _png(image)

    def legend(self) -> bytes:
        """A PNG of the classes' colours and names, one row each, in columns of :attr:`LEGEND_ROWS`."""
        import cv2

        row, column = 24, 200
        rows = min(len(self.classes), self.LEGEND_ROWS)
        legend = np.full((row * rows, column * -(-len(self.classes) // self.LEGEND_ROWS), 3), 255, np.uint8)
        for i, name in enumerate(self.classes):
            y, x = i % self.LEGEND_ROWS * row, i // self.LEGEND_ROWS * column
            legend[y + 2 : y + row - 2, x + 4 : x + 40] = self.colours[i]
            cv2.putText(legend, name, (x + 48, y + row - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        return _png(cv2.cvtColor(legend, cv2.COLOR_RGB2BGR))


def _png(image: np.ndarray) -> bytes:
    import cv2

    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"OpenCV cannot encode an image of shape {image.shape} as PNG")
    return encoded.tobytes()
