"""The main job: `vldistill run RECIPE`.

    data -> teacher (train or load) -> for each seed: student without KD, student with KD
         -> evaluate (VQA accuracy, agreement, parameters, latency, throughput)
         -> runs/<name>/ results.json, report.md, plot, resolved recipe, versions, checkpoints

Each stage is a named function; ``run_recipe`` only calls them in order.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Callable

import lightning as L
import torch
import yaml
from vldistill.console import console
from torch import nn

from vldistill import __version__
from vldistill.config import (Recipe, TrainSettings, dump_recipe, input_channels,
                              nested_differences)
from vldistill.data.augment import ViewDataset
from vldistill.data.batches import VQACollator, VQAImageDataset
from vldistill.distill.losses import VQABCELoss
from vldistill.distill.step import DistillationStep, WeightedTerm
from vldistill.distill.cache import json_hash
from vldistill.errors import DataError, RecipeError
from vldistill.export.runtime import data_image_size
from vldistill.fileio import atomic_write
from vldistill.ranks import is_global_zero
from vldistill.eval.efficiency import Efficiency, measure
from vldistill.eval.evaluators import Predictions, agreement, build_evaluator, predict
from vldistill.models import MODELS, build_model
from vldistill.models.checkpoint import build_from_checkpoint, load_checkpoint, save_model
from vldistill.phases import build_terms, select_phases, train_phases
from vldistill.pipeline_data import RunData, prepare_data
from vldistill.train.fit import fit, mixed_loaders



@dataclass
class ModelRun:
    """One trained model: its role, seed, predictions on val and training wall time."""

    role: str
    seed: int | None
    predictions: Predictions
    train_time_s: float
    checkpoint: Path | None = None


@dataclass
class RunResult:
    recipe: Recipe
    run_dir: Path
    teacher: ModelRun
    students: dict[str, list[ModelRun]]                # "student (no KD)" / "student (KD)"
    efficiency: dict[str, Efficiency]
    agreement: dict[str, list[float]] = field(default_factory=dict)
    wall_time_s: float = 0.0
    world_size: int = 1
    teacher_label: str = "teacher"         # "base (frozen)" in a KV-prefix run
    trainable: dict[str, int] = field(default_factory=dict)   # trainable parameters by row


def world_size() -> int:
    """Processes in the run (Lightning's DDP sets up torch.distributed)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform(),
                "vldistill": __version__}
    for package in ("torch", "lightning", "numpy", "pydantic", "safetensors", "transformers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def make_run_dir(recipe: Recipe, resume: bool = False) -> Path:
    """The run folder; with ``resume`` the recipe saved there must match this one. Rank 0
    writes the resolved recipe and the library versions there (atomically)."""
    run_dir = recipe.output_dir / recipe.name
    if resume:
        check_same_recipe(run_dir, recipe)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    if is_global_zero():
        for name, text in (("recipe.yaml", dump_recipe(recipe)),
                           ("versions.json", json.dumps(library_versions(), indent=2) + "\n")):
            atomic_write(run_dir / name, lambda path, text=text: path.write_text(
                text, encoding="utf-8"))
    return run_dir


# recipe fields that change only what is displayed, not what is trained
DISPLAY_ONLY = ("trainer.progress_bar",)


def recipe_stamp(recipe: Recipe, role: str = "student") -> str:
    """A hash of what decides a role's training: for the teacher, its data, model, training,
    seed and task loss; for students, the whole recipe (display settings aside)."""
    data = yaml.safe_load(dump_recipe(recipe))
    for key in DISPLAY_ONLY:
        section, name = key.split(".")
        data.get(section, {}).pop(name, None)
    if role == "teacher":
        data = {"data": data["data"], "teacher": data["teacher"], "trainer": data["trainer"],
                "seed": data["seeds"][0],
                "task": [t.name for t in task_terms(recipe)]}
        data["teacher"].pop("mode", None)
        data["teacher"].pop("cache", None)
    return json_hash(data)[:16]


def check_same_recipe(run_dir: Path, recipe: Recipe) -> None:
    """Resuming continues the run in ``run_dir``: refuse when its recipe differs from this one.
    A run killed before it wrote anything (no recipe.yaml, no checkpoints) simply starts."""
    saved_path = run_dir / "recipe.yaml"
    if not saved_path.is_file():
        checkpoints = run_dir / "checkpoints"
        if checkpoints.is_dir() and any(checkpoints.iterdir()):
            raise RecipeError(f"--resume: {run_dir} has checkpoints but no recipe.yaml, so it "
                              "cannot be checked against this recipe. Restore the file, or run "
                              "without --resume to start over.")
        console.print(f"--resume: nothing was saved in {run_dir} yet (the run stopped before "
                      f"its first write); starting {recipe.name!r} from the beginning")
        return
    saved = yaml.safe_load(saved_path.read_text(encoding="utf-8"))
    current = yaml.safe_load(dump_recipe(recipe))
    differences = [key for key in nested_differences(saved, current)
                   if key not in DISPLAY_ONLY]
    if differences:
        raise RecipeError(
            f"--resume: this recipe differs from the one the run in {run_dir} was started with, "
            f"at {', '.join(differences[:8])}{' …' if len(differences) > 8 else ''}. Resume with "
            f"the same recipe ({saved_path}), or start a new run under another name "
            "(--set name=...).")


class VQAJob:
    """The datasets, collation and model factory of one recipe run."""

    def __init__(self, recipe: Recipe, data: RunData, run_dir: Path, resume: bool = False
                 ) -> None:
        self.recipe, self.data, self.run_dir, self.resume = recipe, data, run_dir, resume
        # what resume files must have been written for (see vldistill.train.resume)
        self.stamps = {"teacher": recipe_stamp(recipe, "teacher"),
                       "student": recipe_stamp(recipe)}
        self._teacher_stamps: dict[int, str] = {}
        # paired modalities: the KD student's batches carry the teacher's images as well
        self.collate = self.collate_for(recipe.student.modality, recipe.teacher.modality)
        self.val = VQAImageDataset(data.val, data.val_images, data.answer_vocab, data.tokenizer,
                                   modalities=used_modalities(recipe), depth=recipe.data.depth)
        self.sizes = {"num_answers": len(data.answer_vocab), "vocab_size": len(data.tokenizer)}

    def collate_for(self, modality: str, teacher_modality: str | None = None) -> VQACollator:
        return VQACollator(len(self.data.answer_vocab), modality, teacher_modality)

    def dataset(self, samples, labelled: bool = True, modalities: tuple[str, ...] | None = None
                ) -> VQAImageDataset:
        """Training items; by default in every modality a model of the recipe sees."""
        recipe = self.recipe
        modalities = modalities or used_modalities(recipe)
        return VQAImageDataset(samples, self.data.train_images, self.data.answer_vocab,
                               self.data.tokenizer, labelled=labelled, modalities=modalities,
                               depth=recipe.data.depth)

    @cached_property
    def labelled(self) -> VQAImageDataset:
        """The student's labelled subset (built once, shared by every seed)."""
        return self.dataset(self.data.labelled)

    @cached_property
    def transfer(self) -> VQAImageDataset | None:
        """The student's unlabelled transfer set, or None when the recipe has none."""
        return self.dataset(self.data.transfer, labelled=False) if self.data.transfer else None

    def base_student_datasets(self) -> list[VQAImageDataset]:
        """The student's training items in order (labelled, then transfer), without views."""
        return [self.labelled] + ([self.transfer] if self.transfer is not None else [])

    def student_sets(self, teacher: nn.Module | None = None):
        """(labelled, transfer) as the students train on them: each image's augmented views when
        ``data.augment.views`` >= 1, replayed from the teacher cache's parameters when the
        teacher is a cache (so student and teacher see the same pixels)."""
        augment = self.recipe.data.augment
        if not augment.views:
            return self.labelled, self.transfer
        stored = getattr(teacher, "view_parameters", None)
        labelled = ViewDataset(self.labelled, augment, 0, stored)
        transfer = (ViewDataset(self.transfer, augment, len(self.labelled), stored)
                    if self.transfer is not None else None)
        return labelled, transfer

    def build(self, role: str, modality: str | None = None
              ) -> tuple[nn.Module, Callable[[Path, nn.Module], None]]:
        side = self.recipe.teacher if role == "teacher" else self.recipe.student
        settings, modality = side.model, modality or side.modality
        params = self.resolved_params(role, modality)
        model = build_model(settings.name, params,
                            answers=self.data.answer_vocab.to_json(),
                            question_vocab=self.data.tokenizer.to_json(), **self.sizes)
        return model, self.saver(role, settings.name, params, modality)

    def resolved_params(self, role: str, modality: str | None = None) -> dict:
        """A role's model params with ``in_channels`` filled in from the modality it sees
        (default: the role's)."""
        side = self.recipe.teacher if role == "teacher" else self.recipe.student
        params = dict(side.model.params)
        if "in_channels" in MODELS.get(side.model.name).config_class.model_fields and \
                params.get("in_channels") is None:
            params["in_channels"] = input_channels(modality or side.modality,
                                                   self.recipe.data.depth)
        return params

    def saver(self, role: str, model_name: str, params: dict, modality: str
              ) -> Callable[[Path, nn.Module], None]:
        """save(path, model): a checkpoint that rebuilds ``model_name(params)`` and records
        the run's vocabularies, data settings, metric and modality."""
        extra = {"answer_vocab": self.data.answer_vocab.to_json(),
                 "question_vocab": self.data.tokenizer.to_json(),
                 "data": self.recipe.data.model_dump(mode="json"), "role": role,
                 "metric": self.recipe.eval.metric, "modality": modality,
                 # the modalities the run's data had to have (a sample missing one of them was
                 # skipped or refused): evaluation reads the same questions
                 "data_modalities": list(used_modalities(self.recipe))}

        def save(path: Path, trained: nn.Module) -> None:
            save_model(path, trained, model_name, params, self.sizes, extra)
        return save

    def train(self, role: str, step: DistillationStep, train: TrainSettings, labelled,
              transfer=None, transfer_fraction: float = 0.0, seed: int = 0, save=None,
              collate: VQACollator | None = None, stamp: str | None = None):
        """Fit ``step``; ``collate`` gives the batches the modalities of its models (default:
        the KD student's and its teacher's). ``stamp``: what resume files must have been
        written for (default: the recipe's and the step's teacher's)."""
        collate = collate or self.collate
        loaders = mixed_loaders(labelled, transfer, collate, self.val,
                                images_per_batch=train.images_per_batch,
                                transfer_fraction=transfer_fraction, seed=seed,
                                val_batch=self.recipe.eval.batch_images)
        return fit(step, loaders, self.evaluator(), train,
                   self.recipe.trainer, run_dir=self.run_dir, role=role, save=save,
                   resume=self.resume, stamp=stamp or self.stamp_for(role, step.teacher))

    def evaluator(self):
        return build_evaluator(self.recipe.eval.metric, self.data.answer_vocab)

    @property
    def metric_name(self) -> str:
        return self.evaluator().name

    def stamp_for(self, role: str, teacher: nn.Module | None = None) -> str:
        """The resume stamp of a fit: the recipe's, plus the teacher's weights when it has one
        (a student resumed against a retrained teacher would mix two teachers)."""
        base = self.stamps["teacher" if role == "teacher" else "student"]
        if teacher is None:
            return base
        key = id(teacher)
        if key not in self._teacher_stamps:
            from vldistill.distill.cache import teacher_fingerprint

            manifest = getattr(teacher, "manifest", None)     # a CachedTeacher
            self._teacher_stamps[key] = (manifest["fingerprint"]["teacher_weights"]
                                         if manifest is not None
                                         else teacher_fingerprint(teacher))[:16]
        return f"{base}-{self._teacher_stamps[key]}"

    def evaluate(self, model: nn.Module, modality: str = "rgb") -> Predictions:
        return predict(model, self.val, self.collate_for(modality), self.evaluator(),
                       self.recipe.eval.batch_images)


def used_modalities(recipe: Recipe) -> tuple[str, ...]:
    """Every modality a model of the recipe sees (teacher, students, modality baselines)."""
    return tuple(dict.fromkeys([recipe.teacher.modality, recipe.student.modality,
                                *recipe.distill.modality_baselines]))


def task_terms(recipe: Recipe) -> list[WeightedTerm]:
    """The label-only objective (teacher and no-KD student): the recipe's task terms at weight
    1, or VQA BCE when the recipe has none."""
    terms = [WeightedTerm(t.name, 1.0, t.term) for t in distill_terms(recipe)
             if t.term.needs_labels and not t.term.needs_teacher]
    return terms or [WeightedTerm("vqa_bce", 1.0, VQABCELoss())]


def distill_terms(recipe: Recipe) -> list[WeightedTerm]:
    return build_terms(recipe.distill.terms)


def check_teacher_matches(extra: dict, job: VQAJob, path: Path) -> None:
    """A reused teacher must speak the same answers and words and see the same images."""
    expected = {"answer vocabulary": (extra.get("answer_vocab"), job.data.answer_vocab.to_json()),
                "question vocabulary": (extra.get("question_vocab"), job.data.tokenizer.to_json()),
                "image size": (data_image_size(extra.get("data", {})),
                               data_image_size(job.recipe.data.model_dump(mode="json"))),
                "modality": (extra.get("modality", "rgb"), job.recipe.teacher.modality)}
    for field_name, (saved, current) in expected.items():
        if saved != current:
            raise DataError(
                f"teacher checkpoint {path} was trained with a different {field_name} than this "
                f"recipe's data ({_describe(saved)} vs {_describe(current)}); KD needs the same. "
                "Use the data settings the teacher was trained with, or retrain it.")


def _describe(value) -> str:
    return f"{len(value)} entries" if isinstance(value, list) else repr(value)


def train_teacher(job: VQAJob) -> tuple[ModelRun, nn.Module]:
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
                   job.run_dir / "checkpoints" / "teacher-last.safetensors")
    return run, result.student


def train_student(job: VQAJob, teacher: nn.Module | None, seed: int,
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
                       sum(f.wall_time_s for f in fits),
                       job.run_dir / "checkpoints" / f"{role}-last.safetensors")
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
                   job.run_dir / "checkpoints" / f"{role}-last.safetensors")
    return run, result.student


def measure_models(job: VQAJob, models: dict[str, tuple[nn.Module, str]]
                   ) -> dict[str, Efficiency]:
    """Latency at batch 1 (one image, one question) and throughput (questions/s) per model,
    each fed the modality it sees (``models``: name -> (model, modality))."""
    count = min(job.recipe.eval.throughput_images, len(job.val))
    results = {}
    for name, (model, modality) in models.items():
        collate = job.collate_for(modality)
        single = collate([job.val[0]])["inputs"]
        single = {**single, "question_tokens": single["question_tokens"][:1],
                  "question_lengths": single["question_lengths"][:1],
                  "image_index": single["image_index"][:1], "questions": single["questions"][:1],
                  "answers": single["answers"][:1]}
        batch = collate([job.val[i] for i in range(count)])
        results[name] = measure(model, single, batch["inputs"], len(batch["labelled"]),
                                job.recipe.eval.latency_repeats)
    return results


def run_recipe(recipe: Recipe, phase: str | None = None, resume: bool = False,
               recipe_hint: str = "RECIPE") -> RunResult:
    """Run the whole job; with ``phase``, only that phase of the KD student's phases (the
    teacher is reused from the run folder when it is there, the no-KD baseline is skipped).
    With ``resume``, continue the run in the run folder: finished models are loaded, an
    interrupted one continues from its last resume point. ``recipe_hint`` is how error
    messages name the recipe in the commands they suggest."""
    start = time.perf_counter()
    if phase is not None:
        select_phases(recipe.distill.phases, phase)   # fail before any work

    if recipe.trainer.num_threads:
        torch.set_num_threads(recipe.trainer.num_threads)
    run_dir = make_run_dir(recipe, resume)
    console.print(f"[bold]vldistill run[/] {recipe.name}: seeds {recipe.seeds}, output {run_dir}"
                  + (" (resuming)" if resume else ""))
    data = prepare_data(recipe.data, recipe.seeds[0], progress=True,
                        needs=used_modalities(recipe))
    console.print(f"data: {len(data.teacher_train)} teacher questions, {len(data.labelled)} "
                  f"labelled + {len(data.transfer)} transfer questions for the student, "
                  f"{len(data.val)} val; {len(data.answer_vocab)} answers. "
                  f"{data.val_coverage.summary()}")
    job = VQAJob(recipe, data, run_dir, resume)
    if phase is not None and recipe.teacher.checkpoint is None:
        saved = run_dir / "checkpoints" / "teacher-last.safetensors"
        if saved.is_file():
            recipe = recipe.model_copy(update={"teacher": recipe.teacher.model_copy(
                update={"checkpoint": saved})})
            job.recipe = recipe
    teacher, teacher_model = train_teacher(job)
    metric = job.metric_name
    console.print(f"teacher: val {metric} {teacher.predictions.metrics[metric]:.2f}")
    if recipe.kv_prefix is not None:
        from vldistill.pipeline_kv_prefix import run_kv_prefix

        return run_kv_prefix(job, teacher, teacher_model, start)
    kd_teacher: nn.Module = teacher_model
    if recipe.teacher.mode == "cache":
        from vldistill.pipeline_cache import open_cache

        kd_teacher = open_cache(job, teacher_model, recipe_hint)
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
    result = RunResult(recipe, run_dir, teacher, students, efficiency,
                       {k: v for k, v in agreements.items() if v},
                       time.perf_counter() - start, world_size())
    return result
