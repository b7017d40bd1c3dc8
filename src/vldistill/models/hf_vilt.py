"""Hugging Face ``ViltForQuestionAnswering`` as a vldistill teacher or student (issue 6).

The adapter loads a model and its processor with ``from_pretrained`` from a local folder the
user names (nothing is downloaded), preprocesses with the model's own processor (PIL backend:
its image size, normalisation and tokenizer), and returns the typed
:class:`~vldistill.models.ModelOutput`, so every loss applies. Teacher and student may differ in
all of their preprocessing: both read the same raw inputs::

    images       (N_img, 3, H, W) uint8, as the data pipeline yields them
    image_index  (N_q,) the image each question is about
    questions    N_q question strings

Outputs: ``logits`` (N_q, answers); ``text_embeds``: the text [CLS] token; ``image_embeds``:
the image [CLS] token; ``features["fused"]``: ViLT's pooled joint embedding (what its answer
head reads).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vldistill.core.errors import MissingFileError
from vldistill.models.checkpoint import HF_WEIGHTS, pickled_weights_note
from vldistill.models.outputs import ModelOutput

_TOKENIZER = ("tokenizer.json", "vocab.txt")
_PROCESSOR = ("preprocessor_config.json", "processor_config.json")


class CheckpointFolderError(MissingFileError):
    """A Hugging Face checkpoint folder lacks a file the model needs."""


def check_folder(path: Path, what: str = "ViLT") -> None:
    """Refuse a Hugging Face folder without a config, safetensors weights, a tokenizer or a
    processor config; the message lists what is missing and what was found."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointFolderError(f"{what} checkpoint folder {path} does not exist. Fix: pass "
                                    "the folder that save_pretrained wrote.")
    found = sorted(os.listdir(path))
    missing = []
    if "config.json" not in found:
        missing.append("config.json")
    if not any(name in found for name in HF_WEIGHTS):
        missing.append("model.safetensors" + pickled_weights_note(path))
    if not any(name in found for name in _TOKENIZER):
        missing.append("a tokenizer (tokenizer.json or vocab.txt)")
    if not any(name in found for name in _PROCESSOR):
        missing.append("a processor config (preprocessor_config.json or processor_config.json)")
    if missing:
        raise CheckpointFolderError(
            f"{what} checkpoint folder {path} is missing {'; '.join(missing)}. It holds: "
            f"{', '.join(found) or 'nothing'}. Fix: save the model and its processor there "
            "with model.save_pretrained(folder) and processor.save_pretrained(folder).")


def as_uint8_images(images: torch.Tensor) -> torch.Tensor:
    """Images for a Hugging Face image processor, (N, 3, H, W) uint8 on the CPU: uint8 RGB as
    it is; float images in [0, 1] (preprocessed depth repeated to 3 channels) scaled to 0..255
    (8 bits, as an RGB rendering of depth would be)."""
    pixels = images.detach().cpu()
    if pixels.shape[1] != 3:
        raise ValueError(f"Hugging Face vision models read 3-channel images, got "
                         f"{pixels.shape[1]}; for depth set data.depth.channels: 3 (and "
                         "mask_channel: false)")
    if pixels.dtype != torch.uint8:
        pixels = (pixels.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels


class ViltVQA(nn.Module):
    """A ``ViltForQuestionAnswering`` and its processor behind vldistill's model interface."""

    def __init__(self, model, processor, max_text_length: int | None = None) -> None:
        super().__init__()
        self.model, self.processor = model, processor
        limit = model.config.max_position_embeddings
        self.max_text_length = min(max_text_length or limit, limit)
        self._warned = False

    @classmethod
    def from_pretrained(cls, path: Path, answers: Sequence[str] | None = None,
                        max_text_length: int | None = None) -> ViltVQA:
        """Load model and processor from a local folder. With ``answers`` (a vocabulary in
        order), the answer head is kept when the folder's labels are exactly these, and is
        otherwise replaced by a new one over them (a warning says so)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import ViltConfig, ViltForQuestionAnswering, ViltProcessor

        check_folder(path)
        processor = ViltProcessor.from_pretrained(path)
        config = ViltConfig.from_pretrained(path)       # the labels, before loading weights once
        labels = [config.id2label[i] for i in range(config.num_labels)]
        if answers is None or labels == list(answers):
            return cls(ViltForQuestionAnswering.from_pretrained(path, use_safetensors=True),
                       processor, max_text_length)
        warnings.warn(f"{path}: its {len(labels)} answer labels differ from the "
                      f"{len(answers)} answers of this data; the answer head is new "
                      "(randomly initialised) and must be trained.", stacklevel=2)
        model = ViltForQuestionAnswering.from_pretrained(
            path, use_safetensors=True, num_labels=len(answers), id2label=dict(enumerate(answers)),
            label2id={a: i for i, a in enumerate(answers)}, ignore_mismatched_sizes=True)
        return cls(model, processor, max_text_length)

    @classmethod
    def from_config(cls, config: dict, answers: Sequence[str], question_vocab: Sequence[str],
                    image_size: int | None = None, max_text_length: int | None = None
                    ) -> ViltVQA:
        """A randomly initialised ViLT built in code (no pretrained folder needed): ``config``
        holds ``ViltConfig`` fields (``hidden_size``, ``num_hidden_layers``, ...); the tokenizer
        is word-level over ``question_vocab`` (the data's question vocabulary, lower-cased
        words, as vldistill's own tokenizer splits them); the image processor resizes to
        ``image_size`` (default: the config's) and normalises to [-1, 1]."""
        from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
        from transformers import (
            PreTrainedTokenizerFast,
            ViltConfig,
            ViltForQuestionAnswering,
            ViltProcessor,
        )
        from transformers.models.vilt.image_processing_pil_vilt import ViltImageProcessorPil

        special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        words = special + [w for w in question_vocab if w not in special and not
                           w.startswith("<")]
        tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)},
                                               unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[^a-z0-9]+"), behavior="removed")
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
        fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]",
                                       unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]")
        settings = {"max_position_embeddings": 40, **config}
        vilt_config = ViltConfig(vocab_size=len(words), num_labels=len(answers),
                                 id2label=dict(enumerate(answers)),
                                 label2id={a: i for i, a in enumerate(answers)}, **settings)
        size = image_size or vilt_config.image_size
        processor = ViltProcessor(
            image_processor=ViltImageProcessorPil(size={"shortest_edge": size},
                                                  size_divisor=vilt_config.patch_size),
            tokenizer=fast)
        return cls(ViltForQuestionAnswering(vilt_config), processor, max_text_length)

    @property
    def answers(self) -> list[str]:
        return [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]

    def save_pretrained(self, path: Path) -> None:
        """Model (safetensors) and processor, loadable again with :meth:`from_pretrained`."""
        self.model.save_pretrained(path)
        self.processor.save_pretrained(path)

    def encode(self, images: torch.Tensor, image_index: torch.Tensor,
               questions: Sequence[str]) -> dict[str, torch.Tensor]:
        """The model's own preprocessing of one image per question."""
        if len(questions) != len(image_index):
            raise ValueError(f"{len(questions)} questions but {len(image_index)} image indices")
        pixels = as_uint8_images(images).permute(0, 2, 3, 1).numpy()          # (N_img, H, W, 3)
        # each image is preprocessed once, then repeated for its questions (a batch holds ~8
        # questions per image: the image processor was most of a training step's CPU time)
        used, rows = np.unique(image_index.cpu().numpy(), return_inverse=True)
        text = self.processor.tokenizer(list(questions), padding=True, truncation=True,
                                        max_length=self.max_text_length, return_tensors="pt")
        # a question can only have been cut when the padded batch reached the limit: only then
        # tokenize again, untruncated, to count them (once: stop measuring after the warning)
        if not self._warned and text["input_ids"].shape[1] >= self.max_text_length:
            lengths = [len(ids) for ids in self.processor.tokenizer(list(questions))["input_ids"]]
            if max(lengths, default=0) > self.max_text_length:
                warnings.warn(f"{sum(n > self.max_text_length for n in lengths)} question(s) "
                              f"are longer than this ViLT's text limit of "
                              f"{self.max_text_length} tokens (longest: {max(lengths)}); they "
                              "are truncated.", stacklevel=3)
                self._warned = True
        vision = self.processor.image_processor(
            [np.ascontiguousarray(pixels[i]) for i in used.tolist()], return_tensors="pt")
        rows = torch.from_numpy(rows.reshape(-1))
        encoded = {**text, "pixel_values": vision["pixel_values"][rows],
                   "pixel_mask": vision["pixel_mask"][rows]}
        device = next(self.model.parameters()).device
        return {k: v.to(device) for k, v in encoded.items()}

    def forward(self, images: torch.Tensor, image_index: torch.Tensor,
                questions: Sequence[str], **unused) -> ModelOutput:
        return self.forward_encoded(self.encode(images, image_index, questions))

    def forward_encoded(self, encoded: dict[str, torch.Tensor]) -> ModelOutput:
        """The network on :meth:`encode`'s output. Images without padding (a full pixel mask,
        as for equal-sized images) take :func:`full_mask_image_embeds` instead of Hugging
        Face's per-sample loop; padded batches take Hugging Face's own path."""
        encoded = dict(encoded)
        pixel_mask = encoded.pop("pixel_mask")
        if bool(pixel_mask.all()):
            image = full_mask_image_embeds(self.model.vilt.embeddings,
                                           encoded.pop("pixel_values"))
            out = vilt_on_image_embeds(self.model.vilt, image, **encoded)
        else:
            out = self.model.vilt(**encoded, pixel_mask=pixel_mask)
        pooled = out.pooler_output                                              # (N_q, D)
        text_length = encoded["input_ids"].shape[1]
        hidden = out.last_hidden_state                                          # (N_q, T+I, D)
        return ModelOutput(logits=self.model.classifier(pooled),
                           image_embeds=hidden[:, text_length], text_embeds=hidden[:, 0],
                           features={"fused": pooled})


def image_positions(embeddings, height: int, width: int) -> torch.Tensor:
    """ViLT's position embeddings for a ``height`` x ``width`` patch grid: the [CLS] position
    and the patch positions bilinearly interpolated, as ``visual_embed`` does. (1, 1 + h*w, D)."""
    config = embeddings.config
    grid = config.image_size // config.patch_size
    table = embeddings.position_embeddings                                  # (1, 1 + g*g, D)
    spatial = table[:, 1:, :].transpose(1, 2).reshape(1, table.shape[-1], grid, grid)
    spatial = nn.functional.interpolate(spatial, size=(height, width), mode="bilinear",
                                        align_corners=True)
    return torch.cat([table[:, :1, :], spatial.flatten(2).transpose(1, 2)], dim=1)


def full_mask_image_embeds(embeddings, pixel_values: torch.Tensor,
                           positions: torch.Tensor | None = None) -> torch.Tensor:
    """``ViltEmbeddings.visual_embed`` for images without padding (a full pixel mask).

    Hugging Face's version loops over the batch in Python to sample patches (with a full mask
    it draws a random permutation per image) and to interpolate position embeddings per image;
    at 256 questions a step that loop dominated training, on GPU and CPU alike. With a full
    mask it reduces to: patch projection, the [CLS] token, position embeddings, dropout. The
    result equals Hugging Face's up to that permutation of the patch tokens, which ViLT's
    encoder (no causal mask; it pools the text [CLS] token) does not see. ``positions``:
    precomputed :func:`image_positions` (the export fixes them)."""
    patches = embeddings.patch_embeddings(pixel_values)                     # (B, D, h, w)
    if positions is None:
        positions = image_positions(embeddings, patches.shape[2], patches.shape[3])
    patches = patches.flatten(2).transpose(1, 2)                            # (B, h*w, D)
    image = torch.cat([embeddings.cls_token.expand(patches.shape[0], -1, -1), patches], dim=1)
    return embeddings.dropout(image + positions)


def vilt_on_image_embeds(vilt, image: torch.Tensor, **text: torch.Tensor):
    """The ViLT encoder on prepared image tokens (:func:`full_mask_image_embeds`), every image
    token attended to; ``text``: ``input_ids``, ``attention_mask`` (and token type ids)."""
    image_mask = torch.ones(image.shape[:2], dtype=text["attention_mask"].dtype,
                            device=image.device)
    return vilt(**text, image_embeds=image, pixel_mask=image_mask)
