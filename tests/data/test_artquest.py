"""ArtQuest CSV data and ShapesWorld's image-level style questions."""

from __future__ import annotations

import re

import pytest

from vldistill.core.errors import DataError
from vldistill.data.artquest import read_artquest, write_artquest
from vldistill.data.shapesworld import ShapesWorldSettings, generate_shapesworld
from vldistill.data.shapesworld_questions import main_pattern, style_questions
from vldistill.data.shapesworld_render import ObjectSpec, Scene


def scene(*objects: tuple[str, str]) -> Scene:
    return Scene(7, tuple(ObjectSpec("circle", "red", size, pattern, 10, 10, 1.0)
                          for size, pattern in objects))


def test_the_main_pattern_weighs_objects_by_area_and_ties_have_none() -> None:
    assert main_pattern(scene(("large", "striped"), ("small", "dotted"),
                              ("small", "dotted"))) == "striped"          # 3 against 2
    assert main_pattern(scene(("small", "plain"), ("small", "dotted"))) is None
    assert main_pattern(scene(("large", "plain"), ("small", "dotted"), ("small", "dotted"),
                              ("small", "dotted"), ("small", "plain"))) == "plain"  # 4 vs 3
    questions = style_questions(scene(("small", "dotted")), 2)
    assert [q.question_id for q in questions] == [790, 791]
    assert {q.answers for q in questions} == {("dotted",) * 10}
    assert style_questions(scene(("small", "plain"), ("small", "dotted")), 2) == []


@pytest.fixture(scope="module")
def world():
    return generate_shapesworld(ShapesWorldSettings(train_images=6, val_images=2))


def test_a_written_csv_reads_back_with_the_same_questions(world, tmp_path) -> None:
    split = world.splits["train"]
    written = write_artquest(split.samples, split.images, tmp_path, "train")
    samples, images = read_artquest(written["csv"], written["images"])
    labelled = [s for s in split.samples if s.labelled]
    assert [s.question for s in samples] == [s.question for s in labelled]
    assert [s.question_id for s in samples] == [s.question_id for s in labelled]
    assert [s.question_type for s in samples] == [s.question_type for s in labelled]
    assert (images.rgb(samples[0].image_id) == split.images.rgb(labelled[0].image_id)).all()


def write(tmp_path, text: str):
    path = tmp_path / "split.csv"
    path.write_text(text, encoding="utf-8")
    (tmp_path / "img").mkdir(exist_ok=True)
    return path


def test_missing_columns_are_named_with_the_file(tmp_path) -> None:
    path = write(tmp_path, "image,question\na.png,what?\n")
    with pytest.raises(DataError, match=r"split\.csv: missing column\(s\) answer"):
        read_artquest(path, tmp_path / "img")


@pytest.mark.parametrize("image", ["../secret.png", "/etc/passwd", "a/../../b.png"])
def test_image_paths_that_escape_the_root_are_refused(tmp_path, image) -> None:
    path = write(tmp_path, f"image,question,answer\n{image},what?,yes\n")
    with pytest.raises(DataError, match="line 2.*not inside the image root"):
        read_artquest(path, tmp_path / "img")


def test_an_empty_answer_names_the_line(tmp_path) -> None:
    path = write(tmp_path, "image,question,answer\na.png,what?,yes\nb.png,why?, \n")
    with pytest.raises(DataError, match="line 3: empty answer"):
        read_artquest(path, tmp_path / "img", check_images=False)


def test_a_missing_image_is_reported(tmp_path) -> None:
    path = write(tmp_path, "image,question,answer,question_id\nsub/a.png,what?,yes,4\n")
    from vldistill.core.errors import MissingFileError

    with pytest.raises(MissingFileError, match=re.escape("sub/a.png")):
        read_artquest(path, tmp_path / "img")


def test_the_shapesworld_export_adds_style_questions_and_reads_back(world, tmp_path) -> None:
    from collections import Counter

    from vldistill.data.export import export_shapesworld

    written = export_shapesworld(world, tmp_path, "artquest", style_questions=1)
    samples, _ = read_artquest(written["val csv"], written["val images"])
    types = Counter(s.question_type for s in samples)
    scenes = world.splits["val"].scenes
    assert types["style"] == sum(main_pattern(scene) is not None for scene in scenes)
    own = [s for s in world.splits["val"].samples if s.labelled]
    assert len(samples) - types["style"] == len(own)
    assert [s.question for s in samples if s.question_type != "style"] == \
        [s.question for s in own]
