"""The VizWiz VQA layout: one annotation JSON per split and a folder of images.

Annotation file (a JSON list, one record per image; VizWiz asks one question per image)::

    [{"image": "VizWiz_val_00000048.jpg", "question": "What is this?",
      "answers": [{"answer": "soup", "answer_confidence": "yes"}, ...],     # 10 answers
      "answer_type": "other",                 # other | yes/no | number | unanswerable
      "answerable": 1}, ...]                  # 0: the question cannot be answered

"unanswerable" is an ordinary answer. The test split has no ``answers``, ``answer_type`` or
``answerable``: its questions are read unlabelled. A sample's question id is the ``image`` file
name (the key of the official evaluation and of its result files), and so is its image id: the
file is found by that exact name in the image folder.

``write_vizwiz`` writes samples in this layout. ShapesWorld asks several questions per image,
so each question gets its own image name: a hard link to one PNG per scene, not a copy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from vldistill.core.errors import DataError
from vldistill.core.fileio import atomic_write_text
from vldistill.data.jsonio import check_unique, get, load_json, show
from vldistill.data.sample import ImageStore, Sample
from vldistill.data.vqa import FolderImageStore
from vldistill.data.writers import checked_rgb, write_png

ANSWER_TYPES = ("other", "yes/no", "number", "unanswerable")
_ABSENT = object()
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def read_vizwiz(annotations_path: Path, image_root: Path | None = None, *,
                image_size: int | None = None) -> tuple[list[Sample], FolderImageStore]:
    """Read a VizWiz split into samples (file order) and an image store.

    ``image_root`` defaults to the folder :func:`write_vizwiz` uses (``<split>/`` beside the
    ``annotations/`` folder, else the annotation file's folder); when given, every image is
    checked to exist up front.
    """
    path = Path(annotations_path)
    document = load_json(path, "VizWiz annotations")
    if not isinstance(document, list):
        got = (f"an object with keys {sorted(document)[:8]}" if isinstance(document, dict)
               else f"a {type(document).__name__}")
        raise DataError(f"{path}: expected a JSON list of VizWiz records, got {got}. Fix: pass "
                        "a VizWiz annotation file (train.json, val.json or test.json).")
    samples = [_sample(record, path, index) for index, record in enumerate(document)]
    check_unique([s.question_id for s in samples], path, "image")
    root = Path(image_root) if image_root is not None else _default_root(path)
    store = FolderImageStore(root, "{image_id}", None, image_size)   # ids are file names
    if image_root is not None:
        store.check_images(samples)
    return samples, store


def _default_root(path: Path) -> Path:
    split = path.stem
    candidate = path.parent.parent / split
    return candidate if path.parent.name == "annotations" and candidate.is_dir() else path.parent


def _sample(record: Any, path: Path, index: int) -> Sample:
    where = f"record [{index}]"
    if not isinstance(record, dict):
        raise DataError(f"{path}: {where} is {show(record)}; expected a JSON object with image, "
                        "question and answers. Fix: correct that record.")
    image = get(record, "image", path, where, "str")
    stem, suffix = os.path.splitext(image)
    if suffix.lower() not in _IMAGE_SUFFIXES or not stem or "/" in image or "\\" in image:
        raise DataError(f"{path}: {where} image {image!r} is not an image file name (expected "
                        f"a bare name ending in {', '.join(_IMAGE_SUFFIXES)}, no folders). Fix: "
                        "correct that record.")
    question = get(record, "question", path, where, "str")
    answers = _answers(record, path, where)
    answer_type = get(record, "answer_type", path, where, "str", default="")
    if answer_type and answer_type not in ANSWER_TYPES:
        raise DataError(f"{path}: {where} answer_type {answer_type!r} is not one of "
                        f"{', '.join(ANSWER_TYPES)}. Fix: correct that record.")
    answerable = record.get("answerable", _ABSENT)
    if answerable is not _ABSENT and (type(answerable) not in (int, bool)
                                      or answerable not in (0, 1)):
        raise DataError(f"{path}: {where} answerable is {show(answerable)}; expected 0 or 1 "
                        "(or false / true). Fix: correct that record.")
    answerable = None if answerable is _ABSENT else answerable
    return Sample(question_id=image, image_id=image, question=question, answers=answers,
                  question_type=answer_type, answer_type=answer_type,
                  answerable=None if answerable is None else bool(answerable))


def _answers(record: dict[str, Any], path: Path, where: str) -> tuple[str, ...]:
    entries = get(record, "answers", path, where, "list", default=[])
    answers = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("answer"), str):
            raise DataError(f"{path}: {where} answers[{i}] is {show(entry)}; expected "
                            '{"answer": "...", "answer_confidence": "yes"}. Fix: correct that '
                            "record.")
        answers.append(entry["answer"])
    return tuple(answers)


# ----------------------------------------------------------------------------- writing

def write_vizwiz(samples: Sequence[Sample], images: ImageStore, out_dir: Path,
                 split: str) -> dict[str, Path]:
    """Write samples in the VizWiz layout: ``annotations/<split>.json`` and ``<split>/`` with
    one image file per question (``VizWiz_<split>_<n:08d>.png``, hard links to one PNG per
    scene). A labelled sample gets its answers, answer type and ``answerable`` (taken from the
    sample, else 0 exactly when its answer type is "unanswerable"); unlabelled samples are
    written as test-split records (question only). Returns the paths written."""
    if not split or any(c in split for c in "/\\. "):
        raise ValueError(f"split {split!r} must be a plain name such as 'train' or 'val'")
    out_dir = Path(out_dir)
    image_dir = out_dir / split
    image_dir.mkdir(parents=True, exist_ok=True)
    scene_files: dict[Any, Path] = {}
    records = []
    for number, sample in enumerate(samples):
        name = f"VizWiz_{split}_{number:08d}.png"
        target = image_dir / name
        if sample.image_id in scene_files:
            _link(scene_files[sample.image_id], target)
        else:
            rgb = checked_rgb(images.rgb(sample.image_id), sample.image_id)
            write_png(target, Image.fromarray(rgb))
            scene_files[sample.image_id] = target
        records.append(_record(sample, name))
    annotations = out_dir / "annotations" / f"{split}.json"
    atomic_write_text(annotations, json.dumps(records, ensure_ascii=False))
    return {"annotations": annotations, "images": image_dir}


def _link(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:                     # another file system, or no hard links: copy
        target.write_bytes(source.read_bytes())


def _record(sample: Sample, image: str) -> dict[str, Any]:
    record: dict[str, Any] = {"image": image, "question": sample.question}
    if sample.labelled:
        answer_type = sample.answer_type if sample.answer_type in ANSWER_TYPES else "other"
        answerable = sample.answerable if sample.answerable is not None \
            else answer_type != "unanswerable"
        record.update(answers=[{"answer": a, "answer_confidence": "yes"}
                               for a in sample.answers],
                      answer_type=answer_type, answerable=int(answerable))
    return record

