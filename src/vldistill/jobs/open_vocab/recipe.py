"""The open-vocabulary recipe (``job: open_vocab``, recipes/open_vocab.yaml): data, text
encoder, teacher and student image encoders, distillation weights, evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from vldistill.config import (
    ImageEvalSettings,
    OptimSettings,
    RunName,
    Strict,
    TrainerSettings,
    TrainSettings,
    load_recipe_as,
)
from vldistill.data.shapesworld import ShapesWorldSettings

EXAMPLE = "recipes/open_vocab.yaml"

HOLDOUT = ["purple star", "green circle", "orange square", "white triangle", "red diamond",
           "blue hexagon"]


class OVDataSettings(Strict):
    source: Literal["shapesworld", "jsonl", "folder"] = "shapesworld"
    shapesworld: ShapesWorldSettings = Field(
        default_factory=lambda: ShapesWorldSettings(train_images=20000, val_images=2000),
        description="one object per image (min/max_objects are set to 1)")
    holdout: list[str] = Field(default_factory=lambda: list(HOLDOUT), description="ShapesWorld "
                               "colour-shape combinations kept out of training entirely")
    train: Path | None = Field(None, description="jsonl: the train caption file; folder: the "
                               "train class folders")
    val: Path | None = Field(None, description="jsonl / folder: the val split")
    images: Path | None = Field(None, description="jsonl: the image root (default: the "
                                "caption file's folder)")
    image_size: int = Field(64, ge=8, description="images are resized to this (jsonl, folder)")
    prompt: str = Field("a {label}", description="zero-shot prompt (and folder captions)")
    labelled_images: int | None = Field(1000, ge=1, description="training images whose "
                                        "captions the students may use; None: all")
    transfer_images: int | None = Field(None, ge=0, description="the other training images, "
                                        "unlabelled, seen through the teacher; None: all")

    @model_validator(mode="after")
    def _paths(self) -> OVDataSettings:
        if self.source != "shapesworld" and (self.train is None or self.val is None):
            raise ValueError(f"data.source {self.source!r} needs data.train and data.val paths")
        if "{label}" not in self.prompt:
            raise ValueError(f"data.prompt {self.prompt!r} needs a {{label}} field")
        return self


class TextEncoderSettings(Strict):
    name: Literal["minilm", "clip", "siglip"] = "minilm"
    path: Path | None = Field(None, description="minilm: a local sentence-encoder folder "
                              "(None: the packaged MiniLM-L6); clip / siglip: the model folder")


def default_train() -> TrainSettings:
    """An image encoder's training: 1,000 steps of 128 images, AdamW at 2e-3 with warm-up and
    a cosine decay (measured: at a constant 2e-3 the teacher's zero-shot accuracy swung between
    45 and 82 % from one check to the next); no in-loop validation."""
    return TrainSettings(max_steps=1000, batch_size=128,
                         optim=OptimSettings(lr=2e-3, weight_decay=0.01))


class ImageEncoderSettings(Strict):
    merged: ClassVar[tuple[str, ...]] = ("train",)
    kind: Literal["cnn", "mobilenet_v2", "efficientnet", "clip", "siglip"] = "cnn"
    widths: list[int] = Field(default_factory=lambda: [8, 16, 32, 64], min_length=1,
                              description="cnn: channels per stride-2 stage")
    config: dict[str, Any] | None = Field(None, description="mobilenet_v2 / efficientnet: "
                                          "transformers config fields (a model built in code)")
    path: Path | None = Field(None, description="a local folder (transformers backbone, or the "
                              "CLIP / SigLIP model whose image tower this is)")
    projection: bool = Field(True, description="a linear map into the text space")
    fusion: Literal["none", "film", "cross_attention"] = "none"
    train: TrainSettings = Field(default_factory=default_train)

    @model_validator(mode="after")
    def _contrastive_batch(self) -> ImageEncoderSettings:
        if self.train.batch_size < 2:
            raise ValueError("train.batch_size must be at least 2: the contrastive loss needs "
                             "other images of the batch as negatives")
        return self


class OVDistillSettings(Strict):
    contrastive: float = Field(1.0, ge=0, description="InfoNCE image-text (labelled images)")
    cosine: float = Field(1.0, ge=0, description="1 - cos to the teacher's image embedding")
    l2: float = Field(0.0, ge=0, description="squared L2 to the teacher's image embedding")
    affinity: float = Field(1.0, ge=0, description="KL of image-text score distributions")
    affinity_temperature: float = Field(0.05, gt=0)
    teacher_outputs: Literal["cache", "online"] = Field(
        "cache", description="cache: the teacher embeds the students' training images once, "
        "stored exact (fp32) in <run>/teacher-cache/; online: it runs on every batch")


class OpenVocabRecipe(Strict):
    job: Literal["open_vocab"] = Field("open_vocab", description="marks an open-vocabulary "
                                        "recipe (`vldistill run` dispatches on it)")
    name: RunName = "open_vocab"
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    output_dir: Path = Path("runs")
    data: OVDataSettings = Field(default_factory=OVDataSettings)
    text_encoder: TextEncoderSettings = Field(default_factory=TextEncoderSettings)
    teacher: ImageEncoderSettings = Field(default_factory=lambda: ImageEncoderSettings(
        widths=[32, 64, 128, 256]))
    teacher_checkpoint: Path | None = Field(None, description="a saved teacher (vldistill "
                                            "checkpoint) instead of training one")
    student: ImageEncoderSettings = Field(default_factory=ImageEncoderSettings)
    distill: OVDistillSettings = Field(default_factory=OVDistillSettings)
    eval: ImageEvalSettings = Field(default_factory=ImageEvalSettings)
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)

    @model_validator(mode="after")
    def _towers(self) -> OpenVocabRecipe:
        if self.teacher.fusion != "none":
            raise ValueError("teacher.fusion must be none: the students distil the teacher's "
                             "image embeddings, which a fusion module would not produce")
        if self.teacher.kind in ("clip", "siglip"):
            if self.teacher.path is None:
                raise ValueError(f"teacher.kind {self.teacher.kind!r} needs teacher.path")
            text_path = self.text_encoder.path
            if self.text_encoder.name != self.teacher.kind or text_path is None or \
                    Path(text_path).resolve() != Path(self.teacher.path).resolve():
                raise ValueError(f"a {self.teacher.kind} teacher is aligned with its own text "
                                 f"tower: set text_encoder: {{name: {self.teacher.kind}, path: "
                                 f"{self.teacher.path}}}")
        if self.student.kind in ("clip", "siglip"):
            raise ValueError("the student is a light backbone: cnn, mobilenet_v2 or "
                             "efficientnet")
        return self


def load_open_vocab_recipe(path: Path | None, overrides: Sequence[str] = ()) -> OpenVocabRecipe:
    """An open-vocabulary recipe from YAML (None: the built-in default), with --set
    overrides."""
    return load_recipe_as(OpenVocabRecipe, path, overrides, EXAMPLE)
