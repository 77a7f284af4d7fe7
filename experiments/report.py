"""The results of an experiment as tables: ``table.csv`` (the data, which the figures are drawn from) and
``report.md`` (the table with the paper's values beside it, each method's gap to the baseline beside the
baseline's seed spread, and what departs from what)."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

from experiments.catalogue import METHODS, METRICS, PAPER, PAPER_BESIDE, Settings


@dataclass
class Row:
    backbone: str
    decoder: str
    method: str
    seed: int
    metrics: dict[str, float]
    train_s: float
    paper: tuple[float, float, float] | None  # the paper's, for the backbone PAPER_BESIDE names


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _method(row: Row) -> str:
    return row.method + (f", seed {row.seed}" if row.seed else "")


COLUMNS = ["backbone", "decoder", "method", "seed", *METRICS, "paper_backbone", *(f"paper_{m}" for m in METRICS), "train_s"]


def write_csv(rows: list[Row], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for r in rows:
            paper = r.paper or ("",) * 3
            ours = (f"{r.metrics[m]:.2f}" for m in METRICS)
            beside = PAPER_BESIDE[r.backbone] if r.paper else ""
            writer.writerow([r.backbone, r.decoder, r.method, r.seed, *ours, beside, *paper, f"{r.train_s:.0f}"])


def read_csv(path: Path) -> list[Row]:
    """The rows :func:`write_csv` wrote (metrics as written, to two decimals)."""
    with open(path, newline="") as f:
        records = list(csv.DictReader(f))
    return [
        Row(r["backbone"], r["decoder"], r["method"], int(r["seed"]), {m: float(r[m]) for m in METRICS},
            float(r["train_s"]), tuple(float(r[f"paper_{m}"]) for m in METRICS) if r["paper_backbone"] else None)
        for r in records
    ]  # fmt: skip


def markdown_table(rows: list[Row]) -> str:
    """Table I's shape: backbone, decoder, method, our aAcc, mIoU, mAcc, and the paper's beside them."""
    lines = [
        "| backbone (paper's) | decoder | method | aAcc | mIoU | mAcc | paper aAcc | paper mIoU | paper mAcc |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    previous = (None, None)
    for r in rows:
        paper_backbone = PAPER_BESIDE[r.backbone]
        backbone = (r.backbone + (f" ({paper_backbone})" if paper_backbone != r.backbone else "")) if r.backbone != previous[0] else ""
        decoder = r.decoder if (r.backbone, r.decoder) != previous else ""
        previous = (r.backbone, r.decoder)
        ours = " | ".join(_cell(r.metrics[m]) for m in METRICS)
        paper = " | ".join(_cell(v) for v in (r.paper or (None,) * 3))
        lines.append(f"| {backbone} | {decoder} | {_method(r)} | {ours} | {paper} |")
    return "\n".join(lines)


def baseline_seeds(rows: list[Row]) -> dict[tuple[str, str], list[dict[str, float]]]:
    """{(backbone, decoder): the baseline's metrics, one per seed}."""
    seeds: dict[tuple[str, str], list[dict[str, float]]] = {}
    for r in rows:
        if r.method == "baseline":
            seeds.setdefault((r.backbone, r.decoder), []).append(r.metrics)
    return seeds


def seed_spread(rows: list[Row]) -> dict[tuple[str, str], float]:
    """{(backbone, decoder): max - min of the baseline's mIoU over its seeds}, where it has more than one."""
    spread = {cell: [m["mIoU"] for m in seeds] for cell, seeds in baseline_seeds(rows).items()}
    return {cell: max(v) - min(v) for cell, v in spread.items() if len(v) > 1}


def gap_table(rows: list[Row]) -> str:
    """mIoU per backbone and decoder: each method minus the baseline, ours and the paper's, beside the seed spread."""
    main = {(r.backbone, r.decoder, r.method): r for r in rows if r.seed == 0}
    spread = seed_spread(rows)
    compared = [m.label for m in METHODS.values() if m.label != "baseline" and any(k[2] == m.label for k in main)]
    paper_compared = [m for m in compared if any(key[2] == m for key in PAPER)]
    lines = [
        "| backbone | decoder | baseline | seed spread | "
        + " | ".join(f"{m} − baseline" for m in compared)
        + "".join(f" | paper: {m} − baseline" for m in paper_compared)
        + " |",
        "|---|---|---:|---:|" + "---:|" * (len(compared) + len(paper_compared)),
    ]
    for backbone, decoder in dict.fromkeys((r.backbone, r.decoder) for r in rows):
        base = main.get((backbone, decoder, "baseline"))
        if base is None:
            continue
        gaps = [main.get((backbone, decoder, m)) for m in compared]
        ours = [f"{g.metrics['mIoU'] - base.metrics['mIoU']:+.2f}" if g else "—" for g in gaps]
        paper_base = PAPER.get((PAPER_BESIDE[backbone], decoder, "baseline"))
        theirs = [PAPER.get((PAPER_BESIDE[backbone], decoder, m)) for m in paper_compared]
        theirs = [f"{p[1] - paper_base[1]:+.2f}" if p and paper_base else "—" for p in theirs]
        cells = [backbone, decoder, f"{base.metrics['mIoU']:.2f}", _cell(spread.get((backbone, decoder))), *ours, *theirs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def agreement(rows: list[Row]) -> list[str]:
    """How far the proposed method departs from the baseline, where, and against the baseline's seed spread."""
    baseline = {(r.backbone, r.decoder): r.metrics for r in rows if r.method == "baseline" and r.seed == 0}
    gaps = {(r.backbone, r.decoder, m): r.metrics[m] - baseline[r.backbone, r.decoder][m]
            for r in rows if r.method == "proposed" and r.seed == 0 and (r.backbone, r.decoder) in baseline
            for m in METRICS}  # fmt: skip
    if not gaps:
        return []
    largest = max(gaps, key=lambda k: abs(gaps[k]))
    lines = [f"Largest |proposed − baseline| over the metrics and cells: {abs(gaps[largest]):.2f} points "
             f"({', '.join(largest)})."]  # fmt: skip
    spread = seed_spread(rows)
    compared = {cell: gaps[(*cell, "mIoU")] for cell in spread if (*cell, "mIoU") in gaps}
    if compared:
        beyond = {cell: gap for cell, gap in compared.items() if abs(gap) > spread[cell]}
        text = (f"Proposed − baseline in mIoU lies within the baseline's own seed spread in "
                f"{len(compared) - len(beyond)} of {len(compared)} cells")  # fmt: skip
        if beyond:
            # Two runs of one method differ with sqrt(2) times one run's standard deviation.
            sd = math.sqrt(2) * pooled_sd(spread)
            text += "; beyond it in " + "; ".join(
                f"{b} / {d} ({gap:+.2f} against {spread[b, d]:.2f}: {abs(gap) / sd:.1f} standard deviations of the "
                f"difference of two runs, {sd:.2f} points)" for (b, d), gap in beyond.items()
            )
        lines.append(text + ".")
    return lines


def pooled_sd(spread: dict[tuple[str, str], float]) -> float:
    """One run's mIoU standard deviation, pooled over cells of two seeds each: sqrt(mean squared range / 2)."""
    return math.sqrt(sum(s * s for s in spread.values()) / len(spread) / 2)


def write_report(
    rows: list[Row], settings: Settings, sources: dict[str, str], path: Path, command: str, seconds: float
) -> None:
    spread = seed_spread(rows)
    chosen = {k: v for k, v in settings.__dict__.items() if k not in ("weights",)}
    lines = [
        "# Table I, reproduced",
        "",
        f"Command: `{command}`  ",
        f"Wall time: {seconds / 60:.1f} min ({seconds:.0f} s) on {os.cpu_count()} CPU cores"
        + (f" and {settings.gpus} GPUs" if settings.gpus else ""),
        "",
        f"Settings: {', '.join(f'{k}={v}' for k, v in chosen.items())}",
        "",
        "Pretrained backbones: " + "; ".join(f"{label}: {source}" for label, source in sources.items()) + ".",
        "",
        (
            "Metrics on the val split, percent (mmseg's IoUMetric). Every row trains with the same iterations and "
            "batch size, and with seed 0 but for the rows marked with another seed (the baseline again, to show "
            "how far a result moves from seed to seed). Conventional 1 is not trained in the cloud: it is the "
            "baseline's model, its patch embedding encrypted by the owner. The paper's columns are its Table I for "
            "the paper's backbone named in brackets (where our backbones are not the paper's: its ViT-B/16 beside "
            "the smaller, its ViT-L/16 beside the larger), the same decoder and method: a reference for the "
            "pattern across methods, not for the values (other data, other model sizes)."
        ),
        "",
        markdown_table(rows),
        "",
    ]
    if any(r.method == "baseline" for r in rows):
        lines += [
            "## Each method against the baseline (mIoU)",
            "",
            (
                "Each method's mIoU minus the baseline's (seed 0) in the same cell, and the paper's; the seed "
                "spread is the range of the baseline's mIoU over its seeds."
            ),
            "",
            gap_table(rows),
            "",
        ]
    if spread:
        lines += [
            (
                f"Seed spread over {len(spread)} cells: mean {sum(spread.values()) / len(spread):.2f}, largest "
                f"{max(spread.values()):.2f} mIoU points; the standard deviation of one run's mIoU, pooled over "
                f"the cells, is about {pooled_sd(spread):.2f} points (sqrt of the mean squared difference over 2)."
            ),
            "",
        ]
    lines += [line for text in agreement(rows) for line in (text, "")]
    lines += [
        "![bars](bars.png)",
        "",
        f"`bars.png` is drawn from `table.csv`: `python -m experiments bars {path.parent}` draws it again. `fig4.png`"
        " and `fig5.png` need the owner's key and the trained models: the command above makes them.",
        "",
        "![Fig. 4](fig4.png)",
        "",
        "![Fig. 5](fig5.png)",
        "",
    ]
    path.write_text("\n".join(lines))
