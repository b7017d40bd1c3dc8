"""Retriever training (DPR-style) and retriever distillation, as engine steps.

Training: a query encoder and a fact encoder (shared weights here, as the seed's dense
retriever) score every query against every fact of the batch; the loss is cross-entropy towards
the query's gold fact, the other gold facts of the batch being in-batch negatives, plus hard
negatives: the top BM25 facts that are not gold (Karpukhin et al., "Dense Passage Retrieval",
EMNLP 2020).

Distillation: a small student encoder learns a teacher encoder's space from unlabelled queries
and the facts: embedding distillation (cosine or MSE to the teacher's unit vectors, through a
learned projection when the widths differ) plus KL between the teacher's and the student's
score distributions over each query's retrieved candidates (the teacher's top facts). The
teacher is frozen, so its vectors are computed once before training into an exact teacher
cache (vldistill.kd.sources.RowCache, ``<run>/teacher-cache/retriever/``), and the step reads
them from there. There is no online mode: the candidate lists need every fact's teacher vector
before the first step.

Both train through the engine (:func:`vldistill.train.fit.fit`: Lightning, DDP, resume points,
logs); a batch is row indices into the texts the step holds (:class:`vldistill.data.batches.Rows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vldistill.config import TrainerSettings, TrainSettings
from vldistill.core.hashing import module_fingerprint, tensor_fingerprint
from vldistill.core.runpaths import RunPaths
from vldistill.data.batches import RowCollate, Rows
from vldistill.data.facts import KnowledgeBase
from vldistill.jobs.kbvqa.recipe import RetrieverDistillSettings
from vldistill.kd.sources import RowCache, row_cache, row_fingerprint
from vldistill.models.fact_index import BM25Retriever
from vldistill.models.sentence_encoders import SentenceEncoder, minilm_folder
from vldistill.train.fit import FitResult, fit, mixed_loaders


def hard_negative_ids(kb: KnowledgeBase, queries: Sequence[str], golds: Sequence[Sequence[str]],
                      count: int) -> list[list[int]]:
    """For each query, the ``count`` best BM25 facts that are not gold (fact indices)."""
    if count == 0:
        return [[] for _ in queries]
    indices, _ = BM25Retriever(kb).search(queries, count + max(map(len, golds), default=0))
    out = []
    for row, gold in zip(indices, golds):
        golden = {kb.index[g] for g in gold}
        out.append([int(i) for i in row if i >= 0 and int(i) not in golden][:count])
    return out


def _no_prediction(batch) -> None:
    raise NotImplementedError("retriever training has no in-loop validation; the job scores "
                              "each retriever after training")


class DPRStep(nn.Module):
    """Cross-entropy of each query's scores over the batch's gold facts and hard negatives
    towards its own gold fact (``batch["rows"]``: indices into ``pairs``)."""

    def __init__(self, encoder: SentenceEncoder, kb: KnowledgeBase,
                 pairs: Sequence[tuple[str, int]], negatives: Sequence[Sequence[int]],
                 temperature: float) -> None:
        super().__init__()
        self.student, self.kb, self.pairs = encoder, kb, list(pairs)
        self.negatives, self.temperature = [list(n) for n in negatives], temperature

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        rows = batch["rows"].tolist()
        facts = list(dict.fromkeys([self.pairs[r][1] for r in rows] +
                                   [n for r in rows for n in self.negatives[r]]))
        position = {f: i for i, f in enumerate(facts)}
        queries = self.student([self.pairs[r][0] for r in rows])                   # (B, D)
        encoded = self.student([self.kb.texts[i] for i in facts])                  # (F, D)
        scores = queries @ encoded.T / self.temperature                            # (B, F)
        target = torch.tensor([position[self.pairs[r][1]] for r in rows],
                              device=scores.device)
        loss = F.cross_entropy(scores, target)
        return {"loss": loss, "dpr": loss.detach()}

    def batch_size(self, batch: dict[str, torch.Tensor]) -> int:
        return len(batch["rows"])

    predict = staticmethod(_no_prediction)


def train_retriever(encoder: SentenceEncoder, kb: KnowledgeBase, queries: Sequence[str],
                    golds: Sequence[Sequence[str]], train: TrainSettings, *, paths: RunPaths,
                    trainer: TrainerSettings, temperature: float = 0.05,
                    hard_negatives: int = 2, seed: int = 0, role: str = "retriever-trained",
                    resume: bool = False, stamp: str = "") -> FitResult:
    """DPR training on (query, gold fact) pairs through the engine; the encoder is trained in
    place and left in eval mode."""
    labelled = [(q, list(g)) for q, g in zip(queries, golds) if g]
    if not labelled:
        raise ValueError("retriever training needs queries with gold fact ids")
    pairs = [(q, kb.index[g[0]]) for q, g in labelled]
    # hard negatives exclude every gold fact of the query, not only the one trained towards
    negatives = hard_negative_ids(kb, [q for q, _ in labelled], [g for _, g in labelled],
                                  hard_negatives)
    step = DPRStep(encoder, kb, pairs, negatives, temperature)
    loaders = mixed_loaders(Rows(len(pairs), "rows"), None, RowCollate("rows"), None,
                            batch_size=min(train.batch_size, len(pairs)), transfer_fraction=0.0,
                            seed=seed)
    return fit(step, loaders, None, train, trainer, run_dir=paths.root, role=role,
               resume=resume, stamp=stamp)


class RetrieverKDStep(nn.Module):
    """Embedding distillation (cosine or MSE to the teacher's unit vectors through a learned
    projection) on every text of the batch, plus the KL between the student's and the teacher's
    score distributions over the teacher's top candidate facts for the batch's queries
    (``batch["rows"]``: indices into queries, then facts; the teacher ``source`` answers the
    same rows)."""

    def __init__(self, student: SentenceEncoder, texts: Sequence[str], query_count: int,
                 kb: KnowledgeBase, source: RowCache, candidates: torch.Tensor,
                 settings: RetrieverDistillSettings) -> None:
        super().__init__()
        self.student, self.texts, self.query_count, self.kb = student, list(texts), query_count, kb
        self.teacher = source
        self.projection = nn.Linear(student.dim, source.dim, bias=False)
        self.candidates, self.settings = candidates, settings

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        settings, rows = self.settings, batch["rows"].cpu()
        embedded = self.student([self.texts[r] for r in rows.tolist()])           # (B, D_s)
        device = embedded.device
        projected = F.normalize(self.projection(embedded), dim=-1)
        wanted = self.teacher.teacher_outputs({"rows": rows}).text_embeds.to(device)
        if settings.embedding == "cosine":
            embedding = (1 - (projected * wanted).sum(-1)).mean()
        else:
            embedding = F.mse_loss(projected, wanted)
        terms = {"embedding": embedding}
        loss = settings.embedding_weight * embedding
        query_rows = (rows < self.query_count).nonzero().flatten()
        if settings.score_weight and len(query_rows):
            qs = rows[query_rows]
            cand = self.candidates[qs]                                            # (B_q, k)
            # each distinct candidate fact is encoded once per step
            unique, slots = torch.unique(cand, return_inverse=True)
            s_unique = self.student([self.kb.texts[int(j)] for j in unique])        # (U, D_s)
            s_scores = (embedded[query_rows.to(device), None, :] *
                        s_unique[slots.to(device)]).sum(-1)
            facts = self.teacher.rows(cand.flatten() + self.query_count).view(*cand.shape, -1)
            t_scores = (self.teacher.rows(qs)[:, None, :] * facts).sum(-1).to(device)
            terms["scores"] = F.kl_div(F.log_softmax(s_scores / settings.temperature, -1),
                                       F.log_softmax(t_scores / settings.temperature, -1),
                                       log_target=True, reduction="batchmean")
            loss = loss + settings.score_weight * terms["scores"]
        return {"loss": loss, **{name: value.detach() for name, value in terms.items()}}

    def batch_size(self, batch: dict[str, torch.Tensor]) -> int:
        return len(batch["rows"])

    predict = staticmethod(_no_prediction)


def retriever_teacher_cache(teacher: SentenceEncoder, texts: Sequence[str],
                            directory: Path) -> RowCache:
    """The teacher's unit vectors of ``texts`` (queries, then facts), exact, in ``directory``:
    built when missing or stale (every rank of a distributed run encodes its share)."""
    fingerprint = row_fingerprint(module_fingerprint(teacher), tensor_fingerprint(texts),
                                  "text_embeds", encoder=teacher.name,
                                  max_length=teacher.max_length)
    # one shard holds every text (one encode call, as without a cache) unless there are more
    # than a million; larger sets are split so that several ranks share the work
    return row_cache(directory, fingerprint, len(texts),
                     lambda first, last: teacher.encode(list(texts[first:last])),
                     command="`vldistill run RECIPE` (a stale cache is rebuilt)",
                     shard_rows=1 << 20)


def distil_retriever(student: SentenceEncoder, teacher: SentenceEncoder, kb: KnowledgeBase,
                     queries: Sequence[str], settings: RetrieverDistillSettings, *,
                     paths: RunPaths, trainer: TrainerSettings, seed: int = 0,
                     role: str = "retriever-distilled", resume: bool = False,
                     stamp: str = "") -> FitResult:
    """Teach ``student`` the ``teacher``'s embedding space and rankings from unlabelled queries
    and the facts, through the engine. The projection (student width -> teacher width) is
    learned along and dropped afterwards: retrieval compares student with student."""
    texts = list(queries) + kb.texts
    source = retriever_teacher_cache(teacher, texts, paths.teacher_cache_of("retriever"))
    target = source.all()                                                  # (T, D_t), unit rows
    k = min(settings.candidates, len(kb))
    candidates = (target[:len(queries)] @ target[len(queries):].T).topk(k, dim=1).indices
    step = RetrieverKDStep(student, texts, len(queries), kb, source, candidates, settings)
    loaders = mixed_loaders(Rows(len(texts), "rows"), None, RowCollate("rows"), None,
                            batch_size=min(settings.train.batch_size, len(texts)),
                            transfer_fraction=0.0, seed=seed)
    return fit(step, loaders, None, settings.train, trainer, run_dir=paths.root, role=role,
               resume=resume, stamp=stamp)


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
