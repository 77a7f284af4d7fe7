"""Evaluation time of the tiny configs on one 512x1024 image, inference as the configs set it.

Target: <= 2 s per image on this 2-core machine. The configs' windows overlap (stride below the window:
no seams at the window edges); the baseline, measured in the same run, is the same windows without
overlap (stride = window). Sliding the 64x64 training crop with stride 32 (465 windows per image) took
14-18 s. A figure is the best of 3 calls of the model's test_step on a random image (random weights:
the time does not depend on them), so that other load on a shared machine counts as little as possible.
"""

import time
from pathlib import Path

CONFIGS = Path(__file__).parents[1] / "training" / "configs" / "tiny"
SHAPE, ROUNDS, TARGET = (512, 1024), 3, 2.0
# One config of each tiny base (the methods share their model); SETR on ViT-Ti/16 and on ViT-S/16.
CONFIG_NAMES = ("setr_tiny_naive", "setr_tiny_pup", "setr_tiny_mla", "setr_small_naive", "segmenter_tiny_mask",
                "upernet_tiny_mln", "dpt_tiny_project", "beit_tiny_upernet")  # fmt: skip


def seconds_per_image(model, strides: list[tuple[int, int]]) -> list[float]:
    """Best time of the model's test step on one random image with its windows each of ``strides`` apart;
    the strides take turns, so that other load on the machine weighs on each alike."""
    import torch
    from mmseg.structures import SegDataSample

    data = dict(
        inputs=[torch.randint(0, 256, (3, *SHAPE), dtype=torch.uint8)],
        data_samples=[SegDataSample(metainfo=dict(img_shape=SHAPE, ori_shape=SHAPE))],
    )
    best = [float("inf")] * len(strides)
    with torch.no_grad():
        for _ in range(ROUNDS):
            for i, stride in enumerate(strides):
                model.test_cfg.stride = stride
                start = time.perf_counter()
                model.test_step(data)
                best[i] = min(best[i], time.perf_counter() - start)
    return best


def windows(window: tuple[int, int], stride: tuple[int, int]) -> int:
    """How many windows mmseg's slide inference runs on one image."""
    return (-(-(SHAPE[0] - window[0]) // stride[0]) + 1) * (-(-(SHAPE[1] - window[1]) // stride[1]) + 1)


def main() -> None:
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from training.plugin import register

    register()  # mmseg on mmcv-lite, cipherseg's components registered
    init_default_scope("mmseg")
    print(f"tiny evaluation of one {SHAPE[0]}x{SHAPE[1]} image, best of {ROUNDS}: overlapping windows as configured, "
          "and the same windows without overlap")  # fmt: skip
    for name in CONFIG_NAMES:
        cfg = Config.fromfile(CONFIGS / f"{name}_proposed.py", import_custom_modules=False)
        model = MODELS.build(dict(cfg.model, backbone=dict(cfg.model.backbone, init_cfg=None))).eval()
        window, stride = tuple(cfg.model.test_cfg.crop_size), tuple(cfg.model.test_cfg.stride)
        overlapping, flat = seconds_per_image(model, [stride, window])
        print(
            f"  {name:20s} {window[0]}/{stride[0]}: {windows(window, stride):3d} windows {overlapping:5.2f} s "
            f"({overlapping / TARGET:.2f}x the target of {TARGET:.0f} s); without overlap {windows(window, window):3d} "
            f"windows {flat:5.2f} s; {overlapping / flat:.2f}x"
        )


if __name__ == "__main__":
    main()
