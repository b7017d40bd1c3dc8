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


def model_config(name: str, params: dict[str, Any]) -> BaseModel:
    """Validate a registered model's params; unknown names raise and list the valid ones."""
    entry = MODELS.get(name)
    unknown = sorted(set(params) - set(entry.config_class.model_fields))
    if unknown:
        raise ValueError(f"model {name!r} has no parameter(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(entry.config_class.model_fields)}")
    return entry.config_class(**params)


def build_model(name: str, params: dict[str, Any], **sizes: int) -> nn.Module:
    """Build a registered model from its recipe params and data-derived sizes."""
    return MODELS.get(name).build(model_config(name, params), **sizes)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["MODELS", "ModelEntry", "ModelOutput", "VQANet", "VQANetConfig", "as_model_output",
           "build_model", "model_config", "count_parameters"]
