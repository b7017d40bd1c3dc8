"""The classification job: the run end to end (run folder, report, results computed from their
seeds), its exact teacher cache against the online teacher, checkpoints and data refused with
the fix, recipe checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from tests.jobs.run_folder import check_run_folder
from vldistill.cli import app
from vldistill.core.errors import DataError
from vldistill.jobs.classification.recipe import load_classification_recipe

ROOT = Path(__file__).parents[3]
RECIPE = ROOT / "recipes" / "classification.yaml"
TINY = ["data.shapesworld.train_images=240", "data.shapesworld.val_images=48",
        "data.labelled_images=48", "teacher.model.widths=[8, 16]",
        "teacher.train={max_steps: 12, batch_size: 32, val_every_n_steps: 6}",
        "student.model.widths=[4]",
        "student.train={max_steps: 8, batch_size: 16, val_every_n_steps: 4}",
        "eval.latency_repeats=2", "trainer.progress_bar=false"]
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cls")
    result = runner.invoke(app, ["run", str(RECIPE), *[a for o in [*TINY, f"output_dir={out}",
                                                                    "name=tiny"]
                                                        for a in ("--set", o)]])
    assert result.exit_code == 0, result.output
    return out / "tiny", result.output


def test_the_run_writes_every_file_and_its_headline(tiny_run):
    root, output = tiny_run
    assert "KD gain over the no-KD student" in output          # the console's summary
    paths = check_run_folder(root, "classification", curves=True)
    results = json.loads(paths.results.read_text())
    assert [row["model"] for row in results["rows"]] == ["teacher", "student (no KD)",
                                                         "student (KD)"]
    assert results["teacher_source"] == "cache" and results["classes"] == 48
    assert (results["labelled_images"], results["transfer_images"]) == (48, 240 - 48)
    for row in results["rows"]:
        assert 0 <= row["accuracy"]["mean"] <= row["top5_accuracy"]["mean"] <= 100
    # the gain is each seed's KD accuracy minus its no-KD accuracy
    rows = {row["model"]: row for row in results["rows"]}
    expected = [kd - base for kd, base in zip(rows["student (KD)"]["accuracy"]["per_seed"],
                                              rows["student (no KD)"]["accuracy"]["per_seed"])]
    assert results["kd_gain"]["per_seed"] == pytest.approx(expected)
    report = paths.report.read_text()
    assert "KD gain over the no-KD student" in report and "throughput img/s" in report
    assert paths.accuracy_vs_cost.is_file()
    manifest = json.loads((paths.teacher_cache / "manifest.json").read_text())
    assert manifest["complete"] and manifest["rows"] == 240
    assert {"logits", "image_embeds"} <= set(manifest["shards"][0]["files"])
    assert (paths.checkpoints / "teacher-last.safetensors").is_file()


def test_the_exact_cache_gives_the_online_losses_on_a_mixed_batch(tiny_run):
    """The KD student's first batch (labelled and transfer rows) scores the same from the
    cache as from the teacher run online: the rows are training-set indices."""
    from vldistill.data.classification import RowSubset, collate_classification
    from vldistill.jobs.classification.job import Trainer, load_data, teacher_source
    from vldistill.kd.sources import OnlineTeacher, RowCache
    from vldistill.kd.step import DistillationStep, build_terms
    from vldistill.models.classifier import build_classifier, load_classifier

    root, _ = tiny_run
    recipe = load_classification_recipe(RECIPE, [*TINY, f"output_dir={root.parent}",
                                                  "name=tiny", "distill.terms=[{loss: ce}, "
                                                  "{loss: kd, temperature: 4.0}, {loss: dkd}, "
                                                  "{loss: feature, feature: image_embeds}]"])
    data = load_data(recipe)
    teacher, _ = load_classifier(root / "checkpoints" / "teacher-last.safetensors")
    from vldistill.core.runpaths import RunPaths

    cached = teacher_source(Trainer(recipe, data, RunPaths(root), resume=False), teacher)
    assert isinstance(cached, RowCache)                       # reused: same teacher, same data
    labelled = RowSubset(data.train, [3, 40, 7])
    transfer = RowSubset(data.train, [200, 101], labelled=False)
    batch = collate_classification([labelled[i] for i in range(3)] +
                                   [transfer[i] for i in range(2)])
    torch.manual_seed(0)
    student = build_classifier(recipe.student.model.model_dump(mode="json"), 48)
    terms = build_terms(recipe.distill.terms)
    online_step = DistillationStep(student, terms, teacher=OnlineTeacher(teacher))
    online_step.materialize(batch)
    online = online_step(batch)
    from_cache = DistillationStep(student, terms, teacher=cached)(batch)
    for name in ("ce", "kd", "dkd", "feature", "loss"):
        assert from_cache[name].item() == pytest.approx(online[name].item(), rel=1e-5,
                                                        abs=1e-6), name


def test_a_teacher_trained_on_other_data_is_refused(tiny_run, tmp_path):
    from vldistill.jobs.classification.job import run_classification

    root, _ = tiny_run
    recipe = load_classification_recipe(RECIPE, [
        *TINY, f"output_dir={tmp_path}", "data.shapesworld.image_size=32",
        f"teacher.checkpoint={root / 'checkpoints' / 'teacher-last.safetensors'}"])
    with pytest.raises(DataError, match="was trained on other data: 48 classes at 64 px, this "
                                        "recipe has 48 at 32 px"):
        run_classification(recipe)


def write_folder(root: Path, classes: list[str], per_class: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(
                root / name / f"{i}.png")
    return root


def test_image_folders_with_other_classes_are_refused_naming_both(tmp_path):
    from vldistill.jobs.classification.job import load_data

    train = write_folder(tmp_path / "train", ["cat", "dog"])
    val = write_folder(tmp_path / "val", ["cat", "fox"])
    recipe = load_classification_recipe(RECIPE, [
        "data.source=folder", f"data.train={train}", f"data.val={val}", "data.image_size=16"])
    with pytest.raises(DataError, match=r"only in train \['dog'\], only in val \['fox'\]"):
        load_data(recipe)
    val_ok = write_folder(tmp_path / "val2", ["cat", "dog"])
    data = load_data(load_classification_recipe(RECIPE, [
        "data.source=folder", f"data.train={train}", f"data.val={val_ok}",
        "data.image_size=16"]))
    assert data.classes == ["cat", "dog"] and tuple(data.train.images.shape) == (6, 3, 16, 16)


@pytest.mark.parametrize("override, message", [
    ("distill.terms=[{loss: ce}]", "no term that reads the teacher"),
    ("distill.terms=[{loss: kd}, {loss: feature, feature: fused}]",
     r"read the teacher's \['fused'\]; the cache stores logits and image_embeds only"),
    ("data.source=folder", "needs data.train and data.val"),
    ("student.train.steps=5", "steps was renamed max_steps"),
])
def test_recipe_mistakes_name_the_fix(override, message):
    with pytest.raises(Exception, match=message):
        load_classification_recipe(RECIPE, [override])


def test_a_partial_train_block_keeps_the_sections_defaults():
    recipe = load_classification_recipe(RECIPE, ["student.train={max_steps: 10}"])
    assert recipe.student.train.max_steps == 10
    assert recipe.student.train.optim.schedule == "cosine"
