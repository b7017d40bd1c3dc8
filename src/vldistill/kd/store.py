"""Sharded array stores: the files under every teacher-output cache, and their build by one
process or by every rank of a distributed run.

A store is a folder::

    manifest.json                   fingerprint, shards (unit, rows, files with size + SHA-256)
    shard-00000.<field>.npy ...     one file per field per shard, memory-mapped on read
    part-<rank>.json                only while several ranks build: each rank's finished shards

The work is cut into *units* (JSON-able descriptors, e.g. ``{"view": 0, "first_item": 0,
"items": 4096}``), one shard each. With ``world`` processes, rank ``r`` computes the units
``i`` with ``i % world == r`` and records them in its ``part-<r>.json``. Rank 0 then waits
until the parts cover every unit, checks every shard file's size and SHA-256, and writes the
complete manifest; the other ranks wait for it. A single process records its progress in the
manifest itself. Either way an interrupted build resumes: a unit whose shard files are intact
and cover the same descriptor (from the manifest or any part of the same fingerprint) is not
computed again, whatever the number of ranks was then.

Written by hand: no maintained library builds a checksummed, resumable, multi-writer set of
memory-mappable arrays (zarr and safetensors write one file per writer and know no fingerprint
or resumption).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vldistill.core.errors import VldistillError
from vldistill.core.fileio import atomic_write, atomic_write_text, sha256_file
from vldistill.core.hashing import nested_differences

FORMAT = 1
# a rank's progress file; parts of a finished build are removed once the manifest is complete
PART = "part-{rank}.json"


class StoreError(VldistillError, ValueError):
    """A store is missing, stale (fingerprint differs), damaged or was never completed."""


def save_array(path: Path, array: np.ndarray) -> None:
    def write(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
    atomic_write(path, write, expected_bytes=array.nbytes)


def file_record(path: Path) -> dict[str, Any]:
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def file_ok(directory: Path, record: Mapping[str, Any]) -> bool:
    path = directory / record.get("name", "")
    return (path.is_file() and path.stat().st_size == record.get("bytes")
            and sha256_file(path) == record.get("sha256"))


def write_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    atomic_write_text(directory / "manifest.json", json.dumps(manifest, indent=1) + "\n")


def read_manifest(directory: Path, what: str = "teacher-cache") -> dict[str, Any] | None:
    path = Path(directory) / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise StoreError(f"{what} manifest {path} is not valid JSON ({error}); the "
                         f"{what} is damaged.") from None
    if not isinstance(manifest, dict) or "fingerprint" not in manifest:
        raise StoreError(f"{path} is not a vldistill {what} manifest (no fingerprint).")
    return manifest


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None                                  # not written yet, or being replaced
    return value if isinstance(value, dict) else None


def _descriptor(shard: Mapping[str, Any], unit: Mapping[str, Any]) -> bool:
    return all(shard.get(key) == value for key, value in unit.items())


def finished_shards(directory: Path, fingerprint: Mapping[str, Any],
                    units: Sequence[Mapping[str, Any]], *, check: bool = True
                    ) -> dict[int, dict[str, Any]]:
    """Shards of this fingerprint already on disk, by unit number: from the manifest and from
    every rank's part file, kept when they cover the same unit and (``check``) their files are
    intact."""
    found: dict[int, dict[str, Any]] = {}
    try:
        manifest = read_manifest(directory)
    except StoreError:
        manifest = None
    if manifest is not None and manifest["fingerprint"] == fingerprint:
        found.update(enumerate(manifest.get("shards", [])))
    for part in sorted(Path(directory).glob(PART.format(rank="*"))):
        content = _read_json(part)
        if content is not None and content.get("fingerprint") == fingerprint:
            found.update({int(number): shard for number, shard in content["shards"].items()})
    return {number: shard for number, shard in found.items()
            if number < len(units) and _descriptor(shard, units[number])
            and (not check or all(file_ok(directory, r) for r in shard["files"].values()))}


def build_store(directory: Path, fingerprint: Mapping[str, Any],
                units: Sequence[Mapping[str, Any]],
                compute: Callable[[Mapping[str, Any]], Mapping[str, np.ndarray]], *,
                header: Mapping[str, Any] | None = None,
                extra_files: Mapping[str, np.ndarray] | None = None,
                rank: int = 0, world: int = 1,
                progress: Callable[[int, int], None] | None = None,
                timeout_s: float = 24 * 3600.0, poll_s: float = 1.0) -> dict[str, Any]:
    """Compute this rank's share of ``units`` (``compute(unit) -> {field: array}``, every
    field with the same number of rows), write the shards, and return the complete manifest.

    ``header`` goes into the manifest as it is; ``extra_files`` are arrays rank 0 writes beside
    the shards, recorded in the manifest as ``<name>_file``. A folder holding another
    fingerprint is cleared first (by rank 0; a single process only, so ranks never race)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fingerprint = dict(fingerprint)
    done = finished_shards(directory, fingerprint, units)
    if world == 1 and not done:
        for stale in [*directory.glob("shard-*.npy"), *directory.glob(PART.format(rank="*"))]:
            stale.unlink()
    manifest = {"format": FORMAT, "fingerprint": fingerprint, "complete": False,
                **(header or {}), "shards": [], "build_time_s": 0.0, "ranks": world}
    mine = [number for number in range(len(units)) if number % world == rank]
    start = time.perf_counter()
    for count, number in enumerate(mine, 1):
        if number not in done:
            arrays = compute(units[number])
            rows = {len(array) for array in arrays.values()}
            if len(rows) != 1:
                raise StoreError(f"unit {number} of {directory} produced fields of different "
                                 f"lengths ({ {k: len(v) for k, v in arrays.items()} }).")
            files = {}
            for field, array in arrays.items():
                path = directory / f"shard-{number:05d}.{field}.npy"
                save_array(path, array)
                files[field] = file_record(path)
            done[number] = {**units[number], "rows": rows.pop(), "files": files, "rank": rank,
                            "build_time_s": time.perf_counter() - start}
            start = time.perf_counter()
            _record_progress(directory, manifest, done, mine, rank, world)
        if progress is not None:
            progress(count, len(mine))
    if rank != 0:
        return wait_for_manifest(directory, fingerprint, timeout_s, poll_s)
    if world > 1:
        done = _gather_parts(directory, fingerprint, units, done, timeout_s, poll_s)
    manifest["shards"] = [done[number] for number in range(len(units))]
    manifest["build_time_s"] = sum(s.get("build_time_s", 0.0) for s in manifest["shards"])
    for name, array in (extra_files or {}).items():
        path = directory / f"{name}.npy"
        save_array(path, array)
        manifest[f"{name}_file"] = file_record(path)
    manifest["complete"] = True
    write_manifest(directory, manifest)
    for part in directory.glob(PART.format(rank="*")):
        part.unlink(missing_ok=True)
    return manifest


def _record_progress(directory: Path, manifest: dict[str, Any], done: Mapping[int, Any],
                     mine: Sequence[int], rank: int, world: int) -> None:
    """One process: the manifest lists the leading finished shards. Several: the rank's part."""
    if world == 1:
        leading = []
        for number in mine:
            if number not in done:
                break
            leading.append(done[number])
        write_manifest(directory, {**manifest, "shards": leading})
        return
    part = {"fingerprint": manifest["fingerprint"], "rank": rank, "world": world,
            "shards": {str(n): done[n] for n in mine if n in done}}
    atomic_write_text(directory / PART.format(rank=rank), json.dumps(part, indent=1) + "\n")


def _gather_parts(directory: Path, fingerprint: Mapping[str, Any],
                  units: Sequence[Mapping[str, Any]], done: dict[int, Any], timeout_s: float,
                  poll_s: float) -> dict[int, Any]:
    """Rank 0: wait until the ranks' parts cover every unit, each shard checksummed."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = {**finished_shards(directory, fingerprint, units, check=False), **done}
        missing = [n for n in range(len(units)) if n not in found]
        if not missing:
            break
        if time.monotonic() > deadline:
            raise StoreError(f"gave up after {timeout_s:.0f} s waiting for the other ranks' "
                             f"shards in {directory}: units {missing[:10]} never arrived.")
        time.sleep(poll_s)
    # this rank's own shards were hashed as they were written (or checked when resumed)
    damaged = [n for n, shard in found.items() if n not in done
               and not all(file_ok(directory, r) for r in shard["files"].values())]
    if damaged:
        raise StoreError(f"shards {damaged[:10]} in {directory} fail their size or SHA-256 "
                         "check after the ranks finished (a shared file system that lost "
                         "writes?). Run the build again; intact shards are kept.")
    return found


def wait_for_manifest(directory: Path, fingerprint: Mapping[str, Any] | None = None,
                      timeout_s: float = 24 * 3600.0, poll_s: float = 1.0) -> dict[str, Any]:
    """Wait for rank 0's complete manifest (of ``fingerprint``, when given). A manifest of
    another fingerprint completed while this rank waits means the ranks disagree about what
    is cached (another teacher on rank 0): refused, naming the fields."""
    path = Path(directory) / "manifest.json"
    started = time.time()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        manifest = _read_json(path)
        if manifest is not None and manifest.get("complete"):
            if fingerprint is None or manifest.get("fingerprint") == fingerprint:
                return manifest
            if path.stat().st_mtime >= started:
                differences = nested_differences(manifest.get("fingerprint"), dict(fingerprint))
                raise StoreError(
                    f"rank 0 completed {path} for other settings than this rank's (they differ "
                    f"at {', '.join(differences)}): the ranks disagree about the teacher or "
                    "the data. Every rank must hold the same teacher weights and data.")
        time.sleep(poll_s)
    raise StoreError(f"gave up after {timeout_s:.0f} s waiting for rank 0 to complete "
                     f"{path}.")


def check_files(directory: Path, records: Sequence[Mapping[str, Any]], command: str,
                verify: bool = True, what: str = "teacher cache") -> None:
    """Every recorded file is there with its size (and SHA-256 with ``verify``)."""
    for record in records:
        path = directory / record["name"]
        if not path.is_file():
            raise StoreError(f"{what} file {path} is missing. Rebuild the {what} with "
                             f"{command}.")
        size = path.stat().st_size
        if size != record["bytes"]:
            raise StoreError(f"{what} file {path} is truncated or padded ({size} bytes, the "
                             f"manifest says {record['bytes']}). Rebuild the {what} with "
                             f"{command}.")
        if verify and sha256_file(path) != record["sha256"]:
            raise StoreError(f"{what} file {path} fails its SHA-256 checksum (the file is "
                             f"damaged). Rebuild the {what} with {command}.")


class Rows:
    """One stored field across shards, gathered by global row index (memory-mapped)."""

    def __init__(self, arrays: Sequence[np.ndarray]) -> None:
        self.arrays = list(arrays)
        self.starts = np.cumsum([0] + [len(a) for a in self.arrays])

    def __len__(self) -> int:
        return int(self.starts[-1])

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

    def all(self) -> np.ndarray:
        return np.concatenate([np.asarray(a) for a in self.arrays]) if len(self.arrays) != 1 \
            else np.asarray(self.arrays[0])


def open_fields(directory: Path, manifest: Mapping[str, Any]) -> dict[str, Rows]:
    """Every field of a complete store, memory-mapped."""
    shards = manifest["shards"]
    fields = shards[0]["files"].keys() if shards else []
    return {field: Rows([np.load(directory / s["files"][field]["name"], mmap_mode="r",
                                 allow_pickle=False) for s in shards]) for field in fields}


def open_store(directory: Path, fingerprint: Mapping[str, Any], command: str, *,
               verify: bool = True) -> tuple[dict[str, Any], dict[str, Rows]]:
    """The manifest and memory-mapped fields of a complete store of ``fingerprint``; refused,
    naming the fix (``command`` rebuilds it), when it is missing, unfinished, built for other
    settings (the differing fingerprint fields are named) or damaged."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        raise StoreError(f"no teacher cache in {directory} (manifest.json is missing). "
                         f"Build it with {command}.")
    if not manifest.get("complete"):
        raise StoreError(f"the teacher cache in {directory} is incomplete (its build was "
                         f"interrupted after {len(manifest['shards'])} shards). Finish it "
                         f"with {command}; the build resumes where it stopped.")
    differences = nested_differences(manifest["fingerprint"], dict(fingerprint))
    if differences:
        hint = ""
        if "teacher_weights" in differences:
            hint = (" The teacher's weights changed: a teacher trained again (on a GPU, "
                    "training is not bit-reproducible) needs a new cache. To keep one "
                    "teacher, continue the run with --resume or set its checkpoint.")
        raise StoreError(
            f"the teacher cache in {directory} was built for other settings; these "
            f"fields differ from this recipe's: {', '.join(differences)}. Using it would "
            f"distil stale teacher outputs.{hint} Rebuild it with {command}.")
    records = [value for key, value in manifest.items() if key.endswith("_file")]
    check_files(directory, records + [r for s in manifest["shards"] for r in s["files"].values()],
                command, verify)
    return manifest, open_fields(directory, manifest)
