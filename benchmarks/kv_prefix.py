"""KV-prefix modulation on ShapesWorld (issue 9): do an expert's prefixes teach a frozen model?

    .venv/bin/python benchmarks/kv_prefix.py [--seeds 0 1 2] [--out runs] [--set k=v ...]

Runs ``recipes/kv_prefix.yaml``: a base VQA model trained on ShapesWorld's eight question types
and then frozen; the new task is image-level style questions ("What is the main pattern in
this picture?"), which the base never saw. Variants, each trained with the same budget on the
same 5,000 images:
- frozen: the base as it is;
- prefix: EfficientNet-Lite0 (ImageNet weights, frozen) -> MLP -> 8 K/V prefix tokens in each
  of the base's two cross-attention layers; only the MLP trains;
- prefix+lora: the same plus LoRA adapters (r = 8) on the base's queries, keys and answer MLP;
- prefix-no-expert: the same generator fed zeros, i.e. learned constant prefixes: the control
  that says how much comes from the expert's features rather than from training on the task.

Prints val VQA accuracy on style questions, object pattern questions, all pattern/style
questions together and overall (mean ± std over seeds), trainable and total parameters (the
total counts the frozen expert), and latency at batch 1 (the expert's pass included). Goal:
prefixes lift pattern/style accuracy by >= 5 points while training <= 5 % of the parameters,
judged with the frozen expert counted and without it. The table and the headline lines are the
job's own (``vldistill.jobs.kv_prefix.job.prefix_comparison``, in the run's report.md); this
script only runs the job over seeds. Writes them to OUT/<name>/kv_prefix.md too.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vldistill.config import load_recipe
from vldistill.jobs.base import finish_run
from vldistill.jobs.kv_prefix.job import kv_prefix_run, run_kv_prefix

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "kv_prefix.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="recipe override, e.g. --set student.train.max_steps=500")
    args = parser.parse_args()
    start = time.perf_counter()
    recipe = load_recipe(RECIPE, [f"seeds={args.seeds}", f"output_dir={args.out}",
                                  *args.overrides])
    result = run_kv_prefix(recipe)
    run = kv_prefix_run(result)          # the job's own report: what `vldistill run` writes
    finish_run(run)
    numbers = run.results["kv_prefix"]
    # the job's own table and headline lines (the rich results table aside)
    lines = [item for item in run.summary if isinstance(item, str)]
    if "gain" in numbers:
        shares = (100 * numbers["trainable_share"],
                  100 * numbers["trainable_share_without_expert"])
        verdict = ["met" if numbers["gain"] >= 5 and share <= 5 else "NOT met"
                   for share in shares]
        lines.append(f"Goal (>= +5 points, <= 5 % of the parameters trained): {verdict[0]} "
                     f"counting the frozen expert ({shares[0]:.2f} %), {verdict[1]} without it "
                     f"({shares[1]:.2f} %).")
    lines.append(f"Seeds {args.seeds}; wall time {time.perf_counter() - start:.0f} s.")
    report = "\n".join(lines)
    print(report)
    (result.run_dir / "kv_prefix.md").write_text(report + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
