"""Training logs to TensorBoard (or any mmengine vis backend) with one --cfg-options setting; the console
starts with a short summary, mmengine's dump of the environment and config goes to the log file."""

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

    console = (done.stdout + done.stderr).splitlines()
    first_iteration = next(i for i, line in enumerate(console) if "Iter(train)" in line)
    assert first_iteration < 30 and not any("System environment" in line for line in console), console[:40]
    (log,) = work_dir.glob("*/*.log")
    dump = log.read_text()
    assert "System environment:" in dump and "Distributed training: False" in dump and "Config:\nbundle = " in dump
