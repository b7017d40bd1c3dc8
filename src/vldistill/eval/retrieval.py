"""Retrieval metrics against gold fact ids: recall@k and mean reciprocal rank."""

from __future__ import annotations

from collections.abc import Sequence


def first_gold_rank(ranked: Sequence[str], gold: Sequence[str]) -> int | None:
    """1-based rank of the first gold fact in ``ranked``, None when none is there."""
    golden = set(gold)
    for rank, fact_id in enumerate(ranked, start=1):
        if fact_id in golden:
            return rank
    return None


def recall_at_k(rankings: Sequence[Sequence[str]], golds: Sequence[Sequence[str]],
                k: int) -> float:
    """Share (percent) of queries with a gold fact among their top ``k`` (queries with gold
    facts only)."""
    pairs = [(r, g) for r, g in zip(rankings, golds, strict=True) if g]
    if not pairs:
        raise ValueError("recall@k needs queries with gold fact ids")
    hits = sum(1 for r, g in pairs if (rank := first_gold_rank(r, g)) is not None and rank <= k)
    return 100.0 * hits / len(pairs)


def mean_reciprocal_rank(rankings: Sequence[Sequence[str]], golds: Sequence[Sequence[str]]
                         ) -> float:
    """Mean of 1 / rank of the first gold fact (0 when it is not retrieved), queries with gold
    facts only."""
    pairs = [(r, g) for r, g in zip(rankings, golds, strict=True) if g]
    if not pairs:
        raise ValueError("MRR needs queries with gold fact ids")
    return sum(1.0 / rank if (rank := first_gold_rank(r, g)) else 0.0
               for r, g in pairs) / len(pairs)
