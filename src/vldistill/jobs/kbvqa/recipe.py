"""The knowledge-based VQA recipe (``job: kbvqa``, recipes/kbvqa.yaml): data, retriever and
readers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from vldistill.config import RunName, Strict, load_recipe_as
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


class RetrieverSettings(Strict):
    kind: Literal["bm25", "minilm", "trained", "distilled"] = "trained"
    encoder: str = Field("minilm", description="dense encoder: minilm or a local folder")
    index: Literal["flat", "hnsw"] = "flat"
    image_text: bool = Field(True, description="append the image as text to the query")
    n_context: int = Field(3, ge=1, description="facts the reader gets per question")
    train_steps: int = Field(300, ge=1, description="DPR steps (kind: trained)")
    distil_steps: int = Field(1500, ge=1, description="distillation steps (kind: distilled)")
    student_hidden: int = Field(256, ge=16)
    student_layers: int = Field(2, ge=1)


class ReaderModel(Strict):
    """A T5 reader built in code (sizes) or from a local folder (path)."""

    path: Path | None = None
    d_model: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)


class ReaderSettings(Strict):
    base: ReaderModel = Field(default_factory=ReaderModel)
    large: ReaderModel | None = Field(
        default_factory=lambda: ReaderModel(d_model=128, layers=3),
        description="None: no large reader and no distilled base")
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    kd_weight: float = Field(0.5, ge=0, le=1, description="distilled base: (1 - w) NLL + w KD")
    max_passage_tokens: int = Field(48, ge=8, description="tokens kept per (question, image "
                                    "text, fact) passage; longer ones lose their end")
    val_every_n_steps: int = Field(250, ge=1, description="early stopping: the weights with "
                                   "the best exact match on a held-out slice are kept")
    patience: int | None = Field(None, ge=1, description="validations without improvement "
                                 "before stopping; None: run all steps")


class KBVQARecipe(Strict):
    job: Literal["kbvqa"] = Field("kbvqa", description="marks a knowledge-based VQA recipe "
                                  "(`vldistill run` dispatches on it)")
    name: RunName = "kbvqa"
    seed: int = 0
    output_dir: Path = Path("runs")
    data: KBDataSettings = Field(default_factory=KBDataSettings)
    retriever: RetrieverSettings = Field(default_factory=RetrieverSettings)
    reader: ReaderSettings = Field(default_factory=ReaderSettings)


def load_kb_recipe(path: Path | None, overrides: Sequence[str] = ()) -> KBVQARecipe:
    """A KB-VQA recipe from YAML (None: the built-in default), with --set overrides."""
    return load_recipe_as(KBVQARecipe, path, overrides, EXAMPLE)
