"""Tests for retriever training and distillation (vldistill.jobs.kbvqa.retriever)."""

from __future__ import annotations

import numpy as np
import pytest

from vldistill.data.facts import KnowledgeBase
from vldistill.data.shapesworld_questions import Fact
from vldistill.jobs.kbvqa.retriever import (
    RetrieverDistillSettings,
    RetrieverTrainSettings,
    distil_retriever,
    hard_negative_ids,
    small_encoder,
    train_retriever,
)
from vldistill.models.fact_index import DenseRetriever

FACTS = [Fact(f"F{i}", text) for i, text in enumerate([
    "A triangle has three corners.", "A square has four corners.", "A star has ten corners.",
    "Bananas are yellow.", "Strawberries are red.", "Grass is green.", "Snow is white.",
    "Lemons taste sour."])]
QUERIES = [("how many corners does the triangle have", "F0"),
           ("how many corners does the square have", "F1"),
           ("how many corners does the star have", "F2"),
           ("which fruit is yellow like the banana", "F3"),
           ("which fruit is red like the strawberry", "F4"),
           ("what is green like grass", "F5")]


def test_hard_negatives_are_the_best_bm25_facts_that_are_not_gold() -> None:
    kb = KnowledgeBase(FACTS)
    negatives = hard_negative_ids(kb, [q for q, _ in QUERIES], [[g] for _, g in QUERIES], 2)

    for (query, gold), row in zip(QUERIES, negatives):
        assert len(row) == 2 and kb.index[gold] not in row
    assert set(negatives[0]) <= {1, 2}          # the other corner facts share "corners"


def test_dpr_training_lowers_the_loss_and_ranks_the_gold_fact_first() -> None:
    kb = KnowledgeBase(FACTS)
    encoder = small_encoder(hidden=32, layers=1, seed=0)
    queries, golds = [q for q, _ in QUERIES], [[g] for _, g in QUERIES]

    losses = train_retriever(encoder, kb, queries, golds, RetrieverTrainSettings(
        steps=60, batch_size=6, lr=1e-3, temperature=0.1, hard_negatives=2), progress=False)

    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    indices, _ = DenseRetriever(kb, encoder).search(queries, 1)
    assert [kb.ids[i] for i in indices[:, 0]] == [g for _, g in QUERIES]


def test_distillation_makes_the_student_rank_like_the_teacher() -> None:
    kb = KnowledgeBase(FACTS)
    teacher = small_encoder(hidden=32, layers=1, seed=1)
    student = small_encoder(hidden=16, layers=1, seed=2)
    queries = [q for q, _ in QUERIES] * 3

    def agreement() -> float:
        t, _ = DenseRetriever(kb, teacher).search(queries, 3)
        s, _ = DenseRetriever(kb, student).search(queries, 3)
        return float(np.mean(t[:, 0] == s[:, 0]))

    before = agreement()
    losses = distil_retriever(student, teacher, kb, queries, RetrieverDistillSettings(
        steps=80, batch_size=16, lr=2e-3, candidates=4), progress=False)

    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    assert agreement() > max(before, 0.6)


def test_distillation_refuses_an_unknown_embedding_loss() -> None:
    with pytest.raises(ValueError, match="is not cosine or mse"):
        distil_retriever(small_encoder(hidden=16, layers=1), small_encoder(hidden=16, layers=1),
                         KnowledgeBase(FACTS), ["q"], RetrieverDistillSettings(embedding="l1"))
