"""Read a user's model at named layers: forward hooks that put each layer's output into the
:class:`~vldistill.models.outputs.ModelOutput`'s ``features``.

Feature distillation terms read features by name (``feature: image_embeds``); a user's own
module returns plain logits and has no such names. :class:`Tapped` wraps it, runs it unchanged,
and records the outputs of the submodules it was told to watch (``{"tap0": "layer3"}``: the
output of ``model.get_submodule("layer3")`` is ``features["tap0"]``). The wrapped model's
parameters are the user's own, so training the wrapper trains the user's model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from vldistill.models.outputs import ModelOutput, call_model


def layer_names(model: nn.Module, limit: int = 40) -> str:
    names = [name for name, _ in model.named_modules() if name]
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def find_layer(model: nn.Module, name: str, role: str) -> nn.Module:
    """``model``'s submodule ``name`` (dotted, as ``named_modules`` lists it); a clear error
    listing the layers it has otherwise."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"the {role} ({type(model).__name__}) has no layer {name!r}; its "
                         f"layers: {layer_names(model)}. Name one of them in the term's "
                         f"{role}_layer.") from None


def _first_tensor(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, ModelOutput):
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, Mapping):
        for value in output.values():
            if isinstance(value, torch.Tensor):
                return value
    raise TypeError(f"a tapped layer returned {type(output).__name__}; expected a tensor (or a "
                    "tuple / dict holding one)")


class Tapped(nn.Module):
    """``model`` with forward hooks on ``taps`` = {feature name: layer name}; its forward
    returns the model's output as a ModelOutput whose ``features`` hold the tapped layers."""

    def __init__(self, model: nn.Module, taps: Mapping[str, str], role: str = "student") -> None:
        super().__init__()
        self.model, self.taps = model, dict(taps)
        self._seen: dict[str, torch.Tensor] = {}
        self._handles = [find_layer(model, layer, role).register_forward_hook(
                             self._recorder(feature)) for feature, layer in self.taps.items()]

    def remove(self) -> nn.Module:
        """Take the hooks off and return the user's model as it was given."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return self.model

    def _recorder(self, feature: str):
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            self._seen[feature] = _first_tensor(output)
        return record

    def forward(self, *inputs: Any, **named: Any) -> ModelOutput:
        self._seen = {}
        output = call_model(self.model, named if named else inputs)
        features = {**output.features, **self._seen}
        self._seen = {}
        return ModelOutput(output.logits, output.image_embeds, output.text_embeds, features)
