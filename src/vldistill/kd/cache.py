"""The teacher-output cache of a VQA (or depth) teacher: run the teacher once, then distil at
the student's own cost. Two formats, two teacher sources (vldistill.kd.sources):

- exact (``teacher.mode: cache``, :class:`CachedTeacher`): every logit and feature in fp32;
- top-k (``teacher.mode: topk_cache``, :class:`TopKCachedTeacher`): per row the top-k logits
  (fp16), their indices (int16/32) and one fill logit for the other answers (fp32,
  vldistill.kd.topk), features in fp16; dense logits are rebuilt on read, so the logit losses
  are unchanged.

Layout of a cache folder (a store, vldistill.kd.store)::

    manifest.json                    fingerprint, shards with their files' sizes and SHA-256
    views.npy                        (K, items, 4) augmentation parameters of every view (K >= 1)
    shard-00000.logits.npy ...       the logits of one shard's rows (either format)
    shard-00000.feature.<name>.npy   (R, D), one per feature the losses read

A row is one question seen through one view. Rows are view-major: ``row = view * questions +
question_row``, questions in the order of the training items (labelled set, then transfer set).
Shards are memory-mapped on read, so each process (each DDP rank) reads only the pages of its own
samples, and built by every rank of a distributed run, each its share.

Safety: every file is written to a temporary name, fsynced and renamed; finished shards are
recorded as they finish, so an interrupted build resumes at the first missing shard. A cache is
opened only when its fingerprint equals what this recipe would build (teacher weights,
preprocessing, data ids and content, augmentation, k, fields, dtypes, vldistill version) and
every file has its recorded size and SHA-256; otherwise :class:`CacheError` says which field
differs or which file is damaged, and the command that rebuilds it.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vldistill.core.versions import __version__
from vldistill.data.augment import AugmentSettings, apply_view, view_parameters
from vldistill.kd.feature_losses import select_feature
from vldistill.kd.store import FORMAT, StoreError, build_store, open_store
from vldistill.kd.token_losses import FIELDS as TOKEN_FIELDS
from vldistill.kd.topk import compress_logits, expand_logits
from vldistill.models.outputs import ModelOutput, call_model

# a teacher cache is missing, stale (fingerprint differs) or damaged: one error for every store
CacheError = StoreError


def data_fingerprint(datasets: Sequence[Any]) -> str:
    """SHA-256 over what the teacher reads of every training item, in order: question ids and
    texts and the image bytes (VQAImageDataset groups), RGB and depth as the dataset has them."""
    digest = hashlib.sha256()
    for dataset in datasets:
        modalities = getattr(dataset, "modalities", ("rgb",))
        for group in dataset.groups:
            for sample in group:
                digest.update(f"{sample.question_id!r}|{sample.question}\n".encode())
            image_id = group[0].image_id
            if "rgb" in modalities:
                digest.update(np.ascontiguousarray(dataset.images.rgb(image_id)).tobytes())
            if "depth" in modalities:
                digest.update(np.ascontiguousarray(dataset.images.depth(image_id)).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheSpec:
    """What a cache is built from; its fingerprint decides whether a cache may be used."""

    teacher: str                         # core.hashing.module_fingerprint
    teacher_model: dict[str, Any]        # the teacher's architecture (name and settings)
    data: str                            # data_fingerprint
    preprocessing: dict[str, Any]        # image size, vocabularies
    augmentation: dict[str, Any]         # AugmentSettings, as a dict
    top_k: int | None                    # None: every logit, fp32 (the exact cache)
    fields: tuple[str, ...]              # teacher outputs stored besides the logits
    num_classes: int

    @property
    def kind(self) -> str:
        return "cache" if self.top_k is None else "topk-cache"

    def fingerprint(self) -> dict[str, Any]:
        return {"teacher_weights": self.teacher, "teacher_model": self.teacher_model,
                "data": self.data,
                "preprocessing": self.preprocessing, "augmentation": self.augmentation,
                "top_k": self.top_k, "fields": list(self.fields),
                "num_classes": self.num_classes,
                "dtypes": ({"logits": "float32", "features": "float32"} if self.top_k is None
                           else {"values": "float16",
                                 "indices": _index_dtype(self.num_classes).name,
                                 "fill": "float32", "features": "float16"}),
                "vldistill_version": __version__, "format": FORMAT}


def _index_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.int16 if num_classes <= np.iinfo(np.int16).max else np.int32)


def logit_record(top_k: int, num_classes: int) -> np.dtype:
    """One row of stored logits: read with a single gather."""
    k = min(top_k, num_classes)
    return np.dtype([("values", np.float16, (k,)), ("indices", _index_dtype(num_classes), (k,)),
                     ("fill", np.float32)])


def rebuild_command(recipe_hint: str) -> str:
    return f"`vldistill cache build {recipe_hint}`"


# --- building -----------------------------------------------------------------------------


def _teacher_fields(output: ModelOutput, fields: Sequence[str]) -> dict[str, torch.Tensor]:

    stored = {}
    for name in fields:
        value = select_feature(output, name)
        if value.shape[0] != output.logits.shape[0]:
            raise CacheError(
                f"the teacher's feature {name!r} has shape {tuple(value.shape)}: one row per "
                f"image, not per question ({output.logits.shape[0]} questions). The cache stores "
                "per-question outputs; distil this feature online (teacher.mode: online).")
        if name in TOKEN_FIELDS:
            raise CacheError(
                f"the teacher's output {name!r} has shape {tuple(value.shape)}: vocabulary "
                "logits per answer token of a generative model. The cache stores per-question "
                "vectors, not these; distil them online (teacher.mode: online).")
        stored[name] = value.flatten(1)
    return stored


def build_cache(directory: Path, teacher: nn.Module, datasets: Sequence[Any],
                collate: Callable, spec: CacheSpec, augment: AugmentSettings, *,
                batch_images: int = 64, shard_items: int = 4096,
                progress: Callable[[int, int], None] | None = None,
                rank: int = 0, world: int = 1) -> dict[str, Any]:
    """Run ``teacher`` over every view of every item of ``datasets`` and store its outputs.

    Resumes an interrupted build of the same fingerprint (finished shards are kept); a folder
    holding another fingerprint is rebuilt from scratch. With ``world`` > 1 each rank computes
    its share of the shards (vldistill.kd.store). Returns the final manifest.
    """
    items = [(d, i) for d in datasets for i in range(len(d))]
    views = max(1, augment.views)
    parameters = np.stack([[view_parameters(augment, item, view) for item in range(len(items))]
                           for view in range(views)]).astype(np.float32)    # (K, items, 4)
    questions = sum(len(d.groups[i]) for d, i in items)
    # work units: blocks of at most shard_items items of one view
    units = [{"view": view, "first_item": start, "items": min(shard_items, len(items) - start)}
             for view in range(views) for start in range(0, len(items), shard_items)]
    teacher.eval()

    def compute(unit: Mapping[str, Any]) -> dict[str, np.ndarray]:
        first, last = unit["first_item"], unit["first_item"] + unit["items"]
        return _run_block(teacher, items[first:last], parameters[unit["view"], first:last],
                          collate, spec, batch_images)

    return build_store(Path(directory), spec.fingerprint(), units, compute,
                       header={"views": views, "items": len(items), "questions": questions,
                               "rows": views * questions},
                       extra_files={"views": parameters}, rank=rank, world=world,
                       progress=progress)


def _encode_logits(logits: torch.Tensor, spec: CacheSpec) -> np.ndarray:
    if spec.top_k is None:                                          # every logit, exact
        return logits.float().cpu().numpy()
    values, indices, fill = compress_logits(logits, spec.top_k)
    record = np.empty(len(values), dtype=logit_record(spec.top_k, spec.num_classes))
    record["values"] = values.cpu().numpy()
    record["indices"] = indices.cpu().numpy()
    record["fill"] = fill.cpu().numpy()
    return record


def _run_block(teacher: nn.Module, items: Sequence[tuple[Any, int]], parameters: np.ndarray,
               collate: Callable, spec: CacheSpec, batch_images: int) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    device = next((p.device for p in teacher.parameters()), torch.device("cpu"))
    feature_dtype = np.float32 if spec.top_k is None else np.float16
    with torch.no_grad():
        for start in range(0, len(items), batch_images):
            records = []
            for offset, (dataset, index) in enumerate(items[start:start + batch_images]):
                record = dict(dataset[index])
                record["image"] = apply_view(record["image"], parameters[start + offset])
                records.append(record)
            batch = collate(records)
            inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                      for k, v in batch.get("teacher_inputs", batch["inputs"]).items()}
            output = call_model(teacher, inputs)
            block = {"logits": _encode_logits(output.logits, spec)}
            for name, value in _teacher_fields(output, spec.fields).items():
                block[f"feature.{name}"] = value.cpu().numpy().astype(feature_dtype)
            for field, array in block.items():
                parts.setdefault(field, []).append(array)
    return {field: np.concatenate(arrays) for field, arrays in parts.items()}


# --- reading --------------------------------------------------------------------------------


_question_id = operator.attrgetter("question_id")


class CachedTeacher(nn.Module):
    """A teacher source that stands in for the teacher in a
    :class:`~vldistill.kd.DistillationStep`: returns the stored outputs for the questions (and
    views) of a batch instead of running a model. This one reads the exact cache (every logit
    and feature in fp32: the losses are the online ones to float rounding);
    :class:`TopKCachedTeacher` reads the compact top-k cache."""

    kind = "cache"

    def __init__(self, directory: Path, spec: CacheSpec, datasets: Sequence[Any], *,
                 rebuild_hint: str = "RECIPE", verify: bool = True) -> None:
        super().__init__()
        if spec.kind != self.kind:
            raise ValueError(f"{type(self).__name__} reads a {self.kind}, the spec describes a "
                             f"{spec.kind}; open it with vldistill.kd.cache.cached_teacher")
        directory = Path(directory)
        command = rebuild_command(rebuild_hint)
        manifest, self.fields = open_store(directory, spec.fingerprint(), command,
                                           verify=verify)
        self.directory, self.spec, self.manifest = directory, spec, manifest
        self.view_parameters = np.load(directory / "views.npy", allow_pickle=False)
        self.questions = int(manifest["questions"])
        ids = [s.question_id for d in datasets for group in d.groups for s in group]
        self.row_of = {question_id: row for row, question_id in enumerate(ids)}
        stored_rows = sum(int(shard["rows"]) for shard in manifest["shards"])
        if not (len(self.row_of) == len(ids) == self.questions
                and stored_rows == manifest["rows"] == manifest["views"] * self.questions
                and all(len(array) == shard["rows"] for array, shard in
                        zip(next(iter(self.fields.values())).arrays, manifest["shards"]))):
            raise CacheError(
                f"the teacher cache in {directory} does not line up with the training "
                f"questions ({stored_rows} stored rows, {manifest['rows']} in the manifest, "
                f"{manifest['views']} view(s) x {len(ids)} questions expected). Rebuild it with "
                f"{command}.")
        self.register_buffer("_device_marker", torch.zeros(0), persistent=False)

    def weights_fingerprint(self) -> str:
        return self.manifest["fingerprint"]["teacher_weights"]

    @property
    def bytes_per_row(self) -> float:
        total = sum(r["bytes"] for s in self.manifest["shards"] for r in s["files"].values())
        return total / max(1, self.manifest["rows"])

    def rows(self, batch: Mapping[str, Any]) -> np.ndarray:
        try:
            rows = np.array(list(map(self.row_of.__getitem__,
                                     map(_question_id, batch["meta"].samples))), dtype=np.int64)
        except KeyError as error:
            raise CacheError(f"question {error.args[0]!r} is not in the teacher cache in "
                             f"{self.directory}: the cache covers the training items only.") \
                from None
        views = batch.get("views")
        if views is not None:
            rows = rows + np.asarray(views.cpu(), dtype=np.int64) * self.questions
        return rows

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self._device_marker.device)

    def logits(self, rows: np.ndarray) -> torch.Tensor:
        return self._tensor(self.fields["logits"][rows])

    def teacher_outputs(self, batch: Mapping[str, Any]) -> ModelOutput:
        rows = self.rows(batch)
        stored = {name: self._tensor(self.fields[f"feature.{name}"][rows]).float()
                  for name in self.spec.fields}
        return ModelOutput(self.logits(rows), stored.pop("image_embeds", None),
                           stored.pop("text_embeds", None), stored)

    def forward(self, *args, **kwargs):
        raise TypeError("a cached teacher answers for a whole batch: DistillationStep calls "
                        "teacher_outputs(batch); it cannot run on model inputs alone.")


class TopKCachedTeacher(CachedTeacher):
    """The compact cache: per question the top-k logits (fp16), their indices and one fill
    logit for the rest (vldistill.kd.topk), features in fp16. Dense logits are rebuilt on read,
    so the logit losses are unchanged."""

    kind = "topk-cache"

    def logits(self, rows: np.ndarray) -> torch.Tensor:
        record = self.fields["logits"][rows]
        return expand_logits(self._tensor(record["values"]), self._tensor(record["indices"]),
                             self._tensor(record["fill"]), self.spec.num_classes)


def cached_teacher(directory: Path, spec: CacheSpec, datasets: Sequence[Any], *,
                   rebuild_hint: str = "RECIPE", verify: bool = True) -> CachedTeacher:
    """The teacher source reading the cache ``spec`` describes (exact or top-k)."""
    source = CachedTeacher if spec.top_k is None else TopKCachedTeacher
    return source(directory, spec, datasets, rebuild_hint=rebuild_hint, verify=verify)
