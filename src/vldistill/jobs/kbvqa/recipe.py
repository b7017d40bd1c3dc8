"""The knowledge-based VQA recipe (``job: kbvqa``, recipes/kbvqa.yaml): data, retriever and
readers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from vldistill.config import (
    OptimSettings,
    RunName,
    Strict,
    TrainerSettings,
    TrainSettings,
    load_recipe_as,
)
from vldistill.data.shapesworld import ShapesWorldSettings

EXAMPLE = "recipes/kbvqa.yaml"


class KBFiles(Strict):
    """One split in the VQAv2 / OK-VQA layout, and the image as text."""

    questions: Path
    annotations: Path
    captions: Path | None = Field(None, description="JSONL of {image_id, caption}: the image "
                                  "as text (e.g. a captioner's output); None: no image text")


class KBDataSettings(Strict):
    source: Literal["shapesworld", "vqa"] = "shapesworld"
    shapesworld: ShapesWorldSettings = Field(default_factory=ShapesWorldSettings)
    facts: Path | None = Field(None, description="the knowledge base (JSONL); None: "
                               "ShapesWorld's facts")
    train: KBFiles | None = None
    val: KBFiles | None = None
    knowledge_only: bool = Field(True, description="keep only questions with gold fact ids "
                                 "(ShapesWorld's knowledge questions); OK-VQA has none: false")
    max_train_questions: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _files(self) -> KBDataSettings:
        if self.source == "vqa" and (self.train is None or self.val is None or
                                     self.facts is None):
            raise ValueError("data.source 'vqa' needs data.train and data.val ({questions, "
                             "annotations, captions}) and data.facts")
        return self


RETRIEVERS = ("bm25", "minilm", "trained", "distilled")
RetrieverKind = Literal["bm25", "minilm", "trained", "distilled"]


def constant_lr(lr: float, max_steps: int, batch_size: int, **more) -> TrainSettings:
    """Training at a constant learning rate, no warm-up (the retrievers' and readers' measured
    settings)."""
    return TrainSettings(max_steps=max_steps, batch_size=batch_size, **more,
                         optim=OptimSettings(lr=lr, schedule="constant", warmup_steps=0))


class RetrieverDistillSettings(Strict):
    """A small BERT student learns a teacher encoder's space from the training questions
    (without their gold facts) and the facts."""

    merged: ClassVar[tuple[str, ...]] = ("train",)
    teacher: Literal["minilm", "trained"] = Field(
        "trained", description="the encoder distilled: the pretrained one, or the one trained "
        "on gold facts (kind: trained, trained first)")
    student_hidden: int = Field(256, ge=16)
    student_layers: int = Field(2, ge=1)
    embedding: Literal["cosine", "mse"] = Field("cosine", description="to the teacher's unit "
                                                "vectors, through a learned projection")
    embedding_weight: float = Field(1.0, ge=0)
    score_weight: float = Field(1.0, ge=0, description="KL over the teacher's top candidates")
    candidates: int = Field(32, ge=1, description="the teacher's top facts per question")
    temperature: float = Field(0.05, gt=0)
    train: TrainSettings = Field(default_factory=lambda: constant_lr(5e-4, 1500, 64))


class RetrieverSettings(Strict):
    renamed: ClassVar[dict[str, str]] = {"train_steps": "train.max_steps",
                                         "distil_steps": "distil.train.max_steps",
                                         "student_hidden": "distil.student_hidden",
                                         "student_layers": "distil.student_layers"}
    merged: ClassVar[tuple[str, ...]] = ("train",)
    kind: RetrieverKind = Field("trained", description="the retriever whose top facts the "
                                "readers read")
    compare: list[RetrieverKind] = Field(
        default_factory=lambda: list(RETRIEVERS), description="retrievers scored side by side "
        "(recall@k, MRR, speed); `kind` is always among them")
    encoder: str = Field("minilm", description="dense encoder: minilm or a local folder")
    index: Literal["flat", "hnsw"] = "flat"
    image_text: bool = Field(True, description="append the image as text to the query")
    n_context: int = Field(3, ge=1, description="facts the reader gets per question")
    speed_repeats: int = Field(3, ge=1, description="timed passes over the val questions per "
                               "retriever (the best is reported as queries/s)")
    temperature: float = Field(0.05, gt=0, description="DPR: scores are cosines / T")
    hard_negatives: int = Field(2, ge=0, description="DPR: BM25 facts per query, not gold")
    train: TrainSettings = Field(default_factory=lambda: constant_lr(2e-5, 300, 32),
                                 description="DPR training of the encoder (kind: trained)")
    distil: RetrieverDistillSettings = Field(default_factory=RetrieverDistillSettings)

    @property
    def scored(self) -> list[str]:
        """The retrievers this run builds, in the order they are built."""
        wanted = {*self.compare, self.kind}
        if "distilled" in wanted and self.distil.teacher == "trained":
            wanted.add("trained")
        return [kind for kind in RETRIEVERS if kind in wanted]


class ReaderModel(Strict):
    """A T5 reader built in code (sizes) or from a local folder (path)."""

    path: Path | None = None
    d_model: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)


class ReaderSettings(Strict):
    renamed: ClassVar[dict[str, str]] = {
        "steps": "train.max_steps", "batch_size": "train.batch_size", "lr": "train.optim.lr",
        "val_every_n_steps": "train.val_every_n_steps",
        "patience": "train.early_stopping_patience"}
    merged: ClassVar[tuple[str, ...]] = ("train",)
    base: ReaderModel = Field(default_factory=ReaderModel)
    large: ReaderModel | None = Field(
        default_factory=lambda: ReaderModel(d_model=128, layers=3),
        description="None: no large reader and no distilled base")
    no_knowledge: bool = Field(True, description="also train the base reader without facts "
                               "(the baseline retrieved knowledge is measured against)")
    kd_weight: float = Field(0.5, ge=0, le=1, description="distilled base: (1 - w) NLL + w KD")
    temperature: float = Field(1.0, gt=0, description="token-level KD temperature")
    max_passage_tokens: int = Field(48, ge=8, description="tokens kept per (question, image "
                                    "text, fact) passage; longer ones lose their end")
    train: TrainSettings = Field(
        default_factory=lambda: constant_lr(1e-3, 1000, 32, val_every_n_steps=250),
        description="every reader's training; the weights with the best exact match on a "
        "held-out slice of the training questions are kept (validated every "
        "val_every_n_steps; early_stopping_patience stops sooner)")

    @model_validator(mode="after")
    def _validated_to_the_end(self) -> ReaderSettings:
        steps, every = self.train.max_steps, self.train.val_every_n_steps
        if steps % every:
            raise ValueError(f"train.max_steps ({steps}) is not a multiple of "
                             f"train.val_every_n_steps ({every}): the last {steps % every} "
                             "steps would never be scored, and keeping the best weights would "
                             f"drop them. Fix: max_steps {steps - steps % every or every} or "
                             f"{steps - steps % every + every}, or val_every_n_steps dividing "
                             f"{steps}.")
        return self


class KBVQARecipe(Strict):
    job: Literal["kbvqa"] = Field("kbvqa", description="marks a knowledge-based VQA recipe "
                                  "(`vldistill run` dispatches on it)")
    name: RunName = "kbvqa"
    seed: int = 0
    output_dir: Path = Path("runs")
    data: KBDataSettings = Field(default_factory=KBDataSettings)
    retriever: RetrieverSettings = Field(default_factory=RetrieverSettings)
    reader: ReaderSettings | None = Field(default_factory=ReaderSettings,
                                          description="None: score the retrievers only")
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)
    eval_batch_size: int = Field(64, ge=1, description="questions per batch when scoring")


def load_kb_recipe(path: Path | None, overrides: Sequence[str] = ()) -> KBVQARecipe:
    """A KB-VQA recipe from YAML (None: the built-in default), with --set overrides."""
    return load_recipe_as(KBVQARecipe, path, overrides, EXAMPLE)
