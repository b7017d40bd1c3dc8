"""The generated bad-input corpus (vldistill.tools.badinputs): every case of every reader ends in a
clear error or a counted skip; and the harness itself flags a crash, a silent acceptance and a
message that does not name the file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vldistill.core.errors import DataError
from vldistill.tools.badinputs import Case, corpus, run_case, run_corpus, table

READERS = ["VQAv2 / OK-VQA", "VizWiz", "RGB-D", "CSV (ArtQuest)", "image-text JSONL",
           "fact KB (JSONL)", "image folder", "recipes (YAML)"]


def test_every_case_of_every_reader_gives_a_clear_error_or_a_counted_skip(capsys) -> None:
    outcomes = run_corpus()
    failed = [f"{o.case.reader} / {o.case.name}: {o.kind}: {o.message[:200]}"
              for o in outcomes if not o.ok]
    assert not failed, "\n".join(failed)
    per_reader = Counter(o.case.reader for o in outcomes)
    assert list(per_reader) == READERS and min(per_reader.values()) >= 7
    assert Counter(o.kind for o in outcomes)["skip"] == 1         # RGB-D, missing: skip
    with capsys.disabled():
        print("\n" + "\n".join(table(outcomes)))


def test_the_corpus_covers_what_the_issue_lists() -> None:
    names = {case.name for case in corpus()}
    for needed in ["truncated file", "wrong top-level type", "empty file", "non-UTF-8 bytes",
                   "not an image (text)", "zero-byte image", "zero-size image (0 x 0 header)",
                   "huge dimensions (9000 x 9000 header)", "16-bit where 8-bit is expected",
                   "image path escapes the root (../)", "duplicate question_id",
                   "a Python object tag", "a key given twice"]:
        assert needed in names, needed
    assert any(name.startswith("missing field") for name in names)
    assert any(name.startswith("wrong type in") for name in names)


def _raises(error: Exception):
    def read():
        raise error
    return lambda folder: read


def test_the_harness_flags_crashes_silence_and_vague_messages(tmp_path: Path) -> None:
    crash = run_case(Case("r", "crash", _raises(KeyError("question")), ("x.json",)), tmp_path)
    silent = run_case(Case("r", "silent", lambda folder: lambda: None, ("x.json",)), tmp_path)
    vague = run_case(Case("r", "vague", _raises(DataError("bad record. Fix: correct it")),
                          ("x.json",)), tmp_path)
    no_fix = run_case(Case("r", "no fix", _raises(DataError("x.json: bad record")),
                           ("x.json",)), tmp_path)
    wrong_count = run_case(Case("r", "skip", lambda folder: lambda: 2, (), skips=1), tmp_path)
    good = run_case(Case("r", "good", _raises(DataError("x.json: bad. Fix: it")), ("x.json",)),
                    tmp_path)
    assert [o.ok for o in (crash, silent, vague, no_fix, wrong_count, good)] == \
        [False, False, False, False, False, True]
    assert crash.kind == "crash (KeyError)" and silent.kind == "accepted silently"
    assert vague.kind == "error without ['x.json']" and no_fix.kind == "error without a fix"


def test_an_over_large_image_is_refused_from_its_header_before_decoding(tmp_path: Path) -> None:
    from vldistill.data.images import MAX_PIXELS, image_header, read_image
    from vldistill.tools.badinputs import _png_header

    path = tmp_path / "big.png"
    path.write_bytes(_png_header(8193, 8192))                    # one column over the limit
    assert 8193 * 8192 > MAX_PIXELS >= 8192 * 8192
    for read in (image_header, read_image):
        with pytest.raises(DataError, match=r"big.png is 8193 x 8192 pixels"):
            read(path)
    Image.fromarray(np.zeros((8192 // 64, 64, 3), np.uint8)).save(path)
    assert image_header(path) == ((64, 128), "RGB")


def test_sixteen_bit_images_are_refused_as_pictures_and_required_as_depth(
        tmp_path: Path) -> None:
    from vldistill.data.images import read_image

    wide, narrow = tmp_path / "wide.png", tmp_path / "narrow.png"
    Image.fromarray(np.full((4, 4), 1234, np.uint16)).save(wide)
    Image.fromarray(np.full((4, 4), 12, np.uint8)).save(narrow)
    with pytest.raises(DataError, match="wide.png is 16-bit"):
        read_image(wide)
    assert np.asarray(read_image(wide, expect="depth")).max() == 1234
    assert np.asarray(read_image(narrow)).max() == 12
    with pytest.raises(DataError, match="narrow.png is 8-bit"):
        read_image(narrow, "depth map", expect="depth")


def test_edge_cases_a_review_found(tmp_path: Path) -> None:
    """Each of these once crashed with a bare Python error or did the wrong thing quietly."""
    from vldistill.config import load_recipe, read_yaml
    from vldistill.core.errors import RecipeError
    from vldistill.data.jsonio import load_json, parse_line

    recipe = tmp_path / "recipe.yaml"
    for text in ["? [a, b]\n: 1\n", "[" * 5000]:               # unhashable key, deep nesting
        recipe.write_text(text)
        with pytest.raises(RecipeError, match="recipe.yaml"):
            read_yaml(recipe)
    document = tmp_path / "q.json"
    for text in ["[" * 100000, '{"question_id": ' + "9" * 5000 + "}"]:
        document.write_text(text)
        with pytest.raises(DataError, match="q.json"):
            load_json(document, "questions")
        with pytest.raises(DataError, match="line 4"):
            parse_line(text, "line 4", "one object per line")
    document.write_bytes(b'\xef\xbb\xbf{"questions": []}')        # a UTF-8 byte-order mark
    assert load_json(document, "questions") == {"questions": []}
    document.write_text('{"questions": [{"question_id": 7, "image_id": 1, "image_id": 2}]}')
    with pytest.raises(DataError, match=r"'image_id' appears twice .*'question_id': 7"):
        load_json(document, "questions")
    # an anchor shared by teacher and student: overriding the teacher leaves the student alone
    recipe.write_text("teacher:\n  model: &m {name: vqa_attention, params: {width: 8}}\n"
                      "student:\n  model: *m\n")
    loaded = load_recipe(recipe, ["teacher.model.params.width=16"])
    assert loaded.teacher.model.params["width"] == 16
    assert loaded.student.model.params["width"] == 8


def test_a_symlinked_image_inside_the_root_is_followed(tmp_path: Path) -> None:
    """DVC, git-annex and Hugging Face caches lay datasets out as links into a blob store:
    a link made on the machine is followed; only paths written in the data are checked."""
    from vldistill.data.vqa import FolderImageStore

    blob = tmp_path / "blobs" / "abc123"
    blob.parent.mkdir()
    Image.fromarray(np.full((4, 4, 3), 9, np.uint8)).save(blob, format="PNG")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "1.png").symlink_to(blob)
    assert FolderImageStore(tmp_path / "images").rgb(1).max() == 9
