"""A Fusion-in-Decoder reader (Izacard & Grave, EACL 2021) over ``T5ForConditionalGeneration``.

Each (question, image as text, fact) passage is encoded separately by T5's encoder; the n
encoder outputs of a question are concatenated along the sequence axis and the decoder reads
them all at once (cross-attention over n * L tokens) to produce the answer::

    passages (B * n, L) -> encoder -> (B * n, L, D) -> reshape (B, n * L, D) -> decoder -> answer

A reader is built in code (a tiny T5 and a word-level tokenizer over the data's words, trained
from scratch) or loaded from a local folder (``from_pretrained``: a real T5 checkpoint and its
sentencepiece or ``tokenizers`` vocabulary), and both take the same code path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vldistill.models.checkpoint import require_safetensors

NO_FACT = "none"
SPECIAL = ["<pad>", "</s>", "<unk>"]


def passage(question: str, image_text: str | None, fact: str | None) -> str:
    parts = [f"question: {question}"]
    if image_text:
        parts.append(f"image: {image_text}")
    parts.append(f"fact: {fact if fact else NO_FACT}")
    return " ".join(parts)


def word_tokenizer(texts: Sequence[str]):
    """A word-level ``PreTrainedTokenizerFast`` over the lower-cased words of ``texts``, with T5's
    special tokens (pad 0, end-of-sequence 1, unknown 2)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for t in texts for w in re.findall(r"[a-z0-9]+", t.lower())})
    vocabulary = {w: i for i, w in enumerate(SPECIAL + [w for w in words if w not in SPECIAL])}
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[^a-z0-9]+"), behavior="removed")
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                             special_tokens=[("</s>", 1)])
    tokenizer.decoder = None
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>",
                                   eos_token="</s>", unk_token="<unk>")


class FiDReader(nn.Module):
    """T5 with Fusion-in-Decoder inputs: ``forward`` gives the answer-token logits (teacher
    forcing), ``loss`` the answer negative log-likelihood, ``generate`` the answers."""

    def __init__(self, model, tokenizer, max_passage_tokens: int = 48,
                 max_answer_tokens: int = 6) -> None:
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.max_passage_tokens, self.max_answer_tokens = max_passage_tokens, max_answer_tokens

    @classmethod
    def from_config(cls, texts: Sequence[str], d_model: int = 64, layers: int = 2,
                    heads: int = 4, d_ff: int | None = None, seed: int = 0, **kwargs
                    ) -> FiDReader:
        """A tiny T5 built in code, its tokenizer word-level over ``texts`` (questions,
        captions, facts and answers of the training data)."""
        from transformers import T5Config, T5ForConditionalGeneration

        tokenizer = word_tokenizer(texts)
        torch.manual_seed(seed)
        config = T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=d_model // heads,
                          d_ff=d_ff or 4 * d_model, num_layers=layers,
                          num_decoder_layers=layers, num_heads=heads,
                          pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=tokenizer.eos_token_id,
                          decoder_start_token_id=tokenizer.pad_token_id,
                          feed_forward_proj="relu", tie_word_embeddings=False)
        return cls(T5ForConditionalGeneration(config), tokenizer, **kwargs)

    @classmethod
    def from_pretrained(cls, path: Path, **kwargs) -> FiDReader:
        """A T5 checkpoint folder (config, model.safetensors, tokenizer files), offline."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer, T5ForConditionalGeneration

        path = require_safetensors(path, "T5 reader")
        return cls(T5ForConditionalGeneration.from_pretrained(path, use_safetensors=True),
                   AutoTokenizer.from_pretrained(path), **kwargs)

    def save_pretrained(self, path: Path) -> None:
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, questions: Sequence[str], image_texts: Sequence[str | None],
               facts: Sequence[Sequence[str | None]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused encoder states (B, n * L, D) and their attention mask (B, n * L)."""
        n = len(facts[0])
        if any(len(f) != n for f in facts):
            raise ValueError("every question needs the same number of facts (pad with None)")
        texts = [passage(q, v, f) for q, v, fs in zip(questions, image_texts, facts) for f in fs]
        batch = self.tokenizer(texts, padding=True, truncation=True,
                               max_length=self.max_passage_tokens,
                               return_tensors="pt").to(self.device)
        hidden = self.model.encoder(input_ids=batch["input_ids"],
                                    attention_mask=batch["attention_mask"]).last_hidden_state
        size = len(questions)
        return (hidden.reshape(size, -1, hidden.shape[-1]),
                batch["attention_mask"].reshape(size, -1))

    def labels(self, answers: Sequence[str]) -> torch.Tensor:
        batch = self.tokenizer(list(answers), padding=True, truncation=True,
                               max_length=self.max_answer_tokens, return_tensors="pt")
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        return labels.to(self.device)

    def forward(self, questions: Sequence[str], image_texts: Sequence[str | None],
                facts: Sequence[Sequence[str | None]], answers: Sequence[str]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(answer-token logits (B, T, V), labels (B, T), -100 at padding)."""
        from transformers.modeling_outputs import BaseModelOutput

        hidden, mask = self.encode(questions, image_texts, facts)
        labels = self.labels(answers)
        out = self.model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
                         attention_mask=mask, labels=labels)
        return out.logits, labels

    def loss(self, questions, image_texts, facts, answers) -> torch.Tensor:
        return answer_nll(*self(questions, image_texts, facts, answers))

    @torch.inference_mode()
    def generate(self, questions: Sequence[str], image_texts: Sequence[str | None],
                 facts: Sequence[Sequence[str | None]]) -> list[str]:
        """Greedy answers."""
        from transformers.modeling_outputs import BaseModelOutput

        hidden, mask = self.encode(questions, image_texts, facts)
        ids = self.model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
                                  attention_mask=mask, max_new_tokens=self.max_answer_tokens,
                                  do_sample=False, num_beams=1)
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]


def answer_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the answer tokens (labels -100 are padding)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
