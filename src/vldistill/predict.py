"""`vldistill predict` on a checkpoint: answer one question about one image with a
``.safetensors`` checkpoint from ``vldistill run``, rebuilt in PyTorch.

An export folder (``vldistill export``) runs in onnxruntime with the model's own processor and
no PyTorch model code instead (:func:`vldistill.export.runtime.predict_export`);
:func:`vldistill.export.runtime.model_kind` tells the two apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vldistill.config import DataSettings
from vldistill.core.errors import DataError
from vldistill.data.images import data_image_size, read_rgb
from vldistill.data.rgbd import preprocess_depth, read_depth_png
from vldistill.data.tokenizer import QuestionTokenizer
from vldistill.export.runtime import Prediction, answer_from_logits
from vldistill.models import build_from_checkpoint
from vldistill.models.checkpoint import load_checkpoint


def predict_checkpoint(path: Path, image_path: Path, question: str) -> Prediction:
    """A checkpoint's answer; a model that sees depth reads ``image_path`` as a 16-bit depth PNG
    in millimetres, preprocessed as its recipe's ``data.depth`` says."""
    path, image_path = Path(path), Path(image_path)
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
        image = read_rgb(Path(image_path))
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
