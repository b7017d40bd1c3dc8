"""Retriever training (DPR-style) and retriever distillation.

Training: a query encoder and a fact encoder (shared weights here, as the seed's dense
retriever) score every query against every fact of the batch; the loss is cross-entropy towards
the query's gold fact, the other gold facts of the batch being in-batch negatives, plus hard
negatives: the top BM25 facts that are not gold (Karpukhin et al., "Dense Passage Retrieval",
EMNLP 2020).

Distillation: a small student encoder learns a teacher encoder's space from unlabelled queries
and the facts: embedding distillation (cosine or MSE to the teacher's unit vectors, through a
learned projection when the widths differ) plus KL between the teacher's and the student's
score distributions over each query's retrieved candidates (the teacher's top facts).

These loops are a few lines over two text encoders and a fact list; the VQA trainer
(vldistill.train.fit) is built around image batches and answer heads, so they are kept plain
PyTorch (seeded, progress bar, no Lightning features needed at this size).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vldistill.data.facts import KnowledgeBase
from vldistill.models.fact_index import BM25Retriever
from vldistill.models.sentence_encoders import SentenceEncoder, minilm_folder
from vldistill.train.loop import run_steps


@dataclass
class RetrieverTrainSettings:
    steps: int = 300
    batch_size: int = 32
    lr: float = 2e-5
    temperature: float = 0.05         # scores are cosines; 1/T sharpens them
    hard_negatives: int = 2           # BM25 facts per query that are not gold
    seed: int = 0


def hard_negative_ids(kb: KnowledgeBase, queries: Sequence[str], golds: Sequence[Sequence[str]],
                      count: int) -> list[list[int]]:
    """For each query, the ``count`` best BM25 facts that are not gold (fact indices)."""

    indices, _ = BM25Retriever(kb).search(queries, count + max(map(len, golds), default=0))
    out = []
    for row, gold in zip(indices, golds):
        golden = {kb.index[g] for g in gold}
        out.append([int(i) for i in row if i >= 0 and int(i) not in golden][:count])
    return out


def train_retriever(encoder: SentenceEncoder, kb: KnowledgeBase, queries: Sequence[str],
                    golds: Sequence[Sequence[str]], settings: RetrieverTrainSettings,
                    progress: bool = True) -> list[float]:
    """DPR training on (query, gold fact) pairs; returns the loss per step."""
    labelled = [(q, list(g)) for q, g in zip(queries, golds) if g]
    if not labelled:
        raise ValueError("retriever training needs queries with gold fact ids")
    pairs = [(q, kb.index[g[0]]) for q, g in labelled]
    # hard negatives exclude every gold fact of the query, not only the one trained towards
    negatives = hard_negative_ids(kb, [q for q, _ in labelled], [g for _, g in labelled],
                                  settings.hard_negatives)
    def step_loss(rows: np.ndarray) -> torch.Tensor:
        facts = list(dict.fromkeys([pairs[r][1] for r in rows] +
                                   [n for r in rows for n in negatives[r]]))
        position = {f: i for i, f in enumerate(facts)}
        q = encoder([pairs[r][0] for r in rows])                            # (B, D)
        f = encoder([kb.texts[i] for i in facts])                            # (F, D)
        scores = q @ f.T / settings.temperature                              # (B, F)
        target = torch.tensor([position[pairs[r][1]] for r in rows])
        return F.cross_entropy(scores, target)

    encoder.train()
    losses = run_steps(encoder.parameters(), steps=settings.steps,
                       batch_size=settings.batch_size, population=len(pairs), lr=settings.lr,
                       seed=settings.seed, what="retriever training", progress=progress,
                       step_loss=step_loss)
    encoder.eval()
    return losses


@dataclass
class RetrieverDistillSettings:
    steps: int = 600
    batch_size: int = 64
    lr: float = 5e-4
    embedding: str = "cosine"         # cosine | mse, to the teacher's unit vectors
    embedding_weight: float = 1.0
    score_weight: float = 1.0         # KL over the teacher's top candidates
    candidates: int = 8
    temperature: float = 0.05
    seed: int = 0


def distil_retriever(student: SentenceEncoder, teacher: SentenceEncoder, kb: KnowledgeBase,
                     queries: Sequence[str], settings: RetrieverDistillSettings,
                     progress: bool = True) -> list[float]:
    """Teach ``student`` the ``teacher``'s embedding space and rankings from unlabelled queries
    and the facts; returns the loss per step. The projection (student width -> teacher width)
    is learned along and dropped afterwards: retrieval compares student with student."""
    if settings.embedding not in ("cosine", "mse"):
        raise ValueError(f"embedding distillation {settings.embedding!r} is not cosine or mse")
    texts = list(queries) + kb.texts
    target = torch.from_numpy(teacher.encode(texts))                       # (T, D_t)
    facts_t = target[len(queries):]
    k = min(settings.candidates, len(kb))
    candidates = (target[:len(queries)] @ facts_t.T).topk(k, dim=1).indices   # (Q, k)
    projection = nn.Linear(student.dim, target.shape[1], bias=False)
    def step_loss(rows: np.ndarray) -> torch.Tensor:
        embedded = student([texts[r] for r in rows])                          # (B, D_s)
        projected = F.normalize(projection(embedded), dim=-1)
        wanted = target[torch.from_numpy(rows)]
        if settings.embedding == "cosine":
            loss = settings.embedding_weight * (1 - (projected * wanted).sum(-1)).mean()
        else:
            loss = settings.embedding_weight * F.mse_loss(projected, wanted)
        query_rows = [i for i, r in enumerate(rows) if r < len(queries)]
        if settings.score_weight and query_rows:
            qs = [int(rows[i]) for i in query_rows]
            cand = candidates[qs]                                               # (B_q, k)
            # each distinct candidate fact is encoded once per step
            unique, slots = torch.unique(cand, return_inverse=True)
            s_unique = student([kb.texts[int(j)] for j in unique])                # (U, D_s)
            s_facts = s_unique[slots]                                             # (B_q, k, D_s)
            s_scores = (embedded[query_rows, None, :] * s_facts).sum(-1)
            t_scores = (target[qs, None, :] * facts_t[cand]).sum(-1)
            loss = loss + settings.score_weight * F.kl_div(
                F.log_softmax(s_scores / settings.temperature, -1),
                F.log_softmax(t_scores / settings.temperature, -1),
                log_target=True, reduction="batchmean")
        return loss

    student.train()
    losses = run_steps([*student.parameters(), *projection.parameters()],
                       steps=settings.steps, batch_size=settings.batch_size,
                       population=len(texts), lr=settings.lr, seed=settings.seed,
                       what="retriever distillation", progress=progress, step_loss=step_loss)
    student.eval()
    return losses


def small_encoder(hidden: int = 128, layers: int = 2, heads: int = 2, max_length: int = 64,
                  seed: int = 0) -> SentenceEncoder:
    """A few-layer BERT built from a transformers config, with MiniLM's tokenizer (so it reads
    the same word pieces as its teacher)."""
    from transformers import AutoTokenizer, BertConfig, BertModel


    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(minilm_folder())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden,
                        num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=4 * hidden, max_position_embeddings=max(64, max_length))
    return SentenceEncoder(BertModel(config), tokenizer, max_length,
                           name=f"bert-{layers}x{hidden}")
