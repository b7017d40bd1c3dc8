"""The ViLT adapter: tiny random configs saved and loaded back through the user's path."""

import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from vldistill.kd import DistillationStep, KDLoss, WeightedTerm  # noqa: E402
from vldistill.kd.feature_losses import ContrastiveLoss  # noqa: E402
from vldistill.models.hf_vilt import CheckpointFolderError, ViltVQA  # noqa: E402

ANSWERS = ["red", "blue", "yes", "no", "2"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, make_tiny_vilt):
    teacher = make_tiny_vilt(tmp_path_factory.mktemp("teacher"), hidden=32, image_size=48)
    student = make_tiny_vilt(tmp_path_factory.mktemp("student"), hidden=16, image_size=32,
                             mean=0.4, seed=1)
    return teacher, student


def inputs(questions=("what is the colour", "how many are there", "what shape")):
    generator = np.random.default_rng(0)
    images = torch.from_numpy(generator.integers(0, 256, (2, 3, 40, 40), dtype=np.uint8))
    return {"images": images, "image_index": torch.tensor([0, 0, 1][:len(questions)]),
            "questions": list(questions)}


def test_loads_from_a_folder_and_returns_the_typed_output(folders):
    model = ViltVQA.from_pretrained(folders[0], answers=ANSWERS).eval()
    assert model.answers == ANSWERS
    out = model(**inputs())
    assert out.logits.shape == (3, len(ANSWERS))
    assert out.image_embeds.shape == out.text_embeds.shape == out.features["fused"].shape \
        == (3, 32)
    # the model's own processor: 48-px teacher input, whatever size the data has
    assert model.encode(**inputs())["pixel_values"].shape[-2:] == (48, 48)


def test_the_same_as_calling_transformers_directly(folders):
    from transformers import ViltForQuestionAnswering, ViltProcessor

    model = ViltVQA.from_pretrained(folders[0]).eval()
    reference = ViltForQuestionAnswering.from_pretrained(folders[0]).eval()
    processor = ViltProcessor.from_pretrained(folders[0])
    batch = inputs()
    images = [batch["images"][i].permute(1, 2, 0).numpy() for i in batch["image_index"]]
    encoded = processor(images=images, text=batch["questions"], padding=True,
                        return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, reference(**encoded).logits, atol=1e-6)


def test_save_and_load_round_trip(folders, tmp_path):
    model = ViltVQA.from_pretrained(folders[1]).eval()
    model.save_pretrained(tmp_path)
    again = ViltVQA.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(model(**inputs()).logits, again(**inputs()).logits)


def test_other_answers_get_a_new_head(folders):
    with pytest.warns(UserWarning, match="answer labels differ .* the answer head is new"):
        model = ViltVQA.from_pretrained(folders[1], answers=["a", "b", "c"])
    assert model.answers == ["a", "b", "c"]
    assert model(**inputs()).logits.shape == (3, 3)


def test_teacher_and_student_with_different_preprocessing_distil(folders):
    teacher = ViltVQA.from_pretrained(folders[0])
    student = ViltVQA.from_pretrained(folders[1])
    step = DistillationStep(student, [WeightedTerm("kd", 1.0, KDLoss(2.0)),
                                      WeightedTerm("c", 1.0, ContrastiveLoss("fused"))],
                            teacher=teacher)
    batch = {"inputs": inputs(), "targets": torch.zeros(3, len(ANSWERS)),
             "labelled": torch.zeros(3, dtype=torch.bool)}
    step.materialize(batch)
    losses = step(batch)
    losses["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.model.classifier[0].weight.grad is not None


def test_long_questions_are_truncated_with_a_warning(folders):
    model = ViltVQA.from_pretrained(folders[1])
    long = " ".join(["what"] * 30)
    with pytest.warns(UserWarning, match=r"longer than this ViLT's text limit of 12 tokens "
                                         r"\(longest: 32\); they are truncated"):
        out = model(**inputs((long, "what is the colour", "what shape")))
    assert out.logits.shape == (3, len(ANSWERS))
    with warnings.catch_warnings():
        warnings.simplefilter("error")                        # warned once, not every batch
        model(**inputs((long, "what", "what")))


def test_a_folder_missing_files_lists_what_is_missing_and_found(tmp_path, folders):
    with pytest.raises(CheckpointFolderError, match="does not exist"):
        ViltVQA.from_pretrained(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointFolderError) as error:
        ViltVQA.from_pretrained(tmp_path)
    message = str(error.value)
    assert "missing model.safetensors (found pytorch_model.bin: pickled weights are never " \
           "loaded" in message
    assert "a tokenizer (tokenizer.json or vocab.txt)" in message
    assert "It holds: config.json, pytorch_model.bin" in message


@pytest.mark.filterwarnings("ignore:.*longer than this ViLT's text limit")
def test_a_vilt_teacher_in_the_main_job(tmp_path, tiny_recipe_path, make_tiny_vilt):
    """`teacher.model: {name: vilt, params: {path: ...}}`: trained, checkpointed, rebuilt from
    its checkpoint, and distilled into the built-in student (another tokenizer, image size and
    normalisation)."""
    from vldistill.config import load_recipe
    from vldistill.evaluate_checkpoint import evaluate_checkpoint
    from vldistill.jobs.vqa_kd.run import run_recipe

    folder = make_tiny_vilt(tmp_path / "vilt", answers=["x"])     # head replaced by the data's
    recipe = load_recipe(tiny_recipe_path, [
        f"output_dir={tmp_path}", "name=v", "distill.baseline=false",
        f"teacher.model={{name: vilt, params: {{path: {folder}}}}}",
        "teacher.train.max_steps=4", "teacher.train.val_every_n_steps=2"])
    with pytest.warns(UserWarning, match="answer head is new"):
        result = run_recipe(recipe)
    checkpoint = tmp_path / "v" / "checkpoints" / "teacher-last.safetensors"
    assert result.teacher.predictions.metrics["vqa_accuracy"] >= 0
    assert "student (KD)" in result.students
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*answer head is new")   # not on a rebuild
        metrics = evaluate_checkpoint(checkpoint)
    assert metrics["vqa_accuracy"] == pytest.approx(
        result.teacher.predictions.metrics["vqa_accuracy"])


@pytest.mark.filterwarnings("ignore:.*longer than this ViLT's text limit")
def test_vilt_teacher_and_student_built_from_config(tmp_path, tiny_recipe_path):
    """No pretrained folder: both ViLTs are built in code with the data's question vocabulary;
    a checkpoint rebuilds them exactly (same tokenizer, same weights) and exports to ONNX."""
    from vldistill.config import load_recipe
    from vldistill.evaluate_checkpoint import evaluate_checkpoint
    from vldistill.export.onnx import export_onnx
    from vldistill.jobs.vqa_kd.run import run_recipe
    from vldistill.models import build_from_checkpoint
    from vldistill.models.checkpoint import load_checkpoint

    small = ("{hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, "
             "intermediate_size: 32, image_size: 32, patch_size: 16}")
    recipe = load_recipe(tiny_recipe_path, [
        f"output_dir={tmp_path}", "name=c", "distill.baseline=false",
        "teacher.model={name: vilt, params: {config: {hidden_size: 32, num_hidden_layers: 2, "
        "num_attention_heads: 2, intermediate_size: 64, image_size: 32, patch_size: 16}}}",
        f"student.model={{name: vilt, params: {{config: {small}}}}}",
        "teacher.train.max_steps=2", "teacher.train.val_every_n_steps=2"])
    result = run_recipe(recipe)
    checkpoint = tmp_path / "c" / "checkpoints" / "student-kd-seed0-last.safetensors"
    metrics = evaluate_checkpoint(checkpoint)
    assert metrics["vqa_accuracy"] == pytest.approx(
        result.students["student (KD)"][0].predictions.metrics["vqa_accuracy"])
    student = build_from_checkpoint(load_checkpoint(checkpoint))
    # the tokenizer knows the data's words (no [UNK] for a training question)
    question = "what colour is the shape"
    ids = student.processor.tokenizer(question)["input_ids"]
    assert 1 not in ids and len(ids) == len(question.split()) + 2      # [CLS] words [SEP]
    report = export_onnx(student, tmp_path / "export")
    assert report.fp32_max_abs_diff < 1e-4


def test_vilt_settings_need_exactly_one_source():
    from vldistill.models import model_config

    with pytest.raises(ValueError, match="exactly one of path"):
        model_config("vilt", {})
    with pytest.raises(ValueError, match="exactly one of path"):
        model_config("vilt", {"path": "/x", "config": {"hidden_size": 8}})


def test_encode_preprocesses_each_image_once_and_matches_the_processor(folders):
    """encode() runs the image processor once per image, not per question; the result must be
    exactly the processor's own output for one image per question (the reference)."""
    model = ViltVQA.from_pretrained(folders[0])
    generator = np.random.default_rng(1)
    images = torch.from_numpy(generator.integers(0, 256, (4, 3, 40, 40), dtype=np.uint8))
    image_index = torch.tensor([2, 0, 0, 3, 2])
    questions = ["what is the colour", "how many", "what shape is it", "is there", "red"]
    encoded = model.encode(images, image_index, questions)
    pixels = images.permute(0, 2, 3, 1).numpy()
    reference = model.processor(images=[np.ascontiguousarray(pixels[i]) for i in image_index],
                                text=questions, padding=True, truncation=True,
                                max_length=model.max_text_length, return_tensors="pt")
    assert sorted(encoded) == sorted(reference)
    for key in reference:
        assert torch.equal(encoded[key], reference[key]), key


@pytest.mark.parametrize("height, width", [(40, 40), (40, 56)])
def test_forward_without_the_patch_loop_equals_hugging_face(folders, height, width):
    """For unpadded images the adapter builds the image tokens itself (no per-sample loop);
    logits and pooled features must equal Hugging Face's own forward, square or not."""
    model = ViltVQA.from_pretrained(folders[0]).eval()
    generator = np.random.default_rng(2)
    images = torch.from_numpy(generator.integers(0, 256, (2, 3, height, width), dtype=np.uint8))
    encoded = model.encode(images, torch.tensor([0, 1, 1]), ["what is the colour", "how many",
                                                            "what shape"])
    assert bool(encoded["pixel_mask"].all())
    with torch.no_grad():
        ours = model.forward_encoded(encoded)
        reference = model.model(**encoded, output_hidden_states=False)
    torch.testing.assert_close(ours.logits, reference.logits, rtol=0, atol=1e-5)
