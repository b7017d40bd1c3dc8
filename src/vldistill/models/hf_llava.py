"""Hugging Face ``LlavaOnevisionForConditionalGeneration`` as a generative VQA teacher or student.

Seed 001 distils LLaVA-OneVision 7B (RGB) into 0.5B (depth). The adapter loads a model from a
local folder with ``from_pretrained`` (nothing is downloaded), or builds one in code from
``SiglipVisionConfig`` / ``Qwen2Config`` fields with a word-level tokenizer over the data's
words (tests, and small students). Without torchvision the stock processor cannot be built or
loaded (docs/notes/llava-onevision.md); :func:`onevision_processor_class` is the same processor
without a video processor, and images go through ``LlavaOnevisionImageProcessorPil``.

Inputs are the data pipeline's (``images`` (N_img, 3, H, W) uint8, or float in [0, 1] such as
depth repeated to 3 channels; ``image_index``; ``questions``) plus ``answers``: each question's
most common annotator answer, or None for an unlabelled question. Each question becomes one
sequence, ``prompt(question)`` then the answer tokens and end-of-sequence (teacher forcing);
an unlabelled question gets only the prompt.

Outputs (:class:`~vldistill.models.ModelOutput`):
- ``logits`` (N_q, A): log-probability of the first token of each answer of the answer
  vocabulary at the first answer position (closed-set scoring, for evaluation and answer-level
  KD). Exact when every answer is one token, as for ShapesWorld here and for most VQA answers
  ("yes", "2", "red") in BPE vocabularies; answers sharing a first token tie.
- ``features["answer_token_logits"]`` (N_q, T, V): the vocabulary logits at the answer positions
  (the logits of answer token t sit at position t - 1), ``["answer_token_mask"]`` (N_q, T) and
  ``["answer_token_ids"]`` (N_q, T, -100 where there is no gold token). An unlabelled question has
  one valid position: the first answer token's distribution, which needs no answer.
- ``features["vision_tokens"]`` (N_q, crops * patches, D_vision): the vision tower output the
  projector reads; ``features["projector_tokens"]`` (N_q, crops * patches, D_text): the
  projector output; ``image_embeds`` (N_q, D_text): its mean.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vldistill.models.hf_vilt import as_uint8_images, check_folder
from vldistill.models.outputs import ModelOutput

IMAGE_TOKEN, VIDEO_TOKEN = "<image>", "<video>"
SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", IMAGE_TOKEN, VIDEO_TOKEN]
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


def word_level_tokenizer(words: Sequence[str]):
    """A ``PreTrainedTokenizerFast`` over lower-cased words (punctuation dropped) with the
    LLaVA special tokens; ``<image>`` / ``<video>`` match inside "<image><image>..."."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocabulary = list(dict.fromkeys(SPECIAL + [w for w in words if w]))
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocabulary)},
                                           unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[^a-z0-9]+"), behavior="removed")
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": IMAGE_TOKEN, "video_token": VIDEO_TOKEN})


def _words(texts: Sequence[str]) -> list[str]:
    import re

    return [w for text in texts for w in re.split(r"[^a-z0-9]+", text.lower()) if w]


class LlavaOnevisionVQA(nn.Module):
    """A LLaVA-OneVision model and its processor behind vldistill's model interface."""

    def __init__(self, model, processor, answers: Sequence[str],
                 prompt: str = DEFAULT_PROMPT, max_answer_tokens: int = 4) -> None:
        super().__init__()
        if "{question}" not in prompt:
            raise ValueError(f"the LLaVA prompt {prompt!r} has no {{question}} field")
        self.model, self.processor = model, processor
        self.prompt, self.max_answer_tokens = prompt, max_answer_tokens
        self.answers = list(answers)
        tokenizer = processor.tokenizer
        self.answer_ids = [tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers]
        empty = [a for a, ids in zip(answers, self.answer_ids) if not ids]
        if empty:
            raise ValueError(f"answers {empty[:5]} tokenize to nothing with this tokenizer")
        self.register_buffer("first_tokens", torch.tensor([ids[0] for ids in self.answer_ids]),
                             persistent=False)
        self._hooks = [model.model.multi_modal_projector.register_forward_hook(self._capture)]
        self._captured: dict[str, torch.Tensor] = {}

    # -- building

    @classmethod
    def from_pretrained(cls, path: Path, answers: Sequence[str], prompt: str = DEFAULT_PROMPT,
                        max_answer_tokens: int = 4) -> LlavaOnevisionVQA:
        """Model, tokenizer and image processor from a local folder (safetensors only)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import (AutoTokenizer, LlavaOnevisionForConditionalGeneration,
                                  LlavaOnevisionImageProcessorPil)

        check_folder(path, "LLaVA-OneVision")
        processor_class = onevision_processor_class()
        try:
            processor = processor_class.from_pretrained(path)
        except (OSError, ValueError, TypeError):      # a hub folder also names a video processor
            processor = processor_class(
                image_processor=LlavaOnevisionImageProcessorPil.from_pretrained(path),
                tokenizer=AutoTokenizer.from_pretrained(path))
        model = LlavaOnevisionForConditionalGeneration.from_pretrained(path)
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
        from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                                  LlavaOnevisionImageProcessorPil, Qwen2Config,
                                  SiglipVisionConfig)

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
        tokenizer = word_level_tokenizer(_words([*question_vocab, *answers, DEFAULT_PROMPT,
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

    def save_pretrained(self, path: Path) -> None:
        """Model (safetensors) and processor, loadable with :meth:`from_pretrained`."""
        self.model.save_pretrained(path)
        self.processor.save_pretrained(path)

    # -- running

    def _capture(self, module, inputs, output) -> None:
        self._captured = {"vision_tokens": inputs[0], "projector_tokens": output}

    def _prompt(self, question: str) -> str:
        text = self.prompt.format(question=question)
        if getattr(self.processor, "chat_template", None):
            conversation = [{"role": "user", "content": [{"type": "image"},
                                                          {"type": "text", "text": text}]}]
            return self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        return f"{IMAGE_TOKEN} {text}"

    def encode(self, images: torch.Tensor, image_index: torch.Tensor, questions: Sequence[str],
               answers: Sequence[str | None] | None = None) -> dict[str, Any]:
        """Token ids of prompt + answer + end-of-sequence per question (right-padded), pixel
        values, and where the answer tokens are."""
        if len(questions) != len(image_index):
            raise ValueError(f"{len(questions)} questions but {len(image_index)} image indices")
        answers = list(answers) if answers is not None else [None] * len(questions)
        pixels = as_uint8_images(images).permute(0, 2, 3, 1).numpy()
        tokenizer = self.processor.tokenizer
        tokenizer.padding_side = "right"
        encoded = self.processor(
            images=[np.ascontiguousarray(pixels[i]) for i in image_index.tolist()],
            text=[self._prompt(q) for q in questions], padding=True, return_tensors="pt")
        lengths = encoded["attention_mask"].sum(dim=1)
        eos = tokenizer.eos_token_id
        gold = [(tokenizer(a, add_special_tokens=False)["input_ids"] + [eos])
                [:self.max_answer_tokens] if a is not None else [] for a in answers]
        width = int(max(int(n) + len(g) for n, g in zip(lengths, gold)))
        ids = torch.full((len(questions), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        steps = max(1, max(len(g) for g in gold))
        positions = torch.zeros(len(questions), steps, dtype=torch.long)
        targets = torch.full((len(questions), steps), -100, dtype=torch.long)
        valid = torch.zeros(len(questions), steps, dtype=torch.bool)
        for row, (length, tokens) in enumerate(zip(lengths.tolist(), gold)):
            ids[row, :length] = encoded["input_ids"][row, :length]
            ids[row, length:length + len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, :length + len(tokens)] = 1
            count = max(1, len(tokens))          # an unlabelled row: the first position only
            positions[row, :count] = torch.arange(length - 1, length - 1 + count)
            valid[row, :count] = True
            targets[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        inputs = {k: v for k, v in encoded.items() if k not in ("input_ids", "attention_mask")}
        device = next(self.model.parameters()).device
        return {"inputs": {"input_ids": ids.to(device), "attention_mask": mask.to(device),
                           **{k: v.to(device) for k, v in inputs.items()}},
                "positions": positions.to(device), "valid": valid.to(device),
                "targets": targets.to(device)}

    def forward(self, images: torch.Tensor, image_index: torch.Tensor,
                questions: Sequence[str], answers: Sequence[str | None] | None = None,
                **unused) -> ModelOutput:
        encoded = self.encode(images, image_index, questions, answers)
        self._captured = {}
        logits = self.model(**encoded["inputs"]).logits                          # (N_q, L, V)
        positions = encoded["positions"]
        rows = torch.arange(len(questions), device=logits.device)[:, None]
        answer_logits = logits[rows, positions]                                # (N_q, T, V)
        first = torch.log_softmax(answer_logits[:, 0].float(), dim=-1)
        vision = self._captured["vision_tokens"]                         # (N_q*crops, P, Dv)
        projected = self._captured["projector_tokens"]                   # (N_q*crops, P, Dt)
        vision = vision.reshape(len(questions), -1, vision.shape[-1])
        projected = projected.reshape(len(questions), -1, projected.shape[-1])
        return ModelOutput(
            logits=first[:, self.first_tokens],
            image_embeds=projected.mean(dim=1),
            features={"answer_token_logits": answer_logits,
                      "answer_token_mask": encoded["valid"],
                      "answer_token_ids": encoded["targets"],
                      "vision_tokens": vision, "projector_tokens": projected})


def _patches(config) -> int:
    vision = config.vision_config
    return (vision.image_size // vision.patch_size) ** 2
