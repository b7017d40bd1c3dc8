"""Tests for the VQAv2 / OK-VQA reader and writer (vldistill.data.vqa)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vldistill.core.errors import DataError, MissingFileError, VldistillError
from vldistill.data.sample import ArrayImageStore, Sample
from vldistill.data.vqa import FolderImageStore, read_vqa, write_vqa

ANSWERS = ("cat", "cat", "kitten", "cat", "dog", "cat", "cat", "kitten", "cat", "cat")


def make_samples() -> list[Sample]:
    return [
        Sample(11, 1, "What animal is this?", ANSWERS, "what animal is", "other", ("f1", "f7")),
        Sample(12, 1, "Is it sleeping?", ("no", "yes", "yes"), "is it", "yes/no"),
        Sample(13, 2, "How many legs?", ("4",) * 10, "how many", "number"),
        Sample(14, 3, "What colour is the sky?", (), "what color is", "", ("f3",)),
        Sample(15, 2, "Unlabelled, no extras?"),
    ]


def make_store(image_ids: list[int], seed: int = 0, size: int = 6) -> ArrayImageStore:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(len(image_ids), size, size + 2, 3), dtype=np.uint8)
    millimetres = rng.integers(0, 10_000, size=(len(image_ids), size, size + 2))
    millimetres[:, 0, 0] = 0  # an invalid pixel stays 0
    depth = (millimetres / 1000.0).astype(np.float32)
    return ArrayImageStore(image_ids, rgb, depth)


def write_json(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def write_png(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def official_files(tmp_path: Path, questions: list[dict], annotations: list[dict]
                   ) -> tuple[Path, Path]:
    questions_path = write_json(tmp_path / "q.json", {
        "info": {}, "task_type": "Open-Ended", "data_type": "mscoco",
        "data_subtype": "train2014", "questions": questions})
    annotations_path = write_json(tmp_path / "a.json", {"annotations": annotations})
    return questions_path, annotations_path


def annotation(question_id: int, image_id: int, answers: list[str], **extra: object) -> dict:
    return {"question_id": question_id, "image_id": image_id, "question_type": "what",
            "answer_type": "other", "multiple_choice_answer": answers[0],
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i}
                        for i, a in enumerate(answers, start=1)], **extra}


# ----------------------------------------------------------------------------- round trip

def test_round_trip_keeps_samples_images_and_depth(tmp_path: Path) -> None:
    samples = make_samples()
    store = make_store([1, 2, 3])
    paths = write_vqa(samples, store, tmp_path / "out", "train")

    read, folder = read_vqa(paths["questions"], paths["annotations"], paths["images"],
                            depth_root=paths["depth"], require_answers=False)

    assert read == samples
    for image_id in (1, 2, 3):
        np.testing.assert_array_equal(folder.rgb(image_id), store.rgb(image_id))
        depth = folder.depth(image_id)
        assert depth is not None and depth.dtype == np.float32
        expected = np.round(store.depth(image_id) * 1000)
        np.testing.assert_array_equal(np.round(depth * 1000), expected)
    assert sorted(folder.ids()) == [1, 2, 3]


def test_round_trip_with_string_ids_and_no_depth(tmp_path: Path) -> None:
    samples = [Sample("q-a", "img_a", "Where?", ("here", "there")), Sample("q-b", "img_b", "Who?")]
    rgb = np.zeros((2, 3, 3, 3), dtype=np.uint8)
    paths = write_vqa(samples, ArrayImageStore(["img_a", "img_b"], rgb), tmp_path, "val")

    read, folder = read_vqa(paths["questions"], paths["annotations"], paths["images"],
                            require_answers=False)

    assert read == samples
    assert "depth" not in paths and folder.depth("img_a") is None
    np.testing.assert_array_equal(folder.rgb("img_b"), rgb[1])


def test_written_files_follow_the_vqa_layout(tmp_path: Path) -> None:
    paths = write_vqa(make_samples(), make_store([1, 2, 3]), tmp_path, "train")

    annotations = json.loads(paths["annotations"].read_text())["annotations"]
    questions = json.loads(paths["questions"].read_text())["questions"]
    assert [a["question_id"] for a in annotations] == [11, 12, 13]  # unlabelled: questions only
    assert [q["question_id"] for q in questions] == [11, 12, 13, 14, 15]
    first = annotations[0]
    assert first["multiple_choice_answer"] == "cat"
    assert first["fact_ids"] == ["f1", "f7"]
    assert [a["answer_id"] for a in first["answers"]] == list(range(1, 11))
    assert {a["answer_confidence"] for a in first["answers"]} == {"yes"}
    assert "fact_ids" not in annotations[1]
    assert annotations[1]["multiple_choice_answer"] == "yes"
    assert sorted(p.name for p in paths["images"].iterdir()) == ["1.png", "2.png", "3.png"]
    with Image.open(paths["depth"] / "1.png") as depth_png:
        assert depth_png.mode == "I;16"
    assert not list(tmp_path.rglob("*.tmp"))


def test_write_rejects_duplicate_question_ids(tmp_path: Path) -> None:
    samples = [Sample(1, 1, "a?"), Sample(1, 2, "b?")]
    with pytest.raises(DataError, match=r"question ids appear more than once.*\[1\]"):
        write_vqa(samples, make_store([1, 2]), tmp_path, "train")


# ----------------------------------------------------------------------------- official layout

def test_reads_coco_naming_and_orders_answers_by_answer_id(tmp_path: Path) -> None:
    write_png(tmp_path / "train2014" / "COCO_train2014_000000000009.jpg")
    record = annotation(90, 9, ["a", "b", "c"], fact_ids=["k1"])
    record["answers"].reverse()
    questions_path, annotations_path = official_files(
        tmp_path, [{"image_id": 9, "question": "What?", "question_id": 90}], [record])

    for pattern in ("COCO_train2014_{image_id:012d}.jpg", None):
        samples, folder = read_vqa(questions_path, annotations_path, tmp_path / "train2014",
                                   pattern=pattern, image_size=8)
        assert samples == [Sample(90, 9, "What?", ("a", "b", "c"), "what", "other", ("k1",))]
        assert folder.rgb(9).shape == (8, 8, 3) and folder.rgb(9).dtype == np.uint8
        assert folder.ids() == [9]


def test_depth_is_read_as_metres_with_zero_invalid(tmp_path: Path) -> None:
    write_png(tmp_path / "img" / "5.png")
    millimetres = np.array([[0, 1500, 65535], [1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.uint16)
    (tmp_path / "depth").mkdir()
    Image.fromarray(millimetres).save(tmp_path / "depth" / "5.png")

    depth = FolderImageStore(tmp_path / "img", depth_root=tmp_path / "depth").depth(5)

    assert depth is not None and depth.dtype == np.float32
    np.testing.assert_allclose(depth, millimetres / 1000.0, rtol=1e-6)
    assert depth[0, 0] == 0.0


# ----------------------------------------------------------------------------- bad input

def test_malformed_json_names_file_and_position(tmp_path: Path) -> None:
    path = tmp_path / "q.json"
    path.write_text('{"questions": [\n  {"image_id": 1,, "question": "x"}]}')
    with pytest.raises(DataError) as caught:
        read_vqa(path)
    message = str(caught.value)
    for part in (str(path), "line 2", "column 18", "char 33"):
        assert part in message


def test_wrong_type_names_file_record_field_and_value(tmp_path: Path) -> None:
    questions_path, _ = official_files(tmp_path, [
        {"image_id": 1, "question": "ok?", "question_id": 1},
        {"image_id": 1, "question": 42, "question_id": 2}], [])
    with pytest.raises(DataError) as caught:
        read_vqa(questions_path)
    message = str(caught.value)
    for part in (str(questions_path), "questions[1]", "'question'", "42", "a string"):
        assert part in message


def test_float_id_is_a_wrong_type(tmp_path: Path) -> None:
    questions_path, _ = official_files(
        tmp_path, [{"image_id": 1.5, "question": "ok?", "question_id": 1}], [])
    with pytest.raises(DataError, match=r"questions\[0\] field 'image_id' is 1.5 \(float\)"):
        read_vqa(questions_path)


def test_missing_field_names_file_record_and_field(tmp_path: Path) -> None:
    record = annotation(1, 1, ["a"])
    del record["answers"]
    questions_path, annotations_path = official_files(
        tmp_path, [{"image_id": 1, "question": "q?", "question_id": 1}], [record])
    with pytest.raises(DataError) as caught:
        read_vqa(questions_path, annotations_path)
    message = str(caught.value)
    assert str(annotations_path) in message and "annotations[0]" in message
    assert "no field 'answers'" in message


def test_missing_image_names_file_and_question_id(tmp_path: Path) -> None:
    write_png(tmp_path / "img" / "1.png")
    questions_path, annotations_path = official_files(tmp_path, [
        {"image_id": 1, "question": "q?", "question_id": 10},
        {"image_id": 2, "question": "q?", "question_id": 20}],
        [annotation(10, 1, ["a"]), annotation(20, 2, ["b"])])
    with pytest.raises(MissingFileError) as caught:
        read_vqa(questions_path, annotations_path, tmp_path / "img")
    message = str(caught.value)
    assert "1 of the 2 images" in message
    assert str(tmp_path / "img" / "2.png") in message and "question ids [20]" in message
    assert "Fix:" in message


def test_missing_image_with_pattern_names_the_expected_path(tmp_path: Path) -> None:
    folder = FolderImageStore(tmp_path, pattern="COCO_val2014_{image_id:012d}.jpg")
    with pytest.raises(MissingFileError, match="COCO_val2014_000000000007.jpg"):
        folder.rgb(7)


def test_question_without_annotation_is_named(tmp_path: Path) -> None:
    questions_path, annotations_path = official_files(tmp_path, [
        {"image_id": 1, "question": "q?", "question_id": 10},
        {"image_id": 1, "question": "q?", "question_id": 11}], [annotation(10, 1, ["a"])])
    with pytest.raises(DataError, match=r"1 of the 2 questions.*question ids \[11\]"):
        read_vqa(questions_path, annotations_path)

    samples, _ = read_vqa(questions_path, annotations_path, require_answers=False)
    assert [s.labelled for s in samples] == [True, False]


def test_duplicate_question_ids_raise(tmp_path: Path) -> None:
    questions_path, _ = official_files(tmp_path, [
        {"image_id": 1, "question": "q?", "question_id": 10},
        {"image_id": 2, "question": "r?", "question_id": 10}], [])
    with pytest.raises(DataError, match=r"q.json.*appear more than once.*\[10\]"):
        read_vqa(questions_path)


def test_annotation_for_another_image_raises(tmp_path: Path) -> None:
    questions_path, annotations_path = official_files(
        tmp_path, [{"image_id": 1, "question": "q?", "question_id": 10}],
        [annotation(10, 2, ["a"])])
    with pytest.raises(DataError, match=r"annotations\[0\].*image_id 2.*image_id 1"):
        read_vqa(questions_path, annotations_path)


def test_file_that_is_not_an_image_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "3.png"
    path.write_bytes(np.random.default_rng(0).bytes(256))
    with pytest.raises(DataError) as caught:
        FolderImageStore(tmp_path).rgb(3)
    assert str(path) in str(caught.value)


def test_errors_are_builtin_subclasses() -> None:
    assert issubclass(DataError, ValueError) and issubclass(DataError, VldistillError)
    assert issubclass(MissingFileError, FileNotFoundError)


def test_empty_answer_list_counts_as_missing_annotation(tmp_path):
    import json

    from vldistill.core.errors import DataError
    from vldistill.data.vqa import read_vqa

    questions = {"questions": [{"image_id": 1, "question": "What?", "question_id": 10}]}
    annotations = {"annotations": [{"question_id": 10, "image_id": 1, "answers": []}]}
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "a.json").write_text(json.dumps(annotations))
    with pytest.raises(DataError, match="empty answer list.*question ids.*10"):
        read_vqa(tmp_path / "q.json", tmp_path / "a.json")
