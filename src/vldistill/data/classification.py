"""Plain image classification data: tensors or an image folder (one sub-folder per class).

The simplest case users try first: distil an image classifier on labelled images, optionally
with unlabelled transfer images. Items and batches follow the same dict contract as VQA.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vldistill.core.errors import DataError, MissingFileError
from vldistill.data.images import read_rgb

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


class ClassificationDataset(Dataset):
    """``images`` (N, C, H, W) tensor; ``labels`` (N,) long, or None for unlabelled images."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None,
                 classes: Sequence[str] | None = None) -> None:
        images = torch.as_tensor(images) if not isinstance(images, torch.Tensor) else images
        if labels is not None and not isinstance(labels, torch.Tensor):
            labels = torch.as_tensor(labels)
        if images.ndim != 4:
            raise DataError(f"classification images must be a tensor (N, C, H, W), got "
                            f"{type(images).__name__} {tuple(getattr(images, 'shape', ()))}")
        if labels is not None and (labels.ndim != 1 or len(labels) != len(images)):
            raise DataError(f"labels must be a tensor (N,) with N = {len(images)} (one per "
                            f"image), got shape {tuple(labels.shape)}")
        self.images, self.labels = images, None if labels is None else labels.long()
        self.classes = list(classes) if classes is not None else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        labelled = self.labels is not None
        return {"image": self.images[index],
                "label": int(self.labels[index]) if labelled else -1, "labelled": labelled}


class RowSubset(Dataset):
    """The images ``rows`` of ``dataset``, each item carrying its row (the index a teacher
    cache answers by); ``labelled=False`` hides the labels (a transfer set)."""

    def __init__(self, dataset: ClassificationDataset, rows: Sequence[int],
                 labelled: bool = True) -> None:
        if labelled and dataset.labels is None:
            raise DataError("a labelled subset needs a dataset with labels")
        self.dataset, self.rows, self.labelled = dataset, [int(r) for r in rows], labelled

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        label = int(self.dataset.labels[row]) if self.labelled else -1
        return {"image": self.dataset.images[row], "label": label, "labelled": self.labelled,
                "row": row}


def collate_classification(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    labels = torch.tensor([item["label"] for item in items], dtype=torch.long)
    labelled = torch.tensor([item["labelled"] for item in items])
    batch = {"inputs": (torch.stack([item["image"] for item in items]),),
             "targets": labels.clamp(min=0), "labelled": labelled}
    if "row" in items[0]:
        batch["rows"] = torch.tensor([item["row"] for item in items], dtype=torch.long)
    return batch


def image_folder(root: str | Path, image_size: int = 64, labelled: bool = True
                 ) -> ClassificationDataset:
    """Read ``root/<class>/<image>`` into a dataset of uint8 (N, 3, S, S) images.

    Classes are the sub-folder names in sorted order (label i = i-th name).
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"image folder {root} does not exist. Fix: pass a folder with "
                               "one sub-folder of images per class.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"image folder {root} has no class sub-folders; expected "
                        f"{root}/<class name>/<image files>. Fix: put each class's images in a "
                        "sub-folder named after the class.")
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        images += [read_rgb(path, "image", image_size) for path in files]
        labels += [label] * len(files)
    if not images:
        raise DataError(f"image folder {root} has class folders {classes} but no images "
                        f"(suffixes {sorted(IMAGE_SUFFIXES)}). Fix: put the images in the "
                        "class folders.")
    tensor = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return ClassificationDataset(tensor, torch.tensor(labels) if labelled else None, classes)
