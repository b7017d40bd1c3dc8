"""Training and scoring of the Fusion-in-Decoder reader (:class:`vldistill.models.fid_reader.FiDReader`):
answer NLL, with token-level KD from a larger reader (large-to-base distillation), through the
engine (:func:`vldistill.train.fit.fit`) with exact match on a held-out slice as its in-loop
metric (best weights kept, optional early stopping); SQuAD v1.1 EM / F1 and VQA accuracy of
greedy answers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vldistill.config import TrainerSettings, TrainSettings
from vldistill.core.runpaths import RunPaths
from vldistill.data.batches import RowCollate, Rows, common_answer
from vldistill.eval.squad import exact_match, f1_score
from vldistill.eval.vqa_accuracy import vqa_accuracy
from vldistill.kd.sources import OnlineTeacher
from vldistill.kd.token_losses import token_kd
from vldistill.models.checkpoint import read_weights, write_weights
from vldistill.models.fid_reader import FiDReader, answer_nll
from vldistill.models.outputs import ModelOutput
from vldistill.train.fit import FitResult, fit, mixed_loaders


def reader_inputs(samples: Sequence[Any], captions: dict, contexts: Sequence[Sequence[str]],
                  with_image: bool = True):
    """(questions, image texts, facts per question, gold answers) for a batch of samples."""
    return ([s.question for s in samples],
            [captions.get(s.image_id) if with_image else None for s in samples],
            [list(c) for c in contexts],
            [common_answer(s.answers) for s in samples])


# ----------------------------------------------------------------------------- training

FORMAT = "vldistill-fid-reader"


def reader_logits(model: nn.Module, batch: dict[str, Any]) -> ModelOutput:
    """How a teacher reader answers: its answer-token logits (N, L, V) for the batch."""
    logits, _ = model(*batch["inputs"])
    return ModelOutput(logits)


class ReaderStep(nn.Module):
    """Answer NLL on (question, image text, n facts) -> most common answer; with a frozen
    ``teacher`` reader, ``(1 - w) * NLL + w * T^2 * KL`` on the answer tokens (token-level KD,
    large-to-base distillation). ``batch["rows"]`` index the training samples, ``batch["val"]``
    the held-out ones; ``predict`` gives greedy answers for the latter."""

    def __init__(self, reader: FiDReader, samples: Sequence[Any], contexts: Sequence,
                 captions: dict, *, teacher: FiDReader | None = None, kd_weight: float = 0.0,
                 temperature: float = 1.0, with_image: bool = True,
                 held_out: tuple[Sequence[Any], Sequence] = ((), ())) -> None:
        super().__init__()
        if not 0.0 <= kd_weight <= 1.0:
            raise ValueError(f"reader kd_weight must lie in [0, 1], got {kd_weight}")
        if len(samples) != len(contexts):
            raise ValueError(f"{len(samples)} samples but {len(contexts)} context lists")
        self.student = reader
        # the large reader's token logits, run on every batch (vldistill.kd.sources)
        self.teacher = OnlineTeacher(teacher, reader_logits) if teacher is not None else None
        self.samples, self.contexts, self.captions = list(samples), list(contexts), captions
        self.kd_weight, self.temperature, self.with_image = kd_weight, temperature, with_image
        self.held_out = (list(held_out[0]), list(held_out[1]))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        rows = batch["rows"].tolist()
        inputs = reader_inputs([self.samples[r] for r in rows], self.captions,
                               [self.contexts[r] for r in rows], self.with_image)
        logits, labels = self.student(*inputs)
        nll = answer_nll(logits, labels)
        if self.teacher is None or self.kd_weight == 0:
            return {"loss": nll, "nll": nll.detach()}
        teacher_logits = self.teacher.teacher_outputs({"inputs": inputs}).logits
        kd = token_kd(logits, teacher_logits, labels, self.temperature)
        loss = (1 - self.kd_weight) * nll + self.kd_weight * kd
        return {"loss": loss, "nll": nll.detach(), "token_kd": kd.detach()}

    def batch_size(self, batch: dict[str, torch.Tensor]) -> int:
        return len(batch["rows"])

    def predict(self, batch: dict[str, torch.Tensor]) -> list[str]:
        rows = batch["val"].tolist()
        samples, contexts = self.held_out
        questions, images, facts, _ = reader_inputs(
            [samples[r] for r in rows], self.captions, [contexts[r] for r in rows],
            self.with_image)
        return self.student.generate(questions, images, facts)


class ExactMatch:
    """In-loop evaluator: SQuAD exact match (%) of greedy answers on held-out samples."""

    name = "EM"

    def __init__(self, samples: Sequence[Any]) -> None:
        self.samples, self.total, self.count = list(samples), 0.0, 0

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    def update(self, batch: dict[str, torch.Tensor], predicted: list[str]) -> None:
        for row, answer in zip(batch["val"].tolist(), predicted):
            self.total += exact_match(answer, self.samples[row].answers)
            self.count += 1

    def compute(self) -> dict[str, float]:
        return {self.name: 100 * self.total / max(1, self.count)}


def save_reader(path: Path, reader: FiDReader) -> Path:
    return write_weights(path, reader, {"format": FORMAT})


def load_reader_weights(reader: FiDReader, path: Path) -> None:
    state, _ = read_weights(path, "it is written while the reader trains", (FORMAT,))
    reader.load_state_dict(state)


def train_reader(reader: FiDReader, samples: Sequence[Any], captions: dict,
                 contexts: Sequence[Sequence[str | None]], train: TrainSettings, *,
                 paths: RunPaths, trainer: TrainerSettings, role: str = "reader",
                 teacher: FiDReader | None = None, kd_weight: float = 0.0,
                 temperature: float = 1.0, with_image: bool = True,
                 validate: tuple[Sequence[Any], Sequence] | None = None, seed: int = 0,
                 resume: bool = False, stamp: str = "") -> FitResult:
    """Train a reader through the engine; with a ``teacher``, token-level KD weighted
    ``kd_weight``. With ``validate`` = (samples, contexts), exact match on them is the in-loop
    metric every ``train.val_every_n_steps`` steps, the best weights are restored at the end
    (``checkpoints/<role>-best.safetensors``), and ``train.early_stopping_patience`` stops
    early. The reader is left in eval mode."""
    step = ReaderStep(reader, samples, contexts, captions, teacher=teacher,
                      kd_weight=kd_weight if teacher is not None else 0.0,
                      temperature=temperature, with_image=with_image,
                      held_out=validate or ((), ()))
    val = Rows(len(validate[0]), "val") if validate else None
    loaders = mixed_loaders(Rows(len(samples), "rows"), None, RowCollate("rows", "val"), val,
                            batch_size=min(train.batch_size, len(samples)),
                            transfer_fraction=0.0, seed=seed, val_batch=64)
    fitted = fit(step, loaders, ExactMatch(validate[0]) if validate else None, train, trainer,
                 run_dir=paths.root, role=role, save=save_reader if validate else None,
                 resume=resume, stamp=stamp)
    best = paths.weights(role, "best")
    if validate and best.is_file():
        load_reader_weights(reader, best)
    reader.eval()
    return fitted


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
