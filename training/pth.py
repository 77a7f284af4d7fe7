"""mmengine's ``.pth`` checkpoints, read without running code from them. Light to import (torch, no mmseg):
a command reads a checkpoint's provenance before it loads mmseg.
"""

from __future__ import annotations

from typing import Any

import fsspec
import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from numpy._core.multiarray import _reconstruct, scalar

# What mmengine's full training checkpoints hold besides tensors (the message hub's logs, numpy
# arrays and scalars): allowed for torch.load's weights_only mode, the default since torch 2.6, so
# that --resume works without unpickling arbitrary code. numpy pickles scalars' dtypes through
# getattr; weights_only still refuses to call anything it fetches that is not in this list. Allowed
# only while mmengine loads a .pth (load_pth), not process-wide: the owner's tools refuse them.
RESUME_GLOBALS = [
    HistoryBuffer,
    np.ndarray,
    np.dtype,
    _reconstruct,
    scalar,
    getattr,
    *(type(np.dtype(code)) for code in "?bBhHiIlLqQefdg"),
]


def load_pth(filename: str, map_location: Any = None) -> dict[str, Any]:
    """An mmengine checkpoint (local or an fsspec URL), unpickled in weights_only mode with RESUME_GLOBALS."""
    with fsspec.open(filename, "rb") as f, torch.serialization.safe_globals(RESUME_GLOBALS):
        return torch.load(f, map_location=map_location, weights_only=True)
