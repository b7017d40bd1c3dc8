"""Knowledge-based VQA on ShapesWorld (issue 8): the retrieval table and the reader table.

    .venv/bin/python benchmarks/kbvqa.py retrieval [--train-steps 300] [--distil-steps 600]
    .venv/bin/python benchmarks/kbvqa.py reader [--reader-steps 1500]

Retrievers over ShapesWorld's fact knowledge base, scored on the val knowledge questions against
their gold fact ids: BM25 (bm25s), the pretrained MiniLM-L6 sentence encoder with a faiss index,
MiniLM trained DPR-style on the train knowledge questions (in-batch and BM25 hard negatives),
and a 2-layer, 256-wide BERT distilled from MiniLM (embeddings + score KL over every fact). Each with the query
as the question alone, and with the image as text (LaKo turns the image into text; here the
scene's caption) appended. Prints recall@1/5/10, MRR and queries per second (encoding and
search, batches of 64), and the distilled retriever's share of MiniLM's recall@5 and its
encoding speed-up, both measured in this run.

The reader table trains Fusion-in-Decoder T5 readers from scratch on the train knowledge
questions (question, the scene's caption as the image's text, n facts) and scores their greedy
answers on the val knowledge questions (SQuAD exact match and F1, VQA accuracy): the base reader
with no knowledge, with the top-3 facts of BM25, of the pretrained MiniLM and of MiniLM trained
DPR-style, and with the gold fact; the large reader with the trained retriever's facts; and the
base reader distilled from the large one (token-level KD on the answer tokens).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from vldistill.data.facts import KnowledgeBase
from vldistill.data.shapesworld import ShapesWorldSettings, load_shapesworld
from vldistill.eval.retrieval import mean_reciprocal_rank, recall_at_k
from vldistill.jobs.kbvqa.retriever import (
    RetrieverDistillSettings,
    RetrieverTrainSettings,
    distil_retriever,
    small_encoder,
    train_retriever,
)
from vldistill.models.fact_index import BM25Retriever, DenseRetriever
from vldistill.models.sentence_encoders import minilm


def knowledge_queries(split, with_image: bool) -> tuple[list[str], list[tuple[str, ...]]]:
    samples = [s for s in split.samples if s.fact_ids]
    texts = [f"{s.question} {split.captions[s.image_id]}" if with_image else s.question
             for s in samples]
    return texts, [s.fact_ids for s in samples]


def score(retriever, kb: KnowledgeBase, queries, golds) -> dict[str, float]:
    retriever.search(queries[:64], 10)                                   # warm-up
    start = time.perf_counter()
    indices, _ = retriever.search(queries, 10)
    seconds = time.perf_counter() - start
    ranked = [[kb.ids[i] for i in row if i >= 0] for row in indices]
    return {"R@1": recall_at_k(ranked, golds, 1), "R@5": recall_at_k(ranked, golds, 5),
            "R@10": recall_at_k(ranked, golds, 10), "MRR": mean_reciprocal_rank(ranked, golds),
            "q/s": len(queries) / seconds}


def encoding_rate(encoder, texts: list[str], repeats: int = 3) -> float:
    encoder.encode(texts[:64])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        encoder.encode(texts)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best


def contexts(retriever, kb: KnowledgeBase, queries: list[str], n: int) -> list[list[str]]:
    indices, _ = retriever.search(queries, n)
    return [[kb.texts[i] if i >= 0 else None for i in row] for row in indices]


def reader_table(args, world, kb: KnowledgeBase) -> str:
    from vldistill.jobs.kbvqa.reader import ReaderTrainSettings, evaluate_reader, train_reader
    from vldistill.models.fid_reader import FiDReader

    train = [s for s in world.splits["train"].samples if s.fact_ids]
    val = [s for s in world.splits["val"].samples if s.fact_ids]
    captions = {**world.splits["train"].captions, **world.splits["val"].captions}
    query = lambda samples: [f"{s.question} {captions[s.image_id]}" for s in samples]  # noqa
    encoder, trained = minilm(), minilm()
    train_retriever(trained, kb, query(train), [s.fact_ids for s in train],
                    RetrieverTrainSettings(steps=args.train_steps))
    dense = DenseRetriever(kb, encoder)
    dense_trained = DenseRetriever(kb, trained)
    sources = {"no knowledge": lambda samples: [[None] for _ in samples],
               "BM25 top-3": lambda samples: contexts(BM25Retriever(kb), kb, query(samples), 3),
               "MiniLM top-3": lambda samples: contexts(dense, kb, query(samples), 3),
               "trained MiniLM top-3": lambda samples: contexts(dense_trained, kb,
                                                               query(samples), 3),
               "gold fact": lambda samples: [[kb.texts[kb.index[s.fact_ids[0]]]]
                                             for s in samples]}
    built = {name: (fn(train), fn(val)) for name, fn in sources.items()}
    texts = ([s.question for s in train] + list(captions.values()) + kb.texts +
             [a for s in train for a in s.answers] + ["none"])
    settings = ReaderTrainSettings(steps=args.reader_steps)
    sizes = {"base": {"d_model": 64, "layers": 2, "heads": 4},
             "large": {"d_model": 128, "layers": 3, "heads": 4}}
    rows: dict[str, dict[str, float]] = {}

    def run(name: str, size: str, source: str, teacher=None) -> FiDReader:
        reader = FiDReader.from_config(texts, **sizes[size])
        began = time.perf_counter()
        train_reader(reader, train, captions, built[source][0], settings, teacher=teacher)
        rows[name] = {**evaluate_reader(reader, val, captions, built[source][1]),
                      "params": sum(p.numel() for p in reader.parameters()),
                      "train s": time.perf_counter() - began}
        print(f"{name}: {rows[name]}", flush=True)
        return reader

    for source in sources:
        run(f"base, {source}", "base", source)
    large = run("large, trained MiniLM top-3", "large", "trained MiniLM top-3")
    run("base distilled from large, trained MiniLM top-3", "base", "trained MiniLM top-3",
        teacher=large)
    lines = ["| reader | EM | F1 | VQA acc. | params | train s |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {r['EM']:.1f} | {r['F1']:.1f} | {r['VQA']:.1f} | {r['params']:,} | "
              f"{r['train s']:.0f} |" for name, r in rows.items()]
    lift = rows["base, trained MiniLM top-3"]["VQA"] - rows["base, no knowledge"]["VQA"]
    lines.append(f"\nRetrieved knowledge (trained MiniLM top-3) vs no knowledge, base reader: "
                 f"{lift:+.1f} VQA accuracy points on {len(val)} val knowledge questions.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["retrieval", "reader"])
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--distil-steps", type=int, default=1500)
    parser.add_argument("--reader-steps", type=int, default=1000)
    parser.add_argument("--train-images", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=Path("runs/kbvqa"))
    args = parser.parse_args()
    start = time.perf_counter()
    torch.set_num_threads(2)
    world = load_shapesworld(ShapesWorldSettings(train_images=args.train_images))
    kb = KnowledgeBase(world.facts, source="shapesworld")
    for split in world.splits.values():
        kb.check_gold(split.samples)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.part == "reader":
        text = reader_table(args, world, kb)
        (args.out / "reader.md").write_text(text + "\n", encoding="utf-8")
        print(text)
        print(f"benchmark wall time: {time.perf_counter() - start:.0f} s")
        return
    teacher = minilm()
    rows: dict[str, dict[str, float]] = {}
    for with_image in (False, True):
        suffix = " + image as text" if with_image else ""
        queries, golds = knowledge_queries(world.splits["val"], with_image)
        rows[f"BM25{suffix}"] = score(BM25Retriever(kb), kb, queries, golds)
        rows[f"MiniLM{suffix}"] = score(DenseRetriever(kb, teacher), kb, queries, golds)
    queries, golds = knowledge_queries(world.splits["val"], True)
    train_queries, train_golds = knowledge_queries(world.splits["train"], True)
    print(f"{len(queries)} val / {len(train_queries)} train knowledge questions, {len(kb)} facts",
          flush=True)

    trained = minilm()
    train_retriever(trained, kb, train_queries, train_golds,
                    RetrieverTrainSettings(steps=args.train_steps))
    rows["MiniLM trained (DPR) + image as text"] = score(DenseRetriever(kb, trained), kb,
                                                         queries, golds)
    student = small_encoder(hidden=256, layers=2, heads=4)
    # every fact is a candidate: the knowledge base has 32 (RetrieverDistillSettings caps it)
    distil_retriever(student, teacher, kb, train_queries,
                     RetrieverDistillSettings(steps=args.distil_steps, candidates=32))
    rows["small BERT 2x256 distilled + image as text"] = score(DenseRetriever(kb, student), kb,
                                                              queries, golds)
    rate_teacher = encoding_rate(teacher, queries)
    rate_student = encoding_rate(student, queries)

    lines = ["| retriever | R@1 | R@5 | R@10 | MRR | queries/s |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {r['R@1']:.1f} | {r['R@5']:.1f} | {r['R@10']:.1f} | {r['MRR']:.3f} | "
              f"{r['q/s']:,.0f} |" for name, r in rows.items()]
    kept = rows["small BERT 2x256 distilled + image as text"]["R@5"] / \
        rows["MiniLM + image as text"]["R@5"]
    lines.append(f"\nDistilled small retriever: {100 * kept:.1f} % of MiniLM's recall@5, "
                 f"encoding {rate_student:,.0f} vs {rate_teacher:,.0f} queries/s "
                 f"({rate_student / rate_teacher:.1f}x); parameters "
                 f"{sum(p.numel() for p in student.parameters()):,} vs "
                 f"{sum(p.numel() for p in teacher.parameters()):,}.")
    text = "\n".join(lines)
    (args.out / "retrieval.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"benchmark wall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
