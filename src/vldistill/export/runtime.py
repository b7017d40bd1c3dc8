"""Running an ONNX export: preprocessing and answers without any PyTorch model code.

Only numpy, PIL, onnxruntime and the model's own processor (its tokenizer and image settings,
loaded from the export's ``processor/`` folder) are used here; ``vldistill predict`` on an
export imports neither the model classes nor vldistill's training code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vldistill.core.errors import DataError, MissingFileError
from vldistill.core.fileio import verify_file
from vldistill.data.images import data_image_size, read_rgb

MANIFEST = "vldistill-export.json"
INPUTS = ("input_ids", "attention_mask", "pixel_values")
UNANSWERABLE = "unanswerable"


def encode_fixed(processor, images: list[np.ndarray], questions: list[str], image_size: int,
                 max_text_length: int, data_image_size: int | None = None
                 ) -> dict[str, np.ndarray]:
    """The export's preprocessing, the same as in training: each image squared to the training
    data's size (PIL bilinear, as the data readers do; S when unknown), then the model's own
    processor, which resizes it to S x S; numpy arrays for onnxruntime."""

    square = data_image_size or image_size
    resized = []
    for img in images:
        img = np.asarray(img, dtype=np.uint8)
        if img.shape[:2] != (square, square):
            img = np.asarray(Image.fromarray(img).resize((square, square),
                                                         Image.Resampling.BILINEAR))
        resized.append(img)
    encoded = processor(images=resized, text=questions, padding=True, truncation=True,
                        max_length=max_text_length, return_tensors="np")
    pixel_values = encoded["pixel_values"]
    if pixel_values.shape[-2:] != (image_size, image_size):
        raise DataError(f"the processor turned {image_size} x {image_size} images into "
                        f"{tuple(pixel_values.shape[-2:])}; the export expects {image_size}")
    return {"input_ids": encoded["input_ids"].astype(np.int64),
            "attention_mask": encoded["attention_mask"].astype(np.int64),
            "pixel_values": pixel_values.astype(np.float32)}


@dataclass
class Prediction:
    answer: str
    confidence: float               # sigmoid of the answer's logit (answers are scored by BCE)
    unanswerable: bool
    unanswerable_score: float | None


def answer_from_logits(logits: np.ndarray, answers: list[str]) -> Prediction:
    """The top answer of one question's logits, with its sigmoid score; the question is judged
    unanswerable when "unanswerable" is the top answer or scores above 0.5."""
    scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    top = int(np.argmax(logits))
    unanswerable_score = (float(scores[answers.index(UNANSWERABLE)])
                          if UNANSWERABLE in answers else None)
    judged = answers[top] == UNANSWERABLE or (unanswerable_score or 0.0) > 0.5
    return Prediction(answers[top], float(scores[top]), judged, unanswerable_score)


class OnnxVQA:
    """An export folder written by ``vldistill export``, ready to answer questions."""

    def __init__(self, directory: Path, int8: bool = False, threads: int | None = None
                 ) -> None:
        import onnxruntime

        self.directory = Path(directory)
        manifest_path = self.directory / MANIFEST
        if not manifest_path.is_file():
            raise MissingFileError(f"{self.directory} is not a vldistill export ({MANIFEST} is "
                                   "missing). Fix: pass the folder `vldistill export` wrote.")
        try:
            self.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DataError(f"{manifest_path} is damaged ({error}); export the checkpoint "
                            "again with `vldistill export CHECKPOINT`") from None
        model = self.directory / ("model.int8.onnx" if int8 else "model.onnx")
        if not model.is_file():
            raise MissingFileError(f"{model} does not exist" + (
                ": export with --int8 to get it" if int8 else ""))
        record = self.manifest.get("checksums", {}).get(model.name)
        if record is not None:       # exports written before checksums have none
            verify_file(model, record, "Export the checkpoint again with `vldistill export "
                                       "CHECKPOINT`.")
        from transformers import ViltProcessor

        self.processor = ViltProcessor.from_pretrained(self.directory / "processor")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(model), options,
                                                    providers=["CPUExecutionProvider"])
        self.answers: list[str] = self.manifest["answers"]
        self.data_image_size = data_image_size(self.manifest.get("data", {}))

    def encode(self, images: list[np.ndarray], questions: list[str]) -> dict[str, np.ndarray]:
        encoded = encode_fixed(self.processor, images, questions, self.manifest["image_size"],
                               self.manifest["max_text_length"], self.data_image_size)
        return {name: encoded[name] for name in INPUTS}

    def logits(self, images: list[np.ndarray], questions: list[str]) -> np.ndarray:
        return self.session.run(["logits"], self.encode(images, questions))[0]

    def predict(self, image: np.ndarray, question: str) -> Prediction:
        return answer_from_logits(self.logits([image], [question])[0], self.answers)


def model_kind(path: Path, int8: bool = False) -> str:
    """"export" for a folder `vldistill export` wrote, "checkpoint" for a ``.safetensors``
    checkpoint (which has no int8 model); anything else is refused with the fix."""
    path = Path(path)
    if path.is_dir() and (path / MANIFEST).is_file():
        return "export"
    if path.suffix == ".safetensors":
        if int8:
            raise DataError("--int8 needs an ONNX export folder (vldistill export --int8); "
                            f"{path} is a PyTorch checkpoint")
        return "checkpoint"
    raise MissingFileError(f"{path} is neither an export folder (with {MANIFEST}) nor a "
                           ".safetensors checkpoint. Fix: pass what `vldistill export` or "
                           "`vldistill run` wrote.")


def predict_export(folder: Path, image_path: Path, question: str, int8: bool = False
                   ) -> Prediction:
    """An export's answer, in onnxruntime with no PyTorch model code."""
    return OnnxVQA(Path(folder), int8=int8).predict(read_rgb(Path(image_path)), question)
