"""The teacher-output cache in the main job: what to store, where, and when to build it.

``teacher.mode: cache`` (exact) or ``topk_cache`` (compact) makes the KD students read the
teacher's outputs from the cache instead of running the teacher (vldistill.kd.cache).
``vldistill run`` builds a missing cache (or finishes an interrupted build) and refuses a stale
or damaged one; ``vldistill cache build`` (re)builds it explicitly. In a distributed run every
rank builds its share of the shards and rank 0 writes the manifest (vldistill.kd.store).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from vldistill.config import Recipe
from vldistill.core.console import console
from vldistill.core.hashing import json_hash, module_fingerprint
from vldistill.core.ranks import rank_and_world
from vldistill.data.images import data_image_size
from vldistill.jobs.vqa_kd.workspace import VQAWorkspace
from vldistill.kd.cache import (
    CachedTeacher,
    CacheSpec,
    build_cache,
    cached_teacher,
    data_fingerprint,
)
from vldistill.kd.step import build_terms


def cache_dir(job: VQAWorkspace) -> Path:
    return job.recipe.teacher.cache.dir or job.paths.teacher_cache


def stored_fields(recipe: Recipe) -> tuple[str, ...]:
    """Teacher outputs the recipe's distillation terms (and phases) read, besides logits."""
    terms = list(recipe.distill.terms) + [t for p in recipe.distill.phases for t in p.terms]
    fields = {field for term in build_terms(terms) for field in term.term.teacher_fields()}
    return tuple(sorted(fields - {"logits"}))


def cache_spec(job: VQAWorkspace, teacher: nn.Module) -> CacheSpec:
    recipe = job.recipe
    augment = recipe.data.augment
    return CacheSpec(
        teacher=module_fingerprint(teacher),
        teacher_model=recipe.teacher.model.model_dump(mode="json"),
        data=data_fingerprint(job.base_student_datasets()),
        preprocessing={"image_size": data_image_size(recipe.data.model_dump(mode="json")),
                       "teacher_modality": recipe.teacher.modality,
                       **({"depth": recipe.data.depth.model_dump()}
                          if recipe.teacher.modality == "depth" else {}),
                       "answer_vocab": json_hash(job.data.answer_vocab.to_json()),
                       "question_vocab": json_hash(job.data.tokenizer.to_json())},
        augmentation=augment.model_dump() if augment.views else {"views": 0},
        top_k=recipe.teacher.cache.top_k if recipe.teacher.mode == "topk_cache" else None,
        fields=stored_fields(recipe),
        num_classes=len(job.data.answer_vocab))


def build(job: VQAWorkspace, teacher: nn.Module, spec: CacheSpec | None = None) -> dict:
    """Build (or finish, or rebuild for new settings) the cache; returns its manifest. Every
    rank of a distributed run builds its share."""
    spec = spec or cache_spec(job, teacher)
    directory = cache_dir(job)
    settings = job.recipe.teacher.cache
    rank, world = rank_and_world()
    start = time.perf_counter()
    with Progress(TextColumn(f"teacher cache ({spec.kind})"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True,
                  disable=not job.recipe.trainer.progress_bar) as progress:
        task = progress.add_task("build", total=None)
        manifest = build_cache(
            directory, teacher, job.base_student_datasets(), job.collate, spec,
            job.recipe.data.augment, batch_images=job.recipe.eval.batch_images,
            shard_items=settings.shard_items, rank=rank, world=world,
            progress=lambda done, total: progress.update(task, completed=done, total=total))
    shared = f", {world} ranks" if world > 1 else ""
    console.print(f"teacher cache ({spec.kind}): {manifest['rows']} rows ({manifest['views']} "
                  f"view(s) x {manifest['questions']} questions) in {directory}, built in "
                  f"{time.perf_counter() - start:.1f} s{shared}")
    return manifest


def open_cache(job: VQAWorkspace, teacher: nn.Module, recipe_hint: str = "RECIPE") -> CachedTeacher:
    """The cached teacher for the KD students: build the cache when there is none (or finish an
    interrupted build); a stale or damaged cache is refused (see CachedTeacher)."""
    spec = cache_spec(job, teacher)
    directory = cache_dir(job)
    manifest_path = directory / "manifest.json"
    complete = False
    if manifest_path.is_file():
        try:
            complete = bool(json.loads(manifest_path.read_text()).get("complete"))
        except ValueError:
            complete = True        # let the reader report the damage
    if not complete:
        build(job, teacher, spec)
    # a cache built just now was hashed as it was written: opening it checks sizes only
    return cached_teacher(directory, spec, job.base_student_datasets(), rebuild_hint=recipe_hint,
                          verify=job.recipe.teacher.cache.verify and complete)
