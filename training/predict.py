"""Segment query images in the cloud (no key).

``python -m training.predict CONFIG CHECKPOINT --bundle LOCATION --inputs PATH... --out DIR``

Inputs are PNG files, folders of them, or glob patterns. A model trained on encrypted data segments
encrypted queries: the user's ``--stage encrypt-query`` names the key in each file, and a query of
another key, or a plain image, is refused rather than segmented into noise; a plain model takes
plain images (and needs no bundle: the owner's model, back from decrypt-weights, on the owner's own
images). Their sides must be multiples of the patch size. Per input, at the input's size, one folder
per kind: ``trainIds/<name>_trainIds.png`` (Cityscapes trainIds, 255 where nothing is predicted),
``labelIds/<name>_labelIds.png`` (Cityscapes labelIds: cityscapesscripts' evaluation reads the folder
as it is) and ``color/<name>_color.png`` (the Cityscapes palette); ``--legend`` adds ``legend.png``,
the palette's colours and class names.
"""

from __future__ import annotations

import argparse
import glob
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from contract.errors import UserError, run_reporting
from contract.formats import QUERY_TAG, CipherSpec, describe_cipher
from contract.outputs import OutputKind, write_file
from training.config import add_common_arguments

def segment(model, image: np.ndarray) -> np.ndarray:
    """The trainId map (H, W uint8) of one RGB image (H, W, 3 uint8)."""
    import torch
    from mmseg.structures import SegDataSample

    shape = image.shape[:2]
    data = dict(
        inputs=[torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)],
        data_samples=[SegDataSample(metainfo=dict(img_shape=shape, ori_shape=shape))],
    )
    with torch.no_grad():
        result = model.test_step(data)[0]
    return result.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """The PNG files named by files, folders (their ``*.png``) and glob patterns, in order, each once."""
    found: dict[Path, None] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            matches = sorted(path.glob("*.png"))
        elif path.is_file():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(item) if Path(p).is_file())
        if not matches:
            raise UserError(f"{item}: no such file, and no PNG file matches it")
        found.update(dict.fromkeys(matches))
    return list(found)


def read_query(path: Path, patch: int) -> tuple[np.ndarray, CipherSpec | None]:
    """An RGB query image and the cipher it says it is encrypted with (None: it says nothing)."""
    import cv2
    from PIL import Image

    try:
        with Image.open(path) as png:
            tag = png.text.get(QUERY_TAG) if png.format == "PNG" else None
    except Image.DecompressionBombError:
        raise UserError(f"{path}: larger than cipherseg decodes") from None
    except OSError:
        raise UserError(f"{path}: not a readable image") from None
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise UserError(f"{path}: not a readable image")
    if bgr.shape[0] % patch or bgr.shape[1] % patch:
        raise UserError(f"{path}: size {bgr.shape[0]}x{bgr.shape[1]} is not a multiple of the patch size {patch}")
    cipher = CipherSpec.parse(tag, f"{path} (its {QUERY_TAG} tag)") if tag else None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), cipher


def predict(
    cfg,
    checkpoint: str,
    inputs: Iterable[Path],
    out: str | Path,
    *,
    bundle: CipherSpec | None,
    device: str = "cpu",
    legend: bool = False,
) -> list[Path]:
    """Segment every input with the model at ``checkpoint``; write the label maps to ``out``, one folder per
    kind (``trainIds/``, ``labelIds/``, ``color/``: each a folder cityscapesscripts' evaluation reads as
    it is), and return their paths.

    Refuses a model that does not read the data of the bundle (whose cipher is ``bundle``; None for a
    plain model used without a bundle), and any query that is not of the model's cipher, before anything
    is written.
    """
    import cv2
    from mmengine.runner import load_checkpoint
    from mmseg.apis import init_model

    from training.progress import Progress
    from training.provenance import check_reads, model_reads

    reads = model_reads(checkpoint).cipher
    check_reads(checkpoint, reads, bundle, f"the bundle {cfg.bundle}" if cfg.get("bundle") else "a run without a bundle")
    patch = cfg.model.backbone.patch_size
    queries = []
    for path in inputs:
        image, cipher = read_query(path, patch)
        if cipher != reads:
            raise UserError(
                f"{path}: {'a query of ' + describe_cipher(cipher) if cipher else 'names no key (not made by --stage encrypt-query)'}"
                f", but the model reads images of {describe_cipher(reads)}"
            )
        queries.append((path, image))

    model = init_model(cfg, device=device)  # not init_model's checkpoint: it expects mmengine's meta in every file
    load_checkpoint(model, checkpoint, map_location=device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    colours, label_ids = _palette()
    written = []
    with Progress(len(queries), "predict") as progress:
        for path, image in queries:
            train_ids = segment(model, image)
            for suffix, result in (
                ("trainIds", train_ids),
                ("labelIds", label_ids[train_ids]),
                ("color", cv2.cvtColor(colours[train_ids], cv2.COLOR_RGB2BGR)),
            ):
                target = out / suffix / f"{path.stem}_{suffix}.png"
                written.append(write_file(target, cv2.imencode(".png", result)[1].tobytes(), OutputKind.PNG))
            progress.update()
    if legend:
        written.append(_write_legend(out / "legend.png", colours))
    return written


def _palette() -> tuple[np.ndarray, np.ndarray]:
    """trainId -> RGB colour (black for 255 and anything unknown), and trainId -> labelId (0 'unlabeled')."""
    from cityscapesscripts.helpers.labels import trainId2label
    from mmseg.datasets import CityscapesDataset

    colours = np.zeros((256, 3), np.uint8)
    colours[: len(CityscapesDataset.METAINFO["palette"])] = CityscapesDataset.METAINFO["palette"]
    label_ids = np.zeros(256, np.uint8)
    for train_id, label in trainId2label.items():
        if 0 <= train_id < 255:
            label_ids[train_id] = label.id
    return colours, label_ids


def _write_legend(path: Path, colours: np.ndarray) -> Path:
    """The 19 classes' colours and names, one row each."""
    import cv2
    from mmseg.datasets import CityscapesDataset

    classes = CityscapesDataset.METAINFO["classes"]
    row = 24
    legend = np.full((row * len(classes), 200, 3), 255, np.uint8)
    for i, name in enumerate(classes):
        legend[i * row + 2 : (i + 1) * row - 2, 4:40] = colours[i]
        cv2.putText(legend, name, (48, (i + 1) * row - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return write_file(path, cv2.imencode(".png", cv2.cvtColor(legend, cv2.COLOR_RGB2BGR))[1].tobytes(), OutputKind.PNG)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.predict", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the config the model was trained with")
    parser.add_argument("checkpoint", help="the fine-tuned model (.pth from training, or a .safetensors export)")
    parser.add_argument("--inputs", nargs="+", required=True, help="query images: PNG files, folders, glob patterns")
    parser.add_argument("--out", required=True, help="directory for the label maps")
    parser.add_argument("--legend", action="store_true", help="also write legend.png (class colours and names)")
    add_common_arguments(parser, bundle_required=False)
    args = parser.parse_args(argv)
    return run_reporting(lambda: run_predict(args))


def run_predict(args: argparse.Namespace) -> None:
    from training.plugin import register

    register()
    from training.config import config_from_arguments, select_device
    from training.resolve import resolve_config

    device = select_device(args.device)
    inputs = expand_inputs(args.inputs)
    cfg = config_from_arguments(args)
    # Without a bundle only a plain model runs (the owner's, back from decrypt-weights, on plain images).
    bundle = resolve_config(cfg).verified.manifest.cipher if args.bundle else None
    predict(cfg, args.checkpoint, inputs, args.out, bundle=bundle, device=device, legend=args.legend)
    print(f"{len(inputs)} label maps written to {args.out}")


if __name__ == "__main__":
    sys.exit(main())
