"""Losses of open-vocabulary distillation: contrastive image-text alignment and the three
ways a student learns from a teacher's image embeddings (CLIP-KD, TinyCLIP, KDEOV).

Every function takes unit vectors or cosine scores and returns a scalar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive(scores: torch.Tensor, caption_ids: torch.Tensor, scale: torch.Tensor
                ) -> torch.Tensor:
    """Symmetric InfoNCE over a batch's (B, B) image-by-caption cosine scores. Images that
    share a caption (equal ``caption_ids``) are all positives of it: the target of each row
    and column spreads evenly over them, so a repeated caption is not a false negative."""
    logits = scale * scores
    same = (caption_ids[:, None] == caption_ids[None, :]).float()             # (B, B)
    image_targets = same / same.sum(dim=1, keepdim=True)
    text_targets = same.T / same.T.sum(dim=1, keepdim=True)
    image_loss = torch.sum(-image_targets * F.log_softmax(logits, dim=1), dim=1).mean()
    text_loss = torch.sum(-text_targets * F.log_softmax(logits.T, dim=1), dim=1).mean()
    return (image_loss + text_loss) / 2


def cosine_distill(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean 1 - cos(student, teacher) of unit embeddings (N, D)."""
    return (1 - (student * teacher).sum(-1)).mean()


def l2_distill(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared L2 distance of unit embeddings (equals 2 * cosine_distill)."""
    return (student - teacher).pow(2).sum(-1).mean()


def affinity_distill(student_scores: torch.Tensor, teacher_scores: torch.Tensor,
                     temperature: float = 0.05) -> torch.Tensor:
    """KL(teacher || student) between each image's softmax over a bank of texts, scores
    (N, M) being cosines; scaled by T^2 so the gradient size does not depend on T."""
    teacher = F.log_softmax(teacher_scores / temperature, dim=-1)
    student = F.log_softmax(student_scores / temperature, dim=-1)
    kl = F.kl_div(student, teacher, log_target=True, reduction="batchmean")
    return kl * temperature ** 2
