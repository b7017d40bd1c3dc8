"""Knowledge distillation: loss terms, the distillation step (teacher + student + weighted
terms) and the teacher-output cache."""

# Importing these modules registers their terms in LOSSES (dkd, loca; feature, contrastive,
# relational, clip_affinity; answer_token_ce, answer_token_kd). They import losses.py, so losses.py cannot import them.
from vldistill.kd.feature_losses import (
                                      CLIPAffinityLoss,
                                      ContrastiveLoss,
                                      FeatureLoss,
                                      RelationalLoss,
                                      UnknownFeatureError,
                                      available_features,
                                      clip_affinity_loss,
                                      hint_loss,
                                      info_nce_loss,
                                      rkd_angle_loss,
                                      rkd_distance_loss,
                                      select_feature,
                                      similarity_preserving_loss,
)
from vldistill.kd.logit_losses import (
                                      DKDLoss,
                                      LoCaLoss,
                                      dkd_loss,
                                      dkd_parts,
                                      hard_targets,
                                      loca_calibrate,
                                      loca_loss,
)
from vldistill.kd.losses import (
                                      LOSSES,
                                      CrossEntropyLoss,
                                      KDLoss,
                                      LossTerm,
                                      VQABCELoss,
                                      build_loss,
                                      cross_entropy_loss,
                                      kd_loss,
                                      loss_parameters,
                                      vqa_bce_loss,
)
from vldistill.kd.sources import OnlineTeacher, TeacherSource, as_source, freeze
from vldistill.kd.step import DistillationStep, WeightedTerm
from vldistill.kd.token_losses import AnswerTokenCELoss, AnswerTokenKDLoss, token_kd_loss
from vldistill.models.outputs import call_model

__all__ = ["LOSSES", "AnswerTokenCELoss", "AnswerTokenKDLoss", "CLIPAffinityLoss", "ContrastiveLoss", "CrossEntropyLoss", "DKDLoss",
           "DistillationStep", "FeatureLoss", "OnlineTeacher", "TeacherSource", "as_source", "KDLoss", "LoCaLoss", "LossTerm", "RelationalLoss",
           "UnknownFeatureError", "VQABCELoss", "WeightedTerm", "available_features",
           "build_loss", "call_model", "clip_affinity_loss", "cross_entropy_loss", "dkd_loss",
           "dkd_parts", "freeze", "hard_targets", "hint_loss", "info_nce_loss", "kd_loss",
           "loca_calibrate", "loca_loss", "loss_parameters", "rkd_angle_loss",
           "rkd_distance_loss", "select_feature", "similarity_preserving_loss", "token_kd_loss",
           "vqa_bce_loss"]
