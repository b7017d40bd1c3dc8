"""The knowledge-based VQA job: `vldistill kb run RECIPE` (recipes/kbvqa.yaml).

    knowledge base -> retriever (BM25 | MiniLM | trained | distilled) -> top-n facts per question
                   -> Fusion-in-Decoder readers (base; large and base distilled from it)
                   -> retrieval (recall@k, MRR) and reader (EM, F1, VQA accuracy) tables

Data is ShapesWorld's knowledge questions by default, or files in the VQAv2 / OK-VQA layout
with a facts JSONL and, optionally, captions JSONL files (the image as text).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import Field, model_validator

from vldistill.config import Strict
from vldistill.console import console
from vldistill.data.sample import Sample
from vldistill.data.shapesworld import ShapesWorldSettings
from vldistill.errors import DataError, RecipeError, MissingFileError
from vldistill.report.results import write_run_files


class KBFiles(Strict):
    """One split in the VQAv2 / OK-VQA layout, and the image as text."""

    questions: Path
    annotations: Path
    captions: Path | None = Field(None, description="JSONL of {image_id, caption}: the image "
                                  "as text (e.g. a captioner's output); None: no image text")


class KBDataSettings(Strict):
    source: Literal["shapesworld", "vqa"] = "shapesworld"
    shapesworld: ShapesWorldSettings = Field(default_factory=ShapesWorldSettings)
    facts: Path | None = Field(None, description="the knowledge base (JSONL); None: "
                               "ShapesWorld's facts")
    train: KBFiles | None = None
    val: KBFiles | None = None
    knowledge_only: bool = Field(True, description="keep only questions with gold fact ids "
                                 "(ShapesWorld's knowledge questions); OK-VQA has none: false")
    max_train_questions: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _files(self) -> KBDataSettings:
        if self.source == "vqa" and (self.train is None or self.val is None or
                                     self.facts is None):
            raise ValueError("data.source 'vqa' needs data.train and data.val ({questions, "
                             "annotations, captions}) and data.facts")
        return self


class RetrieverSettings(Strict):
    kind: Literal["bm25", "minilm", "trained", "distilled"] = "trained"
    encoder: str = Field("minilm", description="dense encoder: minilm or a local folder")
    index: Literal["flat", "hnsw"] = "flat"
    image_text: bool = Field(True, description="append the image as text to the query")
    n_context: int = Field(3, ge=1, description="facts the reader gets per question")
    train_steps: int = Field(300, ge=1, description="DPR steps (kind: trained)")
    distil_steps: int = Field(1500, ge=1, description="distillation steps (kind: distilled)")
    student_hidden: int = Field(256, ge=16)
    student_layers: int = Field(2, ge=1)


class ReaderModel(Strict):
    """A T5 reader built in code (sizes) or from a local folder (path)."""

    path: Path | None = None
    d_model: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)


class ReaderSettings(Strict):
    base: ReaderModel = Field(default_factory=ReaderModel)
    large: ReaderModel | None = Field(
        default_factory=lambda: ReaderModel(d_model=128, layers=3),
        description="None: no large reader and no distilled base")
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    kd_weight: float = Field(0.5, ge=0, le=1, description="distilled base: (1 - w) NLL + w KD")
    max_passage_tokens: int = Field(48, ge=8, description="tokens kept per (question, image "
                                    "text, fact) passage; longer ones lose their end")
    val_every_n_steps: int = Field(250, ge=1, description="early stopping: the weights with "
                                   "the best exact match on a held-out slice are kept")
    patience: int | None = Field(None, ge=1, description="validations without improvement "
                                 "before stopping; None: run all steps")


class KBVQARecipe(Strict):
    task: Literal["kbvqa"] = Field("kbvqa", description="marks a knowledge-based VQA recipe "
                                   "(`vldistill run` dispatches on it)")
    name: str = "kbvqa"
    seed: int = 0
    output_dir: Path = Path("runs")
    data: KBDataSettings = Field(default_factory=KBDataSettings)
    retriever: RetrieverSettings = Field(default_factory=RetrieverSettings)
    reader: ReaderSettings = Field(default_factory=ReaderSettings)


def is_kb_recipe(path: Path | None) -> bool:
    """Does the YAML file say ``task: kbvqa``?"""
    from vldistill.config import recipe_task

    return recipe_task(path) == "kbvqa"


def load_kb_recipe(path: Path | None, overrides: list[str] = ()) -> KBVQARecipe:
    """A KB-VQA recipe from YAML (None: the built-in default), with --set overrides."""
    from vldistill.config import load_task_recipe

    return load_task_recipe(KBVQARecipe, path, overrides, "recipes/kbvqa.yaml")


def read_captions(path: Path | None) -> dict[Any, str]:
    if path is None:
        return {}
    if not Path(path).is_file():
        raise MissingFileError(f"captions file {path} does not exist. Fix: pass a JSONL of "
                               "{\"image_id\": ..., \"caption\": ...} lines, or null.")
    captions = {}
    with open(path, encoding="utf-8") as handle:
        lines = list(handle)
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                record = json.loads(line)
                captions[record["image_id"]] = str(record["caption"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataError(f"{path}, line {number}: expected a JSON object with image_id "
                                "and caption. Fix: correct that line.") from None
    return captions


def load_kb_data(settings: KBDataSettings):
    """(knowledge base, train samples, val samples, captions by image id)."""
    from vldistill.kb.facts import KnowledgeBase, read_facts

    if settings.source == "shapesworld":
        from vldistill.data.shapesworld import load_shapesworld

        world = load_shapesworld(settings.shapesworld, progress=True)
        kb = (read_facts(settings.facts) if settings.facts is not None else
              KnowledgeBase(world.facts, source="shapesworld"))
        train, val = world.splits["train"].samples, world.splits["val"].samples
        captions = {**world.splits["train"].captions, **world.splits["val"].captions}
    else:
        from vldistill.data.vqa import read_vqa

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
    from vldistill.kb.encoders import load_encoder
    from vldistill.kb.index import BM25Retriever, DenseRetriever
    from vldistill.kb.train import (RetrieverDistillSettings, RetrieverTrainSettings,
                                    distil_retriever, small_encoder, train_retriever)

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


def run_kbvqa(recipe: KBVQARecipe) -> dict[str, Any]:
    """The whole job; writes results.json and report.md in output_dir/name."""
    from vldistill.kb.metrics import mean_reciprocal_rank, recall_at_k
    from vldistill.kb.reader import (FiDReader, ReaderTrainSettings, evaluate_reader,
                                     train_reader)

    start = time.perf_counter()
    run_dir = recipe.output_dir / recipe.name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe.model_dump(mode="json"),
                                                        sort_keys=False), encoding="utf-8")
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
        reader.save_pretrained(run_dir / f"reader-{name.replace(' ', '-')}")
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
    results["wall_time_s"] = time.perf_counter() - start
    write_run_files(run_dir, results, report(results))
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
