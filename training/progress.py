"""Progress of evaluation and prediction: images done and rate, as a live bar on a terminal and as a log
line every ``interval`` seconds otherwise (a log file, a batch job), so that a long run is never silent.

``ProgressHook`` (``default_hooks = dict(progress=dict(type='ProgressHook'))``) reports validation and
testing; ``Progress`` is the counter itself, for loops outside a runner such as prediction.
"""

from __future__ import annotations

import datetime
import sys
import time
from typing import TextIO

from mmengine.dist import get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmseg.registry import HOOKS
from tqdm import tqdm


class Progress:
    """Counts the images of one pass over ``total`` images called ``what`` (e.g. 'val').

    On a terminal (``stream`` is a TTY) it draws a bar; otherwise it logs a line at most every
    ``interval`` seconds. Either way it logs one summary line when closed.
    """

    def __init__(self, total: int, what: str, interval: float = 30.0, stream: TextIO | None = None) -> None:
        stream = stream or sys.stderr
        self.total, self.what, self.interval = total, what, interval
        self.done = 0
        self.start = self.logged = time.monotonic()
        self.bar = tqdm(total=total, desc=what, unit="img", file=stream, dynamic_ncols=True) if stream.isatty() else None

    def update(self, images: int = 1) -> None:
        images = min(images, self.total - self.done)  # distributed samplers pad the last batches
        self.done += images
        if self.bar is not None:
            self.bar.update(images)
        elif time.monotonic() - self.logged >= self.interval:
            self.logged = time.monotonic()
            elapsed = self.logged - self.start
            left = (self.total - self.done) * elapsed / self.done if self.done else 0.0
            print_log(
                f"{self.what}: {self.done}/{self.total} images, {_rate(self.done, elapsed)}, "
                f"{_duration(elapsed)} elapsed, about {_duration(left)} left",
                logger="current",
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elapsed = time.monotonic() - self.start
        print_log(f"{self.what}: {self.done} images in {_duration(elapsed)}, {_rate(self.done, elapsed)}", logger="current")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@HOOKS.register_module()
class ProgressHook(Hook):
    """Reports validation and testing through ``Progress`` (``interval``: seconds between log lines).

    In a distributed run the main process reports for all: each step, every process has done a batch.
    """

    def __init__(self, interval: float = 30.0) -> None:
        self.interval = interval
        self.progress: Progress | None = None

    def before_val_epoch(self, runner) -> None:
        self._start(runner.val_dataloader, "val")

    def before_test_epoch(self, runner) -> None:
        self._start(runner.test_dataloader, "test")

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._update(data_batch)

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._update(data_batch)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._close()

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._close()

    def _start(self, dataloader, what: str) -> None:
        if is_main_process():
            self.progress = Progress(len(dataloader.dataset), what, self.interval)

    def _update(self, data_batch) -> None:
        if self.progress is not None:
            self.progress.update(len(data_batch["inputs"]) * get_world_size())

    def _close(self) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None


def _rate(images: int, seconds: float) -> str:
    if images == 0 or seconds <= 0:
        return "no rate yet"
    rate = images / seconds
    return f"{rate:.2f} images/s" if rate >= 1 else f"{1 / rate:.1f} s/image"


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))
