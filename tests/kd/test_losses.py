"""Losses: hand-computed values, properties, and the contract every registered term meets."""

import math
import re

import pytest
import torch

from vldistill.kd import LOSSES, DistillationStep, WeightedTerm, build_loss, kd_loss, vqa_bce_loss
from vldistill.kd.losses import cross_entropy_loss
from vldistill.models import ModelOutput


def test_kd_loss_hand_computed():
    # Two classes, T = 1: p_t = softmax([0, 0]) = (1/2, 1/2); p_s = softmax([ln 3, 0]) = (3/4, 1/4)
    # KL(p_t || p_s) = 1/2 ln((1/2)/(3/4)) + 1/2 ln((1/2)/(1/4)) = 1/2 ln(2/3) + 1/2 ln 2
    student = torch.tensor([[math.log(3.0), 0.0]])
    teacher = torch.tensor([[0.0, 0.0]])
    expected = 0.5 * math.log(2 / 3) + 0.5 * math.log(2)
    assert kd_loss(student, teacher, 1.0).item() == pytest.approx(expected, rel=1e-6)


def test_kd_loss_temperature_scaling_hand_computed():
    # T = 2 divides logits by 2: student [2 ln 3, 0] / 2 = [ln 3, 0], teacher [0, 0]; times T^2 = 4
    student = torch.tensor([[2 * math.log(3.0), 0.0]])
    teacher = torch.zeros(1, 2)
    expected = 4 * (0.5 * math.log(2 / 3) + 0.5 * math.log(2))
    assert kd_loss(student, teacher, 2.0).item() == pytest.approx(expected, rel=1e-6)


def test_kd_loss_zero_iff_equal_and_positive_otherwise():
    torch.manual_seed(0)
    logits = torch.randn(5, 7)
    assert kd_loss(logits, logits.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(logits + torch.randn(5, 7), logits, 3.0).item() > 0
    # invariant to adding a constant per row (softmax shift invariance)
    shifted = logits + torch.randn(5, 1)
    other = torch.randn(5, 7)
    assert kd_loss(shifted, other).item() == pytest.approx(kd_loss(logits, other).item(), rel=1e-5)


def test_kd_loss_matches_torch_kl_div():
    torch.manual_seed(1)
    student, teacher, temperature = torch.randn(4, 9), torch.randn(4, 9), 2.5
    reference = torch.nn.functional.kl_div(
        torch.log_softmax(student / temperature, -1), torch.log_softmax(teacher / temperature, -1),
        reduction="batchmean", log_target=True) * temperature**2
    assert kd_loss(student, teacher, temperature).item() == pytest.approx(reference.item(),
                                                                          rel=1e-5)


def test_kd_loss_float32_under_half_inputs():
    torch.manual_seed(2)
    student, teacher = torch.randn(3, 5), torch.randn(3, 5)
    full = kd_loss(student, teacher, 2.0)
    half = kd_loss(student.bfloat16(), teacher.bfloat16(), 2.0)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=0.05)


def test_vqa_bce_hand_computed():
    # logits 0 -> sigmoid 0.5; BCE = ln 2 for every answer whatever the target; 3 answers summed
    logits = torch.zeros(2, 3)
    targets = torch.tensor([[1.0, 0.0, 0.3], [0.0, 0.6, 1.0]])
    assert vqa_bce_loss(logits, targets).item() == pytest.approx(3 * math.log(2), rel=1e-6)
    # logit x for target 1: -log sigmoid(x); at x = ln 3: -log(3/4)
    single = vqa_bce_loss(torch.tensor([[math.log(3.0)]]), torch.tensor([[1.0]]))
    assert single.item() == pytest.approx(-math.log(0.75), rel=1e-6)


def test_losses_of_zero_rows_are_zero_and_differentiable():
    empty = torch.zeros(0, 4, requires_grad=True)
    for value in (kd_loss(empty, empty.detach()), vqa_bce_loss(empty, torch.zeros(0, 4)),
                  cross_entropy_loss(empty, torch.zeros(0, dtype=torch.long))):
        assert value.item() == 0.0
        value.backward()


def test_kd_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same answer vocabulary"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4))


def test_build_loss_lists_valid_parameters():
    with pytest.raises(ValueError, match="valid: temperature"):
        build_loss("kd", temprature=2.0)
    registered = ["ce", "clip_affinity", "contrastive", "dkd", "feature", "kd", "loca",
                  "relational", "vqa_bce"]
    assert set(registered) <= set(LOSSES.names())
    with pytest.raises(KeyError, match=re.escape("valid names: " + ", ".join(LOSSES.names()))):
        build_loss("hinton")


def test_step_refuses_negative_and_all_zero_weights():
    term = build_loss("vqa_bce")
    with pytest.raises(ValueError, match=r"terms\[1\]\.weight of loss term 'task' is -0\.5"):
        DistillationStep(Linear(1), [WeightedTerm("other", 1.0, build_loss("vqa_bce")),
                                     WeightedTerm("task", -0.5, term)])
    with pytest.raises(ValueError, match=r"weight of loss term 'task' is nan"):
        DistillationStep(Linear(1), [WeightedTerm("task", float("nan"), term)])
    with pytest.raises(ValueError, match="every loss term weight is 0 \\(task, kd\\)"):
        DistillationStep(Linear(1), [WeightedTerm("task", 0.0, term),
                                     WeightedTerm("kd", 0.0, build_loss("kd"))],
                         teacher=Linear(0))
    # a single zero weight switches that term off and is allowed
    DistillationStep(Linear(1), [WeightedTerm("task", 1.0, term),
                                 WeightedTerm("kd", 0.0, build_loss("kd"))], teacher=Linear(0))


class Linear(torch.nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.layer = torch.nn.Linear(6, 4)

    def forward(self, x):
        return ModelOutput(logits=self.layer(x))


class Fake(torch.nn.Module):
    """A model with every output field: logits (N, 4), image_embeds and text_embeds (N, width),
    features "grid" (N, grid, width) and "fused" (N, width + 2), and a generative model's
    answer tokens over a 5-token vocabulary: 2 positions, the second one masked on odd rows,
    whose gold tokens are 1 and 4 (see vldistill.kd.token_losses)."""

    def __init__(self, seed: int, width: int = 4, grid: int = 4):
        super().__init__()
        torch.manual_seed(seed)
        self.layer = torch.nn.Linear(6, 4)
        self.image = torch.nn.Linear(6, width)
        self.text = torch.nn.Linear(6, width)
        self.grid = torch.nn.Linear(6, grid * width)
        self.fused = torch.nn.Linear(6, width + 2)
        self.tokens = torch.nn.Linear(6, 2 * 5)
        self.shape = (grid, width)

    def forward(self, x):
        return ModelOutput(logits=self.layer(x), image_embeds=self.image(x),
                           text_embeds=self.text(x),
                           features={"grid": self.grid(x).view(len(x), *self.shape),
                                     "fused": self.fused(x), **self.answer_tokens(x)})

    def answer_tokens(self, x):
        mask = torch.ones(len(x), 2, dtype=torch.bool)
        mask[1::2, 1] = False
        ids = torch.where(mask, torch.tensor([1, 4]), torch.tensor(-100))
        return {"answer_token_logits": self.tokens(x).view(len(x), 2, 5),
                "answer_token_mask": mask, "answer_token_ids": ids}


def _batch(labelled):
    torch.manual_seed(3)
    return {"inputs": (torch.randn(len(labelled), 6),),
            "targets": torch.rand(len(labelled), 4),
            "labelled": torch.tensor(labelled)}


# Terms whose value is not 0 when the student equals the teacher, and why.
NOT_ZERO_AT_EQUALITY = {
    "contrastive": "InfoNCE of identical embeddings is still > 0 (the negatives share the mass)",
}
# Extra parameter sets run through the contract besides each loss's defaults.
VARIANTS = [("feature", {"feature": "grid", "kind": "cosine"}),
            ("feature", {"feature": "fused", "kind": "smooth_l1"}),
            ("contrastive", {"feature": "text_embeds", "queue_size": 4}),
            ("relational", {"feature": "grid", "kind": "rkd_angle"}),
            ("relational", {"feature": "fused", "kind": "similarity"})]
CASES = [(name, {}) for name in LOSSES.names()] + VARIANTS


def _setup(name, batch):
    """Per-loss inputs: class indices for ce (loca's zero check sets its own targets below)."""
    if name == "ce":
        batch["targets"] = torch.tensor([1, 0, 3])
    return batch


def _teacher_right_targets(batch, teacher):
    with torch.no_grad():
        best = teacher(*batch["inputs"]).logits.argmax(-1)
    return torch.nn.functional.one_hot(best, 4).float()


@pytest.mark.parametrize(("name", "params"), CASES,
                         ids=[f"{n}-{'-'.join(map(str, p.values())) or 'defaults'}"
                              for n, p in CASES])
def test_contract_every_registered_loss(name, params):
    """Finite; gradients reach the student and the term's projectors, never the teacher; zero
    when the student equals the teacher (for teacher terms, where that holds). The teacher is
    wider than the student (6 vs 4) and has a finer grid (9 vs 4 tokens), so projectors and
    pooling are exercised."""
    term = build_loss(name, **params)
    teacher, student = Fake(0, width=6, grid=9), Fake(1)
    batch = _setup(name, _batch([True, False, True]))
    step = DistillationStep(student, [WeightedTerm(name, 1.0, term)],
                            teacher=teacher if term.needs_teacher else None)
    step.train()
    step.materialize(batch)
    assert not any(isinstance(p, torch.nn.parameter.UninitializedParameter)
                   for p in step.parameters())
    assert all(p.grad is None for p in step.parameters())
    losses = step(batch)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    for parameter in term.parameters():                       # projectors learn
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    if name in ("feature", "contrastive"):
        assert len(list(term.parameters())) == 2              # the projector's weight and bias
    if term.needs_teacher and name not in NOT_ZERO_AT_EQUALITY:
        same_batch = _setup(name, _batch([True, False, True]))
        if name == "loca":   # LoCa changes the teacher where it is wrong; make it right
            same_batch["targets"] = _teacher_right_targets(same_batch, Fake(0))
        same = DistillationStep(Fake(0), [WeightedTerm(name, 1.0, build_loss(name, **params))],
                                teacher=Fake(0))
        assert same(same_batch)["loss"].item() == pytest.approx(0.0, abs=1e-6)
