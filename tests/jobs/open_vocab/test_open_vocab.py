"""Open-vocabulary distillation: losses against hand-computed values, chunked retrieval against
the full-matrix reference, fusion and projection, text encoders (MiniLM, CLIP, SigLIP folders),
data readers and their errors, the job end to end and the zero-shot command."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vldistill.core.errors import DataError  # noqa: E402
from vldistill.data.image_text import check_labels, read_folder, read_jsonl  # noqa: E402
from vldistill.eval.zero_shot import (  # noqa: E402
    naive_recall,
    ranks_of_correct,
    recall_at,
    retrieval,
    topk_accuracy,
)
from vldistill.kd import image_text_losses as losses  # noqa: E402
from vldistill.models.open_vocab import ConvBackbone, HFBackbone, OpenVocabModel  # noqa: E402

# -- losses


def test_contrastive_matches_a_hand_computed_two_by_two_case() -> None:
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = losses.contrastive(scores, torch.tensor([0, 1]), torch.tensor(2.0))
    # every row and column: -log(e^2 / (e^2 + e^0))
    assert float(loss) == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 1)))


def test_images_sharing_a_caption_are_all_positives() -> None:
    scores = torch.randn(4, 4)
    ids = torch.tensor([0, 1, 1, 2])                  # images 1 and 2 share a caption
    swapped = scores[:, [0, 2, 1, 3]]                 # their columns exchanged
    assert float(losses.contrastive(scores, ids, torch.tensor(5.0))) == pytest.approx(
        float(losses.contrastive(swapped, ids, torch.tensor(5.0))), abs=1e-6)


def test_distillation_terms_are_zero_at_the_teacher_and_l2_is_twice_the_cosine() -> None:
    teacher = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    student = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    assert float(losses.cosine_distill(teacher, teacher)) == pytest.approx(0, abs=1e-6)
    assert float(losses.l2_distill(student, teacher)) == pytest.approx(
        2 * float(losses.cosine_distill(student, teacher)), rel=1e-5)
    scores = torch.randn(6, 5)
    assert float(losses.affinity_distill(scores, scores)) == pytest.approx(0, abs=1e-7)
    assert float(losses.affinity_distill(scores, torch.randn(6, 5))) > 0


# -- metrics


def test_topk_accuracy_by_hand() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])
    accuracy = topk_accuracy(scores, torch.tensor([0, 1, 2]), (1, 2))
    assert accuracy[1] == pytest.approx(100 / 3) and accuracy[2] == pytest.approx(200 / 3)


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_chunked_retrieval_equals_the_full_matrix_reference(chunk) -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(40, 8, generator=generator), dim=-1)
    keys = [f"caption {i % 13}" for i in range(40)]            # repeated captions
    captions = list(dict.fromkeys(keys))
    texts = torch.nn.functional.normalize(torch.randn(len(captions), 8, generator=generator),
                                          dim=-1)
    full = (images @ texts.T).numpy()
    got = retrieval(lambda i0, i1, t0, t1: images[i0:i1] @ texts[t0:t1].T, 40, len(captions),
                    keys, captions, chunk=chunk)
    i2t, t2i = naive_recall(full, keys, captions), naive_recall(full.T, captions, keys)
    for k in (1, 5, 10):
        assert got[f"i2t_R@{k}"] == pytest.approx(i2t[k])
        assert got[f"t2i_R@{k}"] == pytest.approx(t2i[k])


def test_rank_counts_the_wrong_items_scored_at_least_as_high_as_the_best_correct_one() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3]])
    ranks = ranks_of_correct(lambda a, b: scores[a:b], 1, ["x"], ["y", "z", "x", "x"])
    assert ranks.tolist() == [1]                       # only 0.9 beats the better x (0.5)
    tied = torch.tensor([[0.5, 0.5, 0.5, 0.2]])
    assert ranks_of_correct(lambda a, b: tied[a:b], 1, ["x"], ["y", "z", "x", "w"]).tolist() \
        == [2]                                         # ties count against the model
    nan = torch.tensor([[float("nan"), 0.2, 0.1]])
    assert ranks_of_correct(lambda a, b: nan[a:b], 1, ["x"], ["x", "y", "z"]).tolist() == [3]
    assert recall_at(np.array([0, 1, 5, 12]), (1, 5, 10)) == {1: 25.0, 5: 50.0, 10: 75.0}


def test_a_collapsed_encoder_gets_no_retrieval_credit() -> None:
    keys = [f"caption {i}" for i in range(20)]
    same = torch.ones(20, 20)                          # every image scores every text alike
    got = retrieval(lambda i0, i1, t0, t1: same[i0:i1, t0:t1], 20, 20, keys, keys, chunk=6)
    assert got["i2t_R@1"] == 0.0 and got["t2i_R@10"] == 0.0
    assert naive_recall(same.numpy(), keys, keys)[10] == 0.0


# -- models


@pytest.mark.parametrize("fusion", ["film", "cross_attention"])
def test_fusion_starts_as_the_identity_and_learns_text_dependent_scores(fusion) -> None:
    torch.manual_seed(0)
    plain = OpenVocabModel(ConvBackbone((4, 8)), 6)
    fused = OpenVocabModel(ConvBackbone((4, 8)), 6, fusion=fusion)
    fused.load_state_dict(plain.state_dict(), strict=False)
    images = torch.randint(0, 255, (3, 3, 16, 16), dtype=torch.uint8)
    text = torch.nn.functional.normalize(torch.randn(5, 6), dim=-1)
    plain.eval(), fused.eval()
    torch.testing.assert_close(fused.scores(images, text), plain.scores(images, text))
    for parameter in fused.fusion.parameters():
        torch.nn.init.normal_(parameter)
    changed = fused.scores(images, text)
    assert changed.shape == (3, 5)
    assert not torch.allclose(changed, plain.scores(images, text))


def test_sizes_that_differ_without_a_projection_are_named() -> None:
    with pytest.raises(ValueError, match="8-d and the text embeddings 384-d"):
        OpenVocabModel(ConvBackbone((4, 8)), 384, projection=False)
    assert OpenVocabModel(ConvBackbone((4, 8)), 8, projection=False).embed(
        torch.zeros(2, 3, 16, 16, dtype=torch.uint8)).shape == (2, 8)


@pytest.mark.parametrize("kind, config", [
    ("mobilenet_v2", {"depth_multiplier": 0.35, "image_size": 32}),
    ("efficientnet", {"width_coefficient": 0.25, "depth_coefficient": 0.25, "image_size": 32,
                      "hidden_dim": 320})])
def test_transformers_backbones_built_from_a_config_embed_into_the_text_space(
        kind, config) -> None:
    model = OpenVocabModel(HFBackbone(kind, config), 12).eval()
    with torch.no_grad():
        out = model.embed(torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8))
    assert out.shape == (2, 12)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))


# -- text encoders


def test_minilm_is_the_real_pretrained_encoder_and_remembers_texts() -> None:
    from vldistill.models.text_towers import load_text_encoder

    encoder = load_text_encoder("minilm")
    vectors = encoder(["a red circle", "a crimson circle", "a blue hexagon"])
    assert vectors.shape == (3, 384)
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2])
    assert torch.equal(encoder(["a red circle"])[0], vectors[0])
    assert len(encoder.memo) == 3


def _tokenizer(words):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocabulary = ["<pad>", "<unk>", "<s>", "</s>", *words]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocabulary)},
                                           unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                             special_tokens=[("</s>", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>",
                                   pad_token="<pad>", bos_token="<s>", eos_token="</s>")


WORDS = ["a", "red", "blue", "green", "circle", "star", "square", "photo", "of"]


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    tokenizer = _tokenizer(WORDS)
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 16, "intermediate_size": 32,
                     "num_hidden_layers": 1, "num_attention_heads": 2,
                     "max_position_embeddings": 16, "eos_token_id": 3, "pad_token_id": 0,
                     "bos_token_id": 2},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=12)
    folder = tmp_path_factory.mktemp("clip")
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def siglip_folder(tmp_path_factory):
    from transformers import SiglipConfig, SiglipModel

    torch.manual_seed(0)
    tokenizer = _tokenizer(WORDS)
    config = SiglipConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 16, "intermediate_size": 32,
                     "num_hidden_layers": 1, "num_attention_heads": 2,
                     "max_position_embeddings": 8, "pad_token_id": 0, "projection_size": 12},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8})
    folder = tmp_path_factory.mktemp("siglip")
    SiglipModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_clip_and_siglip_text_towers_load_from_folders(clip_folder, siglip_folder) -> None:
    from transformers import CLIPModel

    from vldistill.models.text_towers import load_text_encoder

    clip = load_text_encoder("clip", clip_folder)
    vectors = clip(["a red circle", "a blue star", "a red circle"])
    assert clip.dim == 12 and vectors.shape == (3, 12)
    torch.testing.assert_close(vectors[0], vectors[2])
    reference = CLIPModel.from_pretrained(clip_folder).eval()
    ids = clip.model and _tokenizer(WORDS)(["a red circle"], return_tensors="pt")
    with torch.no_grad():
        expected = reference.get_text_features(input_ids=ids["input_ids"],
                                               attention_mask=ids["attention_mask"])
    expected = getattr(expected, "pooler_output", expected)
    torch.testing.assert_close(vectors[0], torch.nn.functional.normalize(expected, dim=-1)[0])
    from transformers import SiglipModel

    siglip = load_text_encoder("siglip", siglip_folder)
    got = siglip(["a green square"])
    assert siglip.dim == 12 and got.shape == (1, 12)          # the head's projection_size
    reference = SiglipModel.from_pretrained(siglip_folder).eval()
    ids = _tokenizer(WORDS)(["a green square"], padding="max_length", max_length=8,
                            return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = reference.get_text_features(input_ids=ids)      # no mask: as trained
    expected = getattr(expected, "pooler_output", expected)
    torch.testing.assert_close(got[0], torch.nn.functional.normalize(expected, dim=-1)[0])


# -- data


def test_jsonl_errors_name_the_file_and_line(tmp_path) -> None:
    from PIL import Image

    Image.new("RGB", (20, 10), "red").save(tmp_path / "a.png")
    good = '{"image": "a.png", "caption": "a red thing", "label": "red"}'
    cases = {'{"image": "a.png"}': r"line 2: caption missing, empty or not a string",
             "{not json": r"line 2: not valid JSON",
             '{"image": "../a.png", "caption": "x"}': r"line 2: .*not inside the image root",
             '["a.png", "x"]': r"line 2: expected a JSON object"}
    for line, message in cases.items():
        path = tmp_path / "captions.jsonl"
        path.write_text(good + "\n" + line + "\n", encoding="utf-8")
        with pytest.raises(DataError, match=message):
            read_jsonl(path, tmp_path, 16)
    path.write_text(good + "\n", encoding="utf-8")
    data = read_jsonl(path, tmp_path, 16)
    assert data.images.shape == (1, 3, 16, 16) and data.labels == ["red"]
    (tmp_path / "bad.png").write_bytes(b"not an image")
    path.write_text('{"image": "bad.png", "caption": "x"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="bad.png could not be read as an image"):
        read_jsonl(path, tmp_path, 16)


def test_an_image_folder_gives_labels_from_folder_names(tmp_path) -> None:
    from PIL import Image

    for label in ("red_circle", "blue star"):
        (tmp_path / label).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / label / "0.png")
    data = read_folder(tmp_path, 16, "a photo of a {label}")
    assert data.labels == ["blue star", "red circle"]
    assert data.captions == ["a photo of a blue star", "a photo of a red circle"]


def test_labels_must_be_distinct_and_non_empty() -> None:
    with pytest.raises(ValueError, match="at least one non-empty label"):
        check_labels(["", " "])
    with pytest.raises(ValueError, match=r"duplicate labels \['Red', 'red'\] \(case aside\)"):
        check_labels(["red", "blue", " Red"])
    with pytest.raises(ValueError, match=r"number 2 of 3 are empty"):
        check_labels(["red", "", "blue"])
    assert check_labels([" red ", "blue"]) == ["red", "blue"]


# -- the job


TINY = ["data.shapesworld.train_images=300", "data.shapesworld.val_images=80",
        "data.labelled_images=60", "teacher.widths=[8, 16]", "teacher.train.max_steps=6",
        "teacher.train.batch_size=32", "student.widths=[4, 8]", "student.train.max_steps=6",
        "student.train.batch_size=32", "eval.latency_repeats=2", "trainer.log_every_n_steps=2"]


@pytest.fixture(scope="module")
def ov_run(tmp_path_factory):
    from pathlib import Path

    from vldistill.jobs.open_vocab.job import run_open_vocab
    from vldistill.jobs.open_vocab.recipe import load_open_vocab_recipe

    out = tmp_path_factory.mktemp("ov")
    recipe = load_open_vocab_recipe(Path(__file__).parents[3] / "recipes" / "open_vocab.yaml",
                                    [f"output_dir={out}", *TINY])
    return recipe, run_open_vocab(recipe)


def test_the_run_folder_has_every_file(ov_run) -> None:
    from tests.jobs.run_folder import check_run_folder

    recipe, _ = ov_run
    paths = check_run_folder(recipe.output_dir / recipe.name, "open_vocab", curves=True)
    assert {"teacher", "student-kd-seed0", "student-nokd-seed0"} <= {
        p.parent.name for p in paths.logs.glob("*/metrics.csv")}


def test_resume_loads_the_finished_models_and_reports_the_same_scores(ov_run) -> None:
    """Every model of the job trains through the engine, so --resume of a finished run trains
    nothing again and scores the saved weights: the same numbers."""
    from vldistill.jobs.base import RunOptions
    from vldistill.jobs.open_vocab.job import run_open_vocab

    recipe, results = ov_run
    again = run_open_vocab(recipe, RunOptions(resume=True))
    for first, second in zip(results["rows"], again["rows"]):
        scores = [k for k in first if k.startswith(("zero_shot", "i2t", "t2i"))]
        assert scores and {k: first[k] for k in scores} == {k: second[k] for k in scores}
        assert first["train_time_s"] == second["train_time_s"]      # read back, not retrained


def test_the_run_reports_teacher_and_both_students_on_seen_and_held_out_classes(ov_run) -> None:
    recipe, results = ov_run
    assert [row["model"] for row in results["rows"]] == ["teacher", "student (no KD)",
                                                          "student (KD)"]
    for row in results["rows"]:
        for key in ("zero_shot_top1/seen", "zero_shot_top1/heldout", "i2t_R@10", "t2i_R@1"):
            assert 0 <= row[key] <= 100
    assert results["rows"][0]["parameters"] > results["rows"][1]["parameters"]
    saved = json.loads((recipe.output_dir / recipe.name / "results.json").read_text())
    assert saved["holdout"] == recipe.data.holdout


def test_held_out_combinations_never_reach_training() -> None:
    from vldistill.data.image_text import shapesworld_sets
    from vldistill.data.shapesworld import ShapesWorldSettings

    train, val, classes = shapesworld_sets(ShapesWorldSettings(train_images=400, val_images=200),
                                           ["purple star", "red circle"])
    assert len(classes) == 48
    assert not {"purple star", "red circle"} & set(train.labels)
    assert {"purple star", "red circle"} & set(val.labels)
    for label, caption in zip(train.labels, train.captions):
        colour, shape = label.split()
        words = caption.split()
        assert words[2] == colour and words[-1] == shape   # "a <size> <colour> <pattern> <shape>"
    with pytest.raises(DataError, match="not ShapesWorld classes"):
        shapesworld_sets(ShapesWorldSettings(train_images=4, val_images=2), ["pink star"])


def test_zero_shot_ranks_labels_with_probabilities_from_a_checkpoint(ov_run, tmp_path) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    from vldistill.cli import app
    from vldistill.jobs.open_vocab.zero_shot import zero_shot

    recipe, _ = ov_run
    checkpoint = recipe.output_dir / recipe.name / "checkpoints" / "student-kd-seed0-last.safetensors"
    Image.new("RGB", (64, 64), "purple").save(tmp_path / "x.png")
    ranked = zero_shot(checkpoint, tmp_path / "x.png", ["purple star", "red circle", "blue sky"])
    probabilities = [p for _, p, _ in ranked]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
    result = CliRunner().invoke(app, ["zero-shot", "--model", str(checkpoint), "--image",
                                      str(tmp_path / "x.png"), "--labels", "red,red"])
    assert result.exit_code != 0 and "duplicate labels" in result.output
    result = CliRunner().invoke(app, ["zero-shot", "--model", str(checkpoint), "--image",
                                      str(tmp_path / "x.png"), "--labels", "purple star,red"])
    assert result.exit_code == 0 and "purple star" in result.output


def test_vldistill_run_dispatches_an_open_vocab_recipe(tmp_path) -> None:
    from pathlib import Path

    from typer.testing import CliRunner

    from vldistill.cli import app

    recipe = Path(__file__).parents[3] / "recipes" / "open_vocab.yaml"
    sets = [item for pair in (("--set", s) for s in [f"output_dir={tmp_path}", *TINY,
                                                     "student.fusion=film"]) for item in pair]
    result = CliRunner().invoke(app, ["run", str(recipe), *sets])
    assert result.exit_code == 0, result.output
    assert "student (KD)" in result.output and "top-1 held-out" in result.output


def test_a_clip_teacher_from_a_folder_teaches_a_student_in_its_space(clip_folder,
                                                                     tmp_path) -> None:
    from pathlib import Path

    from vldistill.jobs.open_vocab.job import run_open_vocab
    from vldistill.jobs.open_vocab.recipe import load_open_vocab_recipe

    recipe = load_open_vocab_recipe(Path(__file__).parents[3] / "recipes" / "open_vocab.yaml", [
        f"output_dir={tmp_path}", *TINY, f"teacher={{kind: clip, path: {clip_folder}}}",
        f"text_encoder={{name: clip, path: {clip_folder}}}", "student.fusion=cross_attention"])
    results = run_open_vocab(recipe)
    rows = {row["model"]: row for row in results["rows"]}
    assert rows["teacher"]["parameters"] > rows["student (KD)"]["parameters"] > 0
    from vldistill.core.errors import RecipeError

    with pytest.raises(RecipeError, match="aligned with its own text tower"):
        load_open_vocab_recipe(None, [f"teacher={{kind: clip, path: {clip_folder}}}"])


def test_a_saved_encoder_rebuilds_with_the_same_scores(tmp_path) -> None:
    from vldistill.jobs.open_vocab.encoders import build_image_encoder, load_encoder, save_encoder
    from vldistill.jobs.open_vocab.recipe import ImageEncoderSettings, OVDataSettings
    from vldistill.models.text_towers import load_text_encoder

    text = load_text_encoder("minilm")
    settings = ImageEncoderSettings(widths=[4, 8], fusion="film")
    torch.manual_seed(0)
    model = build_image_encoder(settings, text.dim).eval()
    for parameter in model.fusion.parameters():
        torch.nn.init.normal_(parameter, std=0.1)
    save_encoder(tmp_path / "m.safetensors", model, settings, text, OVDataSettings(), "student")
    loaded, loaded_text, metadata = load_encoder(tmp_path / "m.safetensors")
    images = torch.randint(0, 255, (3, 3, 64, 64), dtype=torch.uint8)
    prompts = text(["a red circle", "a blue star"])
    with torch.no_grad():
        torch.testing.assert_close(loaded.scores(images, prompts), model.scores(images, prompts))
    assert loaded_text.kind == "minilm" and metadata["prompt"] == "a {label}"
    data = bytearray((tmp_path / "m.safetensors").read_bytes())
    data[-3] ^= 0x01                                    # one bit of the last weight
    (tmp_path / "m.safetensors").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"m.safetensors is damaged.*run the recipe again"):
        load_encoder(tmp_path / "m.safetensors")


def test_the_kd_student_never_reads_transfer_captions(tmp_path) -> None:
    """Garbling the transfer set's captions (and labels) changes nothing in KD training: only
    its images and the teacher's embeddings of them are used."""
    from vldistill.config import TrainerSettings, TrainSettings
    from vldistill.core.runpaths import RunPaths
    from vldistill.data.image_text import ImageTextSet
    from vldistill.jobs.open_vocab.encoders import build_image_encoder
    from vldistill.jobs.open_vocab.recipe import ImageEncoderSettings, OVDistillSettings
    from vldistill.jobs.open_vocab.training import train_encoder
    from vldistill.kd.sources import row_cache, row_fingerprint
    from vldistill.models.text_towers import load_text_encoder

    text = load_text_encoder("minilm")
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (24, 3, 16, 16), dtype=torch.uint8, generator=generator)
    labelled = ImageTextSet(images[:8], [f"a shape {i % 3}" for i in range(8)], [None] * 8)
    vectors = torch.nn.functional.normalize(torch.randn(24, text.dim, generator=generator), -1)
    teacher = row_cache(tmp_path / "cache", row_fingerprint("t", "d", "image_embeds"), 24,
                        lambda first, last: vectors[first:last], command="rebuild")

    def run(captions, folder):
        transfer = ImageTextSet(images[8:], captions, ["x"] * 16)
        torch.manual_seed(0)
        model = build_image_encoder(ImageEncoderSettings(widths=[4]), text.dim)
        trained = train_encoder(model, text, labelled, TrainSettings(max_steps=3, batch_size=4),
                                OVDistillSettings(), 0, "kd", RunPaths(tmp_path / folder),
                                TrainerSettings(progress_bar=False), transfer, teacher).student
        return trained.state_dict()
    first, second = run(["a red star"] * 16, "a"), run([f"garbled {i}" for i in range(16)], "b")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_a_teacher_checkpoint_from_another_setting_is_refused(ov_run, tmp_path) -> None:
    from pathlib import Path

    from vldistill.jobs.open_vocab.job import run_open_vocab
    from vldistill.jobs.open_vocab.recipe import load_open_vocab_recipe

    recipe, _ = ov_run
    saved = recipe.output_dir / recipe.name / "checkpoints" / "teacher-last.safetensors"
    other = load_open_vocab_recipe(Path(__file__).parents[3] / "recipes" / "open_vocab.yaml", [
        f"output_dir={tmp_path}", *TINY, f"teacher_checkpoint={saved}",
        "data.holdout=[purple star]"])
    with pytest.raises(DataError, match="another held-out combinations"):
        run_open_vocab(other)
