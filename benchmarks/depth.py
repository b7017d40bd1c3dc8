"""Sensory substitution on ShapesWorld (issue 7): can an RGB teacher teach a depth student?

    .venv/bin/python benchmarks/depth.py [--seeds 0 1 2] [--out runs/depth] [--set k=v ...]

Runs ``recipes/depth_substitution.yaml`` (the RGB teacher; the depth student without KD; an RGB
student without KD; the depth student with KD in three phases) over seeds and prints the job's
own subset table (``vldistill.jobs.vqa_kd.depth_report``, also in the run's report.md and
results.json): val VQA accuracy per question subset for the four models, mean ± std over the
seeds. This script adds no computation of its own.

Depth shows shapes, sizes, counts, positions and distances, but not colours or patterns. Two
headline subsets keep colour and pattern out:
- "depth types": the questions of types shape, count, nearest/farthest, spatial and exists;
- "depth-answerable": of those, only questions whose wording and answers name no colour and no
  pattern ("What shape is the red object?" and "What colour is the nearest object?" are out,
  "How many circles are there?" and "What shape is the nearest object?" are in). This is the
  subset the goal is about: depth KD must beat the depth-only student by >= 5 points on it.
Colour and pattern questions are reported too: there a depth student can only learn answer
priors (KD may still shift them; that is not seeing).

Writes the table to OUT/depth.md as well. ``--from-run`` trains nothing: it prints the table
from the run folder's results.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vldistill.config import load_recipe
from vldistill.jobs.base import finish_run
from vldistill.jobs.vqa_kd.depth_report import depth_comparison
from vldistill.jobs.vqa_kd.job import job_run
from vldistill.jobs.vqa_kd.run import run_recipe

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "depth_substitution.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/depth"))
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--from-run", action="store_true",
                        help="do not train: print the table from the run folder's results.json")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="recipe override, as for `vldistill run --set`")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.from_run:
        results = json.loads((args.out / "results.json").read_text(encoding="utf-8"))
    else:
        recipe = load_recipe(args.recipe, [f"output_dir={args.out.parent}",
                                           f"name={args.out.name}", f"seeds={args.seeds}",
                                           *args.overrides])
        run = job_run(run_recipe(recipe))
        finish_run(run)               # the usual results.json and report.md
        results = run.results
    if "depth_subsets" not in results:
        raise SystemExit(f"{args.out}: the run has no depth subsets (its student does not read "
                         "depth)")
    table, headline = depth_comparison(results["depth_subsets"])
    text = "\n\n".join([table, *headline]) + f"\n\nSeeds {results['seeds']}."
    (args.out / "depth.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"benchmark wall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
