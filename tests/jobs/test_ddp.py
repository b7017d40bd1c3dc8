"""Scale-out for every job that trains through the engine: `vldistill run` with
``trainer.devices: 2, strategy: ddp`` on CPU (gloo), as users launch it across GPUs. The VQA
distillation job's own DDP test is in tests/jobs/vqa_kd/test_vqa_kd_run.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.jobs.classification.test_classification import TINY as CLASSIFICATION_TINY
from tests.jobs.kbvqa.test_kbvqa_job import TINY as KBVQA_TINY
from tests.jobs.kv_prefix.test_kv_prefix_run import TINY as KV_PREFIX_TINY

ROOT = Path(__file__).parents[2]
# the KV-prefix job's tiny run, with two of its variants
KV_PREFIX = [*KV_PREFIX_TINY, "kv_prefix.variants=[{name: frozen, prefix: false}, {name: prefix}]"]
OPEN_VOCAB = ["data.shapesworld.train_images=200", "data.shapesworld.val_images=40",
              "data.labelled_images=40", "teacher.widths=[8]", "teacher.train.max_steps=4",
              "teacher.train.batch_size=16", "student.widths=[4]", "student.train.max_steps=4",
              "student.train.batch_size=16", "eval.latency_repeats=2"]


def run_ddp(recipe: str, overrides: list[str], out: Path) -> dict:
    """`vldistill run` with 2 DDP processes into ``out``; the results, after checking that one
    run folder and one report (rank 0's) came out."""
    command = [sys.executable, "-m", "vldistill", "run", str(ROOT / "recipes" / recipe),
               *[a for o in [*overrides, "trainer.devices=2", "trainer.strategy=ddp",
                             "trainer.progress_bar=false", f"output_dir={out}",
                             "name=ddp"] for a in ("--set", o)]]
    done = subprocess.run(command, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "ddp" / "results.json").read_text())
    assert results["world_size"] == 2
    assert done.stdout.count("main job wall time") == 1       # one report, from rank 0
    assert [p.name for p in out.iterdir()] == ["ddp"]
    return results


@pytest.mark.parametrize("recipe, overrides", [("kv_prefix.yaml", KV_PREFIX),
                                               ("open_vocab.yaml", OPEN_VOCAB)],
                         ids=["kv_prefix", "open_vocab"])
def test_two_ddp_processes_run_the_job_and_rank_zero_alone_reports(recipe, overrides,
                                                                   tmp_path):
    run_ddp(recipe, overrides, tmp_path)


def test_two_ddp_processes_classify_and_share_the_teacher_cache(tmp_path):
    """The classification job on 2 processes: the teacher's outputs over 240 training images
    are cached in shards of 64 images, rank 0 computing shards 0 and 2, rank 1 shards 1 and
    3; the KD student reads them on both ranks."""
    results = run_ddp("classification.yaml", [*CLASSIFICATION_TINY, "eval.batch_size=64",
                                              "teacher.cache.shard_items=64"], tmp_path)
    assert results["teacher_source"] == "cache"
    assert all(0 <= row["accuracy"]["mean"] <= 100 for row in results["rows"])
    manifest = json.loads((tmp_path / "ddp" / "teacher-cache" / "manifest.json").read_text())
    assert [shard["rank"] for shard in manifest["shards"]] == [0, 1, 0, 1]


def test_two_ddp_processes_train_every_kbvqa_model(tmp_path):
    """DPR training of a (tiny, local) encoder, its distillation into a smaller one, and the
    readers with token-level KD from the large one, all on 2 processes."""
    from vldistill.jobs.kbvqa.retriever import small_encoder

    small_encoder(hidden=32, layers=1, seed=3).save_pretrained(tmp_path / "encoder")
    results = run_ddp("kbvqa.yaml", [
        *KBVQA_TINY, f"retriever.encoder={tmp_path / 'encoder'}", "retriever.kind=trained",
        "retriever.compare=[trained, distilled]", "retriever.train={max_steps: 4}",
        "retriever.distil={student_hidden: 16, student_layers: 1, "
        "train: {max_steps: 4, batch_size: 16}}"], tmp_path / "out")
    assert set(results["retrieval"]) == {"trained", "distilled"}
    for row in results["retrieval"].values():
        assert 0 <= row["R@1"] <= row["R@5"] <= row["R@10"] <= 100
    assert set(results["readers"]) == {"base", "large", "base distilled"}
    assert all(0 <= m["EM"] <= 100 and m["steps"] == 6 for m in results["readers"].values())


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_torchrun_nodes_finish_with_one_run_folder(tmp_path, tiny_recipe_path):
    """The multi-node launch users run under SLURM or by hand: two `torchrun` launches, one per
    "node", meeting at a local rendezvous; Lightning picks up torchrun's environment."""
    port = free_port()
    overrides = ["seeds=[0]", "trainer.num_nodes=2", "trainer.devices=1",
                 "trainer.strategy=ddp", "trainer.progress_bar=false",
                 f"output_dir={tmp_path}", "name=nodes"]
    torchrun = str(Path(sys.executable).with_name("torchrun"))

    def launch(node: int) -> subprocess.Popen:
        command = [torchrun, "--nnodes=2", "--nproc-per-node=1", f"--node-rank={node}",
                   "--master-addr=127.0.0.1", f"--master-port={port}",
                   "-m", "vldistill", "run", str(tiny_recipe_path),
                   *[a for o in overrides for a in ("--set", o)]]
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))

    nodes = [launch(0), launch(1)]
    outputs = [node.communicate(timeout=900)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["nodes"]
    results = json.loads((tmp_path / "nodes" / "results.json").read_text())
    assert results["world_size"] == 2
    assert sum(output.count("main job wall time") for output in outputs) == 1
