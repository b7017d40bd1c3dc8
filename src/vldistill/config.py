"""The recipe: one validated description of a run. YAML in, every bad field reported at once.

Recipes are data (names and numbers only, STYLE.md). Model hyper-parameters are validated
against the model's own config class, loss hyper-parameters against the loss's signature.
Command-line overrides use dotted paths: ``--set distill.terms.1.temperature=4``.
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from vldistill.core.errors import RecipeError
from vldistill.core.runpaths import check_run_name
from vldistill.data.augment import AugmentSettings
from vldistill.data.rgbd import DepthSettings, Modality
from vldistill.data.shapesworld import ShapesWorldSettings
from vldistill.kd.losses import LOSSES, build_loss
from vldistill.models import MODELS, model_config
from vldistill.models.kv_prefix import ExpertSettings, LoraSettings, PrefixSettings


class _RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader (plain data only: a ``!!python/...`` tag is an error, so a recipe
    can never name code to import or call), refusing a key given twice in one mapping, which
    YAML itself would resolve silently to the last value. Written here because PyYAML has no
    option for it and a dependency for ten lines is not worth it."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue                        # SafeConstructor refuses it, with the line
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (lines {seen[key]} "
                    f"and {key_node.start_mark.line + 1}); YAML would keep only the last",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path, example: str = "recipes/default.yaml") -> Any:
    """A recipe file's data, loaded safely; bad YAML, a duplicate key, a Python tag or bytes
    that are not UTF-8 raise :class:`RecipeError` naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist. Fix: pass a YAML file such as "
                          f"{example}.")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_RecipeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or error
        fix = (" Recipes hold names and numbers only; no Python object can be named in one. "
               "Fix: remove the tag."
               if "python/" in str(problem) else " Fix that line.")
        raise RecipeError(f"recipe {path} is not valid YAML{where}: {problem}.{fix}") from None
    except UnicodeDecodeError as error:
        raise RecipeError(f"recipe {path} is not UTF-8 text (byte {error.start}). Fix: save it "
                          "as UTF-8.") from None
    except RecursionError:
        raise RecipeError(f"recipe {path} is nested too deeply to read. Fix: a recipe is a few "
                          "levels of sections (see recipes/default.yaml).") from None
    if data is None:
        raise RecipeError(f"recipe {path} is empty. Fix: write its sections (see "
                          "recipes/default.yaml), or give no recipe to run the built-in default.")
    return data


# a recipe's name becomes output_dir/<name>: one plain folder name, checked when the recipe is
# validated (so `vldistill validate` refuses `name: ../elsewhere` too)
RunName = Annotated[str, AfterValidator(check_run_name)]


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and \
            isinstance(out.get(key), dict) else value
    return out


class Strict(BaseModel):
    """A recipe section: unknown keys are refused; a key listed in ``renamed`` (old -> new) is
    refused with its new name, so an old recipe gets the fix rather than "unknown key". A field
    listed in ``merged`` keeps its default's values for the keys the recipe leaves out (a
    section whose defaults are not the generic ones, e.g. a reader's ``train:`` block:
    ``train: {max_steps: 500}`` keeps the reader's learning rate and schedule)."""

    model_config = ConfigDict(extra="forbid")
    renamed: ClassVar[dict[str, str]] = {}
    merged: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        old = [key for key in data if key in cls.renamed] if isinstance(data, dict) else []
        if old:
            raise ValueError("; ".join(f"{key} was renamed {cls.renamed[key]}" for key in old)
                             + ". Fix: " + ", ".join(f"write {cls.renamed[key]}: "
                                                     f"{data[key]!r}" for key in old))
        if isinstance(data, dict):
            for name in cls.merged:
                if isinstance(data.get(name), dict):
                    default = cls.model_fields[name].get_default(call_default_factory=True)
                    data = {**data, name: _deep_merge(default.model_dump(), data[name])}
        return data


class ModelSettings(Strict):
    """A registered model and its hyper-parameters (checked against its config class)."""

    name: str = "vqa_attention"
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_params(self) -> ModelSettings:

        if self.name not in MODELS:
            raise ValueError(f"unknown model {self.name!r}; valid: {', '.join(MODELS.names())}")
        try:
            model_config(self.name, self.params)
        except ValidationError as error:   # report the path as the user wrote it: params.<field>
            problems = "; ".join(
                f"params.{'.'.join(str(p) for p in item['loc'])}: {item['msg']} "
                f"(got {item.get('input')!r})" for item in error.errors())
            raise ValueError(problems) from None
        return self


class OptimSettings(Strict):
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "cosine", "linear"] = "cosine"
    warmup_steps: int = Field(50, ge=0)


class TrainSettings(Strict):
    """How one model trains; every job names these settings the same way."""

    renamed: ClassVar[dict[str, str]] = {
        "images_per_batch": "batch_size", "steps": "max_steps", "lr": "optim.lr",
        "schedule": "optim.schedule", "warmup_steps": "optim.warmup_steps"}
    max_steps: int = Field(1500, ge=1, description="optimiser steps (the budget)")
    max_epochs: int | None = Field(
        None, ge=1, description="stop after this many passes over the labelled set, if that "
        "comes before max_steps; None: steps only")
    batch_size: int = Field(32, ge=1, description="examples per optimiser step (VQA jobs: "
                            "images, each with all its questions)")
    val_every_n_steps: int = Field(500, ge=1)
    checkpoint_every_n_steps: int | None = Field(
        100, ge=1, description="write a resume point this often (and after every validation); "
        "None: only after validations")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="validations without improvement before stopping; None: off")
    optim: OptimSettings = Field(default_factory=OptimSettings)


class TeacherCacheSettings(Strict):
    """Where and how the teacher-output cache is stored (vldistill.kd.cache)."""

    dir: Path | None = Field(None, description="cache folder; None: <run folder>/teacher-cache")
    top_k: int = Field(32, ge=1, description="teacher.mode topk_cache: logits kept per question "
                       "(plus the full log-sum-exp); the rest of the mass is spread over the "
                       "other answers")
    shard_items: int = Field(4096, ge=1, description="images per shard file")
    verify: bool = Field(True, description="check every shard's SHA-256 when opening")


class TeacherSettings(Strict):
    model: ModelSettings = Field(default_factory=lambda: ModelSettings(params={"width": 64}))
    train: TrainSettings = Field(default_factory=lambda: TrainSettings(
        optim=OptimSettings(lr=1e-3)))
    checkpoint: Path | None = Field(
        None, description="a teacher .safetensors from an earlier run: load it, skip training")
    mode: Literal["online", "cache", "topk_cache"] = Field(
        "online", description="online: run the teacher at every student step; cache: run it "
        "once over the training data and distil from its stored outputs (every logit and "
        "feature in fp32: exact); topk_cache: the same, storing the top teacher.cache.top_k "
        "logits and fp16 features (compact)")
    cache: TeacherCacheSettings = Field(default_factory=lambda: TeacherCacheSettings())
    modality: Modality = Field("rgb", description="what the teacher sees of each sample: rgb, "
                               "or depth (data.depth says how it is preprocessed)")


class StudentSettings(Strict):
    model: ModelSettings = Field(default_factory=lambda: ModelSettings(
        params={"width": 16, "word_dim": 16, "mlp_dim": 32}))
    train: TrainSettings = Field(default_factory=lambda: TrainSettings(max_steps=1000))
    modality: Modality = Field("rgb", description="what the student sees: rgb, or depth "
                               "(sensory substitution: an RGB teacher teaches a depth student)")


class LossTermSettings(BaseModel):
    """One weighted term: ``{loss: kd, weight: 0.25, temperature: 2.0}``; extra keys are the
    loss's own hyper-parameters, checked against its signature."""

    model_config = ConfigDict(extra="allow")

    loss: str
    weight: float = Field(1.0, ge=0)
    name: str | None = Field(None, description="log name; defaults to the loss name")

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _check_loss(self) -> LossTermSettings:

        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; valid: {', '.join(LOSSES.names())}")
        try:
            build_loss(self.loss, **self.params)   # names unknown parameters, checks values
        except TypeError as error:
            raise ValueError(f"loss {self.loss!r}: {error}; check the types of "
                             f"{sorted(self.params)}") from None
        return self


def _default_terms() -> list[LossTermSettings]:
    # 0.5 * BCE + 0.5 * KL at T = 1. The VizWiz seed's 0.75 * BCE + 0.25 * T^2 * KL at T = 2
    # (recipes/vizwiz_weights.yaml) also beat no-KD on both seeds in our sweep, but by
    # +1.2 / +1.5 points; these weights gave +4.2 / +3.4 (README, "How the default was tuned").
    return [LossTermSettings(loss="vqa_bce", weight=0.5),
            LossTermSettings(loss="kd", weight=0.5, temperature=1.0)]


def _check_terms(terms: list[LossTermSettings]) -> list[LossTermSettings]:
    names = [t.name or t.loss for t in terms]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"loss terms {duplicates} appear twice; give each a distinct `name`.")
    if not terms:
        raise ValueError("at least one loss term is needed, e.g. {loss: vqa_bce}")
    return terms


class PhaseSettings(Strict):
    """One phase of a multi-phase distillation (seed 001: contrastive, then LoCa, then both).

    Each phase trains the KD student with its own terms and step budget, starting from the
    previous phase's student (``init_from: previous``), from a checkpoint file, or afresh.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="used in checkpoint file names")
    terms: list[LossTermSettings]
    train: TrainSettings | None = Field(None, description="None: the student's train settings")
    trainable: list[str] = Field(
        default_factory=lambda: ["student"], min_length=1,
        description="parameter name prefixes that train in this phase (e.g. student.head); "
        "loss-term projectors always train")
    init_from: Literal["previous", "scratch"] | Path = Field(
        "previous", description="previous: the last phase's student (the first phase starts "
        "from scratch); scratch: fresh weights; or a .safetensors student checkpoint")

    @field_validator("terms")
    @classmethod
    def _check(cls, terms: list[LossTermSettings]) -> list[LossTermSettings]:
        return _check_terms(terms)


class DistillSettings(Strict):
    terms: list[LossTermSettings] = Field(default_factory=_default_terms)
    phases: list[PhaseSettings] = Field(
        default_factory=list, description="when given, the KD student trains in these phases "
        "in order (each with its own terms) instead of once with `terms`")
    transfer_fraction: float = Field(
        0.5, ge=0, lt=1, description="share of each distillation batch drawn from the "
        "unlabelled transfer set")
    baseline: bool = Field(True, description="also train the student without distillation")
    modality_baselines: list[Modality] = Field(
        default_factory=list, description="also train a no-KD student on each of these "
        "modalities (seed 001 compares with an RGB student)")

    @field_validator("terms")
    @classmethod
    def _check(cls, terms: list[LossTermSettings]) -> list[LossTermSettings]:
        return _check_terms(terms)

    @field_validator("phases")
    @classmethod
    def _unique_phases(cls, phases: list[PhaseSettings]) -> list[PhaseSettings]:
        names = [phase.name for phase in phases]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"phase names {duplicates} appear twice; each phase needs its own")
        return phases


class VQAFiles(Strict):
    """A dataset in the VQAv2 / OK-VQA layout."""

    questions: Path
    annotations: Path
    images: Path
    pattern: str | None = Field(None, description="image file name, e.g. "
                                "'COCO_train2014_{image_id:012d}.jpg'; None: guess")
    depth: Path | None = Field(None, description="folder of depth maps named like the images "
                               "(16-bit PNG, millimetres); needed when a model sees depth")


class RGBDFiles(Strict):
    """A split in the RGB-D layout (vldistill.data.rgbd): one JSON naming each sample's files."""

    annotations: Path = Field(description="{split}.json: {samples: [{question_id, image_id, rgb, "
                              "depth, question, answers, question_type}]}")


class VizWizFiles(Strict):
    """A split in the VizWiz layout: its annotation file and image folder."""

    annotations: Path = Field(description="train.json / val.json: a list of {image, question, "
                              "answers, answerable, answer_type} records")
    images: Path | None = Field(None, description="the split's image folder; None: the folder "
                                "beside annotations/ named like the file (train/, val/)")


class ArtQuestFiles(Strict):
    """A split in the ArtQuest CSV layout (vldistill.data.artquest)."""

    csv: Path = Field(description="image, question, answer[, question_id] rows")
    images: Path = Field(description="the image root; CSV image paths are relative to it")


class DataSettings(Strict):
    source: Literal["shapesworld", "vqa", "vizwiz", "rgbd", "artquest"] = "shapesworld"
    shapesworld: ShapesWorldSettings = Field(default_factory=ShapesWorldSettings)
    train: VQAFiles | VizWizFiles | RGBDFiles | ArtQuestFiles | None = None
    val: VQAFiles | VizWizFiles | RGBDFiles | ArtQuestFiles | None = None
    style_questions: int = Field(
        0, ge=0, le=2, description="ShapesWorld: image-level style questions per image (the "
        "pattern covering most of the picture) added to the student's labelled set and to val, "
        "not to the teacher's training set; 0: none")
    depth: DepthSettings = Field(default_factory=DepthSettings, description="how depth maps "
                                 "become model input, and what to do with bad RGB-D pairs")
    subset: float = Field(1.0, gt=0, le=1, description="share of the training split's images "
                          "used at all (a seeded random subset, as seed 001's "
                          "subset_percentage); 1: all")
    image_size: int = Field(64, ge=8, description="images are resized to this (vqa and vizwiz "
                            "sources); a pretrained ViLT wants its own size, e.g. 384")
    labelled_images: int | None = Field(
        500, ge=1, description="images of the training split whose answers the student may "
        "use; None: all. The teacher trains on the whole training split.")
    transfer_images: int | None = Field(
        None, ge=0, description="unlabelled transfer images for the student (the rest of the "
        "training split, questions without answers); None: all of the rest, 0: none")
    answer_vocab_min_count: int = Field(1, ge=1)
    answer_vocab_max_size: int | None = Field(None, ge=1)
    augment: AugmentSettings = Field(
        default_factory=AugmentSettings, description="replayable views of the student's "
        "training images (vldistill.data.augment); views: 0 is off")

    @model_validator(mode="before")
    @classmethod
    def _parse_files_by_source(cls, data: Any) -> Any:
        """Read data.train / data.val as the source's file layout (their fields overlap, so
        the union alone would pick the first layout that fits)."""
        kinds = {"vqa": VQAFiles, "vizwiz": VizWizFiles, "rgbd": RGBDFiles,
                 "artquest": ArtQuestFiles}
        if not isinstance(data, dict) or not isinstance(data.get("source"), str) or \
                data["source"] not in kinds:
            return data
        kind, parsed = kinds[data["source"]], {}
        for split in ("train", "val"):
            if isinstance(data.get(split), dict):
                try:
                    parsed[split] = kind.model_validate(data[split])
                except ValidationError as error:
                    problems = "; ".join(
                        f"data.{split}.{'.'.join(str(p) for p in item['loc'])}: {item['msg']}"
                        for item in error.errors())
                    raise ValueError(f"data.source {data['source']!r} reads data.{split} as "
                                     f"{', '.join(kind.model_fields)}: {problems}") from None
        return {**data, **parsed}

    @model_validator(mode="after")
    def _files_for_source(self) -> DataSettings:
        wanted = {"vqa": (VQAFiles, "questions, annotations and images paths"),
                  "vizwiz": (VizWizFiles, "an annotations path (and optionally images)"),
                  "rgbd": (RGBDFiles, "an annotations path (the split's RGB-D JSON)"),
                  "artquest": (ArtQuestFiles, "a csv path and an images root")}
        if self.style_questions and self.source != "shapesworld":
            raise ValueError("data.style_questions are written from ShapesWorld scenes; with "
                             f"source {self.source!r} put style questions in the data itself")
        if self.style_questions and self.shapesworld.questions_per_image > 90:
            raise ValueError("data.style_questions take question ids image_id * 100 + 90..91; "
                             "keep data.shapesworld.questions_per_image <= 90 with them")
        if self.source not in wanted:
            return self
        kind, fields = wanted[self.source]
        for split in ("train", "val"):
            files = getattr(self, split)
            if not isinstance(files, kind):
                got = "nothing" if files is None else \
                    f"{', '.join(type(files).model_fields)} ({type(files).__name__})"
                raise ValueError(f"data.source {self.source!r} needs data.{split} with {fields}; "
                                 f"got {got}")
        return self


class ImageEvalSettings(Strict):
    """How an image model is scored after training (open-vocabulary and classification jobs)."""

    batch_size: int = Field(256, ge=1)
    latency_repeats: int = Field(30, ge=1)


class TrainerSettings(Strict):
    """Lightning Trainer settings shared by every training run of the recipe."""

    accelerator: str = "cpu"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = Field(1, ge=1)
    precision: Literal["32-true", "32", "16-mixed", "bf16-mixed", "bf16-true"] = "32-true"
    accumulate_grad_batches: int = Field(1, ge=1)
    gradient_clip_val: float | None = Field(None, gt=0)
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads; None: keep")
    progress_bar: bool = True
    log_every_n_steps: int = Field(50, ge=1)


class EvalSettings(Strict):
    metric: Literal["vqa", "vizwiz"] = Field(
        "vqa", description="the accuracy reported and monitored: official VQAv2 accuracy, or "
        "official VizWiz accuracy plus answerability (average precision, F1)")
    batch_images: int = Field(64, ge=1)
    latency_repeats: int = Field(50, ge=1)
    throughput_images: int = Field(32, ge=1, description="images per batch for throughput")


class KVPrefixVariant(Strict):
    """One model of a KV-prefix ablation. A variant that trains nothing (no prefix, no LoRA,
    no cross-attention) is the frozen base model, evaluated as it is."""

    name: str = Field(pattern=r"^[A-Za-z0-9_+-]+$", description="row name; in file names")
    prefix: bool = Field(True, description="inject the expert's prefixes (train the generator)")
    lora: bool = Field(False, description="also train LoRA adapters (kv_prefix.lora)")
    cross_attention: bool = Field(False, description="also train the cross-attention layers")
    use_expert: bool = Field(True, description="false: constant learned prefixes, no expert "
                             "information (a control)")

    @property
    def trains(self) -> bool:
        return self.prefix or self.lora or self.cross_attention


class KVPrefixSettings(Strict):
    """KV-prefix modulation (seed 002): the recipe's teacher is the frozen base model (trained
    in the run or loaded from teacher.checkpoint); each variant adds the expert's prefixes
    and/or adapters and trains them on the labelled data with student.train's budget."""

    expert: ExpertSettings = Field(default_factory=ExpertSettings)
    prefix: PrefixSettings = Field(default_factory=PrefixSettings)
    lora: LoraSettings | None = Field(None, description="adapters for variants with lora: true")
    variants: list[KVPrefixVariant] | None = Field(
        None, min_length=1, description="the models of the ablation; None: frozen, prefix, "
        "and prefix+lora when lora is set")

    @model_validator(mode="after")
    def _check_variants(self) -> KVPrefixSettings:
        if self.variants is None:
            variants = [KVPrefixVariant(name="frozen", prefix=False),
                        KVPrefixVariant(name="prefix")]
            if self.lora is not None:
                variants.append(KVPrefixVariant(name="prefix+lora", lora=True))
            object.__setattr__(self, "variants", variants)
        names = [v.name for v in self.variants]
        files = [name.replace("+", "-") for name in names]      # as in checkpoint file names
        if len(set(files)) != len(files):
            raise ValueError(f"kv_prefix.variants names must be unique, also with '+' read as "
                             f"'-' (file names), got {names}")
        needs_lora = [v.name for v in self.variants if v.lora]
        if needs_lora and self.lora is None:
            raise ValueError(f"variants {needs_lora} train LoRA adapters, but kv_prefix.lora is "
                             "not set; give it, e.g. {r: 8, target_modules: [queries, keys]}")
        if any(v.prefix for v in self.variants) and not self.prefix.enabled:
            raise ValueError("kv_prefix.prefix.enabled is false, but variants "
                             f"{[v.name for v in self.variants if v.prefix]} inject prefixes; "
                             "set their prefix: false or enable prefixes")
        return self


class Recipe(Strict):
    job: Literal["vqa_kd", "kv_prefix"] = Field(
        "vqa_kd", description="vqa_kd: distil a teacher into students with and without KD; "
        "kv_prefix: teach a frozen base model a new task through expert key/value prefixes "
        "(needs the kv_prefix section)")
    name: RunName = "default"
    seeds: list[int] = Field(default_factory=lambda: [0, 1], min_length=1)
    output_dir: Path = Path("runs")
    data: DataSettings = Field(default_factory=DataSettings)
    teacher: TeacherSettings = Field(default_factory=TeacherSettings)
    student: StudentSettings = Field(default_factory=StudentSettings)
    distill: DistillSettings = Field(default_factory=DistillSettings)
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    kv_prefix: KVPrefixSettings | None = Field(
        None, description="KV-prefix modulation run instead of distillation (vldistill."
        "models.kv_prefix): the teacher is the frozen base model")

    @model_validator(mode="after")
    def _check_modalities(self) -> Recipe:
        roles = [("teacher", self.teacher.modality, self.teacher.model),
                 ("student", self.student.modality, self.student.model)]
        roles += [(f"distill.modality_baselines[{i}] (the student's model)", modality,
                   self.student.model) for i, modality in enumerate(self.distill.modality_baselines)]
        for role, modality, model in roles:
            check_input_channels(role, modality, model, self.data.depth)
        baselines = self.distill.modality_baselines
        if self.student.modality in baselines or len(set(baselines)) != len(baselines):
            raise ValueError(f"distill.modality_baselines {baselines} must list other "
                             f"modalities than the student's ({self.student.modality!r}, whose "
                             "no-KD baseline is distill.baseline), each once")
        uses_depth = any(modality == "depth" for _, modality, _ in roles)
        if (self.job == "kv_prefix") != (self.kv_prefix is not None):
            raise ValueError("job: kv_prefix and the kv_prefix section go together: a KV-prefix "
                             "run sets job: kv_prefix and describes its expert and variants in "
                             "kv_prefix (see recipes/kv_prefix.yaml); a distillation run has "
                             "neither")
        if self.kv_prefix is not None and self.teacher.modality != "rgb":
            raise ValueError("kv_prefix: the expert reads RGB images, so the base model "
                             "(teacher) must see rgb too")
        if uses_depth and self.data.augment.views:
            raise ValueError("data.augment.views > 0 with a model that sees depth: augmented "
                             "views transform the RGB image only. Set data.augment.views: 0.")
        if uses_depth and self.data.source == "vizwiz":
            raise ValueError("data.source 'vizwiz' has no depth maps; a model that sees depth "
                             "needs source rgbd, vqa (with train/val.depth) or shapesworld")
        return self


def input_channels(modality: str, depth: DepthSettings) -> int:
    return 3 if modality == "rgb" else depth.input_channels


def check_input_channels(role: str, modality: str, model: ModelSettings,
                         depth: DepthSettings) -> None:
    """A model must read as many image channels as its modality gives it. A model with an
    ``in_channels`` parameter left at None gets it from the modality (VQAJob.build)."""

    config = model_config(model.name, model.params)
    gives = input_channels(modality, depth)
    reads = getattr(config, "in_channels", 3)
    if reads is None or reads == gives:
        return
    where = "data.depth.channels / data.depth.mask_channel" if modality == "depth" else "rgb"
    side = "teacher" if role.startswith("teacher") else "student"
    fix = (f"leave {side}.model.params.in_channels out (it then follows the modality), or set "
           f"it to {gives}" if hasattr(config, "in_channels") else
           "this model reads 3-channel images: set data.depth.channels: 3 and "
           "data.depth.mask_channel: false")
    raise ValueError(f"{role} sees {modality} with {gives} channel(s) ({where}) but its model "
                     f"{model.name!r} reads {reads}; {fix}")


# ---------------------------------------------------------------------------------------------
# Loading, overrides and error reporting


def _valid_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the schema level at ``loc`` (for 'unknown key' messages)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type)
                                         and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(part)
        if field is None:
            break
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nested = [c for c in candidates for c in (c, *getattr(c, "__args__", ()))
                  if isinstance(c, type) and issubclass(c, BaseModel)]
        current = nested[0] if nested else None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _format_errors(error: ValidationError, source: str, schema: type[BaseModel] | None = None,
                   example: str = "") -> str:
    schema = schema or Recipe
    lines = [f"recipe {source} has {error.error_count()} problem(s):"]
    for item in error.errors():
        loc = tuple(item["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            valid = _valid_keys(schema, loc[:-1])
            lines.append(f"  - {where}: unknown key. Valid keys here: {', '.join(valid)}")
            continue
        message = item["msg"].removeprefix("Value error, ")
        given = item.get("input")
        shown = "" if isinstance(given, dict) else f" (got {given!r})"
        lines.append(f"  - {where}: {message}{shown}")
    lines.append("Fix these fields in the file or with --set path.to.field=value"
                 + (f" ({example} shows every section)" if example else "")
                 + "; `vldistill validate RECIPE` checks a recipe without running it.")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b.c=value"`` -> (["a", "b", "c"], YAML-parsed value)."""
    if "=" not in text:
        raise RecipeError(f"override {text!r} is not of the form path.to.field=value "
                          "(e.g. --set distill.transfer_fraction=0.5)")
    path, value = text.split("=", 1)
    if not path or any(not part for part in path.split(".")):
        raise RecipeError(f"override {text!r} has an empty field name in {path!r}")
    return path.split("."), yaml.safe_load(value) if value else ""


def apply_override(data: dict[str, Any], path: list[str], value: Any,
                   defaults: dict[str, Any] | None = None) -> None:
    """Set ``path`` in ``data``. A section the user's recipe does not have is copied from
    ``defaults`` (the built-in recipe) first, so ``distill.terms.1.temperature=4`` works on a
    recipe that keeps the default terms, without merging other defaults into the user's data."""
    node: Any = data
    default: Any = defaults
    for depth, part in enumerate(path[:-1]):
        here = ".".join(path[:depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise RecipeError(f"override {'.'.join(path)}: {'.'.join(path[:depth])} is a "
                                  f"list of {len(node)}; use an index 0..{len(node) - 1}")
            node, default = node[int(part)], None
            continue
        default = default.get(part) if isinstance(default, dict) else None
        if part not in node:
            node[part] = copy.deepcopy(default) if isinstance(default, (dict, list)) else {}
        node = node[part]
        if not isinstance(node, (dict, list)):
            raise RecipeError(f"override {'.'.join(path)}: {here} is a value ({node!r}), not a "
                              "section")
    last = path[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise RecipeError(f"override {'.'.join(path)}: index {last!r} is not in the list")
        node[int(last)] = value
    else:
        node[last] = value


def recipe_from_dict(data: dict[str, Any], source: str = "<dict>",
                     overrides: Sequence[str] = (), schema: type[BaseModel] | None = None,
                     example: str = "") -> Any:
    """A recipe of ``schema`` (default: the VQA :class:`Recipe`) from plain data, with --set
    overrides; every problem reported at once, unknown keys with the valid ones listed."""
    schema = schema or Recipe
    data = _as_plain(data, source)
    defaults = schema().model_dump(mode="json") if overrides else None
    for text in overrides:
        apply_override(data, *parse_override(text), defaults)
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        raise RecipeError(_format_errors(error, source, schema, example)) from None


def _as_plain(data: Any, source: str = "<dict>") -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {source}: a recipe is a mapping of sections (data, teacher, "
                          f"student, ...), got {type(data).__name__}. Fix: write one "
                          f"'section: ...' per line, as in recipes/default.yaml.")
    return _copy(data)


def _copy(value: Any) -> Any:
    """A deep copy that also unshares YAML anchors: after ``student: {model: *m}`` an override
    of ``teacher.model`` must not change the student (copy.deepcopy would keep them shared)."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def load_recipe(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Recipe:
    """Load and validate a VQA recipe file (None: the built-in default recipe)."""
    job = recipe_job(path, overrides)
    if job not in typing.get_args(Recipe.model_fields["job"].annotation):
        raise RecipeError(f"recipe {path} says job: {job}, a job with a recipe schema of its "
                          f"own; run it with `vldistill run {path}` (this loader reads VQA "
                          "recipes: job vqa_kd or kv_prefix)")
    return load_recipe_as(Recipe, path, overrides, "recipes/default.yaml")


def read_recipe_data(path: str | Path | None, example: str = "recipes/default.yaml"
                     ) -> dict[str, Any]:
    """A recipe file's contents as plain data ({} for None, the built-in default)."""
    if path is None:
        return {}
    return _as_plain(read_yaml(path, example), str(path))


def recipe_job(path: str | Path | None, overrides: Sequence[str] = (),
               default: str = "vqa_kd") -> str:
    """The ``job:`` a recipe names (``--set job=...`` included); ``default`` when it names
    none. A recipe that still says ``task:`` gets the new key's name."""
    data = read_recipe_data(path)
    if "task" in data:
        raise RecipeError(f"recipe {path}: the key `task:` was renamed `job:`. Fix: write "
                          f"`job: {data['task']}` instead of `task: {data['task']}`.")
    for text in overrides:
        keys, value = parse_override(text)
        if keys == ["job"]:
            data["job"] = value
    job = data.get("job", default)
    if not isinstance(job, str):
        raise RecipeError(f"recipe {path or '(built-in default)'}: job is {job!r}; expected "
                          "the name of a job, e.g. job: vqa_kd")
    return job


def load_recipe_as(schema: type[BaseModel], path: str | Path | None,
                   overrides: Sequence[str] = (), example: str = "") -> Any:
    """A recipe of ``schema`` from YAML (None: the schema's defaults), with --set overrides;
    every problem reported at once, unknown keys with the valid ones listed."""
    source = str(path) if path is not None else "(built-in default)"
    return recipe_from_dict(read_recipe_data(path, example), source, overrides, schema, example)


def dump_recipe(recipe: BaseModel) -> str:
    """A fully resolved recipe of any job as YAML (saved as the run folder's recipe.yaml)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
