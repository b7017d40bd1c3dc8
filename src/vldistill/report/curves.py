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
    """{role: curves} for every role with a ``metrics.csv`` under ``logs`` (sorted by role)."""
    found = {}
    for path in sorted(logs.glob("*/metrics.csv")):
        curves = read_curves(path)
        if curves:
            found[path.parent.name] = curves
    return found


def plot_learning_curves(logs: Path, out: Path, title: str = "learning curves") -> Path | None:
    """One row per trained model: its train loss per term (log scale) and its validation
    metrics over steps. None when the run trained nothing through the logger."""
    roles = collect(logs)
    if not roles:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(roles), 2, figsize=(11, 2.6 * len(roles)), squeeze=False)
    for (role, curves), (loss_axis, val_axis) in zip(roles.items(), axes):
        for column, (steps, values) in sorted(curves.items()):
            if column.startswith("train/"):
                loss_axis.plot(steps, values, label=column.removeprefix("train/"),
                               linewidth=1.2 if column == "train/loss" else 0.8)
            else:
                val_axis.plot(steps, values, marker="o", markersize=3,
                              label=column.removeprefix("val/"))
        loss_axis.set_title(f"{role}: train loss", fontsize=9)
        val_axis.set_title(f"{role}: validation", fontsize=9)
        if any(v > 0 for c, (_, vs) in curves.items() if c.startswith("train/") for v in vs):
            loss_axis.set_yscale("log")
        for axis in (loss_axis, val_axis):
            axis.set_xlabel("optimiser step", fontsize=8)
            axis.grid(alpha=0.3)
            if axis.has_data():
                axis.legend(fontsize=7, loc="best")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out
