import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Generated data goes to a per-session cache, never the user's ~/.cache."""
    os.environ["VLDISTILL_CACHE"] = str(tmp_path_factory.mktemp("vldistill-cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    yield


@pytest.fixture
def tiny_recipe_path() -> Path:
    return ROOT / "recipes" / "tiny.yaml"


# --- tiny Hugging Face ViLT folders, saved as a user would (tests of models/ and export/)

WORDS = "what is the colour of shape how many are there red blue circle square yes no".split()
TINY_VILT_ANSWERS = ["red", "blue", "yes", "no", "2"]


def save_tiny_vilt(folder, *, hidden=32, image_size=32, mean=0.5, answers=TINY_VILT_ANSWERS, seed=0):
    """A tiny random ViLT with a word-level tokenizer, saved as a user would."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import (
        PreTrainedTokenizerFast,
        ViltConfig,
        ViltForQuestionAnswering,
        ViltProcessor,
    )
    from transformers.models.vilt.image_processing_pil_vilt import ViltImageProcessorPil

    vocabulary = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]",
                                   unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]")
    torch.manual_seed(seed)
    config = ViltConfig(vocab_size=len(vocabulary), hidden_size=hidden, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=2 * hidden,
                        image_size=image_size, patch_size=16, max_position_embeddings=12,
                        num_labels=len(answers), id2label=dict(enumerate(answers)),
                        label2id={a: i for i, a in enumerate(answers)})
    image_processor = ViltImageProcessorPil(size={"shortest_edge": image_size},
                                            size_divisor=16, image_mean=[mean] * 3,
                                            image_std=[0.5] * 3)
    ViltForQuestionAnswering(config).save_pretrained(folder)
    ViltProcessor(image_processor=image_processor, tokenizer=fast).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def make_tiny_vilt():
    """``make_tiny_vilt(folder, hidden=32, image_size=32, mean=0.5, answers=..., seed=0)``."""
    pytest.importorskip("transformers")
    return save_tiny_vilt
