"""The teacher-output cache: round trip, refusal of stale and damaged caches, resumed builds,
replayed views, and the same losses as online distillation."""

import dataclasses
import json

import numpy as np
import pytest
import torch

import vldistill.kd.cache as cache_module
from vldistill.config import load_recipe
from vldistill.core.hashing import module_fingerprint
from vldistill.core.runpaths import RunPaths
from vldistill.data.augment import AugmentSettings, ViewDataset
from vldistill.jobs.vqa_kd.cache import cache_spec, stored_fields
from vldistill.jobs.vqa_kd.data import prepare_data
from vldistill.jobs.vqa_kd.workspace import VQAWorkspace
from vldistill.kd import DistillationStep, KDLoss, WeightedTerm
from vldistill.kd.cache import CacheError, CacheSpec, build_cache, cached_teacher
from vldistill.kd.feature_losses import ContrastiveLoss
from vldistill.models import build_model
from vldistill.models.outputs import call_model


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    from pathlib import Path

    recipe = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "tiny.yaml",
                         ["distill.terms=[{loss: kd, temperature: 1.0}, {loss: contrastive},"
                          " {loss: vqa_bce}]", "teacher.mode=topk_cache"])
    run_dir = tmp_path_factory.mktemp("run")
    return VQAWorkspace(recipe, prepare_data(recipe.data, 0), RunPaths(run_dir))


@pytest.fixture(scope="module")
def teacher(job):
    torch.manual_seed(0)
    return build_model("vqa_attention", {"width": 8}, **job.sizes).eval()


def spec_for(job, model, **changes) -> CacheSpec:
    return dataclasses.replace(cache_spec(job, model), **changes)


def build(directory, job, teacher, spec, views=0, **kwargs):
    return build_cache(directory, teacher, job.base_student_datasets(), job.collate, spec,
                       AugmentSettings(views=views, seed=3), batch_images=16, **kwargs)


def batch_of(datasets, collate, indices):
    from torch.utils.data import ConcatDataset

    full = ConcatDataset(datasets)
    return collate([full[i] for i in indices])


def test_stored_fields_follow_the_recipe(job):
    assert stored_fields(job.recipe) == ("image_embeds",)
    assert cache_spec(job, build_model("vqa_attention", {"width": 8}, **job.sizes)).fields == \
        ("image_embeds",)


def test_round_trip_matches_the_teacher(tmp_path, job, teacher):
    spec = spec_for(job, teacher, top_k=1000)                   # every class: exact up to fp16
    manifest = build(tmp_path, job, teacher, spec, shard_items=50)
    assert manifest["complete"] and len(manifest["shards"]) == 3     # 120 items / 50
    cached = cached_teacher(tmp_path, spec, job.base_student_datasets())
    batch = batch_of(job.base_student_datasets(), job.collate, [0, 7, 60, 119])
    online = call_model(teacher, batch["inputs"])
    stored = cached.teacher_outputs(batch)
    assert torch.allclose(stored.logits, online.logits, atol=2e-2, rtol=1e-3)
    assert torch.allclose(stored.image_embeds, online.image_embeds, atol=2e-3, rtol=1e-3)
    assert cached.bytes_per_row > 0


def test_the_same_losses_from_the_cache_as_online(tmp_path, job, teacher):
    spec = spec_for(job, teacher, top_k=1000)
    build(tmp_path, job, teacher, spec)
    cached = cached_teacher(tmp_path, spec, job.base_student_datasets())
    student = build_model("vqa_attention", {"width": 4, "word_dim": 4, "mlp_dim": 8},
                          **job.sizes)
    terms = [WeightedTerm("kd", 1.0, KDLoss(1.0)), WeightedTerm("c", 1.0, ContrastiveLoss())]
    batch = batch_of(job.base_student_datasets(), job.collate, [1, 2, 30, 100])
    online_step = DistillationStep(student, terms, teacher=teacher)
    online_step.materialize(batch)
    cached_step = DistillationStep(student, terms, teacher=cached)
    online, from_cache = online_step(batch), cached_step(batch)
    for name in ("kd", "c", "loss"):
        assert from_cache[name].item() == pytest.approx(online[name].item(), rel=2e-3), name


def test_replayed_views_are_the_pixels_the_teacher_saw(tmp_path, job, teacher):
    spec = spec_for(job, teacher, top_k=1000,
                    augmentation=AugmentSettings(views=3, seed=3).model_dump())
    manifest = build(tmp_path, job, teacher, spec, views=3, shard_items=64)
    assert manifest["rows"] == 3 * manifest["questions"]
    cached = cached_teacher(tmp_path, spec, job.base_student_datasets())
    augment = AugmentSettings(views=3, seed=3)
    labelled = ViewDataset(job.labelled, augment, 0, cached.view_parameters)
    transfer = ViewDataset(job.transfer, augment, len(job.labelled), cached.view_parameters)
    # items 5 (labelled, view 2) and 40 (transfer, view 1)
    batch = batch_of([labelled, transfer], job.collate, [5 * 3 + 2, len(labelled) + 40 * 3 + 1])
    assert batch["views"].unique().tolist() == [1, 2]
    online = call_model(teacher, batch["inputs"])
    assert torch.allclose(cached.teacher_outputs(batch).logits, online.logits, atol=2e-2)
    # a different view of the same item is a different row with different outputs
    other = batch_of([labelled, transfer], job.collate, [5 * 3 + 0, len(labelled) + 40 * 3 + 1])
    assert not torch.allclose(cached.teacher_outputs(other).logits,
                              cached.teacher_outputs(batch).logits)


@pytest.mark.parametrize("change, field", [
    ({"teacher": "0" * 64}, "teacher_weights"),
    ({"data": "1" * 64}, "data"),
    ({"preprocessing": {"image_size": 32}}, "preprocessing.image_size"),
    ({"augmentation": {"views": 2}}, "augmentation.views"),
    ({"top_k": 5}, "top_k"),
    ({"fields": ("fused",)}, "fields"),
    ({"num_classes": 1000}, "num_classes"),
    ({"teacher_model": {"name": "vqa_attention", "params": {"width": 9}}},
     "teacher_model.params"),
])
def test_a_stale_cache_is_refused_naming_the_field(tmp_path, job, teacher, change, field):
    spec = spec_for(job, teacher)
    build(tmp_path, job, teacher, spec)
    with pytest.raises(CacheError, match=rf"fields differ from this recipe's: .*{field}.*"
                                         r"Rebuild it with `vldistill cache build RECIPE`"):
        cached_teacher(tmp_path, spec_for(job, teacher, **change), job.base_student_datasets())


def test_another_vldistill_version_is_refused(tmp_path, job, teacher, monkeypatch):
    spec = spec_for(job, teacher)
    build(tmp_path, job, teacher, spec)
    monkeypatch.setattr(cache_module, "__version__", "9.9.9")
    with pytest.raises(CacheError, match="vldistill_version"):
        cached_teacher(tmp_path, spec, job.base_student_datasets())


def test_fingerprints_see_weights_and_pixels(job, teacher):
    changed = build_model("vqa_attention", {"width": 8}, **job.sizes)
    changed.load_state_dict(teacher.state_dict())
    assert module_fingerprint(changed) == module_fingerprint(teacher)
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1e-6
    assert module_fingerprint(changed) != module_fingerprint(teacher)

    class Brighter:
        def __init__(self, store):
            self.store = store

        def rgb(self, image_id):
            image = np.array(self.store.rgb(image_id))
            image[0, 0, 0] ^= 1
            return image

    original = cache_module.data_fingerprint([job.labelled])
    dataset = job.dataset(job.data.labelled)
    dataset.images = Brighter(dataset.images)
    assert cache_module.data_fingerprint([dataset]) != original


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_damaged_shard_is_detected(tmp_path, job, teacher, damage):
    spec = spec_for(job, teacher)
    manifest = build(tmp_path, job, teacher, spec, shard_items=50)
    path = tmp_path / manifest["shards"][1]["files"]["logits"]["name"]
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        message = "fails its SHA-256 checksum"
    elif damage == "truncate":
        path.write_bytes(bytes(data[:-7]))
        message = "is truncated or padded"
    else:
        path.unlink()
        message = "is missing"
    with pytest.raises(CacheError, match=rf"{path.name} {message}.*vldistill cache build"):
        cached_teacher(tmp_path, spec, job.base_student_datasets())


def test_damaged_or_missing_manifest(tmp_path, job, teacher):
    spec = spec_for(job, teacher)
    with pytest.raises(CacheError, match="no teacher cache in .*manifest.json is missing"):
        cached_teacher(tmp_path, spec, job.base_student_datasets())
    (tmp_path / "manifest.json").write_text('{"fingerprint": ')
    with pytest.raises(CacheError, match="manifest .* is not valid JSON"):
        cached_teacher(tmp_path, spec, job.base_student_datasets())


class Stop(Exception):
    pass


class CountingTeacher(torch.nn.Module):
    def __init__(self, teacher):
        super().__init__()
        self.teacher, self.images = teacher, 0

    def forward(self, **inputs):
        self.images += len(inputs["images"])
        return self.teacher(**inputs)


def test_an_interrupted_build_resumes_where_it_stopped(tmp_path, job, teacher):
    spec = spec_for(job, teacher)
    whole = build(tmp_path / "whole", job, teacher, spec, shard_items=50)

    def stop_after_two(done, total):
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        build(tmp_path / "cut", job, teacher, spec, shard_items=50, progress=stop_after_two)
    partial = json.loads((tmp_path / "cut" / "manifest.json").read_text())
    assert not partial["complete"] and len(partial["shards"]) == 2
    with pytest.raises(CacheError, match="incomplete .* after 2 shards.*resumes where it stopped"):
        cached_teacher(tmp_path / "cut", spec, job.base_student_datasets())
    counting = CountingTeacher(teacher)
    resumed = build(tmp_path / "cut", job, counting, spec, shard_items=50)
    assert counting.images == 120 - 100                       # only the third shard ran
    assert [s["files"] for s in resumed["shards"]] == [s["files"] for s in whole["shards"]]
    cached_teacher(tmp_path / "cut", spec, job.base_student_datasets())


def test_a_shard_damaged_before_resuming_is_rebuilt(tmp_path, job, teacher):
    spec = spec_for(job, teacher)

    def stop_after_two(done, total):
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        build(tmp_path, job, teacher, spec, shard_items=50, progress=stop_after_two)
    (tmp_path / "shard-00001.logits.npy").write_bytes(b"garbage")
    counting = CountingTeacher(teacher)
    build(tmp_path, job, counting, spec, shard_items=50)
    assert counting.images == 120 - 50                        # shards 2 and 3 again
    cached_teacher(tmp_path, spec, job.base_student_datasets())


def test_a_question_outside_the_cache_is_named(tmp_path, job, teacher):
    spec = spec_for(job, teacher)
    build(tmp_path, job, teacher, spec)
    cached = cached_teacher(tmp_path, spec, job.base_student_datasets())
    val_batch = job.collate([job.val[0]])
    with pytest.raises(CacheError, match="is not in the teacher cache .* training items only"):
        cached.teacher_outputs(val_batch)


def test_per_image_features_are_refused_with_the_way_out(tmp_path, job, teacher):
    spec = spec_for(job, teacher, fields=("image_grid",))
    with pytest.raises(CacheError, match="'image_grid' .* one row per image.*teacher.mode: "
                                         "online"):
        build(tmp_path, job, teacher, spec)


def test_a_resumed_build_with_another_shard_size_still_lines_up(tmp_path, job, teacher):
    spec = spec_for(job, teacher, top_k=1000)

    def stop_after_one(done, total):
        if done == 1:
            raise Stop

    with pytest.raises(Stop):
        build(tmp_path, job, teacher, spec, shard_items=50, progress=stop_after_one)
    build(tmp_path, job, teacher, spec, shard_items=30)       # 4 shards of 30, not 50 + ...
    cached = cached_teacher(tmp_path, spec, job.base_student_datasets())
    assert [s["items"] for s in cached.manifest["shards"]] == [30, 30, 30, 30]
    batch = batch_of(job.base_student_datasets(), job.collate, [29, 30, 31, 119])
    assert torch.allclose(cached.teacher_outputs(batch).logits,
                          call_model(teacher, batch["inputs"]).logits, atol=2e-2)


def test_a_manifest_that_does_not_add_up_is_refused(tmp_path, job, teacher):
    spec = spec_for(job, teacher)
    build(tmp_path, job, teacher, spec, shard_items=50)
    path = tmp_path / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["shards"] = manifest["shards"][:2]               # a shard dropped from the record
    path.write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match="does not line up with the training questions"):
        cached_teacher(tmp_path, spec, job.base_student_datasets())


def test_changed_vocabularies_are_named(tmp_path, job, teacher):
    spec = spec_for(job, teacher)
    build(tmp_path, job, teacher, spec)
    changed = spec_for(job, teacher, preprocessing={**spec.preprocessing, "answer_vocab": "0",
                                                    "question_vocab": "1"})
    with pytest.raises(CacheError, match=r"differ from this recipe's: "
                                         r"preprocessing.answer_vocab, "
                                         r"preprocessing.question_vocab\."):
        cached_teacher(tmp_path, changed, job.base_student_datasets())


def test_answer_token_logits_are_refused_with_the_way_out():
    from vldistill.kd.cache import _teacher_fields
    from vldistill.models.outputs import ModelOutput

    output = ModelOutput(logits=torch.zeros(3, 4),
                         features={"answer_token_logits": torch.zeros(3, 2, 50)})
    with pytest.raises(CacheError, match=r"logits per answer token .*\(teacher.mode: online\)"):
        _teacher_fields(output, ["answer_token_logits"])


def test_the_exact_cache_gives_the_online_losses(tmp_path, job, teacher):
    """teacher.mode: cache stores every logit and feature in fp32: the losses are the online
    ones to float rounding, for any temperature (the top-k cache is within 2e-3 above)."""
    from vldistill.kd import DKDLoss
    from vldistill.kd.cache import CachedTeacher, TopKCachedTeacher

    spec = spec_for(job, teacher, top_k=None)
    assert spec.kind == "cache" and spec_for(job, teacher).kind == "topk-cache"
    build(tmp_path, job, teacher, spec, shard_items=50)
    cached = cached_teacher(tmp_path, spec, job.base_student_datasets())
    assert type(cached) is CachedTeacher and cached.kind == "cache"
    assert cached.weights_fingerprint() == module_fingerprint(teacher)
    student = build_model("vqa_attention", {"width": 4, "word_dim": 4, "mlp_dim": 8},
                          **job.sizes)
    terms = [WeightedTerm("kd", 1.0, KDLoss(4.0)), WeightedTerm("dkd", 1.0, DKDLoss()),
             WeightedTerm("c", 1.0, ContrastiveLoss())]
    batch = batch_of(job.base_student_datasets(), job.collate, [1, 2, 30, 51, 100])
    online_step = DistillationStep(student, terms, teacher=teacher)
    online_step.materialize(batch)
    online, from_cache = online_step(batch), DistillationStep(student, terms, cached)(batch)
    for name in ("kd", "dkd", "c", "loss"):
        assert from_cache[name].item() == pytest.approx(online[name].item(), rel=1e-5,
                                                        abs=1e-7), name
    with pytest.raises(ValueError, match="reads a cache, the spec describes a topk-cache"):
        CachedTeacher(tmp_path, spec_for(job, teacher), job.base_student_datasets())
    topk = spec_for(job, teacher, top_k=4)
    build(tmp_path / "topk", job, teacher, topk)
    assert type(cached_teacher(tmp_path / "topk", topk, job.base_student_datasets())) is \
        TopKCachedTeacher
    # the exact cache's rows are 4-byte logits; the top-k ones 2 + 2 bytes per kept logit
    assert cached.fields["logits"].arrays[0].dtype == np.float32
