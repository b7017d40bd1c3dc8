"""The engine around every job: the run folder it opens and the files it finishes with."""

from __future__ import annotations

import json

import pytest

from vldistill.config import load_recipe
from vldistill.core.errors import RecipeError
from vldistill.core.runpaths import RunPaths
from vldistill.jobs.base import JobRun, finish_run, open_run_folder, save_progress


def test_a_stopped_job_leaves_its_finished_parts_and_a_finished_one_its_results(tmp_path):
    paths = RunPaths(tmp_path / "run")
    open_run_folder(paths, load_recipe(None, [f"output_dir={tmp_path}", "name=run"]))
    save_progress(paths, {"rows": {"teacher": [{"accuracy": 91.0}]}})
    assert json.loads(paths.partial_results.read_text())["rows"]["teacher"][0]["accuracy"] == 91
    assert not paths.results.exists()
    finish_run(JobRun(paths, {"rows": [1, 2]}, "# report"))
    assert json.loads(paths.results.read_text()) == {"rows": [1, 2]}
    assert paths.report.read_text() == "# report\n"          # nothing trained: no curves
    assert not paths.partial_results.exists()


def test_resume_refuses_a_folder_started_with_another_recipe(tmp_path):
    recipe = load_recipe(None, [f"output_dir={tmp_path}", "name=run"])
    paths = open_run_folder(RunPaths(tmp_path / "run"), recipe)
    assert paths.recipe.is_file() and paths.versions.is_file()
    open_run_folder(paths, recipe, resume=True)                # the same recipe: fine
    changed = load_recipe(None, [f"output_dir={tmp_path}", "name=run", "seeds=[3]"])
    with pytest.raises(RecipeError, match="differs from the one the run .* at seeds"):
        open_run_folder(paths, changed, resume=True)
