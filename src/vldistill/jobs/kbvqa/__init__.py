"""Knowledge-based VQA (``job: kbvqa``): a fact knowledge base, retrievers (BM25, dense,
trained, distilled) and Fusion-in-Decoder readers (base, large, base distilled from large)."""
