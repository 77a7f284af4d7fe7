"""Training step time of the proposed method over the baseline, on the tiny SETR-Naive (ViT-Ti/16).

Same model, data and schedule; the proposed run reads the encrypted bundle and the encrypted
checkpoint, the baseline the plain ones. Training in the encrypted domain adds no work: the target
is a ratio <= 1.02. Runs alternate (baseline, proposed, ...) so that drift on a shared machine hits
both; the figure is the median step time (IterTimerHook) after a warm-up.
"""

import tempfile
import uuid
import warnings
from pathlib import Path

from training.plugin import register

register()  # mmseg on mmcv-lite, cipherseg's components registered

import numpy as np
from mmengine.runner import Runner

from pipeline import keys
from pipeline.job import build_bundle
from pipeline.sample import write_random_vit, write_sample
from training.config import load_config

ARCH = "vit_tiny_patch16_224"
CONFIGS = Path(__file__).parents[1] / "training" / "configs" / "tiny"
ITERS, WARMUP, ROUNDS = 40, 5, 3


def step_times(method: str, bundle: Path, work_dir: Path) -> np.ndarray:
    """Seconds of every training step after the warm-up, for the tiny config of ``method``."""
    options = {"train_cfg.max_iters": ITERS, "param_scheduler.0.end": ITERS, "default_hooks.checkpoint.interval": ITERS}
    cfg = load_config(CONFIGS / f"setr_tiny_naive_{method}.py", str(bundle), work_dir=work_dir, cfg_options=options)
    cfg.experiment_name, cfg.log_level = uuid.uuid4().hex, "ERROR"  # the figures, not mmengine's log
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mmseg's deprecation and visualizer notices, once per runner
        runner = Runner.from_cfg(cfg)
        runner.train()
    return np.asarray(runner.message_hub.get_scalar("train/time").data[0][WARMUP:])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        key, raw = keys.generate(), tmp / "raw"
        write_sample(raw, counts={"train": 8, "val": 1})
        weights = write_random_vit(tmp / f"{ARCH}.safetensors", ARCH)
        bundles = {}
        for method in ("baseline", "proposed"):
            bundles[method] = tmp / method / "bundle"
            build_bundle(
                raw, weights, ARCH, key, store=tmp / method / "dataset.zarr", checkpoint=tmp / method / "backbone.safetensors",
                bundle=bundles[method], plain=method == "baseline", workers=1,
            )  # fmt: skip
        times = {"baseline": [], "proposed": []}
        for _ in range(ROUNDS):
            for method in times:
                times[method].append(step_times(method, bundles[method], tmp / "work"))
    baseline, proposed = (float(np.median(np.concatenate(times[method]))) for method in times)
    print(f"tiny SETR-Naive training step, median of {ROUNDS} x {ITERS - WARMUP} steps (batch 2, 64x64):")
    print(f"  baseline (plain bundle)     {1e3 * baseline:7.1f} ms  1.00x")
    print(f"  proposed (encrypted bundle) {1e3 * proposed:7.1f} ms  {proposed / baseline:.3f}x  (target <= 1.02)")


if __name__ == "__main__":
    main()
