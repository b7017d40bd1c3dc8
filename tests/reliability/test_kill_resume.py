"""Crash safety with real processes: `vldistill run` killed with SIGKILL at random moments
(loading data, training, writing checkpoints, building the teacher cache), then resumed with
--resume, ends with exactly the metrics of a run that was never killed."""

from __future__ import annotations

import pytest

from vldistill.tools.crashtest import kill_and_resume


@pytest.mark.parametrize("overrides", [[], ["teacher.mode=cache"]], ids=["online", "cache"])
def test_runs_killed_at_random_moments_resume_to_the_same_metrics(tmp_path, tiny_recipe_path,
                                                                  overrides) -> None:
    wall, points = kill_and_resume(tiny_recipe_path, tmp_path, points=2, seed=3,
                                   overrides=overrides)
    assert all(point.killed for point in points), "a kill came after the run had finished"
    for point in points:
        assert point.matches, f"killed at {point.delay_s:.1f} s of {wall:.1f} s: " \
                              f"{point.differences}"
