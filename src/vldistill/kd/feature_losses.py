"""Feature, contrastive, relational and CLIP-affinity distillation over named model outputs.

A term names the feature it reads (``feature: image_embeds`` in a recipe, where ``name`` is the
term's log name); :func:`select_feature` looks it up in the typed
:class:`~vldistill.models.ModelOutput` (no string paths into module internals). Where the
student's feature is narrower or wider than the teacher's, a learned projector
(``nn.LazyLinear``, created on the first batch) maps it to the teacher's width; call
:meth:`DistillationStep.materialize` before building the optimiser so the projector is in it.

These terms read the teacher but no labels: the distillation step hands them every row.
Softmax / log-softmax in float32; a batch of zero rows gives 0 (differentiable).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vldistill.kd.losses import LOSSES, LossTerm
from vldistill.models.outputs import ModelOutput

OUTPUT_FIELDS = ("logits", "image_embeds", "text_embeds")


class UnknownFeatureError(KeyError, ValueError):
    """A feature name the model does not output; the message lists the ones it does."""

    def __str__(self) -> str:   # KeyError would print the message quoted
        return str(self.args[0])


def available_features(output: ModelOutput) -> list[str]:
    """The feature names ``output`` carries: its non-None fields, then the ``features`` keys."""
    fields = [name for name in OUTPUT_FIELDS if getattr(output, name) is not None]
    return fields + [key for key, value in output.features.items() if value is not None]


def select_feature(output: ModelOutput, name: str) -> torch.Tensor:
    """The tensor called ``name``: "logits", "image_embeds", "text_embeds" or a ``features`` key.

    Raises :class:`UnknownFeatureError` (a KeyError and a ValueError) listing the available names.
    """
    value = getattr(output, name) if name in OUTPUT_FIELDS else output.features.get(name)
    if value is None:
        raise UnknownFeatureError(
            f"the model outputs no feature {name!r}; available: "
            f"{', '.join(available_features(output))}. Set the loss term's `feature` to one "
            "of them.")
    return value


def _empty(student: torch.Tensor) -> torch.Tensor:
    return student.float().sum() * 0.0


def _shape_error(what: str, student: torch.Tensor, teacher: torch.Tensor, why: str) -> ValueError:
    return ValueError(f"{what}: the student's feature {tuple(student.shape)} and the teacher's "
                      f"{tuple(teacher.shape)} cannot be matched: {why}")


def _pool_tokens(tokens: torch.Tensor, size: int) -> torch.Tensor:
    """(N, G, D) -> (N, size, D): 2-D adaptive average pooling when G and size are both square
    (a flattened g x g grid), 1-D over the token axis otherwise."""
    if tokens.shape[1] == size:
        return tokens
    side, target_side = math.isqrt(tokens.shape[1]), math.isqrt(size)
    channels_first = tokens.transpose(1, 2)                                   # (N, D, G)
    if side * side == tokens.shape[1] and target_side * target_side == size:
        grid = channels_first.reshape(*channels_first.shape[:2], side, side)  # (N, D, g, g)
        return F.adaptive_avg_pool2d(grid, target_side).flatten(2).transpose(1, 2)
    return F.adaptive_avg_pool1d(channels_first, size).transpose(1, 2)


def match_spatial(student: torch.Tensor, teacher: torch.Tensor,
                  what: str = "feature") -> tuple[torch.Tensor, torch.Tensor]:
    """Pool the finer of two features to the coarser one's spatial size.

    (N, D): nothing to pool (pass one value per row as (N, 1)). (N, G, D) token grids: pooled
    to min(G_s, G_t) tokens (see :func:`_pool_tokens`). (N, C, H, W) maps: adaptive average
    pooling to (min H, min W). The batch size and the rank must agree, and other ranks must
    already have equal shapes except the feature axis; otherwise a ValueError names both shapes.
    """
    if (student.dim() != teacher.dim() or student.dim() < 2
            or student.shape[0] != teacher.shape[0]):
        raise _shape_error(what, student, teacher, "the batch size and the number of dimensions "
                           "must agree (a projector maps the feature width, pooling the spatial "
                           "size). Pick a feature both models output per example.")
    if student.dim() == 3 and student.shape[1] != teacher.shape[1]:
        size = min(student.shape[1], teacher.shape[1])
        return _pool_tokens(student, size), _pool_tokens(teacher, size)
    if student.dim() == 4 and student.shape[2:] != teacher.shape[2:]:
        size = (min(student.shape[2], teacher.shape[2]), min(student.shape[3], teacher.shape[3]))
        return F.adaptive_avg_pool2d(student, size), F.adaptive_avg_pool2d(teacher, size)
    if student.dim() not in (2, 3, 4) and student.shape[1:-1] != teacher.shape[1:-1]:
        raise _shape_error(what, student, teacher, "only (N, D), (N, G, D) and (N, C, H, W) "
                           "features are pooled.")
    return student, teacher


def feature_axis(feature: torch.Tensor) -> int:
    """The axis a projector maps: channels (1) of (N, C, H, W) maps, the last axis otherwise."""
    return 1 if feature.dim() == 4 else -1


def hint_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    """FitNet hint loss between features of equal shape (after projection and pooling).

    Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015).
        l2:        mean_elements (s - t)^2
        smooth_l1: mean_elements huber_1(s - t)   (0.5 d^2 if |d| < 1 else |d| - 0.5)
        cosine:    mean_positions (1 - cos(s, t)), cosine along the feature axis
    student, teacher: (N, ...) of one shape. Returns a scalar; 0 when N == 0.
    """
    if student.shape != teacher.shape:
        raise _shape_error("hint_loss", student, teacher, "project and pool them first.")
    if student.shape[0] == 0:
        return _empty(student)
    student, teacher = student.float(), teacher.float()
    if kind == "l2":
        return F.mse_loss(student, teacher)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(student, teacher, beta=1.0)
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(student, teacher, dim=feature_axis(student))).mean()
    raise ValueError(f"unknown hint loss kind {kind!r}; valid: {', '.join(HINT_KINDS)}")


HINT_KINDS = ("l2", "smooth_l1", "cosine")


def info_nce_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 0.1,
                  negatives: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE: each student row must pick its own teacher row among the other rows (and a queue).

    Oord et al. 2018; used for distillation by Tian et al., "Contrastive Representation
    Distillation" (ICLR 2020). With s, t L2-normalised and bank B = [t; negatives]:
        loss = mean_i -log( exp(s_i . t_i / tau) / sum_j exp(s_i . B_j / tau) )
    Bank rows equal to t_i other than t_i itself (several questions about one image share its
    embedding) are not counted as negatives.
    student, teacher: (N, D); negatives: (Q, D) or None. Returns a scalar; 0 when N == 0.
    """
    if student.shape != teacher.shape or student.dim() != 2:
        raise _shape_error("info_nce_loss", student, teacher, "both must be (N, D).")
    if student.shape[0] == 0:
        return _empty(student)
    student = F.normalize(student.float(), dim=-1)                            # (N, D)
    teacher = F.normalize(teacher.float(), dim=-1)
    bank = teacher if negatives is None else torch.cat(
        [teacher, F.normalize(negatives.float(), dim=-1)])                    # (N + Q, D)
    logits = student @ bank.T / temperature                                   # (N, N + Q)
    rows = torch.arange(student.shape[0], device=student.device)
    duplicate = (teacher @ bank.T) >= 1.0 - 1e-6                              # (N, N + Q)
    duplicate[rows, rows] = False
    return F.cross_entropy(logits.masked_fill(duplicate, float("-inf")), rows)


def _distances(x: torch.Tensor) -> torch.Tensor:
    """(N, D) -> (N, N) Euclidean distances, 0 on the diagonal (safe gradient at 0)."""
    squared_norms = x.pow(2).sum(dim=-1)
    squared = squared_norms[:, None] + squared_norms[None, :] - 2.0 * x @ x.T
    off_diagonal = 1.0 - torch.eye(x.shape[0], device=x.device, dtype=x.dtype)
    return squared.clamp(min=1e-12).sqrt() * off_diagonal


def _relational_inputs(what: str, student: torch.Tensor,
                       teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if student.shape[0] != teacher.shape[0]:
        raise _shape_error(what, student, teacher, "relational losses compare the same N rows, "
                           "so the batch sizes must agree (the widths may differ).")
    return student.float().flatten(1), teacher.float().flatten(1)              # (N, D_s), (N, D_t)


def rkd_distance_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD distance: smooth-L1 between the mean-normalised pairwise distances of the two batches.

    Park, Kim, Lu, Cho, "Relational Knowledge Distillation" (CVPR 2019):
        psi(x_i, x_j) = ||x_i - x_j|| / mu,  mu = mean_{i != j} ||x_i - x_j||
        loss = mean_{i, j} huber_1(psi_S(i, j) - psi_T(i, j))   (over all N^2 pairs)
    Invariant to scaling either batch. student: (N, ...); teacher: (N, ...), widths may differ
    (flattened per row). Returns a scalar; 0 when N == 0.
    """
    student, teacher = _relational_inputs("rkd_distance_loss", student, teacher)
    if student.shape[0] == 0:
        return _empty(student)

    def normalised(x: torch.Tensor) -> torch.Tensor:
        distances = _distances(x)
        mean = distances.sum() / (distances > 0).sum().clamp(min=1)
        return distances / mean.clamp(min=1e-12)
    return F.smooth_l1_loss(normalised(student), normalised(teacher), beta=1.0)


def rkd_angle_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD angle: smooth-L1 between the cosines of all angles formed by triplets of rows.

    Park et al. (CVPR 2019): psi(x_i, x_j, x_k) = <e_ji, e_jk>, e_ji = (x_i - x_j) / ||x_i - x_j||
    (0 when i == j); loss = mean over all N^3 triplets of huber_1(psi_S - psi_T).
    student: (N, ...); teacher: (N, ...), widths may differ. Returns a scalar; 0 when N == 0.
    """
    student, teacher = _relational_inputs("rkd_angle_loss", student, teacher)
    if student.shape[0] == 0:
        return _empty(student)

    def angles(x: torch.Tensor) -> torch.Tensor:                              # (N, N, N)
        directions = F.normalize(x[None, :, :] - x[:, None, :], dim=-1)       # [j, i] = e_ji
        return directions @ directions.transpose(1, 2)
    return F.smooth_l1_loss(angles(student), angles(teacher), beta=1.0)


def similarity_preserving_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Similarity-preserving KD: the two batches' row-normalised Gram matrices should agree.

    Tung & Mori, "Similarity-Preserving Knowledge Distillation" (ICCV 2019), Eq. 4:
        G = F F^T (N, N),  G~ = G / ||G||_row (each row L2-normalised)
        loss = ||G~_T - G~_S||_F^2 / N^2
    student: (N, ...); teacher: (N, ...), widths may differ. Returns a scalar; 0 when N == 0.
    """
    student, teacher = _relational_inputs("similarity_preserving_loss", student, teacher)
    if student.shape[0] == 0:
        return _empty(student)
    gram_student = F.normalize(student @ student.T, dim=-1)                   # (N, N)
    gram_teacher = F.normalize(teacher @ teacher.T, dim=-1)
    return (gram_teacher - gram_student).pow(2).sum() / student.shape[0] ** 2


RELATIONAL_KINDS = {"rkd_distance": rkd_distance_loss, "rkd_angle": rkd_angle_loss,
                    "similarity": similarity_preserving_loss}


def clip_affinity_loss(student_image: torch.Tensor, student_text: torch.Tensor,
                       teacher_image: torch.Tensor, teacher_text: torch.Tensor,
                       temperature: float = 0.07) -> torch.Tensor:
    """MobileCLIP's distillation term: match the image-text similarity distributions, both ways.

    Vasu et al., "MobileCLIP" (CVPR 2024), the distillation part of the DR loss. With L2-normalised
    embeddings, S = img @ txt^T / tau (N, N) for student and teacher:
        loss = 1/2 [ mean_i KL(softmax(S_T)_i || softmax(S_S)_i)
                   + mean_j KL(softmax(S_T^T)_j || softmax(S_S^T)_j) ]
    KL is the cross-entropy between the teacher's and the student's distributions minus the
    teacher's entropy (a constant in the student): same gradient, and 0 when they agree.
    student_image, student_text: (N, D_s); teacher_image, teacher_text: (N, D_t).
    Returns a scalar; 0 when N == 0.
    """
    rows = {student_image.shape[0], student_text.shape[0], teacher_image.shape[0],
            teacher_text.shape[0]}
    if len(rows) != 1:
        raise ValueError(f"clip_affinity_loss: image and text embeddings of student "
                         f"{tuple(student_image.shape)}, {tuple(student_text.shape)} and teacher "
                         f"{tuple(teacher_image.shape)}, {tuple(teacher_text.shape)} must have "
                         "the same number of rows N (paired image-text examples).")
    if student_image.shape[0] == 0:
        return _empty(student_image) + _empty(student_text)

    def log_affinities(image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = F.normalize(image.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T / \
            temperature                                                       # (N, N)
        return F.log_softmax(logits, dim=-1), F.log_softmax(logits.T, dim=-1)

    student_i2t, student_t2i = log_affinities(student_image, student_text)
    teacher_i2t, teacher_t2i = log_affinities(teacher_image, teacher_text)

    def kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        return (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()
    return 0.5 * (kl(teacher_i2t, student_i2t) + kl(teacher_t2i, student_t2i))


class ProjectedTerm(LossTerm):
    """A teacher term with a lazily created projector from the student's to the teacher's width
    (``nn.LazyLinear``; none, i.e. the identity, while the widths agree)."""

    needs_teacher = True

    def __init__(self) -> None:
        super().__init__()
        self.projector: nn.Module | None = None
        # follows .to(device), so a projector recreated from a checkpoint lands on the right device
        self.register_buffer("_device_anchor", torch.empty(0), persistent=False)

    def project(self, student: torch.Tensor, teacher_width: int, axis: int) -> torch.Tensor:
        """Map ``student``'s ``axis`` to ``teacher_width`` (float32 in, as the losses compute)."""
        student = student.float()
        if self.projector is None:
            if student.shape[axis] == teacher_width:
                return student
            self.projector = nn.LazyLinear(teacher_width, device=student.device)
        return self.projector(student.movedim(axis, -1)).movedim(-1, axis)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A checkpoint saved after the projector existed: recreate it before loading into it.
        weight = state_dict.get(prefix + "projector.weight")
        if self.projector is None and weight is not None:
            self.projector = nn.LazyLinear(weight.shape[0], device=self._device_anchor.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _check_choice(term: str, field: str, value: str, valid) -> None:
    if value not in valid:
        raise ValueError(f"{term} {field} {value!r} is not one of: {', '.join(valid)}")


def _check_temperature(term: str, temperature: float) -> None:
    if temperature <= 0:
        raise ValueError(f"{term} temperature must be > 0, got {temperature}")


@LOSSES.register("feature")
class FeatureLoss(ProjectedTerm):
    """FitNet hint on a named feature: project the width, pool the grid, :func:`hint_loss`."""

    def __init__(self, feature: str = "image_embeds", kind: str = "l2") -> None:
        super().__init__()
        _check_choice("feature", "kind", kind, HINT_KINDS)
        self.feature, self.kind = feature, kind

    def teacher_fields(self) -> tuple[str, ...]:
        return (self.feature,)

    def forward(self, student, teacher, targets):
        student_feature = select_feature(student, self.feature)
        teacher_feature = select_feature(teacher, self.feature)
        if student_feature.dim() == 1:                                       # (N,) -> (N, 1)
            student_feature, teacher_feature = student_feature[:, None], teacher_feature[:, None]
        student_feature, teacher_feature = match_spatial(student_feature, teacher_feature,
                                                         f"feature {self.feature!r}")
        axis = feature_axis(teacher_feature)
        projected = self.project(student_feature, teacher_feature.shape[axis], axis)
        return hint_loss(projected, teacher_feature, self.kind)


@LOSSES.register("contrastive")
class ContrastiveLoss(ProjectedTerm):
    """CRD-style InfoNCE on a named embedding (:func:`info_nce_loss`), with an optional FIFO
    queue of the last ``queue_size`` teacher embeddings as extra negatives (filled in training
    mode only)."""

    def __init__(self, feature: str = "image_embeds", temperature: float = 0.1,
                 queue_size: int = 0) -> None:
        super().__init__()
        _check_temperature("contrastive", temperature)
        if queue_size < 0 or int(queue_size) != queue_size:
            raise ValueError(f"contrastive queue_size must be an integer >= 0, got {queue_size}")
        self.feature, self.temperature, self.queue_size = feature, temperature, int(queue_size)
        self.register_buffer("queue", torch.zeros(0, 0), persistent=False)   # (Q, D_t)

    def teacher_fields(self) -> tuple[str, ...]:
        return (self.feature,)

    def forward(self, student, teacher, targets):
        student_embeds = select_feature(student, self.feature).flatten(1)          # (N, D_s)
        teacher_embeds = select_feature(teacher, self.feature).flatten(1).float()  # (N, D_t)
        if student_embeds.shape[0] != teacher_embeds.shape[0]:
            raise _shape_error(f"contrastive {self.feature!r}", student_embeds, teacher_embeds,
                               "InfoNCE pairs the same N rows; the batch sizes must agree.")
        projected = self.project(student_embeds, teacher_embeds.shape[1], -1)
        negatives = self.queue if self.queue.numel() else None
        loss = info_nce_loss(projected, teacher_embeds, self.temperature, negatives)
        if self.training and self.queue_size:
            newest = F.normalize(teacher_embeds.detach(), dim=-1)
            self.queue = torch.cat([newest, self.queue.to(newest)])[:self.queue_size] \
                if self.queue.numel() else newest[:self.queue_size]
        return loss


@LOSSES.register("relational")
class RelationalLoss(LossTerm):
    """Relations between the rows of a named feature: RKD distance or angle, or
    similarity-preserving (see :data:`RELATIONAL_KINDS`). No projector: widths may differ."""

    needs_teacher = True

    def __init__(self, feature: str = "image_embeds", kind: str = "rkd_distance") -> None:
        super().__init__()
        _check_choice("relational", "kind", kind, tuple(RELATIONAL_KINDS))
        self.feature, self.kind = feature, kind

    def teacher_fields(self) -> tuple[str, ...]:
        return (self.feature,)

    def forward(self, student, teacher, targets):
        return RELATIONAL_KINDS[self.kind](select_feature(student, self.feature),
                                           select_feature(teacher, self.feature))


@LOSSES.register("clip_affinity")
class CLIPAffinityLoss(LossTerm):
    """MobileCLIP-style image-text affinity distillation: :func:`clip_affinity_loss` over
    ``image_embeds`` and ``text_embeds``."""

    needs_teacher = True

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        _check_temperature("clip_affinity", temperature)
        self.temperature = temperature

    def teacher_fields(self) -> tuple[str, ...]:
        return ("image_embeds", "text_embeds")

    def forward(self, student, teacher, targets):
        return clip_affinity_loss(
            select_feature(student, "image_embeds"), select_feature(student, "text_embeds"),
            select_feature(teacher, "image_embeds"), select_feature(teacher, "text_embeds"),
            self.temperature)
