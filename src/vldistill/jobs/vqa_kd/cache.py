"""The teacher-output cache in the main job: what to store, where, and when to build it.

``teacher.mode: cache`` makes the KD students read the teacher's outputs from the cache instead
of running the teacher (vldistill.kd.cache). ``vldistill run`` builds a missing cache (or
finishes an interrupted build) and refuses a stale or damaged one; ``vldistill cache build``
(re)builds it explicitly.
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
from vldistill.core.ranks import is_global_zero
from vldistill.data.images import data_image_size
from vldistill.jobs.vqa_kd.workspace import VQAWorkspace
from vldistill.kd.cache import CachedTeacher, CacheError, CacheSpec, build_cache, data_fingerprint
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
        top_k=recipe.teacher.cache.top_k, fields=stored_fields(recipe),
        num_classes=len(job.data.answer_vocab))


def build(job: VQAWorkspace, teacher: nn.Module, spec: CacheSpec | None = None) -> dict:
    """Build (or finish, or rebuild for new settings) the cache; returns its manifest."""
    spec = spec or cache_spec(job, teacher)
    directory = cache_dir(job)
    settings = job.recipe.teacher.cache
    start = time.perf_counter()
    with Progress(TextColumn("teacher cache"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True,
                  disable=not job.recipe.trainer.progress_bar) as progress:
        task = progress.add_task("build", total=None)
        manifest = build_cache(
            directory, teacher, job.base_student_datasets(), job.collate, spec,
            job.recipe.data.augment, batch_images=job.recipe.eval.batch_images,
            shard_items=settings.shard_items,
            progress=lambda done, total: progress.update(task, completed=done, total=total))
    console.print(f"teacher cache: {manifest['rows']} rows ({manifest['views']} view(s) x "
                  f"{manifest['questions']} questions) in {directory}, built in "
                  f"{time.perf_counter() - start:.1f} s")
    return manifest


def wait_for_build(manifest_path: Path, timeout_s: float = 24 * 3600.0,
                   poll_s: float = 2.0) -> None:
    """Other ranks wait for rank 0's build (no process group exists yet at this point)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if json.loads(manifest_path.read_text()).get("complete"):
                return
        except (OSError, ValueError):
            pass                            # not written yet
        time.sleep(poll_s)
    raise CacheError(f"gave up after {timeout_s:.0f} s waiting for rank 0 to build the teacher "
                     f"cache ({manifest_path} never became complete).")


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
            complete = True        # let CachedTeacher report the damage
    if not complete:
        if is_global_zero():
            build(job, teacher, spec)
        else:
            wait_for_build(manifest_path)
    return CachedTeacher(directory, spec, job.base_student_datasets(), rebuild_hint=recipe_hint,
                         verify=job.recipe.teacher.cache.verify)
