"""Models: built-in architectures and adapters around Hugging Face models (ViLT, LLaVA-OV).

Every model returns a :class:`ModelOutput`. Models named in recipes are registered in
``MODELS`` with their config class, so a recipe's ``params`` are validated against it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from vldistill.core.registry import Registry
from vldistill.models.checkpoint import ModelCheckpoint
from vldistill.models.hf_blip2 import Blip2VQA
from vldistill.models.hf_generative import GenerativeVQA
from vldistill.models.hf_llava import LlavaOnevisionVQA
from vldistill.models.hf_vilt import ViltVQA
from vldistill.models.kv_prefix import KVPrefixModelSettings, KVPrefixVQA, build_expert
from vldistill.models.outputs import ModelOutput, as_model_output
from vldistill.models.vqa_net import VQANet, VQANetConfig


@dataclass(frozen=True)
class ModelEntry:
    config_class: type[BaseModel]
    build: Callable[..., nn.Module]   # build(config, num_answers=..., vocab_size=...)
    # build(..., answers=[...], question_vocab=[...]) too: models with labelled heads or their
    # own tokenizers need the strings, not only the sizes
    needs_vocabularies: bool = False


def _check_one_source(settings: BaseModel, what: str) -> None:
    """A Hugging Face model comes from a pretrained folder (path) or is built in code (config):
    exactly one of them."""
    if (settings.path is None) == (settings.config is None):
        raise ValueError(f"give exactly one of path (a pretrained folder) and config (a {what} "
                         "built in code)")


class ViltSettings(BaseModel):
    """A Hugging Face ViltForQuestionAnswering (vldistill.models.hf_vilt): from a local folder
    (``path``), or built in code with random weights (``config``: ViltConfig fields)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path | None = Field(None, description="folder written by save_pretrained: "
                              "config.json, model.safetensors, tokenizer and processor config")
    config: dict[str, Any] | None = Field(
        None, description="ViltConfig fields for a model built in code, e.g. {hidden_size: 128, "
        "num_hidden_layers: 4, num_attention_heads: 4, intermediate_size: 256, image_size: 64, "
        "patch_size: 8}; its tokenizer is word-level over the data's question vocabulary")
    image_size: int | None = Field(None, ge=8, description="processor image size for a "
                                   "model built from config; None: config.image_size")
    max_text_length: int | None = Field(None, ge=2, description="question tokens kept (longer "
                                        "ones are truncated, with a warning); None: the model's")

    @model_validator(mode="after")
    def _one_source(self) -> ViltSettings:
        _check_one_source(self, "ViLT")
        return self


def _build_vilt(config: ViltSettings, num_answers: int, vocab_size: int,
                answers: list[str] | None = None, question_vocab: list[str] | None = None
                ) -> nn.Module:
    if answers is None:                # rebuilt from a checkpoint without its vocabulary
        answers = [str(i) for i in range(num_answers)]
    if config.config is not None:
        if question_vocab is None:
            raise ValueError("a ViLT built from config needs the data's question vocabulary")
        return ViltVQA.from_config(config.config, answers, question_vocab, config.image_size,
                                   config.max_text_length)
    return ViltVQA.from_pretrained(config.path, answers, config.max_text_length)


class GenerativeSettings(BaseModel):
    """A generative Hugging Face VQA model (vldistill.models.hf_generative): from a local
    folder (``path``), or built in code (``config``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path | None = Field(None, description="folder written by save_pretrained: config, "
                              "model.safetensors, tokenizer, image processor config")
    config: dict[str, Any] | None = Field(None, description="a model built in code (see the "
                                          "adapter's from_config); its tokenizer is word-level "
                                          "over the data's words")
    prompt: str = Field("{question} answer with one word", description="the question prompt")
    max_answer_tokens: int = Field(4, ge=1, description="answer tokens (with end-of-sequence) "
                                   "teacher-forced and distilled")

    @model_validator(mode="after")
    def _one_source(self) -> GenerativeSettings:
        _check_one_source(self, type(self).__name__.removesuffix("Settings"))
        if "{question}" not in self.prompt:
            raise ValueError(f"prompt {self.prompt!r} needs a {{question}} field")
        return self


class LlavaOnevisionSettings(GenerativeSettings):
    """LlavaOnevisionForConditionalGeneration (vldistill.models.hf_llava); ``config``: {vision:
    SiglipVisionConfig fields, text: Qwen2Config fields, image_size: 32}. The prompt is the user
    turn; the tokenizer's chat template wraps it when it has one."""


class Blip2Settings(GenerativeSettings):
    """Blip2ForConditionalGeneration (vldistill.models.hf_blip2); ``config``: {vision:
    Blip2VisionConfig fields, qformer: Blip2QFormerConfig fields, text: OPTConfig fields,
    num_query_tokens: 4, image_size: 32}."""

    prompt: str = Field("Question: {question} Answer:", description="BLIP-2's VQA prompt")


def _generative_builder(adapter: type[GenerativeVQA]) -> Callable[..., nn.Module]:
    class_name = adapter.__name__

    def build(config: GenerativeSettings, num_answers: int, vocab_size: int,
              answers: list[str] | None = None, question_vocab: list[str] | None = None
              ) -> nn.Module:
        if answers is None:
            raise ValueError(f"a {class_name} model needs the answer vocabulary (its strings)")
        if config.config is not None:
            if question_vocab is None:
                raise ValueError(f"a {class_name} built from config needs the question "
                                 "vocabulary")
            return adapter.from_config(config.config, answers, question_vocab, config.prompt,
                                       config.max_answer_tokens)
        return adapter.from_pretrained(config.path, answers, config.prompt,
                                       config.max_answer_tokens)
    return build


def _build_kv_prefix(config, num_answers: int, vocab_size: int,
                     answers: list[str] | None = None, question_vocab: list[str] | None = None
                     ) -> nn.Module:
    """A base model (random weights; a checkpoint's replace them) modulated by expert
    prefixes (vldistill.models.kv_prefix)."""
    base = build_model(config.base["name"], config.base.get("params", {}), answers=answers,
                       question_vocab=question_vocab, num_answers=num_answers,
                       vocab_size=vocab_size)
    return KVPrefixVQA(base, build_expert(config.expert), config)


MODELS: Registry[ModelEntry] = Registry("model")
MODELS.register("vqa_attention")(ModelEntry(VQANetConfig, VQANet))
MODELS.register("vilt")(ModelEntry(ViltSettings, _build_vilt, needs_vocabularies=True))
MODELS.register("llava_onevision")(ModelEntry(
    LlavaOnevisionSettings, _generative_builder(LlavaOnevisionVQA),
    needs_vocabularies=True))
MODELS.register("blip2")(ModelEntry(
    Blip2Settings, _generative_builder(Blip2VQA),
    needs_vocabularies=True))
MODELS.register("kv_prefix")(ModelEntry(KVPrefixModelSettings, _build_kv_prefix,
                                        needs_vocabularies=True))


def model_config(name: str, params: dict[str, Any]) -> BaseModel:
    """Validate a registered model's params; unknown names raise and list the valid ones."""
    entry = MODELS.get(name)
    unknown = sorted(set(params) - set(entry.config_class.model_fields))
    if unknown:
        raise ValueError(f"model {name!r} has no parameter(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(entry.config_class.model_fields)}")
    return entry.config_class(**params)


def build_model(name: str, params: dict[str, Any], answers: list[str] | None = None,
                question_vocab: list[str] | None = None, **sizes: int) -> nn.Module:
    """Build a registered model from its recipe params and data-derived sizes (and the answer
    and question vocabularies, for models with labelled heads or their own tokenizers, such as
    Hugging Face ones)."""
    entry = MODELS.get(name)
    extra = ({"answers": answers, "question_vocab": question_vocab}
             if entry.needs_vocabularies else {})
    return entry.build(model_config(name, params), **sizes, **extra)


def build_from_checkpoint(checkpoint: ModelCheckpoint) -> nn.Module:
    with warnings.catch_warnings():
        # a Hugging Face model's answer head is rebuilt for the saved vocabulary; the saved
        # weights replace it just below, so "the head is new" is not news here
        warnings.filterwarnings("ignore", message=".*answer head is new")
        model = build_model(checkpoint.model_name, checkpoint.model_params,
                            answers=checkpoint.extra.get("answer_vocab"),
                            question_vocab=checkpoint.extra.get("question_vocab"),
                            **checkpoint.sizes)
    model.load_state_dict(checkpoint.state_dict)
    return model.eval()


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["MODELS", "ModelEntry", "ModelOutput", "VQANet", "VQANetConfig", "as_model_output",
           "build_from_checkpoint", "build_model", "model_config", "count_parameters"]
