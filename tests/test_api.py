"""The Python API: `vldistill.distill(...)` on a plain classifier and on the built-in VQA."""

import numpy as np
import pytest
import torch
from PIL import Image

import vldistill


class Oracle(torch.nn.Module):
    """A hand-built teacher: class 1 when the left half is brighter than the right half."""

    def forward(self, images):
        images = images.float()
        difference = images[..., :4].mean(dim=(1, 2, 3)) - images[..., 4:].mean(dim=(1, 2, 3))
        return torch.stack([-difference, difference], dim=-1) * 20.0


def halves(count, seed):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 1, 8, 8, generator=generator)
    labels = (images[..., :4].mean(dim=(1, 2, 3)) > images[..., 4:].mean(dim=(1, 2, 3))).long()
    return images, labels


def student():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))


def test_distill_plain_classifier_from_tensors_with_transfer_set(tmp_path):
    train, val = halves(16, 0), halves(400, 1)
    transfer = halves(2000, 2)[0]                        # unlabelled images
    result = vldistill.distill(teacher=Oracle(), student=student(), train=train, val=val,
                               transfer=transfer, max_steps=150, batch_size=32, lr=0.05,
                               trainer={"progress_bar": False}, output_dir=tmp_path)
    assert result.teacher_metrics["accuracy"] == pytest.approx(100.0)
    assert result.metrics["accuracy"] > 70.0             # chance is 50
    assert result.steps == 150
    # the same student with only the 16 labels and no transfer set learns less
    alone = vldistill.distill(teacher=Oracle(), student=student(), train=train, val=val,
                              kd_weight=0.0, task_weight=1.0, max_steps=150, batch_size=32,
                              lr=0.05, trainer={"progress_bar": False}, output_dir=tmp_path)
    print(result.metrics, alone.metrics)
    assert result.metrics["accuracy"] > alone.metrics["accuracy"] + 5


def test_distill_from_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for label, name in enumerate(("a_dark", "b_bright")):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(6):
            value = 40 + 160 * label + rng.integers(0, 30)
            Image.fromarray(np.full((10, 10, 3), value, np.uint8)).save(
                tmp_path / "data" / name / f"{i}.png")

    class Brightness(torch.nn.Module):
        def forward(self, images):
            mean = images.float().mean(dim=(1, 2, 3)) / 255.0 - 0.5
            return torch.stack([-mean, mean], dim=-1) * 10

    torch.manual_seed(0)
    small = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    result = vldistill.distill(teacher=Brightness(), student=_Scaled(small),
                               train=tmp_path / "data", val=tmp_path / "data", image_size=8,
                               max_steps=40, batch_size=4, lr=0.05,
                               trainer={"progress_bar": False}, output_dir=tmp_path / "run")
    assert result.teacher_metrics["accuracy"] == 100.0
    assert result.metrics["accuracy"] == 100.0


class _Scaled(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, images):
        return self.inner(images.float() / 255.0)


def test_distill_rejects_unknown_data_type():
    with pytest.raises(TypeError, match="cannot use dict as data"):
        vldistill.distill(teacher=Oracle(), student=student(), train={"x": 1})


def test_image_folder_errors_name_the_problem(tmp_path):
    from vldistill.core.errors import DataError, MissingFileError
    from vldistill.data.classification import image_folder

    with pytest.raises(MissingFileError, match="does not exist"):
        image_folder(tmp_path / "nope")
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.png could not be read as an image"):
        image_folder(tmp_path)


def test_api_bad_inputs_get_clear_errors():
    from vldistill.core.errors import DataError, RecipeError

    images, labels = halves(8, 0)
    with pytest.raises(RecipeError, match="trainer.device: unknown key.*devices"):
        vldistill.distill(teacher=Oracle(), student=student(), train=(images, labels),
                          trainer={"device": 2})
    with pytest.raises(DataError, match="differ in shape"):
        vldistill.distill(teacher=Oracle(), student=student(), train=(images, labels),
                          transfer=torch.rand(4, 1, 6, 6))


def test_api_accepts_labels_as_a_list(tmp_path):
    images, labels = halves(8, 0)
    result = vldistill.distill(teacher=Oracle(), student=student(),
                               train=(images, labels.tolist()), val=(images, labels),
                               max_steps=2, batch_size=4, trainer={"progress_bar": False},
                               output_dir=tmp_path)
    assert result.steps == 2
