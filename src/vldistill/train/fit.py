"""Build a Lightning Trainer from the recipe and fit one distillation step.

The same function trains the teacher (a step with only the task loss), the student without
distillation, and the student with distillation.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback, Checkpoint, EarlyStopping
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import nn
from torch.nn.parameter import is_lazy
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from vldistill.config import TrainerSettings, TrainSettings
from vldistill.core.console import console
from vldistill.core.runpaths import RunPaths
from vldistill.data.batches import MixedBatchSampler, sequential_batches
from vldistill.train.module import (
    DistillModule,
    Evaluator,
    MakeOptimizer,
    MakeSchedule,
    TrainingStep,
)
from vldistill.train.progress import StepProgressBar
from vldistill.train.resume import (
    AtomicCheckpointIO,
    ResumableLoader,
    ResumePoints,
    forget,
    read_done,
    resume_path,
    resume_stamp,
    usable_resume_point,
    write_done,
)

SaveFn = Callable[[Path, nn.Module], None]


def quiet_lightning() -> None:
    """Keep Lightning's start-up chatter and CPU-only advice out of the results."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (".*does not have many workers.*", ".*GPU available but not used.*",
                    ".*Checkpoint directory.*exists and is not empty.*",
                    ".*is smaller than the logging interval.*",
                    ".*Experiment logs directory.*exists and is not empty.*",
                    ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*",
                    # the frozen teacher inside the step is in eval mode on purpose
                    ".*module\\(s\\) in eval mode at the start of training.*"):
        warnings.filterwarnings("ignore", message=pattern)


class LoaderModule(L.LightningDataModule):
    """Training batches come from a sampler made per rank, validation batches in order."""

    def __init__(self, train_dataset: Dataset, make_sampler: Callable[[int, int], Sampler],
                 collate: Callable, val_dataset: Dataset | None,
                 val_batches: Sequence[list[int]] = ()) -> None:
        super().__init__()
        self.train_dataset, self.make_sampler, self.collate = train_dataset, make_sampler, collate
        self.val_dataset, self.val_batches = val_dataset, list(val_batches)

    def sample_batch(self, size: int = 4) -> dict:
        """A small training batch (the first items), e.g. to give lazy modules their shapes."""
        count = min(size, len(self.train_dataset))
        return self.collate([self.train_dataset[i] for i in range(count)])

    def train_dataloader(self) -> DataLoader:
        sampler = self.make_sampler(self.trainer.global_rank, self.trainer.world_size)
        return ResumableLoader(self.train_dataset, batch_sampler=sampler, collate_fn=self.collate)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_dataset is None:
            return []
        return DataLoader(self.val_dataset, batch_sampler=self.val_batches,
                          collate_fn=self.collate)


def mixed_loaders(labelled: Dataset, transfer: Dataset | None, collate: Callable,
                  val: Dataset | None, *, batch_size: int, transfer_fraction: float,
                  seed: int, val_batch: int = 64) -> LoaderModule:
    """Training batches mixing a labelled set with an optional unlabelled transfer set
    (see :class:`MixedBatchSampler`), and ordered validation batches."""


    datasets = [labelled] + ([transfer] if transfer is not None else [])
    fraction = transfer_fraction if transfer is not None else 0.0

    def sampler(rank: int, world_size: int) -> MixedBatchSampler:
        return MixedBatchSampler(len(labelled), len(transfer) if transfer is not None else 0,
                                 batch_size, fraction, seed=seed, rank=rank,
                                 world_size=world_size)
    val_batches = sequential_batches(len(val), val_batch) if val is not None else []
    return LoaderModule(ConcatDataset(datasets), sampler, collate, val, val_batches)


class SafetensorsCheckpoint(Checkpoint):
    """Saves ``<role>-last.safetensors`` after each validation and at the end, and
    ``<role>-best.safetensors`` when the monitored metric improves (rank 0 only)."""

    def __init__(self, paths: RunPaths, role: str, monitor: str, save: SaveFn) -> None:
        self.paths, self.role, self.monitor, self.save = paths, role, monitor, save
        self.best: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state["best"]

    def _save(self, trainer: L.Trainer, module: DistillModule, which: str) -> None:
        if trainer.is_global_zero:
            self.save(self.paths.weights(self.role, which), module.step.student)

    def on_validation_end(self, trainer: L.Trainer, module: DistillModule) -> None:
        if trainer.sanity_checking:
            return
        self._save(trainer, module, "last")
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and (self.best is None or float(value) > self.best):
            self.best = float(value)
            self._save(trainer, module, "best")

    def on_train_end(self, trainer: L.Trainer, module: DistillModule) -> None:
        self._save(trainer, module, "last")


@dataclass
class FitResult:
    """A finished fit: the trained student, its wall time and optimiser steps, the last logged
    metrics, and the training loss of every batch this process trained (after a resume, only
    the batches since; empty for a role that had finished before)."""

    student: nn.Module
    wall_time_s: float
    steps: int
    metrics: dict[str, float]
    losses: list[float] = field(default_factory=list)


class LossHistory(Callback):
    """Records each training batch's loss (on this rank)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any,
                           batch: Any, batch_index: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.losses.append(float(loss.detach()))


class ValHistory(Callback):
    """One record per validation: ``{"epoch", "step", "time_s", <metric>: value}``.
    ``epoch`` counts passes over the labelled set (``steps_per_epoch`` optimiser steps each);
    ``time_s`` is the wall time since the fit began plus ``offset_s`` (work done before it,
    such as building the teacher cache), validation included."""

    def __init__(self, steps_per_epoch: int, offset_s: float = 0.0) -> None:
        self.steps_per_epoch, self.offset_s = max(1, steps_per_epoch), offset_s
        self.records: list[dict[str, float]] = []
        self._start = time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {key.removeprefix("val/"): float(value)
                   for key, value in trainer.callback_metrics.items()
                   if key.startswith("val/")}
        self.records.append({"epoch": trainer.global_step / self.steps_per_epoch,
                             "step": trainer.global_step,
                             "time_s": self.offset_s + time.perf_counter() - self._start,
                             **metrics})


def build_trainer(settings: TrainerSettings, train: TrainSettings, log_dir: Path, role: str,
                  callbacks: list[Callback], has_val: bool) -> L.Trainer:
    return L.Trainer(
        accelerator=settings.accelerator, devices=settings.devices, strategy=settings.strategy,
        num_nodes=settings.num_nodes, precision=settings.precision,
        max_steps=train.max_steps, max_epochs=train.max_epochs or -1,
        accumulate_grad_batches=settings.accumulate_grad_batches,
        gradient_clip_val=settings.gradient_clip_val,
        val_check_interval=train.val_every_n_steps * settings.accumulate_grad_batches
        if has_val else None,
        check_val_every_n_epoch=None, num_sanity_val_steps=0,
        limit_val_batches=1.0 if has_val else 0,
        logger=[TensorBoardLogger(log_dir, name=role, version=""),
                CSVLogger(log_dir, name=role, version="")],
        # our own Checkpoint callbacks (resume points, safetensors weights) replace Lightning's
        # default ModelCheckpoint
        callbacks=callbacks, enable_checkpointing=True,
        enable_progress_bar=settings.progress_bar, enable_model_summary=False,
        # short runs log more often, so that every run has learning curves
        log_every_n_steps=min(settings.log_every_n_steps, max(1, train.max_steps // 20)),
        use_distributed_sampler=False,
        default_root_dir=log_dir, plugins=[AtomicCheckpointIO()])


def _resumable(run_dir: Path, role: str, stamp: str, checkpoint: Path | None,
               state: dict[str, Any] | None
               ) -> tuple[bool, dict[str, Any] | None, dict[str, Any] | None]:
    """Whether the role's resume files (if any) were written under this stamp; then its done
    record and ``state``, that of ``checkpoint``, the resume point to continue from (each None
    when absent). A finished role whose final state is unreadable continues from the previous
    point instead of counting as done."""
    done = read_done(run_dir, role)
    if done is not None and done["stamp"] != stamp:
        return False, None, None
    if done is not None and checkpoint != resume_path(run_dir, role):
        done = None
    if state is not None and resume_stamp(state) != stamp:
        return False, None, None
    return True, done, state


def keep_earlier_metrics(paths: RunPaths, role: str) -> None:
    """Lightning's CSV logger starts a role's metrics.csv afresh when its fit resumes; the rows
    logged before the stop are kept beside it (``metrics.before-resume-N.csv``), and the
    learning curves read both."""
    current = paths.metrics_csv(role)
    if current.is_file():
        count = len(list(current.parent.glob("metrics.before-resume-*.csv")))
        current.rename(current.with_name(f"metrics.before-resume-{count}.csv"))


def same_state_on_every_rank(model: nn.Module) -> None:
    """DDP keeps the parameters equal across ranks, but not the buffers each rank updated in
    its last forward pass (BatchNorm's running statistics): every rank takes rank 0's state,
    the one written to disk, so a model used after its fit (a teacher whose outputs are cached,
    a model scored) is the same model everywhere."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def fit(step: TrainingStep, data: LoaderModule, evaluator: Evaluator | None, train: TrainSettings,
        settings: TrainerSettings, *, run_dir: Path, role: str, save: SaveFn | None = None,
        resume: bool = False, stamp: str = "", callbacks: Sequence[Callback] = (),
        make_optimizer: MakeOptimizer | None = None, make_schedule: MakeSchedule | None = None
        ) -> FitResult:
    """Train ``step.student`` with Lightning; returns the trained student and its wall time.

    With ``resume``, a role that finished before is not trained again (its final weights are
    loaded) and one that was interrupted continues from its last resume point (see
    :mod:`vldistill.train.resume`), as long as their ``stamp`` (recipe and teacher) matches;
    without, the role's earlier resume files are removed first. ``callbacks`` are extra Lightning
    callbacks; ``make_optimizer`` / ``make_schedule`` replace the optimiser and schedule that
    ``train.optim`` names.
    """
    quiet_lightning()
    checkpoint = resume_path(run_dir, role)
    done = state = start_from = None
    if resume:
        start_from, state = usable_resume_point(checkpoint) or (None, None)   # latest readable
        resume, done, state = _resumable(run_dir, role, stamp, start_from, state)
        if not resume:
            console.print(f"{role}: its resume files were written for another recipe or "
                          "teacher; training it from the start")
    if not resume:
        forget(run_dir, role)
    # without validation data there is nothing to monitor (evaluator may then be None)
    monitor = f"val/{evaluator.name}" if evaluator is not None else "val/none"
    if any(is_lazy(p) for p in step.parameters()):
        # projectors of feature terms take their shapes from a first batch, before the
        # optimiser is built (otherwise they would never train)
        step.materialize(data.sample_batch())
    module = DistillModule(step, evaluator, train.optim, train.max_steps, make_optimizer,
                           make_schedule)
    if done is not None and state is not None:
        module.restore_weights(state)
        step.student.eval()
        return FitResult(step.student, done["wall_time_s"], done["steps"], done["metrics"])
    has_val = data.val_dataset is not None and evaluator is not None
    points = ResumePoints(checkpoint, train.checkpoint_every_n_steps,
                          train.val_every_n_steps if has_val else None, stamp)
    history = LossHistory()
    callbacks = [*callbacks, history]
    if settings.progress_bar:
        callbacks.append(StepProgressBar(role, monitor, console))
    if save is not None:
        callbacks.append(SafetensorsCheckpoint(RunPaths(run_dir), role, monitor, save))
    if train.early_stopping_patience is not None and has_val:
        callbacks.append(EarlyStopping(monitor=monitor, mode="max",
                                       patience=train.early_stopping_patience))
    callbacks.append(points)          # last: a resume point holds every other callback's state
    trainer = build_trainer(settings, train, RunPaths(run_dir).logs, role, callbacks, has_val)
    if resume and start_from is not None and trainer.is_global_zero:
        keep_earlier_metrics(RunPaths(run_dir), role)
    # Lightning keeps each module's train/eval flag as it finds it: a student handed over from
    # an earlier fit (a previous phase) was left in eval mode, so put the step in train mode
    # (the step keeps its teacher in eval mode).
    step.train()
    trainer.fit(module, datamodule=data, ckpt_path=start_from if resume else None,
                weights_only=True)
    # the final state is a resume point too: a later --resume loads it instead of training
    trainer.save_checkpoint(checkpoint)
    same_state_on_every_rank(step.student)
    wall = points.elapsed()
    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if trainer.is_global_zero:
        write_done(run_dir, role, trainer.global_step, wall, metrics, stamp)
    step.student.eval()
    return FitResult(step.student, wall, trainer.global_step, metrics, history.losses)
