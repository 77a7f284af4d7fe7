"""Lets mmsegmentation 1.2.2 import on ``mmcv-lite``, which has no compiled ops.

mmseg imports ``mmcv.ops`` at import time, and the real ``mmcv.ops`` needs the compiled
``mmcv._ext``. Full mmcv 2.1.0 has no wheel for current torch, and SETR needs none of its ops, so
:func:`install` registers a stand-in ``mmcv.ops``: a pure-torch ``point_sample`` and, for every
other name mmseg imports from ``mmcv.ops``, a placeholder that fails clearly when used. Every name
must be present: a missing one raises ImportError, which mmseg's ``except ModuleNotFoundError``
guards do not catch. With full mmcv installed, :func:`install` does nothing.
"""

from __future__ import annotations

import importlib
import sys
import types

import torch
import torch.nn.functional as F

# Every name mmseg 1.2.2 imports from mmcv.ops, besides point_sample (tests/test_mmcv_compat.py
# checks this list against the installed mmseg).
PLACEHOLDERS = (
    "CrissCrossAttention",
    "DeformConv2d",
    "ModulatedDeformConv2d",
    "PSAMask",
    "sigmoid_focal_loss",
)
INSTALL_HINT = (
    "install full mmcv 2.1.0: pip uninstall -y mmcv-lite && pip install 'setuptools<70' && "
    "pip install --no-build-isolation mmcv==2.1.0 (builds from source, about 20 minutes)"
)


def point_sample(
    input: torch.Tensor, points: torch.Tensor, align_corners: bool = False, **kwargs
) -> torch.Tensor:
    """Sample ``input`` (N, C, H, W) at ``points`` in [0, 1]², shaped (N, P, 2) or (N, Hg, Wg, 2).

    Same semantics as ``mmcv.ops.point_sample``: (x, y) points, bilinear ``grid_sample`` (extra
    keyword arguments go to it), output (N, C, P) or (N, C, Hg, Wg).
    """
    add_dim = points.dim() == 3
    if add_dim:
        points = points.unsqueeze(2)
    output = F.grid_sample(input, points * 2.0 - 1.0, align_corners=align_corners, **kwargs)
    return output.squeeze(3) if add_dim else output


def _placeholder(name: str) -> type:
    """A class standing in for an mmcv op: importable and usable in isinstance, fails when called."""

    def fail(cls, *args, **kwargs):
        raise RuntimeError(f"{name} needs the compiled mmcv ops; {INSTALL_HINT}")

    # A class rather than a function: some mmcv users subclass ops or test isinstance against them.
    return type(name, (), {"__new__": fail, "__module__": "mmcv.ops"})


def _compiled_ops_available() -> bool:
    try:
        importlib.import_module("mmcv._ext")
    except ImportError:
        return False
    return True


def install() -> None:
    """Register the stand-in ``mmcv.ops`` unless the compiled mmcv ops are available (idempotent)."""
    if "mmcv.ops" in sys.modules or _compiled_ops_available():
        return
    import mmcv

    ops = types.ModuleType("mmcv.ops", "Stand-in for mmcv.ops without compiled ops (training.mmcv_compat).")
    ops.point_sample = point_sample
    for name in PLACEHOLDERS:
        setattr(ops, name, _placeholder(name))
    sys.modules["mmcv.ops"] = ops
    mmcv.ops = ops
