"""Evaluation time of the tiny SETR configs on one 512x1024 image, inference as the configs set it.

Target: <= 2 s per image on this 2-core machine. Sliding the 64x64 training crop with stride 32 (465
windows per image) took 14-18 s. The figure is the best of 3 calls of the model's test_step on a
random image (random weights: the time does not depend on them), so that other load on a shared
machine counts as little as possible.
"""

import time
from pathlib import Path

CONFIGS = Path(__file__).parents[1] / "training" / "configs" / "tiny"
SHAPE, ROUNDS, TARGET = (512, 1024), 3, 2.0


def seconds_per_image(head: str) -> float:
    import torch
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    cfg = Config.fromfile(CONFIGS / f"setr_tiny_{head}_proposed.py")
    model = MODELS.build(dict(cfg.model, backbone=dict(cfg.model.backbone, init_cfg=None))).eval()
    data = dict(
        inputs=[torch.randint(0, 256, (3, *SHAPE), dtype=torch.uint8)],
        data_samples=[SegDataSample(metainfo=dict(img_shape=SHAPE, ori_shape=SHAPE))],
    )
    best = float("inf")
    with torch.no_grad():
        for _ in range(ROUNDS):
            start = time.perf_counter()
            model.test_step(data)
            best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    from mmengine.registry import init_default_scope

    from training.plugin import register

    register()  # mmseg on mmcv-lite, cipherseg's components registered
    init_default_scope("mmseg")
    print(f"tiny SETR evaluation of one {SHAPE[0]}x{SHAPE[1]} image, best of {ROUNDS}:")
    for head in ("naive", "pup", "mla"):
        seconds = seconds_per_image(head)
        print(f"  {head:5s} {seconds:5.2f} s  {seconds / TARGET:.2f}x the target of {TARGET:.0f} s")


if __name__ == "__main__":
    main()
