"""Hugging Face ``Blip2ForConditionalGeneration`` (vision encoder, Q-Former, OPT) as a generative
VQA model: the model seed 002 modulates with KV prefixes in the Q-Former's cross-attention.

Loaded from a local folder with ``from_pretrained`` (nothing is downloaded), or built in code
from ``Blip2VisionConfig`` / ``Blip2QFormerConfig`` / ``OPTConfig`` fields with a word-level
tokenizer over the data's words (tests, small models). Images go through
``BlipImageProcessorPil`` (no torchvision). The prompt follows BLIP-2's VQA format,
"Question: {question} Answer:"; the processor puts ``num_query_tokens`` image tokens before it.

Inputs and outputs are those of every generative adapter (vldistill.models.hf_generative),
plus ``features["query_tokens"]`` (N_q, num_query_tokens, D_qformer): the Q-Former's output, and
``image_embeds`` (N_q, D_text): the mean of its projection into the language model.

The Q-Former runs once per question (one sequence per question, as the processor builds them),
so KV prefixes are indexed per question (``kv_prefix_rows``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vldistill.models.hf_generative import IMAGE_TOKEN, GenerativeVQA, word_level_tokenizer, words
from vldistill.models.hf_vilt import check_folder

DEFAULT_PROMPT = "Question: {question} Answer:"


class Blip2VQA(GenerativeVQA):
    """A BLIP-2 model and its processor behind vldistill's model interface."""

    kv_prefix_rows = "questions"

    def __init__(self, model, processor, answers: Sequence[str], prompt: str = DEFAULT_PROMPT,
                 max_answer_tokens: int = 4) -> None:
        super().__init__(model, processor, answers, prompt, max_answer_tokens)
        self._hooks = [model.language_projection.register_forward_hook(self._capture)]

    @classmethod
    def from_pretrained(cls, path: Path, answers: Sequence[str], prompt: str = DEFAULT_PROMPT,
                        max_answer_tokens: int = 4) -> Blip2VQA:
        """Model, tokenizer and image processor from a local folder (safetensors only)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import (
            AutoTokenizer,
            Blip2ForConditionalGeneration,
            Blip2Processor,
            BlipImageProcessorPil,
        )

        check_folder(path, "BLIP-2")
        model = Blip2ForConditionalGeneration.from_pretrained(path, use_safetensors=True)
        try:
            processor = Blip2Processor.from_pretrained(path)
        except (OSError, ValueError, TypeError):      # an image processor that needs torchvision
            processor = Blip2Processor(BlipImageProcessorPil.from_pretrained(path),
                                       AutoTokenizer.from_pretrained(path),
                                       num_query_tokens=model.config.num_query_tokens)
        processor.num_query_tokens = processor.num_query_tokens or model.config.num_query_tokens
        return cls(model, processor, answers, prompt, max_answer_tokens)

    @classmethod
    def from_config(cls, config: dict[str, Any], answers: Sequence[str],
                    question_vocab: Sequence[str], prompt: str = DEFAULT_PROMPT,
                    max_answer_tokens: int = 4) -> Blip2VQA:
        """A randomly initialised model built in code. ``config``: ``vision``
        (Blip2VisionConfig fields), ``qformer`` (Blip2QFormerConfig fields), ``text``
        (OPTConfig fields), ``num_query_tokens`` (default 4) and ``image_size`` (default 32,
        a multiple of the vision patch size)."""
        from transformers import (
            Blip2Config,
            Blip2ForConditionalGeneration,
            Blip2Processor,
            Blip2QFormerConfig,
            Blip2VisionConfig,
            BlipImageProcessorPil,
            OPTConfig,
        )

        config = dict(config)
        size = int(config.pop("image_size", 32))
        queries = int(config.pop("num_query_tokens", 4))
        parts = {key: dict(config.pop(key, {})) for key in ("vision", "qformer", "text")}
        if config:
            raise ValueError(f"BLIP-2 config has unknown keys {sorted(config)}; valid: vision, "
                             "qformer, text, num_query_tokens, image_size")
        patch = int(parts["vision"].setdefault("patch_size", 8))
        if size % patch:
            raise ValueError(f"BLIP-2 image_size {size} must be a multiple of the patch size "
                             f"{patch}")
        tokenizer = word_level_tokenizer(words([*question_vocab, *answers, DEFAULT_PROMPT,
                                                prompt]), media_attributes=False)
        vision = Blip2VisionConfig(**{**parts["vision"], "image_size": size})
        qformer = Blip2QFormerConfig(**{**parts["qformer"],
                                        "encoder_hidden_size": vision.hidden_size})
        text = OPTConfig(**{"max_position_embeddings": 256, **parts["text"],
                            "vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
                            "bos_token_id": tokenizer.bos_token_id,
                            "eos_token_id": tokenizer.eos_token_id})
        model = Blip2ForConditionalGeneration(Blip2Config(
            vision_config=vision, qformer_config=qformer, text_config=text,
            num_query_tokens=queries,
            image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)))
        processor = Blip2Processor(BlipImageProcessorPil(size={"height": size, "width": size}),
                                   tokenizer, num_query_tokens=queries)
        return cls(model, processor, answers, prompt, max_answer_tokens)

    def _capture(self, module, inputs, output) -> None:
        self._captured = {"query_tokens": inputs[0], "projected": output}

    def visual_features(self, n_questions: int) -> dict[str, torch.Tensor]:
        return {"image_embeds": self._captured["projected"].mean(dim=1),
                "query_tokens": self._captured["query_tokens"]}
