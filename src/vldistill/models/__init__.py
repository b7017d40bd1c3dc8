"""Models: built-in architectures and (later) adapters around Hugging Face models.

Every model returns a :class:`ModelOutput`. Models named in recipes are registered in
``MODELS`` with their config class, so a recipe's ``params`` are validated against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel
from torch import nn

from vldistill.models.outputs import ModelOutput, as_model_output
from vldistill.models.vqa_net import VQANet, VQANetConfig
from vldistill.registry import Registry


@dataclass(frozen=True)
class ModelEntry:
    config_class: type[BaseModel]
    build: Callable[..., nn.Module]   # build(config, num_answers=..., vocab_size=...)


MODELS: Registry[ModelEntry] = Registry("model")
MODELS.register("vqa_attention")(ModelEntry(VQANetConfig, VQANet))


def build_model(name: str, params: dict[str, Any], **sizes: int) -> nn.Module:
    """Build a registered model from its recipe params and data-derived sizes."""
    entry = MODELS.get(name)
    return entry.build(entry.config_class(**params), **sizes)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["MODELS", "ModelEntry", "ModelOutput", "VQANet", "VQANetConfig", "as_model_output",
           "build_model", "count_parameters"]
