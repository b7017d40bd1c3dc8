"""The distillation step: student + frozen teacher + weighted loss terms, a plain nn.Module.

The Lightning module only calls it and logs what it returns, so the same step serves the CLI,
the Python API and any user loop.

A batch is a dict:
    inputs:          model inputs, a dict (called as model(**inputs)) or a tuple (model(*inputs))
    teacher_inputs:  optional, when the teacher reads a different view or modality
    targets:         (N, ...) targets of the task loss (rows of unlabelled examples are ignored)
    labelled:        (N,) bool; task terms see only labelled rows, teacher terms see every row
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from vldistill.kd.logit_losses import mark_unlabelled
from vldistill.kd.losses import LossTerm, build_loss
from vldistill.kd.sources import TeacherSource, as_source
from vldistill.models.outputs import ModelOutput, call_model


@dataclass(frozen=True)
class WeightedTerm:
    name: str
    weight: float
    term: LossTerm


class TermSpec(Protocol):
    """A loss term as a recipe names it (``distill.terms`` items)."""

    name: str | None
    loss: str
    weight: float
    params: dict[str, Any]


def build_terms(terms: Sequence[TermSpec]) -> list[WeightedTerm]:
    """The weighted loss terms of a recipe's term list; a term is named after its loss unless
    the recipe names it."""
    return [WeightedTerm(t.name or t.loss, t.weight, build_loss(t.loss, **t.params))
            for t in terms]


def check_weights(terms: Sequence[WeightedTerm]) -> None:
    """Refuse negative or non-finite weights, and an objective whose weights are all zero."""
    for index, t in enumerate(terms):
        if not math.isfinite(t.weight) or t.weight < 0:
            raise ValueError(f"terms[{index}].weight of loss term {t.name!r} is {t.weight}; a "
                             "weight must be a finite number >= 0 (0 switches the term off).")
    if all(t.weight == 0 for t in terms):
        raise ValueError(f"every loss term weight is 0 ({', '.join(t.name for t in terms)}): "
                         "nothing would be learned; give at least one term a weight > 0.")


class DistillationStep(nn.Module):
    """Computes ``{"loss": weighted sum, "<term>": unweighted term value, ...}`` for a batch."""

    def __init__(self, student: nn.Module, terms: Sequence[WeightedTerm],
                 teacher: nn.Module | TeacherSource | None = None) -> None:
        super().__init__()
        if not terms:
            raise ValueError("DistillationStep needs at least one loss term, e.g. "
                             "[WeightedTerm('vqa_bce', 1.0, VQABCELoss())].")
        names = [t.name for t in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"loss term names must be unique, got {names}")
        check_weights(terms)
        needs_teacher = [t.name for t in terms if t.term.needs_teacher]
        if needs_teacher and teacher is None:
            raise ValueError(f"loss term(s) {needs_teacher} need a teacher but none was given; "
                             "pass teacher=... or drop those terms.")
        self.student = student
        # where the teacher's outputs come from: a plain model runs online (vldistill.kd.sources)
        self.teacher = as_source(teacher) if teacher is not None else None
        self.terms = nn.ModuleDict({t.name: t.term for t in terms})
        self.weights = {t.name: float(t.weight) for t in terms}
        self._uses_teacher = bool(needs_teacher)

    def train(self, mode: bool = True) -> DistillationStep:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()   # frozen: BatchNorm/dropout stay in inference mode
        return self

    def materialize(self, batch: Mapping[str, Any]) -> None:
        """Run one forward pass without gradients so that lazily shaped modules (the projectors
        of feature terms) get their shapes. Call it before building the optimiser. It runs in
        eval mode (BatchNorm statistics and contrastive queues stay as they were) and restores
        each module's training flag afterwards."""
        modes = {module: module.training for module in self.modules()}
        self.train(False)
        try:
            with torch.no_grad():
                self(batch)
        finally:
            for module in self.modules():   # modules created by the pass follow the step
                module.training = modes.get(module, modes[self])

    def batch_size(self, batch: Mapping[str, Any]) -> int:
        """Examples in a batch (questions, or images for a plain classifier)."""
        return int(batch["labelled"].shape[0])

    def predict(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The student's logits for a batch (what the validation metrics score)."""
        return call_model(self.student, batch["inputs"]).logits

    def teacher_output(self, batch: Mapping[str, Any]) -> ModelOutput | None:
        if self.teacher is None or not self._uses_teacher:
            return None
        with torch.no_grad():
            return self.teacher.teacher_outputs(batch)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        student = call_model(self.student, batch["inputs"])
        teacher = self.teacher_output(batch)
        labelled, targets = batch["labelled"], batch["targets"]
        losses: dict[str, torch.Tensor] = {}
        total = student.logits.new_zeros((), dtype=torch.float32)
        for name, term in self.terms.items():
            if term.needs_labels:
                # a task term gets no teacher (and the teacher's rows are not gathered for it)
                value = term(student.select(labelled),
                             teacher.select(labelled)
                             if teacher is not None and term.needs_teacher else None,
                             targets[labelled])
            elif getattr(term, "labels_optional", False):   # every row, unlabelled marked
                value = term(student, teacher, mark_unlabelled(targets, labelled))
            else:
                value = term(student, teacher, targets)
            losses[name] = value.detach()
            total = total + self.weights[name] * value
        losses["loss"] = total
        return losses
