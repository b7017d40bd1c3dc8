"""Top-k teacher logits: what the teacher-output cache stores instead of every logit.

Stored per row: the k largest logits ``v`` (fp16), their class indices, and one fp32 ``fill``,
the logit every other class gets back. It is computed from the full logits when the cache is
built:

    lse  = log sum_j exp(z_j)                              over all C classes
    tail = sum_{j not in top-k} exp(z_j - lse)             probability mass of the other C - k
    fill = lse + log(tail / (C - k))

so the rebuilt dense logits (the k values, ``fill`` everywhere else) give, at temperature 1, the
teacher's exact probabilities on the top k and the exact total on the tail, spread evenly over
its classes. Rebuilding is one ``full`` and one ``scatter``, so the unchanged losses (kd, dkd,
loca) read dense logits at almost no cost. At T != 1 the tail's shape matters more;
``tests/distill/test_topk.py`` and ``benchmarks/kd_cost.py`` bound the gradient error of kd,
dkd and loca against the full logits.
"""

from __future__ import annotations

import torch

# a tail below this is treated as empty: its classes get a logit far below the stored ones
_EMPTY_TAIL = 1e-12
_BELOW = 30.0


def compress_logits(logits: torch.Tensor, k: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, C) logits -> values (N, k) fp16, indices (N, k) int64, fill (N,) fp32.

    ``k`` is capped at C (then the rebuild is exact up to fp16 rounding).
    """
    logits = logits.float()
    classes = logits.shape[-1]
    k = min(k, classes)
    values, indices = logits.topk(k, dim=-1)
    if k == classes:
        return values.half(), indices, values.min(-1).values - _BELOW
    lse = torch.logsumexp(logits, dim=-1)                                     # (N,)
    tail = (1.0 - torch.exp(values - lse[:, None]).sum(-1)).clamp(min=0.0)   # (N,)
    fill = torch.where(tail > _EMPTY_TAIL,
                       lse + torch.log(tail.clamp(min=_EMPTY_TAIL)) - torch.log(
                           torch.tensor(float(classes - k))),
                       values.min(-1).values - _BELOW)
    return values.half(), indices, fill


def expand_logits(values: torch.Tensor, indices: torch.Tensor, fill: torch.Tensor,
                  num_classes: int) -> torch.Tensor:
    """Dense (N, C) float32 logits: the top-k ``values`` at ``indices``, ``fill`` elsewhere."""
    out = fill.float()[:, None].expand(len(values), num_classes).contiguous()
    return out.scatter_(1, indices.long(), values.float())
