"""The bad-input corpus: malformed files for every reader, generated here, each read the way a
run reads it (the reader, then every image through its store). Each case must end in a clear
error or a counted skip:

- a clear error is one of vldistill's errors whose message names the file, the row or field
  the case broke, and a fix;
- a counted skip is the reader leaving out what the recipe allows it to (RGB-D with
  ``data.depth.missing: skip``) and reporting the number it skipped.

Anything else fails the case: a crash with another exception, a message that does not say
where or how to fix it, or bad input accepted without a word.

    python -m vldistill.tools.badinputs          # the cases tried and their outcome, per reader

``tests/reliability/test_bad_inputs.py`` runs the same corpus and fails on any failed case.
"""

from __future__ import annotations

import argparse
import json
import struct
import tempfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vldistill.config import load_recipe
from vldistill.core.errors import VldistillError
from vldistill.data.artquest import read_artquest, write_artquest
from vldistill.data.classification import image_folder
from vldistill.data.facts import Fact, read_facts, write_facts
from vldistill.data.image_text import read_jsonl
from vldistill.data.rgbd import DepthSettings, read_rgbd, write_rgbd
from vldistill.data.sample import ArrayImageStore, Sample
from vldistill.data.vizwiz import read_vizwiz, write_vizwiz
from vldistill.data.vqa import read_vqa, write_vqa
from vldistill.jobs.kbvqa.recipe import load_kb_recipe
from vldistill.jobs.open_vocab.job import load_open_vocab_recipe

Read = Callable[[], Any]             # reads the files; returns the number of skipped questions


@dataclass(frozen=True)
class Case:
    reader: str
    name: str
    make: Callable[[Path], Read]     # writes the files under a fresh folder; returns the read
    mention: tuple[str, ...]         # what the error must name: the file, the row, the field
    skips: int | None = None         # a counted skip is the expected outcome: this many


@dataclass(frozen=True)
class Outcome:
    case: Case
    ok: bool
    kind: str                        # "error", "skip" or what went wrong
    message: str


FIX_WORDS = ("Fix",)


def run_case(case: Case, folder: Path) -> Outcome:
    try:
        read = case.make(folder)
        skipped = read()
    except VldistillError as error:
        message = str(error)
        absent = [m for m in case.mention if m not in message]
        if absent:
            return Outcome(case, False, f"error without {absent}", message)
        if not any(word in message for word in FIX_WORDS):
            return Outcome(case, False, "error without a fix", message)
        return Outcome(case, True, "error", message)
    except Exception as error:              # a crash: exactly what this corpus looks for
        return Outcome(case, False, f"crash ({type(error).__name__})", str(error))
    if case.skips is not None and skipped == case.skips:
        return Outcome(case, True, "skip", f"{skipped} skipped and counted")
    return Outcome(case, False, "accepted silently", f"returned {skipped!r}")


def run_corpus(cases: list[Case] | None = None) -> list[Outcome]:
    outcomes = []
    for case in cases if cases is not None else corpus():
        with tempfile.TemporaryDirectory() as folder:
            outcomes.append(run_case(case, Path(folder)))
    return outcomes


# ----------------------------------------------------------------------------- files

def _rgb(seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _store():

    depth = np.full((2, 8, 8), 1.5, dtype=np.float32)
    return ArrayImageStore([1, 2], np.stack([_rgb(1), _rgb(2)]), depth)


def _samples():

    return [Sample(10, 1, "What colour is the square?", ("red",) * 10, "colour", "other"),
            Sample(11, 2, "How many circles?", ("2",) * 10, "count", "number")]


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (8-bit RGB) with one empty data chunk: what a
    decompression bomb or a damaged header looks like to a reader."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


def _write_json(path: Path, document: Any) -> None:
    path.write_text(json.dumps(document), encoding="utf-8")


def _edit_json(path: Path, edit: Callable[[Any], Any]) -> None:
    """Apply ``edit`` to the JSON document in place (its return value is ignored)."""
    document = json.loads(path.read_text(encoding="utf-8"))
    edit(document)
    _write_json(path, document)


Make = Callable[[Path], tuple[Any, Read]]     # writes valid files: (what to damage, the read)


def _damaged(make: Make, change: Callable[[Any], None]) -> Callable[[Path], Read]:
    """A case's build: the valid files of ``make``, then ``change`` applied to its target."""
    def build(folder: Path) -> Read:
        target, read = make(folder)
        change(target)
        return read
    return build


def _focus(make: Make, pick: Callable[[Path, Any], Path]) -> Make:
    """``make`` aimed at another file: ``pick(folder, target)``."""
    def aimed(folder: Path) -> tuple[Path, Read]:
        target, read = make(folder)
        return pick(folder, target), read
    return aimed


def _lines(change: Callable[[list[str]], list[str]]) -> Callable[[Path], None]:
    """A change to a text file's lines."""
    def rewrite(path: Path) -> None:
        lines = path.read_text(encoding="utf-8").splitlines()
        path.write_text("\n".join(change(lines)) + "\n", encoding="utf-8")
    return rewrite


def _first_record(edit: Callable[[dict], Any]) -> Callable[[list[str]], list[str]]:
    """A change to the JSON object on a JSONL file's first line."""
    def change(rows: list[str]) -> list[str]:
        record = json.loads(rows[0])
        edit(record)
        return [json.dumps(record), *rows[1:]]
    return change


def _outside(folder: Path) -> Path:
    """A valid image outside every dataset root: readable if a reader let a path escape."""
    target = folder.parent / f"{folder.name}-outside.png"
    Image.fromarray(_rgb(3)).save(target)
    return target


# image damage: (name, change the image file at path, what the error must say besides the file)
IMAGE_DAMAGE: list[tuple[str, Callable[[Path], None], tuple[str, ...]]] = [
    ("image missing", lambda p: p.unlink(), ()),
    ("not an image (text)", lambda p: p.write_bytes(b"this is a text file, not a picture\n"),
     ("could not be read",)),
    ("zero-byte image", lambda p: p.write_bytes(b""), ("could not be read",)),
    ("truncated image", lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
     ("could not be read",)),
    ("huge dimensions (9000 x 9000 header)",
     lambda p: p.write_bytes(_png_header(9000, 9000)), ("9000 x 9000", "downscale")),
    ("decompression bomb (100000 x 100000 header)",
     lambda p: p.write_bytes(_png_header(100000, 100000)), ("pixels", "downscale")),
    ("zero-size image (0 x 0 header)", lambda p: p.write_bytes(_png_header(0, 0)),
     ("could not be read",)),
    ("16-bit where 8-bit is expected",
     lambda p: Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(p), ("16-bit",)),
]


def _insert(data: bytes, extra: bytes) -> bytes:
    return data[: len(data) // 2] + extra + data[len(data) // 2:]


def _text_cases(reader: str, file_name: str, make: Callable[[Path], tuple[Path, Read]],
                top_level: Any) -> list[Case]:
    """File-level damage any text reader must explain: missing, empty, truncated, bytes that
    are not UTF-8, the wrong top-level type."""
    damage = [
        ("file missing", lambda p: p.unlink()),
        ("empty file", lambda p: p.write_bytes(b"")),
        ("truncated file", lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) * 2 // 3])),
        ("non-UTF-8 bytes", lambda p: p.write_bytes(_insert(p.read_bytes(), b"\xff"))),
        ("wrong top-level type", lambda p: p.write_text(json.dumps(top_level))),
    ]
    return [Case(reader, name, _damaged(make, change), (file_name,)) for name, change in damage]


def _record_cases(reader: str, file_name: str, make: Callable[[Path], tuple[Path, Read]],
                  records: Callable[[Any], list], where: Callable[[int], str],
                  wrong: dict[str, Any], id_field: str | None,
                  duplicate_key: str, optional: tuple[str, ...] = ()) -> list[Case]:
    """Record-level damage to a JSON file: a record that is not an object, each required field
    missing, each field of the wrong type, a duplicate id, a key given twice."""
    def edited(edit: Callable[[list], Any]) -> Callable[[Path], Read]:
        return _damaged(make, lambda path: _edit_json(path, lambda d: edit(records(d))))

    def not_object(rows: list) -> None:
        rows[1] = 42

    def duplicate(rows: list) -> None:
        rows.append(dict(rows[0]))

    key = f'"{duplicate_key}": '
    twice = _damaged(make, _lines(lambda rows: "\n".join(rows).replace(
        key, f'{key}"shadowed", {key}', 1).split("\n")))
    cases = [Case(reader, "record not an object", edited(not_object), (file_name, where(1)))]
    for field, value in wrong.items():
        if field not in optional:
            cases.append(Case(reader, f"missing field {field!r}",
                              edited(lambda rows, f=field: rows[0].pop(f)),
                              (file_name, where(0), field)))
        cases.append(Case(reader, f"wrong type in {field!r} ({type(value).__name__})",
                          edited(lambda rows, f=field, v=value: rows[0].__setitem__(f, v)),
                          (file_name, where(0), field)))
    if id_field is not None:
        cases.append(Case(reader, f"duplicate {id_field}", edited(duplicate), (file_name,)))
    cases.append(Case(reader, "a key given twice in one object", twice,
                      (file_name, duplicate_key)))
    return cases


def _image_cases(reader: str, make: Callable[[Path], tuple[Path, Read]],
                 image_name: str) -> list[Case]:
    """Damage to the first image (``make`` returns its path and the read)."""
    return [Case(reader, name, _damaged(make, change), (image_name, *says))
            for name, change, says in IMAGE_DAMAGE]


# ----------------------------------------------------------------------------- VQAv2 / OK-VQA

def _vqa_cases() -> list[Case]:

    def base(folder: Path) -> tuple[dict[str, Path], Read]:
        paths = write_vqa(_samples(), _store(), folder, "train")

        def read() -> None:
            samples, store = read_vqa(paths["questions"], paths["annotations"],
                                      folder / "images")
            for sample in samples:
                store.rgb(sample.image_id)
        return paths, read

    questions = _focus(base, lambda folder, paths: paths["questions"])
    annotations = _focus(base, lambda folder, paths: paths["annotations"])
    image = _focus(base, lambda folder, paths: folder / "images" / "1.png")

    def escape(folder: Path) -> Read:
        paths, read = base(folder)
        _outside(folder)
        for key in ("questions", "annotations"):
            _edit_json(paths[key], lambda d, k=key: d[k][0].__setitem__(
                "image_id", f"../{folder.name}-outside"))
        return read

    name = "VQAv2 / OK-VQA"
    return [
        *_text_cases(name, "train_questions.json", questions, ["a list"]),
        *_text_cases(name, "train_annotations.json", annotations, {"info": {}}),
        *_record_cases(name, "train_questions.json", questions, lambda d: d["questions"],
                       lambda i: f"questions[{i}]",
                       {"question_id": [10], "image_id": None, "question": 7}, "question_id",
                       "question"),
        *_record_cases(name, "train_annotations.json", annotations,
                       lambda d: d["annotations"], lambda i: f"annotations[{i}]",
                       {"question_id": 1.5, "answers": "red"}, None, "answers"),
        *_image_cases(name, image, "1.png"),
        Case(name, "image path escapes the root (../)", escape, ("outside", "not inside")),
    ]


# ----------------------------------------------------------------------------- VizWiz

def _vizwiz_cases() -> list[Case]:

    def base(folder: Path) -> tuple[Path, Read]:
        paths = write_vizwiz(_samples(), _store(), folder, "train")

        def read() -> None:
            samples, store = read_vizwiz(paths["annotations"], paths["images"])
            for sample in samples:
                store.rgb(sample.image_id)
        return paths["annotations"], read

    image = _focus(base, lambda folder, _: folder / "train" / "VizWiz_train_00000000.png")

    def escape(folder: Path) -> Read:
        path, read = base(folder)
        _outside(folder)
        _edit_json(path, lambda d: d[0].__setitem__("image", f"../../{folder.name}-outside.png"))
        return read

    name = "VizWiz"
    return [
        *_text_cases(name, "train.json", base, {"annotations": []}),
        *_record_cases(name, "train.json", base, lambda d: d, lambda i: f"record [{i}]",
                       {"image": 3, "question": None, "answers": {"answer": "x"}}, "image",
                       "question", optional=("answers",)),      # test split: no answers
        *_image_cases(name, image, "VizWiz_train_00000000.png"),
        Case(name, "image path escapes the root (../)", escape, ("train.json", "record [0]",
                                                                "no folders")),
    ]


# ----------------------------------------------------------------------------- RGB-D

def _rgbd_cases() -> list[Case]:

    def base(folder: Path, missing: str = "fail") -> tuple[Path, Read]:
        paths = write_rgbd(_samples(), _store(), folder, "train")

        def read() -> int:
            samples, store, report = read_rgbd(paths["samples"],
                                               settings=DepthSettings(missing=missing))
            for sample in samples:
                store.rgb(sample.image_id)
                store.depth(sample.image_id)
            return report.skipped_questions
        return paths["samples"], read

    image = _focus(base, lambda folder, _: folder / "images" / "1.png")
    depth = _focus(base, lambda folder, _: folder / "depth" / "1.png")

    def escape(field: str) -> Callable[[Path], Read]:
        def build(folder: Path) -> Read:
            path, read = base(folder)
            _outside(folder)
            _edit_json(path, lambda d: d["samples"][0].__setitem__(
                field, f"../{folder.name}-outside.png"))
            return read
        return build

    def skipped(folder: Path) -> Read:
        _, read = base(folder, missing="skip")
        (folder / "depth" / "1.png").unlink()
        return read

    eight_bit_depth = _damaged(depth, lambda path: Image.fromarray(
        np.zeros((8, 8), np.uint8)).save(path))
    same_image_other_files = _damaged(base, lambda path: _edit_json(
        path, lambda d: d["samples"][1].__setitem__("image_id", d["samples"][0]["image_id"])))

    name = "RGB-D"
    return [
        *_text_cases(name, "train.json", base, [{"samples": []}]),
        *_record_cases(name, "train.json", base, lambda d: d["samples"],
                       lambda i: f"samples[{i}]",
                       {"question_id": None, "image_id": [1], "rgb": 5, "question": False},
                       "question_id", "question"),
        Case(name, "one image id, two pairs of files", same_image_other_files,
             ("train.json", "samples[1]")),
        *_image_cases(name, image, "1.png"),
        *[replace(case, name=f"depth map: {case.name}")    # 16-bit is right for depth: not
          for case in _image_cases(name, depth, "1.png")[:-1]],  # the last damage
        Case(name, "depth map 8-bit where 16-bit millimetres are expected", eight_bit_depth,
             ("1.png", "16-bit")),
        *[Case(name, f"{field} path escapes the root (../)", escape(field),
               ("train.json", "samples[0]", "not inside")) for field in ("rgb", "depth")],
        Case(name, "depth map missing, data.depth.missing: skip", skipped, (), skips=1),
    ]


# ----------------------------------------------------------------------------- CSV (ArtQuest)

def _csv_cases() -> list[Case]:

    def base(folder: Path) -> tuple[Path, Read]:
        paths = write_artquest(_samples(), _store(), folder, "train")

        def read() -> None:
            samples, store = read_artquest(paths["csv"], folder / "images")
            for sample in samples:
                store.rgb(sample.image_id)
        return paths["csv"], read

    def rewrite(change: Callable[[list[str]], list[str]]) -> Callable[[Path], Read]:
        return _damaged(base, _lines(change))

    image = _focus(base, lambda folder, path: folder / "images" / path.read_text(
        encoding="utf-8").splitlines()[1].split(",")[0])

    def cell(line: int, column: int, value: str) -> Callable[[list[str]], list[str]]:
        def change(lines: list[str]) -> list[str]:
            cells = lines[line].split(",")
            cells[column] = value
            lines[line] = ",".join(cells)
            return lines
        return change

    def escape(folder: Path) -> Read:
        _outside(folder / "images")
        return rewrite(cell(1, 0, f"../../{folder.name}-outside.png"))(folder)

    name = "CSV (ArtQuest)"
    header_only = rewrite(lambda lines: lines[:1])
    return [
        *[case for case in _text_cases(name, "train.csv", base, None)
          if case.name not in ("wrong top-level type", "truncated file")],
        # a CSV cut inside its last value is a valid shorter file: cut inside the question
        Case(name, "truncated file (inside the last row)", rewrite(
            lambda lines: [*lines[:-1], lines[-1][: lines[-1].index(",") + 4]]),
            ("train.csv", "line 3")),
        Case(name, "header only, no rows", header_only, ("train.csv",)),
        Case(name, "missing column 'answer'", rewrite(
            lambda lines: [line.replace(",answer,", ",reply,") for line in lines]),
            ("train.csv", "answer")),
        Case(name, "empty 'question'", rewrite(cell(1, 1, "")), ("train.csv", "line 2",
                                                                  "question")),
        Case(name, "too many cells", rewrite(lambda lines: [*lines[:1], lines[1] + ",extra",
                                                            *lines[2:]]),
             ("train.csv", "line 2")),
        Case(name, "unclosed quote", rewrite(cell(1, 1, '"What colour')),
             ("train.csv",)),
        Case(name, "duplicate question_id", rewrite(cell(2, 3, "10")),
             ("train.csv", "question_id")),
        *_image_cases(name, image, ".png"),
        Case(name, "image path escapes the root (../)", escape,
             ("train.csv", "line 2", "not inside")),
        Case(name, "absolute image path", rewrite(cell(1, 0, "/etc/hostname")),
             ("train.csv", "line 2")),
    ]


# ----------------------------------------------------------------------------- JSONL

def _jsonl_base(folder: Path) -> tuple[Path, Read]:

    (folder / "images").mkdir()
    for n in (1, 2):
        Image.fromarray(_rgb(n)).save(folder / "images" / f"{n}.png")
    path = folder / "captions.jsonl"
    path.write_text("\n".join(json.dumps({"image": f"images/{n}.png",
                                          "caption": f"a photo? number {n}", "label": "x"})
                              for n in (1, 2)) + "\n", encoding="utf-8")
    return path, lambda: read_jsonl(path, folder, 16)


def _jsonl_cases() -> list[Case]:
    def lines(change: Callable[[list[str]], list[str]]) -> Callable[[Path], Read]:
        return _damaged(_jsonl_base, _lines(change))

    record = _first_record
    image = _focus(_jsonl_base, lambda folder, _: folder / "images" / "1.png")

    def escape(folder: Path) -> Read:
        _outside(folder)
        return lines(record(lambda r: r.__setitem__("image",
                                                    f"../{folder.name}-outside.png")))(folder)

    name = "image-text JSONL"
    return [
        *[case for case in _text_cases(name, "captions.jsonl", _jsonl_base, None)
          if case.name != "wrong top-level type"],
        Case(name, "line not an object", lines(lambda rows: ["[1, 2]", *rows[1:]]),
             ("captions.jsonl", "line 1")),
        Case(name, "missing field 'caption'", lines(record(lambda r: r.pop("caption"))),
             ("captions.jsonl", "line 1", "caption")),
        Case(name, "wrong type in 'image' (int)", lines(record(lambda r: r.__setitem__(
            "image", 3))), ("captions.jsonl", "line 1", "image")),
        Case(name, "a key given twice in one object", lines(lambda rows: [
            rows[0].replace('"caption": ', '"caption": "x", "caption": ', 1), *rows[1:]]),
            ("captions.jsonl", "line 1", "caption")),
        *_image_cases(name, image, "1.png"),
        Case(name, "image path escapes the root (../)", escape,
             ("captions.jsonl", "line 1", "not inside")),
        Case(name, "absolute image path", lines(record(lambda r: r.__setitem__(
            "image", "/etc/hostname"))), ("captions.jsonl", "line 1")),
        Case(name, "image path with a NUL byte", lines(record(lambda r: r.__setitem__(
            "image", "images/1\x00.png"))), ("captions.jsonl", "line 1", "NUL")),
    ]


# ----------------------------------------------------------------------------- fact KB

def _facts_cases() -> list[Case]:

    def base(folder: Path) -> tuple[Path, Read]:
        path = write_facts([Fact("f1", "Red squares? Always on top."),
                            Fact("f2", "Circles are round.")], folder / "facts.jsonl")
        return path, lambda: read_facts(path)

    def lines(change: Callable[[list[str]], list[str]]) -> Callable[[Path], Read]:
        return _damaged(base, _lines(change))

    first = _first_record

    name = "fact KB (JSONL)"
    return [
        *[case for case in _text_cases(name, "facts.jsonl", base, None)
          if case.name != "wrong top-level type"],
        Case(name, "line not an object", lines(lambda rows: ['"f1"', *rows[1:]]),
             ("facts.jsonl", "line 1")),
        Case(name, "missing field 'text'", lines(first(lambda r: r.pop("text"))),
             ("facts.jsonl", "line 1", "text")),
        Case(name, "wrong type in 'id' (int)", lines(first(lambda r: r.__setitem__("id", 1))),
             ("facts.jsonl", "line 1", "id")),
        Case(name, "duplicate fact id", lines(lambda rows: [*rows, rows[0]]),
             ("facts.jsonl", "f1")),
        Case(name, "a key given twice in one object", lines(lambda rows: [
            rows[0].replace('"text": ', '"text": "x", "text": ', 1), *rows[1:]]),
            ("facts.jsonl", "line 1", "text")),
    ]


# ----------------------------------------------------------------------------- image folder

def _folder_cases() -> list[Case]:

    def image(folder: Path) -> tuple[Path, Read]:
        for label in ("cat", "dog"):
            (folder / "data" / label).mkdir(parents=True)
            Image.fromarray(_rgb(len(label))).save(folder / "data" / label / "1.png")
        return folder / "data" / "cat" / "1.png", lambda: image_folder(folder / "data", 8)

    name = "image folder"
    return [case for case in _image_cases(name, image, "1.png")
            if case.name != "image missing"]


# ----------------------------------------------------------------------------- recipes

def _recipe_cases() -> list[Case]:

    good = ("name: bad-inputs\nseeds: [0]\ndata:\n  source: shapesworld\n"
            "teacher:\n  model:\n    name: vqa_attention\n    params: {width: 8}\n"
            "  train: {max_steps: 2}\n")

    def recipe(text: str | bytes, load: Callable[[Path], Any] = load_recipe
               ) -> Callable[[Path], Read]:
        def build(folder: Path) -> Read:
            path = folder / "recipe.yaml"
            path.write_bytes(text if isinstance(text, bytes) else text.encode())
            return lambda: load(path) and None
        return build

    name = "recipes (YAML)"
    return [
        Case(name, "file missing", lambda folder: lambda: load_recipe(folder / "recipe.yaml"),
             ("recipe.yaml",)),
        Case(name, "empty file", recipe(""), ("recipe.yaml",)),
        Case(name, "truncated file", recipe(good[: good.index("params") + 12]),
             ("recipe.yaml",)),
        Case(name, "non-UTF-8 bytes", recipe(good.encode().replace(b"bad", b"b\xffad")),
             ("recipe.yaml",)),
        Case(name, "wrong top-level type", recipe("- data\n- teacher\n"), ("recipe.yaml",)),
        Case(name, "unknown field", recipe(good + "distil: {}\n"), ("recipe.yaml", "distil")),
        Case(name, "wrong type", recipe(good.replace("max_steps: 2", "max_steps: many")),
             ("recipe.yaml", "max_steps")),
        Case(name, "out of range", recipe(good.replace("max_steps: 2", "max_steps: -3")),
             ("recipe.yaml", "max_steps")),
        Case(name, "a key given twice", recipe(good + "seeds: [1]\n"),
             ("recipe.yaml", "seeds", "line")),
        Case(name, "a Python object tag", recipe(
            good + "eval: !!python/object/apply:os.system ['echo hacked']\n"),
            ("recipe.yaml", "python")),
        Case(name, "a code path as model name", recipe(good.replace(
            "name: vqa_attention", "name: os.system")), ("recipe.yaml", "os.system")),
        Case(name, "KB-VQA recipe: unknown field", recipe("task: kbvqa\nretreiver: {}\n",
                                                          load_kb_recipe),
             ("recipe.yaml", "retreiver")),
        Case(name, "KB-VQA recipe: wrong top-level type", recipe("[1, 2]\n", load_kb_recipe),
             ("recipe.yaml",)),
        Case(name, "open-vocab recipe: a Python object tag", recipe(
            "task: open_vocab\nseeds: !!python/name:os.system\n", load_open_vocab_recipe),
            ("recipe.yaml", "python")),
    ]


def corpus() -> list[Case]:
    return [*_vqa_cases(), *_vizwiz_cases(), *_rgbd_cases(), *_csv_cases(), *_jsonl_cases(),
            *_facts_cases(), *_folder_cases(), *_recipe_cases()]


def table(outcomes: list[Outcome]) -> Iterator[str]:
    readers = list(dict.fromkeys(o.case.reader for o in outcomes))
    yield "| reader | cases tried | clear errors | counted skips | failed |"
    yield "|---|---|---|---|---|"
    for reader in readers:
        mine = [o for o in outcomes if o.case.reader == reader]
        kinds = Counter(o.kind if o.ok else "failed" for o in mine)
        yield (f"| {reader} | {len(mine)} | {kinds['error']} | {kinds['skip']} | "
               f"{kinds['failed']} |")
    kinds = Counter(o.kind if o.ok else "failed" for o in outcomes)
    yield (f"| all | {len(outcomes)} | {kinds['error']} | {kinds['skip']} | "
           f"{kinds['failed']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--show", action="store_true", help="print every case's message")
    args = parser.parse_args()
    outcomes = run_corpus()
    for outcome in outcomes:
        if args.show or not outcome.ok:
            status = "ok" if outcome.ok else "FAILED"
            print(f"[{status}] {outcome.case.reader} / {outcome.case.name}: {outcome.kind}: "
                  f"{outcome.message[:300]}")
    print("\n".join(table(outcomes)))
    raise SystemExit(0 if all(o.ok for o in outcomes) else 1)


if __name__ == "__main__":
    main()
