"""Losses: hand-computed values, properties, and the contract every registered term meets."""

import math

import pytest
import torch

from vldistill.distill import (LOSSES, DistillationStep, WeightedTerm, build_loss, kd_loss,
                               vqa_bce_loss)
from vldistill.distill.losses import cross_entropy_loss
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
    with pytest.raises(KeyError, match="valid names: ce, kd, vqa_bce"):
        build_loss("hinton")


class Linear(torch.nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.layer = torch.nn.Linear(6, 4)

    def forward(self, x):
        return ModelOutput(logits=self.layer(x))


def _batch(labelled):
    torch.manual_seed(3)
    return {"inputs": (torch.randn(len(labelled), 6),),
            "targets": torch.rand(len(labelled), 4),
            "labelled": torch.tensor(labelled)}


@pytest.mark.parametrize("name", LOSSES.names())
def test_contract_every_registered_loss(name):
    """Finite; gradients reach the student only; zero when the student equals the teacher
    (for teacher terms)."""
    term = build_loss(name)
    teacher, student = Linear(0), Linear(1)
    batch = _batch([True, False, True])
    if name == "ce":
        batch["targets"] = torch.tensor([1, 0, 3])
    step = DistillationStep(student, [WeightedTerm(name, 1.0, term)],
                            teacher=teacher if term.needs_teacher else None)
    losses = step(batch)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert student.layer.weight.grad is not None and student.layer.weight.grad.abs().sum() > 0
    assert teacher.layer.weight.grad is None
    if term.needs_teacher:
        same = DistillationStep(Linear(0), [WeightedTerm(name, 1.0, term)], teacher=Linear(0))
        assert same(batch)["loss"].item() == pytest.approx(0.0, abs=1e-6)
