"""Table I's runner: what the small scale runs, the ViT-S/16 configs it adds, proxy pretraining, and a smoke
version of the whole runner (a few iterations on a generated sample)."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from mmengine.config import Config

from pipeline.sample import write_random_vit
from experiments.__main__ import main
from experiments.catalogue import BACKBONES, METHODS, METRICS, SCALES, TABLE_I, Settings, plan
from experiments.report import agreement, read_csv
from experiments.table1 import pretrained_backbones, schedule_options
from training.pretrain import patch_classes, pretrain

pytest_plugins = ["training_fixtures"]

TINY = Path(__file__).parents[1] / "training" / "configs" / "tiny"


def test_the_runner_never_imports_the_key_handling_modules():
    forbidden = ("pipeline.keys", "pipeline.cipher", "pipeline.weights")
    code = (
        "import sys, experiments.__main__, experiments.table1, checks.runs, training.test, training.predict\n"
        f"print([m for m in {forbidden!r} if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_small_scale_runs_every_cell_of_table_i_and_a_pair_per_segmentor():
    runs = plan(SCALES["small"])
    found = [(r.backbone, r.decoder, r.method, r.seed) for r in runs]
    backbones, decoders = ("vit-tiny", "vit-small"), ("mla", "pup", "naive")
    expected = {(b, d, m, 0) for b in backbones for d in decoders for m in TABLE_I}
    expected |= {(b, d, "baseline", 1) for b in backbones for d in decoders}  # the seed spread, in every cell
    expected |= {("vit-tiny", s, m, 0) for s in ("segmenter", "upernet", "dpt") for m in ("baseline", "proposed")}
    assert sorted(found) == sorted(expected)
    assert sum(METHODS[r.method].trained for r in runs) == 30  # conventional 1 is the baseline, encrypted
    for b, d, m, _ in found:  # conventional 1 needs its cell's baseline first
        assert m != "conventional1" or found.index((b, d, m, 0)) > found.index((b, d, "baseline", 0))
    vits = {b: timm.create_model(BACKBONES[b].arch, pretrained=False) for b in backbones}
    for run in runs:  # each config is of its backbone's width, and checks for the bundle kind its method is given
        cfg, vit = Config.fromfile(str(run.config)), vits[run.backbone]
        assert (cfg.model.backbone.embed_dims, cfg.model.backbone.num_heads) == (vit.embed_dim, vit.blocks[0].attn.num_heads)
        (hook,) = (h for h in cfg.custom_hooks if h.type == "CipherSegCheckHook")
        if METHODS[run.method].trained:  # conventional 1 has the baseline's config: it was trained as the baseline
            assert hook.data == ("plain" if METHODS[run.method].bundle == "plain" else "encrypted")


def test_the_vit_small_configs_load_every_weight_of_a_timm_vit_small(tmp_path):
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    from safetensors.torch import load_file

    from pipeline.weights import encrypt_checkpoint

    arch = BACKBONES["vit-small"].arch
    weights = write_random_vit(tmp_path / f"{arch}.safetensors", arch)
    checkpoint = encrypt_checkpoint(weights, arch, None, tmp_path / "backbone.safetensors")
    cfg = Config.fromfile(str(TINY / "setr_small_mla_proposed.py"))
    cfg.model.backbone.init_cfg.checkpoint = str(checkpoint)
    init_default_scope("mmseg")
    backbone = MODELS.build(cfg.model).backbone
    backbone.init_weights()
    loaded, state = backbone.state_dict(), load_file(checkpoint)
    assert set(state) - set(loaded) == {"ln1.weight", "ln1.bias"}  # SETR reads the blocks' outputs, not the final norm
    names = [n for n in loaded if n != "pos_embed"]  # resampled from 14x14 to the crop's 4x4
    assert len(names) > 100 and all(torch.equal(loaded[n], state[n]) for n in names)


@pytest.mark.slow  # a pretraining run: ~5 s
def test_pretrained_backbones_are_made_once_and_then_cached(tmp_path, monkeypatch):
    settings = Settings(backbones=("vit-tiny",), decoders=(), pretrain_counts="2,0,0", sample_size="64x128", pretrain_steps=1)
    (path, source), = pretrained_backbones(settings, tmp_path).values()
    assert path.name == "vit_tiny_patch16_224_1-steps.safetensors" and source.startswith("proxy-pretrained in this run")
    made = path.stat().st_mtime_ns
    monkeypatch.setattr("experiments.harness.owner", lambda *args: pytest.fail(f"owner step {args} run again"))
    (again, source), = pretrained_backbones(settings, tmp_path).values()
    assert again == path and path.stat().st_mtime_ns == made and "cached" in source


def test_iters_scale_every_lr_scheduler_with_the_schedule():
    # UperNet-ViT's tiny schedule: 20 iterations, 2 of linear warm-up, then poly; the checkpoint at the end.
    assert schedule_options(TINY / "upernet_tiny_mln_proposed.py", 300) == [
        "train_cfg.max_iters=300", "default_hooks.checkpoint.interval=300",
        "param_scheduler.0.begin=0", "param_scheduler.0.end=30", "param_scheduler.1.begin=30", "param_scheduler.1.end=300",
    ]  # fmt: skip


@pytest.mark.slow  # the whole runner, both roles: about a minute
def test_table1_smoke(tmp_path):
    weights = write_random_vit(tmp_path / "vit_tiny.safetensors", "vit_tiny_patch16_224")
    out = tmp_path / "report"
    argv = [
        "table1", "--scale", "small", "--out", str(out), "--work", str(tmp_path / "work"),
        "--backbones", "vit-tiny", "--decoders", "naive", "--segmentors", "", "--methods", "baseline,proposed",
        "--seeds", "2", "--iters", "4", "--sample-counts", "4,2,0", "--sample-size", "64x128",
        "--weights", f"vit-tiny={weights}",
    ]  # fmt: skip
    assert main(argv) == 0

    assert {p.name for p in out.iterdir()} == {"report.md", "table.csv", "bars.png", "fig4.png", "fig5.png"}
    with open(out / "table.csv") as f:
        rows = {(row["method"], row["seed"]): row for row in csv.DictReader(f)}
    assert rows.keys() == {("baseline", "0"), ("proposed", "0"), ("baseline", "1")}
    for metric in METRICS:  # the proposed method follows the baseline exactly
        assert float(rows["proposed", "0"][metric]) == pytest.approx(float(rows["baseline", "0"][metric]), abs=0.05)
    assert rows["baseline", "0"]["paper_backbone"] == "ViT-base" and rows["baseline", "0"]["paper_mIoU"] == "68.14"
    report = (out / "report.md").read_text()
    assert "| backbone (paper's) | decoder | method | aAcc | mIoU | mAcc | paper aAcc | paper mIoU | paper mAcc |" in report
    assert "| ViT-tiny (ViT-base) | Naive | baseline |" in report and "|  |  | baseline, seed 1 |" in report
    assert "Seed spread over 1 cells" in report and "ViT-tiny: given" in report
    assert "python -m experiments table1 --scale small" in report and "Wall time" in report
    for name in ("bars.png", "fig4.png", "fig5.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / name).stat().st_size < 1_000_000
    # Fig. 4's encryptions came from the owner's command line, one of them with a negative-positive key.
    assert (tmp_path / "work" / "owner" / "negative-positive" / "key.json").is_file()


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
    pretrain(owner.plain / "dataset.zarr", owner.arch, out, steps=2, batch_size=2)
    state = load_timm_checkpoint(out, owner.arch)  # names and shapes of the architecture, no classifier
    assert state["pos_embed"].shape == (1, 1 + 4 * 4, 192)  # for the 64x64 crops


TABLE = Path(__file__).parents[1] / "docs" / "table1-small" / "table.csv"


def test_the_bars_are_drawn_again_from_the_table_alone(tmp_path):
    (tmp_path / "table.csv").write_bytes(TABLE.read_bytes())
    assert main(["bars", str(tmp_path)]) == 0
    assert (tmp_path / "bars.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from experiments.report import write_csv

    write_csv(read_csv(TABLE), tmp_path / "again.csv")  # the table holds all the chart is drawn from
    assert (tmp_path / "again.csv").read_text() == TABLE.read_text()


def test_the_report_names_the_cell_that_departs_and_weighs_it_against_the_seed_spread():
    lines = agreement(read_csv(TABLE))
    assert lines[0] == "Largest |proposed − baseline| over the metrics and cells: 2.28 points (ViT-small, PUP, aAcc)."
    assert lines[1].startswith("Proposed − baseline in mIoU lies within the baseline's own seed spread in 5 of 6 cells; "
                               "beyond it in ViT-small / PUP (-1.53 against 0.98: 1.1 standard deviations")  # fmt: skip
