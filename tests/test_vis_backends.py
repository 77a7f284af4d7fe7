"""Training logs to TensorBoard (or any mmengine vis backend) with one --cfg-options setting."""

import subprocess
import sys
from pathlib import Path

import pytest

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

pytest_plugins = ["training_fixtures"]

REPO = Path(__file__).parents[1]


@pytest.mark.slow  # a training process of its own: ~15 s
def test_tensorboard_event_files_are_written(owner, tmp_path):
    # A process of its own, as on the command line: mmengine's visualizer is a per-process singleton.
    work_dir = tmp_path / "work"
    command = [
        sys.executable, "-m", "training.train", str(REPO / "training/configs/tiny/setr_tiny_naive_proposed.py"),
        "--bundle", str(owner.bundles["encrypted"]), "--signer", str(owner.signer), "--work-dir", str(work_dir),
        "--cfg-options", "visualizer.vis_backends.0.type=TensorboardVisBackend",
        "train_cfg.max_iters=2", "default_hooks.checkpoint.interval=2",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    (events,) = work_dir.glob("*/vis_data/events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    assert {"loss", "lr", "mIoU"} <= set(accumulator.Tags()["scalars"])  # training and the final validation
    assert [event.step for event in accumulator.Scalars("loss")] == [1, 2]
