"""Recipes: every shipped recipe validates; bad input names the field, the value and the fix."""

from pathlib import Path

import pytest

from vldistill.config import Recipe, dump_recipe, load_recipe, recipe_from_dict, recipe_job
from vldistill.core.errors import RecipeError
from vldistill.jobs.table import JOBS, job_for_recipe

ALL_RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))
# VQA recipes (vqa_kd, kv_prefix); the other jobs' recipes have schemas of their own
RECIPES = [p for p in ALL_RECIPES if recipe_job(p) in ("vqa_kd", "kv_prefix")]
TASK_RECIPES = [p for p in ALL_RECIPES if p not in RECIPES]


@pytest.mark.parametrize("path", TASK_RECIPES, ids=lambda p: p.name)
def test_every_shipped_task_recipe_validates_with_its_schema(path):
    job = job_for_recipe(path)
    assert job.load(path).job == recipe_job(path) == job.name
    with pytest.raises(RecipeError, match=f"job: {recipe_job(path)}"):
        load_recipe(path)


@pytest.mark.parametrize("path", ALL_RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_names_its_job(path):
    assert "job" in __import__("yaml").safe_load(path.read_text())
    assert job_for_recipe(path) is JOBS[recipe_job(path)]


def test_every_job_ships_an_example_recipe():
    shipped = {p.name for p in ALL_RECIPES}
    for job in JOBS.values():
        assert Path(job.example).name in shipped, job.name
        assert job.load(Path(__file__).parents[1] / job.example).job == job.name


def test_the_old_task_key_names_the_new_key(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("task: kbvqa\nname: old\n")
    with pytest.raises(RecipeError, match=r"`task:` was renamed `job:`.*job: kbvqa"):
        job_for_recipe(path)


def test_an_unknown_job_lists_the_jobs(tmp_path):
    path = tmp_path / "other.yaml"
    path.write_text("job: segmentation\n")
    with pytest.raises(RecipeError, match=r"job 'segmentation' is not a job.*vqa_kd.*kbvqa"):
        job_for_recipe(path)
    with pytest.raises(RecipeError, match="job 'nope'"):
        job_for_recipe(None, ["job=nope"])


def test_job_and_the_kv_prefix_section_go_together():
    with pytest.raises(RecipeError, match="job: kv_prefix and the kv_prefix section go together"):
        recipe_from_dict({"job": "kv_prefix"})


def test_recipes_are_shipped():
    assert any(p.name == "default.yaml" for p in RECIPES)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    # the resolved recipe round-trips through YAML
    assert recipe_from_dict(__import__("yaml").safe_load(dump_recipe(recipe))) == recipe


def test_default_yaml_equals_builtin_default():
    assert load_recipe(Path(__file__).parents[1] / "recipes" / "default.yaml") == load_recipe()


def test_unknown_key_lists_valid_keys():
    with pytest.raises(RecipeError) as error:
        recipe_from_dict({"distill": {"temprature": 2}})
    message = str(error.value)
    assert "distill.temprature: unknown key" in message
    assert "terms, phases, transfer_fraction, baseline" in message


def test_unknown_nested_key_lists_valid_keys():
    with pytest.raises(RecipeError, match="teacher.train.optim.learning_rate: unknown key. "
                                          "Valid keys here: optimizer, lr"):
        recipe_from_dict({"teacher": {"train": {"optim": {"learning_rate": 1}}}})


def test_wrong_type_names_field_and_value():
    with pytest.raises(RecipeError) as error:
        recipe_from_dict({"student": {"train": {"max_steps": "many"}}})
    assert "student.train.max_steps" in str(error.value)
    assert "'many'" in str(error.value)


def test_every_error_reported_at_once():
    with pytest.raises(RecipeError) as error:
        recipe_from_dict({"seeds": [], "distill": {"transfer_fraction": 2.0}, "bogus": 1})
    message = str(error.value)
    assert "3 problem(s)" in message
    assert "seeds" in message and "distill.transfer_fraction" in message and "bogus" in message


def test_unknown_loss_and_loss_parameter():
    from vldistill.kd.losses import LOSSES

    with pytest.raises(RecipeError, match="unknown loss 'hinton'; valid: "
                                          + ", ".join(LOSSES.names())):
        recipe_from_dict({"distill": {"terms": [{"loss": "hinton"}]}})
    with pytest.raises(RecipeError, match="loss 'kd' has no parameter.*temp.*valid: temperature"):
        recipe_from_dict({"distill": {"terms": [{"loss": "kd", "temp": 4}]}})


def test_unknown_model_parameter_lists_valid_ones():
    with pytest.raises(RecipeError, match="no parameter\\(s\\) depth; valid: width"):
        recipe_from_dict({"student": {"model": {"params": {"depth": 3}}}})


def test_overrides_set_nested_fields_and_list_items():
    recipe = load_recipe(None, ["distill.terms.1.temperature=4", "seeds=[3, 4, 5]",
                                "data.shapesworld.train_images=100"])
    assert recipe.distill.terms[1].params == {"temperature": 4}
    assert recipe.seeds == [3, 4, 5]
    assert recipe.data.shapesworld.train_images == 100


def test_bad_override_syntax_and_index():
    with pytest.raises(RecipeError, match="path.to.field=value"):
        load_recipe(None, ["seeds"])
    with pytest.raises(RecipeError, match="use an index 0..1"):
        load_recipe(None, ["distill.terms.7.weight=1"])


def test_missing_and_malformed_recipe_files(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  source: [unclosed\n")
    with pytest.raises(RecipeError, match=r"bad.yaml is not valid YAML at line \d+, column \d+"):
        load_recipe(bad)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(RecipeError, match="not UTF-8"):
        load_recipe(binary)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(RecipeError, match="mapping of sections"):
        load_recipe(scalar)


def test_override_does_not_merge_defaults_into_user_sections(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("student:\n  model:\n    params: {width: 8}\n")
    plain = load_recipe(path)
    overridden = load_recipe(path, ["name=other"])
    assert overridden.student == plain.student
    assert overridden.student.model.params == {"width": 8}


def test_override_into_default_list_on_a_recipe_without_it(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: mine\n")
    recipe = load_recipe(path, ["distill.terms.1.temperature=3"])
    assert [t.loss for t in recipe.distill.terms] == ["vqa_bce", "kd"]
    assert recipe.distill.terms[1].params == {"temperature": 3}


def test_loss_hyper_parameter_values_are_checked():
    with pytest.raises(RecipeError, match=r"distill.terms.1: .*temperature must be > 0"):
        load_recipe(None, ["distill.terms.1.temperature=-1"])
    with pytest.raises(RecipeError, match=r"distill.terms.1: loss 'kd'"):
        load_recipe(None, ["distill.terms.1.temperature=abc"])


def test_model_parameter_value_error_names_the_params_path():
    with pytest.raises(RecipeError, match=r"student.model: params.width: Input should be greater "
                                          r"than or equal to 4 \(got 1\)"):
        load_recipe(None, ["student.model.params.width=1"])
