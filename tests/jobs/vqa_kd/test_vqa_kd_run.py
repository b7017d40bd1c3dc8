"""End to end: the tiny recipe through the whole job, checkpoints evaluated back, DDP."""

import json
import os
import subprocess
import sys

import pytest

from tests.jobs.run_folder import check_run_folder
from vldistill.config import load_recipe
from vldistill.evaluate_checkpoint import evaluate_checkpoint
from vldistill.jobs.base import finish_run
from vldistill.jobs.vqa_kd.job import job_run
from vldistill.jobs.vqa_kd.run import run_recipe
from vldistill.report.results import results_dict


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from pathlib import Path

    out = tmp_path_factory.mktemp("runs")
    recipe = load_recipe(Path(__file__).parents[3] / "recipes" / "tiny.yaml",
                         [f"output_dir={out}", "seeds=[0, 1]"])
    result = run_recipe(recipe)
    run = job_run(result)
    finish_run(run)
    return result, run.results


def test_run_folder_has_everything(tiny_run):
    result, _ = tiny_run
    run_dir = result.run_dir
    for name in ("results.json", "report.md", "accuracy_vs_cost.png", "recipe.yaml",
                 "versions.json", "learning_curves.png"):
        assert (run_dir / name).is_file(), name
    checkpoints = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert {"teacher-last.safetensors", "student-kd-seed0-last.safetensors",
            "student-nokd-seed1-last.safetensors"} <= checkpoints
    assert (run_dir / "logs" / "teacher" / "metrics.csv").is_file()
    assert list((run_dir / "logs" / "teacher").glob("events.out.tfevents.*"))
    assert load_recipe(run_dir / "recipe.yaml") == result.recipe   # resolved recipe reloads
    check_run_folder(run_dir, "vqa_kd", curves=True)


def test_results_table_rows_and_spread(tiny_run):
    _, results = tiny_run
    assert [row["model"] for row in results["rows"]] == ["teacher", "student (no KD)",
                                                         "student (KD)"]
    kd = results["rows"][2]["vqa_accuracy"]
    assert len(kd["per_seed"]) == 2
    assert kd["min"] <= kd["mean"] <= kd["max"]
    gains = results["kd_gain"]["per_seed"]
    no_kd = results["rows"][1]["vqa_accuracy"]["per_seed"]
    assert gains == pytest.approx([a - b for a, b in zip(kd["per_seed"], no_kd)])
    teacher, student = results["rows"][0], results["rows"][2]
    assert teacher["parameters"] > student["parameters"]
    assert student["kept_of_teacher_pct"] == pytest.approx(
        100 * kd["mean"] / teacher["vqa_accuracy"]["mean"])


def test_eval_checkpoint_reproduces_reported_accuracy(tiny_run):
    """`vldistill eval CHECKPOINT` rebuilds the model from the file alone and must give the
    accuracy the run reported for it."""
    result, results = tiny_run
    for row_index, name in ((0, "teacher-last"), (2, "student-kd-seed1-last")):
        metrics = evaluate_checkpoint(result.run_dir / "checkpoints" / f"{name}.safetensors")
        reported = results["rows"][row_index]["vqa_accuracy"]["per_seed"][-1]
        assert metrics["vqa_accuracy"] == pytest.approx(reported, abs=1e-9)
        assert metrics["parameters"] == results["rows"][row_index]["parameters"]


def test_report_markdown_quotes_the_table(tiny_run):
    result, results = tiny_run
    report = (result.run_dir / "report.md").read_text()
    assert "| teacher |" in report and "| student (KD) |" in report
    assert f"{results['rows'][0]['parameters']:,}" in report


def test_ddp_two_processes_on_cpu(tmp_path, tiny_recipe_path):
    """The path users take across GPUs and nodes: Lightning DDP, 2 processes over gloo. The
    KD students read the exact teacher cache, which both ranks build: each its share of the
    shards (120 items in shards of 40: rank 0 the first and third, rank 1 the second), rank 0
    the manifest."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "vldistill", "run", str(tiny_recipe_path),
               "--set", "trainer.devices=2", "--set", "trainer.strategy=ddp",
               "--set", "teacher.mode=cache", "--set", "teacher.cache.shard_items=40",
               "--set", f"output_dir={tmp_path}", "--set", "name=ddp"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert results["world_size"] == 2
    assert "main job wall time" in done.stdout
    cache = tmp_path / "ddp" / "teacher-cache"
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["complete"] and manifest["ranks"] == 2
    assert [shard["rank"] for shard in manifest["shards"]] == [0, 1, 0]
    assert not list(cache.glob("part-*.json"))                 # the ranks' records folded in


def test_vqa_source_reads_an_export_and_trains_identically(tmp_path, tiny_recipe_path):
    """The same data through the VQAv2 reader must give the same run as the built-in source:
    same samples, same pixels, same vocabularies, same seeds -> the same accuracies."""
    from vldistill.data.export import export_shapesworld
    from vldistill.data.shapesworld import load_shapesworld

    builtin = load_recipe(tiny_recipe_path, [f"output_dir={tmp_path}", "name=builtin"])
    export_shapesworld(load_shapesworld(builtin.data.shapesworld), tmp_path / "export")
    files = {split: {"questions": str(tmp_path / "export" / f"{split}_questions.json"),
                     "annotations": str(tmp_path / "export" / f"{split}_annotations.json"),
                     "images": str(tmp_path / "export" / "images")} for split in ("train", "val")}
    from_files = load_recipe(tiny_recipe_path, [
        f"output_dir={tmp_path}", "name=files", "data.source=vqa",
        f"data.train={json.dumps(files['train'])}", f"data.val={json.dumps(files['val'])}"])
    first, second = (results_dict(run_recipe(r)) for r in (builtin, from_files))
    for a, b in zip(first["rows"], second["rows"]):
        assert a["vqa_accuracy"]["per_seed"] == b["vqa_accuracy"]["per_seed"]
        assert a["parameters"] == b["parameters"]


def test_max_epochs_stops_before_max_steps(tmp_path, tiny_recipe_path):
    recipe = load_recipe(tiny_recipe_path, [f"output_dir={tmp_path}", "distill.baseline=false",
                                            "student.train.max_epochs=1",
                                            "student.train.max_steps=1000"])
    result = run_recipe(recipe)
    metrics = (result.run_dir / "logs" / "student-kd-seed0" / "metrics.csv").read_text()
    steps = {int(line.split(",")[1]) for line in metrics.splitlines()[1:] if line}
    # one epoch = ceil(24 labelled images / 4 labelled per batch) = 6 batches, far below 1000
    assert max(steps) < 6


def test_teacher_checkpoint_is_loaded_not_retrained(tiny_run, tmp_path):
    result, results = tiny_run
    checkpoint = result.run_dir / "checkpoints" / "teacher-last.safetensors"
    reuse = load_recipe(result.run_dir / "recipe.yaml", [
        f"teacher.checkpoint={checkpoint}", f"output_dir={tmp_path}", "seeds=[0]"])
    again = results_dict(run_recipe(reuse))
    assert again["rows"][0]["vqa_accuracy"]["mean"] == results["rows"][0]["vqa_accuracy"]["mean"]
    assert again["rows"][0]["train_time_s"]["mean"] == 0.0


def test_teacher_checkpoint_with_other_answers_is_refused(tiny_run, tmp_path):
    from vldistill.core.errors import DataError

    result, _ = tiny_run
    checkpoint = result.run_dir / "checkpoints" / "teacher-last.safetensors"
    other = load_recipe(result.run_dir / "recipe.yaml", [
        f"teacher.checkpoint={checkpoint}", f"output_dir={tmp_path}",
        "data.shapesworld.seed=7"])
    with pytest.raises(DataError, match="different answer vocabulary"):
        run_recipe(other)


def test_early_stopping_ends_a_run_that_stops_improving(tmp_path, tiny_recipe_path):
    # lr ~ 0: validation accuracy never improves, so patience 1 stops at the second validation
    recipe = load_recipe(tiny_recipe_path, [
        f"output_dir={tmp_path}", "distill.baseline=false", "student.train.max_steps=50",
        "student.train.val_every_n_steps=2", "student.train.early_stopping_patience=1",
        "student.train.optim.lr=1e-12", "student.train.optim.warmup_steps=0"])
    result = run_recipe(recipe)
    metrics = (result.run_dir / "logs" / "student-kd-seed0" / "metrics.csv").read_text()
    steps = {int(line.split(",")[1]) for line in metrics.splitlines()[1:] if line}
    assert max(steps) < 6    # validations at steps 2 and 4, then stop; far below 50


def test_every_registered_loss_runs_through_a_recipe(tmp_path, tiny_recipe_path):
    """Each loss term, named in a recipe, trains a student end to end (lazy projectors and
    label-needing teacher terms included) and is logged under its own name."""
    terms = json.dumps([
        {"loss": "vqa_bce", "weight": 1.0}, {"loss": "kd", "weight": 0.5},
        {"loss": "dkd", "weight": 0.1}, {"loss": "loca", "weight": 0.5},
        {"loss": "feature", "weight": 0.1, "feature": "fused", "kind": "cosine"},
        {"loss": "contrastive", "weight": 0.1, "feature": "image_embeds", "queue_size": 16},
        {"loss": "relational", "weight": 0.1, "kind": "rkd_angle"},
        {"loss": "clip_affinity", "weight": 0.1}])
    recipe = load_recipe(tiny_recipe_path, [f"output_dir={tmp_path}", "distill.baseline=false",
                                            f"distill.terms={terms}"])
    result = run_recipe(recipe)
    header = (result.run_dir / "logs" / "student-kd-seed0" / "metrics.csv").read_text()
    header = header.splitlines()[0].split(",")
    for name in ("kd", "dkd", "loca", "feature", "contrastive", "relational", "clip_affinity"):
        assert f"train/{name}" in header, name
    assert result.students["student (KD)"][0].predictions.metrics["vqa_accuracy"] >= 0.0


def test_vizwiz_metric_in_the_main_job(tmp_path, tiny_recipe_path):
    """eval.metric: vizwiz reports official VizWiz accuracy (recomputed here from the saved
    predictions) and answerability, in results.json and in the table."""
    from statistics import fmean

    from vldistill.data.batches import group_by_image
    from vldistill.eval.vizwiz import vizwiz_accuracy
    from vldistill.jobs.vqa_kd.data import prepare_data
    from vldistill.report.results import markdown_table

    recipe = load_recipe(tiny_recipe_path, [f"output_dir={tmp_path}", "eval.metric=vizwiz",
                                            "data.shapesworld.unanswerable_fraction=0.3"])
    result = run_recipe(recipe)
    teacher = result.teacher.predictions
    data = prepare_data(recipe.data, 0)
    answers = data.answer_vocab.to_json()
    # predictions come in dataset order: questions grouped by image, images in order
    ordered = [s for group in group_by_image(data.val) for s in group]
    assert any(s.answer_type == "unanswerable" for s in ordered)
    expected = fmean(vizwiz_accuracy(answers[i], s.answers)
                     for i, s in zip(teacher.indices, ordered) if s.answers)
    assert teacher.metrics["vizwiz_accuracy"] == pytest.approx(100 * expected)
    assert 0 <= teacher.metrics["unanswerable_ap"] <= 100
    results = results_dict(result)
    assert results["metric"] == "vizwiz_accuracy"
    assert "unanswerable_ap" in results["rows"][0]
    table = markdown_table(results)
    assert "VizWiz acc. val %" in table and "unanswerable AP %" in table


# one question per image, as in VizWiz (whose export gives every question its own image file),
# so data.labelled_images selects the same questions from both sources
VIZWIZ_TINY = ["data.shapesworld={train_images: 120, val_images: 40, questions_per_image: 1, "
               "unanswerable_fraction: 0.25}", "data.labelled_images=30", "seeds=[0]",
               "teacher.model.params.config={hidden_size: 16, num_hidden_layers: 1, "
               "num_attention_heads: 2, intermediate_size: 32, image_size: 32, patch_size: 16}",
               "student.model.params.config={hidden_size: 8, num_hidden_layers: 1, "
               "num_attention_heads: 2, intermediate_size: 16, image_size: 32, patch_size: 16}",
               "teacher.train={max_steps: 4, batch_size: 4, val_every_n_steps: 2}",
               "student.train={max_steps: 4, batch_size: 4, val_every_n_steps: 2}",
               "trainer.progress_bar=false", "eval={metric: vizwiz, latency_repeats: 2, "
               "throughput_images: 4}"]


def test_vizwiz_recipe_reads_its_export_and_trains_identically(tmp_path):
    """recipes/vizwiz.yaml (ViLT teacher, cached logits, ViLT student), shrunk: the ShapesWorld
    VizWiz export through data.source vizwiz must give the run the built-in source gives."""
    from pathlib import Path

    from vldistill.data.export import export_shapesworld
    from vldistill.data.shapesworld import load_shapesworld

    path = Path(__file__).parents[3] / "recipes" / "vizwiz.yaml"
    builtin = load_recipe(path, [*VIZWIZ_TINY, f"output_dir={tmp_path}", "name=builtin"])
    assert builtin.teacher.mode == "topk_cache" and builtin.eval.metric == "vizwiz"
    export_shapesworld(load_shapesworld(builtin.data.shapesworld), tmp_path / "export",
                       "vizwiz")
    files = {split: {"annotations": str(tmp_path / "export" / "annotations" / f"{split}.json")}
             for split in ("train", "val")}
    from_files = load_recipe(path, [
        *VIZWIZ_TINY, f"output_dir={tmp_path}", "name=files", "data.source=vizwiz",
        f"data.train={json.dumps(files['train'])}", f"data.val={json.dumps(files['val'])}"])
    first, second = (results_dict(run_recipe(r)) for r in (builtin, from_files))
    assert first["metric"] == "vizwiz_accuracy"
    for a, b in zip(first["rows"], second["rows"], strict=True):
        for key in ("vizwiz_accuracy", "unanswerable_ap", "unanswerable_f1"):
            assert a[key]["per_seed"] == b[key]["per_seed"], (a["model"], key)
    assert (tmp_path / "files" / "teacher-cache").is_dir()
    # the checkpoint remembers its metric: `vldistill eval` scores it the same way
    kd = second["rows"][-1]
    metrics = evaluate_checkpoint(Path(kd["checkpoints"][0]))
    assert metrics["vizwiz_accuracy"] == pytest.approx(kd["vizwiz_accuracy"]["per_seed"][0])
    assert metrics["unanswerable_ap"] == pytest.approx(kd["unanswerable_ap"]["per_seed"][0])


def test_vizwiz_source_without_vizwiz_files_is_refused():
    from vldistill.config import recipe_from_dict
    from vldistill.core.errors import RecipeError

    vqa_files = {"questions": "q.json", "annotations": "a.json", "images": "img"}
    with pytest.raises(RecipeError, match=r"data.source 'vizwiz' reads data.train as "
                                          r"annotations, images: data.train.questions: Extra"):
        recipe_from_dict({"data": {"source": "vizwiz", "train": vqa_files,
                                   "val": {"annotations": "val.json"}}})
    with pytest.raises(RecipeError, match="data.source 'vizwiz' needs data.val .* got nothing"):
        recipe_from_dict({"data": {"source": "vizwiz", "train": {"annotations": "t.json"}}})
