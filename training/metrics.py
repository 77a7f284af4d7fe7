"""Metrics on a bundle: mmseg's IoUMetric keeping its per-class table, and Cityscapes' own evaluation."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from mmengine.logging import print_log
from mmseg.evaluation import CityscapesMetric, IoUMetric
from mmseg.registry import METRICS
from PIL import Image


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


@METRICS.register_module()
class BundleCityscapesMetric(CityscapesMetric):
    """mmseg's CityscapesMetric, scored by cityscapesscripts' own evaluation, on a bundle.

    The predictions are written as Cityscapes labelIds PNGs named after their samples (with
    ``format_only``: a test-server submission, nothing scored). The ground truth is the bundle's labels
    (trainIds, 255 ignored), written as the labelIds files cityscapesscripts reads: every class it
    scores keeps its id, and every pixel it does not score (255) becomes 'unlabeled', which it ignores,
    so the scores are those of the original annotations. The bundle holds no instance ids: the
    instance-weighted scores are left out. Returns ``mIoU`` (cityscapesscripts' averageScoreClasses,
    in percent), ``category mIoU`` and ``per_class``.
    """

    def process(self, data_batch: dict, data_samples) -> None:
        if not self.format_only:
            truth = Path(self.output_dir).parent / f"{Path(self.output_dir).name}-ground-truth"
            truth.mkdir(parents=True, exist_ok=True)
            for sample in data_samples:
                label = self._convert_to_label_id(sample["gt_sem_seg"]["data"][0].cpu().numpy())
                path = truth / f"{Path(sample['img_path']).stem}_gtFine_labelIds.png"
                Image.fromarray(label.astype(np.uint8)).save(path)
                sample["seg_map_path"] = str(path)
        super().process(data_batch, data_samples)

    def compute_metrics(self, results: list) -> dict[str, float]:
        if self.format_only:
            print_log(f"the submission (Cityscapes labelIds PNGs) is in {os.path.abspath(self.output_dir)}", logger="current")
            return {}
        from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as evaluation

        evaluation.args.evalInstLevelScore = False  # the bundle holds no instance ids
        evaluation.args.evalPixelAccuracy = True
        evaluation.args.JSONOutput = False
        evaluation.args.quiet = True
        predictions, truths = zip(*results)
        scores = evaluation.evaluateImgLists(list(predictions), list(truths), evaluation.args)
        if not self.keep_results:
            shutil.rmtree(Path(truths[0]).parent, ignore_errors=True)
        self.per_class = {
            name: {"IoU": _percent(score)} for name, score in scores["classScores"].items() if not np.isnan(score)
        }
        return {"mIoU": 100 * scores["averageScoreClasses"], "category mIoU": 100 * scores["averageScoreCategories"]}
