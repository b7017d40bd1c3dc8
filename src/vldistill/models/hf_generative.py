"""Generative Hugging Face VQA models behind vldistill's model interface (LLaVA-OneVision,
BLIP-2): teacher forcing on the answer and closed-set scoring by the first answer token.

Inputs are the data pipeline's (``images`` (N_img, 3, H, W) uint8, or float in [0, 1];
``image_index``; ``questions``) plus ``answers``: each question's most common annotator answer,
or None for an unlabelled question. Each question becomes one sequence, ``prompt(question)``
then the answer tokens and end-of-sequence; an unlabelled question gets only the prompt.

Outputs (:class:`~vldistill.models.ModelOutput`):
- ``logits`` (N_q, A): log-probability of the first token of each answer of the answer
  vocabulary at the first answer position (closed-set scoring, for evaluation and answer-level
  KD). Exact when every answer is one token, as for ShapesWorld here and for most VQA answers
  ("yes", "2", "red") in BPE vocabularies; answers sharing a first token tie.
- ``features["answer_token_logits"]`` (N_q, T, V): the vocabulary logits at the answer positions
  (the logits of answer token t sit at position t - 1), ``["answer_token_mask"]`` (N_q, T) and
  ``["answer_token_ids"]`` (N_q, T, -100 where there is no gold token). An unlabelled question has
  one valid position: the first answer token's distribution, which needs no answer.
- whatever the subclass adds (:meth:`GenerativeVQA.visual_features`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from vldistill.models.hf_vilt import as_uint8_images
from vldistill.models.outputs import ModelOutput

IMAGE_TOKEN, VIDEO_TOKEN = "<image>", "<video>"
SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", IMAGE_TOKEN, VIDEO_TOKEN]


def word_level_tokenizer(words: Sequence[str], media_attributes: bool = True):
    """A ``PreTrainedTokenizerFast`` over lower-cased words (punctuation dropped) with the
    special tokens of LLaVA / BLIP-2; ``<image>`` / ``<video>`` match inside
    "<image><image>...". ``media_attributes``: expose them as ``tokenizer.image_token`` /
    ``video_token`` (LLaVA's processor reads them; BLIP-2's adds its own ``<image>``)."""
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
        extra_special_tokens={"image_token": IMAGE_TOKEN, "video_token": VIDEO_TOKEN}
        if media_attributes else None)


def words(texts: Sequence[str]) -> list[str]:
    return [w for text in texts for w in re.split(r"[^a-z0-9]+", text.lower()) if w]


class GenerativeVQA(nn.Module):
    """A Hugging Face image-to-text model and its processor; subclasses say how a prompt
    looks (:meth:`prompt_text`) and which visual features they expose."""

    def __init__(self, model, processor, answers: Sequence[str], prompt: str,
                 max_answer_tokens: int = 4) -> None:
        super().__init__()
        if "{question}" not in prompt:
            raise ValueError(f"the prompt {prompt!r} has no {{question}} field")
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
        self._captured: dict[str, torch.Tensor] = {}

    def save_pretrained(self, path) -> None:
        """Model (safetensors) and processor, loadable with ``from_pretrained``."""
        self.model.save_pretrained(path)
        self.processor.save_pretrained(path)

    def prompt_text(self, question: str) -> str:
        return self.prompt.format(question=question)

    def visual_features(self, n_questions: int) -> dict[str, torch.Tensor]:
        """Named features captured during the forward pass (subclasses)."""
        return {}

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
            text=[self.prompt_text(q) for q in questions], padding=True, return_tensors="pt")
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
        rows = torch.arange(len(questions), device=logits.device)[:, None]
        answer_logits = logits[rows, encoded["positions"]]                     # (N_q, T, V)
        first = torch.log_softmax(answer_logits[:, 0].float(), dim=-1)
        features = self.visual_features(len(questions))
        embeds = features.pop("image_embeds", None)
        return ModelOutput(
            logits=first[:, self.first_tokens], image_embeds=embeds,
            features={"answer_token_logits": answer_logits,
                      "answer_token_mask": encoded["valid"],
                      "answer_token_ids": encoded["targets"], **features})
