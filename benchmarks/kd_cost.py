"""What distillation costs per training step, online and from the teacher-output cache (issue 5).

    .venv/bin/python benchmarks/kd_cost.py [--steps 60] [--large-width 192] [--out DIR]

With the default recipe's data and student, the same batches (batch_size, transfer
fraction) and the same number of steps, it times one optimiser step of
  (a) the student alone (task loss only),
  (b) KD with the teacher run online,
  (c) KD read from the teacher-output cache,
  (d) KD from the teacher's outputs for these very batches held in memory: the floor of any
      teacher source, i.e. what the KD term's own arithmetic costs,
for the default teacher architecture and for a larger one. The modes run interleaved in rounds
(a, b, c, d, a, b, c, d, ...) so that machine noise hits them alike; it prints median step times and
the ratios (b)/(a) and (c)/(a), the cache's read rate against the rate at which training
consumes rows, bytes per row on disk and the one-time build cost, then the top-k error table.

Step times do not depend on what the weights are, so the teachers here are not trained (the
student's transfer set is cut to 4,000 images to keep the cache builds short).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset

from vldistill.config import load_recipe
from vldistill.core.runpaths import RunPaths
from vldistill.data.batches import MixedBatchSampler
from vldistill.jobs.vqa_kd.cache import cache_spec
from vldistill.jobs.vqa_kd.data import prepare_data
from vldistill.jobs.vqa_kd.workspace import VQAWorkspace
from vldistill.kd import DistillationStep, KDLoss, VQABCELoss, WeightedTerm
from vldistill.kd.cache import build_cache, cached_teacher
from vldistill.models import build_model, count_parameters


def make_step(job: VQAWorkspace, teacher, seed: int = 0) -> tuple[DistillationStep, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    settings = job.recipe.student.model
    student = build_model(settings.name, settings.params, **job.sizes)
    task = WeightedTerm("vqa_bce", 0.5, VQABCELoss())
    terms = [task] if teacher is None else [task, WeightedTerm("kd", 0.5, KDLoss(1.0))]
    step = DistillationStep(student, terms, teacher=teacher).train()
    return step, torch.optim.AdamW(student.parameters(), lr=3e-3)


class HeldOutputs(torch.nn.Module):
    """The floor of any teacher source: the teacher's outputs for these exact batches, computed
    before timing and handed over from memory (not a usable teacher: it knows only them)."""

    def __init__(self, teacher, batches) -> None:
        super().__init__()
        with torch.no_grad():
            self.outputs = {id(b): teacher(**b["inputs"]) for b in batches}

    def teacher_outputs(self, batch):
        return self.outputs[id(batch)]


def time_steps(step, optimizer, batches) -> list[float]:
    times = []
    for batch in batches:
        start = time.perf_counter()
        loss = step(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps per mode and teacher")
    parser.add_argument("--round", type=int, default=10, help="steps per mode in each round")
    parser.add_argument("--large-width", type=int, default=192)
    parser.add_argument("--out", type=Path, default=Path("runs/kd_cost"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    recipe = load_recipe(None, [f"output_dir={args.out.parent}", f"name={args.out.name}",
                                "data.transfer_images=4000", "trainer.progress_bar=false",
                                *args.overrides])
    job = VQAWorkspace(recipe, prepare_data(recipe.data, 0), RunPaths(args.out))
    datasets = job.base_student_datasets()
    full = ConcatDataset(datasets)
    sampler = MixedBatchSampler(len(datasets[0]), len(datasets[1]),
                                recipe.student.train.batch_size,
                                recipe.distill.transfer_fraction, seed=0)
    plan = [b for epoch in range(100) for b in sampler.plan(epoch)]
    # batches are collated up front: data loading is the same for every mode and not timed
    batches = [job.collate([full[i] for i in b]) for b in plan[:args.steps + args.round]]
    rows_per_batch = statistics.fmean(len(b["labelled"]) for b in batches)

    teachers = {"default": recipe.teacher.model.params,
                "large": {**recipe.teacher.model.params, "width": args.large_width}}
    lines = ["| teacher | params | (a) student only ms | (b) online KD ms | (c) cached KD ms "
             "| (d) outputs in memory ms | (b)/(a) | (c)/(a) | (d)/(a) | cache build s "
             "| bytes/row | cache read rows/s | read / consume |", "|---" * 13 + "|"]
    student_params = None
    for name, params in teachers.items():
        torch.manual_seed(0)
        teacher = build_model(recipe.teacher.model.name, params, **job.sizes).eval()
        # the compact top-k cache (teacher.mode: topk_cache), whatever the recipe's mode
        spec = dataclasses.replace(cache_spec(job, teacher), top_k=recipe.teacher.cache.top_k)
        directory = args.out / f"cache-{name}"
        manifest = build_cache(directory, teacher, datasets, job.collate, spec,
                               recipe.data.augment, batch_images=recipe.eval.batch_images,
                               shard_items=recipe.teacher.cache.shard_items)
        cached = cached_teacher(directory, spec, datasets)
        held = HeldOutputs(teacher, batches)
        steps = {mode: make_step(job, t) for mode, t in
                 (("a", None), ("b", teacher), ("c", cached), ("d", held))}
        student_params = count_parameters(steps["a"][0].student)
        for mode in steps:                                  # warm-up, not timed
            time_steps(*steps[mode], batches[:args.round])
        times: dict[str, list[float]] = {mode: [] for mode in steps}
        for start in range(args.round, args.round + args.steps, args.round):
            for mode in steps:
                times[mode] += time_steps(*steps[mode], batches[start:start + args.round])
        median = {mode: statistics.median(values) * 1000 for mode, values in times.items()}
        reads = []
        for batch in batches:
            begin = time.perf_counter()
            cached.teacher_outputs(batch)
            reads.append(time.perf_counter() - begin)
        read_rate = rows_per_batch / statistics.median(reads)
        consume_rate = rows_per_batch / (median["a"] / 1000)
        lines.append(
            f"| {name} (width {params['width']}) | {count_parameters(teacher):,} "
            f"| {median['a']:.1f} | {median['b']:.1f} | {median['c']:.1f} | {median['d']:.1f} "
            f"| {median['b'] / median['a']:.2f} | {median['c'] / median['a']:.2f} "
            f"| {median['d'] / median['a']:.2f} "
            f"| {manifest['build_time_s']:.1f} | {cached.bytes_per_row:.0f} "
            f"| {read_rate:,.0f} | {read_rate / consume_rate:.0f}x |")
        print(lines[-1], flush=True)
    print(f"\nstudent: {student_params:,} parameters; {args.steps} timed steps per mode, "
          f"{recipe.student.train.batch_size} images (~{rows_per_batch:.0f} questions) "
          f"per batch, transfer fraction {recipe.distill.transfer_fraction}; "
          f"{len(full)} training images; torch threads {torch.get_num_threads()}")
    print("\n".join(lines))
    print()
    print(topk_table())


def topk_table() -> str:
    """Gradient error of kd / dkd / loca from top-k logits against the full logits."""
    from vldistill.kd import dkd_loss, kd_loss, loca_loss
    from vldistill.kd.topk import compress_logits, expand_logits

    generator = torch.Generator().manual_seed(0)
    count, classes = 512, 100
    target = torch.randint(0, classes, (count,), generator=generator)
    teacher = torch.randn(count, classes, generator=generator) * 2 - 4
    teacher[torch.arange(count), target] += 8                 # peaked, as a trained teacher
    student = torch.randn(count, classes, generator=generator) * 2
    lines = ["| k of 100 | T | kd | dkd | loca |", "|---|---|---|---|---|"]
    for k in (16, 32, 64):
        rebuilt = expand_logits(*compress_logits(teacher, k), classes)
        for temperature in (1.0, 2.0, 4.0):
            cells = []
            for loss in (lambda s, t: kd_loss(s, t, temperature),
                         lambda s, t: dkd_loss(s, t, target, 1.0, 2.0, temperature),
                         lambda s, t: loca_loss(s, t, target, 0.9, temperature)):
                s = student.clone().requires_grad_()
                exact, = torch.autograd.grad(loss(s, teacher), s)
                s = student.clone().requires_grad_()
                approximate, = torch.autograd.grad(loss(s, rebuilt), s)
                cells.append(f"{100 * float((exact - approximate).norm() / exact.norm()):.1f} %")
            lines.append(f"| {k} | {temperature:g} | " + " | ".join(cells) + " |")
    return "relative gradient error from top-k logits (peaked teacher rows):\n" + \
        "\n".join(lines)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
