"""The one table `vldistill run` dispatches through: a recipe's ``job:`` names its job."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vldistill.config import recipe_job
from vldistill.core.errors import RecipeError
from vldistill.jobs.base import Job
from vldistill.jobs.classification.job import ClassificationJob
from vldistill.jobs.kbvqa.job import KBVQAJob
from vldistill.jobs.kv_prefix.job import KVPrefixJob
from vldistill.jobs.open_vocab.job import OpenVocabJob
from vldistill.jobs.vqa_kd.job import VQAKDJob

JOBS: dict[str, Job] = {job.name: job for job in (VQAKDJob(), KVPrefixJob(), KBVQAJob(),
                                                  OpenVocabJob(), ClassificationJob())}
DEFAULT_JOB = VQAKDJob.name


def job_named(name: str, source: str = "the recipe") -> Job:
    """The job called ``name``; an unknown name lists the jobs there are."""
    if name not in JOBS:
        listed = "; ".join(f"{job.name} ({job.title}, e.g. {job.example})"
                           for job in JOBS.values())
        raise RecipeError(f"{source}: job {name!r} is not a job of vldistill. Valid jobs: "
                          f"{listed}. Fix: set `job:` to one of them.")
    return JOBS[name]


def job_for_recipe(path: Path | None, overrides: Sequence[str] = ()) -> Job:
    """The job a recipe file (None: the built-in default) names with ``job:``."""
    source = f"recipe {path}" if path is not None else "the built-in default recipe"
    return job_named(recipe_job(path, overrides, DEFAULT_JOB), source)
