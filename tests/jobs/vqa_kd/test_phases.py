"""Multi-phase distillation: phases hand over students, run alone, refuse a missing start."""

import pytest
from safetensors.torch import load_file

from vldistill.config import load_recipe
from vldistill.core.errors import RecipeError
from vldistill.jobs.vqa_kd.run import run_recipe

PHASES = ("distill.phases=["
          "{name: vision, terms: [{loss: contrastive, feature: image_embeds}]},"
          "{name: logits, terms: [{loss: loca, alpha: 0.9}, {loss: vqa_bce, weight: 0.5}],"
          " trainable: [student.head]},"
          "{name: both, terms: [{loss: contrastive}, {loss: loca}, {loss: vqa_bce}]}]")


def recipe(tiny_recipe_path, out, *extra):
    return load_recipe(tiny_recipe_path, [f"output_dir={out}", "name=phased", PHASES,
                                          "distill.baseline=false", *extra])


def test_three_phases_hand_over_the_student(tmp_path, tiny_recipe_path):
    result = run_recipe(recipe(tiny_recipe_path, tmp_path))
    checkpoints = tmp_path / "phased" / "checkpoints"
    for phase in ("vision", "logits", "both"):
        assert (checkpoints / f"student-kd-seed0-{phase}-last.safetensors").is_file(), phase
    assert result.students["student (KD)"][0].role == "student-kd-seed0-both"
    vision = load_file(checkpoints / "student-kd-seed0-vision-last.safetensors")
    logits = load_file(checkpoints / "student-kd-seed0-logits-last.safetensors")
    # phase 2 trains only student.head: every other parameter is exactly phase 1's result
    # (BatchNorm running statistics are buffers, not parameters: they follow the data)
    parameters = [n for n in vision if not n.endswith(("running_mean", "running_var",
                                                       "num_batches_tracked"))]
    assert any(n.startswith("head.") for n in parameters)
    for name in parameters:
        same = bool((vision[name] == logits[name]).all())
        assert same != name.startswith("head."), name
    assert not (vision["stem.convs.1.running_mean"] == logits["stem.convs.1.running_mean"]).all()


def test_single_phase_needs_the_previous_checkpoint(tmp_path, tiny_recipe_path):
    with pytest.raises(RecipeError, match="starts from phase 'vision', whose checkpoint .*"
                                          "student-kd-seed0-vision-last.safetensors does not "
                                          "exist. Run that phase first: `vldistill run RECIPE "
                                          "--phase vision`"):
        run_recipe(recipe(tiny_recipe_path, tmp_path), phase="logits")


def test_phases_run_one_at_a_time_reuse_teacher_and_previous_phase(tmp_path, tiny_recipe_path):
    first = run_recipe(recipe(tiny_recipe_path, tmp_path), phase="vision")
    second = run_recipe(recipe(tiny_recipe_path, tmp_path), phase="logits")
    assert first.students["student (KD)"][0].role == "student-kd-seed0-vision"
    assert second.students["student (KD)"][0].role == "student-kd-seed0-logits"
    assert second.teacher.train_time_s == 0.0          # loaded from the run folder
    assert second.teacher.predictions.metrics == first.teacher.predictions.metrics


def test_unknown_phase_and_bad_trainable_prefix(tmp_path, tiny_recipe_path):
    with pytest.raises(RecipeError, match="'nope' is not a phase of this recipe; its phases: "
                                          "vision, logits, both"):
        run_recipe(recipe(tiny_recipe_path, tmp_path), phase="nope")
    bad = recipe(tiny_recipe_path, tmp_path, "distill.phases.0.trainable=[student.decoder]")
    with pytest.raises(RecipeError, match="'student.decoder' matches no student parameter;"
                                          " the student's modules: .*student.head"):
        run_recipe(bad)


def test_duplicate_phase_names_refused(tiny_recipe_path):
    with pytest.raises(RecipeError, match="phase names \\['a'\\] appear twice"):
        load_recipe(tiny_recipe_path, ["distill.phases=[{name: a, terms: [{loss: kd}]},"
                                       " {name: a, terms: [{loss: kd}]}]"])
