"""The files every job writes in its run folder (see vldistill.core.runpaths)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from vldistill.core.runpaths import RunPaths

EVERY_JOB = ("recipe", "versions", "results", "report", "accuracy_vs_cost")


def check_run_folder(root: Path, job: str, curves: bool) -> RunPaths:
    """Every job's files are there and readable; ``curves``: the job trained through the
    Lightning engine, so each trained model has a metrics.csv and the run its learning curves."""
    paths = RunPaths(Path(root))
    for name in EVERY_JOB:
        assert getattr(paths, name).is_file(), f"{job}: {name} missing in {root}"
    assert yaml.safe_load(paths.recipe.read_text())["job"] == job
    versions = json.loads(paths.versions.read_text())
    assert {"python", "vldistill", "torch"} <= set(versions)
    assert json.loads(paths.results.read_text())
    assert paths.checkpoints.is_dir() and any(paths.checkpoints.iterdir())
    if curves:
        assert paths.learning_curves.is_file()
        assert list(paths.logs.glob("*/metrics.csv"))
        assert "learning_curves.png" in paths.report.read_text()
    return paths
