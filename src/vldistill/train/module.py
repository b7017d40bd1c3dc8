"""The thin Lightning layer: a LightningModule that calls a training step and logs.

Every model vldistill trains (teacher, student, baseline, retriever, reader, open-vocabulary
encoder, prefix generator) is trained as a *step*: a plain ``nn.Module`` that holds the model
being trained as ``student`` (and a frozen ``teacher``, when it has one), returns its losses
for a batch as ``{"loss": ..., "<term>": ...}``, says how many examples a batch holds, and
gives what the validation metric scores. What is learned lives in the step
(:class:`vldistill.kd.step.DistillationStep`, or a job's own); this file only wires it into
Lightning's loop (optimiser, schedule, logging, in-loop evaluation).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import lightning as L
import torch
from torch import nn

from vldistill.config import OptimSettings


class Evaluator(Protocol):
    """Accumulates a metric over validation batches (see vldistill.eval.evaluators):
    ``update`` receives the batch and what the step's ``predict`` gave for it."""

    name: str

    def reset(self) -> None: ...

    def update(self, batch: Any, predicted: Any) -> None: ...

    def compute(self) -> dict[str, float]: ...


class TrainingStep(Protocol):
    """What the engine trains (an ``nn.Module``; see the module docstring)."""

    student: nn.Module

    def __call__(self, batch: Any) -> dict[str, torch.Tensor]: ...

    def batch_size(self, batch: Any) -> int: ...

    def predict(self, batch: Any) -> Any: ...


def lr_lambda(schedule: str, warmup_steps: int, max_steps: int):
    """Multiplier of the base learning rate at each optimiser step."""
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if schedule == "linear":
            return 1.0 - progress
        return 1.0
    return factor


def build_optimizer(parameters: list[torch.nn.Parameter], optim: OptimSettings):
    if optim.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=optim.lr, momentum=0.9,
                               weight_decay=optim.weight_decay)
    kind = torch.optim.AdamW if optim.optimizer == "adamw" else torch.optim.Adam
    return kind(parameters, lr=optim.lr, weight_decay=optim.weight_decay)


_TEACHER = "step.teacher."


# a user's own optimiser and schedule (the Python API): optimizer(parameters) and
# schedule(optimizer, total optimiser steps), the schedule stepped after every optimiser step
MakeOptimizer = Callable[[list[nn.Parameter]], torch.optim.Optimizer]
MakeSchedule = Callable[[torch.optim.Optimizer, int], torch.optim.lr_scheduler.LRScheduler]


class DistillModule(L.LightningModule):
    def __init__(self, step: TrainingStep, evaluator: Evaluator | None, optim: OptimSettings,
                 max_steps: int, make_optimizer: MakeOptimizer | None = None,
                 make_schedule: MakeSchedule | None = None) -> None:
        super().__init__()
        self.step = step
        self.evaluator = evaluator
        self.optim = optim
        self.max_steps = max_steps
        self.make_optimizer, self.make_schedule = make_optimizer, make_schedule

    def training_step(self, batch: Any, batch_index: int) -> torch.Tensor:
        losses = self.step(batch)
        size = self.step.batch_size(batch)
        self.log_dict({f"train/{name}": value for name, value in losses.items()},
                      batch_size=size, prog_bar=False)
        self.log("loss", losses["loss"], batch_size=size, prog_bar=True, logger=False)
        return losses["loss"]

    def on_validation_epoch_start(self) -> None:
        self.evaluator.reset()

    def validation_step(self, batch: Any, batch_index: int) -> None:
        self.evaluator.update(batch, self.step.predict(batch))

    def on_validation_epoch_end(self) -> None:
        # Every rank evaluates the whole validation set (no distributed sampler), so the
        # values agree across ranks without a reduction.
        for name, value in self.evaluator.compute().items():
            self.log(f"val/{name}", value, prog_bar=name == self.evaluator.name, sync_dist=False)

    # The frozen teacher is not part of the training state: it is left out of resume
    # checkpoints (it can be far larger than the student) and put back from memory on load,
    # so loading stays strict about every other key.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if not k.startswith(_TEACHER)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {**checkpoint["state_dict"], **self._teacher_state()}

    def _teacher_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if k.startswith(_TEACHER)}

    def restore_weights(self, checkpoint: dict[str, Any]) -> None:
        """Load the weights of a resume checkpoint (the teacher stays as it is)."""
        self.on_load_checkpoint(checkpoint)
        self.load_state_dict(checkpoint["state_dict"])

    def configure_optimizers(self) -> dict[str, Any]:
        parameters = [p for p in self.step.parameters() if p.requires_grad]
        optimizer = (self.make_optimizer(parameters) if self.make_optimizer is not None
                     else build_optimizer(parameters, self.optim))
        # estimated_stepping_batches is min(max_steps, max_epochs * batches per epoch), after
        # gradient accumulation: the schedule ends where training really ends.
        total = min(self.max_steps, int(self.trainer.estimated_stepping_batches))
        scheduler = (self.make_schedule(optimizer, total) if self.make_schedule is not None
                     else torch.optim.lr_scheduler.LambdaLR(
                         optimizer, lr_lambda(self.optim.schedule, self.optim.warmup_steps,
                                              total)))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
