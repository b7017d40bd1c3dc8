"""`vldistill eval CHECKPOINT`: rebuild a saved model and score it on its validation split,
by the metric its recipe named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vldistill.config import DataSettings
from vldistill.core.errors import DataError
from vldistill.data.answers import AnswerVocab
from vldistill.data.batches import VQACollator, VQAImageDataset
from vldistill.data.rgbd import DepthSettings
from vldistill.data.tokenizer import QuestionTokenizer
from vldistill.eval.evaluators import build_evaluator, predict
from vldistill.jobs.vqa_kd.data import load_val
from vldistill.models import build_from_checkpoint, count_parameters
from vldistill.models.checkpoint import load_checkpoint


def checkpoint_predictions(checkpoint, samples, images, depth: DepthSettings,
                           batch_images: int = 64):
    """(model, dataset, predictions) of a saved model over ``samples``: it is fed the modality
    it sees and scored by the metric its recipe named (VQA accuracy for checkpoints from before
    the metric was recorded)."""
    model = build_from_checkpoint(checkpoint)
    answer_vocab = AnswerVocab.from_json(checkpoint.extra["answer_vocab"])
    tokenizer = QuestionTokenizer.from_json(checkpoint.extra["question_vocab"])
    modality = checkpoint.extra.get("modality", "rgb")
    dataset = VQAImageDataset(samples, images, answer_vocab, tokenizer, modalities=(modality,),
                              depth=depth)
    evaluator = build_evaluator(checkpoint.extra.get("metric", "vqa"), answer_vocab)
    predictions = predict(model, dataset, VQACollator(len(answer_vocab), modality), evaluator,
                          batch_images)
    return model, dataset, predictions


def evaluate_checkpoint(path: Path, batch_images: int = 64) -> dict[str, Any]:
    checkpoint = load_checkpoint(path)
    missing = {"answer_vocab", "question_vocab", "data"} - set(checkpoint.extra)
    if missing:
        raise DataError(f"checkpoint {path} lacks {sorted(missing)} in its metadata, so the "
                        "data it was trained on is unknown; it was not saved by `vldistill run`.")
    settings = DataSettings.model_validate(checkpoint.extra["data"])
    modality = checkpoint.extra.get("modality", "rgb")     # what the model sees
    needs = checkpoint.extra.get("data_modalities", [modality])   # as the run read its data
    val, val_images = load_val(settings, needs=needs)
    model, dataset, predictions = checkpoint_predictions(checkpoint, val, val_images,
                                                         settings.depth, batch_images)
    return {"role": checkpoint.extra.get("role", "?"), "model": checkpoint.model_name,
            "modality": modality, "parameters": count_parameters(model),
            "questions": dataset.num_questions,
            **predictions.metrics}
