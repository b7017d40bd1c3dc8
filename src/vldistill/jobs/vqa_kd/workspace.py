"""The workspace of a VQA run: its datasets, collation, model factory, training call and
evaluation, shared by the VQA distillation job and the KV-prefix job.

    VQAWorkspace(recipe, data, paths)
        .dataset(samples) / .labelled / .transfer / .student_sets(teacher)   training items
        .build(role)                 a model of the recipe and the saver of its checkpoints
        .train(role, step, ...)      one fit through the engine (Lightning, resume points)
        .evaluate(model)             predictions and metrics on val
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from torch import nn

from vldistill.config import Recipe, TrainSettings, input_channels
from vldistill.core.errors import DataError
from vldistill.core.hashing import json_hash, module_fingerprint
from vldistill.core.runpaths import RunPaths
from vldistill.data.augment import ViewDataset
from vldistill.data.batches import VQACollator, VQAImageDataset
from vldistill.data.images import data_image_size
from vldistill.eval.efficiency import Efficiency, measure
from vldistill.eval.evaluators import Predictions, build_evaluator, predict
from vldistill.jobs.base import recipe_data
from vldistill.jobs.vqa_kd.data import RunData
from vldistill.kd.losses import VQABCELoss
from vldistill.kd.sources import OnlineTeacher, TeacherSource
from vldistill.kd.step import DistillationStep, WeightedTerm, build_terms
from vldistill.models import MODELS, build_model
from vldistill.models.checkpoint import save_model
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
    extra: dict[str, Any] = field(default_factory=dict)   # a job's own results (JSON-ready)


def recipe_stamp(recipe: Recipe, role: str = "student") -> str:
    """A hash of what decides a role's training: for the teacher, its data, model, training,
    seed and task loss; for students, the whole recipe (display settings aside)."""
    data = recipe_data(recipe)
    if role == "teacher":
        data = {"data": data["data"], "teacher": data["teacher"], "trainer": data["trainer"],
                "seed": data["seeds"][0],
                "task": [t.name for t in task_terms(recipe)]}
        data["teacher"].pop("mode", None)
        data["teacher"].pop("cache", None)
    return json_hash(data)[:16]


class VQAWorkspace:
    """The datasets, collation and model factory of one recipe run."""

    def __init__(self, recipe: Recipe, data: RunData, paths: RunPaths, resume: bool = False
                 ) -> None:
        self.recipe, self.data, self.paths, self.resume = recipe, data, paths, resume
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
                                batch_size=train.batch_size,
                                transfer_fraction=transfer_fraction, seed=seed,
                                val_batch=self.recipe.eval.batch_images)
        return fit(step, loaders, self.evaluator(), train,
                   self.recipe.trainer, run_dir=self.paths.root, role=role, save=save,
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
        if isinstance(teacher, OnlineTeacher):
            teacher = teacher.model               # one memo entry per teacher model
        key = id(teacher)
        if key not in self._teacher_stamps:
            self._teacher_stamps[key] = (teacher.weights_fingerprint()
                                         if isinstance(teacher, TeacherSource)
                                         else module_fingerprint(teacher))[:16]
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


def check_teacher_matches(extra: dict, job: VQAWorkspace, path: Path) -> None:
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


def measure_models(job: VQAWorkspace, models: dict[str, tuple[nn.Module, str]]
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
