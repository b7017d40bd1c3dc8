"""Zero-shot classification and image-text retrieval, computed in chunks.

Retrieval counts a hit when a retrieved item has the query's *key* (its caption text): two
images with the same caption are indistinguishable by that caption, so either counts. Recall@k
is the share of queries whose best-scored correct item ranks within the top k, the rank being
the number of wrong items scored at least as high: ties go against the model, so a collapsed
encoder that scores everything alike gets no credit, and a NaN score is a miss.
:func:`naive_recall` is the full-matrix reference the tests compare against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

KS = (1, 5, 10)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)
                  ) -> dict[int, float]:
    """Percent of rows whose label is among the k best-scored classes."""
    ranked = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices
    hits = ranked == labels[:, None]
    return {k: 100.0 * float(hits[:, :k].any(dim=1).float().mean()) for k in ks}


def ranks_of_correct(score_chunk: Callable[[int, int], torch.Tensor], queries: int,
                     query_keys: Sequence, item_keys: Sequence, chunk: int = 256) -> np.ndarray:
    """For each query, how many wrong items score at least as high as its best correct item
    (all of them when that score is NaN).
    ``score_chunk(start, stop)`` gives the scores (stop - start, items) of those queries."""
    item_ids = {key: i for i, key in enumerate(dict.fromkeys(item_keys))}
    items = torch.tensor([item_ids[k] for k in item_keys])
    ranks = np.empty(queries, dtype=np.int64)
    for start in range(0, queries, chunk):
        stop = min(start + chunk, queries)
        scores = score_chunk(start, stop)                                  # (c, items)
        wanted = torch.tensor([item_ids.get(k, -1) for k in query_keys[start:stop]])
        correct = items[None, :] == wanted[:, None]                        # (c, items)
        if not bool(correct.any(dim=1).all()):
            raise ValueError("a retrieval query has no correct item among the candidates")
        best = scores.masked_fill(~correct, float("-inf")).amax(dim=1, keepdim=True)
        beaten = ((scores >= best) | scores.isnan()) & ~correct
        rank = beaten.sum(dim=1)
        rank[best[:, 0].isnan()] = scores.shape[1]
        ranks[start:stop] = rank.numpy()
    return ranks


def recall_at(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[int, float]:
    return {k: 100.0 * float((ranks < k).mean()) for k in ks}


def retrieval(image_text_scores: Callable[[int, int, int, int], torch.Tensor],
              images: int, texts: int, image_keys: Sequence, text_keys: Sequence,
              chunk: int = 256) -> dict[str, float]:
    """Image-to-text and text-to-image recall@1/5/10 (percent). ``image_text_scores(i0, i1,
    t0, t1)`` gives the (i1 - i0, t1 - t0) score block."""
    i2t = ranks_of_correct(lambda a, b: image_text_scores(a, b, 0, texts), images,
                           image_keys, text_keys, chunk)
    t2i = ranks_of_correct(lambda a, b: image_text_scores(0, images, a, b).T, texts,
                           text_keys, image_keys, chunk)
    out = {f"i2t_R@{k}": v for k, v in recall_at(i2t).items()}
    out.update({f"t2i_R@{k}": v for k, v in recall_at(t2i).items()})
    return out


def naive_recall(scores: np.ndarray, query_keys: Sequence, item_keys: Sequence,
                 ks: Sequence[int] = KS) -> dict[int, float]:
    """Reference: sort every row of the full matrix, wrong items first among equal scores;
    the position of the first correct item."""
    keys = np.asarray(item_keys, dtype=object)
    first = []
    for row, key in zip(scores, query_keys):
        correct = keys == key
        order = np.lexsort((correct, -row))          # by score descending, wrong before right
        first.append(int(np.nonzero(correct[order])[0][0]))
    return recall_at(np.asarray(first), ks)
