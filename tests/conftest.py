"""The test session prepares mmseg as every entry point does (mmcv-lite stand-in, cipherseg's registrations),
and runs torch on one thread per process: `make test` runs one pytest worker per core (pytest-xdist), and
threads of two processes on two cores wait on each other (measured: a tiny Segmenter step took 1.8 s on
two threads against 0.2 s on one). Command lines the tests start inherit the setting."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402

from training.plugin import register  # noqa: E402

torch.set_num_threads(1)
register()

# The fuzz tests that take their number of examples from the profile: 100 each in `make test`, 25 in the
# developer's loop (`make test-quick` passes --hypothesis-profile=quick).
settings.register_profile("full", max_examples=100, deadline=None)
settings.register_profile("quick", max_examples=25, deadline=None)
settings.load_profile("full")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: the order is the same with and without slow tests
def pytest_collection_modifyitems(items):
    """Files that hold slow tests first. `make test` hands whole files to the pytest workers in this
    order (--dist loadfile --no-loadscope-reorder): the long files start early and the many short ones
    fill the end, where xdist's own order (most tests first) left a long file for last (measured on two
    cores: the whole suite in 6:12 in xdist's order, 5:30 in this one)."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)  # stable: a file's tests stay together and in order


@pytest.fixture(scope="session")
def dask_scheduler():
    """The address of a Dask cluster of one thread in this process, for tests that only need a store
    made: it starts in milliseconds, a cluster of worker processes in seconds."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


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
