"""Resource limits: a write that would not fit is refused before anything is written, and a
disk that fills up mid-write leaves the previous file intact and no partial file behind."""

from __future__ import annotations

import errno
import shutil
from collections import namedtuple

import pytest
import torch

from vldistill.core.errors import DiskSpaceError
from vldistill.core.fileio import atomic_write
from vldistill.models.checkpoint import load_checkpoint, save_model

Usage = namedtuple("Usage", "total used free")


def test_a_checkpoint_that_would_not_fit_is_refused_and_nothing_is_written(tmp_path,
                                                                           monkeypatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9, 10_000))
    with pytest.raises(DiskSpaceError, match=r"not enough disk space for writing .*model"):
        save_model(tmp_path / "model.safetensors", torch.nn.Linear(4, 4), "x", {}, {}, {})
    assert list(tmp_path.iterdir()) == []


def test_a_disk_that_fills_up_mid_write_keeps_the_previous_file(tmp_path) -> None:
    target = tmp_path / "model.safetensors"
    save_model(target, torch.nn.Linear(4, 4), "x", {}, {}, {})
    before = target.read_bytes()

    def fill_up(temporary):
        temporary.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(DiskSpaceError, match="disk filled up while writing"):
        atomic_write(target, fill_up)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    load_checkpoint(target)


def test_the_run_stops_with_the_message_when_checkpoints_do_not_fit(tmp_path, monkeypatch,
                                                                     tiny_recipe_path) -> None:
    from vldistill.config import load_recipe
    from vldistill.jobs.vqa_kd.run import run_recipe

    recipe = load_recipe(tiny_recipe_path, [f"output_dir={tmp_path}", "name=r"])
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9, 1_000_000))
    with pytest.raises(DiskSpaceError, match="not enough disk space"):
        run_recipe(recipe)
    leftovers = [p for p in (tmp_path / "r").rglob("*.tmp")]
    assert leftovers == []
