"""The figures of an experiment: ``bars.png`` (drawn from the table's rows alone), ``fig4.png`` and
``fig5.png`` (like the paper's Fig. 4 and 5: encrypted images, and the trained models' segmentation maps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.catalogue import METHODS, METRICS, PAPER, SHORT
from experiments.report import Row, baseline_seeds


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(rows: list[Row], path: Path) -> None:
    """One panel per metric: a group of bars (one per method) per backbone and decoder, the baseline's seed range
    as an error bar, and the paper's Table I as a hatched reference group, on grey, where it has the decoders."""
    plt = _pyplot()
    main = {(r.backbone, r.decoder, r.method): r.metrics for r in rows if r.seed == 0}
    ours = list(dict.fromkeys((r.backbone, r.decoder) for r in rows))
    methods = list(dict.fromkeys(r.method for r in rows))
    paper_groups = [(b, d) for b in dict.fromkeys(k[0] for k in PAPER) for d in dict.fromkeys(d for _, d in ours)
                    if (b, d, "baseline") in PAPER]  # fmt: skip
    seeds = baseline_seeds(rows)
    groups = ours + paper_groups
    x = np.arange(len(groups)) + np.array([0] * len(ours) + [1] * len(paper_groups))  # a gap before the paper's
    width = 0.8 / len(methods)
    colours = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(len(METRICS), 1, figsize=(max(8.0, 0.8 * len(groups) + 2), 2.6 * len(METRICS) + 1.6), sharex=True)
    for k, (ax, metric) in enumerate(zip(axes, METRICS)):
        for i, method in enumerate(methods):
            offset = (i - (len(methods) - 1) / 2) * width
            heights = [main.get((*g, method), {}).get(metric, np.nan) for g in ours]
            low_high = [[h - min(s[metric] for s in seeds[g]), max(s[metric] for s in seeds[g]) - h]
                        if method == "baseline" and len(seeds.get(g, [])) > 1 else [0, 0] for g, h in zip(ours, heights)]  # fmt: skip
            ax.bar(x[: len(ours)] + offset, heights, width, color=colours[method], label=method,
                   yerr=np.array(low_high).T if method == "baseline" else None, capsize=2)  # fmt: skip
            paper = [PAPER.get((*g, method), (np.nan,) * 3)[k] for g in paper_groups]
            ax.bar(x[len(ours) :] + offset, paper, width, color=colours[method], alpha=0.55, hatch="///", edgecolor="white")
        if paper_groups:
            ax.axvspan(x[len(ours)] - 0.6, x[-1] + 0.6, color="0.93", zorder=0)
        ax.set_ylabel(f"{metric} (%)")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", color="0.85", linewidth=0.6)
        ax.set_axisbelow(True)
    # Short backbone names, so that neighbouring labels never meet; the paper's group is named once, above it.
    axes[-1].set_xticks(x, [f"{SHORT.get(b, b)}\n{d}" for b, d in groups], fontsize=8)
    if paper_groups:
        axes[0].text((x[len(ours)] + x[-1]) / 2, 101, "the paper's Table I (Cityscapes)", ha="center", va="bottom", fontsize=9)
    notes = ["hatched, on grey: the paper's values, a reference for the pattern, not the same models or data"] if paper_groups else []
    notes += ["error bars: the baseline's range over its seeds"] if any(len(s) > 1 for s in seeds.values()) else []
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(methods), fontsize=9, frameon=False)
    if notes:
        fig.text(0.5, 0.005, "; ".join(notes), ha="center", va="bottom", fontsize=8)
    fig.tight_layout(rect=(0, 0.35 / fig.get_figheight(), 1, 1 - 0.45 / fig.get_figheight()))
    fig.savefig(path, dpi=100)
    plt.close(fig)
def fig4(images: dict[str, np.ndarray], path: Path, block: int = 16) -> None:
    """The paper's Fig. 4: a plain image and its encryptions, whole and a 4x4-block detail with the block grid."""
    from matplotlib.patches import Rectangle

    plt = _pyplot()
    titles = {"plain": "plain", "shuffled": "encrypted: block-wise pixel shuffling",
              "negative-positive": "encrypted: shuffling + negative-positive"}  # fmt: skip
    h, w = images["plain"].shape[:2]
    size = 4 * block
    y, x = (max(0, min(n // 2 // block * block, n - size)) for n in (h, w))  # block-aligned, near the centre
    fig, axes = plt.subplots(2, len(images), figsize=(4.2 * len(images), 4.2 * h / w + 4.6), squeeze=False,
                             gridspec_kw={"height_ratios": (h / w, 1)})  # fmt: skip
    for j, (name, image) in enumerate(images.items()):
        top, detail = axes[0, j], axes[1, j]
        top.imshow(image)
        top.add_patch(Rectangle((x - 0.5, y - 0.5), size, size, fill=False, edgecolor="yellow", linewidth=1.5))
        top.set_title(titles[name], fontsize=10)
        detail.imshow(image[y : y + size, x : x + size], interpolation="nearest")
        lines = np.arange(block, size, block) - 0.5
        detail.hlines(lines, -0.5, size - 0.5, color="yellow", linewidth=0.8)
        detail.vlines(lines, -0.5, size - 0.5, color="yellow", linewidth=0.8)
        detail.set_title(f"detail: {size}x{size} pixels, {block}x{block} blocks", fontsize=9)
        for ax in (top, detail):
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def fig5(title: str, models: dict[str, tuple[object, Path]], bundles: dict[str, Path], path: Path, examples: int) -> None:
    """The paper's Fig. 5: input, encrypted input, ground truth and each method's prediction (one row each) for
    ``examples`` val images (one column each), with the Cityscapes palette's legend."""
    import torch
    import zarr
    from matplotlib.patches import Patch

    from contract.datasets import cityscapes
    from training.inference import LabelMaps, Segmenter

    plt = _pyplot()
    plain, encrypted = (zarr.open_group(str(bundles[kind] / "dataset.zarr"), mode="r")["val"] for kind in ("plain", "encrypted"))
    maps = LabelMaps.of(cityscapes())
    colours = maps.colours  # black for 255 (ignored)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    predictions = {}
    for name, (cfg, checkpoint) in models.items():
        source = plain if METHODS[name].bundle == "plain" else encrypted
        segmented = Segmenter(cfg, str(checkpoint), device).segment([source["images"][i] for i in range(examples)])
        predictions[METHODS[name].label] = [colours[m] for m in segmented]
    panels = {"input": [plain["images"][i] for i in range(examples)],
              "encrypted input": [encrypted["images"][i] for i in range(examples)],
              "ground truth": [colours[plain["labels"][i]] for i in range(examples)], **predictions}  # fmt: skip
    h, w = plain["images"].shape[1:3]
    fig, axes = plt.subplots(len(panels), examples, figsize=(4.2 * examples + 1.3, 4.2 * h / w * len(panels) + 1.6),
                             squeeze=False)  # fmt: skip
    for i, (label, images) in enumerate(panels.items()):
        axes[i, 0].set_ylabel(label.replace(" + ", "\n+ "), fontsize=10)
        for j, image in enumerate(images):
            axes[i, j].imshow(image, interpolation="nearest")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
    classes = [*maps.classes, "ignored"]
    handles = [Patch(facecolor=colours[i if i < 19 else 255] / 255, edgecolor="0.5", label=c) for i, c in enumerate(classes)]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=9, frameon=False)
    fig.suptitle(f"Segmentation maps ({title}; val images)", fontsize=11)
    fig.tight_layout(rect=(0, 1.1 / fig.get_figheight(), 1, 1 - 0.35 / fig.get_figheight()))  # room for the title
    fig.savefig(path, dpi=100)
    plt.close(fig)
