"""KV-prefix modulation: the generator, injection into the built-in network and into BLIP-2's
Q-Former (exact equality when disabled, mask coverage), freezing and LoRA, the feature memo."""

from __future__ import annotations

import math
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vldistill.models import build_model  # noqa: E402
from vldistill.models.kv_prefix import (  # noqa: E402
    FeatureMemo,
    KVPrefixGenerator,
    KVPrefixModelSettings,
    KVPrefixVQA,
    PrefixInjector,
    extend_mask,
    select_layers,
)
from vldistill.models.vqa_net import VQANet, VQANetConfig  # noqa: E402

BLIP2 = {"vision": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                    "intermediate_size": 64},
         "qformer": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "intermediate_size": 64, "cross_attention_frequency": 1},
         "text": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                  "ffn_dim": 64, "word_embed_proj_dim": 32},
         "num_query_tokens": 4, "image_size": 32}


class TinyExpert(torch.nn.Module):
    """Stands in for EfficientNet: mean colour -> linear features."""

    feature_dim = 6

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 6)
        self.batch_norm = torch.nn.BatchNorm1d(6)
        self.calls = 0

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().mean(dim=(2, 3)) / 255.0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += len(x)
        return self.batch_norm(self.linear(x))


def vqa_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"images": torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8,
                                    generator=generator),
            "question_tokens": torch.randint(1, 20, (5, 4), generator=generator),
            "question_lengths": torch.tensor([4, 3, 2, 4, 1]),
            "image_index": torch.tensor([0, 0, 1, 2, 2])}


def vqa_net(seed: int = 0) -> VQANet:
    torch.manual_seed(seed)
    return VQANet(VQANetConfig(width=8, word_dim=4, grid=4, mlp_dim=8), num_answers=7,
                  vocab_size=20).eval()


def settings(**update) -> KVPrefixModelSettings:
    return KVPrefixModelSettings(base={"name": "vqa_attention"}, **update)


# -- generator


def test_generator_gives_each_layer_its_keys_and_values() -> None:
    generator = KVPrefixGenerator(6, 8, ["a", "b"], num_prefix_tokens=3)
    prefixes = generator(torch.randn(2, 6))
    assert sorted(prefixes) == ["a", "b"]
    for keys, values in prefixes.values():
        assert keys.shape == values.shape == (2, 3, 8)
    assert not torch.equal(prefixes["a"][0], prefixes["b"][0])      # per layer by default
    shared = KVPrefixGenerator(6, 8, ["a", "b"], num_prefix_tokens=3, shared=True)
    out = shared(torch.randn(2, 6))
    assert torch.equal(out["a"][0], out["b"][0]) and torch.equal(out["a"][1], out["b"][1])
    assert not torch.equal(out["a"][0], out["a"][1])                 # K and V differ


def test_generator_names_both_sizes_when_features_do_not_fit() -> None:
    generator = KVPrefixGenerator(1280, 8, ["hops.0"])
    with pytest.raises(ValueError, match=r"1536-d features.*built for 1280"):
        generator(torch.randn(2, 1536))


def test_disabled_generator_gives_no_prefixes() -> None:
    assert KVPrefixGenerator(6, 8, ["a"], enabled=False)(torch.randn(2, 6)) == {}


# -- the built-in network


def test_hop_with_prefix_matches_a_naive_attention_over_prefix_and_grid() -> None:
    net = vqa_net()
    inputs = vqa_inputs()
    injector = PrefixInjector(net, ["hops.0"])
    prefix_keys, prefix_values = torch.randn(3, 2, 8), torch.randn(3, 2, 8)
    captured = {}
    net.hops[0].register_forward_hook(lambda m, args, out: captured.update(
        args=args, readout=out[1]))
    with torch.no_grad(), injector.injecting({"hops.0": (prefix_keys, prefix_values)}):
        net(**inputs)
    state, keys, values, coords = captured["args"][:4]
    hop = net.hops[0]
    for q, image in enumerate(inputs["image_index"].tolist()):
        queries = hop.queries(state[q]).view(hop.heads, 8)                      # (h, D)
        all_keys = torch.cat([prefix_keys[image], keys[image]])                  # (P + GG, D)
        all_values = torch.cat([prefix_values[image], values[image]])
        attention = (queries @ all_keys.T / math.sqrt(8)).softmax(-1)            # (h, P + GG)
        read = (attention @ all_values).flatten()
        grid = attention[:, 2:] / attention[:, 2:].sum(-1, keepdim=True)         # grid only
        where = (grid @ coords).flatten()
        readout = captured["readout"][q]
        torch.testing.assert_close(readout[:hop.heads * 8], read)
        torch.testing.assert_close(readout[hop.heads * 8:hop.heads * 10], where)


def test_disabled_prefixes_leave_the_built_in_network_exactly_as_it_was() -> None:
    inputs = vqa_inputs()
    reference = vqa_net()(**inputs).logits
    model = KVPrefixVQA(vqa_net(), TinyExpert(),
                        settings(prefix={"enabled": False, "num_prefix_tokens": 4}))
    model.eval()
    assert torch.equal(model(**inputs).logits, reference)
    enabled = KVPrefixVQA(vqa_net(), TinyExpert(), settings())
    assert not torch.allclose(enabled.eval()(**inputs).logits, reference)
    # and after the modulated call the hops are unmodified again
    assert torch.equal(enabled.base(**inputs).logits, reference)


def test_an_unknown_layer_lists_the_cross_attention_layers() -> None:
    with pytest.raises(ValueError, match=r"'hops\.7'.*hops\.0, hops\.1"):
        select_layers(vqa_net(), ["hops.7"])


def test_only_the_generator_trains_and_frozen_parts_stay_in_eval_mode() -> None:
    model = KVPrefixVQA(vqa_net(), TinyExpert(), settings())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("generator.") for n in trainable)
    model.train()
    assert model.generator.training
    assert not model.base.training and not model.expert.training
    assert not model.base.stem.convs[1].training          # batch norm statistics stay put


def test_cross_attention_and_lora_add_exactly_their_parameters() -> None:
    cross = KVPrefixVQA(vqa_net(), TinyExpert(), settings(train_cross_attention=True))
    names = {n for n, p in cross.named_parameters() if p.requires_grad}
    assert {n for n in names if not n.startswith("generator.")} == {
        n for n, _ in cross.named_parameters() if n.startswith("base.hops.")}
    lora = KVPrefixVQA(vqa_net(), TinyExpert(),
                       settings(lora={"r": 2, "target_modules": ["queries"]}))
    names = {n for n, p in lora.named_parameters() if p.requires_grad}
    adapters = {n for n in names if not n.startswith("generator.")}
    assert adapters and all("lora_" in n and ".queries." in n for n in adapters)
    assert len(adapters) == 4                               # A and B in each of the two hops


def test_lora_with_cross_attention_trains_both_and_lora_dropout_follows_the_mode() -> None:
    model = KVPrefixVQA(vqa_net(), TinyExpert(), settings(
        train_cross_attention=True, lora={"r": 2, "target_modules": ["keys"], "dropout": 0.1}))
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in names)
    assert "base.hops.0.queries.weight" in names and "base.hops.1.update.0.weight" in names
    assert "base.stem.convs.0.weight" not in names
    dropout = model.base.keys.lora_dropout["default"]
    model.train()
    assert dropout.training and model.base.hops[0].training and not model.base.training
    model.eval()
    assert not dropout.training


def test_a_variant_without_prefixes_trains_no_generator() -> None:
    model = KVPrefixVQA(vqa_net(), TinyExpert(), settings(
        prefix={"enabled": False}, lora={"r": 2, "target_modules": ["keys"]}))
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and not any(n.startswith("generator.") for n in names)


def test_lora_targets_that_match_nothing_list_the_linear_modules() -> None:
    with pytest.raises(ValueError, match="Linear modules are: .*queries"):
        KVPrefixVQA(vqa_net(), TinyExpert(), settings(lora={"target_modules": ["nothing"]}))


def test_the_feature_memo_computes_each_image_once_and_returns_the_same_rows() -> None:
    expert = TinyExpert().eval()
    memo = FeatureMemo(capacity=10)
    images = vqa_inputs()["images"]

    def compute(x):
        return expert.features(expert.preprocess(x))
    first = memo(images, compute)
    again = memo(images[[2, 0]], compute)
    assert expert.calls == 3
    torch.testing.assert_close(again, first[[2, 0]])
    small = FeatureMemo(capacity=2)
    small(images, compute)
    assert len(small.rows) == 2


# -- BLIP-2's Q-Former


@pytest.fixture(scope="module")
def blip2():
    from vldistill.models.hf_blip2 import Blip2VQA

    torch.manual_seed(0)
    model = Blip2VQA.from_config(BLIP2, ["red", "blue", "yes"], ["what", "colour", "is", "it"])
    return model.eval()


def blip2_inputs() -> dict:
    images = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    return {"images": images, "image_index": torch.tensor([0, 1, 1]),
            "questions": ["what colour is it", "is it red", "what"],
            "answers": ["red", None, "blue"]}


def test_blip2_cross_attention_layers_are_found_by_name(blip2) -> None:
    assert list(select_layers(blip2)) == [
        f"model.qformer.encoder.layer.{i}.crossattention.attention" for i in range(2)]


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_disabled_prefixes_leave_blip2_exactly_as_it_was(implementation) -> None:
    from vldistill.models.hf_blip2 import Blip2VQA

    torch.manual_seed(0)
    base = Blip2VQA.from_config(BLIP2, ["red", "blue"], ["what", "colour", "is", "it"]).eval()
    base.model.qformer.config._attn_implementation = implementation
    reference = base(**blip2_inputs()).logits
    state = {k: v.clone() for k, v in base.state_dict().items()}
    model = KVPrefixVQA(base, TinyExpert(), settings(prefix={"enabled": False})).eval()
    assert torch.equal(model(**blip2_inputs()).logits, reference)
    on = KVPrefixVQA(base, TinyExpert(), settings()).eval()
    assert base.model.qformer.config._attn_implementation.endswith(implementation)
    assert not torch.allclose(on(**blip2_inputs()).logits, reference)
    assert torch.equal(base(**blip2_inputs()).logits, reference)     # cleared after the call
    assert all(torch.equal(v, state[k]) for k, v in base.state_dict().items())


def test_prefixed_qformer_keeps_masked_image_positions_masked(blip2) -> None:
    """With prefixes in front, a mask over the image tokens must still hide the same tokens:
    changing a masked token changes nothing, changing an unmasked one does."""
    qformer = blip2.model.qformer
    injector = PrefixInjector(blip2)
    torch.manual_seed(2)
    query = torch.randn(2, 4, 32)
    image = torch.randn(2, 5, 32)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    prefixes = {name: (torch.randn(2, 3, 32), torch.randn(2, 3, 32))
                for name in injector.layers}

    def run(tokens):
        with torch.no_grad(), injector.injecting(prefixes):
            return qformer(query_embeds=query, encoder_hidden_states=tokens,
                           encoder_attention_mask=mask).last_hidden_state
    out = run(image)
    masked, visible = image.clone(), image.clone()
    masked[0, 4] += 5.0
    visible[0, 1] += 5.0
    torch.testing.assert_close(run(masked), out)
    assert not torch.allclose(run(visible)[0], out[0])
    with torch.no_grad():
        plain = qformer(query_embeds=query, encoder_hidden_states=image,
                        encoder_attention_mask=mask).last_hidden_state
    assert not torch.allclose(plain, out)                # the prefixes were attended


def test_prefixes_per_image_for_a_per_question_attention_are_refused(blip2) -> None:
    """BLIP-2 runs one sequence per question: prefixes made per image must be re-indexed
    (kv_prefix_rows); a mismatch is an error, not a silent mix of rows."""
    injector = PrefixInjector(blip2)
    prefixes = {name: (torch.randn(2, 3, 32), torch.randn(2, 3, 32))
                for name in injector.layers}
    with torch.no_grad(), injector.injecting(prefixes), \
            pytest.raises(ValueError, match="prefixes for 2 rows.*runs over 3"):
        blip2(**blip2_inputs())


def test_extend_mask_attends_the_prefix_positions() -> None:
    boolean = torch.tensor([[[[True, False]]]])
    assert extend_mask(boolean, 2).tolist() == [[[[True, True, True, False]]]]
    additive = torch.tensor([[[[0.0, -1e9]]]])
    assert extend_mask(additive, 1).tolist() == [[[[0.0, 0.0, -1e9]]]]
    assert extend_mask(None, 3) is None


def test_the_registered_model_rebuilds_blip2_with_lora_and_runs() -> None:
    model = build_model("kv_prefix", {"base": {"name": "blip2", "params": {"config": BLIP2}},
                                      "expert": {"image_size": 32},
                                      "lora": {"target_modules": ["query", "value"]}},
                        answers=["red", "blue", "yes"], question_vocab=["what", "colour"],
                        num_answers=3, vocab_size=10)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in trainable) and any(n.startswith("generator.")
                                                         for n in trainable)
    assert not any(n.startswith("base.") and "lora_" not in n for n in trainable)
    output = model(**blip2_inputs())
    assert output.logits.shape == (3, 3)
    output.logits.sum().backward()
    assert model.generator.mlp[-1].weight.grad is not None


def test_a_saved_blip2_loads_back_through_from_pretrained_with_the_same_outputs(
        blip2, tmp_path) -> None:
    """The path a user takes with a real checkpoint folder: save_pretrained, then the
    registered model's path: setting (safetensors, processor, tokenizer, offline)."""
    blip2.save_pretrained(tmp_path / "blip2")
    loaded = build_model("blip2", {"path": str(tmp_path / "blip2")},
                         answers=["red", "blue", "yes"], question_vocab=[], num_answers=3,
                         vocab_size=1).eval()
    assert loaded.processor.num_query_tokens == 4
    with torch.no_grad():
        torch.testing.assert_close(loaded(**blip2_inputs()).logits,
                                   blip2(**blip2_inputs()).logits)
    modulated = KVPrefixVQA(loaded, TinyExpert(), settings()).eval()
    with torch.no_grad():
        assert not torch.allclose(modulated(**blip2_inputs()).logits,
                                  blip2(**blip2_inputs()).logits)
