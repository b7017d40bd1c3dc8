"""The run folder: every file a run writes, named in one place.

    runs/<name>/
        recipe.yaml              the resolved recipe
        versions.json            Python, platform and library versions
        results.json             every number of the run
        results.partial.json     while a job runs: the parts it has finished
        report.md                the tables, with the plots beside it
        learning_curves.png      train loss per term and the val metric, per trained model
        accuracy_vs_cost.png     accuracy against parameters and latency
        logs/<role>/             TensorBoard events and metrics.csv of each trained model
        checkpoints/             <role>-last|best.safetensors, resume points, done records
        teacher-cache/           the teacher-output cache (unless the recipe names another);
                                 teacher-cache/<part>/ when a run has several

No other module joins path strings for a run folder: code asks :class:`RunPaths`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vldistill.core.errors import RecipeError

# a run name is one plain folder name: it can never leave output_dir
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=+-]*")


def check_run_name(name: str) -> str:
    """``name`` when it is a plain folder name; else a RecipeError that says what is allowed."""
    if not _RUN_NAME.fullmatch(name) or name in (".", ".."):
        raise RecipeError(f"recipe name {name!r} cannot name a run folder: it becomes "
                          "output_dir/<name>, so it must be one plain folder name (letters, "
                          "digits, '_', '-', '.', '=', '+'; no '/' and no leading '.'). Fix: "
                          "--set name=my_run.")
    return name


def previous_path(resume_point: Path) -> Path:
    """Where the resume point before ``resume_point`` is kept (rotated at each write)."""
    return resume_point.with_name(resume_point.name.replace("-resume.ckpt",
                                                            "-resume.previous.ckpt"))


@dataclass(frozen=True)
class RunPaths:
    """The paths of one run folder (nothing is created until a writer asks for it)."""

    root: Path

    @classmethod
    def of(cls, output_dir: Path | str, name: str) -> RunPaths:
        return cls(Path(output_dir) / check_run_name(name))

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def versions(self) -> Path:
        return self.root / "versions.json"

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def partial_results(self) -> Path:
        """What a running job has finished so far (removed when results.json is written)."""
        return self.root / "results.partial.json"

    @property
    def learning_curves(self) -> Path:
        return self.root / "learning_curves.png"

    @property
    def accuracy_vs_cost(self) -> Path:
        return self.root / "accuracy_vs_cost.png"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def teacher_cache(self) -> Path:
        return self.root / "teacher-cache"

    def teacher_cache_of(self, part: str) -> Path:
        """``teacher-cache/<part>/``: one of several caches of a run (a seed's, a model's)."""
        return self.teacher_cache / part

    def weights(self, role: str, which: str = "last") -> Path:
        """``checkpoints/<role>-<which>.safetensors`` (which: last | best), or
        ``checkpoints/<role>.safetensors`` with ``which=""``."""
        return self.checkpoints / (f"{role}-{which}.safetensors" if which
                                   else f"{role}.safetensors")

    def model_dir(self, role: str) -> Path:
        """``checkpoints/<role>/``: a model saved as a folder (Hugging Face layout)."""
        return self.checkpoints / role

    def metrics_csv(self, role: str) -> Path:
        return self.logs / role / "metrics.csv"

    def resume_point(self, role: str) -> Path:
        return self.checkpoints / f"{role}-resume.ckpt"

    def previous_resume_point(self, role: str) -> Path:
        return previous_path(self.resume_point(role))

    def done(self, role: str) -> Path:
        return self.checkpoints / f"{role}-done.json"

    def has_checkpoints(self) -> bool:
        return self.checkpoints.is_dir() and any(self.checkpoints.iterdir())
