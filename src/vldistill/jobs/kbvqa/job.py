"""The knowledge-based VQA job: `vldistill run recipes/kbvqa.yaml` (``job: kbvqa``).

    knowledge base -> retrievers side by side: BM25, MiniLM, MiniLM trained DPR-style on the
                      gold facts (the teacher), a small BERT distilled from it
                      (recall@k, MRR, queries/s, parameters)
                   -> the chosen retriever's top-n facts per question
                   -> Fusion-in-Decoder readers: base without knowledge (the baseline), base,
                      large, and base distilled from large (EM, F1, VQA accuracy)

Every model trains through the engine (Lightning, DDP, resume points, logs); the run folder is
the one every job writes (see vldistill.core.runpaths), with the trained retrievers and the
readers saved as Hugging Face folders under checkpoints/.

Data is ShapesWorld's knowledge questions by default, or files in the VQAv2 / OK-VQA layout
with a facts JSONL and, optionally, captions JSONL files (the image as text).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel

from vldistill.core.console import console
from vldistill.core.errors import DataError, RecipeError
from vldistill.core.hashing import module_fingerprint
from vldistill.core.ranks import is_global_zero
from vldistill.core.runpaths import RunPaths
from vldistill.data.facts import KnowledgeBase, read_captions, read_facts
from vldistill.data.sample import Sample
from vldistill.data.shapesworld import load_shapesworld
from vldistill.data.vqa import read_vqa
from vldistill.eval.retrieval import mean_reciprocal_rank, recall_at_k
from vldistill.jobs.base import (
    JobRun,
    RunOptions,
    execute,
    open_run_folder,
    recipe_stamp,
    save_progress,
    world_size,
)
from vldistill.jobs.kbvqa.reader import evaluate_reader, train_reader
from vldistill.jobs.kbvqa.recipe import (
    EXAMPLE,
    KBDataSettings,
    KBVQARecipe,
    ReaderModel,
    RetrieverSettings,
    load_kb_recipe,
)
from vldistill.jobs.kbvqa.retriever import distil_retriever, small_encoder, train_retriever
from vldistill.models.fact_index import BM25Retriever, DenseRetriever, Retriever
from vldistill.models.fid_reader import FiDReader
from vldistill.models.sentence_encoders import SentenceEncoder, load_encoder
from vldistill.report.results import Panel, Point, plot_panels


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


NAMES = {"bm25": "BM25", "minilm": "MiniLM", "trained": "MiniLM trained (DPR)",
         "distilled": "small BERT distilled"}


def run_kbvqa(recipe: KBVQARecipe, options: RunOptions = RunOptions()) -> dict[str, Any]:
    """The whole job, its run folder written; returns results.json's content."""
    return execute(KBVQAJob(), recipe, options).results


class KBVQAJob:
    """Knowledge-based VQA: retrievers over a fact knowledge base (a trained teacher and a
    distilled student side by side) and Fusion-in-Decoder readers (no knowledge; base; large,
    and base distilled from it)."""

    name: ClassVar[str] = "kbvqa"
    title: ClassVar[str] = "knowledge-based VQA"
    schema: ClassVar[type[BaseModel]] = KBVQARecipe
    example: ClassVar[str] = EXAMPLE
    options: ClassVar[frozenset[str]] = frozenset({"resume"})

    def load(self, path: Path | None, overrides: Sequence[str] = ()) -> KBVQARecipe:
        return load_kb_recipe(path, overrides)

    def run(self, recipe: KBVQARecipe, options: RunOptions) -> JobRun:
        start = time.perf_counter()
        paths = open_run_folder(RunPaths.of(recipe.output_dir, recipe.name), recipe,
                                options.resume)
        console.print(f"[bold]vldistill run[/] {recipe.name} (job kbvqa): retriever "
                      f"{recipe.retriever.kind}, output {paths.root}")
        results = train_and_score(recipe, paths, options.resume)
        results["wall_time_s"] = time.perf_counter() - start
        text = report(results)
        image = cost_plot(results, paths) if is_global_zero() else None
        if image is not None:
            text += f"\n\n![accuracy against cost]({image.name})"
        return JobRun(paths, results, text, summary(results))


class Retrievers:
    """Builds (and trains) the retrievers a recipe scores, in order, each once."""

    def __init__(self, recipe: KBVQARecipe, paths: RunPaths, kb, queries: list[str],
                 golds: list, resume: bool, stamp: str) -> None:
        self.recipe, self.paths, self.kb = recipe, paths, kb
        self.queries, self.golds, self.resume, self.stamp = queries, golds, resume, stamp
        self.encoders: dict[str, SentenceEncoder] = {}
        self.train_s: dict[str, float] = {}

    def build(self, kind: str) -> Retriever:
        if kind == "bm25":
            return BM25Retriever(self.kb)
        return DenseRetriever(self.kb, self.encoder(kind), self.recipe.retriever.index)

    def encoder(self, kind: str) -> SentenceEncoder:
        """The dense retriever's encoder, loaded or trained the first time it is asked for."""
        if kind not in self.encoders:
            self.encoders[kind] = getattr(self, f"_{kind}")()
        return self.encoders[kind]

    def _minilm(self) -> SentenceEncoder:
        return load_encoder(self.recipe.retriever.encoder).eval()

    def _trained(self) -> SentenceEncoder:
        settings, recipe = self.recipe.retriever, self.recipe
        labelled = [(q, g) for q, g in zip(self.queries, self.golds) if g]
        encoder = load_encoder(settings.encoder)
        torch.manual_seed(recipe.seed)
        fitted = train_retriever(encoder, self.kb, [q for q, _ in labelled],
                                 [g for _, g in labelled], settings.train, paths=self.paths,
                                 trainer=recipe.trainer, temperature=settings.temperature,
                                 hard_negatives=settings.hard_negatives, seed=recipe.seed,
                                 role="retriever-trained", resume=self.resume,
                                 stamp=self.stamp)
        self.train_s["trained"] = fitted.wall_time_s
        self._save(encoder, "retriever-trained")
        return encoder

    def _distilled(self) -> SentenceEncoder:
        settings, recipe = self.recipe.retriever.distil, self.recipe
        teacher = self.encoder(settings.teacher)
        student = small_encoder(settings.student_hidden, settings.student_layers,
                                heads=max(2, settings.student_hidden // 64), seed=recipe.seed)
        torch.manual_seed(recipe.seed)
        fitted = distil_retriever(student, teacher, self.kb, self.queries, settings,
                                  paths=self.paths, trainer=recipe.trainer, seed=recipe.seed,
                                  role="retriever-distilled", resume=self.resume,
                                  stamp=f"{self.stamp}-{module_fingerprint(teacher)[:16]}")
        self.train_s["distilled"] = fitted.wall_time_s
        self._save(student, "retriever-distilled")
        return student

    def _save(self, encoder: SentenceEncoder, role: str) -> None:
        if is_global_zero():
            encoder.save_pretrained(self.paths.model_dir(role))

    def parameters(self, kind: str) -> int:
        encoder = self.encoders.get(kind)
        return sum(p.numel() for p in encoder.parameters()) if encoder is not None else 0


def check_gold_for_training(settings: RetrieverSettings, train: list[Sample]) -> None:
    """The trained retriever learns from gold fact ids: refused, naming the setting that asks
    for it, before anything runs when the training questions have none."""
    if "trained" not in settings.scored or any(s.fact_ids for s in train):
        return
    asks = [name for name, wanted in (
        ("retriever.kind", settings.kind == "trained"),
        ("retriever.compare", "trained" in settings.compare),
        ("retriever.distil.teacher", "distilled" in {settings.kind, *settings.compare} and
         settings.distil.teacher == "trained")) if wanted]
    raise RecipeError(f"{' and '.join(asks)} ask(s) for the retriever trained on gold facts "
                      "(retriever.kind 'trained' learns from the training questions' gold fact "
                      "ids), and these questions have none. Fix: set retriever.kind to "
                      "distilled, minilm or bm25, leave trained out of retriever.compare, and "
                      "set retriever.distil.teacher: minilm.")


def score_retriever(retriever: Retriever, kb, queries: list[str], golds: list
                    ) -> dict[str, float]:
    """Recall@1/5/10 and MRR against the gold fact ids (empty when there are none)."""
    if not any(golds):
        return {}
    indices, _ = retriever.search(queries, 10)
    ranked = [[kb.ids[i] for i in row if i >= 0] for row in indices]
    out = {f"R@{k}": recall_at_k(ranked, golds, k) for k in (1, 5, 10)}
    out["MRR"] = mean_reciprocal_rank(ranked, golds)
    return out


def queries_per_second(retriever: Retriever, queries: list[str], repeats: int) -> float:
    """Queries per second of encoding and search (batches of 64), the best of ``repeats``
    passes over ``queries`` after a warm-up batch."""
    retriever.search(queries[:64], 10)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        retriever.search(queries, 10)
        best = min(best, time.perf_counter() - start)
    return len(queries) / best


def train_and_score(recipe: KBVQARecipe, paths: RunPaths, resume: bool = False
                    ) -> dict[str, Any]:
    """Retrievers side by side, then the readers over the chosen one's top facts; every
    number of the run. With ``resume``, finished models are loaded and an interrupted one
    continues (see vldistill.train.resume); resume files of another recipe are not used."""
    stamp = recipe_stamp(recipe)
    torch.manual_seed(recipe.seed)
    kb, train, val, captions = load_kb_data(recipe.data)
    console.print(f"kbvqa: {len(kb)} facts, {len(train)} train / {len(val)} val questions")
    settings = recipe.retriever
    train_queries = _queries(train, captions, settings.image_text)
    val_queries = _queries(val, captions, settings.image_text)
    results: dict[str, Any] = {"recipe": recipe.name, "retriever": settings.kind,
                               "facts": len(kb), "train_questions": len(train),
                               "val_questions": len(val), "retrieval": {}}
    check_gold_for_training(settings, train)
    built = Retrievers(recipe, paths, kb, train_queries, [s.fact_ids for s in train], resume,
                       stamp)
    golds = [s.fact_ids for s in val]
    retrievers = {}
    for kind in settings.scored:
        retrievers[kind] = built.build(kind)
        row = {**score_retriever(retrievers[kind], kb, val_queries, golds),
               "params": built.parameters(kind), "train_s": built.train_s.get(kind, 0.0)}
        if kind == "distilled":
            row["teacher"] = settings.distil.teacher
        results["retrieval"][kind] = row
        console.print(f"retriever {NAMES[kind]}: " + ", ".join(
            f"{k} {v:.3g}" for k, v in row.items() if isinstance(v, float)))
        save_progress(paths, results)
    # speeds are measured back to back once every retriever is built, so that they compare
    # at one moment of a (possibly shared) machine
    for kind, retriever in retrievers.items():
        results["retrieval"][kind]["queries_per_s"] = queries_per_second(
            retriever, val_queries, settings.speed_repeats)
    console.print("queries/s: " + ", ".join(f"{NAMES[k]} {r['queries_per_s']:,.0f}"
                                            for k, r in results["retrieval"].items()))
    results["readers"] = {}
    if recipe.reader is not None:
        data = KBData(kb, train, val, captions, train_queries, val_queries)
        train_readers(recipe, paths, resume, stamp, results, data, retrievers[settings.kind])
    results["world_size"] = world_size()     # DDP starts with the first fit
    return results


@dataclass
class KBData:
    """A run's knowledge base, questions (with answers), image texts and retrieval queries."""

    kb: KnowledgeBase
    train: list[Sample]
    val: list[Sample]
    captions: dict
    train_queries: list[str]
    val_queries: list[str]


def train_readers(recipe: KBVQARecipe, paths: RunPaths, resume: bool, stamp: str,
                  results: dict[str, Any], data: KBData, retriever: Retriever) -> None:
    """The readers over ``retriever``'s top facts, each row added to ``results["readers"]``
    (and saved as partial results) when it finishes."""
    n = recipe.retriever.n_context
    kb, train, val, captions = data.kb, data.train, data.val, data.captions
    train_queries, val_queries = data.train_queries, data.val_queries

    def contexts(queries: list[str]) -> list[list[str | None]]:
        indices, _ = retriever.search(queries, n)
        return [[kb.texts[i] if i >= 0 else None for i in row] for row in indices]

    train_contexts, val_contexts = contexts(train_queries), contexts(val_queries)
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

    def fit(name: str, reader: FiDReader, teacher: FiDReader | None = None,
            knowledge: bool = True) -> FiDReader:
        role = f"reader-{name.replace(' ', '-')}"
        none = lambda samples: [[None] for _ in samples]                      # noqa: E731
        torch.manual_seed(recipe.seed)
        fitted = train_reader(
            reader, fit_samples, captions, fit_contexts if knowledge else none(fit_samples),
            reader_settings.train, paths=paths, trainer=recipe.trainer, role=role,
            teacher=teacher, kd_weight=reader_settings.kd_weight,
            temperature=reader_settings.temperature,
            validate=(check[0], check[1] if knowledge else none(check[0])), seed=recipe.seed,
            resume=resume,
            stamp=stamp if teacher is None else f"{stamp}-{module_fingerprint(teacher)[:16]}")
        metrics = evaluate_reader(reader, val, captions,
                                  val_contexts if knowledge else none(val),
                                  batch_size=recipe.eval_batch_size)
        results["readers"][name] = {
            **metrics, "params": sum(p.numel() for p in reader.parameters()),
            "steps": fitted.steps, "train_s": fitted.wall_time_s}
        console.print(f"reader {name}: EM {metrics['EM']:.1f} F1 {metrics['F1']:.1f} "
                      f"VQA {metrics['VQA']:.1f}")
        if is_global_zero():
            reader.save_pretrained(paths.model_dir(role))
        save_progress(paths, results)
        return reader

    base, large = build(reader_settings.base), None
    if reader_settings.large is not None:
        large = build(reader_settings.large)
        if len(large.tokenizer) != len(base.tokenizer):
            raise RecipeError("the large and base readers have different tokenizers "
                              f"({len(large.tokenizer)} vs {len(base.tokenizer)} "
                              "tokens); token-level KD needs one vocabulary. Build both in "
                              "code, or load both from folders that share a tokenizer.")
    if reader_settings.no_knowledge:
        fit("no knowledge", build(reader_settings.base), knowledge=False)
    fit("base", base)
    if large is not None:
        fit("large", large)
        fit("base distilled", build(reader_settings.base), teacher=large)


# -- the report


def retrieval_table(results: dict[str, Any]) -> str:
    rows = results.get("retrieval", {})
    if not rows:
        return ""
    recall = any("R@1" in row for row in rows.values())
    head = "| retriever | R@1 | R@5 | R@10 | MRR | queries/s | params |" if recall else \
        "| retriever | queries/s | params |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for kind, r in rows.items():
        name = NAMES[kind] + (f" from {NAMES[r['teacher']]}" if "teacher" in r else "")
        cells = [f"{r['R@1']:.1f}", f"{r['R@5']:.1f}", f"{r['R@10']:.1f}",
                 f"{r['MRR']:.3f}"] if recall else []
        lines.append(f"| {name}{' (readers)' if kind == results['retriever'] else ''} | " +
                     " | ".join([*cells, f"{r['queries_per_s']:,.0f}", f"{r['params']:,}"]) +
                     " |")
    return "\n".join(lines)


def reader_table(results: dict[str, Any]) -> str:
    if not results.get("readers"):
        return ""
    lines = ["| reader | EM | F1 | VQA acc. | params | steps | train s |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {name} | {m['EM']:.1f} | {m['F1']:.1f} | {m['VQA']:.1f} | {m['params']:,} | "
              f"{m['steps']} | {m['train_s']:.0f} |"
              for name, m in results.get("readers", {}).items()]
    return "\n".join(lines)


def headline(results: dict[str, Any]) -> list[str]:
    """The comparisons the job's claims rest on, from this run's numbers."""
    lines = []
    retrieval, readers = results.get("retrieval", {}), results.get("readers", {})
    student = retrieval.get("distilled")
    if student is not None and "R@5" in student and student["teacher"] in retrieval:
        teacher = retrieval[student["teacher"]]
        lines.append(
            f"Distilled retriever: {100 * student['R@5'] / max(teacher['R@5'], 1e-9):.1f} % of "
            f"its teacher's ({NAMES[student['teacher']]}) recall@5 ({student['R@5']:.1f} vs "
            f"{teacher['R@5']:.1f}; recall@1 {student['R@1']:.1f} vs {teacher['R@1']:.1f}) at "
            f"{student['queries_per_s'] / teacher['queries_per_s']:.1f}x its queries/s with "
            f"{student['params'] / max(teacher['params'], 1):.2f}x its parameters.")
    if "no knowledge" in readers and "base" in readers:
        lift = readers["base"]["VQA"] - readers["no knowledge"]["VQA"]
        lines.append(f"Retrieved knowledge ({NAMES[results['retriever']]} top facts) vs no "
                     f"knowledge, base reader: {lift:+.1f} VQA accuracy points on "
                     f"{results['val_questions']} val questions.")
    if {"base", "large", "base distilled"} <= set(readers):
        distilled = readers["base distilled"]["VQA"]
        lines.append(f"Base distilled from large: {distilled:.1f} VQA accuracy vs "
                     f"{readers['base']['VQA']:.1f} for base alone and "
                     f"{readers['large']['VQA']:.1f} for large.")
    return lines


def summary(results: dict[str, Any]) -> list[str]:
    parts = (retrieval_table(results), reader_table(results), "\n".join(headline(results)))
    return ["\n\n".join(part for part in parts if part)]


def cost_plot(results: dict[str, Any], paths: RunPaths) -> Path | None:
    """accuracy_vs_cost.png: each retriever's recall@5 against its time per query and its
    parameters (BM25 has none), and each reader's VQA accuracy against its parameters."""
    # retrievers are scored only where the data names gold facts; readers only when trained
    retrievers = {kind: row for kind, row in (results.get("retrieval") or {}).items()
                  if "R@5" in row}
    readers = {name: row for name, row in (results.get("readers") or {}).items()
               if "VQA" in row}
    panels = []
    if retrievers:
        def points(cost) -> list[Point]:
            return [Point(NAMES[kind], cost(row), row["R@5"]) for kind, row in retrievers.items()]
        panels += [Panel("time per query (ms)", "retriever recall@5 (%)",
                         points(lambda row: 1000.0 / row["queries_per_s"])),
                   Panel("retriever parameters", "retriever recall@5 (%)",
                         points(lambda row: row["params"]))]
    if readers:
        panels.append(Panel("reader parameters", "reader VQA accuracy (%)",
                            [Point(name, row["params"], row["VQA"])
                             for name, row in readers.items()]))
    if not panels:
        return None
    return plot_panels(panels, paths.accuracy_vs_cost,
                       f"vldistill run {results['recipe']}: accuracy vs cost")


def report(results: dict[str, Any]) -> str:
    lines = [f"# vldistill kb run: {results['recipe']}", "",
             f"{results['facts']} facts, {results['train_questions']} train / "
             f"{results['val_questions']} val questions, {results['world_size']} process(es).",
             ""]
    if results.get("retrieval"):
        lines += ["## Retrievers", "", retrieval_table(results), ""]
    if results.get("readers"):
        lines += ["## Readers", "", reader_table(results), ""]
    if headline(results):
        lines += ["## Headline", "", *[f"- {line}" for line in headline(results)], ""]
    lines.append(f"wall time: {results['wall_time_s']:.1f} s")
    return "\n".join(lines)
