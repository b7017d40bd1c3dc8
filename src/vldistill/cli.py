"""The `vldistill` command: run | validate | eval | export | predict | bench | cache | data.

Heavy libraries (Lightning, matplotlib) load inside the commands that need them, so
`vldistill validate` and `vldistill --help` stay quick.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from vldistill.core.console import console
from vldistill.core.errors import DataError, RecipeError, VldistillError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Distil large vision-language models into small, fast students.")
data_app = typer.Typer(no_args_is_help=True, help="Generate and export built-in data.")
app.add_typer(data_app, name="data")
cache_app = typer.Typer(no_args_is_help=True, help="The teacher-output cache.")
app.add_typer(cache_app, name="cache")
bench_app = typer.Typer(no_args_is_help=True, help="Measurements of trained models.")
app.add_typer(bench_app, name="bench")
kb_app = typer.Typer(no_args_is_help=True, help="The fact knowledge base: indexes and search.")
app.add_typer(kb_app, name="kb")

RecipeArg = Annotated[Optional[Path], typer.Argument(
    help="recipe YAML; omitted: the built-in default (recipes/default.yaml)")]
SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", help="override a recipe field: --set distill.transfer_fraction=0.5")]


def _fail(error: Exception) -> None:
    console.print(f"[bold red]error:[/] {error}")
    raise typer.Exit(code=2)


@app.command()
def validate(recipe: RecipeArg = None, set_: SetOption = None) -> None:
    """Check a recipe without running it; prints the resolved recipe."""

    from vldistill.config import dump_recipe
    from vldistill.jobs.table import job_for_recipe

    try:
        job = job_for_recipe(recipe, set_ or [])
        text = dump_recipe(job.load(recipe, set_ or []))
    except VldistillError as error:
        _fail(error)
    console.print(text, markup=False)
    console.print(f"[green]recipe {recipe or '(built-in default)'} is valid[/] (job {job.name}: "
                  f"{job.title})")


@app.command()
def run(recipe: RecipeArg = None, set_: SetOption = None,
        phase: Annotated[Optional[str], typer.Option(
            help="run only this phase of distill.phases (it starts from the previous phase's "
                 "checkpoint in the run folder)")] = None,
        resume: Annotated[bool, typer.Option(
            "--resume", help="continue the run in the run folder where it stopped: finished "
                             "models are loaded, an interrupted one continues from its last "
                             "resume point")] = False,
        teacher: Annotated[Optional[str], typer.Option(
            "--teacher", help="online: run the teacher at every step; cache: distil from the "
                              "exact teacher-output cache (built when missing); topk_cache: "
                              "from the compact top-k cache; same as --set "
                              "teacher.mode=...")] = None) -> None:
    """Run a recipe: the job its `job:` names (vqa_kd by default; kv_prefix, kbvqa,
    open_vocab, classification), then its evaluation and report in runs/<name>/."""

    from vldistill.core.ranks import is_global_zero
    from vldistill.jobs.base import RunOptions, execute
    from vldistill.jobs.table import job_for_recipe

    start = time.perf_counter()
    try:
        job = job_for_recipe(recipe, set_ or [])
        given = {"phase": phase is not None, "resume": resume, "teacher": teacher is not None}
        refused = sorted(flag for flag, used in given.items() if used and flag not in job.options)
        if refused:
            raise RecipeError(f"--{', --'.join(refused)} do(es) not apply to job {job.name} "
                              f"({job.title}); it takes "
                              f"{', '.join('--' + o for o in sorted(job.options)) or 'none of them'}.")
        extra = [f"teacher.mode={teacher}"] if teacher is not None else []
        resolved = job.load(recipe, [*(set_ or []), *extra])
        outcome = execute(job, resolved, RunOptions(phase, resume,
                                                    _recipe_hint(recipe, set_ or [])))
    except VldistillError as error:
        _fail(error)
    if not is_global_zero():
        return
    for item in outcome.summary:
        console.print(item, markup=False) if isinstance(item, str) else console.print(item)
    console.print(f"report: {outcome.paths.report}  results: {outcome.paths.results}")
    console.print(f"main job wall time: {time.perf_counter() - start:.1f} s")


def _recipe_hint(recipe: Path | None, overrides: list[str]) -> str:
    """How to name this recipe in a command an error message suggests."""
    return " ".join([shlex.quote(str(recipe)) if recipe else "",
                     *(f"--set {shlex.quote(o)}" for o in overrides)]).strip()


@app.command("export")
def export(checkpoint: Annotated[Path, typer.Argument(help="a .safetensors checkpoint")],
           out: Annotated[Optional[Path], typer.Option(
               "--out", help="export folder; default: <checkpoint name>-onnx beside it")] = None,
           format: Annotated[str, typer.Option("--format", help="onnx")] = "onnx",
           int8: Annotated[bool, typer.Option("--int8", help="also write a dynamically "
                                              "quantised int8 model")] = False,
           tolerance: Annotated[float, typer.Option(
               help="largest logit difference allowed between onnxruntime and PyTorch")] = 1e-4,
           int8_tolerance: Annotated[float, typer.Option(
               "--int8-tolerance", help="the same for the int8 model")] = 0.25
           ) -> None:
    """Export a trained student to ONNX (optionally int8), checked against PyTorch."""

    from vldistill.export.onnx import export_onnx
    from vldistill.models import build_from_checkpoint
    from vldistill.models.checkpoint import load_checkpoint


    if format != "onnx":
        _fail(ValueError(f"--format {format!r}: only onnx is supported"))
    target = out or checkpoint.with_name(checkpoint.stem + "-onnx")
    try:
        loaded = load_checkpoint(checkpoint)
        if loaded.extra.get("modality", "rgb") != "rgb":
            raise DataError(f"{checkpoint} is a model that sees {loaded.extra['modality']}; "
                            "ONNX export and its runtime read RGB images only. Use the "
                            "checkpoint itself (vldistill eval / predict / bench latency).")
        model = build_from_checkpoint(loaded)
        kept = {k: loaded.extra[k] for k in ("data", "role", "metric") if k in loaded.extra}
        report = export_onnx(model, target, int8=int8, tolerance=tolerance,
                             int8_tolerance=int8_tolerance, metadata=kept)
    except VldistillError as error:
        _fail(error)
    console.print(f"exported to {report.directory}: {', '.join(report.files)}")
    console.print(f"fp32 ONNX vs PyTorch: max |logit difference| {report.fp32_max_abs_diff:.2e} "
                  f"(tolerance {report.tolerance:g})")
    if report.int8_max_abs_diff is not None:
        console.print(f"int8 ONNX vs PyTorch: max |logit difference| "
                      f"{report.int8_max_abs_diff:.3f}, top-1 agreement "
                      f"{100 * report.int8_top1_agreement:.1f} %")


@app.command("predict")
def predict_command(
        model: Annotated[Path, typer.Option("--model", help="an export folder (vldistill "
                                            "export) or a .safetensors checkpoint")],
        image: Annotated[Path, typer.Option("--image", help="the image file (for a model "
                                            "that sees depth: a 16-bit depth PNG, mm)")],
        question: Annotated[str, typer.Option("--question", help="the question")],
        int8: Annotated[bool, typer.Option("--int8", help="use the export's int8 model")] = False
        ) -> None:
    """Answer one question about one image; says whether it is judged unanswerable."""
    from vldistill.export.runtime import model_kind, predict_export

    try:
        if model_kind(model, int8) == "export":
            result = predict_export(model, image, question, int8)
        else:     # PyTorch model code loads only for a checkpoint
            from vldistill.predict import predict_checkpoint

            result = predict_checkpoint(model, image, question)
    except VldistillError as error:
        _fail(error)
    console.print(f"answer: {result.answer}  (confidence {result.confidence:.3f})")
    if result.unanswerable_score is not None or result.unanswerable:
        score = ("" if result.unanswerable_score is None
                 else f" (unanswerable score {result.unanswerable_score:.3f})")
        console.print(f"unanswerable: {'yes' if result.unanswerable else 'no'}{score}")


@bench_app.command("latency")
def bench_latency_command(
        model: Annotated[list[str], typer.Option(
            "--model", help="NAME=PATH: a .safetensors checkpoint, an export folder, or "
                            "FOLDER:int8 for its int8 model; repeat for each model")],
        threads: Annotated[int, typer.Option(help="torch / onnxruntime threads")] = 2,
        repeats: Annotated[int, typer.Option(help="timed calls per model")] = 100,
        questions: Annotated[int, typer.Option(help="validation questions scored")] = 200
        ) -> None:
    """p50 / p95 latency at batch 1, peak memory and VQA accuracy, each model in its own
    process."""

    from vldistill.bench import bench_latency, latency_table


    try:
        rows = bench_latency(model, threads, repeats, questions)
    except VldistillError as error:
        _fail(error)
    console.print(latency_table(rows), markup=False)


@cache_app.command("build")
def cache_build(recipe: RecipeArg = None, set_: SetOption = None) -> None:
    """Run the recipe's teacher once over the student's training data and store its outputs
    (top-k logits and the features the losses need). Resumes an interrupted build; rebuilds a
    cache made for other settings."""

    from vldistill.config import load_recipe
    from vldistill.jobs.vqa_kd.run import build_cache_for_recipe

    start = time.perf_counter()
    try:
        manifest = build_cache_for_recipe(load_recipe(recipe, set_ or []))
    except VldistillError as error:
        _fail(error)
    console.print(f"cache build wall time: {time.perf_counter() - start:.1f} s "
                  f"(teacher inference {manifest['build_time_s']:.1f} s)")


@app.command("eval")
def evaluate(checkpoint: Annotated[Path, typer.Argument(help="a .safetensors checkpoint")]) -> None:
    """Evaluate a saved model on the validation split of the data it was trained with."""

    from vldistill.evaluate_checkpoint import evaluate_checkpoint


    try:
        metrics = evaluate_checkpoint(checkpoint)
    except VldistillError as error:
        _fail(error)
    table = Table(title=f"{checkpoint}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:,.2f}" if isinstance(value, float) else str(value))
    console.print(table)


@data_app.command("shapesworld")
def data_shapesworld(
        out: Annotated[Path, typer.Option("--out", help="folder to write the export into")],
        recipe: Annotated[Optional[Path], typer.Option(help="take ShapesWorld settings from "
                                                       "this recipe")] = None,
        set_: SetOption = None,
        format: Annotated[str, typer.Option(
            "--format", help="vqa: the VQAv2 layout; vizwiz: the VizWiz layout; rgbd: the "
            "RGB-D layout (images/, depth/ in millimetres, {split}.json); artquest: CSV "
            "(image, question, answer, question_id, question_type)")] = "vqa",
        style_questions: Annotated[int, typer.Option(
            "--style-questions", min=0, max=2, help="artquest: image-level style questions "
            "per image")] = 2
        ) -> None:
    """Export ShapesWorld in the VQAv2 layout (questions/annotations JSON, images/, depth/,
    plus facts.jsonl and captions.jsonl), in the VizWiz layout (--format vizwiz), in the RGB-D
    layout (--format rgbd) or as ArtQuest CSVs with style questions (--format artquest)."""

    from vldistill.config import load_recipe
    from vldistill.data.export import FORMATS, export_shapesworld
    from vldistill.data.shapesworld import load_shapesworld


    if format not in FORMATS:
        _fail(ValueError(f"--format {format!r}: expected one of {', '.join(FORMATS)}"))
    try:
        settings = load_recipe(recipe, set_ or []).data.shapesworld
        start = time.perf_counter()
        world = load_shapesworld(settings, progress=True)
        written = export_shapesworld(world, out, format, style_questions)
    except VldistillError as error:
        _fail(error)
    for name, path in written.items():
        console.print(f"{name}: {path}")
    console.print(f"exported ShapesWorld ({', '.join(f'{k}: {len(v.samples)} questions' for k, v in world.splits.items())}) in {time.perf_counter() - start:.1f} s")


@kb_app.command("index")
def kb_index(
        facts: Annotated[Path, typer.Option("--facts", help="the knowledge base, JSONL of "
                                            "{id, text}")],
        out: Annotated[Path, typer.Option("--out", help="folder to write the index into")],
        kind: Annotated[str, typer.Option("--kind", help="bm25 (sparse), flat (dense, exact) "
                                          "or hnsw (dense, approximate)")] = "bm25",
        encoder: Annotated[str, typer.Option("--encoder", help="dense encoder: minilm (the "
                                             "pretrained MiniLM-L6) or a local folder")
                           ] = "minilm") -> None:
    """Build a fact index (BM25, or a sentence encoder plus faiss) with its manifest."""

    from vldistill.data.facts import read_facts
    from vldistill.models.fact_index import KINDS, build_index
    from vldistill.models.sentence_encoders import load_encoder


    if kind not in KINDS:
        _fail(ValueError(f"--kind {kind!r}: expected one of {', '.join(KINDS)}"))
    try:
        start = time.perf_counter()
        kb = read_facts(facts)
        dense = load_encoder(encoder) if kind != "bm25" else None
        build_index(kb, kind, out, dense, encoder if dense is not None else None)
    except VldistillError as error:
        _fail(error)
    console.print(f"indexed {len(kb)} facts ({kind}) into {out} in "
                  f"{time.perf_counter() - start:.1f} s")


@kb_app.command("search")
def kb_search(
        question: Annotated[str, typer.Argument(help="the query text")],
        index: Annotated[Path, typer.Option("--index", help="a folder from `vldistill kb "
                                            "index`")],
        facts: Annotated[Optional[Path], typer.Option(
            "--facts", help="the knowledge base; default: the file the index was built from")
                         ] = None,
        k: Annotated[int, typer.Option("-k", help="facts to print")] = 5) -> None:
    """Print the top facts for a question, with their scores."""

    from vldistill.data.facts import read_facts
    from vldistill.models.fact_index import MANIFEST, load_index



    try:
        manifest = index / MANIFEST
        try:
            source = facts or (Path(json.loads(manifest.read_text())["kb"])
                               if manifest.is_file() else None)
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{manifest} is damaged; rebuild the index with `vldistill kb "
                            "index`, or pass --facts") from None
        if source is None:
            raise DataError(f"{index} holds no fact index ({MANIFEST} is missing). Fix: build "
                            "one with `vldistill kb index`.")
        kb = read_facts(source)
        indices, scores = load_index(index, kb).search([question], k)
    except VldistillError as error:
        _fail(error)
    for rank, (i, score) in enumerate(zip(indices[0], scores[0]), start=1):
        if i >= 0:
            fact = kb.facts[int(i)]
            console.print(f"{rank}. [{fact.id}] {score:.3f}  {fact.text}")


@kb_app.command("run")
def kb_run(recipe: Annotated[Optional[Path], typer.Argument(
               help="a KB-VQA recipe (recipes/kbvqa.yaml); none: the built-in default")] = None,
           set_: SetOption = None) -> None:
    """Knowledge-based VQA: retriever, Fusion-in-Decoder readers (base, large, distilled
    base), retrieval and reader tables (the same as `vldistill run` of a `job: kbvqa`
    recipe)."""

    from vldistill.jobs.base import execute
    from vldistill.jobs.kbvqa.job import KBVQAJob

    start = time.perf_counter()
    try:
        outcome = execute(KBVQAJob(), KBVQAJob().load(recipe, set_ or []))
    except VldistillError as error:
        _fail(error)
    for item in outcome.summary:
        console.print(item, markup=False)
    console.print(f"report: {outcome.paths.report}  results: {outcome.paths.results}")
    console.print(f"main job wall time: {time.perf_counter() - start:.1f} s")


@app.command("crashtest")
def crashtest_command(
        recipe: Annotated[Path, typer.Argument(help="the recipe to kill and resume")],
        points: Annotated[int, typer.Option(help="kill moments, drawn over the reference "
                                            "run's wall time")] = 5,
        seed: Annotated[int, typer.Option(help="seed of the kill moments")] = 0,
        out: Annotated[Path, typer.Option(help="folder for the runs and logs")
                       ] = Path("runs/crashtest"),
        set_: SetOption = None) -> None:
    """Kill `vldistill run RECIPE` with SIGKILL at random moments, resume it with --resume,
    and compare every result with a run that was never killed."""
    from vldistill.tools.crashtest import kill_and_resume, summary

    wall, kills = kill_and_resume(recipe, out, points, seed, set_ or [])
    console.print(summary(wall, kills), markup=False)
    if not all(point.matches for point in kills):
        raise typer.Exit(code=1)


@app.command("zero-shot")
def zero_shot_command(
        model: Annotated[Path, typer.Option("--model", help="an open-vocabulary checkpoint "
                                            "(runs/<name>/checkpoints/*.safetensors)")],
        image: Annotated[Path, typer.Option("--image", help="the image file")],
        labels: Annotated[str, typer.Option("--labels", help='class names, comma-separated: '
                                            '"red circle,blue star"')],
        prompt: Annotated[Optional[str], typer.Option(
            "--prompt", help="prompt with {label}; default: the one the model was trained "
            "and evaluated with")] = None) -> None:
    """Rank labels for one image by the model's image-text scores (zero-shot), with
    probabilities."""

    from vldistill.jobs.open_vocab.zero_shot import zero_shot


    try:
        ranked = zero_shot(model, image, labels.split(","), prompt)
    except (VldistillError, ValueError) as error:
        _fail(error)
    table = Table(title=f"zero-shot: {image.name}")
    for column in ("rank", "label", "probability", "cosine"):
        table.add_column(column, justify="left" if column == "label" else "right")
    for rank, (label, probability, cosine) in enumerate(ranked, start=1):
        table.add_row(str(rank), escape(label), f"{probability:.3f}", f"{cosine:.3f}")
    console.print(table)


def main() -> None:
    app(prog_name="vldistill")


if __name__ == "__main__":
    sys.exit(main())
