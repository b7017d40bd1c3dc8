"""Fingerprints: SHA-256 over JSON values and over tensor states; what differs between two
fingerprints (or recipes).

The checkpoint checksum, the teacher-output cache's teacher fingerprint, the fact index's
encoder fingerprint and the resume stamps all hash through these, so two places that should
agree on "the same weights" or "the same settings" cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn


def json_hash(value: Any) -> str:
    """SHA-256 of a JSON-serialisable value (keys sorted)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def hash_tensors(digest, state: dict[str, torch.Tensor]):
    """Feed every tensor's name, dtype, shape and bytes, in name order, to ``digest`` (a
    hashlib object); returns it."""
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest


def module_fingerprint(model: nn.Module) -> str:
    """SHA-256 over a module's state (names, dtypes, shapes and bytes, in name order)."""
    return hash_tensors(hashlib.sha256(), model.state_dict()).hexdigest()


def nested_differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two nested dicts (sorted; a field
    present on one side only differs). Used to name what changed in a recipe or a cache
    fingerprint."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return [d for key in sorted(set(saved) | set(current))
                for d in nested_differences(saved.get(key), current.get(key),
                                            f"{prefix}{key}.")]
    return [] if saved == current else [prefix.rstrip(".")]


def tensor_fingerprint(*parts: torch.Tensor | np.ndarray | Sequence[str]) -> str:
    """SHA-256 over tensors' bytes (and shapes) or lists of strings, in order: what an
    embedding teacher reads of its training rows."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, (torch.Tensor, np.ndarray)):
            array = np.ascontiguousarray(part.numpy() if isinstance(part, torch.Tensor) else part)
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())
        else:
            for text in part:
                digest.update(text.encode())
                digest.update(b"\0")
    return digest.hexdigest()
