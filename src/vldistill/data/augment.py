"""Replayable image augmentation: K fixed views per training image.

A view is a shift (with edge padding, so nothing new enters the frame and left/right relations
hold) and a brightness/contrast change. Its parameters are a pure function of
``(seed, item, view)``, so the teacher-output cache can store what the teacher saw with each view
and training can replay exactly the same pixels. View 0 is always the unchanged image.

With ``views: 0`` (the default) nothing is augmented.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import Dataset

PARAMETERS = ("dx", "dy", "brightness", "contrast")


class AugmentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    views: int = Field(0, ge=0, description="views per training image (view 0 is the image "
                       "itself); 0: no augmentation")
    max_shift: int = Field(4, ge=0, description="largest shift in pixels, each axis")
    brightness: float = Field(0.1, ge=0, le=1, description="largest brightness change, "
                              "a fraction of the pixel range")
    contrast: float = Field(0.1, ge=0, lt=1, description="largest contrast change, a factor "
                            "1 ± contrast")
    seed: int = 0


def view_parameters(settings: AugmentSettings, item: int, view: int) -> np.ndarray:
    """(4,) float32: dx, dy, brightness, contrast of view ``view`` of image ``item``."""
    if view == 0:
        return np.array([0, 0, 0, 1], dtype=np.float32)
    rng = np.random.default_rng([settings.seed, item, view])
    shift = settings.max_shift
    dx, dy = rng.integers(-shift, shift + 1, size=2)
    brightness = rng.uniform(-settings.brightness, settings.brightness)
    contrast = 1.0 + rng.uniform(-settings.contrast, settings.contrast)
    return np.array([dx, dy, brightness, contrast], dtype=np.float32)


def apply_view(image: torch.Tensor, parameters: np.ndarray) -> torch.Tensor:
    """Apply one view to a (3, H, W) uint8 image; returns (3, H, W) uint8."""
    dx, dy, brightness, contrast = (float(p) for p in parameters)
    dx, dy = int(dx), int(dy)
    out = image
    if dx or dy:
        height, width = image.shape[-2:]
        rows = (torch.arange(height) - dy).clamp(0, height - 1)
        columns = (torch.arange(width) - dx).clamp(0, width - 1)
        out = out[:, rows][:, :, columns]
    if brightness or contrast != 1.0:
        pixels = out.float()
        mean = pixels.mean()
        pixels = (pixels - mean) * contrast + mean + brightness * 255.0
        out = pixels.round().clamp(0, 255).to(torch.uint8)
    return out


class ViewDataset(Dataset):
    """Item ``i * views + v`` is view v of item i of ``dataset`` (its image replayed from the
    view's parameters). Items carry ``"view"`` so a cache lookup finds the matching teacher
    outputs; ``parameters`` (stored in a cache) override the computed ones."""

    def __init__(self, dataset: Dataset, settings: AugmentSettings, offset: int = 0,
                 parameters: np.ndarray | None = None) -> None:
        if settings.views < 1:
            raise ValueError("ViewDataset needs augment.views >= 1")
        self.dataset, self.settings, self.offset = dataset, settings, offset
        self.views = settings.views
        self.parameters = parameters      # (views, items, 4) or None

    def __len__(self) -> int:
        return len(self.dataset) * self.views

    def view_of(self, index: int) -> tuple[int, int]:
        return divmod(index, self.views)

    def parameters_of(self, item: int, view: int) -> np.ndarray:
        if self.parameters is not None:
            return self.parameters[view, self.offset + item]
        return view_parameters(self.settings, self.offset + item, view)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item, view = self.view_of(index)
        record = dict(self.dataset[item])
        record["image"] = apply_view(record["image"], self.parameters_of(item, view))
        record["view"] = view
        return record
