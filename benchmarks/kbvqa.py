"""Knowledge-based VQA on ShapesWorld (issue 8): runs the KB-VQA job over settings and collects
its results.json; no training logic of its own.

    .venv/bin/python benchmarks/kbvqa.py retrieval [--out runs] [--set k=v ...]
    .venv/bin/python benchmarks/kbvqa.py readers [--kinds bm25 minilm trained] [--set k=v ...]

``retrieval``: ``recipes/kbvqa.yaml`` with ``reader: null`` (retrievers only), once with the
question alone as the query and once with the image as text appended (LaKo turns the image into
text; here the scene's caption), scoring the retrievers of ``--compare`` (default BM25 and the
pretrained MiniLM-L6; add ``trained distilled`` for the teacher trained on gold facts and the
BERT distilled from it, which the recipe's own run scores too) on the val knowledge questions:
recall@1/5/10, MRR, queries/s (encoding and search), parameters.

``readers``: the job once per retriever the readers read (``retriever.kind``), each run training
the base Fusion-in-Decoder reader on that retriever's top facts; the first run also trains the
base reader without knowledge. The recipe's own run (`vldistill run recipes/kbvqa.yaml`) adds the
large reader and the base distilled from it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vldistill.jobs.kbvqa.job import NAMES, headline, retrieval_table, run_kbvqa
from vldistill.jobs.kbvqa.recipe import load_kb_recipe

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "kbvqa.yaml"


def run(name: str, out: str, overrides: list[str]) -> dict:
    recipe = load_kb_recipe(RECIPE, [f"name={name}", f"output_dir={out}", *overrides])
    return run_kbvqa(recipe)


def retrieval(args) -> None:
    wall = 0.0
    for image_text in (False, True):
        results = run(f"kb-retrieval-image-text-{str(image_text).lower()}", args.out,
                      ["reader=null", f"retriever.image_text={str(image_text).lower()}",
                       f"retriever.kind={args.compare[0]}",
                       f"retriever.compare=[{', '.join(args.compare)}]", *args.overrides])
        wall += results["wall_time_s"]
        print(f"\nquery: the question{' + the image as text' if image_text else ' alone'} "
              f"({results['val_questions']} val / {results['train_questions']} train knowledge "
              f"questions, {results['facts']} facts)\n")
        print(retrieval_table(results).replace(" (readers)", ""))
        for line in headline(results):
            print(f"\n{line}")
    print(f"\nbenchmark wall time: {wall:.0f} s")


def readers(args) -> None:
    rows, wall = [], 0.0
    for number, kind in enumerate(args.kinds):
        results = run(f"kb-readers-{kind}", args.out, [
            f"retriever.kind={kind}", f"retriever.compare=[{kind}]", "reader.large=null",
            f"reader.no_knowledge={str(number == 0).lower()}", *args.overrides])
        wall += results["wall_time_s"]
        found = results["retrieval"][kind]
        for name, reader in results["readers"].items():
            source = "no knowledge" if name == "no knowledge" else \
                f"{NAMES[kind]} top-{load_kb_recipe(RECIPE).retriever.n_context}"
            rows.append((f"base, {source}", reader, found.get("R@1") if name == "base" else None))
        print(f"{kind}: done", flush=True)
    print("\n| reader | retriever R@1 | EM | F1 | VQA acc. | params | steps | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, m, recall in rows:
        print(f"| {name} | {'' if recall is None else f'{recall:.1f}'} | {m['EM']:.1f} | "
              f"{m['F1']:.1f} | {m['VQA']:.1f} | {m['params']:,} | {m['steps']} | "
              f"{m['train_s']:.0f} |")
    print(f"\nbenchmark wall time: {wall:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["retrieval", "readers"])
    parser.add_argument("--compare", nargs="+", default=["bm25", "minilm"], choices=list(NAMES),
                        help="retrieval: the retrievers scored (trained and distilled train "
                        "first; `vldistill run recipes/kbvqa.yaml` scores all four)")
    parser.add_argument("--kinds", nargs="+", default=["bm25", "minilm", "trained"],
                        choices=list(NAMES), help="readers: the retrievers they read")
    parser.add_argument("--out", default="runs")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="recipe override, e.g. --set reader.train.max_steps=500")
    args = parser.parse_args()
    retrieval(args) if args.part == "retrieval" else readers(args)


if __name__ == "__main__":
    main()
