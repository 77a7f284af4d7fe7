"""Evaluation is usable at realistic sizes: the tiny configs evaluate a 512x1024 image in a few passes of
the backbone, and validation, testing and prediction report their progress."""

import io
from pathlib import Path

import pytest
import torch

from training import progress

pytest_plugins = ["training_fixtures"]

CONFIGS = Path(__file__).parents[1] / "training" / "configs" / "tiny"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def logged(monkeypatch) -> list[str]:
    lines = []
    monkeypatch.setattr(progress, "print_log", lambda message, logger: lines.append(message))
    return lines


def test_progress_logs_lines_off_a_terminal(logged):
    with progress.Progress(3, "val", interval=0, stream=io.StringIO()) as counter:
        for _ in range(3):
            counter.update()
    assert [line.split(",")[0] for line in logged[:3]] == ["val: 1/3 images", "val: 2/3 images", "val: 3/3 images"]
    assert "images/s" in logged[0] or "s/image" in logged[0]
    assert logged[3].startswith("val: 3 images in 0:00:00, ")


def test_progress_logs_at_most_every_interval(logged):
    with progress.Progress(100, "test", interval=3600, stream=io.StringIO()) as counter:
        counter.update(100)
    assert len(logged) == 1 and logged[0].startswith("test: 100 images in")  # the summary alone


def test_progress_draws_a_bar_on_a_terminal(logged):
    terminal = Terminal()
    with progress.Progress(2, "predict", interval=0, stream=terminal) as counter:
        counter.update()
        counter.update(5)  # more than are left (a distributed sampler's padding): counted up to the total
    assert "predict" in terminal.getvalue() and "2/2" in terminal.getvalue() and "img/s" in terminal.getvalue()
    assert len(logged) == 1 and logged[0].startswith("predict: 2 images in")  # the summary alone


@pytest.mark.slow  # a 512x1024 image through each head: ~4 s each
@pytest.mark.parametrize("head", ["naive", "pup", "mla"])
def test_the_tiny_configs_evaluate_a_512x1024_image_in_few_backbone_passes(head):
    # 128x128 windows overlapping by 32 px: 55 passes, about 2 s on 2 cores; sliding the 64x64 training crop
    # with stride 32 took 465 passes and 14-18 s. The time is benchmarks/bench_eval.py's; the passes are its
    # stable proxy.
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    cfg = Config.fromfile(CONFIGS / f"setr_tiny_{head}_proposed.py")
    init_default_scope("mmseg")
    model = MODELS.build(dict(cfg.model, backbone=dict(cfg.model.backbone, init_cfg=None))).eval()
    passes = []
    model.backbone.register_forward_hook(lambda module, inputs, output: passes.append(inputs[0].shape[-2:]))
    shape = (512, 1024)
    data = dict(
        inputs=[torch.zeros(3, *shape, dtype=torch.uint8)],
        data_samples=[SegDataSample(metainfo=dict(img_shape=shape, ori_shape=shape))],
    )
    with torch.no_grad():
        (result,) = model.test_step(data)
    assert result.pred_sem_seg.data.shape[-2:] == shape
    assert len(passes) == 55


@pytest.mark.slow  # a training and a test run through the command line: ~14 s
def test_validation_and_test_report_progress(owner, tmp_path):
    from training import test, train

    config = str(CONFIGS / "setr_tiny_naive_proposed.py")
    common = ["--bundle", str(owner.bundles["encrypted"]), "--signer", str(owner.signer)]
    fast = ["--cfg-options", "default_hooks.progress.interval=0"]
    work = tmp_path / "train"
    once = ["train_cfg.max_iters=1", "default_hooks.checkpoint.interval=1"]
    assert train.main([config, *common, "--work-dir", str(work), *fast, *once]) == 0
    assert test.main([config, str(work / "iter_1.pth"), *common, "--work-dir", str(tmp_path / "test"), *fast]) == 0
    val = owner.counts["val"]
    for what, directory in (("val", work), ("test", tmp_path / "test")):
        (log,) = directory.glob("*/*.log")
        text = log.read_text()
        assert f"{what}: {val}/{val} images, " in text and f"{what}: {val} images in " in text
