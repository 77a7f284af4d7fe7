"""The paper's configuration at full size on a CPU: ``python -m checks.full_size`` (``make check-full-size``).

Trains the ViT-B/16 MLA config as it is (768x768 crops, the real architecture, SETR-MLA's heads, SGD
at lr 0.002 with heads at 10x, poly schedule) from a random-init ViT-B/16 for 2 iterations, as
proposed (encrypted bundle) and as baseline (plain bundle), on a generated sample of one training
and one validation image of 1024x2048; then each model segments its bundle's validation image with
the config's slide inference (768x768 windows, stride 512). Passes if every loss agrees to 1e-5
(relative) and the class scores to 1e-4 of their largest magnitude (the test suite's tolerance for
predictions), so that the label maps can differ only where two classes tie within that. Measured: the
untrained models' backbones agree to 1e-6, the trained models' scores to 3e-5 to 5e-5 (two SGD steps
from a random init amplify float rounding), the losses to 1e-6. 3.5 minutes on 2 idle cores (6 on a
busy machine), 7 GB of memory.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from checks.runs import METHODS, loss_difference, owner_bundles, train
from experiments.harness import CONFIGS

CONFIG = "setr_vit-b16_mla_8xb1-80k_cityscapes-768x768_{method}.py"
ARCH, SIZE, COUNTS, ITERS = "vit_base_patch16_384", "1024x2048", "1,1,0", 2
TOLERANCE, SCORES_TOLERANCE = 1e-5, 1e-4


def slide_scores(config: Path, checkpoint: Path, bundle: Path) -> np.ndarray:
    """The class scores (classes, H, W) of the bundle's first validation image, inferred as the config says."""
    from training.plugin import register

    register()  # mmseg on mmcv-lite
    import torch
    import zarr
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    cfg = Config.fromfile(config)
    init_default_scope("mmseg")
    model = revert_sync_batchnorm(MODELS.build(dict(cfg.model, backbone=dict(cfg.model.backbone, init_cfg=None))))
    # The check's own checkpoint, just written by training.train: trusted.
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"])
    image = zarr.open_group(str(bundle / "dataset.zarr"), mode="r")["val/images"][0]
    shape = image.shape[:2]
    data = dict(
        inputs=[torch.from_numpy(image).permute(2, 0, 1)],
        data_samples=[SegDataSample(metainfo=dict(img_shape=shape, ori_shape=shape))],
    )
    with torch.no_grad():
        return model.eval().test_step(data)[0].seg_logits.data.numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m checks.full_size", description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="keep bundles and runs here, a new directory (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.work and args.work.exists() and any(args.work.iterdir()):
        print(f"{args.work} is not empty: give a new --work directory", file=sys.stderr)
        return 2
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        print(f"owner: {SIZE} sample ({COUNTS} train,val,test images), random-init {ARCH}, key, bundles", flush=True)
        bundles, signer = owner_bundles(work, ARCH, SIZE, COUNTS)
        runs, scores = {}, {}
        for method in METHODS:
            config = CONFIGS / CONFIG.format(method=method)
            print(f"cloud: {config.name}, {ITERS} iterations, then slide inference", flush=True)
            runs[method] = train(config, bundles[method], signer, work / method, ITERS, validate=False)
            scores[method] = slide_scores(config, runs[method].checkpoint, bundles[method])
    for method, r in runs.items():
        print(f"{method:9s} loss {' '.join(f'{v:.6f}' for v in r.losses['loss'])}, "
              f"{r.seconds.mean():.1f} s/iteration, training command {r.wall:.0f} s")  # fmt: skip
    losses = float(loss_difference(runs["proposed"], runs["baseline"]).max())
    count = len(runs["baseline"].losses)
    print(f"largest relative difference of the {count} losses: {losses:.1e} (tolerance {TOLERANCE:.0e})")

    proposed, baseline = scores["proposed"], scores["baseline"]
    scale = np.abs(baseline).max()
    difference = float(np.abs(proposed - baseline).max() / scale)
    differing = int((proposed.argmax(0) != baseline.argmax(0)).sum())
    print(f"class scores {baseline.shape}: largest difference {difference:.1e} of the largest magnitude "
          f"(tolerance {SCORES_TOLERANCE:.0e}); label maps identical at {baseline[0].size - differing} of "
          f"{baseline[0].size} pixels, the others ties (two classes within twice that difference)")  # fmt: skip
    rss = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 2**20
    print(f"wall time {time.perf_counter() - start:.0f} s; peak RSS of one process {rss:.1f} GiB")
    passed = losses <= TOLERANCE and difference <= SCORES_TOLERANCE
    print("PASSED" if passed else "FAILED")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
