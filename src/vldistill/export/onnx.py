"""ONNX (and int8) export of a ViLT student, checked against PyTorch with onnxruntime.

Hugging Face's ``ViltEmbeddings.visual_embed`` cannot be exported: it interpolates position
embeddings to a size read from ``pixel_mask`` and samples patches, both data-dependent, so the
dynamo and the legacy exporter both fail (``docs/notes/onnx-vilt.md``). The exported student has
a fixed image size S (the processor's size; images are resized to S x S) and a full pixel mask.
For that case ``visual_embed`` reduces to patch projection + position embeddings interpolated
once, at export time, + the image [CLS] token; :class:`ExportableVilt` computes exactly that and
hands it to the unchanged ViLT encoder as ``image_embeds``. The export is refused when
onnxruntime's logits differ from the PyTorch model's by more than the stated tolerance.

An export folder holds ``model.onnx`` (fp32), optionally ``model.int8.onnx`` (dynamic int8
quantisation by onnxruntime), ``processor/`` (the model's own tokenizer and image processor
settings) and ``vldistill-export.json`` (answers, image size, input names, measured parity).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vldistill.core.errors import VldistillError
from vldistill.core.fileio import atomic_write, atomic_write_text, file_record
from vldistill.data.images import data_image_size
from vldistill.export.runtime import INPUTS, MANIFEST, encode_fixed
from vldistill.models.hf_vilt import (
    ViltVQA,
    full_mask_image_embeds,
    image_positions,
    vilt_on_image_embeds,
)

_CHECK_QUESTIONS = ("what is this", "what colour is the object on the left",
                    "how many objects are there", "is there a red circle")


class ExportError(VldistillError, ValueError):
    """An export that cannot be made, or whose outputs drift beyond the tolerance."""


class ExportableVilt(nn.Module):
    """``ViltForQuestionAnswering`` logits for S x S images with a full pixel mask, written
    without the data-dependent steps of ``visual_embed`` (see the module docstring): the
    position embeddings are interpolated once, here."""

    def __init__(self, vilt_vqa, image_size: int) -> None:
        super().__init__()
        self.vilt, self.classifier = vilt_vqa.model.vilt, vilt_vqa.model.classifier
        config = self.vilt.embeddings.config
        if image_size % config.patch_size:
            raise ExportError(f"image size {image_size} is not a multiple of the patch size "
                              f"{config.patch_size}")
        side = image_size // config.patch_size
        with torch.no_grad():
            positions = image_positions(self.vilt.embeddings, side, side)
        self.register_buffer("positions", positions.detach().clone())      # (1, 1 + P, D)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                pixel_values: torch.Tensor) -> torch.Tensor:
        image = full_mask_image_embeds(self.vilt.embeddings, pixel_values, self.positions)
        out = vilt_on_image_embeds(self.vilt, image, input_ids=input_ids,
                                   attention_mask=attention_mask)
        return self.classifier(out.pooler_output)


@dataclass
class ExportReport:
    directory: Path
    image_size: int
    answers: list[str]
    fp32_max_abs_diff: float
    tolerance: float
    int8_max_abs_diff: float | None = None
    int8_top1_agreement: float | None = None
    files: list[str] = field(default_factory=list)


def processor_image_size(processor) -> int:
    size = getattr(processor.image_processor, "size", None) or {}
    value = size.get("shortest_edge") or size.get("height")
    if not value:
        raise ExportError(f"cannot read an image size from the processor's size {size!r}; "
                          "pass image_size")
    return int(value)


def export_onnx(model, out_dir: Path, *, int8: bool = False, tolerance: float = 1e-4,
                int8_tolerance: float = 0.25, image_size: int | None = None,
                check_images: list[np.ndarray] | None = None,
                check_questions: list[str] | None = None,
                metadata: dict[str, Any] | None = None) -> ExportReport:
    """Export a :class:`~vldistill.models.hf_vilt.ViltVQA` to ``out_dir`` and check it.

    The fp32 model must match PyTorch within ``tolerance`` (max absolute logit difference) on
    the check inputs, else :class:`ExportError`; the int8 model within ``int8_tolerance``.
    ``metadata`` (e.g. the training data settings) is kept in the export's manifest.
    """
    import onnxruntime


    if not isinstance(model, ViltVQA):
        raise ExportError(f"ONNX export is implemented for ViLT students (model 'vilt'); got "
                          f"{type(model).__name__}. The built-in vqa_attention model is not "
                          "exportable yet.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("model.onnx", "model.int8.onnx", MANIFEST):   # never mix two exports
        (out_dir / stale).unlink(missing_ok=True)
    model = model.eval()
    size = image_size or processor_image_size(model.processor)
    generator = np.random.default_rng(0)
    questions = list(check_questions or _CHECK_QUESTIONS)
    images = check_images or [generator.integers(0, 256, (size + 7, size + 3, 3), np.uint8)
                              for _ in questions]
    data_size = data_image_size((metadata or {}).get("data", {}))
    check = encode_fixed(model.processor, images, questions, size, model.max_text_length,
                         data_size)
    wrapper = ExportableVilt(model, size).eval()
    with torch.no_grad():
        expected = wrapper(*(torch.from_numpy(check[name]) for name in INPUTS)).numpy()
    onnx_path = out_dir / "model.onnx"
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=4096)
    dynamic = {"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence},
               "pixel_values": {0: batch}}
    examples = tuple(torch.from_numpy(check[name]) for name in INPUTS)

    def write(temporary: Path) -> None:
        with warnings.catch_warnings():
            # the exporter's notes on merged axis names and Hugging Face's tracing notes
            warnings.filterwarnings("ignore", message=".*axis name.*")
            warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(wrapper, examples, str(temporary), dynamo=True,
                              dynamic_shapes=dynamic, input_names=list(INPUTS),
                              output_names=["logits"], external_data=False, verbose=False)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    atomic_write(onnx_path, write, expected_bytes=weights)
    fp32 = _run(onnxruntime, onnx_path, check)
    difference = float(np.abs(fp32 - expected).max())
    report = ExportReport(out_dir, size, model.answers, difference, tolerance,
                          files=["model.onnx", "processor/", MANIFEST])
    if difference > tolerance:
        raise ExportError(f"the ONNX model's logits differ from PyTorch's by up to "
                          f"{difference:.3g} (tolerance {tolerance:g}) on {len(questions)} "
                          f"check questions; the export in {onnx_path} is not trustworthy.")
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        int8_path = out_dir / "model.int8.onnx"
        atomic_write(int8_path, lambda temporary: quantize_dynamic(
            str(onnx_path), str(temporary), weight_type=QuantType.QInt8))
        quantized = _run(onnxruntime, int8_path, check)
        report.int8_max_abs_diff = float(np.abs(quantized - expected).max())
        report.int8_top1_agreement = float(
            (quantized.argmax(-1) == expected.argmax(-1)).mean())
        report.files.insert(1, "model.int8.onnx")
        if report.int8_max_abs_diff > int8_tolerance:
            raise ExportError(f"the int8 model's logits differ from PyTorch's by up to "
                              f"{report.int8_max_abs_diff:.3g} (tolerance {int8_tolerance:g}); "
                              "keep the fp32 export or calibrate the quantisation.")
    model.processor.save_pretrained(out_dir / "processor")
    checksums = {name: file_record(out_dir / name) for name in ("model.onnx", "model.int8.onnx")
                 if (out_dir / name).is_file()}
    manifest: dict[str, Any] = {**(metadata or {}), "checksums": checksums,
                                "format": 1, "model": "vilt", "inputs": list(INPUTS),
                                "image_size": size, "max_text_length": model.max_text_length,
                                "answers": model.answers,
                                **{k: v for k, v in asdict(report).items()
                                   if k not in ("directory", "answers", "files", "image_size")}}
    atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, indent=1))
    return report


def _run(onnxruntime, path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    options = onnxruntime.SessionOptions()
    session = onnxruntime.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])
    return session.run(["logits"], {name: inputs[name] for name in INPUTS})[0]
