"""Tests for retriever training and distillation (vldistill.jobs.kbvqa.retriever)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vldistill.config import TrainerSettings
from vldistill.core.errors import RecipeError
from vldistill.core.runpaths import RunPaths
from vldistill.data.facts import KnowledgeBase
from vldistill.data.shapesworld_questions import Fact
from vldistill.jobs.kbvqa.recipe import RetrieverDistillSettings, constant_lr, load_kb_recipe
from vldistill.jobs.kbvqa.retriever import (
    distil_retriever,
    hard_negative_ids,
    small_encoder,
    train_retriever,
)
from vldistill.models.fact_index import DenseRetriever

QUIET = TrainerSettings(progress_bar=False)

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


def test_dpr_training_lowers_the_loss_and_ranks_the_gold_fact_first(tmp_path: Path) -> None:
    kb = KnowledgeBase(FACTS)
    encoder = small_encoder(hidden=32, layers=1, seed=0)
    queries, golds = [q for q, _ in QUERIES], [[g] for _, g in QUERIES]

    fitted = train_retriever(encoder, kb, queries, golds, constant_lr(1e-3, 60, 6),
                             paths=RunPaths(tmp_path), trainer=QUIET, temperature=0.1,
                             hard_negatives=2)

    losses = fitted.losses
    assert fitted.steps == len(losses) == 60
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    assert (tmp_path / "logs" / "retriever-trained" / "metrics.csv").is_file()
    indices, _ = DenseRetriever(kb, encoder).search(queries, 1)
    assert [kb.ids[i] for i in indices[:, 0]] == [g for _, g in QUERIES]


def test_distillation_makes_the_student_rank_like_the_teacher(tmp_path: Path) -> None:
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
        candidates=4, train=constant_lr(2e-3, 80, 16)), paths=RunPaths(tmp_path),
        trainer=QUIET).losses

    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    assert agreement() > max(before, 0.6)


def test_distillation_refuses_an_unknown_embedding_loss() -> None:
    with pytest.raises(RecipeError, match=r"retriever.distil.embedding: Input should be "
                                          r"'cosine' or 'mse'"):
        load_kb_recipe(None, ["retriever.distil.embedding=l1"])


def test_old_retriever_and_reader_keys_name_their_new_place() -> None:
    with pytest.raises(RecipeError, match="train_steps was renamed train.max_steps"):
        load_kb_recipe(None, ["retriever.train_steps=10"])
    with pytest.raises(RecipeError, match="steps was renamed train.max_steps.*patience was "
                                          "renamed train.early_stopping_patience"):
        load_kb_recipe(None, ["reader.steps=10", "reader.patience=2"])


def test_a_partial_train_block_keeps_the_sections_own_defaults() -> None:
    """`reader.train: {max_steps: 500}` changes the steps, not the reader's learning rate and
    schedule (which differ from the generic training defaults)."""
    recipe = load_kb_recipe(None, ["reader.train={max_steps: 500}",
                                   "retriever.train={max_steps: 30, optim: {lr: 1.0e-5}}"])
    assert recipe.reader.train.max_steps == 500
    assert recipe.reader.train.optim.lr == 1e-3 and recipe.reader.train.optim.schedule == \
        "constant" and recipe.reader.train.val_every_n_steps == 250
    dpr = recipe.retriever.train
    assert (dpr.max_steps, dpr.batch_size, dpr.optim.lr, dpr.optim.warmup_steps) == \
        (30, 32, 1e-5, 0)
    with pytest.raises(RecipeError, match=r"max_steps \(1100\) is not a multiple of "
                                          r"train.val_every_n_steps \(250\).*max_steps 1000 "
                                          r"or 1250"):
        load_kb_recipe(None, ["reader.train.max_steps=1100"])
