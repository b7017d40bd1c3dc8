"""Answer-token losses for generative VQA models (LLaVA-OneVision, vldistill.models.hf_llava).

A generative model's output carries, per question, its vocabulary logits at the answer
positions: ``features["answer_token_logits"]`` (N, T, V), which positions hold something
(``["answer_token_mask"]`` (N, T)) and the gold answer tokens there (``["answer_token_ids"]``
(N, T), -100 where there is none: padding, or an unlabelled question). Teacher and student must
share the tokenizer (seed 001: LLaVA-OneVision 7B and 0.5B share Qwen2's), so position t of
both is the same answer token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vldistill.kd.logit_losses import NO_TARGET, loca_loss
from vldistill.kd.losses import LOSSES, LossTerm, kd_loss
from vldistill.models.outputs import ModelOutput

FIELDS = ("answer_token_logits", "answer_token_mask", "answer_token_ids")


def answer_tokens(output: ModelOutput, who: str) -> tuple[torch.Tensor, ...]:
    """(logits (N, T, V), mask (N, T), ids (N, T)) of a generative model's output."""
    missing = [name for name in FIELDS if name not in output.features]
    if missing:
        raise ValueError(f"the {who}'s output has no {', '.join(missing)}: answer-token losses "
                         "need a generative model (llava_onevision) on both sides; models with "
                         "an answer head take kd / loca / vqa_bce instead.")
    return tuple(output.features[name] for name in FIELDS)


def token_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                  temperature: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)) per position, mean over positions.

    With ``top_k`` > 0 the teacher keeps only its k most likely tokens, renormalised (what a
    top-k cache of a large vocabulary holds); the student's log-probabilities stay over the full
    vocabulary. student_logits, teacher_logits: (M, V). Returns a scalar; 0 when M == 0.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"token KD: student logits {tuple(student_logits.shape)} and teacher "
                         f"logits {tuple(teacher_logits.shape)} differ; teacher and student need "
                         "the same tokenizer (vocabulary) and answer tokens.")
    if not top_k:                        # the full vocabulary: Hinton KD per position
        return kd_loss(student_logits, teacher_logits, temperature)
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher, index = (teacher_logits.float() / temperature).topk(
        min(top_k, teacher_logits.shape[-1]), dim=-1)
    log_p = F.log_softmax(teacher, dim=-1)
    return (log_p.exp() * (log_p - log_q.gather(-1, index))).sum(dim=-1).mean() * temperature**2


@LOSSES.register("answer_token_ce")
class AnswerTokenCELoss(LossTerm):
    """The generative task loss: negative log-likelihood of the gold answer tokens (and the
    end-of-sequence), mean over tokens. Reads the gold ids from the model's own output, so rows
    without an answer contribute nothing."""

    needs_labels = True

    def forward(self, student, teacher, targets):
        logits, _, ids = answer_tokens(student, "student")
        gold = ids != -100
        if not bool(gold.any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits[gold].float(), ids[gold])


@LOSSES.register("answer_token_kd")
class AnswerTokenKDLoss(LossTerm):
    """KL over the vocabulary at every answer position (:func:`token_kd_loss`), teacher-forced
    on the gold answer; an unlabelled question contributes its first answer position. With
    ``loca_alpha`` the teacher is LoCa-calibrated towards the gold token where there is one
    (seed 001's phase 2), and left as it is elsewhere."""

    needs_teacher = True

    def __init__(self, temperature: float = 1.0, top_k: int = 0,
                 loca_alpha: float | None = None) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"answer_token_kd temperature must be > 0, got {temperature}")
        if top_k < 0:
            raise ValueError(f"answer_token_kd top_k must be >= 0 (0: the full vocabulary), "
                             f"got {top_k}")
        if loca_alpha is not None and not 0.0 < loca_alpha < 1.0:
            raise ValueError(f"answer_token_kd loca_alpha must lie in (0, 1), got {loca_alpha}")
        if loca_alpha is not None and top_k:
            raise ValueError("answer_token_kd: LoCa calibrates the full teacher distribution; "
                             "use top_k: 0 with loca_alpha")
        self.temperature, self.top_k, self.loca_alpha = temperature, top_k, loca_alpha

    def teacher_fields(self) -> tuple[str, ...]:
        return FIELDS

    def forward(self, student, teacher, targets):
        s_logits, s_mask, ids = answer_tokens(student, "student")
        t_logits, t_mask, _ = answer_tokens(teacher, "teacher")
        if s_mask.shape != t_mask.shape or not torch.equal(s_mask, t_mask):
            raise ValueError(f"answer_token_kd: the teacher's answer positions {tuple(t_mask.shape)}"
                             f" differ from the student's {tuple(s_mask.shape)}; both must read "
                             "the same questions and answers with the same tokenizer.")
        s_rows, t_rows = s_logits[s_mask], t_logits[t_mask]                 # (M, V)
        if self.loca_alpha is None:
            return token_kd_loss(s_rows, t_rows, self.temperature, self.top_k)
        gold = ids[s_mask]
        gold = torch.where(gold == -100, torch.full_like(gold, NO_TARGET), gold)
        return loca_loss(s_rows, t_rows, gold, self.loca_alpha, self.temperature)


def token_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
             temperature: float = 1.0) -> torch.Tensor:
    """T^2 * KL(teacher || student) over the vocabulary at every answer position (labels !=
    -100), mean over positions; teacher and student share the tokenizer."""
    mask = labels != -100
    return token_kd_loss(student_logits[mask], teacher_logits[mask], temperature)
