"""DKD and LoCa: hand-computed values, the DKD decomposition of KD, LoCa's calibration rules."""

import math

import pytest
import torch

from vldistill.kd import (
    DKDLoss,
    LoCaLoss,
    build_loss,
    dkd_loss,
    dkd_parts,
    hard_targets,
    kd_loss,
    loca_calibrate,
    loca_loss,
)
from vldistill.kd.logit_losses import NO_TARGET
from vldistill.models import ModelOutput


def test_hard_targets_indices_pass_through_and_soft_scores_take_the_best_answer():
    assert hard_targets(torch.tensor([2, 0, 1])).tolist() == [2, 0, 1]
    soft = torch.tensor([[0.0, 0.3, 1.0],    # best answer 2
                         [0.6, 0.6, 0.0],    # tie: the first, 0
                         [0.0, 0.0, 0.0]])   # no answer in the vocabulary: no target
    assert hard_targets(soft).tolist() == [2, 0, NO_TARGET]
    with pytest.raises(ValueError, match=r"\(N,\) integer class indices or \(N, A\) float"):
        hard_targets(torch.tensor([0.5, 1.0]))


# ------------------------------------------------------------------------------------------ DKD

def test_dkd_binary_case_is_plain_kd():
    # 2 classes, target 0, T = 1. p_s = softmax([ln 3, 0]) = (3/4, 1/4), p_t = (1/2, 1/2).
    # TCKD = KL((1/2, 1/2) || (3/4, 1/4)) = 1/2 ln(2/3) + 1/2 ln 2. The only non-target class
    # renormalises to (1) for both, so NCKD = 0 whatever beta is.
    student, teacher = torch.tensor([[math.log(3.0), 0.0]]), torch.zeros(1, 2)
    expected = 0.5 * math.log(2 / 3) + 0.5 * math.log(2)
    value = dkd_loss(student, teacher, torch.tensor([0]), alpha=1.0, beta=8.0, temperature=1.0)
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_dkd_three_classes_hand_computed():
    # target 0, T = 1. Student logits [0, 0, ln 3]: p_s = (1/5, 1/5, 3/5).
    # Teacher logits [ln 2, 0, 0]: p_t = (2/4, 1/4, 1/4).
    # TCKD = KL((1/2, 1/2) || (1/5, 4/5)) = 1/2 ln(0.5/0.2) + 1/2 ln(0.5/0.8) = 1/2 ln(1.5625)
    #      = ln 1.25
    # Non-target classes renormalised: teacher (1/2, 1/2), student (1/4, 3/4)
    # NCKD = 1/2 ln(0.5/0.25) + 1/2 ln(0.5/0.75) = 1/2 ln(4/3)
    student = torch.tensor([[0.0, 0.0, math.log(3.0)]])
    teacher = torch.tensor([[math.log(2.0), 0.0, 0.0]])
    target = torch.tensor([0])
    tckd, nckd = math.log(1.25), 0.5 * math.log(4 / 3)
    parts = dkd_parts(student, teacher, target, temperature=1.0)
    assert parts[0].item() == pytest.approx(tckd, rel=1e-6)
    assert parts[1].item() == pytest.approx(nckd, rel=1e-6)
    value = dkd_loss(student, teacher, target, alpha=1.0, beta=8.0, temperature=1.0)
    assert value.item() == pytest.approx(tckd + 8 * nckd, rel=1e-6)      # ln 1.25 + 4 ln(4/3)
    # KD = 1/2 ln(0.5/0.2) + 1/4 ln(0.25/0.2) + 1/4 ln(0.25/0.6) = 1/2 ln 2.5 + 1/4 ln(25/48)
    #    = 0.29506...; and TCKD + (1 - p_t) NCKD = ln 1.25 + 1/2 * 1/2 ln(4/3) = 0.29506...
    kd = 0.5 * math.log(2.5) + 0.25 * math.log(25 / 48)
    assert kd == pytest.approx(tckd + 0.5 * nckd, rel=1e-12)
    assert kd_loss(student, teacher, 1.0).item() == pytest.approx(kd, rel=1e-6)
    # T = 2 on doubled logits gives the same distributions, times T^2 = 4
    doubled = dkd_loss(2 * student, 2 * teacher, target, alpha=1.0, beta=8.0, temperature=2.0)
    assert doubled.item() == pytest.approx(4 * (tckd + 8 * nckd), rel=1e-5)


def test_dkd_decomposition_identity_with_alpha_beta_one():
    """Zhao et al. Eq. 7: KD = TCKD + (1 - p_t^T) NCKD, row by row (both sides times T^2)."""
    torch.manual_seed(0)
    student, teacher = torch.randn(6, 5) * 2, torch.randn(6, 5) * 2
    target, temperature = torch.tensor([0, 1, 2, 3, 4, 2]), 3.0
    for row in range(6):
        s, t, g = student[row:row + 1], teacher[row:row + 1], target[row:row + 1]
        both = dkd_loss(s, t, g, alpha=1.0, beta=1.0, temperature=temperature).item()
        tckd = dkd_loss(s, t, g, alpha=1.0, beta=0.0, temperature=temperature).item()
        nckd = both - tckd
        p_target = torch.softmax(t / temperature, -1)[0, g].item()
        kd = kd_loss(s, t, temperature).item()
        assert kd == pytest.approx(tckd + (1 - p_target) * nckd, rel=1e-5)
        # so DKD with beta = 1 - p_t^T is KD itself
        assert dkd_loss(s, t, g, 1.0, 1 - p_target, temperature).item() == pytest.approx(kd,
                                                                                       rel=1e-5)


def test_dkd_zero_when_equal_positive_otherwise_and_no_target_rows_dropped():
    torch.manual_seed(1)
    logits, target = torch.randn(4, 6), torch.tensor([0, 5, 2, 2])
    assert dkd_loss(logits, logits.clone(), target).item() == pytest.approx(0.0, abs=1e-6)
    assert dkd_loss(logits + torch.randn(4, 6), logits, target).item() > 0
    student, teacher = torch.randn(2, 6), torch.randn(2, 6)
    with_missing = dkd_loss(student, teacher, torch.tensor([3, NO_TARGET]))
    assert with_missing.item() == pytest.approx(
        dkd_loss(student[:1], teacher[:1], torch.tensor([3])).item(), rel=1e-6)


def test_dkd_empty_and_all_missing_are_zero_and_differentiable():
    empty = torch.zeros(0, 4, requires_grad=True)
    value = dkd_loss(empty, empty.detach(), torch.zeros(0, dtype=torch.long))
    assert value.item() == 0.0
    value.backward()
    rows = torch.randn(2, 4, requires_grad=True)
    value = dkd_loss(rows, torch.randn(2, 4), torch.tensor([NO_TARGET, NO_TARGET]))
    assert value.item() == 0.0
    value.backward()


def test_dkd_float32_under_bfloat16_inputs():
    torch.manual_seed(2)
    student, teacher, target = torch.randn(3, 5), torch.randn(3, 5), torch.tensor([0, 1, 2])
    half = dkd_loss(student.bfloat16(), teacher.bfloat16(), target)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(dkd_loss(student, teacher, target).item(), rel=0.05)


def test_dkd_bad_input():
    with pytest.raises(ValueError, match="same answer vocabulary"):
        dkd_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        dkd_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"expected \(2,\)"):
        dkd_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0]))
    with pytest.raises(ValueError, match="alpha and beta must be >= 0"):
        build_loss("dkd", beta=-1.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        build_loss("dkd", temperature=0.0)


# ----------------------------------------------------------------------------------------- LoCa

def test_loca_calibrate_hand_computed():
    # Row 0: p = (0.2, 0.5, 0.3), ground truth g = 0, teacher argmax k = 1: wrong.
    #   s = 0.9 / (1 - 0.2 + 0.5) = 9/13; non-targets 0.5 * 9/13 = 4.5/13, 0.3 * 9/13 = 2.7/13;
    #   target 1 - 9/13 * (1 - 0.2) = 5.8/13. Sum (5.8 + 4.5 + 2.7)/13 = 1; gap to k 1.3/13 = 0.1
    # Row 1: p = (0.6, 0.3, 0.1), g = 0 = argmax: unchanged.
    # Row 2: no ground truth: unchanged.
    probs = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    calibrated = loca_calibrate(probs, torch.tensor([0, 0, NO_TARGET]), alpha=0.9)
    expected = torch.tensor([[5.8 / 13, 4.5 / 13, 2.7 / 13], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    torch.testing.assert_close(calibrated, expected)
    assert (calibrated[0, 0] - calibrated[0, 1]).item() == pytest.approx(1 - 0.9, abs=1e-6)


def test_loca_loss_hand_computed():
    # Teacher logits ln p with p = (0.2, 0.5, 0.3), T = 1, g = 0 -> calibrated p' = (5.8, 4.5,
    # 2.7)/13 as above. Student logits 0: uniform q = 1/3.
    # KL(p' || q) = sum p'_i ln(3 p'_i)
    teacher = torch.log(torch.tensor([[0.2, 0.5, 0.3]]))
    calibrated = [5.8 / 13, 4.5 / 13, 2.7 / 13]
    expected = sum(p * math.log(3 * p) for p in calibrated)
    value = loca_loss(torch.zeros(1, 3), teacher, torch.tensor([0]), alpha=0.9, temperature=1.0)
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_loca_properties_on_random_teachers():
    torch.manual_seed(3)
    logits = torch.randn(64, 7) * 3
    probs = torch.softmax(logits, -1)
    target = torch.randint(0, 7, (64,))
    calibrated = loca_calibrate(probs, target, alpha=0.8)
    right = probs.argmax(-1) == target
    assert right.any() and (~right).any()
    assert torch.equal(calibrated[right], probs[right])                  # correct rows untouched
    assert torch.equal(calibrated.argmax(-1), target)                    # g is now the argmax
    torch.testing.assert_close(calibrated.sum(-1), torch.ones(64))       # still distributions
    non_target = ~torch.nn.functional.one_hot(target, 7).bool()
    ratio = (calibrated / probs)[non_target].view(64, 6)                 # s per row
    torch.testing.assert_close(ratio, ratio[:, :1].expand(-1, 6))        # ratios kept
    top2 = calibrated[~right].topk(2, dim=-1).values
    torch.testing.assert_close(top2[:, 0] - top2[:, 1], torch.full((int((~right).sum()),), 0.2))


def test_loca_equals_kd_when_the_teacher_is_right_and_zero_when_equal():
    torch.manual_seed(4)
    student, teacher = torch.randn(5, 6), torch.randn(5, 6)
    target = teacher.argmax(-1)
    assert loca_loss(student, teacher, target, temperature=2.0).item() == pytest.approx(
        kd_loss(student, teacher, 2.0).item(), rel=1e-6)
    assert loca_loss(teacher.clone(), teacher, target).item() == pytest.approx(0.0, abs=1e-6)
    wrong = (target + 1) % 6
    assert loca_loss(teacher.clone(), teacher, wrong).item() > 0.01


def test_loca_empty_is_zero_and_bad_alpha_refused():
    empty = torch.zeros(0, 4, requires_grad=True)
    value = loca_loss(empty, empty.detach(), torch.zeros(0, dtype=torch.long))
    assert value.item() == 0.0
    value.backward()
    for alpha in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"alpha must lie in \(0, 1\)"):
            loca_calibrate(torch.full((1, 2), 0.5), torch.tensor([0]), alpha)
        with pytest.raises(ValueError, match=r"alpha must lie in \(0, 1\)"):
            build_loss("loca", alpha=alpha)


# ------------------------------------------------------------------------------------ the terms

def test_terms_take_the_best_answer_of_soft_vqa_targets():
    torch.manual_seed(5)
    student, teacher = ModelOutput(torch.randn(3, 4)), ModelOutput(torch.randn(3, 4))
    soft = torch.tensor([[0.0, 1.0, 0.3, 0.0], [0.6, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    target = torch.tensor([1, 3, NO_TARGET])
    dkd = DKDLoss(alpha=1.0, beta=2.0, temperature=3.0)(student, teacher, soft)
    assert dkd.item() == pytest.approx(
        dkd_loss(student.logits, teacher.logits, target, 1.0, 2.0, 3.0).item(), rel=1e-6)
    loca = LoCaLoss(alpha=0.7, temperature=1.5)(student, teacher, soft)
    assert loca.item() == pytest.approx(
        loca_loss(student.logits, teacher.logits, target, 0.7, 1.5).item(), rel=1e-6)
    assert DKDLoss.needs_teacher and DKDLoss.needs_labels
    assert LoCaLoss.needs_teacher and LoCaLoss.needs_labels


def test_unlabelled_kd_rows_get_plain_kd_and_labelled_rows_the_method():
    """With unlabelled="kd", LoCa/DKD see every row: labelled rows as before, unlabelled rows
    (no class) with plain KD; the value is the mean of the per-row losses."""
    from vldistill.kd import DistillationStep, WeightedTerm, build_loss, kd_loss
    from vldistill.kd.logit_losses import dkd_loss, loca_loss
    from vldistill.models import ModelOutput

    torch.manual_seed(0)
    student_logits, teacher_logits = torch.randn(4, 5), torch.randn(4, 5)
    targets = torch.tensor([2, 0, 4, 1])
    labelled = torch.tensor([True, False, True, False])

    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = torch.nn.Parameter(logits.clone())

        def forward(self, x):
            return ModelOutput(logits=self.logits)

    batch = {"inputs": (torch.zeros(4),), "targets": targets, "labelled": labelled}
    for name, method in (("loca", lambda s, t, g: loca_loss(s, t, g, 0.9, 2.0)),
                         ("dkd", lambda s, t, g: dkd_loss(s, t, g, 1.0, 8.0, 4.0))):
        temperature = 2.0 if name == "loca" else 4.0
        term = build_loss(name, unlabelled="kd")
        step = DistillationStep(Fixed(student_logits), [WeightedTerm(name, 1.0, term)],
                                teacher=Fixed(teacher_logits))
        value = step(batch)[name].item()
        on_labelled = method(student_logits[labelled], teacher_logits[labelled],
                             targets[labelled]).item()
        on_rest = kd_loss(student_logits[~labelled], teacher_logits[~labelled],
                          temperature).item()
        assert value == pytest.approx((on_labelled + on_rest) / 2, rel=1e-5), name
        skip = DistillationStep(Fixed(student_logits), [WeightedTerm(name, 1.0,
                                                                     build_loss(name))],
                                teacher=Fixed(teacher_logits))
        assert skip(batch)[name].item() == pytest.approx(on_labelled, rel=1e-5), name


def test_unlabelled_policy_is_validated():
    from vldistill.kd import build_loss

    with pytest.raises(ValueError, match="unlabelled must be one of \\('skip', 'kd'\\)"):
        build_loss("loca", unlabelled="all")
