"""The official VQA accuracy (GT-Vision-Lab/VQA ``vqaEval.py``), reproduced exactly.

For one question with annotator answers ``gt`` (10 in VQAv2) and a prediction::

    strip:      "\\n" and "\\t" -> " ", strip()     (prediction and every gt answer, always)
    normalise:  only if len(set(gt)) > 1 (annotators disagree after strip):
                gt_i <- normalize(gt_i), prediction <- normalize(prediction)
    accuracy:   mean over annotators i of min(1, #{j != i : gt_j == prediction} / 3)

where normalize is punctuation, then lower-case / number words / articles / contractions
(:func:`vldistill.data.answers.normalize_answer`). When the annotators agree, nothing is
normalised or lower-cased at all: ten "yes" and the prediction "Yes" score 0. Every quirk of
the official script is listed in the docstring of :mod:`vldistill.data.answers`.

Scores are returned unrounded (the official script rounds percentages to 2 decimals).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from vldistill.data.answers import leave_one_out_accuracy, normalize_answer, strip_answer


def vqa_accuracy(prediction: str, gt_answers: Sequence[str]) -> float:
    """Official accuracy in [0, 1] of ``prediction`` against the raw annotator answers.

    >>> vqa_accuracy("no", ["yes"] * 8 + ["no"] * 2)  # (2 * 1/3 + 8 * 2/3) / 10, summed in order
    0.5999999999999999
    >>> vqa_accuracy("Yes", ["yes"] * 10)  # unanimous: no normalisation, no lower-casing
    0.0
    """
    _check_question(prediction, gt_answers)
    gt = [strip_answer(answer) for answer in gt_answers]
    predicted = strip_answer(prediction)
    if len(set(gt)) > 1:
        gt = [normalize_answer(answer) for answer in gt]
        predicted = normalize_answer(predicted)
    return leave_one_out_accuracy(predicted, gt)


class VQAAccuracy:
    """Accumulates :func:`vqa_accuracy` over questions; reports percentages like the script.

    ``compute()`` returns ``{"overall": float, "per_question_type": {type: float},
    "per_answer_type": {type: float}, "count": int}``: percentages in [0, 100], unrounded,
    each the mean of per-question accuracies. Questions updated with an empty type string are
    counted in ``overall`` only.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._scores: list[float] = []
        self._by_question_type: dict[str, list[float]] = defaultdict(list)
        self._by_answer_type: dict[str, list[float]] = defaultdict(list)

    def __len__(self) -> int:
        return len(self._scores)

    def update(self, prediction: str, gt_answers: Sequence[str], question_type: str = "",
               answer_type: str = "") -> float:
        """Score one question, remember it, and return its accuracy in [0, 1]."""
        score = vqa_accuracy(prediction, gt_answers)
        self._scores.append(score)
        if question_type:
            self._by_question_type[question_type].append(score)
        if answer_type:
            self._by_answer_type[answer_type].append(score)
        return score

    def compute(self) -> dict[str, Any]:
        if not self._scores:
            raise ValueError(
                "VQAAccuracy.compute() called before any update(); there is no question to "
                "average. Call update(prediction, gt_answers) for each question first.")
        return {
            "overall": _percentage(self._scores),
            "per_question_type": {name: _percentage(scores)
                                  for name, scores in self._by_question_type.items()},
            "per_answer_type": {name: _percentage(scores)
                                for name, scores in self._by_answer_type.items()},
            "count": len(self._scores),
        }


def _percentage(scores: list[float]) -> float:
    # Same operation order as the official setAccuracy, before its round(..., 2).
    return 100 * float(sum(scores)) / len(scores)


def _check_question(prediction: str, gt_answers: Sequence[str]) -> None:
    if not isinstance(prediction, str):
        raise TypeError(
            f"prediction must be a string answer, got {type(prediction).__name__}: "
            f"{prediction!r:.100}; decode model outputs to text before scoring.")
    if isinstance(gt_answers, str):
        raise TypeError(
            f"gt_answers must be the list of annotator answers, got the string "
            f"{gt_answers!r}; wrap it: [{gt_answers!r}].")
    if len(gt_answers) == 0:
        raise ValueError(
            "gt_answers is empty; VQA accuracy needs the annotator answers (10 in VQAv2). "
            "Skip unlabelled questions or score them with a labelled split.")
