"""KV-prefix modulation on ShapesWorld (issue 9): do an expert's prefixes teach a frozen model?

    .venv/bin/python benchmarks/kv_prefix.py [--seeds 0 1 2] [--out runs] [--set k=v ...]

Runs ``recipes/kv_prefix.yaml``: a base VQA model trained on ShapesWorld's eight question types
and then frozen; the new task is image-level style questions ("What is the main pattern in
this picture?"), which the base never saw. Variants, each trained with the same budget on the
same 5,000 images:
- frozen: the base as it is;
- prefix: EfficientNet-Lite0 (ImageNet weights, frozen) -> MLP -> 8 K/V prefix tokens in each
  of the base's two cross-attention layers; only the MLP trains;
- prefix+lora: the same plus LoRA adapters (r = 8) on the base's queries, keys and answer MLP;
- prefix-no-expert: the same generator fed zeros, i.e. learned constant prefixes: the control
  that says how much comes from the expert's features rather than from training on the task.

Prints val VQA accuracy on style questions, object pattern questions, all pattern/style
questions together and overall (mean ± std over seeds), trainable and total parameters (the
total counts the frozen expert), and latency at batch 1 (the expert's pass included). Goal:
prefixes lift pattern/style accuracy by >= 5 points while training <= 5 % of the parameters.
Writes the table to OUT/<name>/kv_prefix.md too.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from pathlib import Path

from vldistill.config import load_recipe
from vldistill.jobs.base import finish_run
from vldistill.jobs.kv_prefix.job import run_kv_prefix
from vldistill.jobs.vqa_kd.data import load_val
from vldistill.jobs.vqa_kd.job import job_run

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "kv_prefix.yaml"
STYLE_TYPES = ("style", "pattern")


def cell(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.2f}" if len(values) == 1 else f"{mean:.2f} ± {statistics.pstdev(values):.2f}"


def pattern_and_style(run, counts: Counter) -> float:
    """VQA accuracy over the style and pattern questions together (question-weighted)."""
    metrics = run.predictions.metrics
    total = sum(counts.get(t, 0) for t in STYLE_TYPES)
    if not total:
        raise SystemExit("val has no style or pattern questions; keep data.style_questions > 0")
    return sum(metrics[f"vqa_accuracy/{t}"] * counts.get(t, 0) for t in STYLE_TYPES) / total


def table(result, results: dict, counts: Counter
          ) -> tuple[str, dict[str, dict[str, list[float]]]]:
    rows = {row["model"]: row for row in results["rows"]}
    scores: dict[str, dict[str, list[float]]] = {}
    for name, runs in [(result.teacher_label, [result.teacher]), *result.students.items()]:
        scores[name] = {
            "style": [r.predictions.metrics["vqa_accuracy/style"] for r in runs],
            "pattern": [r.predictions.metrics["vqa_accuracy/pattern"] for r in runs],
            "pattern+style": [pattern_and_style(r, counts) for r in runs],
            "all": [r.predictions.metrics["vqa_accuracy"] for r in runs]}
    lines = ["| model | style | object pattern | pattern + style | all | trainable | total "
             "params | latency b=1 ms |", "|---|---|---|---|---|---|---|---|"]
    for name, score in scores.items():
        row = rows[name]
        share = 100 * row["trainable_parameters"] / row["parameters"]
        lines.append(f"| {name} | {cell(score['style'])} | {cell(score['pattern'])} | "
                     f"{cell(score['pattern+style'])} | {cell(score['all'])} | "
                     f"{row['trainable_parameters']:,} ({share:.2f} %) | "
                     f"{row['parameters']:,} | {row['latency_ms']:.2f} |")
    return "\n".join(lines), scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="recipe override, e.g. --set student.train.max_steps=500")
    args = parser.parse_args()
    start = time.perf_counter()
    recipe = load_recipe(RECIPE, [f"seeds={args.seeds}", f"output_dir={args.out}",
                                  *args.overrides])
    result = run_kv_prefix(recipe)
    run = job_run(result)
    finish_run(run)
    results = run.results
    val, _ = load_val(recipe.data)
    counts = Counter(sample.question_type for sample in val)
    text, scores = table(result, results, counts)
    rows = {row["model"]: row for row in results["rows"]}
    lines = [text, ""]
    if "prefix" in scores and "frozen" in scores:
        gain = statistics.fmean(scores["prefix"]["pattern+style"]) - \
            statistics.fmean(scores["frozen"]["pattern+style"])
        share = 100 * rows["prefix"]["trainable_parameters"] / rows["prefix"]["parameters"]
        met = gain >= 5 and share <= 5
        lines.append(f"Prefixes vs the frozen model on pattern + style questions: {gain:+.2f} "
                     f"points, training {share:.2f} % of the parameters. Goal (>= +5 points, "
                     f"<= 5 %): {'met' if met else 'NOT met'}.")
    if "prefix" in scores and "prefix-no-expert" in scores:
        per_seed = [a - b for a, b in zip(scores["prefix"]["style"],
                                          scores["prefix-no-expert"]["style"])]
        lines.append(f"The expert's share (prefix - prefix-no-expert, style questions): "
                     f"{statistics.fmean(per_seed):+.2f} points (per seed "
                     f"{', '.join(f'{g:+.2f}' for g in per_seed)}).")
    lines.append(f"Seeds {args.seeds}; {counts['style']} style and {counts['pattern']} pattern "
                 f"questions of {len(val)} in val; wall time {time.perf_counter() - start:.0f} s.")
    report = "\n".join(lines)
    print(report)
    (result.run_dir / "kv_prefix.md").write_text(report + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
