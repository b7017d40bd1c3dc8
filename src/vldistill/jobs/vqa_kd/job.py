"""The VQA distillation job (``job: vqa_kd``, the default): the Job contract over
:func:`vldistill.jobs.vqa_kd.run.run_recipe`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel
from rich.markup import escape
from rich.table import Table

from vldistill.config import Recipe, load_recipe
from vldistill.core.runpaths import RunPaths
from vldistill.jobs.base import JobRun, RunOptions
from vldistill.jobs.vqa_kd.depth_report import depth_comparison
from vldistill.jobs.vqa_kd.run import run_recipe
from vldistill.jobs.vqa_kd.workspace import RunResult
from vldistill.report.results import gain_line, header, results_dict, table_rows, vqa_report


def results_table(results: dict) -> Table:
    """The results table as the console shows it."""
    table = Table(title=f"vldistill run {results['recipe']} (seeds {results['seeds']})")
    for column in header(results):
        table.add_column(escape(column), justify="left" if column == "model" else "right")
    for cells in table_rows(results):
        table.add_row(*cells)
    return table


def job_run(result: RunResult) -> JobRun:
    """A VQA run's results, report and console summary."""
    paths = RunPaths(result.run_dir)
    results = results_dict(result)
    summary = [results_table(results)] + ([line] if (line := gain_line(results)) else [])
    report = vqa_report(results, paths)
    if "depth_subsets" in results:
        table, headline = depth_comparison(results["depth_subsets"])
        report += ("\n\n## What depth can show: accuracy per question subset\n\n" + table +
                   "".join(f"\n\n{line}" for line in headline))
        summary += [table, *headline]
    return JobRun(paths, results, report, summary)


class VQAKDJob:
    """A teacher distilled into students, with and without KD, over seeds; one or several
    phases; online or cached teacher outputs."""

    name: ClassVar[str] = "vqa_kd"
    title: ClassVar[str] = "VQA distillation"
    schema: ClassVar[type[BaseModel]] = Recipe
    example: ClassVar[str] = "recipes/default.yaml"
    options: ClassVar[frozenset[str]] = frozenset({"phase", "resume", "teacher"})

    def load(self, path: Path | None, overrides: Sequence[str] = ()) -> Recipe:
        return load_recipe(path, overrides)

    def run(self, recipe: Recipe, options: RunOptions) -> JobRun:
        return job_run(run_recipe(recipe, options.phase, options.resume, options.recipe_hint))
