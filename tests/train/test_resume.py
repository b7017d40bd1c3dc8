"""Resume: a run stopped at any resume point finishes exactly as one that never stopped."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

import vldistill.train.fit as fit_module
from vldistill.config import load_recipe
from vldistill.core.errors import RecipeError
from vldistill.data.batches import MixedBatchSampler
from vldistill.jobs.vqa_kd.run import run_recipe
from vldistill.train.resume import ResumeError, load_training_state

PHASES = ("distill.phases=[{name: vision, terms: [{loss: contrastive}, {loss: vqa_bce}]},"
          "{name: logits, terms: [{loss: kd}, {loss: vqa_bce}]}]")


class Crash(RuntimeError):
    pass


class CrashAt(L.Callback):
    """Stands in for `kill -9`: stops one role's training after a given optimiser step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise Crash(f"simulated crash after step {self.step}")


@pytest.fixture
def crash_role(monkeypatch):
    """crash_role(role, step): the next fit of ``role`` crashes after ``step``."""
    pending = {}
    original = fit_module.build_trainer

    def build_trainer(settings, train, log_dir, role, callbacks, has_val):
        if role in pending:
            callbacks = [*callbacks, CrashAt(pending.pop(role))]
        return original(settings, train, log_dir, role, callbacks, has_val)

    monkeypatch.setattr(fit_module, "build_trainer", build_trainer)
    return pending.__setitem__


def tiny(tiny_recipe_path, out, *extra):
    # the KD student: 6 batches an epoch (4 labelled images each), 8 steps, validation after
    # steps 4 and 8, resume points after step 3, 4 (validation), 6 and 8
    return load_recipe(tiny_recipe_path, [f"output_dir={out}", "name=r", "distill.baseline=false",
                                          "student.train.checkpoint_every_n_steps=3", *extra])


def weights(run, role):
    return load_file(run.run_dir / "checkpoints" / f"{role}-last.safetensors")


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    recipe_path = Path(__file__).resolve().parents[2] / "recipes" / "tiny.yaml"
    return run_recipe(tiny(recipe_path, tmp_path_factory.mktemp("whole")))


# resume from a point saved after a batch in mid-epoch (3), after a validation (4), at the end
# of an epoch (6)
@pytest.mark.parametrize("crash_after", [4, 5, 7])
def test_kd_student_resumes_to_identical_weights(tmp_path, tiny_recipe_path, crash_role,
                                                 uninterrupted, crash_after):
    recipe = tiny(tiny_recipe_path, tmp_path)
    crash_role("student-kd-seed0", crash_after)
    with pytest.raises(Crash):
        run_recipe(recipe)
    checkpoints = tmp_path / "r" / "checkpoints"
    state = load_training_state(checkpoints / "student-kd-seed0-resume.ckpt")
    assert state["global_step"] == {4: 3, 5: 4, 7: 6}[crash_after]
    assert not any(k.startswith("step.teacher.") for k in state["state_dict"])
    assert not (checkpoints / "student-kd-seed0-done.json").exists()
    teacher_before = (checkpoints / "teacher-last.safetensors").stat().st_mtime_ns

    resumed = run_recipe(recipe, resume=True)
    # finished models are not trained again
    assert (checkpoints / "teacher-last.safetensors").stat().st_mtime_ns == teacher_before
    assert_same_weights(weights(resumed, "student-kd-seed0"),
                        weights(uninterrupted, "student-kd-seed0"))
    # the best-model record survived too (the resume point is taken after the validation)
    assert_same_weights(
        load_file(checkpoints / "student-kd-seed0-best.safetensors"),
        load_file(uninterrupted.run_dir / "checkpoints" / "student-kd-seed0-best.safetensors"))
    assert resumed.students["student (KD)"][0].predictions.metrics == \
        uninterrupted.students["student (KD)"][0].predictions.metrics
    done = json.loads((checkpoints / "student-kd-seed0-done.json").read_text())
    assert done["steps"] == 8


def test_resume_inside_a_phase(tmp_path, tiny_recipe_path, crash_role):
    whole = run_recipe(tiny(tiny_recipe_path, tmp_path / "whole", PHASES))
    recipe = tiny(tiny_recipe_path, tmp_path / "cut", PHASES)
    crash_role("student-kd-seed0-logits", 7)
    with pytest.raises(Crash):
        run_recipe(recipe)
    checkpoints = tmp_path / "cut" / "r" / "checkpoints"
    vision_before = (checkpoints / "student-kd-seed0-vision-last.safetensors").stat().st_mtime_ns
    resumed = run_recipe(recipe, resume=True)
    assert (checkpoints / "student-kd-seed0-vision-last.safetensors").stat().st_mtime_ns == \
        vision_before                                   # the finished phase is not redone
    assert_same_weights(weights(resumed, "student-kd-seed0-logits"),
                        weights(whole, "student-kd-seed0-logits"))


def test_fresh_run_forgets_old_resume_points(tmp_path, tiny_recipe_path, crash_role):
    recipe = tiny(tiny_recipe_path, tmp_path)
    crash_role("student-kd-seed0", 5)
    with pytest.raises(Crash):
        run_recipe(recipe)
    crash_role("student-kd-seed0", 2)                   # before any resume point of this run
    with pytest.raises(Crash):
        run_recipe(recipe)
    assert not (tmp_path / "r" / "checkpoints" / "student-kd-seed0-resume.ckpt").exists()


def test_resume_does_not_reuse_models_finished_under_another_recipe(tmp_path, tiny_recipe_path,
                                                                   crash_role):
    run_recipe(tiny(tiny_recipe_path, tmp_path, "student.train.max_steps=4"))
    done = tmp_path / "r" / "checkpoints" / "student-kd-seed0-done.json"
    assert json.loads(done.read_text())["steps"] == 4
    recipe = tiny(tiny_recipe_path, tmp_path)              # 8 steps now
    crash_role("student-kd-seed0", 2)                      # crashes before any resume point
    with pytest.raises(Crash):
        run_recipe(recipe)
    run_recipe(recipe, resume=True)
    # the teacher (same data, model and training) was reused; the student was trained again
    assert json.loads(done.read_text())["steps"] == 8


def test_resume_refuses_another_recipe_and_starts_a_run_that_saved_nothing(
        tmp_path, tiny_recipe_path):
    run_recipe(tiny(tiny_recipe_path, tmp_path, "student.train.max_steps=4"))
    with pytest.raises(RecipeError, match=r"differs from the one the run in .* was started with,"
                                          r" at student.train.max_steps\. Resume with the same"):
        run_recipe(tiny(tiny_recipe_path, tmp_path), resume=True)
    # killed before its first write: --resume starts it
    fresh = run_recipe(tiny(tiny_recipe_path, tmp_path / "elsewhere"), resume=True)
    assert (fresh.run_dir / "recipe.yaml").is_file()
    # checkpoints without the recipe they belong to cannot be checked: refused
    (tmp_path / "r" / "recipe.yaml").unlink()
    with pytest.raises(RecipeError, match="has checkpoints but no recipe.yaml"):
        run_recipe(tiny(tiny_recipe_path, tmp_path), resume=True)


def crashed_kd_student(tiny_recipe_path, tmp_path, crash_role):
    """(recipe, the KD student's latest resume point) after a crash at step 5: resume points
    after step 3 (previous) and 4 (latest) are on disk."""
    recipe = tiny(tiny_recipe_path, tmp_path)
    crash_role("student-kd-seed0", 5)
    with pytest.raises(Crash):
        run_recipe(recipe)
    return recipe, tmp_path / "r" / "checkpoints" / "student-kd-seed0-resume.ckpt"


def test_a_damaged_resume_point_falls_back_to_the_previous_one(tmp_path, tiny_recipe_path,
                                                               crash_role, uninterrupted, capsys):
    recipe, path = crashed_kd_student(tiny_recipe_path, tmp_path, crash_role)
    previous = path.with_name("student-kd-seed0-resume.previous.ckpt")
    assert load_training_state(previous)["global_step"] < load_training_state(path)["global_step"]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    resumed = run_recipe(recipe, resume=True)
    assert "falling back to the previous resume point" in capsys.readouterr().out
    assert_same_weights(weights(resumed, "student-kd-seed0"),
                        weights(uninterrupted, "student-kd-seed0"))


def test_damaged_resume_points_with_no_good_one_left_are_refused_with_the_fix(
        tmp_path, tiny_recipe_path, crash_role):
    recipe, path = crashed_kd_student(tiny_recipe_path, tmp_path, crash_role)
    for damaged in (path, path.with_name("student-kd-seed0-resume.previous.ckpt")):
        damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    with pytest.raises(ResumeError, match=r"-resume.previous.ckpt cannot be read .*"
                                          r"Delete it to restart"):
        run_recipe(recipe, resume=True)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickle_in_place_of_a_resume_point_is_not_executed(tmp_path):
    import pickle

    class Payload:
        def __reduce__(self):
            return (exec, ("open(%r, 'w').write('pwned')" % str(tmp_path / "pwned"),))

    path = tmp_path / "evil-resume.ckpt"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": Payload()}, handle)
    with pytest.raises(ResumeError, match="cannot be read"):
        load_training_state(path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("consumed", [0, 1, 4, 7])
def test_sampler_state_skips_exactly_the_batches_handed_out(consumed):
    def sampler():
        s = MixedBatchSampler(30, 50, 8, 0.5, seed=3)
        s.set_epoch(2)
        return s

    whole = list(sampler())
    first = sampler()
    iterator = iter(first)
    for _ in range(consumed):
        next(iterator)
    state = first.state_dict()
    assert state == {"epoch": 2, "position": consumed}
    restored = MixedBatchSampler(30, 50, 8, 0.5, seed=3)
    restored.load_state_dict(state)
    assert list(restored) == whole[consumed:]
    # the skip applies once: the next epoch is whole again
    restored.set_epoch(3)
    assert len(list(restored)) == len(whole)


def test_sampler_refuses_a_position_beyond_its_epoch():
    with pytest.raises(ValueError, match="position 99 is outside this epoch's 8 batches"):
        MixedBatchSampler(30, 50, 8, 0.5).load_state_dict({"epoch": 0, "position": 99})


def test_sampler_state_at_the_end_of_an_epoch_points_to_the_next():
    sampler = MixedBatchSampler(30, 50, 8, 0.5, seed=3)
    first = list(sampler)
    second = list(sampler)
    assert sampler.state_dict() == {"epoch": 2, "position": 0}
    restored = MixedBatchSampler(30, 50, 8, 0.5, seed=3)
    restored.load_state_dict({"epoch": 1, "position": 0})
    assert list(restored) == second != first
