"""The VQAv2 / OK-VQA layout: a questions JSON, an annotations JSON and a folder of images.

Questions file::

    {"task_type": "Open-Ended", "data_subtype": "train2014",
     "questions": [{"image_id": 9, "question": "...", "question_id": 90}, ...]}

Annotations file::

    {"annotations": [{"question_id": 90, "image_id": 9, "question_type": "what",
                      "answer_type": "other", "multiple_choice_answer": "cat",
                      "answers": [{"answer": "cat", "answer_confidence": "yes",
                                   "answer_id": 1}, ...],
                      "fact_ids": ["f12"]}, ...]}

``fact_ids`` is our optional extra (gold knowledge facts). Our exports also keep
``question_type``, ``answer_type`` and ``fact_ids`` on the *question* record of an unlabelled
question (one with no annotation), so that an unlabelled transfer set round-trips.
Ids are ints in the official files; string ids are accepted and kept as strings.

Depth maps are 16-bit single-channel PNGs in millimetres (0 = invalid), named like the image
with a ``.png`` suffix, in a separate folder.
"""

from __future__ import annotations

import os
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from vldistill.core.errors import DataError, MissingFileError
from vldistill.data.images import check_inside, image_header, read_rgb
from vldistill.data.jsonio import MAX_LISTED as _MAX_LISTED
from vldistill.data.jsonio import check_unique as _check_unique
from vldistill.data.jsonio import first as _first
from vldistill.data.jsonio import get as _get
from vldistill.data.jsonio import load_json as _load_json
from vldistill.data.jsonio import show as _show
from vldistill.data.rgbd import read_depth_png
from vldistill.data.sample import ImageId, ImageStore, QuestionId, Sample
from vldistill.data.writers import check_samples, check_split, write_images, write_json

_COCO_NAME = re.compile(r"^.+_(\d{12})\.jpg$")
_PLAIN_NAME = re.compile(r"^(.+)\.(?:png|jpg)$")


# ----------------------------------------------------------------------------- image folder

class FolderImageStore:
    """Images (and optional depth maps) in folders, found by image id.

    ``pattern`` is a format string with one ``{image_id}`` field, e.g.
    ``"COCO_train2014_{image_id:012d}.jpg"``. Without one, ``{id}.png``, ``{id}.jpg`` and then
    any ``*_{id:012d}.jpg`` (COCO naming, int ids) are tried in that order.
    ``rgb`` returns uint8 (H, W, 3), ``depth`` float32 metres (H, W); with ``image_size`` both
    are resized to (image_size, image_size): bilinear for rgb, nearest for depth (so invalid
    zeros are not blended into valid depths).
    """

    def __init__(self, root: Path, pattern: str | None = None, depth_root: Path | None = None,
                 image_size: int | None = None) -> None:
        if pattern is not None:
            _check_pattern(pattern)
        if image_size is not None and (type(image_size) is not int or image_size < 1):
            raise ValueError(f"image_size must be a positive int or None, got {image_size!r}; "
                             f"pass e.g. image_size=224, or None to keep the file's size.")
        self.root = Path(root)
        self.pattern = pattern
        self.depth_root = Path(depth_root) if depth_root is not None else None
        self.image_size = image_size
        self._coco_index: dict[int, Path] | None = None
        self._name_regex = _pattern_regex(pattern) if pattern is not None else None

    def rgb(self, image_id: ImageId) -> np.ndarray:
        """The image as uint8 (H, W, 3); (S, S, 3) when ``image_size`` S is set."""
        return read_rgb(self._rgb_path(image_id), "image", self.image_size)

    def depth(self, image_id: ImageId) -> np.ndarray | None:
        """Depth as float32 metres (H, W), 0 where invalid; None without a ``depth_root``."""
        if self.depth_root is None:
            return None
        path = self.depth_root / f"{self._stem(image_id)}.png"
        size = (self.image_size, self.image_size) if self.image_size is not None else None
        return read_depth_png(path, size)

    def ids(self) -> list[ImageId]:
        """Every image id found in ``root`` (sorted by file name)."""
        if not self.root.is_dir():
            raise MissingFileError(f"image folder {self.root} does not exist. Fix: pass the "
                                   f"folder that holds the images as image_root.")
        found: dict[ImageId, None] = {}
        for name in sorted(os.listdir(self.root)):
            image_id = self._id_from_name(name)
            if image_id is not None:
                found.setdefault(image_id, None)
        return list(found)

    def check_images(self, samples: Iterable[Sample]) -> None:
        """Raise one :class:`MissingFileError` listing the images (and depth maps) missing;
        then check every file's header (readable, size, bit depth: see data.images), so a
        file with a bad header stops the run before training rather than in the middle of
        it. Damaged pixel data behind a good header is found when the image is decoded."""
        needed: dict[ImageId, list[QuestionId]] = {}
        for sample in samples:
            needed.setdefault(sample.image_id, []).append(sample.question_id)
        missing: list[tuple[str, list[QuestionId]]] = []
        present: list[tuple[Path, Path | None]] = []
        for image_id, question_ids in needed.items():
            path = self._find_rgb(image_id)
            depth_path = (self.depth_root / f"{path.stem}.png"
                          if path is not None and self.depth_root is not None else None)
            if path is None:
                missing.append((self._describe(image_id), question_ids))
            elif depth_path is not None and not depth_path.is_file():
                missing.append((str(depth_path), question_ids))
            else:
                present.append((path, depth_path))
        if missing:
            raise MissingFileError(self._missing_message(missing, len(needed)))
        for path, depth_path in present:
            image_header(path, "image")
            if depth_path is not None:
                image_header(depth_path, "depth map", expect="depth")

    # -- finding files

    def _rgb_path(self, image_id: ImageId) -> Path:
        path = self._find_rgb(image_id)
        if path is None:
            raise MissingFileError(
                f"no image for image id {image_id!r}: looked for {self._describe(image_id)}. "
                f"Fix: check image_root and pattern, or drop the questions about this image.")
        return path

    def _find_rgb(self, image_id: ImageId) -> Path | None:
        if self.pattern is not None:
            name = self._format(image_id)
            check_inside(self.root, name, f"image id {image_id!r}")
            path = self.root / name
            return path if path.is_file() else None
        for name in (f"{image_id}.png", f"{image_id}.jpg"):
            check_inside(self.root, name, f"image id {image_id!r}")
            path = self.root / name
            if path.is_file():
                return path
        if type(image_id) is int:
            return self._coco_paths().get(image_id)
        return None

    def _coco_paths(self) -> dict[int, Path]:
        """``*_{id:012d}.jpg`` files by id, from one scan of ``root`` (not one glob per id)."""
        if self._coco_index is None:
            names = sorted(os.listdir(self.root)) if self.root.is_dir() else []
            self._coco_index = {}
            for name in names:
                match = _COCO_NAME.match(name)
                if match:
                    self._coco_index.setdefault(int(match.group(1)), self.root / name)
        return self._coco_index

    def _stem(self, image_id: ImageId) -> str:
        path = self._find_rgb(image_id)
        if path is not None:
            return path.stem
        if self.pattern is not None:
            return Path(self._format(image_id)).stem
        return str(image_id)

    def _format(self, image_id: ImageId) -> str:
        pattern = self.pattern if self.pattern is not None else "{image_id}"
        try:
            return pattern.format(image_id=image_id)
        except (ValueError, TypeError) as err:
            raise DataError(f"image id {image_id!r} ({type(image_id).__name__}) does not fit "
                            f"the pattern {self.pattern!r} ({err}). Fix: use a pattern without "
                            f"an int format spec such as '{{image_id}}.jpg' for string ids."
                            ) from err

    def _describe(self, image_id: ImageId) -> str:
        if self.pattern is not None:
            return str(self.root / self._format(image_id))
        coco = f" or {self.root}/*_{image_id:012d}.jpg" if type(image_id) is int else ""
        return f"{self.root}/{image_id}.png or .jpg{coco}"

    def _id_from_name(self, name: str) -> ImageId | None:
        if self._name_regex is not None:
            regex, int_spec = self._name_regex
            match = regex.match(name)
            return _parse_id(match.group(1), int_spec) if match else None
        match = _COCO_NAME.match(name)
        if match:
            return int(match.group(1))
        match = _PLAIN_NAME.match(name)
        return _parse_id(match.group(1), False) if match else None

    def _missing_message(self, missing: list[tuple[str, list[QuestionId]]], n_needed: int) -> str:
        lines = [f"  {path}  (question ids {_first(question_ids, 3)})"
                 for path, question_ids in missing[:_MAX_LISTED]]
        if len(missing) > _MAX_LISTED:
            lines.append(f"  ... and {len(missing) - _MAX_LISTED} more")
        depth = f" and depth maps under {self.depth_root}" if self.depth_root else ""
        return (f"{len(missing)} of the {n_needed} images the questions need are missing "
                f"(images under {self.root}{depth}):\n" + "\n".join(lines) +
                "\nFix: point image_root / pattern / depth_root at the folders that hold these "
                "files, or drop the questions whose images are missing.")


def _check_pattern(pattern: str) -> None:
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(pattern)
                  if field is not None]
    except ValueError as err:
        raise ValueError(f"image pattern {pattern!r} is not a valid format string ({err}); "
                         f"expected e.g. 'COCO_train2014_{{image_id:012d}}.jpg'.") from err
    if fields != ["image_id"]:
        raise ValueError(f"image pattern {pattern!r} has fields {fields}; expected exactly one "
                         f"'{{image_id}}' field, e.g. '{{image_id}}.png' or "
                         f"'COCO_train2014_{{image_id:012d}}.jpg'.")


def _pattern_regex(pattern: str) -> tuple[re.Pattern[str], bool]:
    """A regex matching file names made by ``pattern``; True when the id is an int spec."""
    parts, int_spec = [], False
    for literal, field, spec, _ in string.Formatter().parse(pattern):
        parts.append(re.escape(literal))
        if field is not None:
            int_spec = bool(spec) and spec.endswith("d")
            parts.append(r"(\d+)" if int_spec else "(.+?)")
    return re.compile("^" + "".join(parts) + "$"), int_spec


def _parse_id(text: str, int_spec: bool) -> ImageId:
    """An id from a file name: an int when written as one ("12", or zero-padded by a 'd' spec)."""
    if text.isdigit() and (int_spec or str(int(text)) == text):
        return int(text)
    return text


# ----------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class _Annotation:
    index: int
    image_id: ImageId
    answers: tuple[str, ...]
    question_type: str
    answer_type: str
    fact_ids: tuple[str, ...] | None


def read_vqa(questions_path: Path, annotations_path: Path | None = None,
             image_root: Path | None = None, *, pattern: str | None = None,
             depth_root: Path | None = None, image_size: int | None = None,
             require_answers: bool = True) -> tuple[list[Sample], FolderImageStore]:
    """Read a VQAv2 / OK-VQA split into samples (file order) and an image store.

    Without ``annotations_path`` every question is unlabelled. With it, a question that has no
    annotation raises unless ``require_answers=False``. ``image_root`` defaults to
    ``questions_path.parent / "images"`` (the layout :func:`write_vqa` writes); when it is
    given, every image (and depth map) the questions need is checked to exist up front.
    """
    questions_path = Path(questions_path)
    samples = _parse_questions(questions_path)
    if annotations_path is not None:
        annotations_path = Path(annotations_path)
        annotations = _parse_annotations(annotations_path)
        samples = _attach_answers(samples, annotations, questions_path, annotations_path,
                                  require_answers)
    root = Path(image_root) if image_root is not None else questions_path.parent / "images"
    store = FolderImageStore(root, pattern, depth_root, image_size)
    if image_root is not None:
        store.check_images(samples)
    return samples, store


def _parse_questions(path: Path) -> list[Sample]:
    records = _records(_load_json(path, "questions"), "questions", path)
    samples = []
    for i, record in enumerate(records):
        where = f"questions[{i}]"
        samples.append(Sample(
            question_id=_get(record, "question_id", path, where, "id"),
            image_id=_get(record, "image_id", path, where, "id"),
            question=_get(record, "question", path, where, "str"),
            question_type=_get(record, "question_type", path, where, "str", ""),
            answer_type=_get(record, "answer_type", path, where, "str", ""),
            fact_ids=tuple(_get(record, "fact_ids", path, where, "str_list", [])),
        ))
    _check_unique([s.question_id for s in samples], path, "questions")
    return samples


def _parse_annotations(path: Path) -> dict[QuestionId, _Annotation]:
    records = _records(_load_json(path, "annotations"), "annotations", path)
    annotations: dict[QuestionId, _Annotation] = {}
    question_ids = []
    for i, record in enumerate(records):
        where = f"annotations[{i}]"
        question_id = _get(record, "question_id", path, where, "id")
        fact_ids = _get(record, "fact_ids", path, where, "str_list", None)
        annotations[question_id] = _Annotation(
            index=i,
            image_id=_get(record, "image_id", path, where, "id"),
            answers=_parse_answers(record, path, where),
            question_type=_get(record, "question_type", path, where, "str", ""),
            answer_type=_get(record, "answer_type", path, where, "str", ""),
            fact_ids=tuple(fact_ids) if fact_ids is not None else None,
        )
        question_ids.append(question_id)
    _check_unique(question_ids, path, "annotations")
    return annotations


def _parse_answers(record: dict[str, Any], path: Path, where: str) -> tuple[str, ...]:
    """The raw answer strings, ordered by ``answer_id`` (file order where it is absent)."""
    entries = []
    for j, entry in enumerate(_get(record, "answers", path, where, "list")):
        entry_where = f"{where}.answers[{j}]"
        if not isinstance(entry, dict):
            raise DataError(f"{path}: {entry_where} is {_show(entry)}; expected an object like "
                            f'{{"answer": "cat", "answer_id": 1}}. Fix: correct that record.')
        text = _get(entry, "answer", path, entry_where, "str")
        answer_id = _get(entry, "answer_id", path, entry_where, "int", j + 1)
        entries.append((answer_id, j, text))
    return tuple(text for _, _, text in sorted(entries))


def _attach_answers(samples: list[Sample], annotations: dict[QuestionId, _Annotation],
                    questions_path: Path, annotations_path: Path,
                    require_answers: bool) -> list[Sample]:
    known = {s.question_id for s in samples}
    orphans = [question_id for question_id in annotations if question_id not in known]
    if orphans:
        raise DataError(f"{annotations_path}: {len(orphans)} annotations are for question ids "
                        f"not in {questions_path}: {_first(orphans)}. Fix: pass the questions "
                        f"and annotations files of the same split.")
    unanswered = [s.question_id for s in samples
                  if s.question_id not in annotations or not annotations[s.question_id].answers]
    if unanswered and require_answers:
        raise DataError(f"{len(unanswered)} of the {len(samples)} questions in {questions_path} "
                        f"have no annotation (or an empty answer list) in {annotations_path}: "
                        f"question ids "
                        f"{_first(unanswered)}. Fix: pass the annotations file that matches "
                        f"these questions, or require_answers=False to read them unlabelled.")
    return [_with_answers(s, annotations.get(s.question_id), annotations_path) for s in samples]


def _with_answers(sample: Sample, annotation: _Annotation | None, path: Path) -> Sample:
    if annotation is None:
        return sample
    if annotation.image_id != sample.image_id:
        raise DataError(f"{path}: annotations[{annotation.index}] (question id "
                        f"{sample.question_id!r}) has image_id {annotation.image_id!r}, but "
                        f"the questions file gives image_id {sample.image_id!r}. Fix: pass the "
                        f"questions and annotations files of the same split.")
    fact_ids = annotation.fact_ids if annotation.fact_ids is not None else sample.fact_ids
    return replace(sample, answers=annotation.answers, question_type=annotation.question_type,
                   answer_type=annotation.answer_type, fact_ids=fact_ids)


def _records(document: Any, key: str, path: Path) -> list[dict[str, Any]]:
    records = document.get(key) if isinstance(document, dict) else None
    if not isinstance(records, list):
        got = (f"top-level keys {sorted(document)[:8]}" if isinstance(document, dict)
               else f"a top-level {type(document).__name__}")
        raise DataError(f"{path}: expected a JSON object with a {key!r} list, got {got}. "
                        f"Fix: pass the VQA {key} file here.")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(f"{path}: {key}[{i}] is {_show(record)}; expected a JSON object. "
                            f"Fix: correct that record.")
    return records


# ----------------------------------------------------------------------------- writing

def write_vqa(samples: Sequence[Sample], images: ImageStore, out_dir: Path,
              split: str) -> dict[str, Path]:
    """Write samples and their images in the VQA layout; return the paths written.

    Writes ``{split}_questions.json``, ``{split}_annotations.json`` (labelled samples only),
    ``images/{image_id}.png`` and, where the store has depth, ``depth/{image_id}.png`` (uint16
    millimetres). Each file is written atomically; images go first, so a questions file never
    points at images that are not there yet. Keys: questions, annotations, images, [depth].
    """
    out_dir = Path(out_dir)
    check_split(split)
    check_samples(samples)
    paths = {"questions": out_dir / f"{split}_questions.json",
             "annotations": out_dir / f"{split}_annotations.json",
             "images": out_dir / "images"}
    if write_images(samples, images, out_dir):
        paths["depth"] = out_dir / "depth"
    questions = [_question_record(s) for s in samples]
    annotations = [_annotation_record(s) for s in samples if s.labelled]
    write_json(paths["questions"], {**_header(split), "task_type": "Open-Ended",
                                     "data_type": "vldistill", "questions": questions})
    write_json(paths["annotations"], {**_header(split), "annotations": annotations})
    return paths


def _question_record(sample: Sample) -> dict[str, Any]:
    record: dict[str, Any] = {"image_id": sample.image_id, "question": sample.question,
                              "question_id": sample.question_id}
    if not sample.labelled:  # no annotation will carry these, so the question does
        record.update(_extras(sample))
    return record


def _annotation_record(sample: Sample) -> dict[str, Any]:
    counts = Counter(sample.answers)
    return {
        "question_id": sample.question_id,
        "image_id": sample.image_id,
        "question_type": sample.question_type,
        "answer_type": sample.answer_type,
        "multiple_choice_answer": max(counts, key=counts.__getitem__),  # first of the tied
        "answers": [{"answer": answer, "answer_confidence": "yes", "answer_id": i}
                    for i, answer in enumerate(sample.answers, start=1)],
        **({"fact_ids": list(sample.fact_ids)} if sample.fact_ids else {}),
    }


def _extras(sample: Sample) -> dict[str, Any]:
    extras: dict[str, Any] = {"question_type": sample.question_type,
                              "answer_type": sample.answer_type,
                              "fact_ids": list(sample.fact_ids)}
    return {key: value for key, value in extras.items() if value}


def _header(split: str) -> dict[str, Any]:
    return {"info": {"description": "written by vldistill"}, "data_subtype": split}
