"""Knowledge-based VQA: the fact knowledge base, sparse and dense fact retrieval, retrieval
metrics (seed 000, LaKo / EDKA)."""

from vldistill.kb.facts import KnowledgeBase, read_facts, write_facts
from vldistill.kb.metrics import first_gold_rank, mean_reciprocal_rank, recall_at_k

__all__ = ["KnowledgeBase", "first_gold_rank", "mean_reciprocal_rank", "read_facts",
           "recall_at_k", "write_facts"]
