"""In-loop and final evaluation: run a model over a dataset and score its predictions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from vldistill.data.answers import AnswerVocab
from vldistill.data.batches import sequential_batches
from vldistill.eval.vizwiz import VizWizAccuracy
from vldistill.eval.vqa_accuracy import VQAAccuracy
from vldistill.models.outputs import call_model


class VQAEvaluator:
    """Official VQA accuracy of argmax answers over labelled questions of each batch."""

    name = "vqa_accuracy"

    def __init__(self, answer_vocab: AnswerVocab) -> None:
        self.answer_vocab = answer_vocab
        self.metric = VQAAccuracy()

    def reset(self) -> None:
        self.metric.reset()

    def update(self, batch: dict[str, Any], logits: torch.Tensor) -> None:
        predictions = logits.argmax(dim=-1).tolist()
        for sample, index in zip(batch["meta"].samples, predictions):
            if sample.answers:
                self.metric.update(self.answer_vocab.answer(index), sample.answers,
                                   sample.question_type, sample.answer_type)

    def compute(self) -> dict[str, float]:
        result = self.metric.compute()
        out = {self.name: result["overall"]}
        out.update({f"{self.name}/{k}": v for k, v in result["per_question_type"].items()})
        return out


class VizWizEvaluator:
    """Official VizWiz accuracy of argmax answers, per answer type, and answerability: the
    average precision and F1 of detecting unanswerable questions from the model's probability
    that a question is answerable, ``1 - sigmoid(logit of "unanswerable")`` (answers are
    scored by sigmoid/BCE). A question's ground truth is its ``answerable`` flag (VizWiz data)
    or, when the data has none, whether its answer type is "unanswerable" (ShapesWorld)."""

    name = "vizwiz_accuracy"

    def __init__(self, answer_vocab: AnswerVocab) -> None:

        self.answer_vocab = answer_vocab
        answers = answer_vocab.to_json()
        self.unanswerable = answers.index("unanswerable") if "unanswerable" in answers else None
        self.metric = VizWizAccuracy()

    def reset(self) -> None:
        self.metric.reset()

    def update(self, batch: dict[str, Any], logits: torch.Tensor) -> None:
        predictions = logits.argmax(dim=-1).tolist()
        answerable_scores = ([None] * len(predictions) if self.unanswerable is None else
                             (1 - torch.sigmoid(logits[:, self.unanswerable].float())).tolist())
        for sample, index, score in zip(batch["meta"].samples, predictions, answerable_scores):
            if sample.answers:
                truth = (sample.answerable if sample.answerable is not None
                         else sample.answer_type != "unanswerable")
                self.metric.update(self.answer_vocab.answer(index), sample.answers,
                                   sample.answer_type, truth, score)

    def compute(self) -> dict[str, float]:
        result = self.metric.compute()
        out = {self.name: result["overall"]}
        out.update({f"{self.name}/{k}": v for k, v in result["per_answer_type"].items()})
        unanswerable = result.get("unanswerability")
        if unanswerable is not None:
            out["unanswerable_ap"] = unanswerable["average_precision"]
            out["unanswerable_f1"] = unanswerable["f1"]
        return out


EVALUATORS = {"vqa": VQAEvaluator, "vizwiz": VizWizEvaluator}


def build_evaluator(metric: str, answer_vocab: AnswerVocab):
    """The evaluator a recipe's ``eval.metric`` names ("vqa" or "vizwiz")."""
    return EVALUATORS[metric](answer_vocab)


class ClassificationEvaluator:
    """Top-1 accuracy (percent) over labelled rows."""

    name = "accuracy"

    def reset(self) -> None:
        self.correct = 0
        self.total = 0

    def __init__(self) -> None:
        self.reset()

    def update(self, batch: dict[str, Any], logits: torch.Tensor) -> None:
        labelled = batch["labelled"]
        predictions = logits.argmax(dim=-1)[labelled]
        self.correct += int((predictions == batch["targets"][labelled]).sum())
        self.total += int(labelled.sum())

    def compute(self) -> dict[str, float]:
        if self.total == 0:
            raise ValueError("no labelled examples were evaluated; the validation set needs "
                             "labels.")
        return {self.name: 100.0 * self.correct / self.total}


@dataclass
class Predictions:
    """Argmax class per example, in dataset order, plus the metric over them."""

    indices: np.ndarray              # (N,) int
    metrics: dict[str, float]


@torch.inference_mode()
def predict(model: nn.Module, dataset: Dataset, collate: Callable, evaluator: Any,
            batch_size: int = 64) -> Predictions:
    """Run ``model`` over ``dataset`` in order; returns argmax indices and the evaluator's
    metrics."""
    model.eval()
    evaluator.reset()
    indices = []
    for batch_indices in sequential_batches(len(dataset), batch_size):
        batch = collate([dataset[i] for i in batch_indices])
        logits = call_model(model, batch["inputs"]).logits
        evaluator.update(batch, logits)
        indices.append(logits.argmax(dim=-1).cpu().numpy())
    return Predictions(np.concatenate(indices), evaluator.compute())


def agreement(first: Predictions, second: Predictions) -> float:
    """Top-1 agreement (percent): how often two models predict the same class."""
    if first.indices.shape != second.indices.shape:
        raise ValueError(f"cannot compare predictions over {first.indices.shape[0]} and "
                         f"{second.indices.shape[0]} examples; evaluate both on the same set.")
    return 100.0 * float((first.indices == second.indices).mean())
