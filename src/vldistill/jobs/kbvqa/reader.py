"""Training and scoring of the Fusion-in-Decoder reader (:class:`vldistill.models.fid_reader.FiDReader`):
answer NLL, with token-level KD from a larger reader (large-to-base distillation), early stopping
on exact match; SQuAD v1.1 EM / F1 and VQA accuracy of greedy answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vldistill.data.batches import common_answer
from vldistill.eval.squad import exact_match, f1_score
from vldistill.eval.vqa_accuracy import vqa_accuracy
from vldistill.kd.token_losses import token_kd
from vldistill.models.fid_reader import FiDReader, answer_nll
from vldistill.train.loop import run_steps


def reader_inputs(samples: Sequence[Any], captions: dict, contexts: Sequence[Sequence[str]],
                  with_image: bool = True):
    """(questions, image texts, facts per question, gold answers) for a batch of samples."""
    return ([s.question for s in samples],
            [captions.get(s.image_id) if with_image else None for s in samples],
            [list(c) for c in contexts],
            [common_answer(s.answers) for s in samples])


# ----------------------------------------------------------------------------- training

class ReaderTrainSettings:
    """Steps, batch and learning rate of reader training; ``kd_weight`` mixes token-level KD
    from a teacher reader into the answer loss: (1 - w) * NLL + w * T^2 * KL."""

    def __init__(self, steps: int = 1500, batch_size: int = 32, lr: float = 1e-3,
                 kd_weight: float = 0.5, temperature: float = 1.0, seed: int = 0) -> None:
        if not 0.0 <= kd_weight <= 1.0:
            raise ValueError(f"reader kd_weight must lie in [0, 1], got {kd_weight}")
        self.steps, self.batch_size, self.lr = steps, batch_size, lr
        self.kd_weight, self.temperature, self.seed = kd_weight, temperature, seed


def train_reader(reader: FiDReader, samples: Sequence[Any], captions: dict,
                 contexts: Sequence[Sequence[str | None]], settings: ReaderTrainSettings,
                 teacher: FiDReader | None = None, with_image: bool = True,
                 progress: bool = True, validate: tuple[Sequence[Any], Sequence] | None = None,
                 val_every_n_steps: int = 250, patience: int | None = None) -> list[float]:
    """Train on (question, image text, n facts) -> most common answer; with a ``teacher``, add
    token-level KD on the answer tokens (large-to-base distillation). Returns the loss per
    step. A plain loop, as for the retrievers (vldistill.jobs.kbvqa.retriever).

    With ``validate`` = (samples, contexts), the reader is scored by exact match every
    ``val_every_n_steps`` steps; the best weights are restored at the end (early stopping),
    and training stops after ``patience`` validations without improvement."""
    if len(samples) != len(contexts):
        raise ValueError(f"{len(samples)} samples but {len(contexts)} context lists")

    def step_loss(rows) -> torch.Tensor:
        inputs = reader_inputs([samples[r] for r in rows], captions,
                               [contexts[r] for r in rows], with_image)
        logits, labels = reader(*inputs)
        loss = answer_nll(logits, labels)
        if teacher is not None and settings.kd_weight > 0:
            with torch.no_grad():
                teacher_logits, _ = teacher(*inputs)
            loss = (1 - settings.kd_weight) * loss + settings.kd_weight * token_kd(
                logits, teacher_logits, labels, settings.temperature)
        return loss

    best: tuple[float, dict] | None = None
    since_best = 0

    def after_step(step: int) -> bool:
        """Early stopping: keep the best weights by exact match; True stops."""
        nonlocal best, since_best
        if validate is None or (step % val_every_n_steps and step != settings.steps):
            return False
        score = evaluate_reader(reader, validate[0], captions, validate[1], with_image)["EM"]
        reader.train()
        if best is None or score > best[0]:
            best = (score, {k: v.detach().clone() for k, v in reader.state_dict().items()})
            since_best = 0
            return False
        since_best += 1
        return patience is not None and since_best >= patience

    reader.train()
    if teacher is not None:
        teacher.eval()
    losses = run_steps(reader.parameters(), steps=settings.steps,
                       batch_size=settings.batch_size, population=len(samples),
                       lr=settings.lr, seed=settings.seed, what="reader training",
                       progress=progress, step_loss=step_loss, after_step=after_step)
    if best is not None:
        reader.load_state_dict(best[1])
    reader.eval()
    return losses


def evaluate_reader(reader: FiDReader, samples: Sequence[Any], captions: dict,
                    contexts: Sequence[Sequence[str | None]], with_image: bool = True,
                    batch_size: int = 64) -> dict[str, float]:
    """Greedy answers scored by SQuAD v1.1 exact match and F1 against the annotators' answers,
    and by the official VQA accuracy; percentages."""
    reader.eval()
    em = f1 = vqa = 0.0
    for start in range(0, len(samples), batch_size):
        batch = samples[start:start + batch_size]
        questions, images, facts, _ = reader_inputs(batch, captions,
                                                    contexts[start:start + batch_size],
                                                    with_image)
        for sample, answer in zip(batch, reader.generate(questions, images, facts)):
            em += exact_match(answer, sample.answers)
            f1 += f1_score(answer, sample.answers)
            vqa += vqa_accuracy(answer, sample.answers)
    n = max(1, len(samples))
    return {"EM": 100 * em / n, "F1": 100 * f1 / n, "VQA": 100 * vqa / n}
