"""Writing datasets to disk in the layouts the readers read: the checks, images and JSON files
that the VQAv2, VizWiz and RGB-D writers share. Every file is written atomically."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

from vldistill.core.errors import DataError
from vldistill.core.fileio import atomic_write
from vldistill.data.jsonio import first
from vldistill.data.sample import ImageId, ImageStore, Sample


def check_split(split: str) -> None:
    if not isinstance(split, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", split):
        raise ValueError(f"split must be a plain name like 'train' or 'val2014', got {split!r}; "
                         f"it becomes part of the file names.")


def check_samples(samples: Sequence[Sample]) -> None:
    for sample in samples:
        for name in ("question_id", "image_id"):
            value = getattr(sample, name)
            if type(value) not in (int, str):
                raise DataError(f"sample {sample.question_id!r} has {name} {value!r} "
                                f"({type(value).__name__}); expected an int or str. Fix: "
                                f"convert it, e.g. int(value).")
        image_id = sample.image_id
        if isinstance(image_id, str) and (not re.fullmatch(r"[\w.-]+", image_id)
                                          or image_id in (".", "..")):
            raise DataError(f"sample {sample.question_id!r} has image_id {sample.image_id!r}, "
                            f"which cannot be a file name; expected letters, digits, '_', '-' "
                            f"or '.'. Fix: map image ids to plain names before writing.")
    duplicates = [q for q, n in Counter(s.question_id for s in samples).items() if n > 1]
    if duplicates:
        raise DataError(f"{len(duplicates)} question ids appear more than once in the samples: "
                        f"{first(duplicates)}. Fix: keep one sample per question id.")


def write_images(samples: Sequence[Sample], images: ImageStore, out_dir: Path) -> bool:
    """Write each distinct image once; True when any depth map was written."""
    wrote_depth = False
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    for image_id in dict.fromkeys(s.image_id for s in samples):
        name = f"{image_id}.png"
        rgb = checked_rgb(images.rgb(image_id), image_id)
        write_png(out_dir / "images" / name, Image.fromarray(rgb))
        depth = images.depth(image_id)
        if depth is not None:
            (out_dir / "depth").mkdir(exist_ok=True)
            write_png(out_dir / "depth" / name, Image.fromarray(depth_to_mm(depth, image_id)))
            wrote_depth = True
    return wrote_depth


def checked_rgb(rgb: np.ndarray, image_id: ImageId) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DataError(f"the image store returned shape {rgb.shape} {rgb.dtype} for image id "
                        f"{image_id!r}; expected (H, W, 3) uint8. Fix: convert the images to "
                        f"uint8 RGB in the store.")
    return np.ascontiguousarray(rgb)


def depth_to_mm(depth: np.ndarray, image_id: ImageId) -> np.ndarray:
    """Metres (H, W) -> uint16 millimetres (H, W); NaN/inf become 0 (invalid)."""
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise DataError(f"the image store returned depth of shape {depth.shape} for image id "
                        f"{image_id!r}; expected (H, W) metres. Fix: drop the channel axis.")
    millimetres = np.nan_to_num(np.round(depth * 1000.0), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(millimetres, 0, 65535).astype(np.uint16)


def write_json(path: Path, document: dict[str, Any]) -> None:
    data = json.dumps(document, ensure_ascii=False).encode("utf-8")
    write_atomic(path, lambda file: file.write(data))


def write_png(path: Path, image: Image.Image) -> None:
    write_atomic(path, lambda file: image.save(file, format="PNG"))


def write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """``write(file)`` into ``path`` atomically (see :func:`vldistill.core.fileio.atomic_write`)."""
    def write_path(temporary: Path) -> None:
        with open(temporary, "wb") as file:
            write(file)
    atomic_write(path, write_path)
