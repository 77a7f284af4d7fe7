"""Table I's runner, in a smoke version: two methods, a few iterations, on a generated sample."""

import csv
import subprocess
import sys

import numpy as np
import pytest

from pipeline.sample import write_random_vit
from training.experiments import METRICS, main
from training.pretrain import patch_classes, pretrain

pytest_plugins = ["training_fixtures"]


def test_the_runner_never_imports_the_key_handling_modules():
    forbidden = ("pipeline.keys", "pipeline.cipher", "pipeline.weights")
    code = (
        "import sys, training.experiments, training.pretrain, training.test, training.predict\n"
        f"print([m for m in {forbidden!r} if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_table1_smoke(tmp_path):
    weights = write_random_vit(tmp_path / "vit_tiny.safetensors", "vit_tiny_patch16_224")
    out = tmp_path / "report"
    argv = [
        "table1", "--scale", "small", "--out", str(out), "--work", str(tmp_path / "work"),
        "--methods", "baseline,proposed", "--iters", "4", "--sample-counts", "4,2,0", "--sample-size", "64x128",
        "--weights", f"vit-tiny={weights}",
    ]  # fmt: skip
    assert main(argv) == 0

    assert {p.name for p in out.iterdir()} == {"report.md", "table.csv", "bars.png", "fig5.png"}
    rows = {row["method"]: row for row in csv.DictReader(open(out / "table.csv"))}
    assert rows.keys() == {"baseline", "proposed"}
    for metric in METRICS:  # the proposed method follows the baseline exactly
        assert float(rows["proposed"][metric]) == pytest.approx(float(rows["baseline"][metric]), abs=0.05)
    report = (out / "report.md").read_text()
    assert "| backbone | decoder | method | aAcc | mIoU | mAcc | paper aAcc | paper mIoU | paper mAcc |" in report
    assert "python -m training.experiments table1 --scale small" in report and "Wall time" in report
    for name in ("bars.png", "fig5.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / name).stat().st_size < 1_000_000


def test_the_proxy_task_tags_each_patch_with_the_classes_in_it():
    labels = np.full((1, 16, 32), 255, np.uint8)  # two patches
    labels[0, :, :16] = 7
    labels[0, 0, 0] = 2  # a single pixel counts: thin objects are not lost to the majority
    labels[0, :9, 16:] = 11
    found = patch_classes(labels, 16)
    assert found.shape == (1, 1, 2, 19)
    assert [np.flatnonzero(found[0, 0, i]).tolist() for i in range(2)] == [[2, 7], [11]]  # 255 is no class


def test_pretraining_writes_a_timm_checkpoint_the_owner_can_encrypt(owner, tmp_path):
    from pipeline.weights import load_timm_checkpoint

    out = tmp_path / "pretrained.safetensors"
    pretrain(owner.plain / "dataset.zarr", owner.weights, owner.arch, out, steps=2, batch_size=2)
    state = load_timm_checkpoint(out, owner.arch)  # names and shapes of the architecture, no classifier
    assert state["pos_embed"].shape == (1, 1 + 4 * 4, 192)  # for the 64x64 crops
