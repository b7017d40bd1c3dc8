"""Image encoders that map into a frozen text encoder's space (open-vocabulary distillation,
seed 004 / KDEOV).

    image (N, 3, H, W) uint8 -> backbone -> pooled features (N, C) [+ feature map tokens]
          -> projection (C -> D, the text space) -> unit vectors (N, D)
    score(image, text) = cosine(image embedding, text embedding)

With a fusion module the image embedding is conditioned on the text it is scored against
(KDEOV): FiLM scales and shifts the pooled features with a text-predicted (gamma, beta);
cross-attention lets the text query the backbone's spatial tokens. Scores are then computed
per (image, text) pair: :meth:`OpenVocabModel.scores`.

Backbones: the built-in CNN (``cnn``: widths per stage), a transformers ``MobileNetV2Model``
or ``EfficientNetModel`` built from a config or a local folder, or the image tower of a local
CLIP / SigLIP model (already in its own text space: no projection needed).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vldistill.models.checkpoint import require_safetensors
from vldistill.models.text_towers import dual_encoder, tower_dim

LOGIT_SCALE_INIT = math.log(1 / 0.07)     # CLIP's initial temperature
LOGIT_SCALE_MAX = math.log(100.0)


class ConvBackbone(nn.Module):
    """Stages of (3x3 stride-2 conv, BN, ReLU, 3x3 conv, BN, ReLU); ``widths`` per stage."""

    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        layers, channels = [], 3
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                       nn.Conv2d(width, width, 3, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        self.layers = nn.Sequential(*layers)
        self.out_dim = channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> feature map (N, C, h, w)."""
        return self.layers(images.float() / 255.0 - 0.5)


class HFBackbone(nn.Module):
    """A transformers MobileNetV2Model / EfficientNetModel: its last feature map."""

    CLASSES = {"mobilenet_v2": ("MobileNetV2Config", "MobileNetV2Model"),
               "efficientnet": ("EfficientNetConfig", "EfficientNetModel")}

    def __init__(self, kind: str, config: dict[str, Any] | None = None,
                 path: Path | None = None) -> None:
        super().__init__()
        import transformers

        if kind not in self.CLASSES:
            raise ValueError(f"unknown backbone {kind!r}; known: cnn, "
                             f"{', '.join(self.CLASSES)}")
        config_name, model_name = self.CLASSES[kind]
        model_class = getattr(transformers, model_name)
        if path is not None:
            require_safetensors(path, f"{kind} vision tower")
            self.model = model_class.from_pretrained(path, use_safetensors=True)
        else:
            self.model = model_class(getattr(transformers, config_name)(**(config or {})))
        self.model.eval()
        with torch.no_grad():                  # the output width, read off a probe image
            probe = self.model(pixel_values=torch.zeros(1, 3, 32, 32)).last_hidden_state
        self.model.train()
        self.out_dim = int(probe.shape[1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() / 255.0 - 0.5) / 0.5
        return self.model(pixel_values=x).last_hidden_state             # (N, C, h, w)


class FiLMFusion(nn.Module):
    """(pooled (N, C), text (M, D)) -> (N, M, C): features * (1 + gamma(text)) + beta(text).
    Starts as the identity (gamma = beta = 0)."""

    def __init__(self, text_dim: int, channels: int) -> None:
        super().__init__()
        self.film = nn.Linear(text_dim, 2 * channels)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, pooled: torch.Tensor, tokens: torch.Tensor, text: torch.Tensor
                ) -> torch.Tensor:
        gamma, beta = self.film(text).chunk(2, dim=-1)                     # (M, C) each
        return pooled[:, None] * (1 + gamma[None]) + beta[None]


class CrossAttentionFusion(nn.Module):
    """(tokens (N, T, C), text (M, D)) -> (N, M, C): each text queries each image's spatial
    tokens (one head); the attended feature is added to the pooled one. Starts as the identity
    (output projection zero)."""

    def __init__(self, text_dim: int, channels: int) -> None:
        super().__init__()
        self.query = nn.Linear(text_dim, channels)
        self.key = nn.Linear(channels, channels)
        self.value = nn.Linear(channels, channels)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, pooled: torch.Tensor, tokens: torch.Tensor, text: torch.Tensor
                ) -> torch.Tensor:
        queries = self.query(text)                                         # (M, C)
        keys, values = self.key(tokens), self.value(tokens)                # (N, T, C)
        weights = torch.einsum("mc,ntc->nmt", queries, keys) / math.sqrt(queries.shape[-1])
        attended = torch.einsum("nmt,ntc->nmc", weights.softmax(-1), values)
        return pooled[:, None] + self.out(attended)


FUSIONS = {"film": FiLMFusion, "cross_attention": CrossAttentionFusion}


class OpenVocabModel(nn.Module):
    """A backbone projected into a text space of ``text_dim``, with a learned temperature."""

    def __init__(self, backbone: nn.Module, text_dim: int, projection: bool = True,
                 fusion: str = "none") -> None:
        super().__init__()
        self.backbone, self.text_dim = backbone, text_dim
        channels = backbone.out_dim
        if projection:
            self.projection: nn.Module = nn.Linear(channels, text_dim)
        elif channels != text_dim:
            raise ValueError(
                f"the image features are {channels}-d and the text embeddings {text_dim}-d: "
                "they cannot be compared without a projection. Set projection: true, or use "
                f"a backbone whose output is {text_dim}-d.")
        else:
            self.projection = nn.Identity()
        if fusion not in ("none", *FUSIONS):
            raise ValueError(f"unknown fusion {fusion!r}; known: none, {', '.join(FUSIONS)}")
        self.fusion = FUSIONS[fusion](text_dim, channels) if fusion != "none" else None
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled (N, C), spatial tokens (N, T, C))."""
        feature_map = self.backbone(images)
        return feature_map.mean(dim=(2, 3)), feature_map.flatten(2).transpose(1, 2)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(N, D) unit vectors, not conditioned on any text (what KD matches to a teacher)."""
        pooled, _ = self.features(images)
        return F.normalize(self.projection(pooled), dim=-1)

    def scores(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Cosine scores (N, M) of images against unit text embeddings (M, D); conditioned
        on each text when the model has a fusion module."""
        if self.fusion is None:
            return self.embed(images) @ text.T
        pooled, tokens = self.features(images)
        fused = F.normalize(self.projection(self.fusion(pooled, tokens, text)), dim=-1)
        return (fused * text[None]).sum(-1)                                # (N, M)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=LOGIT_SCALE_MAX).exp()


class TowerImageEncoder(nn.Module):
    """The image tower of a local CLIP / SigLIP folder: already in its text tower's space."""

    def __init__(self, kind: str, path: Path) -> None:
        super().__init__()

        self.model, _ = dual_encoder(kind, path)
        vision = self.model.config.vision_config
        self.size = int(vision.image_size)
        processor = _processor_stats(path, kind)
        self.register_buffer("mean", torch.tensor(processor[0]).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(processor[1]).view(3, 1, 1), persistent=False)

        self.kind, self.path = kind, Path(path)
        self.text_dim = tower_dim(kind, self.model.config)
        self.logit_scale = nn.Parameter(self.model.logit_scale.detach().clone())

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.float() / 255.0, size=(self.size, self.size), mode="bilinear",
                          align_corners=False)
        out = self.model.get_image_features(pixel_values=(x - self.mean) / self.std)
        return F.normalize(getattr(out, "pooler_output", out), dim=-1)

    def scores(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.embed(images) @ text.T

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp()


def _processor_stats(path: Path, kind: str) -> tuple[list[float], list[float]]:
    """image_mean / image_std of a folder's preprocessor_config.json; when absent, the
    model family's (CLIP: the OpenAI statistics; SigLIP: 0.5 / 0.5)."""

    config = Path(path) / "preprocessor_config.json"
    if config.is_file():
        data = json.loads(config.read_text(encoding="utf-8"))
        if "image_mean" in data and "image_std" in data:
            return data["image_mean"], data["image_std"]
    if kind == "siglip":
        return [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
    return [0.4815, 0.4578, 0.4082], [0.2686, 0.2613, 0.2758]


def image_encoder_parameters(model: nn.Module) -> int:
    """Parameters of the image side (backbone, projection, fusion; not a tower's text half)."""
    if isinstance(model, TowerImageEncoder):
        return sum(p.numel() for p in model.model.vision_model.parameters()) + sum(
            p.numel() for name, p in model.model.named_parameters()
            if name.startswith(("visual_projection", "vision_projection")))
    return sum(p.numel() for name, p in model.named_parameters() if name != "logit_scale")
