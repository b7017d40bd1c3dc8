"""Distillation: loss terms, the distillation step (teacher + student + weighted terms)."""

from vldistill.distill.losses import (LOSSES, CrossEntropyLoss, KDLoss, LossTerm, VQABCELoss,
                                      build_loss, cross_entropy_loss, kd_loss, loss_parameters,
                                      vqa_bce_loss)
from vldistill.distill.step import DistillationStep, WeightedTerm, call_model, freeze

__all__ = ["LOSSES", "CrossEntropyLoss", "DistillationStep", "KDLoss", "LossTerm", "VQABCELoss",
           "WeightedTerm", "build_loss", "call_model", "cross_entropy_loss", "freeze", "kd_loss",
           "loss_parameters", "vqa_bce_loss"]


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
