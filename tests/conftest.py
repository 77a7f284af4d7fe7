"""The test session prepares mmseg as every entry point does (mmcv-lite stand-in, cipherseg's registrations),
and runs torch on one thread per process: `make test` runs one pytest worker per core (pytest-xdist), and
threads of two processes on two cores wait on each other (measured: a tiny Segmenter step took 1.8 s on
two threads against 0.2 s on one). Command lines the tests start inherit the setting."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402

from training.plugin import register  # noqa: E402

torch.set_num_threads(1)
register()


@pytest.fixture
def scratch(tmp_path):
    """A folder for many small writes: in memory (/dev/shm: 50x faster than this machine's disk at
    creating and removing files) where there is one, else tmp_path."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(dir=shm, prefix="cipherseg-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
