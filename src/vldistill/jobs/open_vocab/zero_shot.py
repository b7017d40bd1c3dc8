"""Zero-shot classification of one image by a saved open-vocabulary model (`vldistill
zero-shot`)."""

from __future__ import annotations

from pathlib import Path

import torch

from vldistill.data.image_text import check_labels
from vldistill.data.images import read_rgb
from vldistill.jobs.open_vocab.encoders import load_encoder


def zero_shot(checkpoint: Path, image: Path, labels: list[str], prompt: str | None = None
              ) -> list[tuple[str, float, float]]:
    """[(label, probability, cosine)] best first: softmax over the labels of the model's
    scaled cosine scores of the image against each label's prompt."""
    labels = check_labels(labels)
    model, text_encoder, metadata = load_encoder(checkpoint)
    prompt = prompt or metadata.get("prompt", "{label}")
    if "{label}" not in prompt:
        raise ValueError(f"--prompt {prompt!r} needs a {{label}} field")
    size = int(metadata.get("image_size", 64))
    pixels = torch.from_numpy(read_rgb(Path(image), "--image: image", size))
    with torch.no_grad():
        text = text_encoder([prompt.format(label=label) for label in labels])
        cosines = model.scores(pixels.permute(2, 0, 1)[None], text)[0]
        probabilities = (model.scale() * cosines).softmax(-1)
    order = torch.argsort(probabilities, descending=True).tolist()
    return [(labels[i], float(probabilities[i]), float(cosines[i])) for i in order]
