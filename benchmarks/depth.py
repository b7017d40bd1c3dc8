"""Sensory substitution on ShapesWorld (issue 7): can an RGB teacher teach a depth student?

    .venv/bin/python benchmarks/depth.py [--seeds 0 1 2] [--out runs/depth] [--set k=v ...]

Runs ``recipes/depth_substitution.yaml`` (the RGB teacher; the depth student without KD; an RGB
student without KD; the depth student with KD in three phases) and prints val VQA accuracy per
question type for the four models, mean ± std over the seeds.

Depth shows shapes, sizes, counts, positions and distances, but not colours or patterns. Two
headline subsets keep colour and pattern out:
- "depth types": the questions of types shape, count, nearest/farthest, spatial and exists;
- "depth-answerable": of those, only questions whose wording and answers name no colour and no
  pattern ("What shape is the red object?" and "What colour is the nearest object?" are out,
  "How many circles are there?" and "What shape is the nearest object?" are in). This is the
  subset the goal is about: depth KD must beat the depth-only student by >= 5 points on it.
Colour and pattern questions are reported too: there a depth student can only learn answer
priors (KD may still shift them; that is not seeing).

Writes the table to OUT/depth.md as well.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

from vldistill.config import load_recipe
from vldistill.data.answers import AnswerVocab
from vldistill.data.batches import common_answer, group_by_image
from vldistill.data.sample import Sample
from vldistill.data.shapesworld_render import COLOURS, PATTERNS
from vldistill.eval.vqa_accuracy import vqa_accuracy
from vldistill.jobs.base import finish_run
from vldistill.jobs.vqa_kd.job import job_run
from vldistill.jobs.vqa_kd.run import run_recipe

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "depth_substitution.yaml"
DEPTH_TYPES = ("shape", "count", "nearest", "spatial", "exists")
APPEARANCE_TYPES = ("colour", "pattern")
# the colour and pattern names, and the synonyms ShapesWorld's annotators use for them
APPEARANCE_WORDS = frozenset(COLOURS) | frozenset(PATTERNS) | {
    "gray", "violet", "stripes", "stripy", "spotted", "polka", "dots", "solid"}
MODELS = {"teacher": "RGB teacher", "student (rgb, no KD)": "RGB student (no KD)",
          "student (no KD)": "depth student (no KD)", "student (KD)": "depth student (KD)"}


def needs_appearance(sample: Sample) -> bool:
    """Does the question or its most common answer name a colour or a pattern?"""
    text = f"{sample.question} {common_answer(sample.answers)}".lower()
    words = set(re.findall(r"[a-z]+", text))
    return bool(words & APPEARANCE_WORDS)


def subsets(samples: list[Sample]) -> dict[str, list[int]]:
    """Row indices of each reported subset (rows in the order predictions come)."""
    out: dict[str, list[int]] = {t: [] for t in (*DEPTH_TYPES, *APPEARANCE_TYPES)}
    out["depth types"], out["depth-answerable"], out["all"] = [], [], []
    for row, sample in enumerate(samples):
        if not sample.answers:
            continue
        out["all"].append(row)
        out.setdefault(sample.question_type, []).append(row)
        if sample.question_type in DEPTH_TYPES:
            out["depth types"].append(row)
            if not needs_appearance(sample):
                out["depth-answerable"].append(row)
    return {name: rows for name, rows in out.items() if rows}


def accuracy(indices, vocab: AnswerVocab, samples: list[Sample], rows: list[int]) -> float:
    return 100.0 * statistics.fmean(vqa_accuracy(vocab.answer(int(indices[r])),
                                                 samples[r].answers) for r in rows)


def table(scores: dict[str, dict[str, list[float]]], sizes: dict[str, int]) -> str:
    columns = list(next(iter(scores.values())))
    lines = ["| model | " + " | ".join(f"{c} (n={sizes[c]})" for c in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for model, by_subset in scores.items():
        cells = []
        for values in by_subset.values():
            std = statistics.pstdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.fmean(values):.2f} ± {std:.2f}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def saved_predictions(run_dir: Path, seeds: list[int], last_phase: str, val,
                      batch_images: int) -> dict[str, list]:
    """Predictions of the run folder's saved checkpoints (``--from-run``), by table row."""
    from vldistill.evaluate_checkpoint import checkpoint_predictions
    from vldistill.models.checkpoint import load_checkpoint

    roles = {"teacher": ["teacher"],
             "student (rgb, no KD)": [f"student-nokd-rgb-seed{s}" for s in seeds],
             "student (no KD)": [f"student-nokd-seed{s}" for s in seeds],
             "student (KD)": [f"student-kd-seed{s}-{last_phase}" for s in seeds]}
    return {name: [checkpoint_predictions(
                load_checkpoint(run_dir / "checkpoints" / f"{role}-last.safetensors"),
                val.samples, val.images, val.depth, batch_images)[2] for role in files]
            for name, files in roles.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/depth"))
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--from-run", action="store_true",
                        help="do not train: score the checkpoints already in the run folder")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="recipe override, as for `vldistill run --set`")
    args = parser.parse_args()
    start = time.perf_counter()
    recipe = load_recipe(args.recipe, [f"output_dir={args.out.parent}", f"name={args.out.name}",
                                       f"seeds={args.seeds}", *args.overrides])
    from vldistill.jobs.vqa_kd.data import prepare_data

    data = prepare_data(recipe.data, recipe.seeds[0], needs=("rgb", "depth"))
    samples = [s for group in group_by_image(data.val) for s in group]
    if args.from_run:
        val = SimpleNamespace(samples=data.val, images=data.val_images, depth=recipe.data.depth)
        last_phase = recipe.distill.phases[-1].name if recipe.distill.phases else ""
        runs = saved_predictions(args.out, recipe.seeds, last_phase, val,
                                 recipe.eval.batch_images)
        run_dir = args.out
    else:
        result = run_recipe(recipe)
        finish_run(job_run(result))   # the usual table, report.md
        runs = {"teacher": [result.teacher.predictions],
                **{k: [r.predictions for r in v] for k, v in result.students.items()}}
        run_dir = result.run_dir
    rows = subsets(samples)
    order = ["depth-answerable", "depth types", *DEPTH_TYPES, *APPEARANCE_TYPES, "all"]
    rows = {name: rows[name] for name in order if name in rows}
    runs = {name: runs[name] for name in [*MODELS, *runs] if name in runs}   # table order
    scores = {MODELS.get(name, name): {subset: [accuracy(p.indices, data.answer_vocab,
                                                         samples, r) for p in predictions]
                                       for subset, r in rows.items()}
              for name, predictions in runs.items()}
    text = table(scores, {name: len(r) for name, r in rows.items()})
    kd = scores[MODELS["student (KD)"]]["depth-answerable"]
    base = scores[MODELS["student (no KD)"]]["depth-answerable"]
    gains = [k - b for k, b in zip(kd, base)]
    text += (f"\n\nDepth KD - depth-only on depth-answerable questions: "
             f"{statistics.fmean(gains):+.2f} points mean (per seed "
             f"{', '.join(f'{g:+.2f}' for g in gains)}; seeds {recipe.seeds}).")
    (run_dir / "depth.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"benchmark wall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
