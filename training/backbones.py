"""Backbones that mmseg 1.2.2 has, made to run on today's libraries."""

from __future__ import annotations

import numpy as np
import torch
from mmseg.models.backbones import BEiT
from mmseg.registry import MODELS
from scipy.interpolate import RectBivariateSpline


@MODELS.register_module()
class CipherSegBEiT(BEiT):
    """mmseg's BEiT, resampling a checkpoint's relative position bias with SciPy's ``RectBivariateSpline``.

    mmseg 1.2.2 resamples it with ``scipy.interpolate.interp2d``, which SciPy 1.14 removed, so a
    checkpoint pretrained at another window size (every public one, at 224) failed at start-up.
    ``RectBivariateSpline`` is SciPy's stated replacement for ``interp2d`` on regular grids: the same
    interpolating cubic spline. The positions are mmseg's (a geometric sequence, as in BEiT).
    """

    def _geometric_sequence_interpolation(self, src_size, dst_size, sequence, num):
        left, right = 1.01, 1.5  # the ratio q of the sequence, by bisection (mmseg's code)
        while right - left > 1e-6:
            q = (left + right) / 2.0
            if (1.0 - q ** (src_size // 2)) / (1.0 - q) > dst_size // 2:
                right = q
            else:
                left = q
        distances = np.cumsum([1.0] + [q ** (i + 1) for i in range(src_size // 2 - 1)])
        source = np.concatenate([-distances[::-1], [0.0], distances])
        target = np.arange(-(dst_size // 2.0), dst_size // 2.0 + 0.1, 1.0)
        resampled = [
            RectBivariateSpline(source, source, sequence[:, i].view(src_size, src_size).float().numpy())(target, target)
            for i in range(num)
        ]
        return torch.cat([torch.tensor(r, dtype=torch.float32).reshape(-1, 1) for r in resampled], dim=-1).to(sequence)
