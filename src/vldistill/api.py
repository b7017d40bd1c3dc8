"""The Python API: ``vldistill.distill(teacher, student, train, val, transfer, ...)``.

Bring any pair of ``nn.Module``s that return logits (or a :class:`vldistill.models.ModelOutput`)
and data in any common form (:mod:`vldistill.data.user_data`: tensors, a torch Dataset or
DataLoader, a Hugging Face dataset, an image folder). The objective is a preset name or a
recipe's term list (:mod:`vldistill.kd.presets`); the teacher's outputs come from a cache built
once when that is exact, else from the teacher run at every step (``teacher_outputs``); the
student trains through the engine every job uses (:func:`vldistill.train.fit.fit`: Lightning,
DDP, precision, curves). A student without distillation (the baseline) trains beside it on the
same labels, so the run says what distillation bought.

VQA: pass :class:`vldistill.data.batches.VQAImageDataset`s (models are called with images,
question_tokens, question_lengths, image_index); the teacher then runs online.

Everything lands in a run folder: report.md, results.json, metrics.csv (the per-epoch history
of every model), history.png, learning_curves.png, logs/ (TensorBoard), checkpoints/,
and the teacher cache beside it (``<output_dir>/../teacher-cache``) so a second run reuses it.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from vldistill.config import OptimSettings, TrainerSettings, TrainSettings, recipe_from_dict
from vldistill.core.console import console
from vldistill.core.errors import DataError
from vldistill.core.fileio import atomic_write_text
from vldistill.core.hashing import module_fingerprint, nested_differences
from vldistill.core.runpaths import RunPaths
from vldistill.data.augment import AugmentSettings, Replayable
from vldistill.data.batches import (
    MixedBatchSampler,
    VQACollator,
    VQAImageDataset,
    sequential_batches,
)
from vldistill.data.user_data import (
    Pool,
    PoolViews,
    as_user_dataset,
    collate_inputs,
    dataset_fingerprint,
    is_deterministic,
)
from vldistill.eval.evaluators import ClassificationEvaluator, VQAEvaluator, predict
from vldistill.kd.presets import Objective, build_objective
from vldistill.kd.sources import (
    OnlineTeacher,
    RowCache,
    TeacherSource,
    TimedSource,
    row_cache,
    row_fingerprint,
)
from vldistill.kd.step import DistillationStep
from vldistill.kd.store import StoreError, read_manifest
from vldistill.models.checkpoint import write_weights
from vldistill.models.outputs import call_model
from vldistill.models.taps import Tapped
from vldistill.report.curves import plot_learning_curves
from vldistill.report.results import write_run_files
from vldistill.train.fit import LoaderModule, ValHistory, fit
from vldistill.train.module import MakeOptimizer, MakeSchedule

Augment = AugmentSettings          # vldistill.Augment: the built-in replayable augmentation
MODES = ("auto", "cache", "online")
CACHE_COMMAND = "vldistill.distill(...) (a stale cache is rebuilt)"


@dataclass
class DistillResult:
    """What :func:`distill` returns. ``history`` maps "student" (and "baseline") to one record
    per validation: ``{"epoch", "step", "time_s", <metric>}``; ``time_s`` counts from the start
    of that model's work, the teacher cache's build included for the student."""

    student: nn.Module
    metrics: dict[str, float]              # the student's, on val
    teacher_metrics: dict[str, float]      # the teacher's, on val (same metric)
    baseline_metrics: dict[str, float]     # the student trained without the teacher ({} if off)
    history: dict[str, list[dict[str, float]]]
    wall_time_s: float                     # the whole call
    teacher_time_s: float                  # building the cache, or the online teacher's calls
    student_time_s: float                  # the student's training (teacher calls excluded)
    baseline_time_s: float
    teacher_forward_examples: int          # examples the teacher ran on for distillation
    teacher_outputs: str                   # "cache", "online" or "none" (a teacher-free term list)
    teacher_outputs_reason: str
    cache: dict[str, Any]                  # folder and status ("built", "reused", "rebuilt")
    steps: int
    run_dir: Path
    baseline: nn.Module | None = None
    metric: str = "accuracy"

    def time_to_reach(self, value: float, model: str = "student") -> float | None:
        """Seconds until ``model``'s validation metric first reached ``value`` (None: never)."""
        for record in self.history.get(model, []):
            if record.get(self.metric, float("-inf")) >= value:
                return record["time_s"]
        return None


@dataclass
class _Data:
    labelled: Dataset
    transfer: Dataset | None
    val: Dataset | None
    collate: Callable
    evaluator_factory: Callable[[], Any]
    task_loss: str
    is_vqa: bool


@dataclass
class _Plan:
    train: TrainSettings             # the distilled student
    baseline: TrainSettings          # the student without the teacher (labelled set only)
    steps_per_epoch: int
    baseline_steps_per_epoch: int


def _trainer_settings(trainer: dict[str, Any] | None) -> TrainerSettings:
    """Validate ``trainer=`` like a recipe's ``trainer:`` section (errors list valid keys)."""
    return recipe_from_dict({"trainer": trainer or {}}, "distill(trainer=...)").trainer


def _read_data(train: Any, val: Any, transfer: Any, image_size: int,
               columns: Sequence[str] | None) -> _Data:
    if isinstance(train, VQAImageDataset):
        for name, other in (("val", val), ("transfer", transfer)):
            if other is not None and not isinstance(other, VQAImageDataset):
                raise DataError(f"train is a VQAImageDataset but {name} is a "
                                f"{type(other).__name__}; pass VQAImageDatasets for all three.")
        vocab = train.answer_vocab
        return _Data(train, transfer, val, VQACollator(len(vocab)),
                     lambda: VQAEvaluator(vocab), "vqa_bce", True)
    sets = [as_user_dataset(data, labelled=labelled, what=what, image_size=image_size,
                            columns=columns) if data is not None else None
            for data, labelled, what in ((train, True, "train"), (val, True, "val"),
                                         (transfer, False, "transfer"))]
    _check_same_shape(dict(zip(("train", "val", "transfer"), sets)))
    return _Data(sets[0], sets[2], sets[1], collate_inputs, ClassificationEvaluator, "ce", False)


def _check_same_shape(sets: dict[str, Dataset | None]) -> None:
    shapes = {name: tuple(data[0]["image"].shape) for name, data in sets.items()
              if data is not None}
    if len(set(shapes.values())) > 1:
        raise DataError(f"train, val and transfer inputs differ in shape: {shapes}; give them "
                        "one shape (image_folder resizes with image_size=...).")


def _plan(data: _Data, *, epochs: int | None, max_steps: int | None, batch_size: int,
          transfer_fraction: float, lr: float, optimizer: Any, schedule: Any,
          warmup_steps: int, weight_decay: float, val_every_n_steps: int | None) -> _Plan:
    """The budget of each fit: ``epochs`` passes over the labelled set and/or ``max_steps``
    (whichever ends first; 500 steps when neither is given), validated every epoch."""
    if epochs is not None and epochs < 1 or max_steps is not None and max_steps < 1:
        raise ValueError(f"epochs and max_steps must be >= 1, got epochs={epochs}, "
                         f"max_steps={max_steps}")
    if epochs is None and max_steps is None:
        max_steps = 500
    optim = OptimSettings(
        optimizer=optimizer if isinstance(optimizer, str) else "adamw", lr=lr,
        schedule=schedule if isinstance(schedule, str) else "constant",
        warmup_steps=warmup_steps, weight_decay=weight_decay)

    def settings(num_transfer: int, fraction: float) -> tuple[TrainSettings, int]:
        per_epoch = MixedBatchSampler(len(data.labelled), num_transfer, batch_size,
                                      fraction).num_batches
        steps = min(s for s in (max_steps, epochs * per_epoch if epochs else None) if s)
        every = val_every_n_steps or (per_epoch if per_epoch <= steps else max(1, steps // 10))
        return TrainSettings(max_steps=steps, max_epochs=epochs, batch_size=batch_size,
                             val_every_n_steps=min(every, steps), optim=optim), per_epoch

    fraction = transfer_fraction if data.transfer is not None else 0.0
    train, per_epoch = settings(len(data.transfer or ()), fraction)
    baseline, baseline_per_epoch = settings(0, 0.0)
    return _Plan(train, baseline, per_epoch, baseline_per_epoch)


def _callables(optimizer: Any, schedule: Any) -> tuple[MakeOptimizer | None, MakeSchedule | None]:
    for what, value in (("optimizer", optimizer), ("schedule", schedule)):
        if not isinstance(value, str) and not callable(value):
            raise TypeError(f"{what} is a {type(value).__name__}; pass a name (optimizer: "
                            "adamw, adam, sgd; schedule: cosine, linear, constant) or a "
                            f"callable ({what}=lambda ...).")
    return (None if isinstance(optimizer, str) else optimizer,
            None if isinstance(schedule, str) else schedule)


# --- where the teacher's outputs come from ------------------------------------------------


def _teacher_is_deterministic(teacher: nn.Module, batch: dict[str, Any]) -> bool:
    with torch.no_grad():
        teacher.eval()
        first = call_model(teacher, batch["inputs"]).logits
        second = call_model(teacher, batch["inputs"]).logits
    return torch.equal(first, second)


def _choose_mode(mode: str, data: _Data, objective: Objective, augment: Replayable | None,
                 teacher: nn.Module, pool: Dataset) -> tuple[str, str]:
    """("cache" | "online" | "none", why in a few words); refuses a forced cache that would
    not be exact."""
    if mode not in MODES:
        raise ValueError(f"teacher_outputs={mode!r}; choose one of {', '.join(MODES)}.")
    if not objective.needs_teacher:
        return "none", "no term reads the teacher"
    if mode == "online":
        return "online", "teacher_outputs='online'"
    why_not = None
    if data.is_vqa:
        why_not = ("the API caches inputs with one label each; VQA datasets run the teacher "
                   "online (the `vldistill run` VQA job caches: teacher.mode: cache)")
    else:
        for name, part in (("train", data.labelled), ("transfer", data.transfer)):
            if part is None:
                continue
            exact, reason = is_deterministic(part)
            if not exact:
                why_not = (f"{name}: {reason}; give the augmentation as augment=... (a "
                           "replayable transform such as vldistill.Augment) instead, and the "
                           "cache stores each view")
                break
        if why_not is None and not _teacher_is_deterministic(
                teacher, collate_inputs([pool[i] for i in range(min(4, len(pool)))])):
            why_not = ("the teacher gives two different outputs for the same batch in eval "
                       "mode (it samples at random)")
    if why_not is not None:
        if mode == "cache":
            raise ValueError(f"teacher_outputs='cache' would not be exact: {why_not}. Use "
                             "teacher_outputs='auto' or 'online'.")
        return "online", why_not
    views = f"{augment.views} replayed view(s) per example" if augment is not None else \
        "no augmentation"
    return "cache", f"deterministic data, {views}"


def _cache_source(teacher: Tapped, pool: Dataset, augment: Replayable | None, fields: list[str],
                  data: _Data, directory: Path, batch_size: int
                  ) -> tuple[RowCache, dict[str, Any]]:
    """Open, or build, the exact cache of the teacher's outputs on every row (every view).
    ``build_time_s`` counts everything the cache cost: hashing the data, checking or writing
    the files, and the teacher's passes."""
    start = time.perf_counter()
    identity = hashlib.sha256()
    for part in (data.labelled, data.transfer):
        identity.update((dataset_fingerprint(part) if part is not None else "-").encode())
    fingerprint = row_fingerprint(
        module_fingerprint(teacher.model), identity.hexdigest(), "logits",
        taps=teacher.taps, fields=fields, labelled=len(data.labelled),
        transfer=len(data.transfer or ()),
        augment=augment.describe() if augment is not None else None)
    status = "built"
    try:
        source = RowCache(directory, fingerprint, CACHE_COMMAND)
        return source, {"dir": str(directory), "status": "reused", "rows": len(pool),
                        "build_time_s": time.perf_counter() - start}
    except StoreError as error:
        manifest = read_manifest(directory)
        if manifest is not None:
            status = "rebuilt"
            changed = nested_differences(manifest.get("fingerprint", {}), fingerprint)
            what = {"teacher_weights": "the teacher's weights", "data": "the data",
                    "labelled": "the data", "transfer": "the data",
                    "augment": "the augmentation", "taps": "the teacher's layers",
                    "fields": "the terms' teacher outputs"}
            named = [what.get(name.split(".")[0], name) for name in changed]
            console.print(f"teacher cache {directory}: built for other inputs ("
                          f"{', '.join(dict.fromkeys(named)) or error} changed); rebuilding it")

    @torch.no_grad()
    def encode(first: int, last: int) -> dict[str, torch.Tensor]:
        items = [pool[i] for i in range(first, last)]
        out: dict[str, list[torch.Tensor]] = {}
        for begin in range(0, len(items), batch_size):
            part = items[begin:begin + batch_size]
            output = teacher(*collate_inputs(part)["inputs"])
            values = {"logits": output.logits, **{k: output.features[k] for k in teacher.taps}}
            for name, value in values.items():
                out.setdefault(name, []).append(value.float())
        return {name: torch.cat(parts) for name, parts in out.items()}

    teacher.eval()
    # the parameters of every view (row j * K + v), stored beside the rows for the replay
    views = {"views": np.stack([pool.parameters_of(*pool.view_of(row))
                                for row in range(len(pool))])} if augment is not None else None
    source = row_cache(directory, fingerprint, len(pool), encode, command=CACHE_COMMAND,
                       shard_rows=max(batch_size, 8192 // batch_size * batch_size),
                       extra_files=views)
    seconds = time.perf_counter() - start
    return source, {"dir": str(directory), "status": status, "rows": len(pool),
                    "build_time_s": seconds}


# --- the call -------------------------------------------------------------------------------


def distill(teacher: nn.Module, student: nn.Module, train: Any, val: Any = None,
            transfer: Any = None, *, terms: str | Sequence[Any] = "kd",
            layers: Sequence[str] | None = None, teacher_outputs: str = "auto",
            augment: Replayable | None = None, epochs: int | None = None,
            max_steps: int | None = None, batch_size: int = 32, lr: float = 3e-3,
            optimizer: str | MakeOptimizer = "adamw", schedule: str | MakeSchedule = "cosine",
            warmup_steps: int = 0, weight_decay: float = 0.0, transfer_fraction: float = 0.5,
            baseline: bool = True, val_every_n_steps: int | None = None,
            columns: Sequence[str] | None = None, image_size: int = 64, seed: int = 0,
            callbacks: Sequence[Callback] = (), trainer: dict[str, Any] | None = None,
            output_dir: str | Path | None = None, cache_dir: str | Path | None = None
            ) -> DistillResult:
    """Distil ``teacher`` into ``student``; returns the trained student, its metrics and history.

    - ``terms``: a preset ("kd", "dkd", "loca", "kd+feature", "kd+contrastive",
      "kd+relational", "task") or a recipe's term list; ``layers=(student layer, teacher
      layer)`` for the presets that match features (see :mod:`vldistill.kd.presets`).
    - ``teacher_outputs``: "auto" caches the teacher's outputs when that is exact (the data is
      deterministic, or its augmentation is given as ``augment`` and replayed) and says why not
      otherwise; "cache" insists (error if not exact); "online" runs the teacher every step.
    - ``epochs`` (passes over the labelled set) and/or ``max_steps``: the budget (default 500
      steps). ``optimizer``/``schedule``: a name or a callable (``optimizer(parameters)``,
      ``schedule(optimizer, total_steps)``, stepped every optimiser step).
    - ``baseline``: also train a copy of the student on the task loss alone.
    - ``trainer``: Lightning settings as in a recipe's ``trainer:`` (devices, strategy,
      precision, progress_bar, ...); ``callbacks``: extra Lightning callbacks.
    """
    start = time.perf_counter()
    if augment is not None and not isinstance(augment, Replayable):
        raise TypeError(f"augment is a {type(augment).__name__}; it must be replayable "
                        "(vldistill.Augment(views=4, flip=True), or an object with views, "
                        "parameters(item, view), apply(input, parameters) and describe()).")
    data = _read_data(train, val, transfer, image_size, columns)
    if data.is_vqa and augment is not None:
        raise ValueError("augment applies to image-classification data, not VQA datasets.")
    objective = build_objective(terms, data.task_loss, layers)
    plan = _plan(data, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                 transfer_fraction=transfer_fraction, lr=lr, optimizer=optimizer,
                 schedule=schedule, warmup_steps=warmup_steps, weight_decay=weight_decay,
                 val_every_n_steps=val_every_n_steps)
    make_optimizer, make_schedule = _callables(optimizer, schedule)
    settings = _trainer_settings(trainer)
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    run_dir = Path(output_dir) if output_dir is not None else \
        Path("runs") / time.strftime("distill-%Y%m%d-%H%M%S")
    paths = RunPaths(run_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    untouched = copy.deepcopy(student) if baseline else None

    pool: Dataset = Pool(data.labelled, data.transfer) if not data.is_vqa else \
        ConcatDataset([data.labelled, *([data.transfer] if data.transfer is not None else [])])
    if augment is not None:
        pool = PoolViews(pool, augment)
    mode, reason = _choose_mode(teacher_outputs, data, objective, augment, teacher, pool)
    console.print(f"teacher outputs: {mode} ({reason})")
    tapped_teacher = Tapped(teacher, objective.teacher_taps, "teacher")
    cache: dict[str, Any] = {}
    source: TeacherSource | None = None
    teacher_time = 0.0
    if mode == "cache":
        directory = Path(cache_dir) if cache_dir is not None else \
            paths.root.parent / "teacher-cache"
        source, cache = _cache_source(tapped_teacher, pool, augment,
                                      objective.teacher_fields(), data, directory,
                                      max(batch_size, 64))
        teacher_time = cache["build_time_s"]
        console.print(f"teacher cache {directory}: {cache['status']}, {len(source)} rows "
                      f"({teacher_time:.1f} s)")
        if augment is not None:                 # replay exactly the views the teacher saw
            stored = source.extra("views")                            # (rows, P)
            pool.parameters = stored.reshape(-1, augment.views, stored.shape[1]) \
                .transpose(1, 0, 2)
    elif mode == "online":
        source = TimedSource(OnlineTeacher(tapped_teacher))

    evaluator = data.evaluator_factory()
    common = {"make_optimizer": make_optimizer, "make_schedule": make_schedule}

    def loaders(dataset: Dataset, num_labelled: int, num_transfer: int, fraction: float
                ) -> LoaderModule:
        views = augment.views if augment is not None else 1

        def sampler(rank: int, world: int) -> MixedBatchSampler:
            return MixedBatchSampler(num_labelled, num_transfer, batch_size, fraction,
                                     seed=seed, rank=rank, world_size=world, views=views)
        val_batches = sequential_batches(len(data.val), 64) if data.val is not None else []
        return LoaderModule(dataset, sampler, data.collate, data.val, val_batches)

    # the distilled student
    L.seed_everything(seed, verbose=False)
    tapped_student = Tapped(student, objective.student_taps, "student") \
        if objective.student_taps else student
    step = DistillationStep(tapped_student, objective.terms, teacher=source)
    history = ValHistory(plan.steps_per_epoch, offset_s=teacher_time)
    fraction = transfer_fraction if data.transfer is not None else 0.0
    num_transfer = len(data.transfer) if data.transfer is not None else 0
    fitted = fit(step, loaders(pool, len(data.labelled), num_transfer, fraction), evaluator,
                 plan.train, settings, run_dir=paths.root, role="student",
                 save=_save, callbacks=[*callbacks, history], **common)
    online = source if isinstance(source, TimedSource) else None
    if online is not None:
        teacher_time = online.seconds
    trained = tapped_student.remove() if isinstance(tapped_student, Tapped) else tapped_student
    tapped_teacher.remove()              # the user's teacher leaves without our hooks
    student_time = fitted.wall_time_s - (online.seconds if online is not None else 0.0)
    histories = {"student": history.records}

    # the baseline: the same student, its labelled data only, the task loss alone
    baseline_model, baseline_time, baseline_metrics = None, 0.0, {}
    if untouched is not None:
        L.seed_everything(seed, verbose=False)
        base_objective = build_objective("task", data.task_loss)
        base_history = ValHistory(plan.baseline_steps_per_epoch)
        base_pool = Pool(data.labelled, None) if not data.is_vqa else data.labelled
        if augment is not None:
            base_pool = PoolViews(base_pool, augment)
        base = fit(DistillationStep(untouched, base_objective.terms),
                   loaders(base_pool, len(data.labelled), 0, 0.0), data.evaluator_factory(),
                   plan.baseline, settings, run_dir=paths.root, role="baseline", save=_save,
                   callbacks=[*callbacks, base_history], **common)
        baseline_model, baseline_time = base.student, base.wall_time_s
        histories["baseline"] = base_history.records

    metrics: dict[str, float] = {}
    teacher_metrics: dict[str, float] = {}
    if data.val is not None:
        def score(model: nn.Module) -> dict[str, float]:
            return predict(model, data.val, data.collate, data.evaluator_factory()).metrics
        metrics, teacher_metrics = score(trained), score(teacher)
        if baseline_model is not None:
            baseline_metrics = score(baseline_model)
    forward_examples = cache.get("rows", 0) if cache.get("status") in ("built", "rebuilt") \
        else online.examples if online is not None else 0
    result = DistillResult(
        student=trained, metrics=metrics, teacher_metrics=teacher_metrics,
        baseline_metrics=baseline_metrics, history=histories,
        wall_time_s=time.perf_counter() - start, teacher_time_s=teacher_time,
        student_time_s=student_time, baseline_time_s=baseline_time,
        teacher_forward_examples=int(forward_examples), teacher_outputs=mode,
        teacher_outputs_reason=reason, cache=cache, steps=fitted.steps, run_dir=paths.root,
        baseline=baseline_model, metric=evaluator.name)
    _write_run_folder(result, paths, teacher, objective, plan)
    return result


def _save(path: Path, model: nn.Module) -> None:
    """A user's model as safetensors (its state dict; the hooks' wrapper left out)."""
    write_weights(path, model.model if isinstance(model, Tapped) else model,
                  {"saved_by": "vldistill.distill"})


# --- the run folder -----------------------------------------------------------------------


def _write_run_folder(result: DistillResult, paths: RunPaths, teacher: nn.Module,
                      objective: Objective, plan: _Plan) -> None:
    metric = result.metric
    rows = [("teacher", teacher, result.teacher_metrics, None),
            ("student (KD)", result.student, result.metrics, result.student_time_s)]
    if result.baseline is not None:
        rows.insert(1, ("student (no KD)", result.baseline, result.baseline_metrics,
                        result.baseline_time_s))
    table = [f"| model | val {metric} | parameters | train time (s) |", "|---|---|---|---|"]
    for name, model, values, seconds in rows:
        value = values.get(metric)
        table.append(f"| {name} | {'n/a' if value is None else f'{value:.2f}'} | "
                     f"{sum(p.numel() for p in model.parameters()):,} | "
                     f"{'' if seconds is None else f'{seconds:.1f}'} |")
    lines = [f"# vldistill.distill: {paths.root.name}", "\n".join(table)]
    if result.baseline_metrics and result.metrics:
        gain = result.metrics[metric] - result.baseline_metrics[metric]
        lines.append(f"KD gain: {gain:+.2f} points of val {metric} over the student trained "
                     "on the same labels without the teacher.")
    lines.append(
        f"Objective: {' + '.join(f'{t.weight} {t.name}' for t in objective.terms)}. Teacher "
        f"outputs: {result.teacher_outputs} ({result.teacher_outputs_reason}); teacher time "
        f"{result.teacher_time_s:.1f} s over {result.teacher_forward_examples} examples"
        + (f"; cache {result.cache['status']} in {result.cache['dir']}" if result.cache else "")
        + f". {result.steps} optimiser steps ({plan.steps_per_epoch} per epoch); whole call "
        f"{result.wall_time_s:.1f} s.")
    history_png = _plot_history(result, paths.root / "history.png")
    if history_png is not None:
        lines.append(f"![validation {metric} per epoch and over wall time]({history_png.name})")
    curves = plot_learning_curves(paths.logs, paths.learning_curves,
                                  title=f"{paths.root.name}: learning curves")
    if curves is not None:
        lines.append(f"## Learning curves\n\n![train loss and val metric]({curves.name})")
    lines.append("Files: `results.json`, `metrics.csv` (one row per validation of each model), "
                 "`logs/` (TensorBoard and CSV), `checkpoints/` (safetensors).")
    results = {
        "metric": metric, "metrics": result.metrics, "teacher_metrics": result.teacher_metrics,
        "baseline_metrics": result.baseline_metrics, "history": result.history,
        "wall_time_s": result.wall_time_s, "teacher_time_s": result.teacher_time_s,
        "student_time_s": result.student_time_s, "baseline_time_s": result.baseline_time_s,
        "teacher_forward_examples": result.teacher_forward_examples,
        "teacher_outputs": result.teacher_outputs,
        "teacher_outputs_reason": result.teacher_outputs_reason, "cache": result.cache,
        "steps": result.steps, "terms": objective.spec}
    _write_history_csv(result, paths.root / "metrics.csv")
    write_run_files(paths, results, "\n\n".join(lines))


def _write_history_csv(result: DistillResult, path: Path) -> None:
    records = [{"model": model, **record} for model, history in result.history.items()
               for record in history]
    columns = list(dict.fromkeys(key for record in records for key in record))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns or ["model"])
    writer.writeheader()
    writer.writerows(records)
    atomic_write_text(path, buffer.getvalue())


def _plot_history(result: DistillResult, out: Path) -> Path | None:
    if not any(result.history.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = result.metric
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for model, records in result.history.items():
        if records:
            for axis, x in zip(axes, ("epoch", "time_s")):
                axis.plot([r[x] for r in records], [r.get(metric, np.nan) for r in records],
                          marker="o", markersize=3, label=model)
    if metric in result.teacher_metrics:
        for axis in axes:
            axis.axhline(result.teacher_metrics[metric], color="black", linestyle="--",
                         linewidth=1, label="teacher")
    for axis, label in zip(axes, ("epoch (passes over the labelled set)",
                                  "wall time (s), teacher cache included")):
        axis.set_xlabel(label)
        axis.set_ylabel(f"val {metric}")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("validation during training")
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out
