"""Replayable image augmentation: K fixed views per training image.

A view is a shift (with edge padding, so nothing new enters the frame and left/right relations
hold), a brightness/contrast change and, when ``flip`` is on, a left-right mirror. Its
parameters are a pure function of ``(seed, item, view)``, so the teacher-output cache can store
what the teacher saw with each view and training can replay exactly the same pixels. View 0 is
always the unchanged image.

With ``views: 0`` (the default of a recipe) nothing is augmented. :class:`Replayable` is the
contract (``vldistill.distill(augment=...)`` takes any object that keeps it);
:class:`AugmentSettings` keeps it, and is ``vldistill.Augment`` in the Python API.

Written by hand: the augmentation libraries that record and replay parameters (albumentations'
ReplayCompose, kornia) need OpenCV or fetch a CUDA torch here, and none derives a view's
parameters from ``(seed, item, view)`` without first running it, which a cache built by several
processes needs.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import Dataset

PARAMETERS = ("dx", "dy", "brightness", "contrast")      # then "flip" when flip is on


@runtime_checkable
class Replayable(Protocol):
    """An augmentation whose views can be replayed exactly.

    ``parameters(item, view)`` must be a pure function of its arguments (and the object's
    settings): the teacher-output cache stores the teacher's outputs on each view, and training
    shows the student ``apply(input, parameters(item, view))`` again. ``describe()`` returns the
    settings as a JSON-able dict (it goes into the cache's fingerprint)."""

    views: int

    def parameters(self, item: int, view: int) -> np.ndarray: ...

    def apply(self, image: torch.Tensor, parameters: np.ndarray) -> torch.Tensor: ...

    def describe(self) -> dict[str, Any]: ...


class AugmentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    views: int = Field(0, ge=0, description="views per training image (view 0 is the image "
                       "itself); 0: no augmentation")
    max_shift: int = Field(4, ge=0, description="largest shift in pixels, each axis")
    brightness: float = Field(0.1, ge=0, le=1, description="largest brightness change, "
                              "a fraction of the pixel range")
    contrast: float = Field(0.1, ge=0, lt=1, description="largest contrast change, a factor "
                            "1 ± contrast")
    flip: bool = Field(False, description="mirror left-right in half the views (not for data "
                       "whose labels name left and right, such as spatial VQA questions)")
    seed: int = 0

    # the Replayable contract (vldistill.distill(augment=...))
    def parameters(self, item: int, view: int) -> np.ndarray:
        return view_parameters(self, item, view)

    def apply(self, image: torch.Tensor, parameters: np.ndarray) -> torch.Tensor:
        return apply_view(image, parameters)

    def describe(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def view_parameters(settings: AugmentSettings, item: int, view: int) -> np.ndarray:
    """float32 dx, dy, brightness, contrast (and flip, 0 or 1, when ``settings.flip``) of view
    ``view`` of image ``item``."""
    if view == 0:
        return np.array([0, 0, 0, 1] + ([0] if settings.flip else []), dtype=np.float32)
    rng = np.random.default_rng([settings.seed, item, view])
    shift = settings.max_shift
    dx, dy = rng.integers(-shift, shift + 1, size=2)
    brightness = rng.uniform(-settings.brightness, settings.brightness)
    contrast = 1.0 + rng.uniform(-settings.contrast, settings.contrast)
    flip = [float(rng.integers(0, 2))] if settings.flip else []
    return np.array([dx, dy, brightness, contrast, *flip], dtype=np.float32)


def apply_view(image: torch.Tensor, parameters: np.ndarray) -> torch.Tensor:
    """Apply one view to a (C, H, W) image, uint8 (brightness is a fraction of 255) or float
    (a fraction of 1); returns the same shape and dtype."""
    dx, dy, brightness, contrast = (float(p) for p in parameters[:4])
    flip = len(parameters) > 4 and bool(parameters[4])
    dx, dy = int(dx), int(dy)
    out = image
    if dx or dy:
        height, width = image.shape[-2:]
        rows = (torch.arange(height) - dy).clamp(0, height - 1)
        columns = (torch.arange(width) - dx).clamp(0, width - 1)
        out = out[..., rows, :][..., columns]
    if flip:
        out = out.flip(-1)
    if brightness or contrast != 1.0:
        pixels = out.float()
        mean = pixels.mean()
        if image.dtype == torch.uint8:
            pixels = (pixels - mean) * contrast + mean + brightness * 255.0
            out = pixels.round().clamp(0, 255).to(torch.uint8)
        else:
            out = ((pixels - mean) * contrast + mean + brightness).to(image.dtype)
    return out


class ViewDataset(Dataset):
    """Item ``i * views + v`` is view v of item i of ``dataset`` (its image replayed from the
    view's parameters). Items carry ``"view"`` so a cache lookup finds the matching teacher
    outputs; ``parameters`` (stored in a cache) override the computed ones. ``settings`` is
    any :class:`Replayable` (an :class:`AugmentSettings`, or a user's)."""

    def __init__(self, dataset: Dataset, settings: Replayable, offset: int = 0,
                 parameters: np.ndarray | None = None) -> None:
        if settings.views < 1:
            raise ValueError("ViewDataset needs augment.views >= 1")
        self.dataset, self.settings, self.offset = dataset, settings, offset
        self.views = settings.views
        self.parameters = parameters      # (views, items, P) or None

    def __len__(self) -> int:
        return len(self.dataset) * self.views

    def view_of(self, index: int) -> tuple[int, int]:
        return divmod(index, self.views)

    def parameters_of(self, item: int, view: int) -> np.ndarray:
        if self.parameters is not None:
            return self.parameters[view, self.offset + item]
        return self.settings.parameters(self.offset + item, view)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item, view = self.view_of(index)
        record = dict(self.dataset[item])
        record["image"] = self.settings.apply(record["image"], self.parameters_of(item, view))
        record["view"] = view
        return record
