"""`teacher.mode: cache` in the main job and `vldistill cache build` on the command line."""

import json

from typer.testing import CliRunner

from vldistill.cli import app
from vldistill.config import load_recipe
from vldistill.jobs.vqa_kd.run import run_recipe

runner = CliRunner()


def overrides(out):
    return [f"output_dir={out}", "name=c", "distill.baseline=false", "data.augment.views=2",
            "distill.terms=[{loss: kd, temperature: 1.0}, {loss: contrastive}, {loss: vqa_bce}]"]


def test_run_builds_the_cache_once_then_reuses_it(tmp_path, tiny_recipe_path):
    recipe = load_recipe(tiny_recipe_path, [*overrides(tmp_path), "teacher.mode=cache"])
    first = run_recipe(recipe)
    manifest = tmp_path / "c" / "teacher-cache" / "manifest.json"
    saved = json.loads(manifest.read_text())
    assert saved["complete"] and saved["views"] == 2
    assert saved["fingerprint"]["fields"] == ["image_embeds"]
    built = manifest.stat().st_mtime_ns
    second = run_recipe(recipe)
    assert manifest.stat().st_mtime_ns == built                 # reused, not rebuilt
    # same teacher (CPU, fixed seed), same cache, same student
    assert second.students["student (KD)"][0].predictions.metrics == \
        first.students["student (KD)"][0].predictions.metrics


def test_cli_refuses_a_stale_cache_and_cache_build_fixes_it(tmp_path, tiny_recipe_path):
    base = [str(tiny_recipe_path), *[x for o in overrides(tmp_path) for x in ("--set", o)]]
    result = runner.invoke(app, ["run", *base, "--teacher", "topk_cache"])
    assert result.exit_code == 0, result.output
    stale = [*base, "--set", "teacher.mode=topk_cache", "--set", "teacher.cache.top_k=4"]
    result = runner.invoke(app, ["run", *stale])
    assert result.exit_code == 2
    output = " ".join(result.output.split())          # the console wraps long lines
    assert "these fields differ from this recipe's: top_k." in output
    assert "vldistill cache build" in output and "teacher.cache.top_k=4" in output
    result = runner.invoke(app, ["cache", "build", *stale])
    assert result.exit_code == 0, result.output
    assert "loading the run folder's trained teacher" in " ".join(result.output.split())
    result = runner.invoke(app, ["run", *stale])
    assert result.exit_code == 0, result.output
