"""Segment encrypted query images in the cloud (no key): ``python -m training.predict CONFIG CHECKPOINT
--bundle LOCATION --inputs IMAGE... --out DIR``.

Writes ``<name>_trainIds.png`` (Cityscapes trainIds) and ``<name>_color.png`` (the Cityscapes
palette) per input, at the input's size. Inputs are image files in RGB (as the user's encryption
writes them); their sides must be multiples of the patch size, or the block structure is lost.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import torch
from mmseg.apis import init_model
from mmseg.datasets import CityscapesDataset
from mmseg.structures import SegDataSample

from training.config import add_common_arguments, load_config, parse_options


def segment(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """The trainId map (H, W uint8) of one RGB image (H, W, 3 uint8)."""
    shape = image.shape[:2]
    data = dict(
        inputs=[torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)],
        data_samples=[SegDataSample(metainfo=dict(img_shape=shape, ori_shape=shape))],
    )
    with torch.no_grad():
        result = model.test_step(data)[0]
    return result.pred_sem_seg.data[0].numpy().astype(np.uint8)


def predict(cfg, checkpoint: str, inputs: Iterable[str | Path], out: str | Path) -> list[Path]:
    """Segment every input with the model at ``checkpoint``; write the label maps to ``out``, return their paths."""
    model = init_model(cfg, checkpoint, device="cpu")
    patch = cfg.model.backbone.patch_size
    colours = np.zeros((256, 3), np.uint8)  # black for 255 (ignored) and anything unknown
    colours[: len(CityscapesDataset.METAINFO["palette"])] = CityscapesDataset.METAINFO["palette"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in map(Path, inputs):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{path}: not a readable image")
        if bgr.shape[0] % patch or bgr.shape[1] % patch:
            raise ValueError(f"{path}: size {bgr.shape[:2]} is not a multiple of the patch size {patch}")
        labels = segment(model, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        for suffix, image in (("trainIds", labels), ("color", cv2.cvtColor(colours[labels], cv2.COLOR_RGB2BGR))):
            target = out / f"{path.stem}_{suffix}.png"
            cv2.imwrite(str(target), image)
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.predict", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the config the model was trained with")
    parser.add_argument("checkpoint", help="the fine-tuned (encrypted) model")
    parser.add_argument("--inputs", nargs="+", required=True, help="encrypted query images")
    parser.add_argument("--out", required=True, help="directory for the label maps")
    add_common_arguments(parser)
    args = parser.parse_args(argv)

    cfg = load_config(
        args.config, args.bundle, cfg_options=args.cfg_options, storage_options=parse_options(args.storage_options)
    )
    try:
        written = predict(cfg, args.checkpoint, args.inputs, args.out)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"{len(written) // 2} label maps written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
