"""A progress bar in optimiser steps (Lightning's counts epochs, meaningless for step-budgeted
runs over a mixed labelled/transfer sampler). When the output is not a terminal (a log file,
CI, `| tee`), a live bar shows nothing until it ends, so a plain line is printed every tenth of
the run instead: a long stage never looks like a hang."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class StepProgressBar(ProgressBar):
    """``role ━━━━━━ 730/1500 0:00:41 0:00:43 loss 2.41 val 51.3`` on rank 0."""

    def __init__(self, role: str, monitor: str, console: Console | None = None) -> None:
        super().__init__()
        self.role, self.monitor, self.console = role, monitor, console
        self._enabled = True
        self._progress: Progress | None = None
        self._task = None
        self._logged = -1

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
            console=self.console)
        self._progress.start()
        self._task = self._progress.add_task(self.role, total=trainer.max_steps, info="")

    def _info(self, trainer: L.Trainer) -> str:
        metrics: dict[str, Any] = trainer.progress_bar_metrics
        parts = [f"loss {metrics['loss']:.3f}"] if "loss" in metrics else []
        value = metrics.get(self.monitor, math.nan)
        if not math.isnan(float(value)):
            parts.append(f"val {float(value):.2f}")
        return "  ".join(parts)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any,
                           batch: Any, batch_index: int) -> None:
        if self._progress is None or trainer.global_step % 10:
            return
        self._progress.update(self._task, completed=trainer.global_step,
                              info=self._info(trainer))
        every = max(1, trainer.max_steps // 10)
        if not self._progress.console.is_terminal and trainer.global_step % every == 0 and \
                self._logged != trainer.global_step:
            self._logged = trainer.global_step
            task = self._progress.tasks[0]
            eta = "" if task.time_remaining is None else f", about {task.time_remaining:.0f} s left"
            self._progress.console.print(
                f"{self.role}: step {trainer.global_step}/{trainer.max_steps} "
                f"({task.elapsed or 0:.0f} s{eta}) {self._info(trainer)}", markup=False)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=trainer.global_step,
                                  info=self._info(trainer))
            self._progress.stop()
            self._progress = None
