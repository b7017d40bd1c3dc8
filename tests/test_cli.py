"""The command line: validate, bad recipes, eval of a missing checkpoint, data export."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from vldistill.cli import app

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))
runner = CliRunner()


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_validate_every_shipped_recipe(path):
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "is valid" in result.output


def test_validate_reports_unknown_key_with_exit_code_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("student:\n  trian: {max_steps: 3}\n")
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    assert "student.trian: unknown key" in result.output
    assert "model, train" in result.output


def test_set_override_wrong_type(tmp_path):
    result = runner.invoke(app, ["validate", "--set", "seeds=abc"])
    assert result.exit_code == 2
    assert "seeds" in result.output and "'abc'" in result.output


def test_eval_missing_checkpoint_names_file(tmp_path):
    result = runner.invoke(app, ["eval", str(tmp_path / "missing.safetensors")])
    assert result.exit_code == 2
    assert "missing.safetensors does not exist" in result.output


def test_eval_rejects_non_safetensors_file(tmp_path):
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(b"\x80\x04 this is a pickle, not safetensors")
    result = runner.invoke(app, ["eval", str(fake)])
    assert result.exit_code == 2
    assert "not a readable safetensors file" in result.output


def test_data_export_reads_back_identically(tmp_path, tiny_recipe_path):
    """`vldistill data shapesworld --out DIR` writes the VQAv2 layout, and the VQAv2 reader
    returns exactly the generated samples and pixels."""
    import numpy as np

    from vldistill.config import load_recipe
    from vldistill.data.shapesworld import load_shapesworld
    from vldistill.data.vqa import read_vqa

    result = runner.invoke(app, ["data", "shapesworld", "--out", str(tmp_path),
                                 "--recipe", str(tiny_recipe_path)])
    assert result.exit_code == 0, result.output
    world = load_shapesworld(load_recipe(tiny_recipe_path).data.shapesworld)
    for split in ("train", "val"):
        samples, images = read_vqa(tmp_path / f"{split}_questions.json",
                                   tmp_path / f"{split}_annotations.json", tmp_path / "images",
                                   depth_root=tmp_path / "depth")
        expected = world.splits[split]
        assert samples == expected.samples
        for image_id in {s.image_id for s in samples}:
            assert np.array_equal(images.rgb(image_id), expected.images.rgb(image_id))
            depth = expected.images.depth(image_id)
            assert np.allclose(images.depth(image_id), np.round(depth.astype(np.float64) * 1000) / 1000,
                               atol=1e-5)
    assert (tmp_path / "facts.jsonl").read_text().count("\n") == len(world.facts)


def test_data_export_in_the_vizwiz_layout(tmp_path, tiny_recipe_path):
    from vldistill.data.vizwiz import read_vizwiz

    result = runner.invoke(app, ["data", "shapesworld", "--out", str(tmp_path),
                                 "--recipe", str(tiny_recipe_path), "--format", "vizwiz"])
    assert result.exit_code == 0, result.output
    samples, images = read_vizwiz(tmp_path / "annotations" / "val.json", tmp_path / "val")
    assert samples and images.rgb(samples[0].image_id).shape == (64, 64, 3)
    result = runner.invoke(app, ["data", "shapesworld", "--out", str(tmp_path),
                                 "--format", "csv"])
    assert result.exit_code == 2 and "expected one of vqa, vizwiz, rgbd" in result.output
