"""Method comparison on ShapesWorld (issue 4): which distillation loss helps the student most?

    .venv/bin/python benchmarks/methods.py [--seeds 0 1 2] [--methods NAME ...] [--out DIR]

With the default recipe's data, teacher and student, it trains the student once without KD and
once per method, for each seed. Every method gets the same steps, the same labelled subset and
the same transfer set. It prints a markdown table: mean ± std of val VQA accuracy over the
seeds, the per-seed values, and the share of the teacher-student gap each method recovers,
(acc - no KD) / (teacher - no KD). It also writes that table to OUT/methods.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from vldistill.config import LossTermSettings, load_recipe
from vldistill.core.runpaths import RunPaths
from vldistill.jobs.base import open_run_folder
from vldistill.jobs.vqa_kd.data import prepare_data
from vldistill.jobs.vqa_kd.run import train_student, train_teacher
from vldistill.jobs.vqa_kd.workspace import VQAWorkspace

TASK = {"loss": "vqa_bce", "weight": 0.5}
KD = {"loss": "kd", "weight": 0.5, "temperature": 1.0}
# DKD and LoCa need the ground-truth answer: on labelled rows they decouple / calibrate, and on
# the unlabelled transfer rows (nothing to decouple or calibrate without a label) they fall back
# to plain KD (`unlabelled: kd`). The "labelled rows only" variants skip the transfer rows.
DKD = {"loss": "dkd", "weight": 0.5, "alpha": 1.0, "beta": 2.0, "temperature": 1.0,
       "unlabelled": "kd"}
LOCA = {"loss": "loca", "weight": 0.5, "alpha": 0.9, "temperature": 1.0, "unlabelled": "kd"}
CONTRASTIVE = {"loss": "contrastive", "weight": 0.5, "feature": "image_embeds"}
# Each method: the task loss plus one distillation term, weights fixed a priori (not tuned per
# method); the combination adds the best logit term and the best feature term at those weights.
METHODS: dict[str, list[dict]] = {
    "KD": [TASK, KD],
    "DKD": [TASK, DKD],
    "LoCa": [TASK, LOCA],
    "feature (hint, cosine)": [TASK, {"loss": "feature", "weight": 0.5,
                                      "feature": "fused", "kind": "cosine"}],
    "contrastive (InfoNCE)": [TASK, CONTRASTIVE],
    "relational (RKD distance)": [TASK, {"loss": "relational", "weight": 0.5,
                                         "feature": "fused", "kind": "rkd_distance"}],
    "best combination: DKD + contrastive": [TASK, DKD, CONTRASTIVE],
    # not in the default comparison (run them with --methods)
    "KD + contrastive": [TASK, KD, CONTRASTIVE],
    "DKD, labelled rows only": [TASK, {**DKD, "unlabelled": "skip"}],
    "LoCa, labelled rows only": [TASK, {**LOCA, "unlabelled": "skip"}],
    "LoCa + feature": [TASK, LOCA, {"loss": "feature", "weight": 0.25, "feature": "fused",
                                    "kind": "cosine"}],
}
DEFAULT_METHODS = list(METHODS)[:7]


def table(teacher: float, rows: dict[str, list[float]]) -> str:
    baseline = statistics.fmean(rows["no KD"])
    lines = ["| method | VQA acc. val % (mean ± std) | per seed | gap recovered |",
             "|---|---|---|---|", f"| teacher | {teacher:.2f} | - | - |"]
    for name, values in rows.items():
        mean = statistics.fmean(values)
        std = statistics.pstdev(values) if len(values) > 1 else 0.0
        gap = 100 * (mean - baseline) / (teacher - baseline) if teacher != baseline else 0.0
        seeds = ", ".join(f"{v:.2f}" for v in values)
        lines.append(f"| {name} | {mean:.2f} ± {std:.2f} | {seeds} | {gap:+.1f} % |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/methods"))
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=DEFAULT_METHODS,
                        help="run only these methods (the no-KD student always runs)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="recipe override, as for `vldistill run --set`")
    args = parser.parse_args()
    start = time.perf_counter()
    recipe = load_recipe(None, [f"output_dir={args.out.parent}", f"name={args.out.name}",
                                "trainer.progress_bar=false", *args.overrides])
    paths = open_run_folder(RunPaths.of(recipe.output_dir, recipe.name), recipe)
    job = VQAWorkspace(recipe, prepare_data(recipe.data, recipe.seeds[0]), paths)
    teacher_run, teacher = train_teacher(job)
    teacher_accuracy = teacher_run.predictions.metrics["vqa_accuracy"]
    rows: dict[str, list[float]] = {"no KD": []}
    for seed in args.seeds:
        run, _ = train_student(job, None, seed)
        rows["no KD"].append(run.predictions.metrics["vqa_accuracy"])
        print(f"no KD seed {seed}: {rows['no KD'][-1]:.2f}", flush=True)
    for name in args.methods:
        terms = METHODS[name]
        slug = "".join(c if c.isalnum() else "_" for c in name.lower())
        job.recipe = recipe.model_copy(update={"distill": recipe.distill.model_copy(
            update={"terms": [LossTermSettings(**t) for t in terms]})})
        job.paths = RunPaths(paths.root / slug)
        job.paths.checkpoints.mkdir(parents=True, exist_ok=True)
        rows[name] = []
        for seed in args.seeds:
            run, _ = train_student(job, teacher, seed)
            rows[name].append(run.predictions.metrics["vqa_accuracy"])
            print(f"{name} seed {seed}: {rows[name][-1]:.2f}", flush=True)
    text = table(teacher_accuracy, rows)
    (paths.root / "methods.md").write_text(text + "\n")
    print(text)
    print(f"benchmark wall time: {time.perf_counter() - start:.0f} s (seeds {args.seeds})")


if __name__ == "__main__":
    main()
