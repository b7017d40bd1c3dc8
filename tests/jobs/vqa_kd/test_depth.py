"""Sensory substitution end to end (issue 7): paired modalities in the main job, the RGB-D
source, the three-phase recipe with LLaVA-OneVision teacher and student, and the benchmark's
subsets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vldistill.config import load_recipe
from vldistill.core.errors import RecipeError
from vldistill.data.sample import Sample
from vldistill.jobs.vqa_kd.depth_report import depth_comparison, subsets
from vldistill.jobs.vqa_kd.job import job_run
from vldistill.jobs.vqa_kd.run import run_recipe
from vldistill.report.results import results_dict

ROOT = Path(__file__).parents[3]
RECIPE = ROOT / "recipes" / "depth_substitution.yaml"
TINY = ["seeds=[0]", "data.shapesworld={train_images: 60, val_images: 16, "
        "questions_per_image: 3}", "data.labelled_images=12",
        "teacher.model.params={width: 8}",
        "teacher.train={max_steps: 4, batch_size: 8, val_every_n_steps: 2}",
        "student.model.params={width: 4, word_dim: 4, mlp_dim: 8}",
        "student.train={max_steps: 3, batch_size: 8, val_every_n_steps: 3}",
        "distill.phases.0.train={max_steps: 2, batch_size: 8, val_every_n_steps: 2}",
        "distill.phases.1.train={max_steps: 2, batch_size: 8, val_every_n_steps: 2}",
        "distill.phases.2.train={max_steps: 2, batch_size: 8, val_every_n_steps: 2}",
        "trainer.progress_bar=false", "trainer.log_every_n_steps=1",
        "eval={latency_repeats: 2, throughput_images: 4}"]


@pytest.fixture(scope="module")
def depth_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("depth")
    return run_recipe(load_recipe(RECIPE, [*TINY, f"output_dir={out}"]))


def test_the_recipe_trains_four_models_each_on_its_modality(depth_run) -> None:
    from vldistill.models.checkpoint import load_checkpoint

    assert list(depth_run.students) == ["student (no KD)", "student (rgb, no KD)",
                                        "student (KD)"]
    checkpoints = depth_run.run_dir / "checkpoints"
    seen = {name: load_checkpoint(checkpoints / f"{name}-last.safetensors")
            for name in ("teacher", "student-nokd-seed0", "student-nokd-rgb-seed0",
                         "student-kd-seed0-vision", "student-kd-seed0-logits",
                         "student-kd-seed0-both")}
    assert {name: c.extra["modality"] for name, c in seen.items()} == {
        "teacher": "rgb", "student-nokd-seed0": "depth", "student-nokd-rgb-seed0": "rgb",
        "student-kd-seed0-vision": "depth", "student-kd-seed0-logits": "depth",
        "student-kd-seed0-both": "depth"}
    # one depth channel in, three for RGB: the first convolution is built for each
    assert seen["student-nokd-seed0"].model_params["in_channels"] == 1
    assert seen["student-nokd-rgb-seed0"].model_params["in_channels"] == 3


def test_eval_of_a_depth_checkpoint_reads_depth_and_reproduces_accuracy(depth_run) -> None:
    from vldistill.evaluate_checkpoint import evaluate_checkpoint

    run = depth_run.students["student (no KD)"][0]
    metrics = evaluate_checkpoint(run.checkpoint)

    assert metrics["modality"] == "depth"
    assert metrics["vqa_accuracy"] == pytest.approx(run.predictions.metrics["vqa_accuracy"])


def test_the_rgbd_source_reads_the_export_and_trains_identically(tmp_path, depth_run) -> None:
    from vldistill.data.export import export_shapesworld
    from vldistill.data.shapesworld import load_shapesworld
    from vldistill.report.results import results_dict

    recipe = load_recipe(RECIPE, [*TINY, f"output_dir={tmp_path}"])
    export_shapesworld(load_shapesworld(recipe.data.shapesworld), tmp_path / "rgbd", "rgbd")
    files = [f"data.{split}={json.dumps({'annotations': str(tmp_path / 'rgbd' / f'{split}.json')})}"
             for split in ("train", "val")]
    from_files = run_recipe(load_recipe(RECIPE, [*TINY, f"output_dir={tmp_path}",
                                                 "data.source=rgbd", *files]))

    for a, b in zip(results_dict(depth_run)["rows"], results_dict(from_files)["rows"],
                    strict=True):
        assert a["model"] == b["model"]
        # depth goes through millimetre PNGs (rounded by <= 0.5 mm): a question of the 48 may
        # flip (2.1 points), no more
        assert a["vqa_accuracy"]["mean"] == pytest.approx(b["vqa_accuracy"]["mean"], abs=4.5)


def test_a_single_phase_starts_from_the_previous_phase_checkpoint(depth_run) -> None:
    recipe = load_recipe(depth_run.run_dir / "recipe.yaml")
    result = run_recipe(recipe, phase="both")

    assert list(result.students) == ["student (KD)"]
    assert result.students["student (KD)"][0].role == "student-kd-seed0-both"


def test_llava_onevision_teacher_and_student_run_all_three_phases(tmp_path) -> None:
    """Tiny LLaVA-OneVision teacher (RGB) and a smaller student (depth, 3 channels), saved and
    loaded from folders as a user's would be; every phase trains and is checkpointed."""
    pytest.importorskip("transformers")
    from vldistill.models.checkpoint import load_checkpoint

    folders = save_tiny_llavas(tmp_path)
    phases = [
        {"name": "vision", "terms": [
            {"loss": "contrastive", "weight": 1.0, "feature": "image_embeds"},
            {"loss": "feature", "weight": 0.5, "feature": "vision_tokens", "kind": "l2"}]},
        {"name": "logits", "terms": [
            {"loss": "answer_token_ce", "weight": 0.5},
            {"loss": "answer_token_kd", "weight": 0.5, "loca_alpha": 0.9}]},
        {"name": "both", "terms": [
            {"loss": "answer_token_ce", "weight": 0.5},
            {"loss": "answer_token_kd", "weight": 0.5, "top_k": 8},
            {"loss": "contrastive", "weight": 0.1, "feature": "image_embeds"}]}]
    for phase in phases:
        phase["train"] = {"max_steps": 2, "batch_size": 4, "val_every_n_steps": 2}
    recipe = load_recipe(RECIPE, [
        *TINY, f"output_dir={tmp_path}", "data.depth.channels=3",
        "data.shapesworld={train_images: 24, val_images: 8, questions_per_image: 2}",
        "data.labelled_images=8", "distill.modality_baselines=[]",
        f"teacher.model={json.dumps({'name': 'llava_onevision', 'params': {'path': str(folders[0])}})}",
        f"student.model={json.dumps({'name': 'llava_onevision', 'params': {'path': str(folders[1])}})}",
        "teacher.train={max_steps: 2, batch_size: 4, val_every_n_steps: 2}",
        "student.train={max_steps: 2, batch_size: 4, val_every_n_steps: 2}",
        f"distill.terms={json.dumps([{'loss': 'answer_token_ce'}, {'loss': 'answer_token_kd'}])}",
        f"distill.phases={json.dumps(phases)}"])

    result = run_recipe(recipe)

    for phase, names in (("vision", ("contrastive", "feature")),
                         ("logits", ("answer_token_ce", "answer_token_kd")),
                         ("both", ("answer_token_kd", "contrastive"))):
        role = f"student-kd-seed0-{phase}"
        checkpoint = load_checkpoint(result.run_dir / "checkpoints" / f"{role}-last.safetensors")
        assert checkpoint.extra["modality"] == "depth" and checkpoint.model_name == \
            "llava_onevision"
        header = (result.run_dir / "logs" / role / "metrics.csv").read_text().splitlines()[0]
        for name in names:
            assert f"train/{name}" in header.split(","), (phase, name)
    assert 0.0 <= result.students["student (KD)"][0].predictions.metrics["vqa_accuracy"] <= 100


def save_tiny_llavas(tmp_path: Path) -> tuple[Path, Path]:
    """A 2-layer, 32-wide teacher and a 1-layer, 16-wide student over ShapesWorld's words."""
    import torch

    from vldistill.data.shapesworld import ShapesWorldSettings, load_shapesworld
    from vldistill.data.tokenizer import QuestionTokenizer
    from vldistill.models.hf_llava import LlavaOnevisionVQA

    world = load_shapesworld(ShapesWorldSettings(train_images=24, val_images=8,
                                                 questions_per_image=2))
    samples = world.splits["train"].samples + world.splits["val"].samples
    words = QuestionTokenizer.build(s.question for s in samples).to_json()
    answers = sorted({a for s in samples for a in s.answers})
    folders = []
    for name, width, layers in (("teacher", 32, 2), ("student", 16, 1)):
        torch.manual_seed(len(folders))
        sizes = {"hidden_size": width, "intermediate_size": 2 * width,
                 "num_hidden_layers": layers, "num_attention_heads": 2}
        model = LlavaOnevisionVQA.from_config(
            {"vision": sizes, "text": {**sizes, "num_key_value_heads": 1}, "image_size": 32},
            answers, words)
        model.save_pretrained(tmp_path / name)
        folders.append(tmp_path / name)
    return folders[0], folders[1]


# ----------------------------------------------------------------------------- recipe checks

@pytest.mark.parametrize("override, message", [
    ("student.model.params.in_channels=3", "student sees depth with 1 channel.*leave student"),
    ("data.augment.views=2", "augmented views transform the RGB image only"),
    ("data.depth.normalise=inverse", "set min_m > 0"),
])
def test_bad_depth_recipes_are_refused_with_the_fix(override: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        load_recipe(RECIPE, [override])


def test_a_hugging_face_model_on_one_depth_channel_is_refused() -> None:
    with pytest.raises(RecipeError, match="set data.depth.channels: 3"):
        load_recipe(RECIPE, ["student.model={name: vilt, params: {config: {hidden_size: 8}}}"])


def test_subset_takes_a_seeded_share_of_the_images_with_all_their_questions() -> None:
    from vldistill.jobs.vqa_kd.data import take_subset

    train = [Sample(q, q // 3, f"q{q}", ("a",)) for q in range(30)]        # 10 images x 3

    half = take_subset(train, 0.5, seed=4)

    images = sorted({s.image_id for s in half})
    assert len(images) == 5 and len(half) == 15
    assert half == [s for s in train if s.image_id in images]             # file order kept
    assert take_subset(train, 0.5, seed=4) == half
    assert take_subset(train, 1.0, seed=4) is train
    assert len(take_subset(train, 0.01, seed=4)) == 3                      # at least one image


# ----------------------------------------------------------------------------- the headline

def test_depth_answerable_questions_name_no_colour_or_pattern() -> None:
    samples = [Sample(1, 0, "What shape is the red object?", ("star",), "shape"),
               Sample(2, 0, "What shape is the large object?", ("star",), "shape"),
               Sample(3, 0, "What colour is the nearest object?", ("blue",), "nearest"),
               Sample(4, 0, "What shape is the nearest object?", ("circle",), "nearest"),
               Sample(5, 0, "How many striped objects are there?", ("2",), "count"),
               Sample(6, 0, "What colour is the star?", ("red",), "colour"),
               Sample(7, 0, "How many circles are there?")]                  # unlabelled

    rows = subsets(samples)

    assert rows["depth-answerable"] == [1, 3]
    assert rows["depth types"] == [0, 1, 2, 3, 4]
    assert rows["colour"] == [5] and rows["all"] == [0, 1, 2, 3, 4, 5]


def test_the_subset_table_gives_mean_and_spread() -> None:
    text, headline = depth_comparison({"scores": {"a": {"x": [40.0, 50.0], "y": [1.0, 1.0]}},
                                       "sizes": {"x": 10, "y": 3}})

    assert text.splitlines()[0] == "| model | x (n=10) | y (n=3) |"
    assert text.splitlines()[2] == "| a | 45.00 ± 5.00 | 1.00 ± 0.00 |"
    assert headline == []                   # no depth students: no KD line


def test_the_run_reports_accuracy_per_subset_and_the_depth_kd_gain(depth_run) -> None:
    """Every model's "all" subset is its overall VQA accuracy (a reference: the run's own
    evaluator); the KD line is the KD student's depth-answerable score minus the depth-only
    student's; report.md holds both."""
    results = results_dict(depth_run)
    numbers = results["depth_subsets"]
    runs = {"teacher": [depth_run.teacher], **depth_run.students}
    assert list(numbers["scores"]) == ["teacher", "student (rgb, no KD)", "student (no KD)",
                                       "student (KD)"]
    for name, by_subset in numbers["scores"].items():
        assert by_subset["all"] == pytest.approx(
            [run.predictions.metrics["vqa_accuracy"] for run in runs[name]], abs=1e-6)
    assert numbers["sizes"]["depth-answerable"] <= numbers["sizes"]["depth types"]
    table, headline = depth_comparison(numbers)
    gain = numbers["scores"]["student (KD)"]["depth-answerable"][0] - \
        numbers["scores"]["student (no KD)"]["depth-answerable"][0]
    assert headline == [f"Depth KD - depth-only on depth-answerable questions: {gain:+.2f} "
                        f"points mean (per seed {gain:+.2f})."]
    report = job_run(depth_run).report
    assert "## What depth can show" in report and table in report


def test_predict_and_bench_feed_a_depth_checkpoint_depth(depth_run, tmp_path) -> None:
    """`vldistill predict` reads a 16-bit depth PNG for a depth model and answers as the
    model does on the same val item; the latency bench scores it on depth."""
    import torch
    from PIL import Image

    from vldistill.bench import measure_one
    from vldistill.data.batches import VQACollator, VQAImageDataset
    from vldistill.data.sample import ArrayImageStore
    from vldistill.data.shapesworld import load_shapesworld
    from vldistill.jobs.vqa_kd.data import prepare_data
    from vldistill.models import build_from_checkpoint
    from vldistill.models.checkpoint import load_checkpoint
    from vldistill.predict import predict_checkpoint

    path = depth_run.students["student (no KD)"][0].checkpoint
    recipe = depth_run.recipe
    sample = load_shapesworld(recipe.data.shapesworld).splits["val"].samples[0]
    data = prepare_data(recipe.data, 0, needs=("depth",))
    millimetres = np.round(data.val_images.depth(sample.image_id) * 1000).astype(np.uint16)
    Image.fromarray(millimetres).save(tmp_path / "depth.png")

    answer = predict_checkpoint(path, tmp_path / "depth.png", sample.question).answer

    # the reference reads the same millimetres the PNG holds
    store = ArrayImageStore([sample.image_id], data.val_images.rgb(sample.image_id)[None],
                            (millimetres / 1000.0).astype(np.float32)[None])
    dataset = VQAImageDataset([sample], store, data.answer_vocab, data.tokenizer,
                              modalities=("depth",), depth=recipe.data.depth)
    batch = VQACollator(len(data.answer_vocab), "depth")([dataset[0]])
    with torch.no_grad():
        logits = build_from_checkpoint(load_checkpoint(path)).eval()(**batch["inputs"]).logits
    assert answer == data.answer_vocab.answer(int(logits.argmax()))
    bench = measure_one("depth student", path, False, 1, repeats=3, questions=6)
    assert 0.0 <= bench["accuracy"] <= 100.0 and bench["p50_ms"] > 0


def test_rgbd_files_with_a_key_of_another_layout_are_named() -> None:
    with pytest.raises(RecipeError, match=r"data.source 'rgbd' reads data.train as annotations: "
                                          r"data.train.images: Extra inputs"):
        load_recipe(RECIPE, ["data.source=rgbd", "data.train={annotations: t.json, images: x}",
                             "data.val={annotations: v.json}"])


def test_a_modality_baseline_must_be_another_modality() -> None:
    with pytest.raises(RecipeError, match=r"modality_baselines \['depth'\] must list other"):
        load_recipe(RECIPE, ["distill.modality_baselines=[depth]"])


def test_a_model_without_raw_text_inputs_is_called_without_them() -> None:
    """Batches carry `questions` and `answers` for models that read them; a user's model whose
    forward names neither is called without them."""
    import torch

    from vldistill.models.outputs import call_model

    class Plain(torch.nn.Module):
        def forward(self, images, image_index):
            return torch.zeros(len(image_index), 2)

    out = call_model(Plain(), {"images": torch.zeros(1, 3, 4, 4), "image_index":
                               torch.zeros(2, dtype=torch.long), "questions": ["a", "b"],
                               "answers": [None, "x"]})
    assert out.logits.shape == (2, 2)


def test_onnx_export_of_a_depth_model_is_refused_with_the_way_out(depth_run, tmp_path) -> None:
    from typer.testing import CliRunner

    from vldistill.cli import app

    path = depth_run.students["student (no KD)"][0].checkpoint
    result = CliRunner().invoke(app, ["export", str(path), "--out", str(tmp_path / "x")])

    assert result.exit_code != 0
    assert "sees depth" in result.output and "RGB images only" in result.output
