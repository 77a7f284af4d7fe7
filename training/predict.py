"""Segment query images in the cloud (no key).

``python -m training.predict CONFIG CHECKPOINT --bundle LOCATION --inputs PATH... --out DIR``

Inputs are PNG files, folders of them, or glob patterns. A model trained on encrypted data segments
encrypted queries: the user's ``--stage encrypt-query`` names the key in each file (and, for an image
it padded to multiples of the patch size, its size before padding), and a query of another key, or a
plain image, is refused rather than segmented into noise; a plain model takes plain images of any size,
padded here as the owner pads (and needs no bundle: the owner's model, back from decrypt-weights, on
the owner's own images). The classes are the bundle's dataset's (Cityscapes' without a bundle). Per
input, at its size before padding, one folder per kind: ``trainIds/<name>_trainIds.png`` (class
indices, 255 where nothing is predicted), ``labelIds/<name>_labelIds.png`` (the dataset's own label
values: Cityscapes' labelIds, which cityscapesscripts' evaluation reads as the folder is; ADE20K's
1-150) and ``color/<name>_color.png`` (the dataset's palette); ``--legend`` adds ``legend.png``, the
palette's colours and class names. What a query must be is contract.query's; the model's provenance
and every query are checked before mmseg loads (a refusal takes seconds), then the bundle.
"""

from __future__ import annotations

import argparse
import glob
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from contract.errors import UserError, quoted, run_reporting
from contract.outputs import OutputKind, write_file
from contract.query import QueryRefused, check_query
from training.config import add_common_arguments


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


def predict(
    cfg,
    checkpoint: str,
    inputs: Iterable[Path],
    out: str | Path,
    *,
    device: str = "auto",
    legend: bool = False,
) -> list[Path]:
    """Segment every input with the model at ``checkpoint``; write the label maps to ``out``, one folder per
    kind (``trainIds/``, ``labelIds/``, ``color/``: each a folder cityscapesscripts' evaluation reads as
    it is), and return their paths.

    Refuses any query that is not of the model's cipher, and a model that does not read the data of the
    bundle ``cfg`` names (without a bundle: a model that is not plain) or predicts another number of
    classes than its dataset has, before anything is written. ``device``: as :func:`training.config.select_device` takes it.
    """
    from training.config import select_device
    from training.inference import FORMATS, LabelMaps, Segmenter, check_model, decode_query
    from training.provenance import model_reads

    reads = model_reads(checkpoint).cipher
    block_size = cfg.model.backbone.patch_size
    inputs = list(inputs)
    for path in inputs:
        _refusing(path, lambda data: check_query(data, reads, block_size))
    dataset = check_model(cfg, checkpoint, reads)

    from training.progress import Progress  # mmseg's: after the checks

    segmenter = Segmenter(cfg, checkpoint, select_device(device))
    maps = LabelMaps.of(dataset)
    out = Path(out)
    written = []
    with Progress(len(inputs), "predict") as progress:
        for path in inputs:
            image, (height, width) = _refusing(path, lambda data: decode_query(data, reads, block_size))
            (train_ids,) = segmenter.segment([image])
            train_ids = train_ids[:height, :width]  # without the key-holder's padding
            for fmt in FORMATS:
                written.append(write_file(out / fmt / f"{path.stem}_{fmt}.png", maps.png(train_ids, fmt), OutputKind.PNG))
            progress.update()
    if legend:
        written.append(write_file(out / "legend.png", maps.legend(), OutputKind.PNG))
    return written


def _refusing(path: Path, use):
    """``use`` of the bytes of the query at ``path``; a refusal is one line naming the file."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"{quoted(path)}: cannot read ({error.strerror})") from None
    try:
        return use(data)
    except QueryRefused as error:
        raise UserError(f"{quoted(path)}: {error}") from None


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
    from training.config import config_from_arguments

    inputs = expand_inputs(args.inputs)
    predict(config_from_arguments(args), args.checkpoint, inputs, args.out, device=args.device, legend=args.legend)
    print(f"the maps of {len(inputs)} {'image' if len(inputs) == 1 else 'images'} written to {args.out}")


if __name__ == "__main__":
    sys.exit(main())
