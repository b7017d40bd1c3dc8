"""VQA distillation: `vldistill run RECIPE` with ``job: vqa_kd`` (the default).

    data -> teacher (train or load) -> for each seed: student without KD, student with KD
         (and the modality baselines) -> evaluate (VQA accuracy, agreement, parameters,
         latency, throughput) -> runs/<name>/ (see vldistill.core.runpaths)

Each stage is a named function; :func:`run_recipe` only calls them in order.
"""

from __future__ import annotations

import time

import lightning as L
import torch
from torch import nn

from vldistill.config import Recipe
from vldistill.core.console import console
from vldistill.core.errors import RecipeError
from vldistill.core.runpaths import RunPaths
from vldistill.eval.evaluators import agreement
from vldistill.jobs.base import open_run_folder, world_size
from vldistill.jobs.vqa_kd.cache import build, open_cache
from vldistill.jobs.vqa_kd.data import prepare_data
from vldistill.jobs.vqa_kd.depth_report import NAMES, subset_scores
from vldistill.jobs.vqa_kd.phases import select_phases, train_phases
from vldistill.jobs.vqa_kd.workspace import (
    ModelRun,
    RunResult,
    VQAWorkspace,
    check_teacher_matches,
    distill_terms,
    measure_models,
    task_terms,
    used_modalities,
)
from vldistill.kd.sources import OnlineTeacher, TeacherSource
from vldistill.kd.step import DistillationStep
from vldistill.models import build_from_checkpoint
from vldistill.models.checkpoint import load_checkpoint
from vldistill.train.resume import read_done


def train_teacher(job: VQAWorkspace) -> tuple[ModelRun, nn.Module]:
    """The recipe's teacher: loaded from ``teacher.checkpoint`` (checked against the data), or
    trained on every labelled training question."""
    recipe = job.recipe
    if recipe.teacher.checkpoint is not None:
        console.print(f"[bold]teacher[/]: loading {recipe.teacher.checkpoint}")
        checkpoint = load_checkpoint(recipe.teacher.checkpoint)
        check_teacher_matches(checkpoint.extra, job, recipe.teacher.checkpoint)
        teacher = build_from_checkpoint(checkpoint)
        run = ModelRun("teacher", None, job.evaluate(teacher, recipe.teacher.modality), 0.0,
                       recipe.teacher.checkpoint)
        return run, teacher
    seed = recipe.seeds[0]
    L.seed_everything(seed, verbose=False)
    model, save = job.build("teacher")
    console.print(f"[bold]teacher[/]: training on {len(job.data.teacher_train)} labelled "
                  f"questions, {recipe.teacher.train.max_steps} steps")
    step = DistillationStep(model, task_terms(recipe))
    modality = recipe.teacher.modality
    result = job.train("teacher", step, recipe.teacher.train,
                       job.dataset(job.data.teacher_train, modalities=(modality,)), seed=seed,
                       save=save, collate=job.collate_for(modality))
    run = ModelRun("teacher", seed, job.evaluate(result.student, modality), result.wall_time_s,
                   job.paths.weights("teacher"))
    return run, result.student


def train_student(job: VQAWorkspace, teacher: TeacherSource | None, seed: int,
                  phase: str | None = None, modality: str | None = None
                  ) -> tuple[ModelRun, nn.Module]:
    """A student with KD (teacher given: labelled + transfer set, in the recipe's phases when
    it has any) or without (labels only). ``modality`` overrides what a no-KD student sees (a
    modality baseline, e.g. the RGB student beside a depth student)."""
    recipe = job.recipe
    modality = modality or recipe.student.modality
    other = "" if modality == recipe.student.modality else f"-{modality}"
    role = f"student-{'kd' if teacher is not None else 'nokd'}{other}-seed{seed}"
    L.seed_everything(seed, verbose=False)
    if teacher is not None and recipe.distill.phases:
        fits, role = train_phases(job, teacher, seed, only=phase)
        student = fits[-1].student
        run = ModelRun(role, seed, job.evaluate(student, modality),
                       sum(f.wall_time_s for f in fits), job.paths.weights(role))
        return run, student
    model, save = job.build("student", modality)
    labelled, transfer = job.student_sets(teacher)
    if teacher is None:
        step = DistillationStep(model, task_terms(recipe))
        result = job.train(role, step, recipe.student.train, labelled, seed=seed, save=save,
                           collate=job.collate_for(modality))
    else:
        step = DistillationStep(model, distill_terms(recipe), teacher=teacher)
        result = job.train(role, step, recipe.student.train, labelled, transfer,
                           recipe.distill.transfer_fraction, seed=seed, save=save)
    run = ModelRun(role, seed, job.evaluate(result.student, modality), result.wall_time_s,
                   job.paths.weights(role))
    return run, result.student


def open_workspace(recipe: Recipe, resume: bool) -> VQAWorkspace:
    """The run folder (resolved recipe, versions), the data and the workspace of a VQA run."""
    if recipe.trainer.num_threads:
        torch.set_num_threads(recipe.trainer.num_threads)
    paths = open_run_folder(RunPaths.of(recipe.output_dir, recipe.name), recipe, resume)
    console.print(f"[bold]vldistill run[/] {recipe.name} (job {recipe.job}): seeds "
                  f"{recipe.seeds}, output {paths.root}" + (" (resuming)" if resume else ""))
    data = prepare_data(recipe.data, recipe.seeds[0], progress=True,
                        needs=used_modalities(recipe))
    console.print(f"data: {len(data.teacher_train)} teacher questions, {len(data.labelled)} "
                  f"labelled + {len(data.transfer)} transfer questions for the student, "
                  f"{len(data.val)} val; {len(data.answer_vocab)} answers. "
                  f"{data.val_coverage.summary()}")
    return VQAWorkspace(recipe, data, paths, resume)


def reuse_saved_teacher(job: VQAWorkspace) -> None:
    """A single phase reuses the run folder's trained teacher when it is there."""
    saved = job.paths.weights("teacher")
    if job.recipe.teacher.checkpoint is None and saved.is_file():
        job.recipe = job.recipe.model_copy(update={"teacher": job.recipe.teacher.model_copy(
            update={"checkpoint": saved})})


def run_recipe(recipe: Recipe, phase: str | None = None, resume: bool = False,
               recipe_hint: str = "RECIPE") -> RunResult:
    """Run the whole job; with ``phase``, only that phase of the KD student's phases (the
    teacher is reused from the run folder when it is there, the no-KD baseline is skipped).
    With ``resume``, continue the run in the run folder: finished models are loaded, an
    interrupted one continues from its last resume point. ``recipe_hint`` is how error
    messages name the recipe in the commands they suggest."""
    start = time.perf_counter()
    if recipe.job != "vqa_kd":
        raise RecipeError(f"recipe {recipe.name!r} says job: {recipe.job}; run_recipe runs VQA "
                          "distillation (job: vqa_kd). Run it with `vldistill run RECIPE`.")
    if phase is not None:
        select_phases(recipe.distill.phases, phase)   # fail before any work
    job = open_workspace(recipe, resume)
    if phase is not None:
        reuse_saved_teacher(job)
    teacher, teacher_model = train_teacher(job)
    metric = job.metric_name
    console.print(f"teacher: val {metric} {teacher.predictions.metrics[metric]:.2f}")
    # the KD students' teacher source: the model online, or its stored outputs
    kd_teacher: TeacherSource = (OnlineTeacher(teacher_model) if recipe.teacher.mode == "online"
                                 else open_cache(job, teacher_model, recipe_hint))
    baseline = recipe.distill.baseline and phase is None
    variants = [("student (no KD)", None, None)] if baseline else []
    if phase is None:
        variants += [(f"student ({modality}, no KD)", None, modality)
                     for modality in recipe.distill.modality_baselines]
    variants.append(("student (KD)", kd_teacher, None))
    students: dict[str, list[ModelRun]] = {name: [] for name, _, _ in variants}
    agreements: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    last: dict[str, tuple[nn.Module, str]] = {}
    for seed in recipe.seeds:
        for name, teacher_arg, modality in variants:
            run, model = train_student(job, teacher_arg, seed, phase, modality)
            last[name] = (model, modality or recipe.student.modality)
            students[name].append(run)
            agreements[name].append(agreement(run.predictions, teacher.predictions))
            console.print(f"{run.role}: val {metric} "
                          f"{run.predictions.metrics[metric]:.2f} "
                          f"({run.train_time_s:.0f} s)")
    # the students share one architecture; a modality baseline may read other channels
    efficiency = measure_models(job, {
        "teacher": (teacher_model, recipe.teacher.modality), "student": last["student (KD)"],
        **{name: last[name] for name, _, modality in variants if modality is not None}})
    students = {k: v for k, v in students.items() if v}
    extra = {}
    if recipe.student.modality == "depth":
        # the depth job's headline: accuracy per question subset (what depth can show)
        runs = {"teacher": [teacher], **students}
        extra["depth_subsets"] = subset_scores(       # rows in NAMES' order, then the rest
            {name: [run.predictions.indices for run in runs[name]]
             for name in [*NAMES, *runs] if name in runs},
            [s for group in job.val.groups for s in group], job.data.answer_vocab)
    return RunResult(recipe, job.paths.root, teacher, students, efficiency,
                     {k: v for k, v in agreements.items() if v},
                     time.perf_counter() - start, world_size(), extra=extra)


def build_cache_for_recipe(recipe: Recipe) -> dict:
    """`vldistill cache build`: the recipe's teacher (its checkpoint, the run folder's finished
    teacher, or trained now) run over the student's training data into the cache."""
    # resume=True: a teacher this recipe finished is loaded and an interrupted one continues
    # (its stamp must match the recipe); otherwise it is trained
    job = open_workspace(recipe, resume=False)
    job.resume = True
    done = read_done(job.paths.root, "teacher")
    if recipe.teacher.checkpoint is None and done and done["stamp"] == job.stamp_for("teacher"):
        console.print("teacher: loading the run folder's trained teacher")
    _, teacher = train_teacher(job)
    return build(job, teacher)
