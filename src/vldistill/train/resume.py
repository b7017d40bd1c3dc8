"""Resume points: a fit that stops (killed, crashed, Ctrl-C) continues where it stopped.

Every fit (one role: the teacher, a student, one phase of a student) keeps two files in
``<run>/checkpoints/``:

    <role>-resume.ckpt   Lightning's full training state: model (without the frozen teacher),
                         optimiser, LR schedule, loop counters, callbacks (best value, early
                         stopping, elapsed time), the torch RNG state and the position inside
                         the epoch's batch plan. Written atomically at every validation and every
                         ``checkpoint_every_n_steps``; the previous one stays until the new one
                         is complete.
    <role>-resume.previous.ckpt   the resume point before the latest (rotated at each write):
                         a missing or damaged latest one falls back to it, saying so.
    <role>-done.json     written once the fit has finished: its steps, wall time and metrics.

Both carry a *stamp*: a hash of the recipe and, for a distilled student, of the teacher's
weights. ``fit(..., resume=True)`` continues from ``-resume.ckpt`` and skips a role that is done
(loading its final weights) only when the stamp matches; files stamped by another recipe or
another teacher are removed and the role trains from its start. Without ``resume`` a role's
files are removed before it trains.

Lightning restores the loops (including a stop in the middle of an epoch, through the stateful
data loader below); this file adds only what Lightning leaves to the user: where to write, how to
write safely, and loading with ``weights_only=True`` (a checkpoint is never unpickled).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Checkpoint
from torch.utils.data import DataLoader

from vldistill.core.console import console
from vldistill.core.errors import VldistillError
from vldistill.core.fileio import atomic_write, atomic_write_text
from vldistill.core.runpaths import RunPaths, previous_path


class ResumeError(VldistillError, ValueError):
    """A resume file is unreadable or does not belong to this run."""


def resume_path(run_dir: Path, role: str) -> Path:
    return RunPaths(run_dir).resume_point(role)


def done_path(run_dir: Path, role: str) -> Path:
    return RunPaths(run_dir).done(role)


def usable_resume_point(path: Path) -> tuple[Path, dict[str, Any]] | None:
    """The resume point to continue from and its state (read once, here): ``path``, or, when it
    is missing or damaged (killed between the two renames of a rotation, a flipped byte), the
    previous one, saying so. None when there is neither; a ResumeError when no readable one is
    left."""
    previous = previous_path(path)
    if path.is_file():
        try:
            return path, load_training_state(path)
        except ResumeError as error:
            if not previous.is_file():
                raise
            console.print(f"[yellow]{error.args[0].split(' Delete it')[0]}; falling back to "
                          f"the previous resume point {previous.name}[/]")
    if previous.is_file():
        return previous, load_training_state(previous)
    return None


def load_training_state(path: Path) -> dict[str, Any]:
    """Read a resume checkpoint with ``weights_only=True``; a damaged file gets a clear error."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:   # truncated, bit-flipped or not a checkpoint at all
        raise ResumeError(
            f"resume checkpoint {path} cannot be read ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no detail'}). Delete it to restart "
            f"this part of the run from its beginning, then run again with --resume.") from None


def _tensor_bytes(value: Any) -> int:
    """The bytes of every tensor in a (nested) checkpoint: what its file will roughly take."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes atomically (temporary file, fsync, rename) and loads
    with ``weights_only=True`` whatever the caller asks."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_write(Path(path), lambda temporary: torch.save(checkpoint, temporary),
                     expected_bytes=_tensor_bytes(checkpoint),
                     keep_previous=previous_path(Path(path)))

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return load_training_state(Path(path))


class ResumableLoader(DataLoader):
    """A DataLoader whose place in the epoch is saved and restored with the training state.

    Lightning saves ``state_dict()`` of a stateful training loader in its checkpoints and hands
    it back through ``load_state_dict`` on resume; the batch sampler (see
    :class:`~vldistill.data.batches.MixedBatchSampler`) then skips the batches already trained.
    """

    def state_dict(self) -> dict[str, int]:
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.load_state_dict(state)


class ResumePoints(Checkpoint):
    """Writes ``<role>-resume.ckpt`` every ``every_n_steps`` optimiser steps and after every
    validation, and carries the torch RNG state, the stamp and the training time across a resume.

    A :class:`Checkpoint` subclass on purpose: Lightning runs checkpoint callbacks after all
    others, so a resume point taken after a validation already holds that validation's effect on
    early stopping and on the best-model record."""

    def __init__(self, path: Path, every_n_steps: int | None, val_every_n_steps: int | None,
                 stamp: str = "") -> None:
        self.path, self.every_n_steps, self.val_every_n_steps = path, every_n_steps, val_every_n_steps
        self.stamp = stamp
        self.elapsed_before = 0.0          # training seconds of earlier, interrupted attempts
        self._started = time.perf_counter()
        self._last_saved_step = -1

    @property
    def state_key(self) -> str:
        return "ResumePoints"

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self._started

    def state_dict(self) -> dict[str, Any]:
        return {"torch_rng": torch.get_rng_state(), "elapsed_s": self.elapsed(),
                "stamp": self.stamp}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch_rng"])
        self.elapsed_before = float(state["elapsed_s"])
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not self.every_n_steps or step == 0 or step % self.every_n_steps:
            return
        if step == self._last_saved_step:
            return      # the later micro-batches of a step under gradient accumulation
        if self.val_every_n_steps and step % self.val_every_n_steps == 0:
            return                          # saved after that validation instead
        self._last_saved_step = step
        trainer.save_checkpoint(self.path)

    def on_validation_end(self, trainer: L.Trainer, module) -> None:
        if not trainer.sanity_checking:
            trainer.save_checkpoint(self.path)


def write_done(run_dir: Path, role: str, steps: int, wall_time_s: float,
               metrics: dict[str, float], stamp: str = "") -> None:
    record = {"role": role, "steps": steps, "wall_time_s": wall_time_s, "metrics": metrics,
              "stamp": stamp}
    atomic_write_text(done_path(run_dir, role), json.dumps(record, indent=2) + "\n")


def read_done(run_dir: Path, role: str) -> dict[str, Any] | None:
    path = done_path(run_dir, role)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return {"steps": int(record["steps"]), "wall_time_s": float(record["wall_time_s"]),
                "metrics": {str(k): float(v) for k, v in record["metrics"].items()},
                "stamp": str(record.get("stamp", ""))}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ResumeError(f"{path} is damaged ({error}); delete it to train {role!r} again, "
                          "then run with --resume.") from None


def resume_stamp(state: dict[str, Any]) -> str:
    """The stamp a resume checkpoint was written with ("" when it has none)."""
    return str(state.get("callbacks", {}).get("ResumePoints", {}).get("stamp", ""))


def forget(run_dir: Path, role: str) -> None:
    """Remove a role's resume files and its best weights (a fresh, non-resumed fit: a best
    file of an earlier fit must not be taken for this one's)."""
    resume_path(run_dir, role).unlink(missing_ok=True)
    previous_path(resume_path(run_dir, role)).unlink(missing_ok=True)
    done_path(run_dir, role).unlink(missing_ok=True)
    RunPaths(run_dir).weights(role, "best").unlink(missing_ok=True)
