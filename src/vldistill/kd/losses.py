"""Loss functions: each a pure function plus a thin ``nn.Module`` term named in recipes.

Conventions (STYLE.md): softmax / log-softmax in float32; the docstring gives formula, paper and
shapes; a term declares whether it needs the teacher and whether it needs labels, and the
distillation step hands it only the rows it applies to (labelled rows for task losses, all rows
for teacher-only terms such as KD on the unlabelled transfer set). A term over zero rows is 0.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vldistill.core.registry import Registry
from vldistill.models.outputs import ModelOutput


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float = 1.0) -> torch.Tensor:
    """Hinton knowledge distillation: T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean.

    Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network" (2015). The T^2 factor
    keeps gradient magnitudes comparable across temperatures.
    student_logits, teacher_logits: (N, C). Returns a scalar; 0 when N == 0.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"kd_loss: student logits {tuple(student_logits.shape)} and teacher "
                         f"logits {tuple(teacher_logits.shape)} differ; both must be (N, C) over "
                         "the same classes (the same answer vocabulary).")
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)   # (N,)
    return kl.mean() * temperature**2


def vqa_bce_loss(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """VQA soft-score binary cross-entropy, summed over answers, mean over questions.

    Teney et al., "Tips and Tricks for Visual Question Answering" (CVPR 2018): each answer is an
    independent sigmoid whose target is its VQA soft score in [0, 1] (the official accuracy that
    answer would get). logits, soft_targets: (N, A). Returns a scalar; 0 when N == 0.
    """
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    bce = F.binary_cross_entropy_with_logits(logits.float(), soft_targets.float(),
                                             reduction="none")
    return bce.sum(dim=-1).mean()


def cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Plain classification cross-entropy. logits (N, C), labels (N,) long. 0 when N == 0."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels)


class LossTerm(nn.Module):
    """A named, weighted piece of the objective. Subclasses set the two flags and forward."""

    needs_teacher: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = False

    def forward(self, student: ModelOutput, teacher: ModelOutput | None,
                targets: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def teacher_fields(self) -> tuple[str, ...]:
        """The teacher outputs this term reads (what a teacher-output cache must store)."""
        return ("logits",) if self.needs_teacher else ()


LOSSES: Registry[type[LossTerm]] = Registry("loss")


@LOSSES.register("kd")
class KDLoss(LossTerm):
    """Logit distillation on every row (labelled and transfer): :func:`kd_loss`."""

    needs_teacher = True

    def __init__(self, temperature: float = 2.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"kd temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, student, teacher, targets):
        return kd_loss(student.logits, teacher.logits, self.temperature)


@LOSSES.register("vqa_bce")
class VQABCELoss(LossTerm):
    """Task loss on labelled rows: :func:`vqa_bce_loss` against the soft-score targets."""

    needs_labels = True

    def forward(self, student, teacher, targets):
        return vqa_bce_loss(student.logits, targets)


@LOSSES.register("ce")
class CrossEntropyLoss(LossTerm):
    """Task loss for plain classifiers on labelled rows: :func:`cross_entropy_loss`."""

    needs_labels = True

    def forward(self, student, teacher, targets):
        return cross_entropy_loss(student.logits, targets)


def loss_parameters(name: str) -> dict[str, Any]:
    """The hyper-parameters a registered loss accepts, with their defaults."""
    signature = inspect.signature(LOSSES.get(name).__init__)
    return {p.name: p.default for p in signature.parameters.values()
            if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD}


def build_loss(name: str, **params: Any) -> LossTerm:
    """Build a registered loss term; unknown hyper-parameters raise and list the valid ones."""
    valid = loss_parameters(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"loss {name!r} has no parameter(s) {', '.join(unknown)}; valid: "
                         f"{', '.join(valid) or '(none)'}")
    return LOSSES.get(name)(**params)
