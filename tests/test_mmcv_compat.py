"""The mmcv.ops stand-in: mmseg imports with mmcv-lite, point_sample is exact, placeholders fail clearly."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from training import mmcv_compat


def test_mmseg_imports_every_module_that_imports_mmcv_ops_on_the_stand_in():
    """mmseg's modules that import from mmcv.ops load and register what they define, with the stand-in's names."""
    import mmseg.models  # noqa: F401
    from mmseg.models.decode_heads import point_head
    from mmseg.registry import MODELS

    assert point_head.point_sample is mmcv_compat.point_sample  # the stand-in's, not a compiled op
    for name in ("PointHead", "PSAHead", "CCHead", "FocalLoss"):  # defined next to an mmcv.ops import
        assert MODELS.get(name) is not None, name


def test_every_name_mmseg_imports_from_mmcv_ops_is_provided():
    import mmseg

    pattern = re.compile(r"from mmcv\.ops import ([\w, ]+)")
    names = set()
    for source in Path(mmseg.__file__).parent.rglob("*.py"):
        for match in pattern.finditer(source.read_text()):
            names.update(name.split(" as ")[0].strip() for name in match.group(1).split(","))
    assert names == {"point_sample", *mmcv_compat.PLACEHOLDERS}


def _reference_point_sample(image: np.ndarray, points: np.ndarray, align_corners: bool) -> np.ndarray:
    """Bilinear interpolation with zero padding, written out point by point."""
    n, c, h, w = image.shape
    out = np.zeros((n, c, points.shape[1]))
    for b in range(n):
        for p, (x, y) in enumerate(points[b]):
            # Pixel coordinates: corner pixels' centres at 0 and 1 (align_corners) or pixel edges.
            px, py = (x * (w - 1), y * (h - 1)) if align_corners else (x * w - 0.5, y * h - 0.5)
            x0, y0 = int(np.floor(px)), int(np.floor(py))
            for xi, yi in [(x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)]:
                weight = (1 - abs(px - xi)) * (1 - abs(py - yi))
                if 0 <= xi < w and 0 <= yi < h:
                    out[b, :, p] += weight * image[b, :, yi, xi]
    return out


@pytest.mark.parametrize("align_corners", [False, True])
def test_point_sample_matches_bilinear_reference(align_corners):
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(2, 3, 5, 7, generator=generator, dtype=torch.float64)
    points = torch.rand(2, 20, 2, generator=generator, dtype=torch.float64)
    sampled = mmcv_compat.point_sample(image, points, align_corners=align_corners)
    assert sampled.shape == (2, 3, 20)
    expected = _reference_point_sample(image.numpy(), points.numpy(), align_corners)
    np.testing.assert_allclose(sampled.numpy(), expected, atol=1e-12)
    # The grid form (N, Hg, Wg, 2) gives the same values as (N, C, Hg, Wg).
    grid = mmcv_compat.point_sample(image, points.view(2, 4, 5, 2), align_corners=align_corners)
    np.testing.assert_allclose(grid.reshape(2, 3, 20).numpy(), expected, atol=1e-12)


def test_placeholder_fails_clearly_when_used():
    from mmcv.ops import PSAMask, sigmoid_focal_loss

    with pytest.raises(RuntimeError, match=r"PSAMask needs the compiled mmcv ops; install full mmcv 2\.1\.0"):
        PSAMask("collect", (3, 3))
    with pytest.raises(RuntimeError, match="sigmoid_focal_loss needs the compiled mmcv ops"):
        sigmoid_focal_loss(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))
    assert not isinstance(torch.nn.Identity(), PSAMask)


@pytest.mark.slow  # a Python process of its own: ~11 s
def test_install_steps_aside_when_compiled_ops_exist():
    # A fresh interpreter where a (fake) compiled extension is importable: nothing is registered.
    script = (
        "import sys, types\n"
        "sys.modules['mmcv._ext'] = types.ModuleType('mmcv._ext')\n"
        "from training import mmcv_compat\n"
        "mmcv_compat.install()\n"
        "assert 'mmcv.ops' not in sys.modules, sys.modules['mmcv.ops']\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).parents[1])


@pytest.mark.slow  # a Python process importing torch and mmseg: ~20 s
def test_importing_the_cloud_side_changes_nothing():
    """No import side effects: the package and its command lines' modules neither patch mmcv nor load torch;
    the entry points do that explicitly (training.plugin.register)."""
    script = (
        "import sys\n"
        "import training, training.train, training.test, training.predict, training.export\n"
        "assert 'mmcv.ops' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)\n"
        "from training.plugin import register\n"
        "assert 'mmcv.ops' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).parents[1])
