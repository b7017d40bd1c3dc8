"""Knowledge-based VQA on ShapesWorld (issue 8), the retrieval table.

    .venv/bin/python benchmarks/kbvqa.py [--train-steps 300] [--distil-steps 600]

Retrievers over ShapesWorld's fact knowledge base, scored on the val knowledge questions against
their gold fact ids: BM25 (bm25s), the pretrained MiniLM-L6 sentence encoder with a faiss index,
MiniLM trained DPR-style on the train knowledge questions (in-batch and BM25 hard negatives),
and a 2-layer, 128-wide BERT distilled from MiniLM (embeddings + score KL). Each with the query
as the question alone, and with the image as text (LaKo turns the image into text; here the
scene's caption) appended. Prints recall@1/5/10, MRR and queries per second (encoding and
search, batches of 64), and the distilled retriever's share of MiniLM's recall@5 and its
encoding speed-up, both measured in this run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from vldistill.data.shapesworld import ShapesWorldSettings, load_shapesworld
from vldistill.kb.encoders import minilm
from vldistill.kb.facts import KnowledgeBase
from vldistill.kb.index import BM25Retriever, DenseRetriever
from vldistill.kb.metrics import mean_reciprocal_rank, recall_at_k
from vldistill.kb.train import (RetrieverDistillSettings, RetrieverTrainSettings,
                                distil_retriever, small_encoder, train_retriever)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--distil-steps", type=int, default=600)
    parser.add_argument("--train-images", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=Path("runs/kbvqa"))
    args = parser.parse_args()
    start = time.perf_counter()
    torch.set_num_threads(2)
    world = load_shapesworld(ShapesWorldSettings(train_images=args.train_images))
    kb = KnowledgeBase(world.facts, source="shapesworld")
    for split in world.splits.values():
        kb.check_gold(split.samples)
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
    student = small_encoder()
    distil_retriever(student, teacher, kb, train_queries,
                     RetrieverDistillSettings(steps=args.distil_steps))
    rows["small BERT 2x128 distilled + image as text"] = score(DenseRetriever(kb, student), kb,
                                                              queries, golds)
    rate_teacher = encoding_rate(teacher, queries)
    rate_student = encoding_rate(student, queries)

    lines = ["| retriever | R@1 | R@5 | R@10 | MRR | queries/s |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {r['R@1']:.1f} | {r['R@5']:.1f} | {r['R@10']:.1f} | {r['MRR']:.3f} | "
              f"{r['q/s']:,.0f} |" for name, r in rows.items()]
    kept = rows["small BERT 2x128 distilled + image as text"]["R@5"] / \
        rows["MiniLM + image as text"]["R@5"]
    lines.append(f"\nDistilled small retriever: {100 * kept:.1f} % of MiniLM's recall@5, "
                 f"encoding {rate_student:,.0f} vs {rate_teacher:,.0f} queries/s "
                 f"({rate_student / rate_teacher:.1f}x); parameters "
                 f"{sum(p.numel() for p in student.parameters()):,} vs "
                 f"{sum(p.numel() for p in teacher.parameters()):,}.")
    text = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "retrieval.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"benchmark wall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
