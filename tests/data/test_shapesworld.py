"""ShapesWorld: determinism, answers recomputed from scenes, knowledge, rendering, cache."""

from __future__ import annotations

import collections
import dataclasses
import json
import multiprocessing
import re
import time
from pathlib import Path

import numpy as np
import pydantic
import pytest

import vldistill.data.shapesworld as shapesworld_module
from vldistill.data.shapesworld import (
    QUESTION_TYPES,
    ObjectSpec,
    Scene,
    ShapesWorld,
    ShapesWorldSettings,
    default_cache_dir,
    generate_shapesworld,
    load_shapesworld,
    write_captions_jsonl,
    write_facts_jsonl,
)
from vldistill.data.shapesworld_render import (
    BACKGROUND_DEPTH_M,
    COLOUR_RGB,
    FAR_SHADE,
    object_mask,
    render_scenes,
)

SMALL = ShapesWorldSettings(seed=3, train_images=60, val_images=20)
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten")


@pytest.fixture(scope="module")
def world() -> ShapesWorld:
    return generate_shapesworld(SMALL)


def all_samples(world: ShapesWorld):
    return [s for split in world.splits.values() for s in split.samples]


def scene_by_image(world: ShapesWorld) -> dict[int, Scene]:
    return {scene.image_id: scene for split in world.splits.values() for scene in split.scenes}


def majority(answers: tuple[str, ...]) -> str:
    (answer, count), = collections.Counter(answers).most_common(1)
    return answer


def vqa_normalise(answer: str) -> str:
    """The parts of the official VQA answer normalisation that ShapesWorld's variants exercise."""
    number = {"none": "0", **{word: str(i) for i, word in enumerate(NUMBER_WORDS)}}
    words = answer.lower().strip().rstrip(".").split()
    return " ".join(number.get(w, w) for w in words if w not in ("a", "an", "the"))


def assert_worlds_equal(a: ShapesWorld, b: ShapesWorld) -> None:
    assert a.settings == b.settings
    assert a.facts == b.facts
    assert a.splits.keys() == b.splits.keys()
    for name in a.splits:
        x, y = a.splits[name], b.splits[name]
        assert x.samples == y.samples
        assert x.scenes == y.scenes
        assert x.captions == y.captions
        assert x.images.ids() == y.images.ids()
        np.testing.assert_array_equal(x.images.rgb_array, y.images.rgb_array)
        np.testing.assert_array_equal(x.images.depth_array, y.images.depth_array)


# ---------------------------------------------------------------------------------------------
# Ground truth recomputed from the scene
# ---------------------------------------------------------------------------------------------

def referents(scene: Scene, description: str) -> list[ObjectSpec]:
    """Objects matching "the [size] [colour] [pattern] <shape|object>"."""
    words = description.split()
    assert words[0] == "the", description
    *adjectives, noun = words[1:]
    return [o for o in scene.objects
            if (noun == "object" or o.shape == noun)
            and all(a in (o.size, o.colour, o.pattern) for a in adjectives)]


def the_one(scene: Scene, description: str) -> ObjectSpec:
    found = referents(scene, description)
    assert len(found) == 1, f"{description!r} is ambiguous or absent in {scene}"
    return found[0]


def ground_truth(scene: Scene, question_type: str, question: str, image_size: int) -> str:
    if question_type == "colour":
        return the_one(scene, re.fullmatch(r"What colour is (the .+)\?", question)[1]).colour
    if question_type == "shape":
        return the_one(scene, re.fullmatch(r"What shape is (the .+)\?", question)[1]).shape
    if question_type == "pattern":
        description = re.fullmatch(r"What pattern does (the .+) have\?", question)[1]
        return the_one(scene, description).pattern
    if question_type == "count":
        if question == "How many objects are there?":
            return str(len(scene.objects))
        match = re.fullmatch(r"How many (\w+) objects are there\?", question)
        if match:
            value = match[1]
            return str(sum(value in (o.size, o.colour, o.pattern) for o in scene.objects))
        shape = re.fullmatch(r"How many (\w+)s are there\?", question)[1]
        return str(sum(o.shape == shape for o in scene.objects))
    if question_type == "exists":
        adjective, noun = re.fullmatch(r"Is there an? (\w+) (\w+)\?", question).groups()
        present = any(o.shape == noun and adjective in (o.size, o.colour, o.pattern)
                      for o in scene.objects)
        return "yes" if present else "no"
    if question_type == "spatial":
        first, relation, second = re.fullmatch(
            r"Is (the .+?) (left of|right of|above|below) (the .+)\?", question).groups()
        a, b = the_one(scene, first), the_one(scene, second)
        gap = {"left of": b.x - a.x, "right of": a.x - b.x, "above": b.y - a.y,
               "below": a.y - b.y}[relation]
        assert abs(gap) >= 0.15 * image_size, f"unclear gap in {question!r}"
        return "yes" if gap > 0 else "no"
    if question_type == "nearest":
        match = (re.fullmatch(r"What (colour|shape) is the (nearest|farthest) object\?", question)
                 or re.fullmatch(r"What (pattern) does the (nearest|farthest) object have\?",
                                 question))
        attribute, which = match.groups()
        ordered = sorted(scene.objects, key=lambda o: o.depth)
        if which == "farthest":
            ordered.reverse()
        assert abs(ordered[0].depth - ordered[1].depth) > 0.5, f"unclear depth gap: {scene}"
        return getattr(ordered[0], attribute)
    raise AssertionError(f"no recomputation for {question_type}")


def test_majority_answer_equals_ground_truth_recomputed_from_scene(world):
    scenes = scene_by_image(world)
    checked = collections.Counter()
    for sample in all_samples(world):
        assert len(sample.answers) == 10
        if sample.question_type in ("unanswerable", "knowledge"):
            continue
        truth = ground_truth(scenes[sample.image_id], sample.question_type, sample.question,
                             SMALL.image_size)
        assert majority(sample.answers) == truth, sample
        assert sample.answers.count(truth) >= 6, sample
        checked[sample.question_type] += 1
    for question_type in ("colour", "shape", "count", "exists", "spatial", "nearest", "pattern"):
        assert checked[question_type] >= 20, checked


def test_answer_types_and_balance(world):
    expected = {"colour": "other", "shape": "other", "pattern": "other", "nearest": "other",
                "count": "number", "exists": "yes/no", "spatial": "yes/no",
                "unanswerable": "unanswerable"}
    samples = all_samples(world)
    for sample in samples:
        if sample.question_type == "knowledge":
            assert sample.answer_type in ("number", "other")
        else:
            assert sample.answer_type == expected[sample.question_type]
    for question_type in ("exists", "spatial"):
        answers = [majority(s.answers) for s in samples if s.question_type == question_type]
        assert 0.3 < answers.count("yes") / len(answers) < 0.7, question_type
    counts = [int(majority(s.answers)) for s in samples if s.question_type == "count"]
    assert set(counts) <= set(range(6)) and len(set(counts)) >= 4


def test_all_question_types_appear_in_proportion(world):
    samples = all_samples(world)
    counts = collections.Counter(s.question_type for s in samples)
    assert set(counts) == set(QUESTION_TYPES)
    visual = [counts[t] for t in QUESTION_TYPES[:7]]
    assert max(visual) <= 1.3 * min(visual), counts
    assert 0.01 < counts["unanswerable"] / len(samples) < 0.12, counts
    assert 0.04 < counts["knowledge"] / len(samples) < 0.2, counts


def test_ids_are_unique_and_samples_of_an_image_contiguous(world):
    train, val = world.splits["train"], world.splits["val"]
    assert train.images.ids() == list(range(60))
    assert val.images.ids() == list(range(60, 80))
    for split in (train, val):
        assert [s.image_id for s in split.samples] == [i for i in split.images.ids()
                                                       for _ in range(8)]
        assert [s.question_id for s in split.samples] == [i * 100 + k for i in split.images.ids()
                                                          for k in range(8)]
        assert set(split.captions) == set(split.images.ids())
        assert split.images.rgb_array.shape == (len(split.scenes), 64, 64, 3)
        assert split.images.rgb_array.dtype == np.uint8
        assert split.images.depth_array.shape == (len(split.scenes), 64, 64)
        assert split.images.depth_array.dtype == np.float32
        for scene in split.scenes:
            assert 1 <= len(scene.objects) <= 5


def test_unanswerable_questions(world):
    scenes = scene_by_image(world)
    unanswerable = [s for s in all_samples(world) if s.question_type == "unanswerable"]
    assert unanswerable
    for sample in unanswerable:
        assert majority(sample.answers) == "unanswerable"
        assert sample.answer_type == "unanswerable"
        missing = re.fullmatch(
            r"(?:What colour is|What pattern does|Is) the (\w+)(?: have| large)?\?",
            sample.question)
        if missing:   # asks about a shape the scene does not have
            assert all(o.shape != missing[1] for o in scenes[sample.image_id].objects)


def test_knowledge_questions_cite_facts_that_hold_the_answer(world):
    facts = {fact.id: fact.text for fact in world.facts}
    assert 30 <= len(facts) <= 60
    assert all(re.fullmatch(r"F\d{3}", fact_id) for fact_id in facts)
    scenes = scene_by_image(world)
    knowledge = [s for s in all_samples(world) if s.question_type == "knowledge"]
    assert {s.question.split()[0] for s in knowledge} == {"How", "Which"}
    for sample in knowledge:
        assert len(sample.fact_ids) == 1 and sample.fact_ids[0] in facts
        text, answer = facts[sample.fact_ids[0]].lower(), majority(sample.answers)
        corners = re.fullmatch(r"How many corners does (the .+) have\?", sample.question)
        if corners:
            shape = the_one(scenes[sample.image_id], corners[1]).shape
            assert shape in text
            assert (NUMBER_WORDS[int(answer)] if answer != "0" else "no corners") in text
        else:
            description = re.fullmatch(r"Which \w+ has the same colour as (the .+)\?",
                                       sample.question)[1]
            colour = the_one(scenes[sample.image_id], description).colour
            assert colour in text and answer.rstrip("y") in text
    # questions never need the distractor facts
    used = {s.fact_ids[0] for s in knowledge}
    assert any("crows" in facts[i].lower() for i in facts) and not any(
        "crows" in facts[i].lower() for i in used)


def test_annotators_add_realistic_noise(world):
    answers = [(a, majority(s.answers)) for s in all_samples(world) for a in s.answers]
    exact = sum(a == truth for a, truth in answers) / len(answers)
    mapped = sum(vqa_normalise(a) == truth for a, truth in answers) / len(answers)
    assert 0.7 < exact < 0.9
    assert exact < mapped < 0.97   # some variants normalise to the answer, some do not
    variants = {a for a, truth in answers if a != truth}
    assert {"two", "Yes"} & variants or {"yes.", "a circle"} & variants


def test_captions_list_objects_left_to_right(world):
    split = world.splits["train"]
    for scene in split.scenes:
        parts = split.captions[scene.image_id].split(" left of ")
        ordered = sorted(scene.objects, key=lambda o: (o.x, o.y))
        assert parts == [f"a {o.size} {o.colour} {o.pattern} {o.shape}" for o in ordered]


# ---------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------

def test_same_seed_gives_identical_world(world):
    assert_worlds_equal(world, generate_shapesworld(SMALL))


def test_different_seed_gives_different_world(world):
    other = generate_shapesworld(SMALL.model_copy(update={"seed": 4}))
    assert not np.array_equal(other.splits["train"].images.rgb_array,
                              world.splits["train"].images.rgb_array)
    assert other.splits["train"].samples != world.splits["train"].samples


def test_more_questions_leave_the_images_unchanged(world):
    other = generate_shapesworld(SMALL.model_copy(update={"questions_per_image": 3}))
    np.testing.assert_array_equal(other.splits["val"].images.rgb_array,
                                  world.splits["val"].images.rgb_array)
    assert len(other.splits["val"].samples) == 3 * 20


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

def test_nearer_objects_occlude_farther_ones():
    red = ObjectSpec("square", "red", "large", "plain", 26, 32, 2.0)
    blue = ObjectSpec("circle", "blue", "large", "plain", 38, 32, 4.0)
    overlap = object_mask(red, 64) & object_mask(blue, 64)
    assert overlap.sum() > 20
    pushed_back = dataclasses.replace(red, depth=4.5)
    rgb, zbuffer = render_scenes([Scene(0, (blue, red)), Scene(1, (red, blue)),
                                  Scene(2, (pushed_back, blue))], 64)
    np.testing.assert_array_equal(rgb[0], rgb[1])           # object order does not matter
    assert np.all(zbuffer[0][overlap] == 2.0)                 # the nearer red square wins
    assert np.all(rgb[0][overlap][:, 0] > rgb[0][overlap][:, 2])
    assert np.all(zbuffer[2][overlap] == 4.0)                 # pushed back, the circle wins
    assert np.all(rgb[2][overlap][:, 2] > rgb[2][overlap][:, 0])
    background = ~(object_mask(red, 64) | object_mask(blue, 64))
    assert np.all(zbuffer[0][background] == BACKGROUND_DEPTH_M)


def test_depth_shading_keeps_colour_recognisable():
    near = ObjectSpec("circle", "yellow", "large", "plain", 32, 32, 1.0)
    far = ObjectSpec("circle", "yellow", "large", "plain", 32, 32, 5.0)
    rgb, _ = render_scenes([Scene(0, (near,)), Scene(1, (far,))], 64)
    near_pixel, far_pixel = rgb[0, 32, 32].astype(float), rgb[1, 32, 32].astype(float)
    np.testing.assert_allclose(near_pixel, COLOUR_RGB["yellow"], atol=1)
    np.testing.assert_allclose(far_pixel, np.array(COLOUR_RGB["yellow"]) * FAR_SHADE, atol=1)


def test_patterns_darken_part_of_the_object():
    pixels = {}
    for pattern in ("plain", "striped", "dotted"):
        obj = ObjectSpec("square", "green", "large", pattern, 32, 32, 1.0)
        rgb, _ = render_scenes([Scene(0, (obj,))], 64)
        pixels[pattern] = rgb[0][object_mask(obj, 64)]
    assert len(np.unique(pixels["plain"], axis=0)) == 1
    for pattern in ("striped", "dotted"):
        dark = (pixels[pattern] != pixels["plain"]).any(axis=1).mean()
        assert 0.05 < dark < 0.6, pattern


def test_depth_map_follows_the_zbuffer(world):
    for split in world.splits.values():
        rgb, zbuffer = render_scenes(split.scenes, SMALL.image_size)
        np.testing.assert_array_equal(rgb, split.images.rgb_array)
        depth = np.asarray(split.images.depth_array)
        valid = depth != 0
        assert 0 < 1 - valid.mean() < 0.02                     # a few invalid pixels
        noise = (depth - zbuffer)[valid]
        assert 0.01 < noise.std() < 0.03 and abs(noise.mean()) < 0.005
        for row, scene in enumerate(split.scenes):
            for obj in scene.objects:
                mask = object_mask(obj, SMALL.image_size)
                visible = mask & (zbuffer[row] == np.float32(obj.depth))
                assert visible.sum() >= 0.6 * mask.sum()       # each keeps most of its area
                readings = depth[row][visible & valid[row]]
                assert np.all(np.abs(readings - obj.depth) < 0.15)


# ---------------------------------------------------------------------------------------------
# Knowledge base and captions files
# ---------------------------------------------------------------------------------------------

def test_jsonl_writers(world, tmp_path):
    write_facts_jsonl(world.facts, tmp_path / "facts.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "facts.jsonl").read_text().splitlines()]
    assert rows == [{"id": f.id, "text": f.text} for f in world.facts]
    captions = world.splits["val"].captions
    write_captions_jsonl(captions, tmp_path / "captions.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "captions.jsonl").read_text().splitlines()]
    assert {row["image_id"]: row["caption"] for row in rows} == captions


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------

def test_cache_round_trip_and_hit(world, tmp_path, monkeypatch):
    fresh = load_shapesworld(SMALL, tmp_path)
    assert_worlds_equal(fresh, world)
    (folder,) = [p for p in tmp_path.iterdir()]
    assert not folder.name.startswith(".")                   # no temporary folder left behind
    assert {p.suffix for p in folder.iterdir()} == {".npy", ".json"}

    def no_generation(settings):
        raise AssertionError("the second load must come from the cache")

    monkeypatch.setattr(shapesworld_module, "generate_shapesworld", no_generation)
    start = time.perf_counter()
    cached = load_shapesworld(SMALL, tmp_path)
    elapsed = time.perf_counter() - start
    print(f"cache hit took {elapsed * 1000:.1f} ms")
    assert elapsed < 2.0
    assert_worlds_equal(cached, world)


@pytest.mark.parametrize("damage", ["delete", "truncate", "garble"])
def test_damaged_cache_is_regenerated_with_a_warning(world, tmp_path, damage):
    load_shapesworld(SMALL, tmp_path)
    (folder,) = list(tmp_path.iterdir())
    if damage == "delete":
        (folder / "facts.json").unlink()
    elif damage == "truncate":
        path = folder / "train.rgb.npy"
        path.write_bytes(path.read_bytes()[:1000])
    else:
        path = folder / "val.json"
        path.write_bytes(b"[" + path.read_bytes()[1:])   # same size, not JSON any more
    with pytest.warns(RuntimeWarning, match="regenerating"):
        rebuilt = load_shapesworld(SMALL, tmp_path)
    assert_worlds_equal(rebuilt, world)
    assert_worlds_equal(load_shapesworld(SMALL, tmp_path), world)   # and the cache is whole again


def test_losing_a_cache_race_is_harmless(world, tmp_path):
    load_shapesworld(SMALL, tmp_path)
    (folder,) = list(tmp_path.iterdir())
    # a second builder finishing after the first: its os.replace onto the full folder fails
    shapesworld_module._write_cache(world, tmp_path, folder)
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]
    assert_worlds_equal(load_shapesworld(SMALL, tmp_path), world)


def _build_cache(cache_dir: str, barrier) -> None:
    barrier.wait()
    load_shapesworld(SMALL, Path(cache_dir))


def test_two_processes_building_the_same_cache(world, tmp_path):
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_build_cache, args=(str(tmp_path), barrier))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert len(list(tmp_path.iterdir())) == 1
    assert_worlds_equal(load_shapesworld(SMALL, tmp_path), world)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("VLDISTILL_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "shapesworld"
    monkeypatch.delenv("VLDISTILL_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "vldistill" / "shapesworld"


def test_cache_key_changes_with_settings(tmp_path):
    load_shapesworld(ShapesWorldSettings(train_images=3, val_images=1), tmp_path)
    load_shapesworld(ShapesWorldSettings(train_images=3, val_images=1, seed=1), tmp_path)
    assert len(list(tmp_path.iterdir())) == 2


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, says", [
    ("image_size", 16, "greater than or equal to 32"),
    ("unanswerable_fraction", 1.5, "less than or equal to 0.5"),
    ("annotator_error", -0.1, "greater than or equal to 0"),
    ("max_objects", 9, "less than or equal to 5"),
    ("questions_per_image", 100, "less than or equal to 99"),
    ("colour_count", 3, "Extra inputs are not permitted"),
])
def test_settings_reject_out_of_range_values(field, value, says):
    with pytest.raises(pydantic.ValidationError, match=says):
        ShapesWorldSettings(**{field: value})


def test_settings_check_object_range_and_are_frozen():
    with pytest.raises(pydantic.ValidationError, match=r"1 <= min_objects <= max_objects <= 5"):
        ShapesWorldSettings(min_objects=4, max_objects=2)
    settings = ShapesWorldSettings()
    with pytest.raises(pydantic.ValidationError):
        settings.seed = 1
    one_object = generate_shapesworld(ShapesWorldSettings(train_images=10, val_images=0,
                                                          min_objects=1, max_objects=1))
    assert all(len(s.objects) == 1 for s in one_object.splits["train"].scenes)


# ---------------------------------------------------------------------------------------------
# Speed
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow   # a wall-clock bound on a shared CPU; `make test-slow` runs it
def test_default_world_generates_in_seconds():
    settings = ShapesWorldSettings()
    start = time.perf_counter()
    world = generate_shapesworld(settings)
    elapsed = time.perf_counter() - start
    n_train = len(world.splits["train"].samples)
    print(f"ShapesWorld default ({settings.train_images} + {settings.val_images} images, "
          f"{n_train} train questions) generated in {elapsed:.2f} s")
    assert n_train == 20000 * 8
    assert elapsed < 15.0
