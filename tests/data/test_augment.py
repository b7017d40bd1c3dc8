"""Replayable views: deterministic parameters, exact replay, view 0 untouched."""

import numpy as np
import pytest
import torch

from vldistill.data.augment import AugmentSettings, ViewDataset, apply_view, view_parameters


def test_parameters_are_a_pure_function_of_seed_item_and_view():
    settings = AugmentSettings(views=3, seed=7)
    a = view_parameters(settings, 5, 2)
    assert np.array_equal(a, view_parameters(AugmentSettings(views=3, seed=7), 5, 2))
    assert not np.array_equal(a, view_parameters(settings, 6, 2))
    assert not np.array_equal(a, view_parameters(AugmentSettings(views=3, seed=8), 5, 2))
    assert view_parameters(settings, 5, 0).tolist() == [0, 0, 0, 1]
    dx, dy, brightness, contrast = a
    assert abs(dx) <= 4 and abs(dy) <= 4 and abs(brightness) <= 0.1 and abs(contrast - 1) <= 0.1


def test_shift_by_hand():
    image = torch.arange(16, dtype=torch.uint8).reshape(1, 4, 4).repeat(3, 1, 1)
    shifted = apply_view(image, np.array([1, 0, 0, 1], dtype=np.float32))
    # content moves one pixel right; the left column repeats the edge
    assert shifted[0].tolist() == [[0, 0, 1, 2], [4, 4, 5, 6], [8, 8, 9, 10], [12, 12, 13, 14]]
    down = apply_view(image, np.array([0, -1, 0, 1], dtype=np.float32))
    assert down[0].tolist()[-1] == [12, 13, 14, 15] and down[0].tolist()[0] == [4, 5, 6, 7]


def test_brightness_and_contrast_by_hand():
    image = torch.tensor([[[100, 200]]], dtype=torch.uint8).repeat(3, 1, 1)
    out = apply_view(image, np.array([0, 0, 0.1, 2.0], dtype=np.float32))
    # mean 150; (100-150)*2+150+25.5 = 75.5 -> 76 (round half to even gives 76); 275.5 -> 255
    assert out[0, 0].tolist() == [76, 255]


class Items(torch.utils.data.Dataset):
    def __init__(self, count):
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (count, 3, 8, 8), generator=generator,
                                    dtype=torch.uint8)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return {"image": self.images[index], "index": index}


def test_view_dataset_replays_views_and_stored_parameters():
    settings = AugmentSettings(views=3, seed=1)
    items = Items(4)
    views = ViewDataset(items, settings, offset=10)
    assert len(views) == 12
    record = views[2 * 3 + 1]                                  # item 2, view 1
    assert record["view"] == 1 and record["index"] == 2
    expected = apply_view(items[2]["image"], view_parameters(settings, 12, 1))
    assert torch.equal(record["image"], expected)
    assert torch.equal(views[2 * 3]["image"], items[2]["image"])  # view 0 is the image
    stored = np.zeros((3, 14, 4), dtype=np.float32)
    stored[..., 3] = 1
    stored[1, 12] = [2, 0, 0, 1]
    replayed = ViewDataset(items, settings, offset=10, parameters=stored)[2 * 3 + 1]["image"]
    assert torch.equal(replayed, apply_view(items[2]["image"], stored[1, 12]))


def test_views_must_be_positive_for_a_view_dataset():
    with pytest.raises(ValueError, match="views >= 1"):
        ViewDataset(Items(1), AugmentSettings(views=0))
