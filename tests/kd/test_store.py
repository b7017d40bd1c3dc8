"""Sharded stores built by several ranks, and the exact row cache of an embedding teacher."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from vldistill.core.hashing import tensor_fingerprint
from vldistill.kd.sources import RowCache, row_cache, row_fingerprint
from vldistill.kd.store import StoreError, build_store

FINGERPRINT = {"teacher_weights": "t", "data": "d"}
UNITS = [{"first": first, "count": 10} for first in range(0, 50, 10)]


def compute_for(calls: list, rank: int):
    def compute(unit):
        calls.append((rank, unit["first"]))
        rows = np.arange(unit["first"], unit["first"] + unit["count"], dtype=np.float32)
        return {"a": rows[:, None] * np.ones((1, 3), np.float32), "b": rows.astype(np.int64)}
    return compute


def build_with_ranks(directory, world, calls, **kwargs):
    """Every rank in its own thread (the ranks only share the folder, as processes do)."""
    results, errors = {}, {}

    def run(rank):
        try:
            results[rank] = build_store(directory, FINGERPRINT, UNITS, compute_for(calls, rank),
                                        header={"rows": 50}, rank=rank, world=world,
                                        poll_s=0.01, **kwargs)
        except Exception as error:                              # noqa: BLE001 (re-raised)
            errors[rank] = error

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(world)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results, errors


def test_two_ranks_share_the_units_and_rank_zero_writes_the_manifest(tmp_path):
    calls = []
    results, errors = build_with_ranks(tmp_path / "two", 2, calls)
    assert not errors
    assert sorted(calls) == [(0, 0), (0, 20), (0, 40), (1, 10), (1, 30)]   # unit i -> i % 2
    manifest = results[0]
    assert results[1]["fingerprint"] == manifest["fingerprint"] and manifest["complete"]
    assert [s["rank"] for s in manifest["shards"]] == [0, 1, 0, 1, 0]
    assert not list((tmp_path / "two").glob("part-*.json"))
    single, _ = build_with_ranks(tmp_path / "one", 1, [])
    # the same bytes, whoever wrote them
    assert [s["files"] for s in manifest["shards"]] == [s["files"] for s in single[0]["shards"]]


def test_rank_zero_refuses_a_shard_that_fails_its_checksum(tmp_path):
    calls = []
    waiting = threading.Thread(target=lambda: build_with_ranks_one(tmp_path, calls))
    waiting.start()
    part = tmp_path / "part-1.json"
    for _ in range(2000):
        if part.is_file() and len(json.loads(part.read_text())["shards"]) == 2:
            break
        threading.Event().wait(0.01)
    (tmp_path / "shard-00001.a.npy").write_bytes(b"damaged")
    with pytest.raises(StoreError, match=r"shards \[1\] .* fail their size or SHA-256 check"):
        build_store(tmp_path, FINGERPRINT, UNITS, compute_for(calls, 0), rank=0, world=2,
                    poll_s=0.01)
    waiting.join(timeout=10)


def build_with_ranks_one(directory, calls):
    with pytest.raises(StoreError, match="gave up after"):
        build_store(directory, FINGERPRINT, UNITS, compute_for(calls, 1), rank=1, world=2,
                    timeout_s=1.0, poll_s=0.01)


def test_a_build_resumes_with_another_number_of_ranks(tmp_path):
    calls = []
    # rank 1 of two finished its units (1 and 3), then the job was stopped before rank 0 ran
    with pytest.raises(StoreError, match="gave up"):
        build_store(tmp_path, FINGERPRINT, UNITS, compute_for(calls, 1), rank=1, world=2,
                    timeout_s=0.05, poll_s=0.01)
    calls.clear()
    manifest = build_store(tmp_path, FINGERPRINT, UNITS, compute_for(calls, 0))
    assert calls == [(0, 0), (0, 20), (0, 40)]                 # only what was missing
    assert manifest["complete"] and [s["rank"] for s in manifest["shards"]] == [0, 1, 0, 1, 0]


class Encoder:
    def __init__(self, vectors):
        self.vectors, self.calls = vectors, []

    def __call__(self, first, last):
        self.calls.append((first, last))
        return self.vectors[first:last]


def test_the_row_cache_is_exact_reused_and_rebuilt_when_stale(tmp_path):
    vectors = torch.randn(23, 5, generator=torch.Generator().manual_seed(0))
    encode = Encoder(vectors)
    fingerprint = row_fingerprint("weights", tensor_fingerprint(vectors), "image_embeds")
    cache = row_cache(tmp_path, fingerprint, 23, encode, command="again", shard_rows=10)
    assert encode.calls == [(0, 10), (10, 20), (20, 23)]
    assert isinstance(cache, RowCache) and cache.kind == "cache" and len(cache) == 23
    assert cache.weights_fingerprint() == "weights" and cache.dim == 5
    rows = torch.tensor([22, 0, 11, 11])
    out = cache.teacher_outputs({"rows": rows})
    assert torch.equal(out.image_embeds, vectors[rows]) and out.logits.shape == (4, 0)
    assert torch.equal(cache.all(), vectors)
    row_cache(tmp_path, fingerprint, 23, encode, command="again", shard_rows=10)
    assert len(encode.calls) == 3                              # opened, not encoded again
    other = Encoder(vectors * 2)
    changed = row_fingerprint("other weights", tensor_fingerprint(vectors), "image_embeds")
    cache = row_cache(tmp_path, changed, 23, other, command="again", shard_rows=10)
    assert len(other.calls) == 3 and torch.equal(cache.all(), vectors * 2)
    with pytest.raises(StoreError, match="differ from this recipe's: teacher_weights.*again"):
        RowCache(tmp_path, fingerprint, "again")


def test_data_fingerprints_see_every_byte_and_every_text():
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    changed = images.clone()
    changed[1, 2, 3, 3] = 1
    assert tensor_fingerprint(images) != tensor_fingerprint(changed)
    assert tensor_fingerprint(images) != tensor_fingerprint(images.float())
    assert tensor_fingerprint(["ab", "c"]) != tensor_fingerprint(["a", "bc"])


def test_a_rank_that_disagrees_with_rank_zero_is_told_so(tmp_path):
    """Rank 1 holds another teacher than rank 0: instead of waiting forever for a manifest of
    its own fingerprint, it stops naming the differing field."""
    other = {"teacher_weights": "rank one's", "data": "d"}
    errors = []

    def rank_one():
        try:
            build_store(tmp_path, other, UNITS[:1], compute_for([], 1), rank=1, world=2,
                        timeout_s=30, poll_s=0.01)
        except StoreError as error:
            errors.append(str(error))

    waiting = threading.Thread(target=rank_one)
    waiting.start()
    build_store(tmp_path, FINGERPRINT, UNITS[:1], compute_for([], 0), rank=0, world=2,
                poll_s=0.01)
    waiting.join(timeout=30)
    assert errors and "differ at teacher_weights" in errors[0]
