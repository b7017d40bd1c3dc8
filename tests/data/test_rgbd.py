"""Tests for RGB-D data (vldistill.data.rgbd): the layout, depth preprocessing, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from vldistill.core.errors import DataError, MissingFileError
from vldistill.data.answers import AnswerVocab
from vldistill.data.batches import VQACollator, VQAImageDataset
from vldistill.data.rgbd import DepthSettings, preprocess_depth, read_rgbd, write_rgbd
from vldistill.data.sample import ArrayImageStore, Sample
from vldistill.data.tokenizer import QuestionTokenizer


def make_samples() -> list[Sample]:
    return [Sample(1, "a", "How many objects are there?", ("2",) * 10, "count", "number"),
            Sample(2, "a", "Is there a large circle?", ("yes",) * 10, "exists", "yes/no"),
            Sample(3, "b", "What shape is the nearest object?", ("star",) * 10, "nearest"),
            Sample(4, "b", "What colour is it?")]                       # unlabelled


def make_store(seed: int = 0, size: int = 6) -> ArrayImageStore:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(2, size, size + 2, 3), dtype=np.uint8)
    millimetres = rng.integers(1, 9_000, size=(2, size, size + 2))
    millimetres[:, 0, 0] = 0                                            # no reading
    return ArrayImageStore(["a", "b"], rgb, (millimetres / 1000.0).astype(np.float32))


def exported(tmp_path: Path) -> tuple[Path, ArrayImageStore]:
    store = make_store()
    return write_rgbd(make_samples(), store, tmp_path, "train")["samples"], store


def rewrite(path: Path, change) -> None:
    document = json.loads(path.read_text())
    change(document["samples"])
    path.write_text(json.dumps(document))


# ----------------------------------------------------------------------------- preprocessing

def test_range_normalisation_by_hand() -> None:
    metres = np.array([[0.0, 2.0], [4.0, 10.0]], dtype=np.float32)
    settings = DepthSettings(min_m=0.0, max_m=8.0)

    out = preprocess_depth(metres, settings)

    # (d - 0) / 8, clipped; the invalid 0 stays 0
    np.testing.assert_allclose(out, [[[0.0, 0.25], [0.5, 1.0]]])
    assert out.dtype == np.float32 and out.shape == (1, 2, 2)


def test_inverse_normalisation_three_channels_and_mask_by_hand() -> None:
    metres = np.array([[0.0, 2.0], [np.nan, 10.0]], dtype=np.float32)
    settings = DepthSettings(normalise="inverse", min_m=1.0, max_m=20.0, channels=3,
                             mask_channel=True)

    out = preprocess_depth(metres, settings)

    assert out.shape == (4, 2, 2) and settings.input_channels == 4
    for channel in range(3):                      # 1 / d, invalid (0, NaN) -> 0
        np.testing.assert_allclose(out[channel], [[0.0, 0.5], [0.0, 0.1]])
    np.testing.assert_array_equal(out[3], [[0.0, 1.0], [0.0, 1.0]])


def test_depth_settings_refuse_an_empty_range_and_inverse_from_zero() -> None:
    with pytest.raises(ValidationError, match="max_m .* must be greater than min_m"):
        DepthSettings(min_m=5.0, max_m=5.0)
    with pytest.raises(ValidationError, match="set min_m > 0"):
        DepthSettings(normalise="inverse", min_m=0.0)


# ----------------------------------------------------------------------------- layout

def test_round_trip_keeps_samples_rgb_and_depth_to_the_millimetre(tmp_path: Path) -> None:
    path, store = exported(tmp_path)

    samples, read, report = read_rgbd(path)

    assert samples == make_samples()
    assert report.skipped_questions == 0 and report.resized_depth == []
    for image_id in ("a", "b"):
        np.testing.assert_array_equal(read.rgb(image_id), store.rgb(image_id))
        np.testing.assert_allclose(read.depth(image_id), store.depth(image_id), atol=5e-4)
        assert read.depth(image_id)[0, 0] == 0.0


def test_shapesworld_export_reads_back_through_the_rgbd_source(tmp_path: Path) -> None:
    from vldistill.data.export import export_shapesworld
    from vldistill.data.shapesworld import ShapesWorldSettings, load_shapesworld

    world = load_shapesworld(ShapesWorldSettings(train_images=6, val_images=3,
                                                 questions_per_image=2))
    export_shapesworld(world, tmp_path, "rgbd")

    samples, store, _ = read_rgbd(tmp_path / "val.json")

    split = world.splits["val"]
    assert [s.question_id for s in samples] == [s.question_id for s in split.samples]
    assert [s.question_type for s in samples] == [s.question_type for s in split.samples]
    image_id = split.samples[0].image_id
    np.testing.assert_array_equal(store.rgb(image_id), split.images.rgb(image_id))
    np.testing.assert_allclose(store.depth(image_id), split.images.depth(image_id), atol=5e-4)


def test_paired_batches_give_the_student_depth_and_the_teacher_rgb(tmp_path: Path) -> None:
    path, store = exported(tmp_path)
    samples, images, _ = read_rgbd(path)
    labelled = [s for s in samples if s.answers]
    vocab = AnswerVocab.build(s.answers for s in labelled)
    tokenizer = QuestionTokenizer.build(s.question for s in samples)
    settings = DepthSettings(max_m=8.0)
    dataset = VQAImageDataset(samples, images, vocab, tokenizer, modalities=("depth", "rgb"),
                              depth=settings)

    batch = VQACollator(len(vocab), "depth", "rgb")([dataset[0], dataset[1]])

    student, teacher = batch["inputs"]["images"], batch["teacher_inputs"]["images"]
    assert student.dtype == torch.float32 and student.shape == (2, 1, 6, 8)
    assert teacher.dtype == torch.uint8 and teacher.shape == (2, 3, 6, 8)
    expected = preprocess_depth(np.round(store.depth("b") * 1000) / 1000, settings)
    np.testing.assert_allclose(student[1].numpy(), expected, atol=1e-6)
    np.testing.assert_array_equal(teacher[1].permute(1, 2, 0).numpy(), store.rgb("b"))
    # the questions are shared: only the images differ
    assert batch["teacher_inputs"]["question_tokens"] is batch["inputs"]["question_tokens"]
    assert "teacher_inputs" not in VQACollator(len(vocab), "rgb", "rgb")([dataset[0]])


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("pixels, found", [
    (np.zeros((6, 8), dtype=np.uint8), "8-bit, 1 channel"),
    (np.zeros((6, 8, 3), dtype=np.uint8), "8-bit, 3 channels"),
])
def test_a_depth_map_that_is_not_16_bit_single_channel_is_named(tmp_path: Path, pixels,
                                                                 found: str) -> None:
    path, _ = exported(tmp_path)
    Image.fromarray(pixels).save(tmp_path / "depth" / "b.png")

    with pytest.raises(DataError) as error:
        read_rgbd(path)

    message = str(error.value)
    assert str(tmp_path / "depth" / "b.png") in message and found in message
    assert "16-bit single-channel" in message


def test_a_smaller_depth_map_is_resized_to_the_rgb_with_a_note(tmp_path: Path, capsys) -> None:
    path, _ = exported(tmp_path)
    Image.fromarray(np.full((3, 4), 2500, dtype=np.uint16)).save(tmp_path / "depth" / "a.png")

    samples, store, report = read_rgbd(path)

    assert len(samples) == 4
    assert report.resized_depth == [("a", (4, 3), (8, 6))]
    depth = store.depth("a")
    assert depth.shape == (6, 8) and np.all(depth == 2.5)
    assert "1 depth map(s) differ in size" in capsys.readouterr().out


def test_a_size_mismatch_is_refused_when_the_recipe_says_so(tmp_path: Path) -> None:
    path, _ = exported(tmp_path)
    Image.fromarray(np.full((3, 4), 2500, dtype=np.uint16)).save(tmp_path / "depth" / "a.png")

    with pytest.raises(DataError, match=r"depth/a.png is 4x3 but .*images/a.png is 8x6"):
        read_rgbd(path, settings=DepthSettings(size_mismatch="refuse"))


def test_a_missing_depth_map_fails_naming_the_file_and_questions(tmp_path: Path) -> None:
    path, _ = exported(tmp_path)
    (tmp_path / "depth" / "b.png").unlink()

    with pytest.raises(MissingFileError) as error:
        read_rgbd(path)

    message = str(error.value)
    assert "1 of 2 images" in message and str(tmp_path / "depth" / "b.png") in message
    assert "image 'b' (2 question(s))" in message and "missing: skip" in message


def test_missing_modalities_are_skipped_and_counted_when_asked(tmp_path: Path, capsys) -> None:
    path, _ = exported(tmp_path)
    rewrite(path, lambda samples: samples[0].update(depth=None) or samples[1].update(depth=None))
    (tmp_path / "images" / "b.png").unlink()

    samples, store, report = read_rgbd(path, settings=DepthSettings(missing="skip"))

    assert samples == [] and report.skipped_questions == 4
    assert sorted(why for _, why in report.skipped_images) == [
        f"RGB image {tmp_path / 'images' / 'b.png'} is missing", "no depth map is listed"]
    assert "skipped 4 question(s) on 2 image(s)" in capsys.readouterr().out


def test_a_modality_no_model_sees_is_not_required(tmp_path: Path) -> None:
    path, _ = exported(tmp_path)
    (tmp_path / "depth" / "a.png").unlink()

    samples, store, report = read_rgbd(path, needs=("rgb",))

    assert len(samples) == 4 and report.skipped_questions == 0


def test_one_image_id_with_two_different_files_is_refused(tmp_path: Path) -> None:
    path, _ = exported(tmp_path)
    rewrite(path, lambda samples: samples[1].update(rgb="images/b.png"))

    with pytest.raises(DataError, match=r"samples\[1\] gives image_id 'a' the files"):
        read_rgbd(path)


def test_a_record_without_rgb_names_the_record_and_field(tmp_path: Path) -> None:
    path, _ = exported(tmp_path)
    rewrite(path, lambda samples: samples[2].pop("rgb"))

    with pytest.raises(DataError, match=r"samples\[2\] has no field 'rgb'"):
        read_rgbd(path)


def test_a_store_without_depth_is_named_when_a_model_sees_depth() -> None:
    samples = [s for s in make_samples() if s.answers]
    store = ArrayImageStore(["a", "b"], make_store().rgb_array)       # no depth
    vocab = AnswerVocab.build(s.answers for s in samples)
    dataset = VQAImageDataset(samples, store, vocab,
                              QuestionTokenizer.build(s.question for s in samples),
                              modalities=("depth",))

    with pytest.raises(DataError, match="image 'a' has no depth map"):
        dataset[0]
