"""`vldistill predict`: answer one question about one image with an export or a checkpoint.

An export folder (``vldistill export``) runs in onnxruntime with the model's own processor and
no PyTorch model code (:mod:`vldistill.export.runtime`). A ``.safetensors`` checkpoint from
``vldistill run`` is rebuilt in PyTorch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vldistill.errors import DataError, MissingFileError
from vldistill.export.runtime import (MANIFEST, OnnxVQA, Prediction, answer_from_logits,
                                      data_image_size)


def read_rgb(path: Path) -> np.ndarray:
    """An image file as uint8 (H, W, 3); a missing or undecodable file gets a clear error."""
    from vldistill.data.images import read_rgb

    return read_rgb(Path(path))


def predict(model_path: Path, image_path: Path, question: str, int8: bool = False
            ) -> Prediction:
    model_path = Path(model_path)
    if model_path.is_dir() and (model_path / MANIFEST).is_file():
        return OnnxVQA(model_path, int8=int8).predict(read_rgb(image_path), question)
    if model_path.suffix == ".safetensors":
        if int8:
            raise DataError("--int8 needs an ONNX export folder (vldistill export --int8); "
                            f"{model_path} is a PyTorch checkpoint")
        return _predict_checkpoint(model_path, Path(image_path), question)
    raise MissingFileError(f"{model_path} is neither an export folder (with {MANIFEST}) nor a "
                           ".safetensors checkpoint. Fix: pass what `vldistill export` or "
                           "`vldistill run` wrote.")


def _predict_checkpoint(path: Path, image_path: Path, question: str) -> Prediction:
    """A checkpoint's answer; a model that sees depth reads ``image_path`` as a 16-bit depth PNG
    in millimetres, preprocessed as its recipe's ``data.depth`` says."""
    import torch
    from PIL import Image

    from vldistill.config import DataSettings
    from vldistill.data.rgbd import preprocess_depth, read_depth_png

    from vldistill.data.tokenizer import QuestionTokenizer
    from vldistill.models.checkpoint import build_from_checkpoint, load_checkpoint
    checkpoint = load_checkpoint(path)
    if "answer_vocab" not in checkpoint.extra:
        raise DataError(f"checkpoint {path} has no answer vocabulary in its metadata; it was "
                        "not saved by `vldistill run`.")
    answers = checkpoint.extra["answer_vocab"]
    model = build_from_checkpoint(checkpoint)
    size = data_image_size(checkpoint.extra.get("data", {}))
    if checkpoint.extra.get("modality", "rgb") == "depth":
        settings = DataSettings.model_validate(checkpoint.extra.get("data", {})).depth
        metres = read_depth_png(image_path, (size, size) if size else None)
        images = torch.from_numpy(preprocess_depth(metres, settings))[None]
    else:
        image = read_rgb(image_path)
        if size:
            image = np.asarray(Image.fromarray(image).resize((size, size),
                                                             Image.Resampling.BILINEAR))
        images = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None]
    inputs = {"images": images, "image_index": torch.zeros(1, dtype=torch.long),
              "questions": [question]}
    if "question_vocab" in checkpoint.extra:
        tokens = QuestionTokenizer.from_json(checkpoint.extra["question_vocab"]).encode(question)
        inputs.update(question_tokens=torch.tensor([tokens or [0]]),
                      question_lengths=torch.tensor([max(1, len(tokens))]))
    with torch.no_grad():
        logits = model(**inputs).logits[0].float().numpy()
    return answer_from_logits(logits, answers)
