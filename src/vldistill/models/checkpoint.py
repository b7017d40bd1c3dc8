"""Model checkpoints in safetensors, with everything needed to rebuild the model.

The metadata (strings only, a safetensors rule) records the registered model name and params,
the answer vocabulary and the question vocabulary, so ``vldistill eval CHECKPOINT`` needs nothing
else. Writes are atomic: a temporary file in the same folder, fsync, then rename, so a reader
never sees a half-written checkpoint and the previous one survives a crash mid-write.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from vldistill.core.errors import DataError, MissingFileError
from vldistill.core.fileio import atomic_write
from vldistill.core.hashing import hash_tensors

FORMAT = "vldistill.model.v2"       # v2: metadata and weights carry a SHA-256
OLDER_FORMATS = ("vldistill.model.v1",)   # readable; written before checksums


HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def pickled_weights_note(path: Path) -> str:
    """What to say when a Hugging Face folder has no safetensors weights: the pickled files
    it has instead (never loaded) and how to convert them."""
    pickled = sorted(p.name for p in Path(path).iterdir() if p.suffix in PICKLE_SUFFIXES) \
        if Path(path).is_dir() else []
    return (f" (found {', '.join(pickled)}: pickled weights are never loaded; convert them "
            "with save_pretrained(..., safe_serialization=True) where you trust the file)"
            if pickled else "")


def require_safetensors(path: Path, what: str, alternative: str = "") -> Path:
    """``path`` as a Path, once it holds a config.json and safetensors weights: a Hugging Face
    folder whose weights are pickles is refused (every from_pretrained of a user's folder also
    passes use_safetensors=True, so a pickle there is never unpickled). ``alternative`` names
    what else the caller accepts, e.g. ", or 'minilm'"."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise MissingFileError(f"{what} folder {path} has no config.json. Fix: pass a folder "
                               f"written by save_pretrained{alternative}.")
    if not any((path / name).is_file() for name in HF_WEIGHTS):
        raise MissingFileError(f"{what} folder {path} has no model.safetensors"
                               f"{pickled_weights_note(path)}. Fix: save the model there with "
                               "save_pretrained(folder).")
    return path


@dataclass(frozen=True)
class ModelCheckpoint:
    state_dict: dict[str, torch.Tensor]
    model_name: str
    model_params: dict[str, Any]
    sizes: dict[str, int]
    extra: dict[str, Any]


def save_model(path: Path, model: nn.Module, model_name: str, model_params: dict[str, Any],
               sizes: dict[str, int], extra: dict[str, Any] | None = None) -> Path:
    """Save weights + rebuild information. ``extra`` must be JSON-serialisable."""
    return write_weights(path, model, {
        "format": FORMAT, "model_name": model_name, "model_params": json.dumps(model_params),
        "sizes": json.dumps(sizes), "extra": json.dumps(extra or {})})


RECOVER = ("Use another checkpoint of the run (-best / -last), copy it again, or retrain it "
           "with `vldistill run RECIPE --resume`.")


def write_weights(path: Path, model: nn.Module, metadata: dict[str, str]) -> Path:
    """``model``'s state as safetensors with string ``metadata`` plus its SHA-256 checksum,
    written atomically after a free-space check (every vldistill weights file goes here)."""
    state, seen = {}, set()
    for key, value in model.state_dict().items():
        value = value.detach().cpu().contiguous()
        # tied weights (an LM head sharing the embedding) are one tensor under two names;
        # safetensors refuses shared memory, so the second name gets its own copy
        pointer = value.untyped_storage().data_ptr()
        state[key] = value.clone() if pointer in seen and value.numel() else value
        seen.add(pointer)
    metadata = {**metadata, "sha256": tensors_digest(state, metadata)}
    size = sum(t.numel() * t.element_size() for t in state.values())
    atomic_write(Path(path), lambda tmp: save_file(state, str(tmp), metadata=metadata),
                 expected_bytes=size)
    return Path(path)


def read_weights(path: str | Path, missing_hint: str, checked_formats: tuple[str, ...],
                 recover: str = RECOVER) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state, metadata) of a file written by :func:`write_weights` (nothing is unpickled).
    Its checksum is verified; files of ``checked_formats`` must have one (older formats may
    lack it). The caller checks the format and reads the metadata."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint {path} does not exist; {missing_hint}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise DataError(f"checkpoint {path} is not a readable safetensors file ({error}); it "
                        "may be truncated or corrupt: re-export it or use another "
                        "checkpoint.") from None
    expected = metadata.get("sha256")
    if metadata.get("format") in checked_formats and expected is None:
        raise DataError(f"checkpoint {path} is damaged: its checksum entry is missing from the "
                        f"metadata. {recover}")
    if expected is not None and tensors_digest(state, metadata) != expected:
        raise DataError(f"checkpoint {path} is damaged: its weights or metadata do not match "
                        f"the checksum written with them (a flipped bit or a partial copy). "
                        f"{recover}")
    return state, metadata


def tensors_digest(state: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 over the metadata (but its own entry) and the tensors: stored in the checkpoint,
    so a flipped bit anywhere that still parses is detected when it is read."""
    digest = hashlib.sha256(json.dumps({k: v for k, v in sorted(metadata.items())
                                        if k != "sha256"}).encode())
    return hash_tensors(digest, state).hexdigest()


def load_checkpoint(path: str | Path) -> ModelCheckpoint:
    """Read a checkpoint written by :func:`save_model` (safetensors: nothing is unpickled)."""
    state, metadata = read_weights(
        path, "pass a .safetensors file from a run folder, e.g. runs/default/checkpoints/"
        "student-kd-seed0-last.safetensors", (FORMAT,))
    if metadata.get("format") not in (FORMAT, *OLDER_FORMATS):
        raise DataError(f"checkpoint {path} has format {metadata.get('format')!r}, expected "
                        f"{FORMAT!r}: it was not written by vldistill's save_model.")
    try:
        return ModelCheckpoint(state, metadata["model_name"], json.loads(metadata["model_params"]),
                               json.loads(metadata["sizes"]), json.loads(metadata["extra"]))
    except (KeyError, json.JSONDecodeError) as error:
        raise DataError(f"checkpoint {path} has damaged metadata ({error}); re-save it.") from None


def read_model_spec(path: str | Path) -> tuple[str, dict[str, Any]]:
    """(registered model name, params) of a checkpoint, from its metadata alone."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        return metadata["model_name"], json.loads(metadata["model_params"])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as error:
        raise DataError(f"checkpoint {path} has no readable model metadata ({error}); it was "
                        "not written by vldistill's save_model, or is damaged.") from None
