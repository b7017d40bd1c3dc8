"""Models: built-in architectures and (later) adapters around Hugging Face models.

Every model returns a :class:`ModelOutput`. Models named in recipes are registered in
``MODELS`` with their config class, so a recipe's ``params`` are validated against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from vldistill.models.outputs import ModelOutput, as_model_output
from vldistill.models.vqa_net import VQANet, VQANetConfig
from vldistill.registry import Registry


@dataclass(frozen=True)
class ModelEntry:
    config_class: type[BaseModel]
    build: Callable[..., nn.Module]   # build(config, num_answers=..., vocab_size=...)
    needs_answers: bool = False       # build(..., answers=[...]) too: the answer strings


class ViltSettings(BaseModel):
    """A Hugging Face ViltForQuestionAnswering in a local folder (vldistill.models.hf_vilt)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path = Field(description="folder written by save_pretrained: config.json, "
                       "model.safetensors, tokenizer and processor config")
    max_text_length: int | None = Field(None, ge=2, description="question tokens kept (longer "
                                        "ones are truncated, with a warning); None: the model's")


def _build_vilt(config: ViltSettings, num_answers: int, vocab_size: int,
                answers: list[str] | None = None) -> nn.Module:
    from vldistill.models.hf_vilt import ViltVQA

    if answers is None:                # rebuilt from a checkpoint without its vocabulary
        answers = [str(i) for i in range(num_answers)]
    return ViltVQA.from_pretrained(config.path, answers, config.max_text_length)


MODELS: Registry[ModelEntry] = Registry("model")
MODELS.register("vqa_attention")(ModelEntry(VQANetConfig, VQANet))
MODELS.register("vilt")(ModelEntry(ViltSettings, _build_vilt, needs_answers=True))


def model_config(name: str, params: dict[str, Any]) -> BaseModel:
    """Validate a registered model's params; unknown names raise and list the valid ones."""
    entry = MODELS.get(name)
    unknown = sorted(set(params) - set(entry.config_class.model_fields))
    if unknown:
        raise ValueError(f"model {name!r} has no parameter(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(entry.config_class.model_fields)}")
    return entry.config_class(**params)


def build_model(name: str, params: dict[str, Any], answers: list[str] | None = None,
                **sizes: int) -> nn.Module:
    """Build a registered model from its recipe params and data-derived sizes (and the answer
    strings, for models whose head is labelled, such as Hugging Face ones)."""
    entry = MODELS.get(name)
    extra = {"answers": answers} if entry.needs_answers and answers is not None else {}
    return entry.build(model_config(name, params), **sizes, **extra)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["MODELS", "ModelEntry", "ModelOutput", "VQANet", "VQANetConfig", "as_model_output",
           "build_model", "model_config", "count_parameters"]
