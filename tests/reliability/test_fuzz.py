"""Property-based fuzzing (hypothesis): the recipe loader and the JSON / CSV readers either
accept their input or raise one of vldistill's errors, which name the file; never a bare
KeyError, TypeError or AttributeError from deep inside."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vldistill.core.errors import VldistillError

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
KEYS = ["name", "seeds", "data", "teacher", "student", "distill", "trainer", "eval", "model",
        "params", "train", "max_steps", "lr", "terms", "loss", "weight", "source", "questions",
        "annotations", "images", "question", "answers", "answer", "image", "image_id",
        "question_id", "id", "text", "caption", "label", "samples", "rgb", "depth", "kv_prefix",
        "variants", "optim", "width", "shapesworld", "train_images", "phases"]
json_values = st.recursive(
    scalars, lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), children,
                        max_size=5)), max_leaves=20)


def _accepts_or_explains(call, path: Path | None = None) -> None:
    try:
        call()
    except VldistillError as error:
        if path is not None:
            assert str(path) in str(error) or path.name in str(error), str(error)


@SETTINGS
@given(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=5))
def test_the_recipe_loader_accepts_or_names_the_problem(data) -> None:
    from vldistill.config import recipe_from_dict

    _accepts_or_explains(lambda: recipe_from_dict(data))


@SETTINGS
@given(st.one_of(json_values, st.binary(max_size=64)))
def test_recipe_files_of_any_content(content) -> None:
    from vldistill.config import load_recipe

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "recipe.yaml"
        path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
        _accepts_or_explains(lambda: load_recipe(path), path)


def _file(folder: str, name: str, content) -> Path:
    path = Path(folder) / name
    path.write_bytes(content if isinstance(content, bytes)
                     else json.dumps(content, allow_nan=True).encode())
    return path


@SETTINGS
@given(json_values, json_values)
def test_the_vqa_reader(questions, annotations) -> None:
    from vldistill.data.vqa import read_vqa

    with tempfile.TemporaryDirectory() as folder:
        q, a = _file(folder, "q.json", questions), _file(folder, "a.json", annotations)
        _accepts_or_explains(lambda: read_vqa(q, a, Path(folder)))


@SETTINGS
@given(st.one_of(json_values, st.binary(max_size=64)))
def test_the_vizwiz_and_rgbd_readers(content) -> None:
    from vldistill.data.rgbd import read_rgbd
    from vldistill.data.vizwiz import read_vizwiz

    with tempfile.TemporaryDirectory() as folder:
        path = _file(folder, "train.json", content)
        _accepts_or_explains(lambda: read_vizwiz(path, Path(folder)), path)
        _accepts_or_explains(lambda: read_rgbd(path), path)


@SETTINGS
@given(st.lists(st.one_of(json_values, st.binary(max_size=24)), max_size=4))
def test_the_jsonl_readers(lines) -> None:
    from vldistill.data.facts import read_facts
    from vldistill.data.image_text import read_jsonl

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "lines.jsonl"
        path.write_bytes(b"\n".join(line if isinstance(line, bytes) else
                                    json.dumps(line, allow_nan=True).encode() for line in lines))
        _accepts_or_explains(lambda: read_facts(path), path)
        _accepts_or_explains(lambda: read_jsonl(path, Path(folder), 8), path)


@SETTINGS
@given(st.lists(st.lists(st.text(max_size=8), max_size=5), max_size=4),
       st.binary(max_size=16))
def test_the_artquest_csv_reader(rows, tail) -> None:
    import csv
    import io

    from vldistill.data.artquest import read_artquest

    with tempfile.TemporaryDirectory() as folder:
        buffer = io.StringIO()
        csv.writer(buffer).writerows([["image", "question", "answer"], *rows])
        path = Path(folder) / "split.csv"
        path.write_bytes(buffer.getvalue().encode() + tail)
        _accepts_or_explains(lambda: read_artquest(path, Path(folder)), path)
