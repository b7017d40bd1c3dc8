"""Tests for the LLaVA-OneVision adapter (vldistill.models.hf_llava) and the answer-token losses.

Tiny random teacher and student configs of the real Hugging Face class are built in code, saved
with save_pretrained and loaded back through the path a user takes (``path:`` in a recipe).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from vldistill.kd.token_losses import AnswerTokenCELoss, AnswerTokenKDLoss, token_kd_loss  # noqa: E402
from vldistill.models import build_model  # noqa: E402
from vldistill.models.hf_llava import LlavaOnevisionVQA  # noqa: E402

ANSWERS = ["red", "blue", "yes", "no", "2", "circle"]
QUESTIONS = ["what colour is the circle", "how many objects are there", "is there a circle"]
TEACHER = {"vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                      "num_attention_heads": 4},
           "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "num_key_value_heads": 2},
           "image_size": 32}
STUDENT = {"vision": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                      "num_attention_heads": 2},
           "text": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                    "num_attention_heads": 2, "num_key_value_heads": 1},
           "image_size": 32}
VOCAB = sorted({w for q in QUESTIONS for w in q.split()})


def tiny(config=TEACHER, seed: int = 0) -> LlavaOnevisionVQA:
    torch.manual_seed(seed)
    return build_model("llava_onevision", {"config": config}, answers=ANSWERS,
                       question_vocab=VOCAB, num_answers=len(ANSWERS), vocab_size=len(VOCAB)
                       ).eval()


def batch(answers=("red", "2", None)) -> dict:
    images = torch.randint(0, 256, (2, 3, 40, 40), generator=torch.Generator().manual_seed(0),
                           dtype=torch.uint8)
    return {"images": images, "image_index": torch.tensor([0, 0, 1]),
            "questions": list(QUESTIONS), "answers": list(answers)}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("llava") / "teacher"
    tiny().save_pretrained(folder)
    return folder


def test_a_saved_model_loads_back_through_the_recipe_path(saved: Path) -> None:
    built = tiny()
    loaded = build_model("llava_onevision", {"path": str(saved)}, answers=ANSWERS,
                         question_vocab=None, num_answers=len(ANSWERS), vocab_size=0).eval()

    assert loaded.model.state_dict().keys() == built.model.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(loaded.model.state_dict().values(),
                                                 built.model.state_dict().values()))
    with torch.no_grad():
        expected, got = built(**batch()), loaded(**batch())
    torch.testing.assert_close(got.logits, expected.logits)
    torch.testing.assert_close(got.features["answer_token_logits"],
                               expected.features["answer_token_logits"])


def test_outputs_have_the_documented_shapes_and_masks() -> None:
    model = tiny()
    with torch.no_grad():
        out = model(**batch())

    vocab = model.model.config.text_config.vocab_size
    # "red" + </s> and "2" + </s>: two answer positions; the unlabelled row has one
    assert out.features["answer_token_logits"].shape == (3, 2, vocab)
    assert out.features["answer_token_mask"].tolist() == [[True, True], [True, True],
                                                          [True, False]]
    eos = model.processor.tokenizer.eos_token_id
    red, two = (model.processor.tokenizer.convert_tokens_to_ids(w) for w in ("red", "2"))
    assert out.features["answer_token_ids"].tolist() == [[red, eos], [two, eos], [-100, -100]]
    assert out.logits.shape == (3, len(ANSWERS))
    # (32 / 16)^2 patches per crop, 2 crops (base + one anyres crop) per image
    assert out.features["vision_tokens"].shape == (3, 8, 32)
    assert out.features["projector_tokens"].shape == (3, 8, 32)
    torch.testing.assert_close(out.image_embeds, out.features["projector_tokens"].mean(1))


def test_answer_logits_are_first_token_log_probabilities_and_causal() -> None:
    model = tiny()
    with torch.no_grad():
        labelled = model(**batch(("red", "2", "no")))
        unlabelled = model(**batch((None, None, None)))

    first = torch.log_softmax(labelled.features["answer_token_logits"][:, 0], dim=-1)
    ids = [model.processor.tokenizer.convert_tokens_to_ids(a) for a in ANSWERS]
    torch.testing.assert_close(labelled.logits, first[:, ids])
    # the answer is appended after the prompt: the first answer position cannot see it
    torch.testing.assert_close(unlabelled.logits, labelled.logits, atol=1e-5, rtol=1e-5)


def test_answer_token_ce_equals_hugging_faces_labels_loss() -> None:
    model = tiny()
    inputs = batch(("red", "2", "yes"))
    encoded = model.encode(inputs["images"], inputs["image_index"], inputs["questions"],
                           inputs["answers"])
    labels = torch.full_like(encoded["inputs"]["input_ids"], -100)
    for row in range(3):            # the gold token at position p + 1 is predicted at p
        for position, token in zip(encoded["positions"][row], encoded["targets"][row]):
            labels[row, position + 1] = token
    with torch.no_grad():
        reference = model.model(**encoded["inputs"], labels=labels).loss
        ours = AnswerTokenCELoss()(model(**inputs), None, None)

    torch.testing.assert_close(ours, reference)


def test_token_kd_is_zero_for_identical_models_and_positive_otherwise() -> None:
    teacher, student = tiny(seed=0), tiny(STUDENT, seed=1)
    with torch.no_grad():
        t_out, s_out = teacher(**batch()), student(**batch())
    term = AnswerTokenKDLoss(temperature=2.0)

    assert float(term(t_out, t_out, None)) == pytest.approx(0.0, abs=1e-6)
    assert float(term(s_out, t_out, None)) > 0.0
    # the loca variant moves the teacher towards the gold token where there is one
    assert float(AnswerTokenKDLoss(loca_alpha=0.9)(s_out, t_out, None)) > 0.0


def test_token_kd_top_k_by_hand() -> None:
    student = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    teacher = torch.log(torch.tensor([[0.6, 0.3, 0.1]]))

    # top-2 teacher: (2/3, 1/3); KL = 2/3 ln((2/3)/0.5) + 1/3 ln((1/3)/0.25)
    expected = 2 / 3 * torch.log(torch.tensor(4 / 3)) + 1 / 3 * torch.log(torch.tensor(4 / 3))
    torch.testing.assert_close(token_kd_loss(student, teacher, top_k=2), expected)


def test_answer_token_losses_refuse_a_model_without_answer_tokens() -> None:
    from vldistill.models.outputs import ModelOutput

    plain = ModelOutput(logits=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="need a generative model"):
        AnswerTokenKDLoss()(plain, plain, None)


def test_a_one_channel_input_is_refused_with_the_fix() -> None:
    inputs = {**batch(), "images": torch.rand(2, 1, 40, 40)}
    with pytest.raises(ValueError, match="data.depth.channels: 3"):
        tiny()(**inputs)


def test_float_images_in_0_1_are_read_as_their_8_bit_rendering() -> None:
    model, inputs = tiny(), batch()
    as_float = {**inputs, "images": inputs["images"].float() / 255}
    with torch.no_grad():
        torch.testing.assert_close(model(**as_float).logits, model(**inputs).logits)


def test_a_folder_with_pickled_weights_only_is_named(tmp_path: Path) -> None:
    from vldistill.models.hf_vilt import CheckpointFolderError

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(CheckpointFolderError, match="LLaVA-OneVision checkpoint folder .* "
                                                    "pytorch_model.bin"):
        LlavaOnevisionVQA.from_pretrained(tmp_path, ANSWERS)
