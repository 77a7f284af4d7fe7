"""cipherseg's plug-in for mmsegmentation: what a config needs to read a bundle.

Our entry points call :func:`register` first thing; mmseg's own tools import this module through the
configs' ``custom_imports``, which is mmengine's way for a config to plug code in, and importing it
registers (the one import with an effect, by design: it is what ``custom_imports`` is for).
"""

from __future__ import annotations

import warnings


def register() -> None:
    """Make mmseg importable on mmcv-lite, register cipherseg's components and checkpoint loaders,
    and quiet the warnings mmseg and mmcv-lite print on every run. Idempotent."""
    from training import mmcv_compat

    mmcv_compat.install()  # before anything imports mmseg: mmcv-lite has no compiled mmcv.ops
    for message in (
        "Fail to import ``MultiScaleDeformableAttention``",  # mmcv-lite: SETR needs none of it
        "The draw is False",  # mmseg's visualization hook when it draws nothing
        ".*instance named of visualizer has been created",
        "``build_loss`` would be deprecated soon",
        "Default ``avg_non_ignore`` is False",
    ):
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
    # Registered with mmseg's registries as they are imported.
    from training import backbones, datasets, hooks, loaders, metrics, progress, resolve, transforms  # noqa: F401

    loaders.register_loaders()


register()  # the custom_imports hook (see the module docstring)
