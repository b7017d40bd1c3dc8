"""The depth job's headline (seed 001, sensory substitution): accuracy per question subset for
every model of a run whose student reads depth.

Depth shows shapes, sizes, counts, positions and distances, but not colours or patterns. Two
headline subsets keep colour and pattern out:
- "depth types": the questions of types shape, count, nearest/farthest, spatial and exists;
- "depth-answerable": of those, only questions whose wording and most common answer name no
  colour and no pattern ("What shape is the red object?" is out, "How many circles are there?"
  is in). The claim is about this subset: depth KD against the depth-only student.
Colour and pattern questions are reported too: there a depth student can only learn answer
priors.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from typing import Any

from vldistill.data.answers import AnswerVocab
from vldistill.data.batches import common_answer
from vldistill.data.sample import Sample
from vldistill.data.shapesworld_render import COLOURS, PATTERNS
from vldistill.eval.vqa_accuracy import vqa_accuracy

DEPTH_TYPES = ("shape", "count", "nearest", "spatial", "exists")
APPEARANCE_TYPES = ("colour", "pattern")
# the colour and pattern names, and the synonyms ShapesWorld's annotators use for them
APPEARANCE_WORDS = frozenset(COLOURS) | frozenset(PATTERNS) | {
    "gray", "violet", "stripes", "stripy", "spotted", "polka", "dots", "solid"}
NAMES = {"teacher": "RGB teacher", "student (rgb, no KD)": "RGB student (no KD)",
         "student (no KD)": "depth student (no KD)", "student (KD)": "depth student (KD)"}
ORDER = ("depth-answerable", "depth types", *DEPTH_TYPES, *APPEARANCE_TYPES, "all")


def needs_appearance(sample: Sample) -> bool:
    """Does the question or its most common answer name a colour or a pattern?"""
    text = f"{sample.question} {common_answer(sample.answers)}".lower()
    return bool(set(re.findall(r"[a-z]+", text)) & APPEARANCE_WORDS)


def subsets(samples: Sequence[Sample]) -> dict[str, list[int]]:
    """Row indices (in prediction order) of each reported subset, in report order; subsets
    with no question are left out."""
    out: dict[str, list[int]] = {name: [] for name in ORDER}
    for row, sample in enumerate(samples):
        if not sample.answers:
            continue
        out["all"].append(row)
        out.setdefault(sample.question_type, []).append(row)
        if sample.question_type in DEPTH_TYPES:
            out["depth types"].append(row)
            if not needs_appearance(sample):
                out["depth-answerable"].append(row)
    return {name: rows for name, rows in out.items() if rows}


def subset_scores(predictions: dict[str, list[Any]], samples: Sequence[Sample],
                  vocab: AnswerVocab) -> dict[str, Any]:
    """VQA accuracy per subset, per model and seed (``predictions``: the models' argmax answer
    indices per seed, over ``samples`` in order), and the subsets' sizes."""
    rows = subsets(samples)
    scores = {name: {subset: [100.0 * statistics.fmean(
        vqa_accuracy(vocab.answer(int(indices[r])), samples[r].answers) for r in picked)
        for indices in runs] for subset, picked in rows.items()}
        for name, runs in predictions.items()}
    return {"scores": scores, "sizes": {name: len(r) for name, r in rows.items()}}


def depth_comparison(numbers: dict[str, Any]) -> tuple[str, list[str]]:
    """(markdown table, headline lines) of :func:`subset_scores`' numbers."""
    scores, sizes = numbers["scores"], numbers["sizes"]
    columns = list(next(iter(scores.values())))
    lines = ["| model | " + " | ".join(f"{c} (n={sizes[c]})" for c in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for model, by_subset in scores.items():
        cells = [f"{statistics.fmean(v):.2f} ± {statistics.pstdev(v) if len(v) > 1 else 0.0:.2f}"
                 for v in by_subset.values()]
        lines.append(f"| {NAMES.get(model, model)} | " + " | ".join(cells) + " |")
    headline = []
    if {"student (KD)", "student (no KD)"} <= set(scores) and \
            "depth-answerable" in scores["student (KD)"]:
        gains = [k - b for k, b in zip(scores["student (KD)"]["depth-answerable"],
                                       scores["student (no KD)"]["depth-answerable"])]
        headline.append(f"Depth KD - depth-only on depth-answerable questions: "
                        f"{statistics.fmean(gains):+.2f} points mean (per seed "
                        f"{', '.join(f'{g:+.2f}' for g in gains)}).")
    return "\n".join(lines), headline
