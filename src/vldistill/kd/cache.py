"""The teacher-output cache: run the teacher once, then distil at the student's own cost.

Layout of a cache folder::

    manifest.json                 fingerprint, field shapes and dtypes, shards with checksums
    views.npy                     (K, items, 4) augmentation parameters of every view (K >= 1)
    shard-00000.logits.npy ...    rows of one shard, one record each: top-k values (k,) fp16,
                                  their indices (k,) int16/32 and the fill logit of the other
                                  answers, fp32 (vldistill.kd.topk)
    shard-00000.feature.<name>.npy   (R, D) fp16, one per feature the losses read

A row is one question seen through one view. Rows are view-major: ``row = view * questions +
question_row``, questions in the order of the training items (labelled set, then transfer set).
Shards are memory-mapped on read, so each process (each DDP rank) reads only the pages of its own
samples.

Safety: every file is written to a temporary name, fsynced and renamed; the manifest is
rewritten after each finished shard, so an interrupted build resumes at the first missing shard.
A cache is opened only when its fingerprint equals what this recipe would build (teacher
weights, preprocessing, data ids and content, augmentation, k, fields, dtypes, vldistill
version) and every file has its recorded size and SHA-256; otherwise :class:`CacheError` says
which field differs or which file is damaged, and the command that rebuilds it.

Logits are stored as top-k plus one fill value for the rest (:mod:`vldistill.kd.topk`),
so the unchanged logit losses read dense logits rebuilt from them.
"""

from __future__ import annotations

import hashlib
import json
import operator
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vldistill.core.errors import VldistillError
from vldistill.core.fileio import atomic_write, atomic_write_text, sha256_file
from vldistill.core.hashing import nested_differences
from vldistill.core.versions import __version__
from vldistill.data.augment import AugmentSettings, apply_view, view_parameters
from vldistill.kd.feature_losses import select_feature
from vldistill.kd.token_losses import FIELDS as TOKEN_FIELDS
from vldistill.kd.topk import compress_logits, expand_logits
from vldistill.models.outputs import ModelOutput, call_model

FORMAT = 1


class CacheError(VldistillError, ValueError):
    """A teacher cache is missing, stale (fingerprint differs) or damaged."""


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
    top_k: int
    fields: tuple[str, ...]              # teacher outputs stored besides the logits
    num_classes: int

    def fingerprint(self) -> dict[str, Any]:
        return {"teacher_weights": self.teacher, "teacher_model": self.teacher_model,
                "data": self.data,
                "preprocessing": self.preprocessing, "augmentation": self.augmentation,
                "top_k": self.top_k, "fields": list(self.fields),
                "num_classes": self.num_classes,
                "dtypes": {"values": "float16", "indices": _index_dtype(self.num_classes).name,
                           "fill": "float32", "features": "float16"},
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
                progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Run ``teacher`` over every view of every item of ``datasets`` and store its outputs.

    Resumes an interrupted build of the same fingerprint (finished shards are kept); a folder
    holding another fingerprint is rebuilt from scratch. Returns the final manifest.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fingerprint = spec.fingerprint()
    items = [(d, i) for d in datasets for i in range(len(d))]
    views = max(1, augment.views)
    parameters = np.stack([[view_parameters(augment, item, view) for item in range(len(items))]
                           for view in range(views)]).astype(np.float32)    # (K, items, 4)
    questions = sum(len(d.groups[i]) for d, i in items)
    # work units: (view, first item, last item) blocks of at most shard_items items
    units = [(view, start, min(start + shard_items, len(items)))
             for view in range(views) for start in range(0, len(items), shard_items)]
    manifest = _resumable_manifest(directory, fingerprint, units)
    if manifest is None:
        for stale in directory.glob("shard-*.npy"):
            stale.unlink()
        manifest = {"format": FORMAT, "fingerprint": fingerprint, "complete": False,
                    "views": views, "items": len(items), "questions": questions,
                    "rows": views * questions, "shards": [], "build_time_s": 0.0}
        _save_array(directory / "views.npy", parameters)
        manifest["views_file"] = _file_record(directory / "views.npy")
        _write_manifest(directory, manifest)
    start_time = time.perf_counter()
    teacher.eval()
    for number, (view, first, last) in enumerate(units):
        if number < len(manifest["shards"]):
            continue                                            # finished before
        arrays = _run_block(teacher, items[first:last], parameters[view, first:last], collate,
                            spec, batch_images)
        files = {}
        for field, array in arrays.items():
            path = directory / f"shard-{number:05d}.{field}.npy"
            _save_array(path, array)
            files[field] = _file_record(path)
        manifest["shards"].append({"view": view, "first_item": first, "items": last - first,
                                   "rows": int(arrays["logits"].shape[0]), "files": files})
        manifest["build_time_s"] += time.perf_counter() - start_time
        start_time = time.perf_counter()
        _write_manifest(directory, manifest)
        if progress is not None:
            progress(number + 1, len(units))
    manifest["complete"] = True
    _write_manifest(directory, manifest)
    return manifest


def _run_block(teacher: nn.Module, items: Sequence[tuple[Any, int]], parameters: np.ndarray,
               collate: Callable, spec: CacheSpec, batch_images: int) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    device = next((p.device for p in teacher.parameters()), torch.device("cpu"))
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
            values, indices, fill = compress_logits(output.logits, spec.top_k)
            record = np.empty(len(values), dtype=logit_record(spec.top_k, spec.num_classes))
            record["values"] = values.cpu().numpy()
            record["indices"] = indices.cpu().numpy()
            record["fill"] = fill.cpu().numpy()
            block = {"logits": record}
            for name, value in _teacher_fields(output, spec.fields).items():
                block[f"feature.{name}"] = value.cpu().numpy().astype(np.float16)
            for field, array in block.items():
                parts.setdefault(field, []).append(array)
    return {field: np.concatenate(arrays) for field, arrays in parts.items()}


def _save_array(path: Path, array: np.ndarray) -> None:
    def write(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
    atomic_write(path, write, expected_bytes=array.nbytes)


def _file_record(path: Path) -> dict[str, Any]:
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _write_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    atomic_write_text(directory / "manifest.json", json.dumps(manifest, indent=1) + "\n")


def _read_manifest(directory: Path) -> dict[str, Any] | None:
    path = directory / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise CacheError(f"teacher cache manifest {path} is not valid JSON ({error}); the "
                         "cache is damaged.") from None
    if not isinstance(manifest, dict) or "fingerprint" not in manifest:
        raise CacheError(f"{path} is not a vldistill teacher-cache manifest (no fingerprint).")
    return manifest


def _resumable_manifest(directory: Path, fingerprint: Mapping[str, Any],
                        units: Sequence[tuple[int, int, int]]) -> dict | None:
    """The manifest of an unfinished (or finished) build of the same fingerprint, cut to its
    leading shards that are intact and cover the same work units as this build (the shard size
    may have changed), else None (build from scratch)."""
    try:
        manifest = _read_manifest(directory)
    except CacheError:
        return None
    if manifest is None or manifest["fingerprint"] != fingerprint:
        return None
    intact = []
    for shard, (view, first, last) in zip(manifest["shards"], units):
        same_unit = (shard["view"], shard["first_item"], shard["items"]) == (view, first,
                                                                             last - first)
        if not same_unit or not all(_file_ok(directory, record)
                                    for record in shard["files"].values()):
            break
        intact.append(shard)
    if not _file_ok(directory, manifest.get("views_file", {})):
        return None
    manifest["shards"], manifest["complete"] = intact, False
    return manifest


def _file_ok(directory: Path, record: Mapping[str, Any]) -> bool:
    path = directory / record.get("name", "")
    return (path.is_file() and path.stat().st_size == record.get("bytes")
            and sha256_file(path) == record.get("sha256"))


# --- reading --------------------------------------------------------------------------------


_question_id = operator.attrgetter("question_id")


class _Rows:
    """One stored field across shards, gathered by global row index (memory-mapped)."""

    def __init__(self, arrays: Sequence[np.ndarray]) -> None:
        self.arrays = list(arrays)
        self.starts = np.cumsum([0] + [len(a) for a in self.arrays])

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) and (rows.min() < 0 or rows.max() >= self.starts[-1]):
            raise IndexError(f"cache rows {rows.min()}..{rows.max()} outside 0..{self.starts[-1]}")
        if len(self.arrays) == 1:
            return self.arrays[0][rows]
        shard = np.searchsorted(self.starts, rows, side="right") - 1
        first = self.arrays[0]
        out = np.empty((len(rows), *first.shape[1:]), dtype=first.dtype)
        for number, array in enumerate(self.arrays):
            where = np.flatnonzero(shard == number)
            if len(where):
                out[where] = array[rows[where] - self.starts[number]]
        return out


class CachedTeacher(nn.Module):
    """Stands in for the teacher in a :class:`~vldistill.kd.DistillationStep`: returns the
    stored outputs for the questions (and views) of a batch instead of running a model."""

    def __init__(self, directory: Path, spec: CacheSpec, datasets: Sequence[Any], *,
                 rebuild_hint: str = "RECIPE", verify: bool = True) -> None:
        super().__init__()
        directory = Path(directory)
        command = rebuild_command(rebuild_hint)
        manifest = _read_manifest(directory)
        if manifest is None:
            raise CacheError(f"no teacher cache in {directory} (manifest.json is missing). "
                             f"Build it with {command}.")
        if not manifest.get("complete"):
            raise CacheError(f"the teacher cache in {directory} is incomplete (its build was "
                             f"interrupted after {len(manifest['shards'])} shards). Finish it "
                             f"with {command}; the build resumes where it stopped.")
        differences = nested_differences(manifest["fingerprint"], spec.fingerprint())
        if differences:
            hint = ""
            if "teacher_weights" in differences:
                hint = (" The teacher's weights changed: a teacher trained again (on a GPU, "
                        "training is not bit-reproducible) needs a new cache. To keep one "
                        "teacher, continue the run with --resume or set teacher.checkpoint.")
            raise CacheError(
                f"the teacher cache in {directory} was built for other settings; these "
                f"fields differ from this recipe's: {', '.join(differences)}. Using it would "
                f"distil stale teacher outputs.{hint} Rebuild it with {command}.")
        records = [manifest["views_file"]] + [r for s in manifest["shards"]
                                              for r in s["files"].values()]
        for record in records:
            path = directory / record["name"]
            if not path.is_file():
                raise CacheError(f"teacher cache file {path} is missing. Rebuild the cache "
                                 f"with {command}.")
            size = path.stat().st_size
            if size != record["bytes"]:
                raise CacheError(f"teacher cache file {path} is truncated or padded ({size} "
                                 f"bytes, the manifest says {record['bytes']}). Rebuild the "
                                 f"cache with {command}.")
            if verify and sha256_file(path) != record["sha256"]:
                raise CacheError(f"teacher cache file {path} fails its SHA-256 checksum (the "
                                 f"file is damaged). Rebuild the cache with {command}.")
        self.directory, self.spec, self.manifest = directory, spec, manifest
        self.view_parameters = np.load(directory / "views.npy", allow_pickle=False)
        fields = manifest["shards"][0]["files"].keys() if manifest["shards"] else []
        self.fields = {field: _Rows([np.load(directory / s["files"][field]["name"],
                                             mmap_mode="r", allow_pickle=False)
                                     for s in manifest["shards"]]) for field in fields}
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

    def teacher_outputs(self, batch: Mapping[str, Any]) -> ModelOutput:
        rows = self.rows(batch)
        device = self._device_marker.device
        record = self.fields["logits"][rows]

        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array)).to(device)

        logits = expand_logits(tensor(record["values"]), tensor(record["indices"]),
                               tensor(record["fill"]), self.spec.num_classes)
        stored = {name: tensor(self.fields[f"feature.{name}"][rows]).float()
                  for name in self.spec.fields}
        return ModelOutput(logits, stored.pop("image_embeds", None),
                           stored.pop("text_embeds", None), stored)

    def forward(self, *args, **kwargs):
        raise TypeError("a CachedTeacher answers for a whole batch: DistillationStep calls "
                        "teacher_outputs(batch); it cannot run on model inputs alone.")
