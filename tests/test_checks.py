"""The GPU check runs end to end on a CPU with --dry-run: the owner's and the cloud's command lines, the
comparison of the runs and the report."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).parents[1]


def check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "checks.gpu", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # about 45 s: the owner's and the cloud's processes each start torch
def test_the_gpu_check_dry_run_writes_its_report(tmp_path):
    report = tmp_path / "report.md"
    done = check("--dry-run", "--work", str(tmp_path / "work"), "--out", str(report))
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    text = report.read_text()
    assert text.startswith("# GPU check: SETR-MLA, proposed against baseline (PASSED)")
    for run in ("proposed", "baseline", "proposed / baseline"):
        assert f"| {run} | " in text
    assert "n/a (no CUDA)" in text
    assert "`training/configs/tiny/setr_tiny_mla_{method}.py`" in text and "3 iterations of batch 2" in text
    assert text in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_the_gpu_check_needs_cuda_without_dry_run(tmp_path):
    done = check("--work", str(tmp_path / "work"))
    assert done.returncode == 2 and "no CUDA device" in done.stderr
