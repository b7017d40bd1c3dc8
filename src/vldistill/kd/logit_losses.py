"""Logit distillation with the ground truth in the loop: Decoupled KD and LoCa calibration.

Both split the teacher's distribution at the target class, so both need labels: the
distillation step hands these terms only the labelled rows of the student's and the teacher's
outputs. The target class comes from :func:`hard_targets` (the highest-scoring answer for VQA
soft scores). A row with no target (a VQA question whose answers are all outside the answer
vocabulary: every soft score 0) is marked :data:`NO_TARGET`; DKD leaves it out, LoCa leaves the
teacher's distribution of that row as it is.

Softmax / log-softmax in float32; a batch of zero rows gives 0 (differentiable).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vldistill.kd.losses import LOSSES, LossTerm, kd_loss

NO_TARGET = -1
"""Target index of a row without a ground-truth class (see :func:`hard_targets`)."""

_MASKED = -1e9   # logit given to a class that a partial softmax leaves out (exp underflows to 0)


def hard_targets(targets: torch.Tensor) -> torch.Tensor:
    """The ground-truth class of each row.

    targets: (N,) integer class indices, returned as they are (long); or (N, A) VQA soft scores,
    where the class is the highest-scoring answer (the first one on ties) and a row whose scores
    are all <= 0 gets :data:`NO_TARGET` (-1). Returns (N,) long.
    """
    if targets.dim() == 1 and not targets.is_floating_point():
        return targets.long()
    if targets.dim() == 2 and targets.is_floating_point():
        best_score, best = targets.max(dim=-1)                                   # (N,), (N,)
        return torch.where(best_score > 0, best, torch.full_like(best, NO_TARGET))
    raise ValueError(f"targets of shape {tuple(targets.shape)} and dtype {targets.dtype} name no "
                     "class; pass (N,) integer class indices or (N, A) float soft scores.")


def _check_logits_and_target(what: str, student_logits: torch.Tensor,
                             teacher_logits: torch.Tensor, target: torch.Tensor) -> None:
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(f"{what}: student logits {tuple(student_logits.shape)} and teacher "
                         f"logits {tuple(teacher_logits.shape)} must both be (N, C) over the same "
                         "classes (the same answer vocabulary).")
    rows, classes = student_logits.shape
    if target.shape != (rows,):
        raise ValueError(f"{what}: target has shape {tuple(target.shape)}, expected ({rows},): "
                         "one class index per row (see hard_targets).")
    if classes < 2:
        raise ValueError(f"{what}: needs at least 2 classes, got logits of shape "
                         f"{tuple(student_logits.shape)}.")
    if rows and (int(target.min()) < NO_TARGET or int(target.max()) >= classes):
        raise ValueError(f"{what}: target indices must lie in [0, {classes}) or be "
                         f"{NO_TARGET} (no target); got range [{int(target.min())}, "
                         f"{int(target.max())}].")


def dkd_parts(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
              temperature: float = 4.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row target-class and non-target-class KD (TCKD, NCKD), each already times T^2.

    With p = softmax(z / T) and target class t:
        TCKD = T^2 * KL([p_t^T, 1 - p_t^T] || [p_t^S, 1 - p_t^S])            (binary)
        NCKD = T^2 * KL(p_hat^T || p_hat^S),  p_hat_i = p_i / (1 - p_t), i != t  (renormalised)
    and Hinton KD = TCKD + (1 - p_t^T) * NCKD row by row (Zhao et al., CVPR 2022, Eq. 7).
    student_logits, teacher_logits: (N, C); target: (N,) long in [0, C). Returns two (N,) tensors.
    """
    student = student_logits.float() / temperature                            # (N, C)
    teacher = teacher_logits.float() / temperature
    is_target = F.one_hot(target, student.shape[-1]).bool()                   # (N, C)

    def binary_log_probs(logits: torch.Tensor) -> torch.Tensor:               # (N, 2)
        log_total = logits.logsumexp(dim=-1)
        log_target = logits.gather(1, target[:, None])[:, 0] - log_total
        log_others = logits.masked_fill(is_target, _MASKED).logsumexp(dim=-1) - log_total
        return torch.stack([log_target, log_others], dim=-1)

    log_b_student, log_b_teacher = binary_log_probs(student), binary_log_probs(teacher)
    tckd = (log_b_teacher.exp() * (log_b_teacher - log_b_student)).sum(dim=-1)

    log_n_student = F.log_softmax(student.masked_fill(is_target, _MASKED), dim=-1)   # (N, C)
    log_n_teacher = F.log_softmax(teacher.masked_fill(is_target, _MASKED), dim=-1)
    nckd_classes = log_n_teacher.exp() * (log_n_teacher - log_n_student)
    nckd = nckd_classes.masked_fill(is_target, 0.0).sum(dim=-1)
    return tckd * temperature**2, nckd * temperature**2


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
             alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0) -> torch.Tensor:
    """Decoupled knowledge distillation: mean over rows of alpha * TCKD + beta * NCKD.

    Zhao, Cui, Song, Qiu, Liang, "Decoupled Knowledge Distillation" (CVPR 2022). TCKD and NCKD
    are defined in :func:`dkd_parts` (both times T^2). Hinton KD weights NCKD by the teacher's
    confidence-dependent 1 - p_t^T; DKD frees that weight (beta) so the dark knowledge of the
    non-target classes is not suppressed when the teacher is confident.
    student_logits, teacher_logits: (N, C); target: (N,) long in [0, C), rows with
    :data:`NO_TARGET` are left out (mean over the others). Returns a scalar; 0 with no rows.
    """
    _check_logits_and_target("dkd_loss", student_logits, teacher_logits, target)
    keep = target != NO_TARGET
    if not bool(keep.any()):
        return student_logits.sum() * 0.0
    tckd, nckd = dkd_parts(student_logits[keep], teacher_logits[keep], target[keep], temperature)
    return (alpha * tckd + beta * nckd).mean()


def loca_calibrate(teacher_probs: torch.Tensor, target: torch.Tensor,
                   alpha: float = 0.9) -> torch.Tensor:
    """LoCa: move the teacher's argmax to the ground truth where the teacher is wrong.

    Yang et al., "LoCa: Logit Calibration for Knowledge Distillation" (arXiv 2409.04778). For a
    row whose teacher argmax k differs from the ground truth g, with
        s = alpha / (1 - p_g + p_k),   alpha in (0, 1),
    every non-target probability becomes s * p_i and the target becomes 1 - s * (1 - p_g). The
    ratios among non-target classes are kept, the row still sums to 1, and g is the strict argmax:
    p'_g - p'_k = 1 - alpha > 0. Rows where k == g (or g is :data:`NO_TARGET`) are unchanged.
    teacher_probs: (N, C) rows summing to 1; target: (N,) long. Returns (N, C).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"loca alpha must lie in (0, 1), got {alpha}")
    probs = teacher_probs.float()
    has_target = target != NO_TARGET
    safe_target = torch.where(has_target, target, torch.zeros_like(target))   # (N,)
    p_target = probs.gather(1, safe_target[:, None])                          # (N, 1)
    p_top, top = probs.max(dim=-1, keepdim=True)                              # (N, 1)
    wrong = has_target[:, None] & (top != safe_target[:, None])               # (N, 1)
    scale = alpha / (1.0 - p_target + p_top)                                  # (N, 1)
    calibrated = probs * scale                                                # non-targets
    calibrated = calibrated.scatter(1, safe_target[:, None], 1.0 - scale * (1.0 - p_target))
    return torch.where(wrong, calibrated, probs)


def loca_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
              alpha: float = 0.9, temperature: float = 2.0) -> torch.Tensor:
    """KD against the LoCa-calibrated teacher: T^2 * KL(loca(softmax(t/T)) || softmax(s/T)).

    Yang et al. (arXiv 2409.04778); :func:`loca_calibrate` does the calibration, the rest is
    :func:`vldistill.kd.kd_loss` (equal to it on rows where the teacher is right).
    student_logits, teacher_logits: (N, C); target: (N,) long in [0, C) or :data:`NO_TARGET`.
    Returns the batch mean, a scalar; 0 when N == 0.
    """
    _check_logits_and_target("loca_loss", student_logits, teacher_logits, target)
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    teacher_probs = F.softmax(teacher_logits.float() / temperature, dim=-1)
    calibrated = loca_calibrate(teacher_probs, target, alpha)                 # (N, C)
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    kl = (torch.xlogy(calibrated, calibrated) - calibrated * log_p_student).sum(dim=-1)
    return kl.mean() * temperature**2


def mark_unlabelled(targets: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
    """Targets with the unlabelled rows marked as having no class: (N,) class indices become
    :data:`NO_TARGET`, (N, A) soft scores become all zero (see :func:`hard_targets`)."""
    if targets.dim() == 1 and not targets.is_floating_point():
        return torch.where(labelled, targets.long(), torch.full_like(targets.long(), NO_TARGET))
    return targets * labelled[:, None].to(targets.dtype)


UNLABELLED = ("skip", "kd")


def _check_unlabelled(name: str, unlabelled: str) -> None:
    if unlabelled not in UNLABELLED:
        raise ValueError(f"{name} unlabelled must be one of {UNLABELLED}, got {unlabelled!r}: "
                         "'skip' uses labelled rows only; 'kd' also distils unlabelled "
                         "(transfer) rows with plain KD")


def _check_temperature(name: str, temperature: float) -> None:
    if temperature <= 0:
        raise ValueError(f"{name} temperature must be > 0, got {temperature}")


class _GroundTruthKD(LossTerm):
    """A logit term that needs the ground truth. ``unlabelled="skip"``: the step hands it the
    labelled rows only. ``unlabelled="kd"``: it gets every row, with unlabelled rows marked as
    having no class (:func:`mark_unlabelled`), and distils those with plain KD: without a label
    there is nothing to calibrate or decouple, so the loss reduces to KD there."""

    needs_teacher = True
    needs_labels = True
    labels_optional = False

    def _rows_policy(self, name: str, unlabelled: str) -> None:
        _check_unlabelled(name, unlabelled)
        self.unlabelled = unlabelled
        self.needs_labels = unlabelled == "skip"
        self.labels_optional = unlabelled == "kd"


@LOSSES.register("dkd")
class DKDLoss(_GroundTruthKD):
    """Decoupled KD: :func:`dkd_loss` with the class from :func:`hard_targets`; rows without a
    class get plain KD when ``unlabelled="kd"``."""

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0,
                 unlabelled: str = "skip") -> None:
        super().__init__()
        if alpha < 0 or beta < 0:
            raise ValueError(f"dkd alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
        _check_temperature("dkd", temperature)
        self._rows_policy("dkd", unlabelled)
        self.alpha, self.beta, self.temperature = alpha, beta, temperature

    def forward(self, student, teacher, targets):
        target = hard_targets(targets)
        decoupled = dkd_loss(student.logits, teacher.logits, target, self.alpha, self.beta,
                             self.temperature)
        if self.unlabelled == "skip" or target.shape[0] == 0:
            return decoupled

        none = target == NO_TARGET                                            # (N,)
        plain = kd_loss(student.logits[none], teacher.logits[none], self.temperature)
        share = none.float().mean()              # mean over all rows of the per-row losses
        return (1 - share) * decoupled + share * plain


@LOSSES.register("loca")
class LoCaLoss(_GroundTruthKD):
    """LoCa-calibrated KD: :func:`loca_loss`, class from :func:`hard_targets`; rows without a
    class are left uncalibrated (plain KD) when ``unlabelled="kd"``."""

    def __init__(self, alpha: float = 0.9, temperature: float = 2.0,
                 unlabelled: str = "skip") -> None:
        super().__init__()
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"loca alpha must lie in (0, 1), got {alpha}")
        _check_temperature("loca", temperature)
        self._rows_policy("loca", unlabelled)
        self.alpha, self.temperature = alpha, temperature

    def forward(self, student, teacher, targets):
        return loca_loss(student.logits, teacher.logits, hard_targets(targets),
                         self.alpha, self.temperature)
