"""ShapesWorld: the built-in, procedurally generated VQA world (see DESIGN.md).

Scenes of 1-5 coloured, patterned shapes at different depths, rendered to RGB and a noisy depth
map; eight questions per image with ten annotator answers each (colour, shape, count, exists,
spatial, nearest, pattern, unanswerable, knowledge); a fact knowledge base; one caption per image.
Deterministic for a seed, numpy only, and fast (20k images x 8 questions in seconds on one core).

    world = load_shapesworld(ShapesWorldSettings(train_images=2000))
    train = world.splits["train"]
    train.samples[0], train.images.rgb(train.samples[0].image_id)

:func:`generate_shapesworld` builds a world in memory; :func:`load_shapesworld` caches it on disk
(.npy arrays and JSON, never pickle) keyed by the settings and :data:`GENERATOR_VERSION`.
The pieces live in ``shapesworld_render`` (scenes, rendering) and ``shapesworld_questions``
(knowledge base, questions, annotators, captions).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from vldistill.data.sample import ArrayImageStore, Sample
from vldistill.data.shapesworld_questions import (
    QUESTION_TYPES,
    VISUAL_TYPES,
    Fact,
    KnowledgeBase,
    SceneQuestioner,
    annotate,
    build_knowledge_base,
    caption,
    write_captions_jsonl,
    write_facts_jsonl,
)
from vldistill.data.shapesworld_render import (
    ObjectSpec,
    Scene,
    apply_sensor_noise,
    render_scenes,
    sample_scenes,
)

__all__ = [
    "GENERATOR_VERSION", "QUESTION_TYPES", "Fact", "ObjectSpec", "Scene", "ShapesWorld",
    "ShapesWorldSettings", "ShapesWorldSplit", "build_knowledge_base", "default_cache_dir",
    "generate_shapesworld", "load_shapesworld", "write_captions_jsonl", "write_facts_jsonl",
]

GENERATOR_VERSION = "1"
"""Bump whenever generation changes its output for the same settings: old caches then miss."""

SPLITS = ("train", "val")
QUESTION_ID_STRIDE = 100      # question_id = image_id * 100 + k


class ShapesWorldSettings(BaseModel):
    """Everything that determines a ShapesWorld; equal settings give identical worlds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, description="Random seed; every other draw derives from it.")
    train_images: int = Field(20000, ge=1, le=1_000_000,
                              description="Images in the train split (allowed 1..1,000,000).")
    val_images: int = Field(1000, ge=0, le=1_000_000,
                            description="Images in the val split (allowed 0..1,000,000).")
    questions_per_image: int = Field(8, ge=1, le=QUESTION_ID_STRIDE - 1,
                                     description="Questions per image (allowed 1..99).")
    image_size: int = Field(64, ge=32, le=512,
                            description="Side of the square images in pixels (allowed 32..512).")
    min_objects: int = Field(1, ge=1, le=5, description="Fewest objects in a scene (1..5).")
    max_objects: int = Field(5, ge=1, le=5, description="Most objects in a scene (1..5).")
    unanswerable_fraction: float = Field(
        0.05, ge=0.0, le=0.5, description="Share of questions the image cannot answer (0..0.5).")
    knowledge_fraction: float = Field(
        0.1, ge=0.0, le=0.5,
        description="Share of questions needing a knowledge-base fact (0..0.5).")
    annotator_error: float = Field(
        0.08, ge=0.0, le=0.3,
        description="Probability that one annotator gives a wrong, plausible answer (0..0.3).")
    synonym_rate: float = Field(
        0.15, ge=0.0, le=0.5,
        description="Probability that one annotator writes a variant or synonym (0..0.5).")
    depth_noise_m: float = Field(
        0.02, ge=0.0, le=1.0,
        description="Std of the depth sensor's Gaussian noise, metres (0..1).")

    @model_validator(mode="after")
    def _check_object_range(self) -> ShapesWorldSettings:
        if self.min_objects > self.max_objects:
            raise ValueError(
                f"min_objects ({self.min_objects}) is larger than max_objects "
                f"({self.max_objects}); allowed: 1 <= min_objects <= max_objects <= 5.")
        return self


@dataclass
class ShapesWorldSplit:
    """One split: its questions, images (rgb + depth), the scenes behind them, one caption each."""

    samples: list[Sample]
    images: ArrayImageStore
    scenes: list[Scene]
    captions: dict[int, str]


@dataclass
class ShapesWorld:
    """The settings it was built from, the "train" and "val" splits, and the knowledge base."""

    settings: ShapesWorldSettings
    splits: dict[str, ShapesWorldSplit]
    facts: list[Fact]


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------

def generate_shapesworld(settings: ShapesWorldSettings) -> ShapesWorld:
    """Build the whole world in memory (train image ids 0..train_images-1, val ids after)."""
    kb = KnowledgeBase()
    splits, first_id = {}, 0
    counts = (settings.train_images, settings.val_images)
    for index, (name, count) in enumerate(zip(SPLITS, counts)):
        splits[name] = _generate_split(settings, index, count, first_id, kb)
        first_id += count
    return ShapesWorld(settings, splits, list(kb.facts))


def _generate_split(settings: ShapesWorldSettings, split_index: int, count: int, first_id: int,
                    kb: KnowledgeBase) -> ShapesWorldSplit:
    # Independent streams, so e.g. more questions per image leave the images unchanged.
    scene_seq, depth_seq, question_seq, annotator_seq = np.random.SeedSequence(
        [settings.seed, split_index]).spawn(4)
    scenes = sample_scenes(np.random.default_rng(scene_seq), count, first_id, settings.image_size,
                           settings.min_objects, settings.max_objects)
    rgb, depth = render_scenes(scenes, settings.image_size)
    apply_sensor_noise(depth, settings.depth_noise_m, np.random.default_rng(depth_seq))
    rnd = random.Random(int(question_seq.generate_state(1, np.uint64)[0]))
    samples = _write_samples(scenes, settings, kb, rnd, np.random.default_rng(annotator_seq))
    image_ids = [scene.image_id for scene in scenes]
    return ShapesWorldSplit(samples, ArrayImageStore(image_ids, rgb, depth), scenes,
                            {scene.image_id: caption(scene) for scene in scenes})


def _write_samples(scenes: list[Scene], settings: ShapesWorldSettings, kb: KnowledgeBase,
                   rnd: random.Random, annotator_rng: np.random.Generator) -> list[Sample]:
    type_counts = dict.fromkeys(VISUAL_TYPES, 0)
    questions, ids = [], []
    for scene in scenes:
        questioner = SceneQuestioner(scene, settings.image_size, kb, rnd)
        questions += questioner.questions(settings.questions_per_image,
                                          settings.unanswerable_fraction,
                                          settings.knowledge_fraction, type_counts)
        ids += [(scene.image_id * QUESTION_ID_STRIDE + k, scene.image_id)
                for k in range(settings.questions_per_image)]
    answers = annotate(questions, annotator_rng, settings.annotator_error, settings.synonym_rate)
    return [Sample(question_id, image_id, q.text, a, q.question_type, q.answer_type, q.fact_ids)
            for (question_id, image_id), q, a in zip(ids, questions, answers, strict=True)]


# ---------------------------------------------------------------------------------------------
# Disk cache
# ---------------------------------------------------------------------------------------------

class _CacheError(Exception):
    """A cache folder that is incomplete or unreadable."""


def default_cache_dir() -> Path:
    """``$VLDISTILL_CACHE/shapesworld``, else ``~/.cache/vldistill/shapesworld``."""
    root = os.environ.get("VLDISTILL_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "vldistill") / "shapesworld"


def cache_key(settings: ShapesWorldSettings) -> str:
    """A hash of the settings and GENERATOR_VERSION; names the cache folder."""
    text = f"shapesworld v{GENERATOR_VERSION}\n{settings.model_dump_json()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_shapesworld(settings: ShapesWorldSettings, cache_dir: Path | None = None, *,
                     progress: bool = False) -> ShapesWorld:
    """The world for ``settings``, from the disk cache when it is there, else generated and cached.

    The cache lives in ``cache_dir`` (default :func:`default_cache_dir`), one folder per settings
    hash. It is written to a temporary folder and moved into place atomically, so concurrent
    builders cannot corrupt it; a folder with a missing or corrupt file is rebuilt with a warning.
    Arrays come back memory-mapped read-only.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / f"v{GENERATOR_VERSION}-{cache_key(settings)}"
    if target.exists():
        try:
            world = _read_cache(target, settings)
            _say(progress, f"ShapesWorld: loaded {target}")
            return world
        except _CacheError as error:
            warnings.warn(f"ShapesWorld cache {target} is unusable ({error}); regenerating it.",
                          RuntimeWarning, stacklevel=2)
            _remove_folder(target)
    _say(progress, f"ShapesWorld: generating {settings.train_images} train + "
                   f"{settings.val_images} val images ...")
    start = time.perf_counter()
    world = generate_shapesworld(settings)
    _say(progress, f"ShapesWorld: generated in {time.perf_counter() - start:.1f} s")
    _write_cache(world, root, target)
    _say(progress, f"ShapesWorld: cached at {target}")
    return world


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def _remove_folder(folder: Path) -> None:
    """Move ``folder`` aside (atomic) and delete it; another process may be doing the same."""
    doomed = folder.with_name(f".{folder.name}.removing-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.replace(folder, doomed)
    except OSError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


def _write_cache(world: ShapesWorld, root: Path, target: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=root))
    except OSError as error:
        warnings.warn(f"cannot write the ShapesWorld cache under {root} ({error}); "
                      "continuing without it.", RuntimeWarning, stacklevel=3)
        return
    try:
        files = _write_files(world, staging)
        manifest = {"generator_version": GENERATOR_VERSION,
                    "settings": world.settings.model_dump(), "files": files}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
        try:
            os.replace(staging, target)
        except OSError:
            if not target.exists():    # not a lost race: a real failure
                raise
    except OSError as error:
        warnings.warn(f"cannot write the ShapesWorld cache {target} ({error}); continuing "
                      "without it.", RuntimeWarning, stacklevel=3)
    finally:
        shutil.rmtree(staging, ignore_errors=True)   # left over only after a lost race or error


def _write_files(world: ShapesWorld, folder: Path) -> dict[str, int]:
    """Write every file of the cache into ``folder``; returns {file name: size in bytes}."""
    names = []
    for name, split in world.splits.items():
        np.save(folder / f"{name}.rgb.npy", split.images.rgb_array)
        np.save(folder / f"{name}.depth.npy", split.images.depth_array)
        payload = {"samples": _samples_to_json(split.samples),
                   "scenes": [[scene.image_id, [_object_to_json(o) for o in scene.objects]]
                              for scene in split.scenes],
                   "captions": [[image_id, text] for image_id, text in split.captions.items()]}
        (folder / f"{name}.json").write_text(json.dumps(payload, separators=(",", ":")))
        names += [f"{name}.rgb.npy", f"{name}.depth.npy", f"{name}.json"]
    facts = [[fact.id, fact.text] for fact in world.facts]
    (folder / "facts.json").write_text(json.dumps(facts, indent=0))
    names.append("facts.json")
    return {name: (folder / name).stat().st_size for name in names}


def _read_cache(folder: Path, settings: ShapesWorldSettings) -> ShapesWorld:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        if manifest["settings"] != settings.model_dump():
            raise _CacheError("it was built for other settings")
        for name, size in manifest["files"].items():
            if (folder / name).stat().st_size != size:
                raise _CacheError(f"{name} has the wrong size")
        splits = {name: _read_split(folder, name, count, settings.image_size)
                  for name, count in zip(SPLITS, (settings.train_images, settings.val_images))}
        facts = [Fact(fact_id, text) for fact_id, text in
                 json.loads((folder / "facts.json").read_text())]
    except _CacheError:
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
        raise _CacheError(f"{type(error).__name__}: {error}") from None
    return ShapesWorld(settings, splits, facts)


def _read_split(folder: Path, name: str, count: int, image_size: int) -> ShapesWorldSplit:
    rgb = np.load(folder / f"{name}.rgb.npy", mmap_mode="r", allow_pickle=False)
    depth = np.load(folder / f"{name}.depth.npy", mmap_mode="r", allow_pickle=False)
    if (rgb.shape != (count, image_size, image_size, 3) or rgb.dtype != np.uint8
            or depth.shape != (count, image_size, image_size) or depth.dtype != np.float32):
        raise _CacheError(f"{name} arrays have shapes {rgb.shape}, {depth.shape}")
    payload = json.loads((folder / f"{name}.json").read_text())
    scenes = [Scene(image_id, tuple(_object_from_json(o) for o in objects))
              for image_id, objects in payload["scenes"]]
    if len(scenes) != count:
        raise _CacheError(f"{name}.json has {len(scenes)} scenes, expected {count}")
    images = ArrayImageStore([scene.image_id for scene in scenes], rgb, depth)
    return ShapesWorldSplit(_samples_from_json(payload["samples"]), images, scenes,
                            {image_id: text for image_id, text in payload["captions"]})


_SAMPLE_FIELDS = ("question_id", "image_id", "question", "answers", "question_type",
                  "answer_type", "fact_ids")


def _samples_to_json(samples: list[Sample]) -> dict[str, list[Any]]:
    """Column-wise (compact and fast to parse)."""
    return {name: [getattr(s, name) for s in samples] for name in _SAMPLE_FIELDS}


def _samples_from_json(columns: dict[str, list[Any]]) -> list[Sample]:
    rows = zip(*(columns[name] for name in _SAMPLE_FIELDS), strict=True)
    return [Sample(question_id, image_id, question, tuple(answers), question_type, answer_type,
                   tuple(fact_ids))
            for question_id, image_id, question, answers, question_type, answer_type, fact_ids
            in rows]


def _object_to_json(obj: ObjectSpec) -> list[Any]:
    return [obj.shape, obj.colour, obj.size, obj.pattern, obj.x, obj.y, obj.depth]


def _object_from_json(row: list[Any]) -> ObjectSpec:
    shape, colour, size, pattern, x, y, depth = row
    return ObjectSpec(shape, colour, size, pattern, x, y, depth)
