"""Exact match and F1 as the official SQuAD v1.1 evaluation script computes them.

Written from the script's definition (``evaluate-v1.1.py``), not copied:

    normalize(s) = white_space_fix(remove_articles(remove_punc(lower(s))))
        lower:            str.lower()
        remove_punc:      drop every character in string.punctuation
        remove_articles:  replace each whole word a / an / the with a space
        white_space_fix:  " ".join(s.split())
    exact_match(p, g) = normalize(p) == normalize(g)
    f1(p, g): tokens = normalize(x).split(); common = multiset intersection;
              0 when nothing is common, else 2PR / (P + R)
    a prediction's score is its maximum over the ground truths.

Both return fractions in [0, 1]; the script reports means times 100.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_squad(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, ground_truths: Sequence[str]) -> float:
    _check(ground_truths)
    predicted = normalize_squad(prediction)
    return float(max(predicted == normalize_squad(g) for g in ground_truths))


def _f1(prediction: str, truth: str) -> float:
    predicted, gold = normalize_squad(prediction).split(), normalize_squad(truth).split()
    common = sum((Counter(predicted) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, ground_truths: Sequence[str]) -> float:
    _check(ground_truths)
    return max(_f1(prediction, g) for g in ground_truths)


def _check(ground_truths: Sequence[str]) -> None:
    if isinstance(ground_truths, str) or not ground_truths:
        raise ValueError(f"ground truths must be a non-empty list of strings, got "
                         f"{ground_truths!r}")
