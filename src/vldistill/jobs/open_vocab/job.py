"""The open-vocabulary job (``job: open_vocab``, seed 004 / KDEOV).

    frozen text encoder (MiniLM, or a CLIP / SigLIP text tower)
    -> teacher image encoder: trained contrastively into the text space (or a CLIP / SigLIP
       image tower from a folder)
    -> for each seed: a light student without KD (contrastive on its labelled images only) and
       with KD (the same, plus cosine / L2 to the teacher's image embeddings and the affinity
       term on labelled and unlabelled transfer images)
    -> zero-shot classification (seen and held-out combinations), retrieval, size, latency
    -> runs/<name>/ (see vldistill.core.runpaths)

The teacher's image embeddings of the students' training images come from a teacher source
(vldistill.kd.sources): by default computed once into an exact cache in
``<run>/teacher-cache/seed<seed>/`` (``distill.teacher_outputs: online`` runs the teacher on
every batch instead).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel
from torch import nn

from vldistill.core.console import console
from vldistill.core.ranks import is_global_zero
from vldistill.core.runpaths import RunPaths
from vldistill.data.image_text import ImageTextSet
from vldistill.jobs.base import (
    JobRun,
    RunOptions,
    execute,
    open_run_folder,
    recipe_stamp,
    save_progress,
    world_size,
)
from vldistill.jobs.open_vocab.encoders import (
    build_image_encoder,
    check_teacher_checkpoint,
    load_encoder,
    save_encoder,
)
from vldistill.jobs.open_vocab.recipe import (
    EXAMPLE,
    ImageEncoderSettings,
    OpenVocabRecipe,
    OVDistillSettings,
    load_open_vocab_recipe,
)
from vldistill.jobs.open_vocab.training import (
    evaluate,
    latency_ms,
    load_data,
    student_split,
    teacher_source,
    train_encoder,
)
from vldistill.models.open_vocab import image_encoder_parameters
from vldistill.models.text_towers import load_text_encoder
from vldistill.report.results import Panel, Point, plot_panels
from vldistill.train.fit import SaveFn

# -- the job


def run_open_vocab(recipe: OpenVocabRecipe, options: RunOptions = RunOptions()
                   ) -> dict[str, Any]:
    """The whole job, its run folder written; returns results.json's content."""
    return execute(OpenVocabJob(), recipe, options).results


class OpenVocabJob:
    """Open-vocabulary distillation: a light image encoder learns a frozen text encoder's space
    from a teacher image encoder; zero-shot classification and retrieval."""

    name: ClassVar[str] = "open_vocab"
    title: ClassVar[str] = "open-vocabulary distillation"
    schema: ClassVar[type[BaseModel]] = OpenVocabRecipe
    example: ClassVar[str] = EXAMPLE
    options: ClassVar[frozenset[str]] = frozenset({"resume"})

    def load(self, path: Path | None, overrides: Sequence[str] = ()) -> OpenVocabRecipe:
        return load_open_vocab_recipe(path, overrides)

    def run(self, recipe: OpenVocabRecipe, options: RunOptions) -> JobRun:
        start = time.perf_counter()
        paths = open_run_folder(RunPaths.of(recipe.output_dir, recipe.name), recipe,
                                options.resume)
        console.print(f"[bold]vldistill run[/] {recipe.name} (job open_vocab): seeds "
                      f"{recipe.seeds}, output {paths.root}")
        results = train_and_score(recipe, paths, options.resume)
        results["wall_time_s"] = time.perf_counter() - start
        text = report(results)
        if is_global_zero():
            text += f"\n\n![accuracy against size and latency]({cost_plot(results, paths).name})"
        summary = [markdown_table(results)] + ([line] if (line := goal_line(results)) else [])
        return JobRun(paths, results, text, summary)


def train_and_score(recipe: OpenVocabRecipe, paths: RunPaths, resume: bool = False
                    ) -> dict[str, Any]:
    """Teacher, then students with and without KD per seed; every number of the run. With
    ``resume``, finished models are loaded and an interrupted one continues (see
    vldistill.train.resume); resume files of another recipe or teacher are not used."""
    stamp = recipe_stamp(recipe)

    def saver(settings: ImageEncoderSettings, role: str) -> SaveFn:
        return lambda path, model: save_encoder(path, model, settings, text_encoder,
                                                recipe.data, role)

    text_encoder = load_text_encoder(recipe.text_encoder.name, recipe.text_encoder.path)
    train, val, classes = load_data(recipe.data)
    holdout = recipe.data.holdout if recipe.data.source == "shapesworld" else []
    console.print(f"data: {len(train)} training images, {len(val)} val; {len(classes)} "
                  f"classes, held out of training: {', '.join(holdout) or 'none'}")
    evaluate_model = lambda m: evaluate(m, text_encoder, val, classes, holdout,  # noqa: E731
                                        recipe.data.prompt, recipe.eval.batch_size)
    torch.manual_seed(recipe.seeds[0])
    if recipe.teacher_checkpoint is not None:
        teacher, _, metadata = load_encoder(recipe.teacher_checkpoint)
        check_teacher_checkpoint(metadata, recipe, recipe.teacher_checkpoint)
        teacher_time = 0.0
    else:
        teacher = build_image_encoder(recipe.teacher, text_encoder.dim)
        teacher_time = 0.0
        if recipe.teacher.kind not in ("clip", "siglip"):
            # the teacher learns from captions alone, whatever the students' weights
            fitted = train_encoder(teacher, text_encoder, train, recipe.teacher.train,
                                   OVDistillSettings(contrastive=1.0), recipe.seeds[0],
                                   "teacher", paths, recipe.trainer,
                                   save=saver(recipe.teacher, "teacher"), resume=resume,
                                   stamp=f"{stamp}-teacher")
            teacher, teacher_time = fitted.student, fitted.wall_time_s
    teacher.requires_grad_(False).eval()
    rows: dict[str, list[dict[str, Any]]] = {"teacher": [
        {**evaluate_model(teacher), "train_time_s": teacher_time, "seed": recipe.seeds[0]}]}
    console.print(f"teacher: {_summary(rows['teacher'][0])}")
    save_progress(paths, {"recipe": recipe.name, "rows": rows})
    students: dict[str, nn.Module] = {}
    for seed in recipe.seeds:
        labelled, transfer = student_split(train, recipe.data, seed)
        everything = labelled if transfer is None else ImageTextSet(
            torch.cat([labelled.images, transfer.images]), labelled.captions + transfer.captions,
            labelled.labels + transfer.labels)
        source = teacher_source(teacher, everything.images, recipe.distill.teacher_outputs,
                                paths.teacher_cache_of(f"seed{seed}"))
        teacher_stamp = source.weights_fingerprint()[:16]
        for name, kd in (("student (no KD)", False), ("student (KD)", True)):
            torch.manual_seed(seed)
            student = build_image_encoder(recipe.student, text_encoder.dim)
            weights = recipe.distill if kd else OVDistillSettings(contrastive=1.0)
            role = f"student-{'kd' if kd else 'nokd'}-seed{seed}"
            fitted = train_encoder(student, text_encoder, labelled, recipe.student.train,
                                   weights, seed, role, paths, recipe.trainer,
                                   transfer if kd else None, source if kd else None,
                                   save=saver(recipe.student, role), resume=resume,
                                   stamp=f"{stamp}-{teacher_stamp}")
            student = fitted.student
            row = {**evaluate_model(student), "train_time_s": fitted.wall_time_s,
                   "seed": seed}
            rows.setdefault(name, []).append(row)
            students[name] = student
            console.print(f"{name} seed {seed}: {_summary(row)}")
            save_progress(paths, {"recipe": recipe.name, "rows": rows})
    class_text = text_encoder([recipe.data.prompt.format(label=c) for c in classes])
    models = {"teacher": teacher, **students}
    results = {
        "recipe": recipe.name, "seeds": recipe.seeds, "classes": len(classes),
        "holdout": holdout, "val_images": len(val), "world_size": world_size(),
        "rows": [{"model": name, **_mean(runs),
                  "parameters": image_encoder_parameters(models[name]),
                  "latency_ms": latency_ms(models[name], val.images[:1], class_text,
                                           recipe.eval.latency_repeats),
                  "per_seed": runs} for name, runs in rows.items()]}
    return results


def _summary(row: dict[str, Any]) -> str:
    keys = [k for k in ("zero_shot_top1/seen", "zero_shot_top1/heldout", "i2t_R@1", "t2i_R@1")
            if k in row]
    return ", ".join(f"{k} {row[k]:.1f}" for k in keys)


def _mean(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in runs[0] if k not in ("seed",)]
    out = {}
    for key in keys:
        values = [run[key] for run in runs]
        out[key] = statistics.fmean(values)
        if len(values) > 1:
            out[f"{key}_std"] = statistics.pstdev(values)
    return out


COLUMNS = [("zero_shot_top1/seen", "top-1 seen"), ("zero_shot_top1/heldout", "top-1 held-out"),
           ("zero_shot_top5/heldout", "top-5 held-out"), ("i2t_R@1", "I→T R@1"),
           ("i2t_R@5", "I→T R@5"), ("i2t_R@10", "I→T R@10"), ("t2i_R@1", "T→I R@1"),
           ("t2i_R@5", "T→I R@5"), ("t2i_R@10", "T→I R@10")]


def markdown_table(results: dict[str, Any]) -> str:
    columns = [(k, label) for k, label in COLUMNS if any(k in r for r in results["rows"])]
    lines = ["| model | " + " | ".join(label for _, label in columns)
             + " | image params | latency b=1 ms |",
             "|---|" + "---|" * (len(columns) + 2)]
    for row in results["rows"]:
        cells = []
        for key, _ in columns:
            if key not in row:
                cells.append("-")
            elif f"{key}_std" in row:
                cells.append(f"{row[key]:.2f} ± {row[f'{key}_std']:.2f}")
            else:
                cells.append(f"{row[key]:.2f}")
        lines.append(f"| {row['model']} | " + " | ".join(cells)
                     + f" | {row['parameters']:,} | {row['latency_ms']:.2f} |")
    return "\n".join(lines)


def goal_line(results: dict[str, Any]) -> str:
    rows = {row["model"]: row for row in results["rows"]}
    key = "zero_shot_top1/heldout"
    if not all(key in rows.get(n, {}) for n in ("teacher", "student (KD)", "student (no KD)")):
        return ""
    teacher, kd, nokd = rows["teacher"], rows["student (KD)"], rows["student (no KD)"]
    kept = 100 * kd[key] / teacher[key] if teacher[key] else float("nan")
    size = teacher["parameters"] / kd["parameters"]
    met = kept >= 90 and size >= 10 and kd[key] > nokd[key]
    return (f"KD student: {kept:.1f} % of the teacher's held-out zero-shot top-1 with "
            f"1/{size:.1f} of its image-encoder parameters; without KD {nokd[key]:.2f}, with KD "
            f"{kd[key]:.2f}. Goal (>= 90 %, <= 1/10, beats no-KD): {'met' if met else 'NOT met'}.")


def cost_plot(results: dict[str, Any], paths: RunPaths) -> Path:
    """accuracy_vs_cost.png: the headline score (held-out zero-shot top-1 when there are
    held-out classes) against image-encoder parameters and latency, ± std over seeds."""
    key = next(k for k in ("zero_shot_top1/heldout", "zero_shot_top1/all", "i2t_R@1")
               if all(k in row for row in results["rows"]))

    def points(cost: str) -> list[Point]:
        return [Point(row["model"], row[cost], row[key], row[key] - row.get(f"{key}_std", 0),
                      row[key] + row.get(f"{key}_std", 0)) for row in results["rows"]]
    label = f"{key.replace('zero_shot_top1/', 'zero-shot top-1, ')} (%)"
    return plot_panels([Panel("image-encoder parameters", label, points("parameters")),
                        Panel("latency at batch 1, CPU (ms)", label, points("latency_ms"))],
                       paths.accuracy_vs_cost,
                       f"vldistill run {results['recipe']}: accuracy vs size and latency")


def report(results: dict[str, Any]) -> str:
    return "\n\n".join([f"# vldistill open-vocab: {results['recipe']}", markdown_table(results),
                        goal_line(results),
                        f"Zero-shot over {results['classes']} classes; held out of training: "
                        f"{', '.join(results['holdout']) or 'none'}; {results['val_images']} val "
                        f"images; seeds {results['seeds']}; {results['wall_time_s']:.0f} s."])
