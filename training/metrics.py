"""mmseg's IoUMetric, keeping the per-class table it otherwise only logs."""

from __future__ import annotations

import numpy as np
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS


@METRICS.register_module()
class PerClassIoUMetric(IoUMetric):
    """IoUMetric whose last per-class IoU and accuracy (percent, None where undefined) stay in ``per_class``."""

    per_class: dict[str, dict[str, float | None]]

    def compute_metrics(self, results: list) -> dict[str, float]:
        summary = super().compute_metrics(results)
        intersect, union, predicted, label = (sum(parts) for parts in zip(*results))
        table = self.total_area_to_metrics(intersect, union, predicted, label, ["mIoU"], self.nan_to_num, self.beta)
        self.per_class = {
            name: {metric: _percent(table[metric][i]) for metric in ("IoU", "Acc")}
            for i, name in enumerate(self.dataset_meta["classes"])
        }
        return summary


def _percent(value) -> float | None:
    value = float(value)
    return None if np.isnan(value) else round(100 * value, 2)
