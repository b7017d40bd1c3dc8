"""The built-in answer-classification VQA network, used as teacher and as student.

Read top to bottom. The shape that learned ShapesWorld quickly in the prototype (DESIGN.md,
"What makes distillation pay off") and that this follows:

    image (N_img, 3, H, W) uint8 RGB, or (N_img, C, H, W) float in [0, 1] (e.g. depth)
      -> conv stem down to a G x G grid, xy coordinates appended, 1x1 projection
      -> grid (N_img, G*G, D)
    question tokens (N_q, L)
      -> embedding -> GRU -> q (N_q, D)
    `hops` rounds of `heads` question-guided attention over the grid of each question's image;
    each head reads out the attended feature, the attended xy, a soft count and a max score,
    plus pairwise dx/dy between heads (without it, left/right stays at chance)
      -> state update after each hop
      -> MLP -> answer logits (N_q, num_answers)

Several questions share one image, so the stem (most of the cost) runs once per image and
``image_index`` (N_q,) says which image each question is about.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from vldistill.models.outputs import ModelOutput


class VQANetConfig(BaseModel):
    """Sizes of :class:`VQANet`. ``width`` sets almost all of the parameter count."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int = Field(64, ge=4, description="channels of the stem and attention dimension D")
    in_channels: int | None = Field(
        None, ge=1, description="image channels; None: from what the model sees in a recipe (3 "
        "for RGB; for depth, data.depth's channels, +1 with its mask channel), 3 elsewhere")
    word_dim: int = Field(32, ge=2, description="word embedding size")
    grid: int = Field(16, ge=2, description="side G of the attention grid")
    dilations: tuple[int, ...] = Field(
        (1, 2), min_length=1, description="one 3x3 conv per entry after the two stride-2 "
        "convs, with that dilation; (1, 2) sees 31 px, enough for a large object's shape")
    heads: int = Field(2, ge=1, description="attention heads per hop")
    hops: int = Field(2, ge=1, description="rounds of question-guided attention")
    mlp_dim: int = Field(128, ge=4, description="hidden size of the answer MLP")
    layer_norm: bool = Field(True, description="LayerNorm on grid features and question "
                             "(measured: teacher 53 -> 57 % val VQA accuracy at 1500 steps)")
    answer_bias: float = Field(-4.0, description="initial bias of the answer logits; a "
                               "negative prior (about -log(num_answers)) speeds up BCE training")


def _coordinate_grid(side: int) -> torch.Tensor:
    """(side*side, 2) xy coordinates in [-1, 1], row-major like a flattened feature map."""
    axis = torch.linspace(-1.0, 1.0, side)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=-1)


class ConvStem(nn.Module):
    """Image (N, C, H, W) -> features (N, G*G, D) with xy coordinates mixed in. uint8 images
    are scaled by 1/255; float images are taken as already in [0, 1] (preprocessed depth)."""

    def __init__(self, width: int, grid: int, dilations: tuple[int, ...] = (1,),
                 in_channels: int = 3) -> None:
        super().__init__()
        half = max(width // 2, 4)
        layers = [nn.Conv2d(in_channels, half, 3, stride=2, padding=1), nn.BatchNorm2d(half),
                  nn.ReLU(),
                  nn.Conv2d(half, width, 3, stride=2, padding=1), nn.BatchNorm2d(width),
                  nn.ReLU()]
        for dilation in dilations:
            layers += [nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation),
                       nn.BatchNorm2d(width), nn.ReLU()]
        self.convs = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.project = nn.Linear(width + 2, width)
        self.register_buffer("coords", _coordinate_grid(grid), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        dtype = self.convs[0].weight.dtype                              # float32 / bf16-true
        x = images.to(dtype)                                           # (N, C, H, W)
        x = (x / 255.0 if images.dtype == torch.uint8 else x) - 0.5
        x = self.pool(self.convs(x))                                   # (N, D, G, G)
        x = x.flatten(2).transpose(1, 2)                               # (N, G*G, D)
        coords = self.coords.expand(x.shape[0], -1, -1)                # (N, G*G, 2)
        return F.relu(self.project(torch.cat([x, coords], dim=-1)))   # (N, G*G, D)


class QuestionEncoder(nn.Module):
    """token ids (N, L), 0 = padding -> final GRU state (N, D)."""

    def __init__(self, vocab_size: int, word_dim: int, width: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        self.gru = nn.GRU(word_dim, width, batch_first=True)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embed(tokens), lengths.clamp(min=1).cpu(), batch_first=True,
            enforce_sorted=False)
        _, hidden = self.gru(packed)                                   # (1, N, D)
        return hidden[0]


class QuestionSlots:
    """Where each question sits when questions are packed per image.

    Attention is computed per image with one batched matmul over all its questions
    ((N_img, Q*h, D) @ (N_img, D, G*G)) instead of gathering the grid once per question, which
    made a step ~3x slower on CPU (many tiny matmuls plus a large gather and its backward).
    """

    def __init__(self, image_index: torch.Tensor, num_images: int) -> None:
        counts = torch.bincount(image_index, minlength=num_images)          # (N_img,)
        starts = torch.cumsum(counts, 0) - counts
        order = torch.argsort(image_index, stable=True)
        slot = torch.empty_like(image_index)
        slot[order] = torch.arange(len(image_index), device=image_index.device) - starts[
            image_index[order]]
        self.image_index, self.slot = image_index, slot
        self.num_images, self.per_image = num_images, int(counts.max()) if len(counts) else 0

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(N_q, h, D) -> (N_img, Q*h, D), zero where an image has fewer questions."""
        packed = x.new_zeros(self.num_images, self.per_image, *x.shape[1:])
        packed[self.image_index, self.slot] = x
        return packed.flatten(1, 2)

    def unpack(self, packed: torch.Tensor, heads: int) -> torch.Tensor:
        """(N_img, Q*h, X) -> (N_q, h, X)."""
        packed = packed.view(self.num_images, self.per_image, heads, packed.shape[-1])
        return packed[self.image_index, self.slot]


class AttentionHop(nn.Module):
    """One round of `heads` question-guided attentions over the grid; updates the state."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.queries = nn.Linear(width, width * heads)
        self.readout_dim = heads * (width + 4) + 2 * (heads * (heads - 1) // 2)
        self.update = nn.Sequential(nn.Linear(width + self.readout_dim, width), nn.ReLU(),
                                    nn.Linear(width, width))

    def forward(self, state: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                coords: torch.Tensor, slots: QuestionSlots,
                prefix: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """state (N_q, D); keys/values (N_img, G*G, D); coords (G*G, 2)
        -> (new state (N_q, D), readout (N_q, readout_dim)).

        ``prefix`` (K, V), each (N_img, P, D), are extra key/value positions placed before the
        grid (KV-prefix modulation, vldistill.models.kv_prefix): attention spreads over P + G*G
        positions; the attended location (the grid's share of attention, renormalised), count
        and peak read the grid positions only (a prefix has no place in the image). None
        computes exactly what it did without them."""
        n, width = state.shape
        queries = slots.pack(self.queries(state).view(n, self.heads, width))  # (N_img, Q*h, D)
        scores = torch.bmm(queries, keys.transpose(1, 2)) / math.sqrt(width)  # (N_img, Q*h, GG)
        if prefix is None:
            attention = scores.softmax(dim=-1)
            read = torch.bmm(attention, values)
        else:
            prefix_keys, prefix_values = prefix
            prefix_scores = torch.bmm(queries, prefix_keys.transpose(1, 2)) / math.sqrt(width)
            both = torch.cat([prefix_scores, scores], dim=-1).softmax(dim=-1)  # (.., P + GG)
            read = torch.bmm(both, torch.cat([prefix_values, values], dim=1))
            grid_part = both[..., prefix_keys.shape[1]:]
            # where it looks in the image: the grid share renormalised (the prefix mass has
            # no location and must not pull the attended place toward the centre)
            attention = grid_part / grid_part.sum(-1, keepdim=True).clamp_min(1e-12)
        read = slots.unpack(read, self.heads)                                  # (N_q, h, D)
        where = slots.unpack(attention @ coords, self.heads)                   # (N_q, h, 2)
        scores = slots.unpack(scores, self.heads)                              # (N_q, h, GG)
        count = torch.sigmoid(scores).sum(-1, keepdim=True).log1p()            # (N_q, h, 1)
        peak = scores.amax(-1, keepdim=True)                                   # (N_q, h, 1)
        parts = [read.flatten(1), where.flatten(1), count.flatten(1), peak.flatten(1)]
        for i in range(self.heads):
            for j in range(i + 1, self.heads):
                parts.append(where[:, i] - where[:, j])                        # (N_q, 2) dx, dy
        readout = torch.cat(parts, dim=-1)                                     # (N_q, readout)
        return state + self.update(torch.cat([state, readout], dim=-1)), readout


class VQANet(nn.Module):
    """Answer-classification VQA: (images, questions) -> :class:`ModelOutput` per question."""

    def __init__(self, config: VQANetConfig, num_answers: int, vocab_size: int) -> None:
        super().__init__()
        self.config = config
        width = config.width
        self.stem = ConvStem(width, config.grid, config.dilations, config.in_channels or 3)
        self.keys = nn.Linear(width, width)
        self.question = QuestionEncoder(vocab_size, config.word_dim, width)
        self.hops = nn.ModuleList(AttentionHop(width, config.heads) for _ in range(config.hops))
        readout_dim = self.hops[-1].readout_dim
        self.head = nn.Sequential(nn.Linear(width + readout_dim, config.mlp_dim), nn.ReLU(),
                                  nn.Linear(config.mlp_dim, num_answers))
        nn.init.constant_(self.head[-1].bias, config.answer_bias)
        self.grid_norm = nn.LayerNorm(width) if config.layer_norm else nn.Identity()
        self.question_norm = nn.LayerNorm(width) if config.layer_norm else nn.Identity()

    def forward(self, images: torch.Tensor, question_tokens: torch.Tensor,
                question_lengths: torch.Tensor, image_index: torch.Tensor,
                questions: Sequence[str] | None = None,
                answers: Sequence[str | None] | None = None) -> ModelOutput:
        """images (N_img, 3, H, W) uint8 or (N_img, C, H, W) float in [0, 1]; question_tokens
        (N_q, L) long; question_lengths (N_q,); image_index (N_q,) long in [0, N_img). ``questions`` (the raw strings, which
        models with their own tokenizer read) and ``answers`` (what generative models are
        teacher-forced on) are not used: this net reads the tokens and has an answer head."""
        grid = self.grid_norm(self.stem(images))                       # (N_img, G*G, D)
        keys = self.keys(grid)
        question = self.question_norm(self.question(question_tokens, question_lengths))
        slots = QuestionSlots(image_index, images.shape[0])
        state, readout = question, question.new_zeros(0)
        for hop in self.hops:
            state, readout = hop(state, keys, grid, self.stem.coords, slots)
        fused = torch.cat([state, readout], dim=-1)                   # (N_q, D + readout)
        return ModelOutput(
            logits=self.head(fused),
            image_embeds=grid.mean(dim=1)[image_index],
            text_embeds=question,
            features={"image_grid": grid, "fused": fused},
        )
