"""Every dataset layout walked end to end with each key option: ``python -m checks.datasets``.

For each layout (Cityscapes with train_extra, ADE20K, Pascal VOC, the owner's own described in a
``[dataset]`` table) and key option (the plain block shuffle, and with negative-positive), through the
command lines as a user runs them: the owner generates the sample, makes a key, encrypts the tree and
the checkpoint and publishes; the cloud verifies, trains the tiny SETR-Naive config of the dataset
(``training/configs/tiny/`` for Cityscapes, ``tiny/ade20k/`` for the 150 ADE20K classes, the same model
with the dataset's classes otherwise) for 2 iterations, tests it and segments a user's encrypted query of
the validation split (of its own size, JPEG where the layout's images are); back to the owner, the model
is exported and decrypted. Passes if the decrypted store gives back every image it was made from (the
owner's padding cut off), the maps are at the query's own size, and the owner's plain model predicts on
the plain query exactly what the cloud's model predicted on the encrypted one. About a minute a walk.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from experiments.harness import CONFIGS, run

LAYOUTS = ("cityscapes", "ade20k", "voc", "custom")
ARCH = "vit_tiny_patch16_224"  # the tiny configs' backbone
ITERS = 2
# (the counts of the sample's splits, its size, a validation image of it: the query)
SAMPLES = {
    "cityscapes": ("2,2,1,2", "64x96", "leftImg8bit/val/frankfurt/frankfurt_000000_000019_leftImg8bit.png"),
    "ade20k": ("3,2", "96x128", "images/validation/ADE_val_00000001.jpg"),
    "voc": ("3,2", "96x128", "JPEGImages/2007_100000.jpg"),
    "custom": ("3,2", "96x128", "img_dir/val/street_0000.png"),
}
Step = Callable[[str, Sequence[str]], None]


@dataclass(frozen=True)
class Walked:
    """What a walk measured."""

    maps_sized: bool  # the cloud's maps are at the query's own size (its padding cropped off)
    differing: int  # pixels where the owner's plain model on the plain query differs from the cloud's map
    decrypted: bool  # the decrypted store gives back every image it was made from

    @property
    def passed(self) -> bool:
        return self.maps_sized and self.decrypted and self.differing == 0


def subprocess_step(module: str, argv: Sequence[str]) -> None:
    """One command line in its own process, as a user runs it."""
    run(sys.executable, "-m", module, *argv)


def in_process_step(module: str, argv: Sequence[str]) -> None:
    """One command line's ``main`` in this process (the tests: no interpreter and torch start-up per step)."""
    code = importlib.import_module(module).main([str(arg) for arg in argv])
    if code:
        raise RuntimeError(f"{module} {' '.join(map(str, argv))} failed ({code})")


def config_of(layout: str) -> Path:
    return CONFIGS / "tiny" / ("ade20k/" if layout == "ade20k" else "") / "setr_tiny_naive_proposed.py"


def walk(layout: str, negative_positive: bool, work: Path, step: Step = subprocess_step, scheduler: str | None = None) -> Walked:
    """One layout and key option, owner to cloud and back (see the module docstring); what was measured."""
    counts, size, query = SAMPLES[layout]
    raw, owner, bundle = work / "raw", work / "owner", work / "bundle"
    key, signer, store = owner / "key.json", owner / "signer.json", owner / "dataset.zarr"
    weights, encrypted = owner / f"{ARCH}.safetensors", owner / "backbone.safetensors"
    dataset = ["--config", raw / "dataset.toml"] if layout == "custom" else ["--dataset", layout]
    owner_step = lambda *args: step("pipeline.run", [str(a) for a in args])  # noqa: E731
    owner_step("--stage", "sample", "--dataset", layout, "--raw", raw, "--sample-counts", counts, "--sample-size", size,
               "--arch", ARCH, "--weights", weights)  # fmt: skip
    owner_step("--stage", "keygen", "--key", key, *(["--negative-positive"] if negative_positive else []))
    cluster = ["--scheduler", scheduler] if scheduler else ["--workers", "1"]
    owner_step("--stage", "encrypt", *dataset, "--raw", raw, "--key", key, "--store", store, "--shard-size", "2", *cluster)
    owner_step("--stage", "encrypt-weights", "--key", key, "--weights", weights, "--arch", ARCH, "--encrypted-weights", encrypted)
    owner_step("--stage", "publish", "--key", key, "--store", store, "--encrypted-weights", encrypted, "--bundle", bundle)
    owner_step("--stage", "verify", "--bundle", bundle, "--key", key)

    config, cloud = config_of(layout), ["--bundle", bundle, "--signer", signer]
    if layout in ("voc", "custom"):  # the same model for the dataset's own classes
        classes = 21 if layout == "voc" else 5
        config = work / "config.py"
        config.write_text(f"_base_ = ['{config_of(layout)}']\nmodel = dict(decode_head=dict(num_classes={classes}), "
                          f"auxiliary_head=[dict(aux, num_classes={classes}) for aux in _base_.model.auxiliary_head])\n")  # fmt: skip
    step("pipeline.run", ["--stage", "verify", *map(str, cloud)])
    step("training.train", [str(config), *map(str, cloud), "--work-dir", str(work / "cloud"), "--cfg-options", f"train_cfg.max_iters={ITERS}"])
    checkpoint = work / "cloud" / f"iter_{ITERS}.pth"
    step("training.test", [str(config), str(checkpoint), *map(str, cloud), "--work-dir", str(work / "cloud"), "--out", str(work / "metrics.json")])
    owner_step("--stage", "encrypt-query", "--key", key, "--query", raw / query, "--out", work / "queries")
    step("training.predict", [str(config), str(checkpoint), *map(str, cloud), "--inputs", str(work / "queries"), "--out",
                              str(work / "maps"), "--legend"])  # fmt: skip
    step("training.export", [str(checkpoint), "--out", str(work / "model.safetensors")])
    owner_step("--stage", "decrypt-weights", "--key", key, "--checkpoint", work / "model.safetensors", "--out", work / "plain.safetensors")
    owner_step("--stage", "decrypt", "--key", key, "--store", store, "--out", work / "decrypted")

    plain = cv2.imread(str(raw / query), cv2.IMREAD_COLOR)
    name = Path(query).stem
    cloud_map = cv2.imread(str(work / "maps" / "trainIds" / f"{name}_trainIds.png"), cv2.IMREAD_UNCHANGED)
    owner_map = plain_prediction(config, work / "plain.safetensors", plain[..., ::-1])
    return Walked(cloud_map.shape == plain.shape[:2], int((owner_map != cloud_map).sum()), decrypted_equal(raw, work / "decrypted", layout))


def plain_prediction(config: Path, checkpoint: Path, image: np.ndarray) -> np.ndarray:
    """The class indices the owner's decrypted model predicts on a plain RGB image (padded, then cropped)."""
    from mmengine.config import Config

    from training.inference import Segmenter

    model = Segmenter(Config.fromfile(str(config)), str(checkpoint), "cpu")
    height, width = image.shape[:2]
    padded = np.pad(image, ((0, -height % 16), (0, -width % 16), (0, 0)))
    return model.segment([padded])[0][:height, :width]


def decrypted_equal(raw: Path, decrypted: Path, layout: str) -> bool:
    """Whether every decrypted PNG is the image its source file decodes to (as OpenCV decodes it)."""
    files = sorted(decrypted.rglob("*.png"))
    folder = raw / {"cityscapes": "leftImg8bit", "ade20k": "images", "voc": "JPEGImages", "custom": "img_dir"}[layout]
    sources = {path.stem.removesuffix("_leftImg8bit"): path for path in folder.rglob("*") if path.suffix in (".png", ".jpg")}
    return bool(files) and all(
        np.array_equal(cv2.imread(str(path)), cv2.imread(str(sources[path.stem.removesuffix("_leftImg8bit")]), cv2.IMREAD_COLOR))
        for path in files
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m checks.datasets", description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="keep the walks here, a new directory (default: a temporary one)")
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    args = parser.parse_args(argv)
    if args.work and args.work.exists() and any(args.work.iterdir()):
        print(f"{args.work} is not empty: give a new --work directory", file=sys.stderr)
        return 2
    passed = True
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        print("| layout | key option | seconds | maps at the query's size | differing pixels (owner's plain model vs cloud) | decrypted store = images |")
        print("|---|---|---|---|---|---|")
        for layout in args.layouts:
            for negative_positive in (False, True):
                option = "negative-positive" if negative_positive else "block shuffle"
                start = time.perf_counter()
                found = walk(layout, negative_positive, work / f"{layout}-{option.replace(' ', '-')}")
                passed &= found.passed
                seconds = time.perf_counter() - start
                print(f"| {layout} | {option} | {seconds:.0f} | {found.maps_sized} | {found.differing} | {found.decrypted} |", flush=True)
    print("PASSED" if passed else "FAILED")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
