"""Where the encrypt stage's tasks run: a new local Dask cluster or an existing one."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = "5s"  # an unreachable scheduler fails fast, before anything is written
_PROTOCOLS = ("tcp", "tls", "ucx", "ws", "wss", "inproc")


@contextmanager
def client(workers: int, scheduler: str | None) -> Iterator[Any]:
    """A Dask client: of the cluster at ``scheduler`` (``tcp://host:port``), else of a new local one."""
    from distributed import Client

    logging.getLogger("distributed").setLevel(logging.WARNING)  # its INFO lines would drown the progress
    if scheduler:
        parts = urlsplit(scheduler)
        if parts.scheme not in _PROTOCOLS or not parts.hostname:
            raise PipelineError(f"--scheduler {scheduler}: not a Dask scheduler address (tcp://host:port)")
        try:
            connected = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as error:
            raise PipelineError(f"--scheduler {scheduler}: cannot reach the Dask scheduler ({error})") from None
        with connected:
            yield connected
        return
    with local_cluster(workers) as cluster, Client(cluster) as local:
        yield local


def local_cluster(workers: int):
    """The local Dask cluster the stage starts: ``workers`` processes of one thread each."""
    import dask
    from distributed import LocalCluster

    # Dask's default MALLOC_TRIM_THRESHOLD_=65536 turns off glibc's adaptive mmap threshold: every
    # image-sized buffer becomes a fresh mapping whose pages fault in again. Measured: +15-20 ms per
    # 1024x2048 image (~20% of the stage). A worker holds one shard, so there is little to trim.
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        # Processes: decoding holds the GIL. Port 0: the default 8787 collides when clusters coexist.
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        )
