"""The KB-VQA job (`vldistill kb run`, recipes/kbvqa.yaml), shrunk: ShapesWorld, and the same
questions through the OK-VQA-format export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.jobs.run_folder import check_run_folder
from vldistill.core.errors import DataError, RecipeError
from vldistill.jobs.kbvqa.job import run_kbvqa
from vldistill.jobs.kbvqa.recipe import load_kb_recipe

ROOT = Path(__file__).parents[3]
TINY = ["data.shapesworld={train_images: 150, val_images: 40, questions_per_image: 6, "
        "knowledge_fraction: 0.4}", "retriever.kind=bm25", "retriever.compare=[bm25]",
        "reader.base={d_model: 16, layers: 1, heads: 2}",
        "reader.large={d_model: 32, layers: 1, heads: 2}", "reader.no_knowledge=false",
        "reader.train={max_steps: 6, batch_size: 8, val_every_n_steps: 3}",
        "trainer.progress_bar=false"]


def test_the_recipe_runs_retrieval_and_three_readers(tmp_path: Path) -> None:
    recipe = load_kb_recipe(ROOT / "recipes" / "kbvqa.yaml", [*TINY, f"output_dir={tmp_path}"])
    results = run_kbvqa(recipe)

    assert set(results["readers"]) == {"base", "large", "base distilled"}
    assert results["readers"]["large"]["params"] > results["readers"]["base"]["params"]
    retrieval = results["retrieval"]["bm25"]
    assert 0 <= retrieval["R@1"] <= retrieval["R@5"] <= retrieval["R@10"] <= 100
    run_dir = tmp_path / "kbvqa"
    assert json.loads((run_dir / "results.json").read_text())["retriever"] == "bm25"
    assert "| base distilled |" in (run_dir / "report.md").read_text()
    assert (run_dir / "checkpoints" / "reader-base-distilled" / "config.json").is_file()
    check_run_folder(run_dir, "kbvqa", curves=True)


def test_okvqa_format_files_give_the_same_retrieval(tmp_path: Path) -> None:
    from vldistill.data.export import export_shapesworld
    from vldistill.data.shapesworld import load_shapesworld

    builtin = load_kb_recipe(None, [*TINY, f"output_dir={tmp_path}", "name=builtin",
                                    "reader.large=null"])
    export_shapesworld(load_shapesworld(builtin.data.shapesworld), tmp_path / "x", "vqa")
    files = {split: {"questions": str(tmp_path / "x" / f"{split}_questions.json"),
                     "annotations": str(tmp_path / "x" / f"{split}_annotations.json"),
                     "captions": str(tmp_path / "x" / f"{split}_captions.jsonl")}
             for split in ("train", "val")}
    from_files = load_kb_recipe(None, [
        *TINY, f"output_dir={tmp_path}", "name=files", "reader.large=null", "data.source=vqa",
        f"data.facts={tmp_path / 'x' / 'facts.jsonl'}", f"data.train={json.dumps(files['train'])}",
        f"data.val={json.dumps(files['val'])}"])

    first, second = run_kbvqa(builtin), run_kbvqa(from_files)

    recall = lambda r: {k: v for k, v in r["retrieval"]["bm25"].items()  # noqa: E731
                        if k.startswith(("R@", "MRR"))}
    assert recall(first) == recall(second) and len(recall(first)) == 4
    assert first["readers"]["base"]["EM"] == pytest.approx(second["readers"]["base"]["EM"])


def test_kb_recipe_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"retriever.kind: Input should be"):
        load_kb_recipe(None, ["retriever.kind=tfidf"])
    with pytest.raises(RecipeError, match="data.source 'vqa' needs data.train"):
        load_kb_recipe(None, ["data.source=vqa"])


def test_a_gold_fact_outside_the_kb_is_named(tmp_path: Path) -> None:
    (tmp_path / "facts.jsonl").write_text('{"id": "F001", "text": "A circle has no corners."}\n')
    recipe = load_kb_recipe(None, [*TINY, f"output_dir={tmp_path}",
                                   f"data.facts={tmp_path / 'facts.jsonl'}"])
    with pytest.raises(DataError, match=r"gold fact id\(s\) of the training questions are not "
                                        r"in the knowledge base"):
        run_kbvqa(recipe)


def test_vldistill_run_and_validate_dispatch_a_kb_recipe(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vldistill.cli import app
    from vldistill.config import load_recipe

    path = ROOT / "recipes" / "kbvqa.yaml"
    runner = CliRunner()
    checked = runner.invoke(app, ["validate", str(path)])
    assert checked.exit_code == 0 and "job: kbvqa" in checked.output
    ran = runner.invoke(app, ["run", str(path), *[a for o in TINY for a in ("--set", o)],
                              "--set", f"output_dir={tmp_path}", "--set", "reader.large=null"])
    assert ran.exit_code == 0, ran.output
    assert "| base |" in ran.output
    with pytest.raises(RecipeError, match="says job: kbvqa.*run it with `vldistill run"):
        load_recipe(path)


def test_data_without_gold_facts_or_captions_runs_and_a_trained_retriever_is_refused(
        tmp_path: Path) -> None:
    """OK-VQA-like files: no gold fact ids, no captions file."""
    from vldistill.data.export import export_shapesworld
    from vldistill.data.shapesworld import load_shapesworld

    recipe = load_kb_recipe(None, [*TINY, f"output_dir={tmp_path}"])
    export_shapesworld(load_shapesworld(recipe.data.shapesworld), tmp_path / "x", "vqa")
    for split in ("train", "val"):            # drop the gold fact ids, as OK-VQA has none
        path = tmp_path / "x" / f"{split}_annotations.json"
        document = json.loads(path.read_text())
        for record in document["annotations"]:
            record.pop("fact_ids", None)
        path.write_text(json.dumps(document))
    files = [f"data.{split}=" + json.dumps({
        "questions": str(tmp_path / "x" / f"{split}_questions.json"),
        "annotations": str(tmp_path / "x" / f"{split}_annotations.json")})
        for split in ("train", "val")]
    base = [*TINY, f"output_dir={tmp_path}", "reader.large=null", "data.source=vqa",
            f"data.facts={tmp_path / 'x' / 'facts.jsonl'}", "data.knowledge_only=false",
            "data.max_train_questions=120", *files]

    results = run_kbvqa(load_kb_recipe(None, base))

    assert "R@1" not in results["retrieval"]["bm25"] and "base" in results["readers"]
    with pytest.raises(RecipeError, match="^retriever.kind ask.*retriever.kind 'trained' "
                                          "learns from"):
        run_kbvqa(load_kb_recipe(None, [*base, "retriever.kind=trained"]))
    with pytest.raises(RecipeError, match="^retriever.compare and retriever.distil.teacher "
                                          "ask"):
        run_kbvqa(load_kb_recipe(None, [*base, "retriever.compare=[distilled, trained]"]))


def test_a_damaged_index_manifest_names_the_rebuild(tmp_path: Path) -> None:
    from vldistill.data.facts import KnowledgeBase
    from vldistill.data.shapesworld_questions import Fact
    from vldistill.models.fact_index import build_index, load_index

    kb = KnowledgeBase([Fact("F1", "Snow is white.")], source="facts.jsonl")
    build_index(kb, "bm25", tmp_path / "i")
    (tmp_path / "i" / "index.json").write_text("{not json")
    with pytest.raises(DataError, match="not a fact index manifest .*`vldistill kb index"):
        load_index(tmp_path / "i", kb)
