"""RGB-D data: a SUNRGBD-like layout, depth maps in millimetres, and depth preprocessing.

Layout (one JSON per split; paths in it are relative to the JSON file's folder)::

    root/
      train.json   {"samples": [{"question_id": 1, "image_id": "000001",
                                 "rgb": "images/000001.png", "depth": "depth/000001.png",
                                 "question": "How many objects are there?",
                                 "answers": ["3", "3", ...],          # 10 answers; [] unlabelled
                                 "question_type": "count", "answer_type": "number"}, ...]}
      images/000001.png    RGB (any size; JPEG or PNG)
      depth/000001.png     16-bit single-channel PNG, millimetres, 0 = invalid (no reading)

SUNRGBD keeps an ``image/`` and a ``depth/`` folder per scene; since every record names its own
files, that tree is read as it is. Several questions may share one image (same ``image_id``,
same files).

Depth preprocessing (:func:`preprocess_depth`): millimetres -> metres -> validity mask ->
normalised to [0, 1] -> 1 channel, or the same channel three times for encoders that expect
RGB, optionally followed by the validity mask as an extra channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from vldistill.core.console import console
from vldistill.core.errors import DataError, MissingFileError
from vldistill.data.images import check_inside, image_header, read_image, read_rgb
from vldistill.data.jsonio import MAX_LISTED, check_unique, get, load_json, show
from vldistill.data.sample import ImageId, ImageStore, Sample
from vldistill.data.writers import check_samples, check_split, write_images, write_json

MODALITIES = ("rgb", "depth")
Modality = Literal["rgb", "depth"]


class DepthSettings(BaseModel):
    """How depth maps become model input (``data.depth`` in a recipe)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: Literal[1, 3] = Field(1, description="1, or the depth channel repeated 3 times "
                                    "for an encoder that expects RGB")
    normalise: Literal["range", "inverse"] = Field(
        "range", description="range: (d - min_m) / (max_m - min_m); inverse: min_m / d (near "
        "is bright, like disparity); both clipped to [0, 1], invalid pixels 0")
    min_m: float = Field(0.0, ge=0, description="nearest depth of the range, metres")
    max_m: float = Field(10.0, gt=0, description="farthest depth of the range, metres")
    mask_channel: bool = Field(False, description="append the validity mask (1 = a reading) "
                               "as one more channel")
    size_mismatch: Literal["resize", "refuse"] = Field(
        "resize", description="a depth map of another size than its RGB image: resize it to "
        "the RGB size (nearest neighbour, with a logged note), or refuse the data")
    missing: Literal["fail", "skip"] = Field(
        "fail", description="a sample whose RGB image or depth map is missing: fail naming "
        "them, or skip those questions (counted and reported)")

    @model_validator(mode="after")
    def _check_range(self) -> DepthSettings:
        if self.max_m <= self.min_m:
            raise ValueError(f"depth max_m ({self.max_m}) must be greater than min_m "
                             f"({self.min_m})")
        if self.normalise == "inverse" and self.min_m <= 0:
            raise ValueError("depth normalise 'inverse' divides by the depth: set min_m > 0 "
                             "(the nearest depth that maps to 1, e.g. 0.5)")
        return self

    @property
    def input_channels(self) -> int:
        return self.channels + int(self.mask_channel)


def read_depth_png(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A 16-bit depth PNG as float32 metres (H, W), 0 where invalid; resized to ``size``
    (width, height) with nearest neighbour (so invalid zeros never blend into readings)."""
    image = read_image(path, "depth map", expect="depth")
    if size is not None and image.size != size:
        image = image.resize(size, Image.Resampling.NEAREST)
    millimetres = np.clip(np.asarray(image), 0, None).astype(np.float32)
    return millimetres / np.float32(1000.0)


def preprocess_depth(metres: np.ndarray, settings: DepthSettings) -> np.ndarray:
    """Depth (H, W) metres, 0 / NaN / inf where invalid -> model input (C, H, W) float32 in
    [0, 1]: the normalised depth (``channels`` times), then the validity mask if asked for."""
    depth = np.asarray(metres, dtype=np.float32)
    if depth.ndim != 2:
        raise DataError(f"depth has shape {depth.shape}; expected (H, W) metres. Fix: drop the "
                        f"channel axis of the depth maps.")
    valid = np.isfinite(depth) & (depth > 0)
    safe = np.where(valid, depth, np.float32(1.0))
    if settings.normalise == "range":
        value = (safe - settings.min_m) / (settings.max_m - settings.min_m)
    else:
        value = settings.min_m / safe
    value = np.where(valid, np.clip(value, 0.0, 1.0), 0.0).astype(np.float32)
    planes = [value] * settings.channels
    if settings.mask_channel:
        planes.append(valid.astype(np.float32))
    return np.stack(planes)


# ----------------------------------------------------------------------------- the store

@dataclass
class RGBDImageStore:
    """RGB images and depth maps by image id, from explicit file paths.

    ``rgb`` returns uint8 (H, W, 3); ``depth`` float32 metres (H, W) at the RGB image's size (a
    depth map of another size was resized, nearest neighbour, as the reader noted); with
    ``image_size`` both are resized to (image_size, image_size).
    """

    rgb_paths: dict[ImageId, Path]
    depth_paths: dict[ImageId, Path]
    image_size: int | None = None
    rgb_sizes: dict[ImageId, tuple[int, int]] = field(default_factory=dict)

    def _path(self, paths: dict[ImageId, Path], image_id: ImageId, what: str) -> Path:
        try:
            return paths[image_id]
        except KeyError:
            raise KeyError(f"image id {image_id!r} has no {what} in this RGB-D store "
                           f"({len(paths)} {what}s)") from None

    def rgb(self, image_id: ImageId) -> np.ndarray:
        return read_rgb(self._path(self.rgb_paths, image_id, "RGB image"), "image",
                        self.image_size)

    def depth(self, image_id: ImageId) -> np.ndarray | None:
        path = self.depth_paths.get(image_id)
        if path is None:
            return None
        size = ((self.image_size, self.image_size) if self.image_size is not None
                else self.rgb_sizes.get(image_id))
        return read_depth_png(path, size)

    def ids(self) -> list[ImageId]:
        return list(self.rgb_paths)


# ----------------------------------------------------------------------------- reading

@dataclass
class RGBDReadReport:
    """What :func:`read_rgbd` skipped or resized (it also prints these as notes)."""

    skipped_questions: int = 0
    skipped_images: list[tuple[ImageId, str]] = field(default_factory=list)   # (id, why)
    resized_depth: list[tuple[ImageId, tuple[int, int], tuple[int, int]]] = field(
        default_factory=list)                                # (id, depth size, rgb size)


def read_rgbd(annotations_path: Path, *, image_size: int | None = None,
              needs: Sequence[str] = MODALITIES, settings: DepthSettings | None = None,
              ) -> tuple[list[Sample], RGBDImageStore, RGBDReadReport]:
    """Read an RGB-D split: samples (file order), their store and a report of what was skipped.

    Every file of a modality in ``needs`` is checked up front (existence, and for depth maps
    16-bit single channel and the size against the RGB image) by reading image headers only.
    ``settings.missing`` decides whether a missing file fails the read or its questions are
    skipped (counted in the report and printed); ``settings.size_mismatch`` whether a depth
    map of another size is resized (noted) or refused.
    """
    settings = settings or DepthSettings()
    unknown = sorted(set(needs) - set(MODALITIES))
    if unknown:
        raise ValueError(f"read_rgbd needs modalities from {MODALITIES}, got {unknown}")
    path = Path(annotations_path)
    document = load_json(path, "RGB-D annotations")
    records = document.get("samples") if isinstance(document, dict) else None
    if not isinstance(records, list):
        got = (f"top-level keys {sorted(document)[:8]}" if isinstance(document, dict)
               else f"a top-level {type(document).__name__}")
        raise DataError(f"{path}: expected a JSON object with a 'samples' list, got {got}. "
                        f"Fix: pass an RGB-D split file (e.g. written by `vldistill data "
                        f"shapesworld --format rgbd`).")
    samples, files = [], {}
    for index, record in enumerate(records):
        sample, rgb, depth = _parse_record(record, path, index)
        known = files.setdefault(sample.image_id, (rgb, depth))
        if known != (rgb, depth):
            raise DataError(f"{path}: samples[{index}] gives image_id {sample.image_id!r} the "
                            f"files {rgb!r}, {depth!r}, but an earlier record gave it "
                            f"{known[0]!r}, {known[1]!r}. Fix: one image id, one pair of files.")
        samples.append(sample)
    check_unique([s.question_id for s in samples], path, "samples")
    base = path.parent
    paths = {image_id: (base / rgb, base / depth if depth else None)
             for image_id, (rgb, depth) in files.items()}
    report = RGBDReadReport()
    keep, rgb_sizes = _scan_files(path, paths, samples, needs, settings, report)
    samples = [s for s in samples if s.image_id in keep]
    store = RGBDImageStore({i: paths[i][0] for i in keep},
                           {i: paths[i][1] for i in keep if paths[i][1] is not None},
                           image_size, rgb_sizes)
    _print_notes(path, report, settings)
    return samples, store, report


def _parse_record(record: Any, path: Path, index: int) -> tuple[Sample, str, str | None]:
    where = f"samples[{index}]"
    if not isinstance(record, dict):
        raise DataError(f"{path}: {where} is {show(record)}; expected a JSON object. Fix: "
                        f"correct that record.")
    answers = tuple(get(record, "answers", path, where, "str_list", []))
    sample = Sample(question_id=get(record, "question_id", path, where, "id"),
                    image_id=get(record, "image_id", path, where, "id"),
                    question=get(record, "question", path, where, "str"),
                    answers=answers,
                    question_type=get(record, "question_type", path, where, "str", ""),
                    answer_type=get(record, "answer_type", path, where, "str", ""))
    rgb = get(record, "rgb", path, where, "str")
    depth = record.get("depth")
    if depth is not None and not isinstance(depth, str):
        raise DataError(f"{path}: {where} field 'depth' is {show(depth)}; expected a path "
                        f"string (or null when the sample has no depth map). Fix: correct that "
                        f"record.")
    for relative in (rgb, depth):
        if relative is not None:
            check_inside(path.parent, relative, f"{path}: {where}")
    return sample, rgb, depth


def _scan_files(path: Path, paths: dict[ImageId, tuple[Path, Path | None]],
                samples: Sequence[Sample], needs: Sequence[str], settings: DepthSettings,
                report: RGBDReadReport) -> tuple[list[ImageId], dict[ImageId, tuple[int, int]]]:
    """The image ids whose needed files are all there (headers checked), and RGB sizes."""
    questions: dict[ImageId, int] = {}
    for sample in samples:
        questions[sample.image_id] = questions.get(sample.image_id, 0) + 1
    keep, sizes, mismatched, missing = [], {}, [], []
    for image_id, (rgb_path, depth_path) in paths.items():
        rgb_size = image_header(rgb_path, "RGB image")[0] if rgb_path.is_file() else None
        why = None
        if rgb_size is None and "rgb" in needs:
            why = f"RGB image {rgb_path} is missing"
        elif "depth" in needs and (depth_path is None or not depth_path.is_file()):
            why = ("no depth map is listed" if depth_path is None
                   else f"depth map {depth_path} is missing")
        if why is not None:
            missing.append((image_id, why))
            continue
        if "depth" in needs:
            depth_size, _ = image_header(depth_path, "depth map", expect="depth")
            if rgb_size is not None and depth_size != rgb_size:
                mismatched.append((image_id, depth_size, rgb_size, depth_path, rgb_path))
        keep.append(image_id)
        if rgb_size is not None:
            sizes[image_id] = rgb_size
    if missing and settings.missing == "fail":
        lines = [f"  image {image_id!r} ({questions[image_id]} question(s)): {why}"
                 for image_id, why in missing[:MAX_LISTED]]
        more = f"\n  ... and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        raise MissingFileError(
            f"{path}: {len(missing)} of {len(paths)} images lack a modality this recipe needs "
            f"({', '.join(needs)}):\n" + "\n".join(lines) + more + "\nFix: add the files, or "
            "set data.depth.missing: skip to skip those questions (they are counted).")
    report.skipped_images = missing
    report.skipped_questions = sum(questions[image_id] for image_id, _ in missing)
    if mismatched and settings.size_mismatch == "refuse":
        first = mismatched[0]
        raise DataError(
            f"{path}: {len(mismatched)} depth maps differ in size from their RGB images, e.g. "
            f"{first[3]} is {first[1][0]}x{first[1][1]} but {first[4]} is "
            f"{first[2][0]}x{first[2][1]} (image {first[0]!r}). Fix: register the depth maps "
            f"to the RGB images, or set data.depth.size_mismatch: resize.")
    report.resized_depth = [(m[0], m[1], m[2]) for m in mismatched]
    return keep, sizes


def _print_notes(path: Path, report: RGBDReadReport, settings: DepthSettings) -> None:
    if report.skipped_images:
        image_id, why = report.skipped_images[0]
        console.print(f"note: {path}: skipped {report.skipped_questions} question(s) on "
                      f"{len(report.skipped_images)} image(s) missing a modality (first: image "
                      f"{image_id!r}, {why}); data.depth.missing is 'skip'.")
    if report.resized_depth:
        image_id, depth_size, rgb_size = report.resized_depth[0]
        console.print(f"note: {path}: {len(report.resized_depth)} depth map(s) differ in size "
                      f"from their RGB image and are resized to it, nearest neighbour (first: "
                      f"image {image_id!r}, depth {depth_size[0]}x{depth_size[1]}, RGB "
                      f"{rgb_size[0]}x{rgb_size[1]}); set data.depth.size_mismatch: refuse to "
                      f"stop instead.")


# ----------------------------------------------------------------------------- writing

def write_rgbd(samples: Sequence[Sample], images: ImageStore, out_dir: Path,
               split: str) -> dict[str, Path]:
    """Write samples in the RGB-D layout: ``{split}.json``, ``images/{id}.png`` and
    ``depth/{id}.png`` (uint16 millimetres). Keys of the result: samples, images, depth."""
    out_dir = Path(out_dir)
    check_split(split)
    check_samples(samples)
    if not write_images(samples, images, out_dir):
        raise DataError(f"the {split!r} image store has no depth maps; the RGB-D layout needs "
                        f"one per image. Fix: use a store with depth (ShapesWorld has it).")
    records = [{"question_id": s.question_id, "image_id": s.image_id,
                "rgb": f"images/{s.image_id}.png", "depth": f"depth/{s.image_id}.png",
                "question": s.question, "answers": list(s.answers),
                "question_type": s.question_type, "answer_type": s.answer_type}
               for s in samples]
    paths = {"samples": out_dir / f"{split}.json", "images": out_dir / "images",
             "depth": out_dir / "depth"}
    write_json(paths["samples"], {"info": {"description": "written by vldistill", "split": split},
                                   "samples": records})
    return paths
