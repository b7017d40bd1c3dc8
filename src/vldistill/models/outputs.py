"""Typed model outputs. Every model (built-in, adapter, or a user's) returns one of these.

Losses read the fields they need by name, so a new loss never needs a new model signature.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class ModelOutput:
    """What a teacher or student returns for a batch of N examples (questions, or images for a
    plain classifier).

    logits:       (N, num_classes) answer / class scores.
    image_embeds: (N, D_img) pooled image feature of each example's image, or None.
    text_embeds:  (N, D_txt) pooled question feature, or None.
    features:     named intermediate features (e.g. "image_grid": (N_img, G, D), "fused": (N, D)).
    """

    logits: torch.Tensor
    image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    features: dict[str, torch.Tensor] = field(default_factory=dict)

    def select(self, rows: torch.Tensor) -> ModelOutput:
        """The per-example fields (logits, embeddings) at ``rows`` (bool mask or indices).

        ``features`` are passed through unselected: their first dimension need not be examples
        (the image grid is per image, shared by several questions).
        """
        def pick(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x[rows]
        return ModelOutput(self.logits[rows], pick(self.image_embeds), pick(self.text_embeds),
                           self.features)


def as_model_output(output: object) -> ModelOutput:
    """Accept a ModelOutput, or a bare logits tensor from a user's plain classifier."""
    if isinstance(output, ModelOutput):
        return output
    if isinstance(output, torch.Tensor):
        return ModelOutput(logits=output)
    raise TypeError(
        f"a model returned {type(output).__name__}; vldistill expects a ModelOutput "
        "(vldistill.models.ModelOutput) or a logits tensor (N, num_classes). Wrap your "
        "model's forward to return one of those.")


# inputs the data pipeline adds for models that want them (raw question text for models with
# their own tokenizer, the answer a generative model is teacher-forced on); a model whose
# forward names neither them nor **kwargs is called without them
OPTIONAL_INPUTS = ("questions", "answers")


def call_model(model: nn.Module, inputs: Mapping[str, Any] | Sequence[Any]) -> ModelOutput:
    """Run a model on batch inputs (dict -> keywords, tuple/list -> positional)."""
    if isinstance(inputs, Mapping):
        accepted = _accepted_keywords(type(model))
        if accepted is not None:
            inputs = {k: v for k, v in inputs.items()
                      if k not in OPTIONAL_INPUTS or k in accepted}
        return as_model_output(model(**inputs))
    return as_model_output(model(*inputs))


@functools.cache
def _accepted_keywords(model_class: type) -> frozenset[str] | None:
    """The keyword names ``forward`` takes; None when it takes ``**kwargs`` (anything)."""
    try:
        parameters = inspect.signature(model_class.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters)
