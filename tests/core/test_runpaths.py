"""The run folder's paths, and run names that could leave output_dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from vldistill.core.errors import RecipeError
from vldistill.core.runpaths import RunPaths, check_run_name, previous_path


def test_every_file_has_one_name():
    paths = RunPaths.of("runs", "default")
    assert paths.root == Path("runs/default")
    assert paths.weights("student-kd-seed0") == Path(
        "runs/default/checkpoints/student-kd-seed0-last.safetensors")
    assert paths.weights("teacher", "best").name == "teacher-best.safetensors"
    assert paths.weights("teacher", "").name == "teacher.safetensors"
    assert paths.resume_point("teacher").name == "teacher-resume.ckpt"
    assert paths.previous_resume_point("teacher").name == "teacher-resume.previous.ckpt"
    assert previous_path(paths.resume_point("x")) == paths.previous_resume_point("x")
    assert paths.done("teacher").name == "teacher-done.json"
    assert paths.metrics_csv("teacher") == Path("runs/default/logs/teacher/metrics.csv")
    assert paths.model_dir("reader-base") == Path("runs/default/checkpoints/reader-base")
    assert {paths.recipe.name, paths.versions.name, paths.results.name, paths.report.name,
            paths.learning_curves.name, paths.accuracy_vs_cost.name} == {
        "recipe.yaml", "versions.json", "results.json", "report.md", "learning_curves.png",
        "accuracy_vs_cost.png"}


@pytest.mark.parametrize("name", ["default", "vz-l500", "run_2.b", "lr=3e-3", "a+b"])
def test_plain_names_are_accepted(name):
    assert check_run_name(name) == name


@pytest.mark.parametrize("name", ["../escaped", "a/b", "/abs", ".hidden", "..", ".", "",
                                  "a\\b", "sp ace", "nul\x00"])
def test_names_that_are_not_one_plain_folder_are_refused(name):
    with pytest.raises(RecipeError, match="cannot name a run folder.*--set name="):
        check_run_name(name)


@pytest.mark.parametrize("example", ["recipes/default.yaml", "recipes/kbvqa.yaml",
                                     "recipes/open_vocab.yaml"])
def test_every_job_refuses_such_a_name_when_it_validates_the_recipe(example, tmp_path):
    from vldistill.jobs.table import job_for_recipe

    path = Path(__file__).parents[2] / example
    with pytest.raises(RecipeError, match=r"- name: recipe name '../escaped' cannot name a run"):
        job_for_recipe(path).load(path, [f"output_dir={tmp_path}", "name=../escaped"])
    assert list(tmp_path.iterdir()) == []
