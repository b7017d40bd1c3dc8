"""The VizWiz layout: reading, writing, the ShapesWorld export, and bad input."""

import json

import numpy as np
import pytest

from vldistill.core.errors import DataError, MissingFileError
from vldistill.data.sample import Sample
from vldistill.data.vizwiz import read_vizwiz, write_vizwiz


class Store:
    def __init__(self, images):
        self.images = images

    def rgb(self, image_id):
        return self.images[image_id]

    def depth(self, image_id):
        return None

    def ids(self):
        return list(self.images)


def scenes():
    generator = np.random.default_rng(0)
    images = {i: generator.integers(0, 256, (8, 8, 3), dtype=np.uint8) for i in (1, 2)}
    samples = [
        Sample(10, 1, "What colour is it?", ("red",) * 9 + ("Red",), "colour", "other"),
        Sample(11, 1, "Is there a star?", ("yes",) * 10, "exists", "yes/no"),
        Sample(12, 2, "What is written?", ("unanswerable",) * 10, "unanswerable",
               "unanswerable"),
        Sample(13, 2, "How many?", (), "count", ""),                   # unlabelled
    ]
    return samples, Store(images)


def test_round_trip_with_one_image_file_per_question(tmp_path):
    samples, store = scenes()
    paths = write_vizwiz(samples, store, tmp_path, "val")
    records = json.loads(paths["annotations"].read_text())
    assert [r["image"] for r in records] == [f"VizWiz_val_{n:08d}.png" for n in range(4)]
    assert [r.get("answerable") for r in records] == [1, 1, 0, None]
    assert "answers" not in records[3]                                # a test-split record
    first, second = (tmp_path / "val" / r["image"] for r in records[:2])
    assert first.stat().st_ino == second.stat().st_ino               # hard link, not a copy

    read, images = read_vizwiz(paths["annotations"], tmp_path / "val")
    assert [s.question for s in read] == [s.question for s in samples]
    assert [s.answers for s in read] == [s.answers for s in samples]
    assert [s.answerable for s in read] == [True, True, False, None]
    assert [s.answer_type for s in read] == ["other", "yes/no", "unanswerable", ""]
    assert read[0].question_id == "VizWiz_val_00000000.png"
    for sample, original in zip(read, samples):
        assert np.array_equal(images.rgb(sample.image_id), store.rgb(original.image_id))
    # without image_root the reader finds <split>/ beside annotations/
    assert read_vizwiz(paths["annotations"])[1].root == tmp_path / "val"


def write(tmp_path, document):
    path = tmp_path / "val.json"
    path.write_text(json.dumps(document))
    return path


GOOD = {"image": "VizWiz_val_00000001.jpg", "question": "What is this?",
        "answers": [{"answer": "soup", "answer_confidence": "yes"}] * 10,
        "answer_type": "other", "answerable": 1}


@pytest.mark.parametrize("document, message", [
    ({"annotations": []}, r"expected a JSON list of VizWiz records, got an object"),
    ([3], r"record \[0\] is 3; expected a JSON object"),
    ([{**GOOD, "question": None}], r"record \[0\] field 'question' is None .*expected a string"),
    ([{k: v for k, v in GOOD.items() if k != "image"}], r"record \[0\] has no field 'image'"),
    ([{**GOOD, "image": "../secret.jpg"}], r"is not an image file name .*no folders"),
    ([{**GOOD, "image": "notes.txt"}], r"'notes.txt' is not an image file name"),
    ([{**GOOD, "answerable": "yes"}], r"answerable is 'yes'; expected 0 or 1"),
    ([{**GOOD, "answerable": None}], r"answerable is None; expected 0 or 1"),
    ([{**GOOD, "answerable": 2}], r"answerable is 2; expected 0 or 1"),
    ([{**GOOD, "answer_type": "colour"}], r"answer_type 'colour' is not one of other"),
    ([{**GOOD, "answers": ["soup"]}], r"answers\[0\] is 'soup'; expected"),
    ([GOOD, GOOD], r"question ids appear more than once in 'image'"),
])
def test_bad_records_name_the_file_record_and_fix(tmp_path, document, message):
    path = write(tmp_path, document)
    with pytest.raises(DataError, match=message) as error:
        read_vizwiz(path)
    assert str(path) in str(error.value) and "Fix" in str(error.value)


def test_missing_file_and_missing_images(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        read_vizwiz(tmp_path / "nope.json")
    path = write(tmp_path, [GOOD])
    (tmp_path / "images").mkdir()
    with pytest.raises(MissingFileError, match="VizWiz_val_00000001"):
        read_vizwiz(path, tmp_path / "images")


def test_test_split_records_are_unlabelled(tmp_path):
    path = write(tmp_path, [{"image": "VizWiz_test_00000000.jpg", "question": "What?"}])
    [sample], _ = read_vizwiz(path)
    assert not sample.labelled and sample.answerable is None


def test_shapesworld_exports_the_vizwiz_layout_with_its_unanswerable_questions(tmp_path):
    from vldistill.data.export import export_shapesworld
    from vldistill.data.shapesworld import ShapesWorldSettings, load_shapesworld

    world = load_shapesworld(ShapesWorldSettings(train_images=6, val_images=30,
                                                 questions_per_image=8, seed=3))
    written = export_shapesworld(world, tmp_path, format="vizwiz")
    samples, store = read_vizwiz(written["val annotations"], written["val images"])
    original = world.splits["val"].samples
    assert len(samples) == len(original)
    unanswerable = [s for s in samples if s.answer_type == "unanswerable"]
    assert unanswerable and all(s.answerable is False for s in unanswerable)
    assert all(s.answerable for s in samples if s.answer_type != "unanswerable")
    assert [s.answers for s in samples] == [s.answers for s in original]


def test_json_booleans_and_exact_file_names(tmp_path):
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (4, 4), "white").save(tmp_path / "imgs" / "c.png")
    Image.new("RGB", (4, 4), "black").save(tmp_path / "imgs" / "c.jpeg")
    path = write(tmp_path, [{**GOOD, "image": "c.jpeg", "answerable": True},
                            {**GOOD, "image": "c.png", "answerable": False}])
    samples, images = read_vizwiz(path, tmp_path / "imgs")
    assert [s.answerable for s in samples] == [True, False]
    # same stem, different files: each question reads its own image
    assert images.rgb(samples[0].image_id).max() == 0
    assert images.rgb(samples[1].image_id).min() == 255
