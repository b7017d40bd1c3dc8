"""Hugging Face ``LlavaOnevisionForConditionalGeneration`` as a generative VQA teacher or student.

Seed 001 distils LLaVA-OneVision 7B (RGB) into 0.5B (depth). The adapter loads a model from a
local folder with ``from_pretrained`` (nothing is downloaded), or builds one in code from
``SiglipVisionConfig`` / ``Qwen2Config`` fields with a word-level tokenizer over the data's
words (tests, and small students). Without torchvision the stock processor cannot be built or
loaded (docs/notes/llava-onevision.md); :func:`onevision_processor_class` is the same processor
without a video processor, and images go through ``LlavaOnevisionImageProcessorPil``.

Inputs and outputs are those of every generative adapter (vldistill.models.hf_generative),
plus ``features["vision_tokens"]`` (N_q, crops * patches, D_vision): the vision tower output the
projector reads; ``features["projector_tokens"]`` (N_q, crops * patches, D_text): the
projector output; ``image_embeds`` (N_q, D_text): its mean.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vldistill.models.hf_generative import (
    IMAGE_TOKEN,
    VIDEO_TOKEN,
    GenerativeVQA,
    word_level_tokenizer,
    words,
)
from vldistill.models.hf_vilt import check_folder

DEFAULT_PROMPT = "{question} answer with one word"


@functools.cache
def onevision_processor_class():
    """``LlavaOnevisionProcessor`` without its video processor (which needs torchvision).

    A processor takes its parts and its saved settings from its ``__init__`` signature, so every
    setting is a named parameter here (settings passed through ``**kwargs`` are not saved)."""
    from transformers import LlavaOnevisionProcessor

    class OnevisionProcessor(LlavaOnevisionProcessor):
        def __init__(self, image_processor=None, tokenizer=None, num_image_tokens=None,
                     vision_feature_select_strategy=None, chat_template=None,
                     image_token=IMAGE_TOKEN, video_token=VIDEO_TOKEN,
                     vision_aspect_ratio="anyres_max_9", **kwargs):
            super().__init__(image_processor=image_processor, tokenizer=tokenizer,
                             video_processor=None, num_image_tokens=num_image_tokens,
                             vision_feature_select_strategy=vision_feature_select_strategy,
                             chat_template=chat_template, image_token=image_token,
                             video_token=video_token, vision_aspect_ratio=vision_aspect_ratio,
                             **kwargs)

    return OnevisionProcessor


class LlavaOnevisionVQA(GenerativeVQA):
    """A LLaVA-OneVision model and its processor behind vldistill's model interface."""

    def __init__(self, model, processor, answers: Sequence[str],
                 prompt: str = DEFAULT_PROMPT, max_answer_tokens: int = 4) -> None:
        super().__init__(model, processor, answers, prompt, max_answer_tokens)
        self._hooks = [model.model.multi_modal_projector.register_forward_hook(self._capture)]

    # -- building

    @classmethod
    def from_pretrained(cls, path: Path, answers: Sequence[str], prompt: str = DEFAULT_PROMPT,
                        max_answer_tokens: int = 4) -> LlavaOnevisionVQA:
        """Model, tokenizer and image processor from a local folder (safetensors only)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import (
            AutoTokenizer,
            LlavaOnevisionForConditionalGeneration,
            LlavaOnevisionImageProcessorPil,
        )

        check_folder(path, "LLaVA-OneVision")
        processor_class = onevision_processor_class()
        try:
            processor = processor_class.from_pretrained(path)
        except (OSError, ValueError, TypeError):      # a hub folder also names a video processor
            processor = processor_class(
                image_processor=LlavaOnevisionImageProcessorPil.from_pretrained(path),
                tokenizer=AutoTokenizer.from_pretrained(path))
        model = LlavaOnevisionForConditionalGeneration.from_pretrained(path, use_safetensors=True)
        processor.num_image_tokens = processor.num_image_tokens or _patches(model.config)
        processor.vision_feature_select_strategy = (processor.vision_feature_select_strategy or
                                                    model.config.vision_feature_select_strategy)
        return cls(model, processor, answers, prompt, max_answer_tokens)

    @classmethod
    def from_config(cls, config: dict[str, Any], answers: Sequence[str],
                    question_vocab: Sequence[str], prompt: str = DEFAULT_PROMPT,
                    max_answer_tokens: int = 4) -> LlavaOnevisionVQA:
        """A randomly initialised model built in code. ``config``: ``vision`` (SiglipVisionConfig
        fields), ``text`` (Qwen2Config fields) and ``image_size`` (crop side, a multiple of the
        patch size 16; default 32). The tokenizer is word-level over the questions' and
        answers' words; the image grid is one crop, so an image is 2 n^2 + n tokens, n =
        image_size / 16."""
        from transformers import (
            LlavaOnevisionConfig,
            LlavaOnevisionForConditionalGeneration,
            LlavaOnevisionImageProcessorPil,
            Qwen2Config,
            SiglipVisionConfig,
        )

        config = dict(config)
        size = int(config.pop("image_size", 32))
        vision, text = dict(config.pop("vision", {})), dict(config.pop("text", {}))
        if config:
            raise ValueError(f"LLaVA config has unknown keys {sorted(config)}; valid: vision, "
                             "text, image_size")
        patch = int(vision.setdefault("patch_size", 16))
        if size % patch:
            raise ValueError(f"LLaVA image_size {size} must be a multiple of the patch size "
                             f"{patch}")
        tokenizer = word_level_tokenizer(words([*question_vocab, *answers, DEFAULT_PROMPT,
                                                 prompt]))
        image_processor = LlavaOnevisionImageProcessorPil(
            size={"height": size, "width": size}, image_grid_pinpoints=[[size, size]])
        processor = onevision_processor_class()(
            image_processor=image_processor, tokenizer=tokenizer,
            num_image_tokens=(size // patch) ** 2, vision_feature_select_strategy="full")
        text_config = Qwen2Config(**{"max_position_embeddings": 256, **text,
                                     "vocab_size": len(tokenizer),
                                     "pad_token_id": tokenizer.pad_token_id,
                                     "bos_token_id": tokenizer.bos_token_id,
                                     "eos_token_id": tokenizer.eos_token_id,
                                     "tie_word_embeddings": False})
        vision_config = SiglipVisionConfig(**{**vision, "image_size": size,
                                              "vision_use_head": False})
        model = LlavaOnevisionForConditionalGeneration(LlavaOnevisionConfig(
            vision_config=vision_config, text_config=text_config,
            image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
            video_token_index=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN),
            vision_feature_select_strategy="full", vision_feature_layer=-1,
            image_grid_pinpoints=[[size, size]], tie_word_embeddings=False))
        return cls(model, processor, answers, prompt, max_answer_tokens)

    # -- running

    def _capture(self, module, inputs, output) -> None:
        self._captured = {"vision_tokens": inputs[0], "projector_tokens": output}

    def prompt_text(self, question: str) -> str:
        text = self.prompt.format(question=question)
        if getattr(self.processor, "chat_template", None):
            conversation = [{"role": "user", "content": [{"type": "image"},
                                                          {"type": "text", "text": text}]}]
            return self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        return f"{IMAGE_TOKEN} {text}"

    def visual_features(self, n_questions: int) -> dict[str, torch.Tensor]:
        vision = self._captured["vision_tokens"]                         # (N_q*crops, P, Dv)
        projected = self._captured["projector_tokens"]                   # (N_q*crops, P, Dt)
        vision = vision.reshape(n_questions, -1, vision.shape[-1])
        projected = projected.reshape(n_questions, -1, projected.shape[-1])
        return {"image_embeds": projected.mean(dim=1), "vision_tokens": vision,
                "projector_tokens": projected}


def _patches(config) -> int:
    vision = config.vision_config
    return (vision.image_size // vision.patch_size) ** 2
