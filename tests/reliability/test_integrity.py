"""Integrity: every flipped byte and every truncation of a checkpoint is detected and refused
with a message naming the file, never loaded as if it were whole."""

from __future__ import annotations

import pytest
import torch

from vldistill.core.errors import DataError, VldistillError
from vldistill.models.checkpoint import load_checkpoint, save_model


@pytest.fixture()
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    path = tmp_path / "model.safetensors"
    save_model(path, model, "tiny", {"width": 4}, {"num_answers": 2}, {"role": "student"})
    return path


def test_an_intact_checkpoint_loads(checkpoint) -> None:
    loaded = load_checkpoint(checkpoint)
    assert loaded.model_name == "tiny" and loaded.extra == {"role": "student"}


def test_every_single_bit_flip_is_detected(checkpoint) -> None:
    original = checkpoint.read_bytes()
    undetected = []
    for position in range(len(original)):
        for bit in (0x01, 0x80):
            damaged = bytearray(original)
            damaged[position] ^= bit
            checkpoint.write_bytes(bytes(damaged))
            try:
                load_checkpoint(checkpoint)
            except VldistillError as error:
                assert str(checkpoint) in str(error)
            else:
                undetected.append((position, bit))
    assert undetected == [], f"{len(undetected)} of {2 * len(original)} flips loaded silently"


def test_every_truncation_is_detected(checkpoint) -> None:
    original = checkpoint.read_bytes()
    for length in range(len(original)):
        checkpoint.write_bytes(original[:length])
        with pytest.raises(DataError, match=str(checkpoint)):
            load_checkpoint(checkpoint)
