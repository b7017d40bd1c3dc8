"""The knowledge-based VQA job: `vldistill run recipes/kbvqa.yaml` (``job: kbvqa``).

    knowledge base -> retriever (BM25 | MiniLM | trained | distilled) -> top-n facts per question
                   -> Fusion-in-Decoder readers (base; large and base distilled from it)
                   -> retrieval (recall@k, MRR) and reader (EM, F1, VQA accuracy) tables

Data is ShapesWorld's knowledge questions by default, or files in the VQAv2 / OK-VQA layout
with a facts JSONL and, optionally, captions JSONL files (the image as text).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel

from vldistill.core.console import console
from vldistill.core.errors import DataError, RecipeError
from vldistill.core.runpaths import RunPaths
from vldistill.data.facts import KnowledgeBase, read_captions, read_facts
from vldistill.data.sample import Sample
from vldistill.data.shapesworld import load_shapesworld
from vldistill.data.vqa import read_vqa
from vldistill.eval.retrieval import mean_reciprocal_rank, recall_at_k
from vldistill.jobs.base import JobRun, RunOptions, execute, open_run_folder, save_progress
from vldistill.jobs.kbvqa.reader import ReaderTrainSettings, evaluate_reader, train_reader
from vldistill.jobs.kbvqa.recipe import (
    EXAMPLE,
    KBDataSettings,
    KBVQARecipe,
    ReaderModel,
    load_kb_recipe,
)
from vldistill.jobs.kbvqa.retriever import (
    RetrieverDistillSettings,
    RetrieverTrainSettings,
    distil_retriever,
    small_encoder,
    train_retriever,
)
from vldistill.models.fact_index import BM25Retriever, DenseRetriever
from vldistill.models.fid_reader import FiDReader
from vldistill.models.sentence_encoders import load_encoder


def load_kb_data(settings: KBDataSettings):
    """(knowledge base, train samples, val samples, captions by image id)."""
    if settings.source == "shapesworld":
        world = load_shapesworld(settings.shapesworld, progress=True)
        kb = (read_facts(settings.facts) if settings.facts is not None else
              KnowledgeBase(world.facts, source="shapesworld"))
        train, val = world.splits["train"].samples, world.splits["val"].samples
        captions = {**world.splits["train"].captions, **world.splits["val"].captions}
    else:
        kb = read_facts(settings.facts)
        splits, captions = [], {}
        for files in (settings.train, settings.val):
            samples, _ = read_vqa(files.questions, files.annotations)
            splits.append(samples)
            captions.update(read_captions(files.captions))
        train, val = splits
    if settings.knowledge_only:
        train = [s for s in train if s.fact_ids]
        val = [s for s in val if s.fact_ids]
    train = [s for s in train if s.answers][:settings.max_train_questions]
    val = [s for s in val if s.answers]
    if not train or not val:
        raise DataError(f"no {'knowledge ' if settings.knowledge_only else ''}questions with "
                        "answers in the train or val split. Fix: check the data, or set "
                        "data.knowledge_only: false for data without gold fact ids.")
    kb.check_gold(train, "the training questions")
    kb.check_gold(val, "the validation questions")
    return kb, train, val, captions


def _queries(samples: list[Sample], captions: dict, image_text: bool) -> list[str]:
    return [f"{s.question} {captions.get(s.image_id, '')}".strip() if image_text
            else s.question for s in samples]


def build_retriever(recipe: KBVQARecipe, kb, train, captions):
    settings = recipe.retriever
    if settings.kind == "bm25":
        return BM25Retriever(kb)
    encoder = load_encoder(settings.encoder)
    queries = _queries(train, captions, settings.image_text)
    if settings.kind == "trained":
        with_gold = [(q, s.fact_ids) for q, s in zip(queries, train) if s.fact_ids]
        if not with_gold:
            raise RecipeError("retriever.kind 'trained' learns from the training questions' "
                              "gold fact ids, and these questions have none. Set "
                              "retriever.kind to distilled, minilm or bm25.")
        train_retriever(encoder, kb, [q for q, _ in with_gold], [g for _, g in with_gold],
                        RetrieverTrainSettings(steps=settings.train_steps, seed=recipe.seed))
    elif settings.kind == "distilled":
        student = small_encoder(settings.student_hidden, settings.student_layers,
                                heads=max(2, settings.student_hidden // 64), seed=recipe.seed)
        distil_retriever(student, encoder, kb, queries, RetrieverDistillSettings(
            steps=settings.distil_steps, candidates=32, seed=recipe.seed))
        encoder = student
    return DenseRetriever(kb, encoder, settings.index)


def run_kbvqa(recipe: KBVQARecipe, options: RunOptions = RunOptions()) -> dict[str, Any]:
    """The whole job, its run folder written; returns results.json's content."""
    return execute(KBVQAJob(), recipe, options).results


class KBVQAJob:
    """Knowledge-based VQA: a retriever over a fact knowledge base and Fusion-in-Decoder
    readers (base; large, and base distilled from it)."""

    name: ClassVar[str] = "kbvqa"
    title: ClassVar[str] = "knowledge-based VQA"
    schema: ClassVar[type[BaseModel]] = KBVQARecipe
    example: ClassVar[str] = EXAMPLE
    options: ClassVar[frozenset[str]] = frozenset()

    def load(self, path: Path | None, overrides: Sequence[str] = ()) -> KBVQARecipe:
        return load_kb_recipe(path, overrides)

    def run(self, recipe: KBVQARecipe, options: RunOptions) -> JobRun:
        start = time.perf_counter()
        paths = open_run_folder(RunPaths.of(recipe.output_dir, recipe.name), recipe,
                                options.resume)
        results = train_and_score(recipe, paths)
        results["wall_time_s"] = time.perf_counter() - start
        text = report(results)
        return JobRun(paths, results, text, [text])


def train_and_score(recipe: KBVQARecipe, paths: RunPaths) -> dict[str, Any]:
    """Retriever, then the readers over its top facts; every number of the run."""
    torch.manual_seed(recipe.seed)
    kb, train, val, captions = load_kb_data(recipe.data)
    console.print(f"kbvqa: {len(kb)} facts, {len(train)} train / {len(val)} val questions")
    settings = recipe.retriever
    retriever = build_retriever(recipe, kb, train, captions)
    n = settings.n_context

    def contexts(samples):
        indices, _ = retriever.search(_queries(samples, captions, settings.image_text), n)
        return [[kb.texts[i] if i >= 0 else None for i in row] for row in indices]

    train_contexts, val_contexts = contexts(train), contexts(val)
    results: dict[str, Any] = {"recipe": recipe.name, "retriever": settings.kind}
    golds = [s.fact_ids for s in val]
    if any(golds):
        indices, _ = retriever.search(_queries(val, captions, settings.image_text), 10)
        ranked = [[kb.ids[i] for i in row if i >= 0] for row in indices]
        results["retrieval"] = {f"R@{k}": recall_at_k(ranked, golds, k) for k in (1, 5, 10)}
        results["retrieval"]["MRR"] = mean_reciprocal_rank(ranked, golds)
        console.print(f"retrieval ({settings.kind}): {results['retrieval']}")
        save_progress(paths, results)

    texts = ([s.question for s in train] + list(captions.values()) + kb.texts +
             [a for s in train for a in s.answers] + ["none"])
    reader_settings = recipe.reader
    holdout = max(1, len(train) // 20)          # early stopping reads a held-out slice
    fit_samples, fit_contexts = train[holdout:], train_contexts[holdout:]
    check = (train[:holdout], train_contexts[:holdout])

    def build(model: ReaderModel) -> FiDReader:
        tokens = reader_settings.max_passage_tokens
        if model.path is not None:
            return FiDReader.from_pretrained(model.path, max_passage_tokens=tokens)
        return FiDReader.from_config(texts, d_model=model.d_model, layers=model.layers,
                                     heads=model.heads, seed=recipe.seed,
                                     max_passage_tokens=tokens)

    def fit(name: str, model: ReaderModel, teacher=None) -> FiDReader:
        reader = build(model)
        began = time.perf_counter()
        train_reader(reader, fit_samples, captions, fit_contexts, ReaderTrainSettings(
            steps=reader_settings.steps, batch_size=reader_settings.batch_size,
            lr=reader_settings.lr, kd_weight=reader_settings.kd_weight if teacher else 0.0,
            seed=recipe.seed), teacher=teacher, validate=check,
            val_every_n_steps=reader_settings.val_every_n_steps,
            patience=reader_settings.patience)
        metrics = evaluate_reader(reader, val, captions, val_contexts)
        results.setdefault("readers", {})[name] = {
            **metrics, "params": sum(p.numel() for p in reader.parameters()),
            "train_s": time.perf_counter() - began}
        console.print(f"reader {name}: EM {metrics['EM']:.1f} F1 {metrics['F1']:.1f} "
                      f"VQA {metrics['VQA']:.1f}")
        reader.save_pretrained(paths.model_dir(f"reader-{name.replace(' ', '-')}"))
        save_progress(paths, results)
        return reader

    base_reader = fit("base", reader_settings.base)
    if reader_settings.large is not None:
        large = fit("large", reader_settings.large)
        if len(large.tokenizer) != len(base_reader.tokenizer):
            raise RecipeError("the large and base readers have different tokenizers "
                              f"({len(large.tokenizer)} vs {len(base_reader.tokenizer)} "
                              "tokens); token-level KD needs one vocabulary. Build both in "
                              "code, or load both from folders that share a tokenizer.")
        fit("base distilled", reader_settings.base, teacher=large)
    return results


def report(results: dict[str, Any]) -> str:
    lines = [f"# vldistill kb run: {results['recipe']}", ""]
    if "retrieval" in results:
        r = results["retrieval"]
        lines += ["| retriever | R@1 | R@5 | R@10 | MRR |", "|---|---|---|---|---|",
                  f"| {results['retriever']} | {r['R@1']:.1f} | {r['R@5']:.1f} | "
                  f"{r['R@10']:.1f} | {r['MRR']:.3f} |", ""]
    lines += ["| reader | EM | F1 | VQA acc. | params | train s |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {m['EM']:.1f} | {m['F1']:.1f} | {m['VQA']:.1f} | {m['params']:,} | "
              f"{m['train_s']:.0f} |" for name, m in results.get("readers", {}).items()]
    lines.append(f"\nwall time: {results['wall_time_s']:.1f} s")
    return "\n".join(lines)
