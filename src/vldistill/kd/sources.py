"""Where a distillation loss gets the teacher's outputs: a teacher source.

Every step whose loss reads a teacher (the VQA and depth students' DistillationStep, the
open-vocabulary student, the distilled retriever) asks its source for the outputs of a batch,
``source.teacher_outputs(batch) -> ModelOutput``, and never calls the teacher itself:

- :class:`OnlineTeacher` runs the frozen teacher on each batch: any augmentation, any output
  (per-image grids, answer-token logits), the teacher's full cost at every step;
- :class:`~vldistill.kd.cache.CachedTeacher` reads the exact cache (every logit and feature in
  fp32, memory-mapped, fingerprinted) of a VQA or classification teacher;
- :class:`~vldistill.kd.cache.TopKCachedTeacher` reads the compact cache (top-k logits and one
  fill value, fp16 features);
- :class:`RowCache` is the exact cache of an embedding teacher (an image encoder, a sentence
  encoder): one fp32 vector per training row, looked up by ``batch["rows"]``.

Each source names its ``kind`` (``online``, ``cache``, ``topk-cache``) and the fingerprint of
the teacher's weights it answers for (resume stamps use it: a student never resumes against
another teacher). The caches are built by every rank of a distributed run, each its share of
the shards (vldistill.kd.store).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from vldistill.core.hashing import module_fingerprint
from vldistill.core.ranks import rank_and_world
from vldistill.core.versions import __version__
from vldistill.kd.store import FORMAT, build_store, open_store
from vldistill.models.outputs import ModelOutput, call_model

KINDS = ("online", "cache", "topk-cache")


@runtime_checkable
class TeacherSource(Protocol):
    """The teacher's outputs for a batch."""

    kind: str

    def teacher_outputs(self, batch: Mapping[str, Any]) -> ModelOutput: ...

    def weights_fingerprint(self) -> str: ...


def freeze(model: nn.Module) -> nn.Module:
    """Freeze a teacher: no gradients and eval mode (its source keeps it in eval mode)."""
    model.requires_grad_(False)
    return model.eval()


def default_call(model: nn.Module, batch: Mapping[str, Any]) -> ModelOutput:
    return call_model(model, batch.get("teacher_inputs", batch["inputs"]))


class OnlineTeacher(nn.Module):
    """Runs the frozen ``model`` on every batch (``call(model, batch)``; by default on the
    batch's ``teacher_inputs``, else its ``inputs``), without gradients."""

    kind = "online"

    def __init__(self, model: nn.Module,
                 call: Callable[[nn.Module, Mapping[str, Any]], ModelOutput] = default_call
                 ) -> None:
        super().__init__()
        self.model, self.call = freeze(model), call
        self._fingerprint: str | None = None

    def train(self, mode: bool = True) -> OnlineTeacher:
        super().train(mode)
        self.model.eval()          # frozen: BatchNorm / dropout stay in inference mode
        return self

    def teacher_outputs(self, batch: Mapping[str, Any]) -> ModelOutput:
        with torch.no_grad():
            return self.call(self.model, batch)

    def weights_fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = module_fingerprint(self.model)
        return self._fingerprint

    def forward(self, *args, **kwargs):
        raise TypeError("a teacher source answers for a whole batch: call "
                        "teacher_outputs(batch)")


class TimedSource(nn.Module):
    """Any source, timed: the seconds spent in it and the examples it answered for (how much
    teacher work an online source did, for the Python API's time split)."""

    def __init__(self, source: TeacherSource) -> None:
        super().__init__()
        self.source, self.kind = source, source.kind
        self.seconds, self.examples = 0.0, 0

    def teacher_outputs(self, batch: Mapping[str, Any]) -> ModelOutput:
        start = time.perf_counter()
        output = self.source.teacher_outputs(batch)
        self.seconds += time.perf_counter() - start
        self.examples += int(output.logits.shape[0])
        return output

    def weights_fingerprint(self) -> str:
        return self.source.weights_fingerprint()

    def forward(self, *args, **kwargs):
        raise TypeError("a teacher source answers for a whole batch: call "
                        "teacher_outputs(batch)")


def as_source(teacher: nn.Module | TeacherSource) -> TeacherSource:
    """A teacher source as it is; a plain teacher model runs online."""
    return teacher if isinstance(teacher, TeacherSource) else OnlineTeacher(teacher)


# --- the exact cache of an embedding teacher ----------------------------------------------


def row_fingerprint(teacher: str, data: str, field: str, **settings: Any) -> dict[str, Any]:
    return {"teacher_weights": teacher, "data": data, "field": field, "dtype": "float32",
            **settings, "vldistill_version": __version__, "format": FORMAT}


class RowCache(nn.Module):
    """Stored teacher outputs, fp32 rows, one per training row, memory-mapped; answers a
    batch's ``rows`` with a ModelOutput of its fields (``logits`` when stored, else empty;
    ``image_embeds``, ``text_embeds``). Exact: the values the teacher computed, not rounded.
    ``fingerprint["field"]`` names the main field (what :meth:`rows` and :meth:`all` read)."""

    kind = "cache"

    def __init__(self, directory: Path, fingerprint: Mapping[str, Any], command: str, *,
                 verify: bool = True) -> None:
        super().__init__()
        self.directory, self.fingerprint = Path(directory), dict(fingerprint)
        self.manifest, self.fields = open_store(self.directory, self.fingerprint, command,
                                                verify=verify)
        self.field = self.fingerprint["field"]

    def __len__(self) -> int:
        return len(self.fields[self.field])

    @property
    def dim(self) -> int:
        return int(self.fields[self.field].arrays[0].shape[1])

    def weights_fingerprint(self) -> str:
        return self.fingerprint["teacher_weights"]

    def rows(self, rows: torch.Tensor, field: str | None = None) -> torch.Tensor:
        """(len(rows), D) fp32 on the CPU, of ``field`` (default: the main one)."""
        index = np.asarray(rows.cpu(), dtype=np.int64)
        return torch.from_numpy(np.ascontiguousarray(self.fields[field or self.field][index]))

    def all(self) -> torch.Tensor:
        return torch.from_numpy(np.array(self.fields[self.field].all()))      # a writable copy

    def extra(self, name: str) -> np.ndarray:
        """An array stored beside the rows (``row_cache(extra_files=...)``), checked on open."""
        return np.load(self.directory / self.manifest[f"{name}_file"]["name"],
                       allow_pickle=False)

    def teacher_outputs(self, batch: Mapping[str, Any]) -> ModelOutput:
        stored = {name: self.rows(batch["rows"], name) for name in self.fields}
        logits = stored.pop("logits", None)
        if logits is None:
            logits = next(iter(stored.values())).new_zeros(len(batch["rows"]), 0)
        return ModelOutput(logits, stored.pop("image_embeds", None),
                           stored.pop("text_embeds", None), stored)

    def forward(self, *args, **kwargs):
        raise TypeError("a teacher source answers for a whole batch: call "
                        "teacher_outputs(batch)")


Encoded = torch.Tensor | np.ndarray | Mapping[str, torch.Tensor | np.ndarray]


def row_cache(directory: Path, fingerprint: Mapping[str, Any], count: int,
              encode: Callable[[int, int], Encoded], *,
              command: str, shard_rows: int = 65536,
              progress: Callable[[int, int], None] | None = None,
              extra_files: Mapping[str, np.ndarray] | None = None) -> RowCache:
    """Open the row cache of ``fingerprint`` in ``directory``, building it first when it is
    missing, unfinished or stale: ``encode(first, last)`` gives the teacher's outputs for rows
    ``first..last-1``: one tensor (stored as ``fingerprint["field"]``) or a dict of them by
    field name. In a distributed run every rank encodes its share of the shards.
    ``extra_files`` are arrays stored beside the rows (read back with :meth:`RowCache.extra`),
    not answered with every batch."""
    rank, world = rank_and_world()
    units = [{"first_row": first, "rows_in_unit": min(shard_rows, count - first)}
             for first in range(0, count, shard_rows)]

    def compute(unit: Mapping[str, Any]) -> dict[str, np.ndarray]:
        first = unit["first_row"]
        encoded = encode(first, first + unit["rows_in_unit"])
        if not isinstance(encoded, Mapping):
            encoded = {fingerprint["field"]: encoded}
        return {name: np.ascontiguousarray(
                    value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value,
                    dtype=np.float32) for name, value in encoded.items()}

    try:
        return RowCache(directory, fingerprint, command)
    except ValueError:
        pass                          # missing, unfinished, stale or damaged: (re)build it
    build_store(directory, fingerprint, units, compute, header={"rows": count},
                extra_files=extra_files, rank=rank, world=world, progress=progress)
    # just built: every shard was hashed as it was written and rank 0 checked the others'
    # before the manifest, so opening checks sizes only
    return RowCache(directory, fingerprint, command, verify=False)
