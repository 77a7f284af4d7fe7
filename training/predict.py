"""Segment query images in the cloud (no key).

``python -m training.predict CONFIG CHECKPOINT --bundle LOCATION --inputs PATH... --out DIR``

Inputs are PNG (or, for a plain model, JPEG) files, folders of them, or glob patterns. A model trained on
encrypted data segments encrypted queries: the user's ``--stage encrypt-query`` names the key in each
file, and a query of another key, or a plain image, is refused rather than segmented into noise; a plain
model takes plain images (and needs no bundle: the owner's model, back from decrypt-weights, on the owner's
own images). An encrypted query was padded to multiples of the patch size by the user, who named its size
before padding in the file; a plain one is padded here. The classes are the bundle's dataset's
(Cityscapes' without a bundle). Per input, at the input's size before padding, one folder per kind:
``trainIds/<name>_trainIds.png`` (class indices, 255 where nothing is predicted),
``labelIds/<name>_labelIds.png`` (the dataset's own label values: Cityscapes' labelIds, which
cityscapesscripts' evaluation reads as the folder is; ADE20K's 1-150) and ``color/<name>_color.png`` (the
dataset's palette); ``--legend`` adds ``legend.png``, the palette's colours and class names.
"""

from __future__ import annotations

import argparse
import glob
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from contract.errors import UserError, run_reporting
from contract.formats import QUERY_SIZE_TAG, QUERY_TAG, CipherSpec, DatasetDescription, describe_cipher, padded_size
from contract.outputs import OutputKind, write_file
from training.config import add_common_arguments

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

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
    """The image files named by files, folders (their PNG and JPEG files) and glob patterns, in order, each once."""
    found: dict[Path, None] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(item) if Path(p).is_file())
        if not matches:
            raise UserError(f"{item}: no such file, and no image file matches it")
        found.update(dict.fromkeys(matches))
    return list(found)


def read_query(path: Path, patch: int) -> tuple[np.ndarray, CipherSpec | None, tuple[int, int]]:
    """An RGB query image padded to multiples of ``patch``, the cipher it says it is encrypted with (None:
    it says nothing), and its size before padding (the one its file names, or its own)."""
    import cv2
    from PIL import Image

    try:
        with Image.open(path) as image:
            tags = image.text if image.format == "PNG" else {}
            cipher_tag, size_tag = tags.get(QUERY_TAG), tags.get(QUERY_SIZE_TAG)
    except Image.DecompressionBombError:
        raise UserError(f"{path}: larger than cipherseg decodes") from None
    except OSError:
        raise UserError(f"{path}: not a readable image") from None
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise UserError(f"{path}: not a readable image")
    cipher = CipherSpec.parse(cipher_tag, f"{path} (its {QUERY_TAG} tag)") if cipher_tag else None
    shape = bgr.shape[:2]
    size = _size(size_tag, shape, patch, path) if size_tag else shape
    if shape != padded_size(shape, patch):
        if cipher is not None:  # padding is the user's, before encrypting: here it would not be black
            raise UserError(f"{path}: size {shape[0]}x{shape[1]} is not a multiple of the patch size {patch}")
        bgr = np.pad(bgr, ((0, -shape[0] % patch), (0, -shape[1] % patch), (0, 0)))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), cipher, size


def _size(tag: str, shape: tuple[int, int], patch: int, path: Path) -> tuple[int, int]:
    """The size before padding a query's tag names: at most its own, by less than a patch on each side."""
    try:
        size = tuple(int(side) for side in tag.split("x"))
    except ValueError:
        size = ()
    if len(size) != 2 or any(not 0 < side <= own < side + patch for side, own in zip(size, shape)):
        raise UserError(f"{path}: its {QUERY_SIZE_TAG} tag {tag[:20]!r} is not the size of the image before padding")
    return size


def predict(
    cfg,
    checkpoint: str,
    inputs: Iterable[Path],
    out: str | Path,
    *,
    bundle: CipherSpec | None,
    dataset: DatasetDescription,
    device: str = "cpu",
    legend: bool = False,
) -> list[Path]:
    """Segment every input with the model at ``checkpoint``; write the label maps to ``out``, one folder per
    kind (``trainIds/``, ``labelIds/``, ``color/``: each a folder cityscapesscripts' evaluation reads as
    it is), and return their paths.

    Refuses a model that does not read the data of the bundle (whose cipher is ``bundle``; None for a
    plain model used without a bundle) or predicts another number of classes than ``dataset`` has, and any
    query that is not of the model's cipher, before anything is written.
    """
    import cv2
    from mmengine.runner import load_checkpoint
    from mmseg.apis import init_model

    from training.hooks import check_classes
    from training.progress import Progress
    from training.provenance import check_reads, model_reads

    reads = model_reads(checkpoint).cipher
    where = f"the bundle {cfg.bundle}" if cfg.get("bundle") else "a run without a bundle"
    check_reads(checkpoint, reads, bundle, where)
    patch = cfg.model.backbone.patch_size
    queries = []
    for path in inputs:
        image, cipher, size = read_query(path, patch)
        if cipher != reads:
            raise UserError(
                f"{path}: {'a query of ' + describe_cipher(cipher) if cipher else 'names no key (not made by --stage encrypt-query)'}"
                f", but the model reads images of {describe_cipher(reads)}"
            )
        queries.append((path, image, size))

    model = init_model(cfg, device=device)  # not init_model's checkpoint: it expects mmengine's meta in every file
    check_classes(model, dataset, where if cfg.get("bundle") else "Cityscapes (no --bundle names the dataset)")
    load_checkpoint(model, checkpoint, map_location=device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    colours, label_ids = _palette(dataset)
    written = []
    with Progress(len(queries), "predict") as progress:
        for path, image, (height, width) in queries:
            train_ids = segment(model, image)[:height, :width]  # without the padding
            for suffix, result in (
                ("trainIds", train_ids),
                ("labelIds", label_ids[train_ids]),
                ("color", cv2.cvtColor(colours[train_ids], cv2.COLOR_RGB2BGR)),
            ):
                target = out / suffix / f"{path.stem}_{suffix}.png"
                written.append(write_file(target, cv2.imencode(".png", result)[1].tobytes(), OutputKind.PNG))
            progress.update()
    if legend:
        written.append(_write_legend(out / "legend.png", dataset.classes, colours))
    return written


def _palette(dataset: DatasetDescription) -> tuple[np.ndarray, np.ndarray]:
    """Class index -> RGB colour (black for 255 and anything unknown), and class index -> the dataset's own
    label value (its ignored value for 255: what the owner's label mapping sends to 255, else 0)."""
    colours = np.zeros((256, 3), np.uint8)
    colours[: len(dataset.palette)] = dataset.palette
    lookup = dataset.lookup()
    label_ids = np.full(256, next((raw for raw in range(256) if lookup[raw] == dataset.ignore_index), 0), np.uint8)
    label_ids[: len(dataset.classes)] = dataset.raw_values()
    return colours, label_ids


LEGEND_ROWS = 40  # rows of a legend column: ADE20K's 150 classes in four columns


def _write_legend(path: Path, classes: Sequence[str], colours: np.ndarray) -> Path:
    """The classes' colours and names, one row each, in columns of LEGEND_ROWS."""
    import cv2

    row, column = 24, 200
    rows = min(len(classes), LEGEND_ROWS)
    legend = np.full((row * rows, column * -(-len(classes) // LEGEND_ROWS), 3), 255, np.uint8)
    for i, name in enumerate(classes):
        y, x = i % LEGEND_ROWS * row, i // LEGEND_ROWS * column
        legend[y + 2 : y + row - 2, x + 4 : x + 40] = colours[i]
        cv2.putText(legend, name, (x + 48, y + row - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
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

    from contract.datasets import cityscapes
    from training.verified_store import bundle_attributes

    device = select_device(args.device)
    inputs = expand_inputs(args.inputs)
    cfg = config_from_arguments(args)
    # Without a bundle only a plain model runs (the owner's, back from decrypt-weights, on plain images).
    bundle, dataset = None, cityscapes()
    if args.bundle:
        verified = resolve_config(cfg).verified
        bundle, dataset = verified.manifest.cipher, bundle_attributes(verified, cfg.get("storage_options")).dataset
    predict(cfg, args.checkpoint, inputs, args.out, bundle=bundle, dataset=dataset, device=device, legend=args.legend)
    print(f"{len(inputs)} label maps written to {args.out}")


if __name__ == "__main__":
    sys.exit(main())
