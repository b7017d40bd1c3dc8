"""The Job contract and the run folder every job shares.

A job is one kind of run (VQA distillation, KV-prefix modulation, knowledge-based VQA,
open-vocabulary distillation, image classification). It names its recipe schema and runs a
validated recipe; the engine around it (this module, :mod:`vldistill.train`,
:mod:`vldistill.report`) opens the run folder, trains, and writes the same files for every job:

    open_run_folder()   recipe.yaml (resolved) and versions.json, written by rank 0; with
                        --resume, a check that the folder was started with this recipe
    finish_run()        results.json, report.md, learning_curves.png, by rank 0

``vldistill run RECIPE`` reads the recipe's ``job:`` and dispatches through the table in
:mod:`vldistill.jobs.table`; nothing below this package knows which jobs exist.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch.distributed as dist
import yaml
from pydantic import BaseModel

from vldistill.config import dump_recipe
from vldistill.core.console import console
from vldistill.core.errors import RecipeError
from vldistill.core.fileio import atomic_write_text
from vldistill.core.hashing import json_hash, nested_differences
from vldistill.core.ranks import is_global_zero
from vldistill.core.runpaths import RunPaths
from vldistill.core.versions import library_versions
from vldistill.report.curves import plot_learning_curves
from vldistill.report.results import write_run_files


@dataclass(frozen=True)
class RunOptions:
    """How to run a recipe, besides the recipe itself (command-line flags)."""

    phase: str | None = None      # one phase of a multi-phase student (VQA jobs)
    resume: bool = False          # continue the run in its folder where it stopped
    recipe_hint: str = "RECIPE"   # how messages name the recipe in commands they suggest


@dataclass
class JobRun:
    """What a finished job hands back: its folder, every number, the report and the lines
    the console prints."""

    paths: RunPaths
    results: dict[str, Any]
    report: str
    summary: list[str] = field(default_factory=list)


class Job(Protocol):
    """One kind of run. ``name`` is the recipe's ``job:`` value; ``schema`` validates its
    recipes (one pydantic model, unknown keys refused); ``example`` is the shipped recipe that
    shows every section."""

    name: ClassVar[str]
    title: ClassVar[str]
    schema: ClassVar[type[BaseModel]]
    example: ClassVar[str]
    # flags of `vldistill run` this job understands (others are refused with its name)
    options: ClassVar[frozenset[str]]

    def load(self, path: Path | None, overrides: Sequence[str] = ()) -> BaseModel: ...

    def run(self, recipe: Any, options: RunOptions) -> JobRun: ...


# recipe fields that change only what is displayed, not what is trained
DISPLAY_ONLY = ("trainer.progress_bar",)


def world_size() -> int:
    """Processes in the run: torch.distributed's, once Lightning's DDP has set it up, else the
    launcher's ``WORLD_SIZE`` (torchrun, or Lightning's own launch; a run whose models all
    finished before, resumed, never starts a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def recipe_data(recipe: BaseModel) -> dict[str, Any]:
    """The resolved recipe as plain data, display-only settings left out: what decides the
    results, and so what resume files are stamped with."""
    data = yaml.safe_load(dump_recipe(recipe))
    for key in DISPLAY_ONLY:
        section, name = key.split(".")
        data.get(section, {}).pop(name, None)
    return data


def recipe_stamp(recipe: BaseModel) -> str:
    """A short hash of :func:`recipe_data`: resume files written under another stamp belong to
    another recipe and are not used."""
    return json_hash(recipe_data(recipe))[:16]


def open_run_folder(paths: RunPaths, recipe: BaseModel, resume: bool = False) -> RunPaths:
    """Create the run folder; rank 0 writes the resolved recipe and the library versions there
    (atomically). With ``resume`` the recipe saved there must match this one."""
    if resume:
        check_same_recipe(paths, recipe)
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    if is_global_zero():
        for path, text in ((paths.recipe, dump_recipe(recipe)),
                           (paths.versions, json.dumps(library_versions(), indent=2) + "\n")):
            atomic_write_text(path, text)
    return paths


def check_same_recipe(paths: RunPaths, recipe: BaseModel) -> None:
    """Resuming continues the run in ``paths``: refuse when its recipe differs from this one.
    A run killed before it wrote anything (no recipe.yaml, no checkpoints) simply starts."""
    if not paths.recipe.is_file():
        if paths.has_checkpoints():
            raise RecipeError(f"--resume: {paths.root} has checkpoints but no recipe.yaml, so "
                              "it cannot be checked against this recipe. Restore the file, or "
                              "run without --resume to start over.")
        console.print(f"--resume: nothing was saved in {paths.root} yet (the run stopped before "
                      f"its first write); starting {paths.root.name!r} from the beginning")
        return
    saved = yaml.safe_load(paths.recipe.read_text(encoding="utf-8"))
    current = yaml.safe_load(dump_recipe(recipe))
    differences = [key for key in nested_differences(saved, current)
                   if key not in DISPLAY_ONLY]
    if differences:
        raise RecipeError(
            f"--resume: this recipe differs from the one the run in {paths.root} was started "
            f"with, at {', '.join(differences[:8])}{' …' if len(differences) > 8 else ''}. "
            f"Resume with the same recipe ({paths.recipe}), or start a new run under another "
            "name (--set name=...).")


def save_progress(paths: RunPaths, results: dict[str, Any]) -> None:
    """Rank 0 writes what a running job has finished so far (``results.partial.json``), so a
    run stopped after an hour leaves its finished parts on disk."""
    if is_global_zero():
        atomic_write_text(paths.partial_results, json.dumps(results, indent=2) + "\n")


def execute(job: Job, recipe: Any, options: RunOptions = RunOptions()) -> JobRun:
    """Run a validated recipe of ``job`` and write its run folder's results, report and
    curves."""
    run = job.run(recipe, options)
    finish_run(run)
    return run


def finish_run(run: JobRun) -> Path:
    """Rank 0 writes the run's results.json, report.md and learning curves (other ranks write
    nothing); returns the report's path."""
    if not is_global_zero():
        return run.paths.report
    curves = plot_learning_curves(run.paths.logs, run.paths.learning_curves,
                                  title=f"vldistill run {run.paths.root.name}: learning curves")
    report = run.report
    if curves is not None:
        report += f"\n\n## Learning curves\n\n![train loss and val metric]({curves.name})"
    written = write_run_files(run.paths, run.results, report)
    run.paths.partial_results.unlink(missing_ok=True)
    return written
