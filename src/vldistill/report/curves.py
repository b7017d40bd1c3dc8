"""Learning curves: train loss per term and the validation metric over optimiser steps, for
every model a run trained, read back from the ``metrics.csv`` Lightning's CSV logger writes
under ``logs/<role>/``."""

from __future__ import annotations

import csv
import math
from pathlib import Path

Curve = tuple[list[int], list[float]]


def read_curves(metrics_csv: Path) -> dict[str, Curve]:
    """{column: (steps, values)} for every ``train/...`` and ``val/...`` column of one
    ``metrics.csv`` (rows without a value for a column are skipped; NaN is kept out)."""
    curves: dict[str, Curve] = {}
    with open(metrics_csv, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            step = row.get("step")
            if not step:
                continue
            for column, text in row.items():
                if not column or not column.startswith(("train/", "val/")) or not text:
                    continue
                value = float(text)
                if math.isfinite(value):
                    steps, values = curves.setdefault(column, ([], []))
                    steps.append(int(float(step)))
                    values.append(value)
    return curves


def collect(logs: Path) -> dict[str, dict[str, Curve]]:
    """{role: curves} for every role with a ``metrics.csv`` under ``logs`` (sorted by role).
    A fit that was resumed left the rows logged before its stop in
    ``metrics.before-resume-N.csv`` beside it: they are merged in, a later file's value winning
    at a step both have."""
    found = {}
    for folder in sorted({path.parent for path in logs.glob("*/metrics*.csv")}):
        parts = sorted(folder.glob("metrics.before-resume-*.csv"),
                       key=lambda p: int(p.stem.rsplit("-", 1)[1]))
        merged: dict[str, dict[int, float]] = {}
        for part in [*parts, folder / "metrics.csv"]:
            if part.is_file():
                for column, (steps, values) in read_curves(part).items():
                    merged.setdefault(column, {}).update(zip(steps, values))
        if merged:
            found[folder.name] = {column: (sorted(points), [points[s] for s in sorted(points)])
                                  for column, points in merged.items()}
    return found


def is_headline(column: str) -> bool:
    """A validation column that is a metric of its own, not a breakdown (``val/vqa_accuracy``,
    not ``val/vqa_accuracy/colour``)."""
    return column.startswith("val/") and "/" not in column.removeprefix("val/")


def plot_learning_curves(logs: Path, out: Path, title: str = "learning curves") -> Path | None:
    """The top row overlays every trained model: total train loss, and the validation metric
    (so learning speeds compare at a glance). Then one row per model: its train loss per term
    (log scale) and its validation metrics. None when nothing was trained through the logger.
    Per-type breakdowns stay in the report's tables."""
    roles = collect(logs)
    if not roles:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # a column for validation only when some model was validated in the loop
    columns = 2 if any(is_headline(c) for curves in roles.values() for c in curves) else 1
    figure, axes = plt.subplots(len(roles) + 1, columns,
                                figsize=(5.5 * columns, 2.8 * (len(roles) + 1)), squeeze=False)
    loss_all, val_all = axes[0][0], axes[0][-1]
    for role, curves in roles.items():
        if "train/loss" in curves:
            loss_all.plot(*curves["train/loss"], linewidth=1, label=role)
        for column in filter(is_headline, curves):
            val_all.plot(*curves[column], marker="o", markersize=3,
                         label=f"{role} {column.removeprefix('val/')}")
    loss_all.set_title("train loss, every model", fontsize=9)
    if columns == 2:
        val_all.set_title("validation, every model", fontsize=9)
    for (role, curves), row in zip(roles.items(), axes[1:]):
        loss_axis, val_axis = row[0], row[-1]
        for column, (steps, values) in sorted(curves.items()):
            if column.startswith("train/"):
                loss_axis.plot(steps, values, label=column.removeprefix("train/"),
                               linewidth=1.4 if column == "train/loss" else 0.9)
            elif is_headline(column) and columns == 2:
                val_axis.plot(steps, values, marker="o", markersize=3,
                              label=column.removeprefix("val/"))
        loss_axis.set_title(f"{role}: train loss per term", fontsize=9)
        if columns == 2:
            val_axis.set_title(f"{role}: validation", fontsize=9)
    for row in axes:
        loss_axis = row[0]
        if any(v > 0 for line in loss_axis.get_lines() for v in line.get_ydata()):
            loss_axis.set_yscale("log")
        for axis in row:
            axis.set_xlabel("optimiser step", fontsize=8)
            axis.tick_params(labelsize=7)
            axis.grid(alpha=0.3)
            if axis.has_data():
                axis.legend(fontsize=7, loc="best")
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0, 1, 0.985))
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out
