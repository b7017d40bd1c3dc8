"""The KV-prefix job (``job: kv_prefix``, recipes/kv_prefix.yaml, seed 002).

    data -> base model (the recipe's teacher: trained in the run, or teacher.checkpoint)
         -> for each seed, each variant: base (frozen) + expert prefixes / LoRA / cross-attention
            trained on the labelled data with student.train's budget
         -> evaluate every variant (per question type: pattern questions are the style ones)

The frozen variant is the base itself. Each trained variant starts from the same base weights
and prints its trainable and total parameter counts. Training, checkpoints and resume are the
distillation pipeline's (vldistill.jobs.vqa_kd.workspace.VQAWorkspace.train): ``vldistill run RECIPE --resume``
continues an interrupted variant.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import lightning as L
from pydantic import BaseModel
from torch import nn

from vldistill.config import KVPrefixVariant, Recipe, load_recipe
from vldistill.core.console import console
from vldistill.core.errors import RecipeError
from vldistill.core.hashing import json_hash
from vldistill.eval.evaluators import agreement
from vldistill.jobs.base import JobRun, RunOptions, world_size
from vldistill.jobs.vqa_kd.job import job_run
from vldistill.jobs.vqa_kd.run import open_workspace, train_teacher
from vldistill.jobs.vqa_kd.workspace import (
    ModelRun,
    RunResult,
    VQAWorkspace,
    measure_models,
    task_terms,
)
from vldistill.kd.step import DistillationStep
from vldistill.models.checkpoint import read_model_spec
from vldistill.models.kv_prefix import (
    FeatureMemo,
    KVPrefixModelSettings,
    KVPrefixVQA,
    build_expert,
    count_parameters,
    describe_parameters,
)


def variant_settings(recipe: Recipe, base: dict, variant: KVPrefixVariant
                     ) -> KVPrefixModelSettings:
    """The registered ``kv_prefix`` model's settings for one variant of the recipe; ``base``:
    the base model's {name, params}."""
    kv = recipe.kv_prefix
    prefix = kv.prefix.model_copy(update={"enabled": variant.prefix,
                                          "use_expert": variant.use_expert})
    return KVPrefixModelSettings(
        base=base, expert=kv.expert, prefix=prefix, lora=kv.lora if variant.lora else None,
        train_cross_attention=variant.cross_attention)


def base_spec(job: VQAWorkspace) -> dict:
    """{name, params} of the base model: the loaded checkpoint's, or the recipe's teacher."""
    checkpoint = job.recipe.teacher.checkpoint
    if checkpoint is not None:
        name, params = read_model_spec(checkpoint)
        return {"name": name, "params": params}
    return {"name": job.recipe.teacher.model.name, "params": job.resolved_params("teacher")}


class PrefixModels:
    """Builds each variant on its own copy of the trained base, sharing one frozen expert and
    one feature memo (the expert sees the same images in every variant and seed)."""

    def __init__(self, job: VQAWorkspace, base: nn.Module) -> None:
        self.job, self.base = job, base
        self.spec = base_spec(job)
        self.expert = build_expert(job.recipe.kv_prefix.expert)
        self.memo = FeatureMemo(job.recipe.kv_prefix.expert.memo_images)

    def build(self, variant: KVPrefixVariant) -> tuple[KVPrefixVQA, KVPrefixModelSettings]:
        settings = variant_settings(self.job.recipe, self.spec, variant)
        model = KVPrefixVQA(copy.deepcopy(self.base), self.expert, settings)
        model.memo = self.memo
        return model, settings


def train_variant(job: VQAWorkspace, factory: PrefixModels, variant: KVPrefixVariant,
                  seed: int, stamp: str) -> tuple[ModelRun, nn.Module, int]:
    """(ModelRun, trained model, trainable parameters) of one variant and seed."""
    L.seed_everything(seed, verbose=False)
    model, settings = factory.build(variant)
    trainable, _ = count_parameters(model)
    console.print(f"[bold]{variant.name}[/]: {describe_parameters(model)}")
    role = f"kvprefix-{variant.name.replace('+', '-')}-seed{seed}"
    save = job.saver(role, "kv_prefix", settings.model_dump(mode="json"), "rgb")
    step = DistillationStep(model, task_terms(job.recipe))
    result = job.train(role, step, job.recipe.student.train, job.labelled, seed=seed,
                       save=save, collate=job.collate_for("rgb"),
                       stamp=f"{stamp}-{json_hash(variant.model_dump())[:8]}")
    run = ModelRun(role, seed, job.evaluate(result.student), result.wall_time_s,
                   job.paths.weights(role))
    return run, result.student, trainable


def run_kv_prefix(recipe: Recipe, resume: bool = False) -> RunResult:
    """Train (or load) the base model, then train and evaluate the recipe's variants; a
    RunResult whose "teacher" row is the base (named after the variants that train nothing,
    e.g. "frozen")."""
    start = time.perf_counter()
    job = open_workspace(recipe, resume)
    base_run, base_model = train_teacher(job)
    console.print(f"base model: val {job.metric_name} "
                  f"{base_run.predictions.metrics[job.metric_name]:.2f}")
    factory = PrefixModels(job, base_model)
    metric = job.metric_name
    students: dict[str, list] = {}
    agreements: dict[str, list[float]] = {}
    trainable: dict[str, int] = {}
    last: dict[str, tuple[nn.Module, str]] = {}
    # resume files belong to this recipe and these base weights
    stamp = job.stamp_for("student", base_model)
    base_label = " / ".join(v.name for v in recipe.kv_prefix.variants if not v.trains) or \
        "base (frozen)"
    for variant in (v for v in recipe.kv_prefix.variants if v.trains):
        for seed in recipe.seeds:
            run, model, trainable[variant.name] = train_variant(job, factory, variant, seed,
                                                                stamp)
            students.setdefault(variant.name, []).append(run)
            agreements.setdefault(variant.name, []).append(
                agreement(run.predictions, base_run.predictions))
            last[variant.name] = (model, "rgb")
            by_type = {k.split("/", 1)[1]: v for k, v in run.predictions.metrics.items()
                       if k.startswith(f"{metric}/")}
            shown = ", ".join(f"{kind} {by_type[kind]:.2f}" for kind in ("style", "pattern")
                              if kind in by_type)
            console.print(f"{variant.name} (seed {seed}): val {metric} "
                          f"{run.predictions.metrics[metric]:.2f}"
                          f"{', ' + shown if shown else ''} ({run.train_time_s:.0f} s)")
    for model, _ in last.values():
        if isinstance(model, KVPrefixVQA):          # latency includes the expert's pass
            model.memo = FeatureMemo(0)
    efficiency = measure_models(job, {"teacher": (base_model, "rgb"), **last})
    return RunResult(recipe, job.paths.root, base_run, students, efficiency, agreements,
                     time.perf_counter() - start, world_size(), teacher_label=base_label,
                     trainable={base_label: 0, **trainable},
                     extra={"kv_prefix": {
                         "val_questions": dict(Counter(s.question_type for s in job.data.val)),
                         "expert_parameters": sum(p.numel()
                                                  for p in factory.expert.parameters())}})


# -- the headline: what the prefixes add on the new task


STYLE_TYPES = ("style", "pattern")


def _cell(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.2f}" if len(values) == 1 else f"{mean:.2f} ± {statistics.pstdev(values):.2f}"


def pattern_and_style(run: ModelRun, counts: dict[str, int], metric: str) -> float:
    """Accuracy over the style and pattern questions together (question-weighted)."""
    total = sum(counts.get(t, 0) for t in STYLE_TYPES)
    if not total:
        raise RecipeError("val has no style or pattern questions, so the KV-prefix headline "
                          "has nothing to score; keep data.style_questions > 0")
    return sum(run.predictions.metrics[f"{metric}/{t}"] * counts.get(t, 0)
               for t in STYLE_TYPES) / total


def prefix_comparison(result: RunResult, results: dict) -> tuple[str, list[str], dict]:
    """(markdown table, headline lines, numbers for results.json, extending its ``kv_prefix``
    entry: val questions per type, the expert's parameters): accuracy on style, object
    pattern, both together and all questions per variant, mean ± std over seeds; the prefixes'
    gain over the frozen model on pattern + style questions and the trainable share, counted
    against all parameters and against the trained model alone (the frozen expert apart); the
    expert's own share of the gain (prefix vs the no-expert control)."""
    metric = results.get("metric", "vqa_accuracy")
    counts = results["kv_prefix"]["val_questions"]
    expert = results["kv_prefix"]["expert_parameters"]
    rows = {row["model"]: row for row in results["rows"]}
    scores: dict[str, dict[str, list[float]]] = {}
    for name, runs in [(result.teacher_label, [result.teacher]), *result.students.items()]:
        scores[name] = {
            "style": [r.predictions.metrics[f"{metric}/style"] for r in runs],
            "pattern": [r.predictions.metrics[f"{metric}/pattern"] for r in runs],
            "pattern+style": [pattern_and_style(r, counts, metric) for r in runs],
            "all": [r.predictions.metrics[metric] for r in runs]}
    lines = ["| model | style | object pattern | pattern + style | all | trainable | total "
             "params | latency b=1 ms |", "|---|---|---|---|---|---|---|---|"]
    for name, score in scores.items():
        row = rows[name]
        share = 100 * row["trainable_parameters"] / row["parameters"]
        lines.append(f"| {name} | {_cell(score['style'])} | {_cell(score['pattern'])} | "
                     f"{_cell(score['pattern+style'])} | {_cell(score['all'])} | "
                     f"{row['trainable_parameters']:,} ({share:.2f} %) | "
                     f"{row['parameters']:,} | {row['latency_ms']:.2f} |")
    numbers: dict = {**results["kv_prefix"], "scores": scores}
    headline = []
    frozen = result.teacher_label
    if "prefix" in scores and frozen in scores:
        gain = statistics.fmean(scores["prefix"]["pattern+style"]) - \
            statistics.fmean(scores[frozen]["pattern+style"])
        trained = rows["prefix"]["trainable_parameters"]
        total = rows["prefix"]["parameters"]
        without_expert = total - expert
        numbers.update(gain=gain, trainable_share=trained / total,
                       trainable_share_without_expert=trained / without_expert)
        headline.append(
            f"Prefixes vs the frozen model on pattern + style questions: {gain:+.2f} points, "
            f"training {trained:,} parameters: {100 * trained / total:.2f} % of all "
            f"{total:,}, {100 * trained / without_expert:.2f} % of the {without_expert:,} "
            f"of the model without its frozen expert ({expert:,}).")
    if "prefix" in scores and "prefix-no-expert" in scores:
        per_seed = [a - b for a, b in zip(scores["prefix"]["style"],
                                          scores["prefix-no-expert"]["style"])]
        numbers["expert_gain_style"] = per_seed
        headline.append(f"The expert's share (prefix - prefix-no-expert, style questions): "
                        f"{statistics.fmean(per_seed):+.2f} points (per seed "
                        f"{', '.join(f'{g:+.2f}' for g in per_seed)}).")
    headline.append(f"{counts.get('style', 0)} style and {counts.get('pattern', 0)} pattern "
                    f"questions of {sum(counts.values())} in val.")
    return "\n".join(lines), headline, numbers


class KVPrefixJob:
    """A frozen base model taught a new task through an expert's key/value prefixes (and
    optionally LoRA), beside the frozen base and a no-expert control."""

    name: ClassVar[str] = "kv_prefix"
    title: ClassVar[str] = "KV-prefix modulation"
    schema: ClassVar[type[BaseModel]] = Recipe
    example: ClassVar[str] = "recipes/kv_prefix.yaml"
    options: ClassVar[frozenset[str]] = frozenset({"resume"})

    def load(self, path: Path | None, overrides: Sequence[str] = ()) -> Recipe:
        return load_recipe(path, overrides)

    def run(self, recipe: Recipe, options: RunOptions) -> JobRun:
        return kv_prefix_run(run_kv_prefix(recipe, options.resume))


def kv_prefix_run(result: RunResult) -> JobRun:
    """The VQA run's results, report and summary, with the KV-prefix headline (pattern and
    style questions, the gain, the trainable share with the expert apart) added."""
    run = job_run(result)
    if not any(t in run.results["kv_prefix"]["val_questions"] for t in STYLE_TYPES):
        return run                  # a KV-prefix run on data without the style task
    table, headline, numbers = prefix_comparison(result, run.results)
    run.results["kv_prefix"] = numbers
    run.report += ("\n\n## Pattern and style questions\n\n" + table + "\n\n" +
                   "\n".join(f"- {line}" for line in headline))
    run.summary += [table, *headline]
    return run
