"""The classification job (``job: classification``): an image classifier distilled into a
smaller one, for users of config-driven tools.

    data (ShapesWorld single objects, class '<colour> <shape>'; or image folders)
    -> teacher: trained on every training label (or loaded from teacher.checkpoint)
    -> teacher source: its logits and pooled features computed once into an exact cache
       (teacher.mode: cache), or the teacher run at every step (online)
    -> for each seed: the student without KD (its labelled images, cross-entropy) and with KD
       (labelled + unlabelled transfer images, distill.terms)
    -> top-1 / top-5 accuracy, agreement with the teacher, parameters, latency, throughput
    -> runs/<name>/ (see vldistill.core.runpaths): the table, the KD gain line per seed,
       accuracy_vs_cost.png, learning curves, checkpoints

Every model trains through the engine (vldistill.train.fit): DDP, resume, curves.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from vldistill.core.console import console
from vldistill.core.errors import DataError
from vldistill.core.hashing import module_fingerprint, tensor_fingerprint
from vldistill.core.runpaths import RunPaths
from vldistill.data.classification import (
    ClassificationDataset,
    RowSubset,
    collate_classification,
    image_folder,
)
from vldistill.data.image_text import shapesworld_sets
from vldistill.eval.efficiency import measure
from vldistill.eval.evaluators import ClassificationEvaluator
from vldistill.eval.zero_shot import topk_accuracy
from vldistill.jobs.base import (
    JobRun,
    RunOptions,
    execute,
    open_run_folder,
    recipe_stamp,
    save_progress,
    world_size,
)
from vldistill.jobs.classification.recipe import (
    EXAMPLE,
    ClassificationRecipe,
    ClassifierSettings,
    load_classification_recipe,
)
from vldistill.kd.losses import CrossEntropyLoss
from vldistill.kd.sources import (
    OnlineTeacher,
    TeacherSource,
    row_cache,
    row_fingerprint,
)
from vldistill.kd.step import DistillationStep, WeightedTerm, build_terms
from vldistill.models.classifier import build_classifier, load_classifier, save_classifier
from vldistill.report.results import gain_line, markdown_table, plot, summarise
from vldistill.train.fit import FitResult, fit, mixed_loaders

STUDENTS = ("student (no KD)", "student (KD)")


@dataclass
class ClsData:
    train: ClassificationDataset          # every training image, labelled (the teacher's set)
    val: ClassificationDataset
    classes: list[str]
    image_size: int


def load_data(recipe: ClassificationRecipe) -> ClsData:
    settings = recipe.data
    if settings.source == "shapesworld":
        train, val, classes = shapesworld_sets(settings.shapesworld, [])
        index = {name: i for i, name in enumerate(classes)}
        sets = [ClassificationDataset(part.images, torch.tensor([index[x] for x in part.labels]),
                                      classes) for part in (train, val)]
        return ClsData(sets[0], sets[1], classes, settings.shapesworld.image_size)
    train = image_folder(settings.train, settings.image_size)
    val = image_folder(settings.val, settings.image_size)
    if train.classes != val.classes:
        only_train = sorted(set(train.classes) - set(val.classes))
        only_val = sorted(set(val.classes) - set(train.classes))
        raise DataError(f"the class folders of data.train ({settings.train}) and data.val "
                        f"({settings.val}) differ: only in train {only_train}, only in val "
                        f"{only_val}. Fix: give both splits the same class sub-folders.")
    return ClsData(train, val, list(train.classes), settings.image_size)


def student_rows(data: ClsData, recipe: ClassificationRecipe, seed: int
                 ) -> tuple[list[int], list[int]]:
    """(labelled rows, transfer rows) of the training set for ``seed`` (a seeded choice)."""
    count = len(data.train)
    order = np.random.default_rng([seed, 11]).permutation(count)
    labelled = count if recipe.data.labelled_images is None else recipe.data.labelled_images
    if labelled > count:
        raise DataError(f"data.labelled_images is {labelled} but the training split has "
                        f"{count} images; lower it or set it to null (all)")
    rest = order[labelled:]
    if recipe.data.transfer_images is not None:
        rest = rest[:recipe.data.transfer_images]
    return sorted(order[:labelled].tolist()), sorted(rest.tolist())


class ClassificationJob:
    """An image classifier distilled into a smaller one, with and without KD, over seeds."""

    name: ClassVar[str] = "classification"
    title: ClassVar[str] = "image-classification distillation"
    schema: ClassVar[type[BaseModel]] = ClassificationRecipe
    example: ClassVar[str] = EXAMPLE
    options: ClassVar[frozenset[str]] = frozenset({"resume"})

    def load(self, path: Path | None, overrides: Sequence[str] = ()) -> ClassificationRecipe:
        return load_classification_recipe(path, overrides)

    def run(self, recipe: ClassificationRecipe, options: RunOptions) -> JobRun:
        start = time.perf_counter()
        if recipe.trainer.num_threads:
            torch.set_num_threads(recipe.trainer.num_threads)
        paths = open_run_folder(RunPaths.of(recipe.output_dir, recipe.name), recipe,
                                options.resume)
        console.print(f"[bold]vldistill run[/] {recipe.name} (job classification): seeds "
                      f"{recipe.seeds}, output {paths.root}"
                      + (" (resuming)" if options.resume else ""))
        results = train_and_score(recipe, paths, options.resume)
        results["wall_time_s"] = time.perf_counter() - start
        text = report(results, paths)
        summary = [markdown_table(results)] + ([line] if (line := gain_line(results)) else [])
        return JobRun(paths, results, text, summary)


def run_classification(recipe: ClassificationRecipe, options: RunOptions = RunOptions()
                       ) -> dict[str, Any]:
    """The whole job, its run folder written; returns results.json's content."""
    return execute(ClassificationJob(), recipe, options).results


class Trainer:
    """Fits the run's classifiers through the engine, with the run's data, paths and stamp."""

    def __init__(self, recipe: ClassificationRecipe, data: ClsData, paths: RunPaths,
                 resume: bool) -> None:
        self.recipe, self.data, self.paths, self.resume = recipe, data, paths, resume
        self.stamp = recipe_stamp(recipe)

    def saver(self, settings: ClassifierSettings):
        settings_data = settings.model_dump(mode="json")
        return lambda path, model: save_classifier(path, model, settings_data,
                                                   self.data.classes, self.data.image_size)

    def fit(self, role: str, settings: ClassifierSettings, step: nn.Module,
            train_rows: list[int], transfer_rows: list[int] | None, seed: int,
            train_settings, stamp: str) -> FitResult:
        labelled = RowSubset(self.data.train, train_rows)
        transfer = RowSubset(self.data.train, transfer_rows, labelled=False) \
            if transfer_rows else None
        fraction = self.recipe.distill.transfer_fraction if transfer is not None else 0.0
        loaders = mixed_loaders(labelled, transfer, collate_classification, self.data.val,
                                batch_size=train_settings.batch_size,
                                transfer_fraction=fraction, seed=seed)
        return fit(step, loaders, ClassificationEvaluator(), train_settings,
                   self.recipe.trainer, run_dir=self.paths.root, role=role,
                   save=self.saver(settings), resume=self.resume, stamp=stamp)


def task_step(model: nn.Module) -> DistillationStep:
    """Cross-entropy on the labels alone: the teacher's and the no-KD student's objective."""
    return DistillationStep(model, [WeightedTerm("ce", 1.0, CrossEntropyLoss())])


def train_teacher(job: Trainer) -> tuple[nn.Module, float]:
    """The recipe's teacher: loaded from ``teacher.checkpoint`` (checked against the data), or
    trained on every training label. Returns (model, training seconds)."""
    recipe, data = job.recipe, job.data
    if recipe.teacher.checkpoint is not None:
        model, info = load_classifier(recipe.teacher.checkpoint)
        if info["classes"] != data.classes or info["image_size"] != data.image_size:
            raise DataError(
                f"teacher.checkpoint {recipe.teacher.checkpoint} was trained on other data: "
                f"{len(info['classes'])} classes at {info['image_size']} px, this recipe has "
                f"{len(data.classes)} at {data.image_size} px (or the class names differ). "
                "Fix: use a teacher trained on these classes, or leave teacher.checkpoint "
                "empty to train one.")
        console.print(f"[bold]teacher[/]: loaded {recipe.teacher.checkpoint}")
        return model.eval(), 0.0
    seed = recipe.seeds[0]
    L.seed_everything(seed, verbose=False)
    model = build_classifier(recipe.teacher.model.model_dump(mode="json"), len(data.classes))
    console.print(f"[bold]teacher[/]: training on {len(data.train)} labelled images, "
                  f"{recipe.teacher.train.max_steps} steps")
    fitted = job.fit("teacher", recipe.teacher.model, task_step(model),
                     list(range(len(data.train))), None, seed, recipe.teacher.train,
                     f"{job.stamp}-teacher")
    return fitted.student.eval(), fitted.wall_time_s


@torch.no_grad()
def outputs(model: nn.Module, images: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
    """A classifier's logits and pooled features of ``images``, in batches, eval mode."""
    model.eval()
    parts = [model(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return {"logits": torch.cat([p.logits for p in parts]),
            "image_embeds": torch.cat([p.image_embeds for p in parts])}


def teacher_source(job: Trainer, teacher: nn.Module) -> TeacherSource:
    """Online, or the exact cache of the teacher's outputs over every training image (rows =
    training-set indices, so every seed's labelled and transfer images are rows of it)."""
    recipe = job.recipe
    if recipe.teacher.mode == "online":
        return OnlineTeacher(teacher)
    images, batch = job.data.train.images, recipe.eval.batch_size
    fingerprint = row_fingerprint(module_fingerprint(teacher), tensor_fingerprint(images),
                                  "logits", batch_size=batch,
                                  classes=tensor_fingerprint(job.data.classes))
    directory = recipe.teacher.cache.dir or job.paths.teacher_cache
    shard = max(batch, recipe.teacher.cache.shard_items // batch * batch)
    start = time.perf_counter()
    source = row_cache(directory, fingerprint, len(images),
                       lambda first, last: outputs(teacher, images[first:last], batch),
                       command="`vldistill run RECIPE` (a stale cache is rebuilt)",
                       shard_rows=shard)
    console.print(f"teacher cache: {len(source)} images' logits and features in {directory} "
                  f"({time.perf_counter() - start:.1f} s)")
    return source


@torch.no_grad()
def score(model: nn.Module, data: ClsData, batch_size: int,
          teacher_predictions: torch.Tensor | None) -> tuple[dict[str, float], torch.Tensor]:
    """(top-1 / top-5 accuracy and agreement with the teacher on val, the predictions)."""
    logits = outputs(model, data.val.images, batch_size)["logits"]
    labels = data.val.labels
    accuracy = topk_accuracy(logits, labels, (1, min(5, logits.shape[1])))
    predictions = logits.argmax(dim=1)
    metrics = {"accuracy": accuracy[1], "top5_accuracy": accuracy[min(5, logits.shape[1])]}
    if teacher_predictions is not None:
        metrics["agreement"] = 100.0 * float((predictions == teacher_predictions).float().mean())
    return metrics, predictions


def train_and_score(recipe: ClassificationRecipe, paths: RunPaths, resume: bool = False
                    ) -> dict[str, Any]:
    data = load_data(recipe)
    console.print(f"data: {len(data.train)} training images, {len(data.val)} val; "
                  f"{len(data.classes)} classes")
    job = Trainer(recipe, data, paths, resume)
    batch = recipe.eval.batch_size
    teacher, teacher_time = train_teacher(job)
    teacher_metrics, teacher_predictions = score(teacher, data, batch, None)
    console.print(f"teacher: val accuracy {teacher_metrics['accuracy']:.2f}")
    runs: dict[str, list[dict[str, Any]]] = {"teacher": [
        {**teacher_metrics, "seed": recipe.seeds[0], "train_time_s": teacher_time,
         "checkpoint": str(paths.weights("teacher"))}]}
    source_start = time.perf_counter()
    source = teacher_source(job, teacher)
    runs["teacher"][0]["cache_time_s"] = time.perf_counter() - source_start
    kd_stamp = f"{job.stamp}-{source.weights_fingerprint()[:16]}"
    terms = build_terms(recipe.distill.terms)
    models: dict[str, nn.Module] = {"teacher": teacher}
    for seed in recipe.seeds:
        labelled, transfer = student_rows(data, recipe, seed)
        variants = [("student (no KD)", False)] if recipe.distill.baseline else []
        for name, kd in [*variants, ("student (KD)", True)]:
            role = f"student-{'kd' if kd else 'nokd'}-seed{seed}"
            L.seed_everything(seed, verbose=False)
            model = build_classifier(recipe.student.model.model_dump(mode="json"),
                                     len(data.classes))
            step = DistillationStep(model, terms, teacher=source) if kd else task_step(model)
            fitted = job.fit(role, recipe.student.model, step, labelled,
                             transfer if kd else None, seed, recipe.student.train,
                             kd_stamp if kd else job.stamp)
            metrics, _ = score(fitted.student, data, batch, teacher_predictions)
            runs.setdefault(name, []).append(
                {**metrics, "seed": seed, "train_time_s": fitted.wall_time_s,
                 "checkpoint": str(paths.weights(role))})
            models[name] = fitted.student
            console.print(f"{role}: val accuracy {metrics['accuracy']:.2f} "
                          f"({fitted.wall_time_s:.0f} s)")
            save_progress(paths, {"recipe": recipe.name, "runs": runs})
    return results(recipe, data, runs, models, source.kind, len(labelled), len(transfer))


def results(recipe: ClassificationRecipe, data: ClsData, runs: dict[str, list[dict[str, Any]]],
            models: dict[str, nn.Module], source_kind: str, labelled: int, transfer: int
            ) -> dict[str, Any]:
    """results.json: the rows in the shape every VQA-style report reads (report.results)."""
    images = data.val.images
    batch = min(recipe.eval.batch_size, len(images))
    teacher_accuracy = runs["teacher"][0]["accuracy"]
    rows = []
    for name, model_runs in runs.items():
        efficiency = measure(models[name], (images[:1],), (images[:batch],), batch,
                             recipe.eval.latency_repeats)
        accuracies = [run["accuracy"] for run in model_runs]
        agreements = [run["agreement"] for run in model_runs if "agreement" in run]
        rows.append({
            "model": name, "seeds": [run["seed"] for run in model_runs],
            "accuracy": summarise(accuracies),
            "top5_accuracy": summarise([run["top5_accuracy"] for run in model_runs]),
            "parameters": efficiency.parameters, "latency_ms": efficiency.latency_ms,
            "throughput_qps": efficiency.throughput,
            "kept_of_teacher_pct": 100.0 * float(np.mean(accuracies)) / teacher_accuracy
            if teacher_accuracy else None,
            "train_time_s": summarise([run["train_time_s"] for run in model_runs]),
            "agreement_with_teacher_pct": summarise(agreements) if agreements else None,
            "checkpoints": [run["checkpoint"] for run in model_runs]})
    out: dict[str, Any] = {
        "recipe": recipe.name, "job": "classification", "seeds": recipe.seeds,
        "metric": "accuracy", "rows": rows, "classes": len(data.classes),
        "train_images": len(data.train), "labelled_images": labelled,
        "transfer_images": transfer, "val_images": len(data.val),
        "teacher_source": source_kind,
        "teacher_cache_time_s": runs["teacher"][0].get("cache_time_s", 0.0),
        "world_size": world_size()}
    if set(STUDENTS) <= set(runs):
        gains = [kd["accuracy"] - base["accuracy"]
                 for kd, base in zip(runs["student (KD)"], runs["student (no KD)"])]
        out["kd_gain"] = {**summarise(gains), "kd_wins_every_seed": all(g > 0 for g in gains)}
    return out


def report(results: dict[str, Any], paths: RunPaths) -> str:
    image = plot(results, paths.accuracy_vs_cost)
    return "\n\n".join(line for line in [
        f"# vldistill run: {results['recipe']} (image classification)",
        markdown_table(results), gain_line(results),
        f"Top-1 accuracy on {results['val_images']} val images over {results['classes']} "
        f"classes, mean ± std (min–max) over seeds {results['seeds']}. The students may use the "
        f"labels of {results['labelled_images']} training images; the KD student also sees "
        f"{results['transfer_images']} unlabelled ones through the teacher, whose outputs come "
        f"from its {results['teacher_source']} source (cache built in "
        f"{results['teacher_cache_time_s']:.1f} s). Latency is the median of one image on "
        f"CPU; throughput counts images per second; whole run {results['wall_time_s']:.0f} s.",
        f"![accuracy against parameters and latency]({image.name})",
        "Files: `recipe.yaml` (resolved recipe), `versions.json`, `results.json`, "
        "`checkpoints/`, `logs/` (TensorBoard and CSV), `teacher-cache/`.",
    ] if line)
