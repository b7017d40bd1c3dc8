"""Crash safety with real processes: `vldistill run` killed with SIGKILL at random moments
(loading data, training, writing checkpoints, building the teacher cache), then resumed with
--resume, ends with exactly the metrics of a run that was never killed."""

from __future__ import annotations

from pathlib import Path

import pytest

from vldistill.tools.crashtest import KillPoint, kill_and_resume

ROOT = Path(__file__).parents[2]


def assert_every_kill_resumed_identically(wall: float, points: list[KillPoint]) -> None:
    """Each kill came while the run was running, and its resumed run ended with every result
    of the uninterrupted one."""
    assert all(point.killed for point in points), "a kill came after the run had finished"
    for point in points:
        assert point.matches, f"killed at {point.delay_s:.1f} s of {wall:.1f} s: " \
                              f"{point.differences}"


@pytest.mark.parametrize("overrides", [[], ["teacher.mode=cache"]], ids=["online", "cache"])
def test_runs_killed_at_random_moments_resume_to_the_same_metrics(tmp_path, tiny_recipe_path,
                                                                  overrides) -> None:
    wall, points = kill_and_resume(tiny_recipe_path, tmp_path, points=2, seed=3,
                                   overrides=overrides)
    assert_every_kill_resumed_identically(wall, points)


OPEN_VOCAB = ["data.shapesworld.train_images=300", "data.shapesworld.val_images=60",
              "data.labelled_images=60", "teacher.widths=[8, 16]",
              "teacher.train.max_steps=40", "teacher.train.batch_size=32",
              "teacher.train.checkpoint_every_n_steps=5", "student.widths=[4, 8]",
              "student.train.max_steps=40", "student.train.batch_size=32",
              "student.train.checkpoint_every_n_steps=5", "eval.latency_repeats=2"]


@pytest.mark.slow
def test_the_open_vocabulary_job_killed_at_random_moments_resumes_to_the_same_results(
        tmp_path) -> None:
    recipe = ROOT / "recipes" / "open_vocab.yaml"
    wall, points = kill_and_resume(recipe, tmp_path, points=1, seed=5, overrides=OPEN_VOCAB)
    assert_every_kill_resumed_identically(wall, points)


KBVQA = ["data.shapesworld={train_images: 300, val_images: 60, questions_per_image: 6, "
         "knowledge_fraction: 0.4}", "retriever.kind=distilled",
         "retriever.compare=[bm25, distilled]",
         "retriever.distil={teacher: minilm, student_hidden: 32, student_layers: 1, "
         "train: {max_steps: 30, batch_size: 16, checkpoint_every_n_steps: 5}}",
         "reader.base={d_model: 16, layers: 1, heads: 2}",
         "reader.large={d_model: 32, layers: 1, heads: 2}",
         "reader.train={max_steps: 30, batch_size: 8, val_every_n_steps: 10, "
         "checkpoint_every_n_steps: 5}"]


@pytest.mark.slow
def test_the_kbvqa_job_killed_at_random_moments_resumes_to_the_same_results(tmp_path) -> None:
    """Killed while distilling the retriever, training a reader or writing a checkpoint, the
    KB-VQA job resumes to the same recall, exact match and reader steps."""
    recipe = ROOT / "recipes" / "kbvqa.yaml"
    wall, points = kill_and_resume(recipe, tmp_path, points=2, seed=7, overrides=KBVQA)
    assert_every_kill_resumed_identically(wall, points)


@pytest.mark.slow
def test_the_classification_job_killed_at_random_moments_resumes_to_the_same_results(
        tmp_path) -> None:
    """Killed while training, building the teacher cache or writing a checkpoint, the
    classification job resumes to the same accuracies."""
    from tests.jobs.classification.test_classification import TINY

    recipe = ROOT / "recipes" / "classification.yaml"
    overrides = [*TINY, "teacher.train={max_steps: 40, batch_size: 32, val_every_n_steps: 20, "
                 "checkpoint_every_n_steps: 5}", "student.train={max_steps: 30, batch_size: 16, "
                 "val_every_n_steps: 10, checkpoint_every_n_steps: 5}"]
    wall, points = kill_and_resume(recipe, tmp_path, points=2, seed=11, overrides=overrides)
    assert_every_kill_resumed_identically(wall, points)


@pytest.mark.slow
def test_the_kv_prefix_job_killed_at_random_moments_resumes_to_the_same_results(
        tmp_path) -> None:
    """Killed while training the base or a prefix variant, the KV-prefix job resumes to the same
    scores for every variant."""
    from tests.jobs.kv_prefix.test_kv_prefix_run import TINY

    recipe = ROOT / "recipes" / "kv_prefix.yaml"
    overrides = [*TINY, "teacher.train.max_steps=40", "teacher.train.checkpoint_every_n_steps=5",
                 "student.train.max_steps=20", "student.train.checkpoint_every_n_steps=5"]
    wall, points = kill_and_resume(recipe, tmp_path, points=2, seed=13, overrides=overrides)
    assert_every_kill_resumed_identically(wall, points)


def test_results_are_compared_by_every_number_but_measured_times():
    from vldistill.tools.crashtest import compare, flatten

    results = {"recipe": "r", "wall_time_s": 12.5, "seeds": [0, 1],
               "rows": [{"model": "teacher", "acc": {"per_seed": [50.0, 51.0]},
                         "latency_ms": 1.2, "train_time_s": [3.0], "checkpoints": ["a/b"]},
                        {"model": "student", "acc": {"per_seed": [40.0, 41.0]},
                         "throughput_qps": 9.0, "passed": True}]}
    assert flatten(results) == {"seeds.0": 0, "seeds.1": 1,
                                "rows.teacher.acc.per_seed.0": 50.0,
                                "rows.teacher.acc.per_seed.1": 51.0,
                                "rows.student.acc.per_seed.0": 40.0,
                                "rows.student.acc.per_seed.1": 41.0,
                                "rows.student.passed": True}
    changed = {**flatten(results), "rows.student.acc.per_seed.1": 41.5}
    assert compare(flatten(results), changed) == [
        "rows.student.acc.per_seed.1: 41.5 vs 41.0"]
