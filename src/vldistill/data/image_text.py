"""Image-text data for open-vocabulary distillation.

Three sources give the same :class:`ImageTextSet` (uint8 images in memory, a caption each, and a
class label where there is one):
- ``shapesworld``: one object per image; the caption is the world's ("a small red striped
  circle"), the label its colour and shape ("red circle"). Colour-shape combinations named in
  ``holdout`` never appear in training, images or captions, so zero-shot accuracy on them
  measures composition ("purple star" from "purple ..." and "... star").
- ``jsonl``: one ``{"image": PATH, "caption": TEXT, "label": optional}`` per line; image paths
  are relative to the image root and may not leave it.
- ``folder``: an image-folder classification layout, ``root/<class name>/<image>``; each
  image's caption is the prompt with its class name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vldistill.core.errors import DataError, MissingFileError
from vldistill.data.classification import image_folder
from vldistill.data.images import check_inside, read_rgb
from vldistill.data.jsonio import jsonl_records
from vldistill.data.shapesworld import load_shapesworld
from vldistill.data.shapesworld_render import COLOURS, SHAPES

LINE_LAYOUT = 'one {"image": ..., "caption": ...} object per line'


@dataclass
class ImageTextSet:
    images: torch.Tensor             # (N, 3, S, S) uint8
    captions: list[str]
    labels: list[str | None]

    def __len__(self) -> int:
        return len(self.captions)

    def subset(self, indices) -> ImageTextSet:
        indices = list(indices)
        return ImageTextSet(self.images[indices], [self.captions[i] for i in indices],
                            [self.labels[i] for i in indices])


def shapesworld_sets(settings, holdout: list[str]) -> tuple[ImageTextSet, ImageTextSet,
                                                             list[str]]:
    """(train without the held-out combinations, val, every colour-shape class)."""

    classes = [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]
    unknown = [label for label in holdout if label not in classes]
    if unknown:
        raise DataError(f"held-out combinations {unknown} are not ShapesWorld classes; a class "
                        f"is '<colour> <shape>' with colours {', '.join(COLOURS)} and shapes "
                        f"{', '.join(SHAPES)}")
    world = load_shapesworld(settings.model_copy(update={"min_objects": 1, "max_objects": 1}),
                             progress=True)
    out = []
    for name in ("train", "val"):
        split = world.splits[name]
        keep = [i for i, scene in enumerate(split.scenes)
                if name == "val" or _label(scene) not in holdout]
        scenes = [split.scenes[i] for i in keep]
        images = np.stack([split.images.rgb(scene.image_id) for scene in scenes])
        out.append(ImageTextSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                                [split.captions[scene.image_id] for scene in scenes],
                                [_label(scene) for scene in scenes]))
    return out[0], out[1], classes


def _label(scene) -> str:
    obj = scene.objects[0]
    return f"{obj.colour} {obj.shape}"


def read_jsonl(path: Path, root: Path, size: int) -> ImageTextSet:
    """A JSONL caption file: ``{"image", "caption"[, "label"]}`` per line."""

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"caption file {path} does not exist. Fix: pass a JSONL file of "
                               '{"image": ..., "caption": ...} lines.')
    images, captions, labels = [], [], []
    for _, where, record in jsonl_records(path, "caption file", LINE_LAYOUT):
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}. "
                            f"Fix: {LINE_LAYOUT}.")
        missing = [k for k in ("image", "caption")
                   if not isinstance(record.get(k), str) or not record[k].strip()]
        if missing:
            raise DataError(f"{where}: {' and '.join(missing)} missing, empty or not a "
                            "string. Fix: give every line an image path and a caption.")
        check_inside(Path(root), record["image"], where)
        images.append(read_rgb(Path(root) / record["image"], f"{where}: image", size))
        captions.append(record["caption"].strip())
        label = record.get("label")
        labels.append(str(label).strip() if label is not None else None)
    if not captions:
        raise DataError(f"{path}: no image-caption lines. Fix: {LINE_LAYOUT}.")
    return ImageTextSet(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
                        captions, labels)


def read_folder(root: Path, size: int, prompt: str) -> ImageTextSet:
    """``root/<class>/<image>`` (read by :func:`vldistill.data.classification.image_folder`):
    labels are the folder names with ``_`` as spaces, captions the prompt with them."""

    data = image_folder(root, size)
    names = [name.replace("_", " ") for name in data.classes]
    labels = [names[i] for i in data.labels.tolist()]
    return ImageTextSet(data.images, [prompt.format(label=label) for label in labels], labels)


def check_labels(labels: list[str]) -> list[str]:
    """Zero-shot labels: stripped, non-empty, distinct; refused otherwise, with the reason."""
    cleaned = [label.strip() for label in labels]
    if not any(cleaned):
        raise ValueError("zero-shot needs at least one non-empty label, e.g. --labels "
                         '"red circle,blue star"')
    empty = [i + 1 for i, label in enumerate(cleaned) if not label]
    if empty:
        raise ValueError(f"label(s) number {', '.join(map(str, empty))} of {len(cleaned)} are "
                         "empty (two commas in a row?); name every class")
    folded = [label.casefold() for label in cleaned]
    duplicates = sorted({label for label, key in zip(cleaned, folded) if folded.count(key) > 1})
    if duplicates:
        raise ValueError(f"duplicate labels {duplicates} (case aside): each class must be named "
                         "once, or its probability would be split between the copies")
    return cleaned
