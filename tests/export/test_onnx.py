"""ONNX export of a ViLT student: parity with PyTorch, int8, refusal above the tolerance."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from vldistill.export.onnx import ExportableVilt, ExportError, export_onnx  # noqa: E402
from vldistill.export.runtime import encode_fixed  # noqa: E402
from vldistill.models.hf_vilt import ViltVQA  # noqa: E402


@pytest.fixture(scope="module")
def vilt(tmp_path_factory, make_tiny_vilt):
    folder = make_tiny_vilt(tmp_path_factory.mktemp("vilt"))
    return ViltVQA.from_pretrained(folder).eval()


def test_the_rewritten_embedding_equals_hugging_face(vilt):
    images = [np.random.default_rng(i).integers(0, 256, (50, 40, 3), np.uint8) for i in range(3)]
    encoded = encode_fixed(vilt.processor, images, ["what is the colour", "how many", "yes"],
                           32, vilt.max_text_length)
    tensors = {k: torch.from_numpy(v) for k, v in encoded.items()}
    with torch.no_grad():
        reference = vilt.model(**tensors, pixel_mask=torch.ones(3, 32, 32, dtype=torch.long))
        mine = ExportableVilt(vilt, 32)(**tensors)
    assert torch.allclose(mine, reference.logits, atol=1e-6)


def test_export_matches_pytorch_and_writes_its_manifest(vilt, tmp_path):
    import onnxruntime

    report = export_onnx(vilt, tmp_path, int8=True)
    assert report.fp32_max_abs_diff < 1e-4
    assert report.int8_max_abs_diff is not None and report.int8_max_abs_diff < 0.25
    manifest = json.loads((tmp_path / "vldistill-export.json").read_text())
    assert manifest["answers"] == vilt.answers and manifest["image_size"] == 32
    assert (tmp_path / "processor" / "tokenizer.json").is_file()
    # dynamic batch and text length: other shapes than the export's
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    encoded = encode_fixed(vilt.processor, [np.zeros((20, 20, 3), np.uint8)],
                           ["what is the colour of the red circle"], 32, vilt.max_text_length)
    logits = session.run(["logits"], encoded)[0]
    with torch.no_grad():
        expected = ExportableVilt(vilt, 32)(**{k: torch.from_numpy(v)
                                               for k, v in encoded.items()}).numpy()
    assert logits.shape == (1, len(vilt.answers))
    assert np.abs(logits - expected).max() < 1e-4


def test_drift_beyond_the_tolerance_fails_with_the_numbers(vilt, tmp_path):
    with pytest.raises(ExportError, match=r"differ from PyTorch's by up to .* \(tolerance 0\)"):
        export_onnx(vilt, tmp_path, tolerance=0.0)


def test_only_vilt_students_export(tmp_path):
    with pytest.raises(ExportError, match="implemented for ViLT students"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path)


def test_cli_exports_a_checkpoint(vilt, tmp_path):
    from typer.testing import CliRunner

    from vldistill.cli import app
    from vldistill.models.checkpoint import save_model

    folder = tmp_path / "folder"
    vilt.save_pretrained(folder)
    checkpoint = tmp_path / "student.safetensors"
    save_model(checkpoint, vilt, "vilt", {"path": str(folder)},
               {"num_answers": len(vilt.answers), "vocab_size": 0},
               {"answer_vocab": vilt.answers})
    result = CliRunner().invoke(app, ["export", str(checkpoint), "--int8"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "student-onnx" / "model.int8.onnx").is_file()
    assert "fp32 ONNX vs PyTorch: max |logit difference|" in result.output


def test_predict_with_the_export_loads_no_model_code(vilt, tmp_path):
    """`vldistill predict --model EXPORT` in a fresh process: the answer equals PyTorch's, and
    neither the ViLT model classes nor vldistill's model code are imported."""
    import subprocess
    import sys

    from PIL import Image

    export_onnx(vilt, tmp_path / "export", int8=True)
    image = np.random.default_rng(3).integers(0, 256, (40, 30, 3), np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.png")
    script = (
        "import sys\n"
        "from vldistill.cli import app\n"
        "try:\n"
        f"    app(['predict', '--model', r'{tmp_path / 'export'}', '--image',"
        f" r'{tmp_path / 'photo.png'}', '--question', 'what is the colour'],"
        " standalone_mode=False)\n"
        "finally:\n"
        "    loaded = [m for m in sys.modules if m.startswith(('vldistill.models',"
        " 'transformers.models.vilt.modeling_vilt', 'vldistill.train', 'lightning'))]\n"
        "    print('LOADED', loaded)\n")
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert output.returncode == 0, output.stderr
    assert "LOADED []" in output.stdout
    encoded = encode_fixed(vilt.processor, [image], ["what is the colour"], 32,
                           vilt.max_text_length)
    with torch.no_grad():
        logits = ExportableVilt(vilt, 32)(**{k: torch.from_numpy(v) for k, v in encoded.items()})
    expected = vilt.answers[int(logits.argmax())]
    assert f"answer: {expected}" in output.stdout


def test_predict_names_an_undecodable_image(vilt, tmp_path):
    from vldistill.core.errors import DataError
    from vldistill.export.runtime import predict_export

    export_onnx(vilt, tmp_path / "export")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.jpg"):
        predict_export(tmp_path / "export", bad, "what")


@pytest.mark.filterwarnings("ignore:.*longer than this ViLT's text limit")
@pytest.mark.filterwarnings("ignore:.*answer head is new")
@pytest.mark.slow
def test_bench_latency_over_checkpoints_and_exports(tmp_path, tiny_recipe_path, make_tiny_vilt):
    """A ViLT teacher and the built-in student from the main job, the teacher exported to ONNX
    fp32 and int8: every model answers the same questions in its own process, scored by the
    recipe's metric (VizWiz accuracy here), which the checkpoints and the export remember."""
    from typer.testing import CliRunner

    from vldistill.bench import bench_latency, latency_table
    from vldistill.cli import app
    from vldistill.config import load_recipe
    from vldistill.jobs.vqa_kd.run import run_recipe

    folder = make_tiny_vilt(tmp_path / "vilt", answers=["x"])
    recipe = load_recipe(tiny_recipe_path, [
        f"output_dir={tmp_path}", "name=b", "distill.baseline=false", "eval.metric=vizwiz",
        f"teacher.model={{name: vilt, params: {{path: {folder}}}}}",
        "teacher.train.max_steps=2", "teacher.train.val_every_n_steps=2"])
    run_recipe(recipe)
    checkpoints = tmp_path / "b" / "checkpoints"
    result = CliRunner().invoke(app, ["export", str(checkpoints / "teacher-last.safetensors"),
                                      "--int8", "--out", str(tmp_path / "export")])
    assert result.exit_code == 0, result.output
    rows = bench_latency([f"teacher={checkpoints / 'teacher-last.safetensors'}",
                          f"student={checkpoints / 'student-kd-seed0-last.safetensors'}",
                          f"teacher onnx={tmp_path / 'export'}",
                          f"teacher int8={tmp_path / 'export'}:int8"],
                         threads=1, repeats=10, questions=12)
    assert [r.kind for r in rows] == ["PyTorch fp32", "PyTorch fp32", "ONNX fp32", "ONNX int8"]
    for row in rows:
        assert 0 < row.p50_ms <= row.p95_ms
        assert row.peak_rss_mib > 50 and 0 <= row.accuracy <= 100 and row.questions == 12
    assert {r.metric for r in rows} == {"vizwiz"}
    assert "| teacher int8 | ONNX int8 |" in latency_table(rows)
    assert "VizWiz acc. %" in latency_table(rows)
    # the fp32 export answers as its checkpoint does: the same accuracy on the same questions
    assert rows[2].accuracy == pytest.approx(rows[0].accuracy)


def test_the_export_sees_the_pixels_the_pytorch_model_sees(vilt, tmp_path):
    """A raw, non-square photo: the export squares it to the training data's size and lets
    the processor resize, exactly as training did; its logits equal the PyTorch model's."""
    from PIL import Image

    from vldistill.export.runtime import OnnxVQA

    export_onnx(vilt, tmp_path, metadata={"data": {"source": "vqa", "image_size": 40}})
    photo = np.random.default_rng(5).integers(0, 256, (50, 37, 3), np.uint8)
    as_trained = np.array(Image.fromarray(photo).resize((40, 40), Image.Resampling.BILINEAR))
    with torch.no_grad():
        expected = vilt(images=torch.from_numpy(as_trained).permute(2, 0, 1)[None],
                        image_index=torch.tensor([0]), questions=["what is the colour"])
    logits = OnnxVQA(tmp_path).logits([photo], ["what is the colour"])
    assert np.abs(logits - expected.logits.numpy()).max() < 1e-4


def test_a_new_export_removes_the_old_int8_model(vilt, tmp_path):
    export_onnx(vilt, tmp_path, int8=True)
    export_onnx(vilt, tmp_path)
    assert not (tmp_path / "model.int8.onnx").exists()


def test_a_damaged_export_is_refused_with_the_fix(vilt, tmp_path):
    from vldistill.core.errors import DataError
    from vldistill.export.runtime import OnnxVQA

    export_onnx(vilt, tmp_path)
    manifest = json.loads((tmp_path / "vldistill-export.json").read_text())
    assert manifest["checksums"]["model.onnx"]["bytes"] == (tmp_path / "model.onnx").stat().st_size
    OnnxVQA(tmp_path)                                   # intact: loads
    model = tmp_path / "model.onnx"
    original = model.read_bytes()
    for damaged in (original[: len(original) // 2],
                    original[:100] + bytes([original[100] ^ 1]) + original[101:]):
        model.write_bytes(damaged)
        with pytest.raises(DataError, match=r"model.onnx is damaged.*vldistill export"):
            OnnxVQA(tmp_path)
