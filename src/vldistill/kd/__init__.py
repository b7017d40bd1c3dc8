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

__all__ = ["LOSSES", "AnswerTokenCELoss", "AnswerTokenKDLoss", "as_source", "available_features",
           "build_loss", "call_model", "clip_affinity_loss", "CLIPAffinityLoss",
           "ContrastiveLoss", "cross_entropy_loss", "CrossEntropyLoss", "DistillationStep",
           "dkd_loss", "dkd_parts", "DKDLoss", "FeatureLoss", "freeze", "hard_targets",
           "hint_loss", "info_nce_loss", "kd_loss", "KDLoss", "loca_calibrate", "loca_loss",
           "LoCaLoss", "loss_parameters", "LossTerm", "OnlineTeacher", "RelationalLoss",
           "rkd_angle_loss", "rkd_distance_loss", "select_feature", "similarity_preserving_loss",
           "TeacherSource", "token_kd_loss", "UnknownFeatureError", "vqa_bce_loss", "VQABCELoss",
           "WeightedTerm"]
