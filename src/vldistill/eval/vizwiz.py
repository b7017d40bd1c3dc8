"""The official VizWiz metrics: VizWiz accuracy and answerability (VizWiz API ``vqaEval.py``).

VizWiz accuracy differs from the VQAv2 script (:mod:`vldistill.eval.vqa_accuracy`) in what it
normalises (research notes: ``docs/notes/vizwiz-eval.md``)::

    prediction:  "\\n", "\\t" -> " ", strip(), processPunctuation, processDigitArticle  (always)
    gt answers:  compared raw, never normalised (not even stripped or lower-cased)
    accuracy:    mean over annotators i of min(1, #{j != i : gt_j == prediction} / 3)

So a prediction "one" becomes "1" and can never match a ground truth written "one"; VQAv2
instead normalises both sides whenever the annotators disagree. ``answer_confidence`` is not
used. The punctuation and digit/article steps, with their quirks, are the VQAv2 ones
(:mod:`vldistill.data.answers`), except for the contractions table: VizWiz's maps to curly
apostrophes, so "dont" becomes "don’t" and never matches an annotator's "don't".

Answerability: the positive class is *unanswerable*. With ``answerable`` ground truth g in
{0, 1} and a predicted probability p that the question is answerable, the script computes
``average_precision_score(1 - g, 1 - p)`` and ``f1_score(1 - g, (1 - p) > 0.5)`` (scikit-learn),
both as percentages.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from vldistill.data.answers import (
    VIZWIZ_CONTRACTIONS,
    leave_one_out_accuracy,
    process_digit_article,
    process_punctuation,
    strip_answer,
)


def normalize_prediction(prediction: str) -> str:
    """What the VizWiz script does to a predicted answer (and only to it), with its own
    contractions table (curly apostrophes: "dont" -> "don’t")."""
    return process_digit_article(process_punctuation(strip_answer(prediction)),
                                 VIZWIZ_CONTRACTIONS)


def vizwiz_accuracy(prediction: str, gt_answers: Sequence[str]) -> float:
    """Official VizWiz accuracy in [0, 1] of ``prediction`` against the raw annotator answers.

    >>> vizwiz_accuracy("Soup.", ["soup"] * 3 + ["can"] * 7)  # 3 of 10 match "soup"
    0.9
    >>> vizwiz_accuracy("one", ["one"] * 10)   # the prediction becomes "1"; gt stays "one"
    0.0
    """
    if not isinstance(prediction, str):
        raise TypeError(f"prediction must be a string answer, got {type(prediction).__name__}")
    if isinstance(gt_answers, str) or len(gt_answers) == 0:
        raise ValueError("gt_answers must be the non-empty list of annotator answers (10 in "
                         "VizWiz); skip questions without answers (the test split).")
    return leave_one_out_accuracy(normalize_prediction(prediction), list(gt_answers))


def answerability(answerable: Sequence[int | bool], answerable_scores: Sequence[float]
                  ) -> dict[str, float]:
    """Average precision and F1 of detecting *unanswerable* questions, as percentages.

    ``answerable``: ground truth, 1 when the question can be answered. ``answerable_scores``:
    the model's probability that it can be answered (the official results' ``answerable``).
    """
    from sklearn.metrics import average_precision_score, f1_score

    if len(answerable) != len(answerable_scores) or not len(answerable):
        raise ValueError(f"answerability needs one score per question: got "
                         f"{len(answerable)} labels and {len(answerable_scores)} scores")
    truth = [1 - int(a) for a in answerable]
    unanswerable = [1.0 - float(p) for p in answerable_scores]
    if not any(truth):
        raise ValueError("answerability: no question is unanswerable, so average precision "
                         "is undefined; evaluate on a split that has unanswerable questions")
    return {"average_precision": 100 * float(average_precision_score(truth, unanswerable)),
            "f1": 100 * float(f1_score(truth, [p > 0.5 for p in unanswerable]))}


class VizWizAccuracy:
    """Accumulates :func:`vizwiz_accuracy` (and answerability scores) over questions.

    ``compute()`` returns ``{"overall", "per_answer_type": {type: %}, "count"}`` plus
    ``"unanswerability": {"average_precision", "f1"}`` when answerability scores were given.
    Percentages are unrounded (the script rounds to 2 decimals).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._scores: list[float] = []
        self._by_answer_type: dict[str, list[float]] = defaultdict(list)
        self._answerable: list[int] = []
        self._answerable_scores: list[float] = []

    def update(self, prediction: str, gt_answers: Sequence[str], answer_type: str = "",
               answerable: bool | None = None, answerable_score: float | None = None) -> float:
        score = vizwiz_accuracy(prediction, gt_answers)
        self._scores.append(score)
        if answer_type:
            self._by_answer_type[answer_type].append(score)
        if answerable is not None and answerable_score is not None:
            self._answerable.append(int(answerable))
            self._answerable_scores.append(float(answerable_score))
        return score

    def compute(self) -> dict[str, Any]:
        """Without any unanswerable question among those scored, answerability is undefined
        and left out."""
        if not self._scores:
            raise ValueError("VizWizAccuracy.compute() called before any update()")
        result: dict[str, Any] = {
            "overall": 100 * float(sum(self._scores)) / len(self._scores),
            "per_answer_type": {name: 100 * float(sum(s)) / len(s)
                                for name, s in self._by_answer_type.items()},
            "count": len(self._scores)}
        if self._answerable and not all(self._answerable):
            result["unanswerability"] = answerability(self._answerable, self._answerable_scores)
            result["unanswerability"]["count"] = len(self._answerable)   # questions scored
        return result
