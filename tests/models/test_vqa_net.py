"""The built-in VQA network: shapes, typed output, and the packed attention vs a naive one."""

import math

import pytest
import torch

from vldistill.models import ModelOutput, build_model, count_parameters
from vldistill.models.vqa_net import QuestionSlots


def make_inputs(num_images=3, per_image=(2, 1, 3), size=32, seed=0):
    torch.manual_seed(seed)
    image_index = torch.tensor([i for i, n in enumerate(per_image) for _ in range(n)])
    lengths = torch.randint(1, 6, (len(image_index),))
    tokens = torch.randint(2, 20, (len(image_index), 6)) * (torch.arange(6) < lengths[:, None])
    images = torch.randint(0, 256, (num_images, 3, size, size), dtype=torch.uint8)
    return {"images": images, "question_tokens": tokens, "question_lengths": lengths,
            "image_index": image_index}


def test_output_shapes_and_types():
    model = build_model("vqa_attention", {"width": 8, "grid": 4}, num_answers=11, vocab_size=20)
    output = model(**make_inputs())
    assert isinstance(output, ModelOutput)
    assert output.logits.shape == (6, 11)
    assert output.image_embeds.shape == (6, 8) and output.text_embeds.shape == (6, 8)
    assert output.features["image_grid"].shape == (3, 16, 8)


def test_question_slots_pack_unpack_roundtrip_unsorted():
    image_index = torch.tensor([2, 0, 2, 1, 0, 2])
    slots = QuestionSlots(image_index, 3)
    x = torch.arange(6 * 2 * 3, dtype=torch.float32).view(6, 2, 3)
    packed = slots.pack(x)                      # (3 images, 3 questions * 2 heads, 3)
    assert packed.shape == (3, 6, 3)
    assert torch.equal(slots.unpack(packed, 2), x)


def test_packed_attention_equals_naive_per_question_gather():
    """The per-image batched attention must equal attending over each question's own image."""
    model = build_model("vqa_attention", {"width": 8, "grid": 4, "heads": 2, "hops": 1},
                        num_answers=5, vocab_size=20).eval()
    inputs = make_inputs(per_image=(3, 1, 2))
    hop = model.hops[0]
    with torch.no_grad():
        grid = model.stem(inputs["images"])
        keys = model.keys(grid)
        state = model.question(inputs["question_tokens"], inputs["question_lengths"])
        slots = QuestionSlots(inputs["image_index"], 3)
        fast_state, fast_readout = hop(state, keys, grid, model.stem.coords, slots)
        # naive: gather the grid of each question's image and attend question by question
        for q, image in enumerate(inputs["image_index"].tolist()):
            query = hop.queries(state[q]).view(2, 8)                       # (h, D)
            scores = query @ keys[image].T / math.sqrt(8)                  # (h, G*G)
            attention = scores.softmax(-1)
            read = attention @ grid[image]
            where = attention @ model.stem.coords
            assert torch.allclose(fast_readout[q, :16], read.flatten(), atol=1e-5)
            assert torch.allclose(fast_readout[q, 16:20], where.flatten(), atol=1e-5)
            dx = where[0] - where[1]
            assert torch.allclose(fast_readout[q, -2:], dx, atol=1e-5)


def test_questions_do_not_see_other_images():
    model = build_model("vqa_attention", {"width": 8, "grid": 4}, num_answers=5,
                        vocab_size=20).eval()
    inputs = make_inputs()
    with torch.no_grad():
        before = model(**inputs).logits
        changed = dict(inputs, images=inputs["images"].clone())
        changed["images"][1] = 255 - changed["images"][1]       # change image 1 only
        after = model(**changed).logits
    untouched = inputs["image_index"] != 1
    assert torch.allclose(before[untouched], after[untouched], atol=1e-6)
    assert not torch.allclose(before[~untouched], after[~untouched])


def test_default_teacher_has_ten_times_the_student_parameters():
    from vldistill.config import Recipe

    recipe = Recipe()
    sizes = {"num_answers": 60, "vocab_size": 80}
    teacher = build_model(recipe.teacher.model.name, recipe.teacher.model.params, **sizes)
    student = build_model(recipe.student.model.name, recipe.student.model.params, **sizes)
    assert count_parameters(teacher) >= 10 * count_parameters(student)


def test_unknown_params_are_rejected_with_valid_names():
    with pytest.raises(Exception, match="width"):
        build_model("vqa_attention", {"widht": 8}, num_answers=3, vocab_size=5)
