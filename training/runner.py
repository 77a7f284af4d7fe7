"""The cloud's runner: it checks the bundle a config names, then runs mmengine's Runner on it.

A config names its bundle once (:mod:`training.bundle`). The configs set ``runner_type =
'CipherSegRunner'``, so mmseg's own ``tools/train.py`` and ``tools/test.py`` build this runner too:
``--cfg-options bundle=LOCATION`` is all they need, and the bundle is verified there as in
``python -m training.train``.
"""

from __future__ import annotations

from mmengine.config import Config
from mmengine.runner import Runner
from mmseg.registry import RUNNERS

from training.bundle import resolve_bundle


@RUNNERS.register_module()
class CipherSegRunner(Runner):
    """mmengine's Runner on a verified bundle (see the module docstring)."""

    @classmethod
    def from_cfg(cls, cfg: Config) -> Runner:
        resolve_bundle(cfg)
        return super().from_cfg(cfg)
