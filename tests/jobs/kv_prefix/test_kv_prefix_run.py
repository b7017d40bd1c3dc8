"""The KV-prefix job end to end: recipe -> base -> variants -> table, resume, checkpoints
that rebuild, and a tiny BLIP-2 modulated through its Q-Former."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.jobs.run_folder import check_run_folder
from vldistill.config import load_recipe
from vldistill.core.errors import RecipeError
from vldistill.evaluate_checkpoint import evaluate_checkpoint
from vldistill.jobs.base import finish_run
from vldistill.jobs.kv_prefix.job import kv_prefix_run, run_kv_prefix
from vldistill.report.results import markdown_table, results_dict

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).parents[3]
TINY = ["seeds=[0]", "data.shapesworld.train_images=60", "data.shapesworld.val_images=12",
        "data.shapesworld.questions_per_image=4", "data.labelled_images=20",
        "teacher.model.params.width=8", "teacher.train.max_steps=20",
        "teacher.train.batch_size=8", "teacher.train.val_every_n_steps=3",
        "student.train.max_steps=6", "student.train.batch_size=8",
        "student.train.optim.lr=0.01",
        "student.train.val_every_n_steps=2", "kv_prefix.expert.image_size=32",
        "trainer.progress_bar=false", "eval.latency_repeats=2", "eval.throughput_images=4"]


@pytest.fixture(scope="module")
def kv_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    recipe = load_recipe(ROOT / "recipes" / "kv_prefix.yaml", [f"output_dir={out}", *TINY])
    result = run_kv_prefix(recipe)
    run = kv_prefix_run(result)
    finish_run(run)                         # what `vldistill run` does after the job
    return recipe, result, run.results


def test_the_run_folder_has_every_file(kv_run) -> None:
    _, result, _ = kv_run
    check_run_folder(result.run_dir, "kv_prefix", curves=True)


def test_every_variant_is_a_row_with_its_trainable_share(kv_run) -> None:
    recipe, result, results = kv_run
    rows = {row["model"]: row for row in results["rows"]}
    assert list(rows) == ["frozen", "prefix", "prefix+lora", "prefix-no-expert"]
    assert rows["frozen"]["trainable_parameters"] == 0
    prefix = rows["prefix"]["trainable_parameters"]
    lora = rows["prefix+lora"]["trainable_parameters"]
    assert 0 < prefix < lora < prefix + 5_000
    # the modulated rows count the expert (EfficientNet-Lite0: 4,652,008) and the generator
    assert rows["prefix"]["parameters"] == rows["frozen"]["parameters"] + 4_652_008 + prefix
    assert "style" in results["per_question_type"]["prefix"]
    table = markdown_table(results)
    assert "trainable" in table and f"{prefix:,}" in table


def test_the_report_holds_the_headline_with_the_expert_apart(kv_run) -> None:
    """The gain on pattern + style questions (question-weighted, by hand from the per-type
    accuracies), and the trainable share against the model without its frozen expert."""
    _, result, results = kv_run
    counts = results["kv_prefix"]["val_questions"]
    per_type = results["per_question_type"]

    def both(model: str) -> float:
        return (per_type[model]["style"] * counts["style"] +
                per_type[model]["pattern"] * counts["pattern"]) / \
            (counts["style"] + counts["pattern"])

    numbers = results["kv_prefix"]
    assert numbers["gain"] == pytest.approx(both("prefix") - both("frozen"), abs=1e-6)
    rows = {row["model"]: row for row in results["rows"]}
    trained = rows["prefix"]["trainable_parameters"]
    assert numbers["expert_parameters"] == 4_652_008
    assert numbers["trainable_share_without_expert"] == pytest.approx(
        trained / (rows["prefix"]["parameters"] - 4_652_008))
    assert numbers["trainable_share_without_expert"] > 10 * numbers["trainable_share"]
    report = (result.run_dir / "report.md").read_text()
    assert "## Pattern and style questions" in report
    assert "of the model without its frozen expert (4,652,008)" in report


def test_a_variant_checkpoint_rebuilds_and_scores_what_the_run_reported(kv_run) -> None:
    _, result, results = kv_run
    row = next(r for r in results["rows"] if r["model"] == "prefix+lora")
    metrics = evaluate_checkpoint(Path(row["checkpoints"][0]))
    assert metrics["vqa_accuracy"] == pytest.approx(row["vqa_accuracy"]["per_seed"][0], abs=1e-9)
    assert metrics["parameters"] == row["parameters"]
    assert metrics["model"] == "kv_prefix"


def test_resume_loads_finished_variants_instead_of_training_them(kv_run) -> None:
    recipe, result, results = kv_run
    checkpoints = sorted((result.run_dir / "checkpoints").glob("*-last.safetensors"))
    before = {path: path.stat().st_mtime_ns for path in checkpoints}
    again = results_dict(run_kv_prefix(recipe, resume=True))
    assert {path: path.stat().st_mtime_ns for path in checkpoints} == before   # nothing retrained
    for old, new in zip(results["rows"], again["rows"]):
        assert new["vqa_accuracy"] == old["vqa_accuracy"]
        assert new["train_time_s"] == old["train_time_s"]


def test_a_variant_with_lora_needs_lora_settings() -> None:
    with pytest.raises(RecipeError, match="kv_prefix.lora is not set"):
        load_recipe(ROOT / "recipes" / "kv_prefix.yaml", ["kv_prefix.lora=null"])


def test_a_tiny_blip2_is_modulated_end_to_end(tmp_path) -> None:
    """The base is a BLIP-2 built in code, trained for a few steps, then frozen; prefixes go
    into its Q-Former's cross-attention, LoRA into its Q-Former query/value projections."""
    from tests.models.test_kv_prefix import BLIP2

    recipe = load_recipe(ROOT / "recipes" / "kv_prefix.yaml", [
        f"output_dir={tmp_path}", *TINY, "teacher.model.name=blip2",
        f"teacher.model.params={{config: {BLIP2!r}}}".replace("'", '"'),
        "teacher.train.max_steps=2", "student.train.max_steps=2",
        "kv_prefix.lora.target_modules=[query, value]",
        "kv_prefix.variants=[{name: frozen, prefix: false}, {name: prefix+lora, lora: true}]"])
    result = run_kv_prefix(recipe)
    rows = {row["model"]: row for row in results_dict(result)["rows"]}
    assert set(rows) == {"frozen", "prefix+lora"}
    assert rows["prefix+lora"]["trainable_parameters"] > 0
    checkpoint = Path(rows["prefix+lora"]["checkpoints"][0])
    from vldistill.models import build_from_checkpoint
    from vldistill.models.checkpoint import load_checkpoint

    model = build_from_checkpoint(load_checkpoint(checkpoint))
    assert type(model.base).__name__ == "Blip2VQA"
    assert any("crossattention" in name for name in model.injector.layers)
    assert torch.isfinite(torch.tensor(rows["prefix+lora"]["vqa_accuracy"]["mean"]))


def test_artquest_csv_data_runs_through_the_same_recipe(tmp_path) -> None:
    """ShapesWorld exported as ArtQuest CSVs (with style questions) feeds the recipe through
    data.source: artquest; the style questions keep their type in the report."""
    from vldistill.data.export import export_shapesworld
    from vldistill.data.shapesworld import ShapesWorldSettings, generate_shapesworld

    world = generate_shapesworld(ShapesWorldSettings(train_images=40, val_images=10,
                                                     questions_per_image=4))
    paths = export_shapesworld(world, tmp_path / "artquest", "artquest", style_questions=1)
    recipe = load_recipe(ROOT / "recipes" / "kv_prefix.yaml", [
        f"output_dir={tmp_path}", *TINY, "data.style_questions=0", "data.source=artquest",
        f"data.train={{csv: {paths['train csv']}, images: {paths['train images']}}}",
        f"data.val={{csv: {paths['val csv']}, images: {paths['val images']}}}",
        "kv_prefix.variants=[{name: frozen, prefix: false}, {name: prefix}]"])
    results = results_dict(run_kv_prefix(recipe))
    assert [row["model"] for row in results["rows"]] == ["frozen", "prefix"]
    assert "style" in results["per_question_type"]["prefix"]


def test_a_base_from_a_checkpoint_is_modulated_as_saved(kv_run, tmp_path) -> None:
    """teacher.checkpoint: the base is the saved model (its own name and params, even when
    the recipe's teacher.model says otherwise), and nothing retrains it."""
    recipe, result, results = kv_run
    saved = result.run_dir / "checkpoints" / "teacher-last.safetensors"
    again = load_recipe(ROOT / "recipes" / "kv_prefix.yaml", [
        f"output_dir={tmp_path}", *TINY, f"teacher.checkpoint={saved}",
        "teacher.model.params.width=32",            # not the saved model's: ignored
        "kv_prefix.variants=[{name: frozen, prefix: false}, {name: prefix}]"])
    rows = {row["model"]: row for row in results_dict(run_kv_prefix(again))["rows"]}
    first = {row["model"]: row for row in results["rows"]}
    assert rows["frozen"]["vqa_accuracy"] == first["frozen"]["vqa_accuracy"]
    assert rows["prefix"]["parameters"] == first["prefix"]["parameters"]
