"""The Python API: ``vldistill.distill(teacher=..., student=..., train=..., ...)``.

Bring any pair of ``nn.Module``s that return a :class:`vldistill.models.ModelOutput` (or plain
logits). Two data shapes are understood:

* image classification: ``(images, labels)`` tensors, a :class:`ClassificationDataset`, or a
  path to an image folder (``root/<class>/<image>``); metric: top-1 accuracy;
* VQA: a :class:`vldistill.data.batches.VQAImageDataset` (models called with images,
  question_tokens, question_lengths, image_index); metric: official VQA accuracy.

``transfer`` is an optional unlabelled set (images, or a VQA dataset built with
``labelled=False``) on which only the distillation term applies, mixed into the same batches.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import Dataset

from vldistill.config import OptimSettings, TrainerSettings, TrainSettings, recipe_from_dict
from vldistill.core.errors import DataError
from vldistill.data.batches import VQACollator, VQAImageDataset
from vldistill.data.classification import (
    ClassificationDataset,
    collate_classification,
    image_folder,
)
from vldistill.eval.evaluators import ClassificationEvaluator, VQAEvaluator, predict
from vldistill.kd.losses import CrossEntropyLoss, KDLoss, VQABCELoss
from vldistill.kd.step import DistillationStep, WeightedTerm
from vldistill.train.fit import fit, mixed_loaders


@dataclass
class DistillResult:
    student: nn.Module
    metrics: dict[str, float]              # the student's, on val
    teacher_metrics: dict[str, float]      # the teacher's, on val (same metric)
    wall_time_s: float
    steps: int


def _as_dataset(data: Any, labelled: bool, image_size: int) -> Dataset:
    if isinstance(data, (VQAImageDataset, ClassificationDataset)):
        return data
    if isinstance(data, (str, Path)):
        return image_folder(data, image_size, labelled=labelled)
    if isinstance(data, torch.Tensor):
        return ClassificationDataset(data, None)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return ClassificationDataset(data[0], data[1] if labelled else None)
    raise TypeError(f"cannot use {type(data).__name__} as data; pass (images, labels) "
                    "tensors, an image tensor (unlabelled), an image-folder path, a "
                    "ClassificationDataset or a VQAImageDataset")


def _trainer_settings(trainer: dict[str, Any] | None) -> TrainerSettings:
    """Validate ``trainer=`` like a recipe's ``trainer:`` section (errors list valid keys)."""
    return recipe_from_dict({"trainer": trainer or {}}, "distill(trainer=...)").trainer


def _check_same_image_shape(*datasets: Dataset | None) -> None:
    shapes = {tuple(d.images.shape[1:]) for d in datasets
              if isinstance(d, ClassificationDataset)}
    if len(shapes) > 1:
        raise DataError(f"train, val and transfer images differ in shape (C, H, W): "
                        f"{sorted(shapes)}; resize them to one shape (image_folder does this "
                        "with image_size=...).")


def distill(teacher: nn.Module, student: nn.Module, train: Any, val: Any = None,
            transfer: Any = None, *, kd_weight: float = 0.5, task_weight: float = 0.5,
            temperature: float = 1.0, transfer_fraction: float = 0.5, max_steps: int = 500,
            batch_size: int = 32, lr: float = 3e-3, optimizer: str = "adamw",
            schedule: str = "cosine", warmup_steps: int = 0, val_every_n_steps: int | None = None,
            image_size: int = 64, seed: int = 0, trainer: dict[str, Any] | None = None,
            output_dir: str | Path | None = None) -> DistillResult:
    """Distil ``teacher`` into ``student``; returns the trained student and its metrics.

    Defaults are the default recipe's: ``0.5 * task + 0.5 * T^2 * KL`` at ``T = 1`` (the VizWiz
    seed's ``0.75 / 0.25`` at ``T = 2`` is ``task_weight=0.75, kd_weight=0.25,
    temperature=2``). The teacher is frozen. ``trainer`` takes Lightning settings (devices, strategy, precision, ...)
    as in a recipe's ``trainer:`` section.
    """
    train_set = _as_dataset(train, True, image_size)
    val_set = _as_dataset(val, True, image_size) if val is not None else None
    transfer_set = _as_dataset(transfer, False, image_size) if transfer is not None else None
    is_vqa = isinstance(train_set, VQAImageDataset)
    if is_vqa:
        collate = VQACollator(len(train_set.answer_vocab))
        evaluator, task = VQAEvaluator(train_set.answer_vocab), VQABCELoss()
    else:
        collate, evaluator, task = collate_classification, ClassificationEvaluator(), \
            CrossEntropyLoss()
    terms = [WeightedTerm("task", task_weight, task),
             WeightedTerm("kd", kd_weight, KDLoss(temperature))]
    train_settings = TrainSettings(
        max_steps=max_steps, batch_size=batch_size,
        val_every_n_steps=val_every_n_steps or max_steps,
        optim=OptimSettings(optimizer=optimizer, lr=lr, schedule=schedule,
                            warmup_steps=warmup_steps))
    settings = _trainer_settings(trainer)
    _check_same_image_shape(train_set, val_set, transfer_set)
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    L.seed_everything(seed, verbose=False)
    step = DistillationStep(student, terms, teacher=teacher)
    loaders = mixed_loaders(train_set, transfer_set, collate, val_set,
                            batch_size=batch_size, transfer_fraction=transfer_fraction,
                            seed=seed)
    run_dir = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="vldistill-"))
    result = fit(step, loaders, evaluator, train_settings, settings, run_dir=run_dir,
                 role="student")
    metrics, teacher_metrics = {}, {}
    if val_set is not None:
        metrics = predict(result.student, val_set, collate, evaluator).metrics
        teacher_metrics = predict(teacher, val_set, collate, evaluator).metrics
    return DistillResult(result.student, metrics, teacher_metrics, result.wall_time_s,
                         result.steps)
