"""Distillation: loss terms, the distillation step (teacher + student + weighted terms)."""

from vldistill.distill.losses import (LOSSES, CrossEntropyLoss, KDLoss, LossTerm, VQABCELoss,
                                      build_loss, cross_entropy_loss, kd_loss, loss_parameters,
                                      vqa_bce_loss)
from vldistill.distill.step import DistillationStep, WeightedTerm, call_model, freeze

# Importing these modules registers their terms in LOSSES (dkd, loca; feature, contrastive,
# relational, clip_affinity; answer_token_ce, answer_token_kd). They import losses.py, so losses.py cannot import them.
from vldistill.distill.feature_losses import (CLIPAffinityLoss, ContrastiveLoss, FeatureLoss,
                                              RelationalLoss, UnknownFeatureError,
                                              available_features, clip_affinity_loss,
                                              hint_loss, info_nce_loss, rkd_angle_loss,
                                              rkd_distance_loss, select_feature,
                                              similarity_preserving_loss)
from vldistill.distill.logit_losses import (DKDLoss, LoCaLoss, dkd_loss, dkd_parts, hard_targets,
                                            loca_calibrate, loca_loss)
from vldistill.distill.token_losses import AnswerTokenCELoss, AnswerTokenKDLoss, token_kd_loss

__all__ = ["LOSSES", "AnswerTokenCELoss", "AnswerTokenKDLoss", "CLIPAffinityLoss", "ContrastiveLoss", "CrossEntropyLoss", "DKDLoss",
           "DistillationStep", "FeatureLoss", "KDLoss", "LoCaLoss", "LossTerm", "RelationalLoss",
           "UnknownFeatureError", "VQABCELoss", "WeightedTerm", "available_features",
           "build_loss", "call_model", "clip_affinity_loss", "cross_entropy_loss", "dkd_loss",
           "dkd_parts", "freeze", "hard_targets", "hint_loss", "info_nce_loss", "kd_loss",
           "loca_calibrate", "loca_loss", "loss_parameters", "rkd_angle_loss",
           "rkd_distance_loss", "select_feature", "similarity_preserving_loss", "token_kd_loss",
           "vqa_bce_loss"]


# `vldistill.distill` is both this package (losses, step) and the one-call Python API
# `vldistill.distill(teacher=..., student=..., train=...)` that the docs promise. Python sets
# `vldistill.distill` to this module whenever a submodule is imported, so a plain function of
# that name in vldistill/__init__.py would be overwritten; making the module callable keeps both
# spellings working. The API itself lives in vldistill.api (imported on call: it needs Lightning).
import sys as _sys
import types as _types


class _CallableModule(_types.ModuleType):
    def __call__(self, *args, **kwargs):
        from vldistill.api import distill

        return distill(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
