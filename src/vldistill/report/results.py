"""Turn a finished run into results.json, a table, report.md and a PNG plot.

Every number comes from the RunResult: nothing here computes or assumes a figure.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vldistill.core.fileio import atomic_write_text
from vldistill.core.runpaths import RunPaths


def summarise(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
            "std": statistics.pstdev(values) if len(values) > 1 else 0.0, "per_seed": values}


# the metric key a recipe's eval.metric reports, and its label in tables and plots
METRICS = {"vqa": ("vqa_accuracy", "VQA acc."), "vizwiz": ("vizwiz_accuracy", "VizWiz acc."),
           "classification": ("accuracy", "top-1 acc.")}
EXTRA_METRICS = ("unanswerable_ap", "unanswerable_f1")     # reported when the evaluator has them


def metric_key(results: dict[str, Any]) -> str:
    return results.get("metric", "vqa_accuracy")


def metric_label(results: dict[str, Any]) -> str:
    return {key: label for key, label in METRICS.values()}[metric_key(results)]


def results_dict(result: Any) -> dict[str, Any]:
    """The JSON-serialisable summary of a pipeline RunResult (see vldistill.jobs.vqa_kd.job)."""
    key = METRICS[result.recipe.eval.metric][0]
    teacher_accuracy = result.teacher.predictions.metrics[key]
    label = getattr(result, "teacher_label", "teacher")
    rows = [_row(label, [result.teacher], result.efficiency["teacher"], teacher_accuracy,
                 None, key)]
    for name, runs in result.students.items():
        rows.append(_row(name, runs, result.efficiency.get(name) or result.efficiency["student"],
                         teacher_accuracy,
                         result.agreement.get(name), key))
    trainable = getattr(result, "trainable", {})
    for row in rows:
        if row["model"] in trainable:
            row["trainable_parameters"] = trainable[row["model"]]
    out: dict[str, Any] = {
        "recipe": result.recipe.name, "seeds": result.recipe.seeds, "metric": key, "rows": rows,
        "wall_time_s": result.wall_time_s, "world_size": result.world_size,
        "per_question_type": {row["model"]: row.pop("per_question_type") for row in rows},
        **getattr(result, "extra", {}),
    }
    if {"student (no KD)", "student (KD)"} <= set(result.students):
        gains = [kd.predictions.metrics[key] - base.predictions.metrics[key]
                 for kd, base in zip(result.students["student (KD)"],
                                     result.students["student (no KD)"])]
        out["kd_gain"] = {**summarise(gains), "kd_wins_every_seed": all(g > 0 for g in gains)}
    return out


def _row(name: str, runs: list, efficiency: Any, teacher_accuracy: float,
         agreements: list[float] | None, metric: str = "vqa_accuracy") -> dict[str, Any]:
    accuracies = [run.predictions.metrics[metric] for run in runs]
    per_type: dict[str, list[float]] = {}
    for run in runs:
        for key, value in run.predictions.metrics.items():
            if key.startswith(metric + "/"):
                per_type.setdefault(key.split("/", 1)[1], []).append(value)
    extra = {key: summarise([run.predictions.metrics[key] for run in runs])
             for key in EXTRA_METRICS if all(key in run.predictions.metrics for run in runs)}
    return {
        "model": name, "seeds": [run.seed for run in runs],
        metric: summarise(accuracies), **extra,
        "parameters": efficiency.parameters, "latency_ms": efficiency.latency_ms,
        "throughput_qps": efficiency.throughput,
        "kept_of_teacher_pct": 100.0 * statistics.fmean(accuracies) / teacher_accuracy
        if teacher_accuracy else None,
        "train_time_s": summarise([run.train_time_s for run in runs]),
        "agreement_with_teacher_pct": summarise(agreements) if agreements else None,
        "checkpoints": [str(run.checkpoint) if run.checkpoint else None for run in runs],
        "per_question_type": {k: statistics.fmean(v) for k, v in sorted(per_type.items())},
    }


def _accuracy_cell(summary: dict[str, Any]) -> str:
    if len(summary["per_seed"]) == 1:
        return f"{summary['mean']:.2f}"
    return (f"{summary['mean']:.2f} ± {summary['std']:.2f} "
            f"[{summary['min']:.2f}–{summary['max']:.2f}]")


HEADER = ["model", "VQA acc. val % (mean ± std [min–max])", "params", "latency b=1 ms",
          "throughput q/s", "kept of teacher", "agrees w/ teacher", "train time s"]


def header(results: dict[str, Any]) -> list[str]:
    """The table's columns: the run's metric first, then answerability when it was measured."""
    columns = [HEADER[0], f"{metric_label(results)} val % (mean ± std [min–max])", *HEADER[2:]]
    if metric_key(results) == "accuracy":                  # one example is one image
        columns[columns.index("throughput q/s")] = "throughput img/s"
    if any("unanswerable_ap" in row for row in results["rows"]):
        columns[2:2] = ["unanswerable AP %", "unanswerable F1 %"]
    if _has_trainable(results):
        columns.insert(columns.index("params") + 1, "trainable")
    return columns


def _trainable_cell(row: dict[str, Any]) -> str:
    if "trainable_parameters" not in row:
        return "-"
    share = 100 * row["trainable_parameters"] / row["parameters"]
    return f"{row['trainable_parameters']:,} ({share:.2f} %)"


def _has_trainable(results: dict[str, Any]) -> bool:
    return any("trainable_parameters" in row for row in results["rows"])


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    answerability = any("unanswerable_ap" in row for row in results["rows"])
    for row in results["rows"]:
        agreement = row["agreement_with_teacher_pct"]
        extra = ([f"{row[k]['mean']:.1f}" if k in row else "-" for k in EXTRA_METRICS]
                 if answerability else [])
        rows.append([
            row["model"], _accuracy_cell(row[metric_key(results)]), *extra,
            f"{row['parameters']:,}",
            *([_trainable_cell(row)] if _has_trainable(results) else []),
            f"{row['latency_ms']:.2f}", f"{row['throughput_qps']:,.0f}",
            f"{row['kept_of_teacher_pct']:.1f} %" if row["kept_of_teacher_pct"] else "-",
            f"{agreement['mean']:.1f} %" if agreement else "-",
            f"{row['train_time_s']['mean']:.0f}",
        ])
    return rows


def markdown_table(results: dict[str, Any]) -> str:
    columns = header(results)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(results)]
    return "\n".join(lines)


def gain_line(results: dict[str, Any]) -> str:
    gain = results.get("kd_gain")
    if not gain:
        return ""
    per_seed = ", ".join(f"{g:+.1f}" for g in gain["per_seed"])
    verdict = "KD beats no-KD on every seed" if gain["kd_wins_every_seed"] else \
        "KD does NOT beat no-KD on every seed"
    return (f"KD gain over the no-KD student: {gain['mean']:+.2f} points mean "
            f"(per seed {per_seed}; seeds {results['seeds']}). {verdict}.")


@dataclass(frozen=True)
class Point:
    """One model in a cost panel: its score (error bar ``low``..``high``) at cost ``x``."""

    label: str
    x: float
    y: float
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Panel:
    xlabel: str
    ylabel: str
    points: list[Point]


def plot_panels(panels: list[Panel], path: Path, title: str) -> Path:
    """Score against cost, one log-x panel each (every job's accuracy_vs_cost.png). A point
    without a positive cost (BM25 has no parameters) is left off its panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for axis, panel in zip(axes[0], panels):
        for point in (p for p in panel.points if p.x and p.x > 0):
            error = None if point.low is None else [[point.y - point.low],
                                                    [point.high - point.y]]
            axis.errorbar([point.x], [point.y], yerr=error, fmt="o", capsize=4,
                          label=point.label)
        axis.set_xscale("log")
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.margins(x=0.15, y=0.1)
        low, high = axis.get_xlim()
        if high / low < 10:          # within one decade no major tick shows: label 2x and 5x
            axis.xaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
            axis.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: _short(x)))
        axis.set_xlabel(panel.xlabel)
        axis.set_ylabel(panel.ylabel)
        axis.grid(alpha=0.3)
        axis.legend(loc="best", fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _short(x: float) -> str:
    """A tick label: 2k, 500k, 20M, 0.5."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= size:
            return f"{x / size:g}{suffix}"
    return f"{x:g}"


def plot(results: dict[str, Any], path: Path) -> Path:
    """Accuracy against parameters and against latency, error bars = min..max over seeds."""
    def points(cost: str) -> list[Point]:
        return [Point(row["model"], row[cost], row[metric_key(results)]["mean"],
                      row[metric_key(results)]["min"], row[metric_key(results)]["max"])
                for row in results["rows"]]
    ylabel = f"{metric_label(results)}, val (%)"
    return plot_panels([Panel("parameters", ylabel, points("parameters")),
                        Panel("latency at batch 1, CPU (ms)", ylabel, points("latency_ms"))],
                       path, f"vldistill run {results['recipe']}: accuracy vs size and latency")


def per_type_table(results: dict[str, Any]) -> str:
    per_type = results["per_question_type"]
    types = sorted({t for values in per_type.values() for t in values})
    lines = ["| question type | " + " | ".join(per_type) + " |", "|" + "---|" * (len(per_type) + 1)]
    for name in types:
        cells = [f"{per_type[m].get(name, float('nan')):.1f}" for m in per_type]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_run_files(paths: RunPaths, results: dict[str, Any], report: str) -> Path:
    """A finished run's ``results.json`` and ``report.md`` (returned), each written atomically
    so a kill never leaves half a file for ``--resume`` or a reader to trip over. Every job
    writes its results here."""
    atomic_write_text(paths.results, json.dumps(results, indent=2) + "\n")
    atomic_write_text(paths.report, report + "\n")
    return paths.report


def vqa_report(results: dict[str, Any], paths: RunPaths) -> str:
    """The VQA jobs' report.md text; draws accuracy_vs_cost.png beside it."""
    image = plot(results, paths.accuracy_vs_cost)
    return "\n\n".join([
        f"# vldistill run: {results['recipe']}",
        markdown_table(results), gain_line(results),
        f"Accuracy is mean ± std (min–max) over seeds {results['seeds']}; latency is the median "
        "of one image + one question on CPU; throughput counts questions per second; whole run "
        f"{results['wall_time_s']:.0f} s.",
        f"![accuracy against parameters and latency]({image.name})",
        f"## {metric_label(results)} per "
        f"{'answer' if metric_key(results) == 'vizwiz_accuracy' else 'question'} type "
        "(mean over seeds)", per_type_table(results),
        "Files: `recipe.yaml` (resolved recipe), `versions.json`, `results.json`, "
        "`checkpoints/`, `logs/` (TensorBoard and CSV).",
    ])
