"""Top-k teacher logits: what the teacher-output cache stores instead of every logit.

Stored per row: the k largest logits ``v`` (fp16), their class indices, and the row's
log-sum-exp ``lse`` over *all* classes (fp32). That is enough to rebuild dense logits that the
unchanged losses (kd, dkd, loca) can read:

    p_i = exp(v_i - lse)                                   for the k stored classes (exact)
    tail = 1 - sum_i p_i                                   probability mass of the other C - k
    z_j = lse + log(tail / (C - k))                        for every other class j

so at temperature 1 the rebuilt distribution equals the teacher's on the top k, and spreads the
remaining mass uniformly over the tail (the tail's total is exact, its shape is not). At T != 1
the tail's shape matters a little more; ``tests/distill/test_topk.py`` bounds the error of
kd, dkd and loca against the full logits.
"""

from __future__ import annotations

import torch

# a tail below this is treated as empty: its classes get a logit far below the stored ones
_EMPTY_TAIL = 1e-12


def compress_logits(logits: torch.Tensor, k: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, C) logits -> values (N, k) fp16, indices (N, k) int32, lse (N,) fp32.

    ``k`` is capped at C (then the rebuild is exact up to fp16 rounding).
    """
    logits = logits.float()
    k = min(k, logits.shape[-1])
    values, indices = logits.topk(k, dim=-1)
    return values.half(), indices.int(), torch.logsumexp(logits, dim=-1)


def expand_logits(values: torch.Tensor, indices: torch.Tensor, lse: torch.Tensor,
                  num_classes: int) -> torch.Tensor:
    """Dense (N, C) float32 logits from top-k values, their indices and the full lse."""
    values, lse = values.float(), lse.float()
    count, k = values.shape
    if k >= num_classes:
        out = torch.empty(count, num_classes, dtype=torch.float32, device=values.device)
        return out.scatter_(1, indices.long(), values)
    kept = torch.exp(values - lse[:, None]).sum(-1)                           # (N,)
    tail = (1.0 - kept).clamp(min=0.0)
    fill = torch.where(tail > _EMPTY_TAIL, lse + torch.log(tail.clamp(min=_EMPTY_TAIL))
                       - torch.log(torch.tensor(float(num_classes - k))),
                       values.min(-1).values - 30.0)                          # (N,)
    out = fill[:, None].expand(count, num_classes).clone()
    return out.scatter_(1, indices.long(), values)
