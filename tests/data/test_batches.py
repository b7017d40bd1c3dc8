"""Batching: the mixed labelled/transfer sampler and the collator."""

import numpy as np
import pytest
import torch

from vldistill.data.answers import AnswerVocab
from vldistill.data.batches import MixedBatchSampler, VQACollator, VQAImageDataset
from vldistill.data.sample import ArrayImageStore, Sample
from vldistill.data.tokenizer import QuestionTokenizer


def test_labelled_only_epoch_covers_every_image_once_per_batch_plan():
    sampler = MixedBatchSampler(10, 0, 4)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3
    flat = [i for b in batches for i in b]
    assert all(len(b) == 4 for b in batches)
    assert set(flat) == set(range(10))          # every labelled image appears (2 wrap around)


def test_mixed_batches_respect_fraction_and_index_ranges():
    sampler = MixedBatchSampler(8, 100, 8, transfer_fraction=0.75, seed=1)
    assert (sampler.labelled_per_batch, sampler.transfer_per_batch) == (2, 6)
    for batch in sampler:
        assert sum(i < 8 for i in batch) == 2
        assert sum(8 <= i < 108 for i in batch) == 6


def test_epochs_differ_and_are_reproducible():
    first = MixedBatchSampler(20, 50, 5, 0.4, seed=3)
    second = MixedBatchSampler(20, 50, 5, 0.4, seed=3)
    epoch0, epoch1 = list(first), list(first)
    assert epoch0 != epoch1
    assert list(second) == epoch0 and list(second) == epoch1
    second.set_epoch(0)
    assert list(second) == epoch0


def test_ranks_split_one_plan_evenly():
    plans = [list(MixedBatchSampler(30, 0, 4, rank=r, world_size=2, seed=5)) for r in (0, 1)]
    assert len(plans[0]) == len(plans[1])
    full = MixedBatchSampler(30, 0, 4, world_size=2, seed=5).plan(0)
    assert plans[0] == full[0::2] and plans[1] == full[1::2]


def test_sampler_rejects_bad_settings():
    with pytest.raises(ValueError, match="at least one labelled"):
        MixedBatchSampler(0, 5, 4)
    with pytest.raises(ValueError, match="transfer_fraction"):
        MixedBatchSampler(5, 5, 4, transfer_fraction=1.0)


def test_collator_builds_grouped_batch_with_soft_targets():
    samples = [Sample(1, 10, "What colour is it?", ("red",) * 10),
               Sample(2, 10, "Is there a star?", ("yes",) * 7 + ("no",) * 3),
               Sample(3, 11, "How many objects?", ())]
    store = ArrayImageStore([10, 11], np.zeros((2, 8, 8, 3), np.uint8))
    vocab = AnswerVocab.build([s.answers for s in samples if s.answers])
    tokenizer = QuestionTokenizer.build(s.question for s in samples)
    dataset = VQAImageDataset(samples, store, vocab, tokenizer)
    batch = VQACollator(len(vocab))([dataset[0], dataset[1]])
    inputs = batch["inputs"]
    assert inputs["images"].shape == (2, 3, 8, 8) and inputs["images"].dtype == torch.uint8
    assert inputs["image_index"].tolist() == [0, 0, 1]
    assert inputs["question_lengths"].tolist() == [4, 4, 3]
    assert batch["labelled"].tolist() == [True, True, False]
    # 7 of 10 say yes -> yes scores 1.0; 3 say no -> each leave-one-out subset: 3 of 9 (7 times,
    # 1.0) or 2 of 9 (3 times, 2/3) -> (7 + 2) / 10 = 0.9
    yes, no = vocab.index("yes"), vocab.index("no")
    assert batch["targets"][1, yes].item() == pytest.approx(1.0)
    assert batch["targets"][1, no].item() == pytest.approx(0.9)
    assert batch["targets"][2].sum().item() == 0.0


def test_sampler_with_views_walks_every_item_once_in_one_seeded_view():
    sampler = MixedBatchSampler(10, 6, 4, 0.5, seed=3, views=3)
    plan = sampler.plan(0)
    flat = [index for batch in plan for index in batch]
    labelled = [index for index in flat if index < 10 * 3]
    # item j's view v is j * 3 + v: every labelled item once, the transfer ones after 30
    assert sorted(index // 3 for index in labelled) == list(range(10))
    assert all(30 <= index < 48 for index in flat if index not in labelled)
    assert {index % 3 for index in flat} == {0, 1, 2}               # every view is drawn
    assert plan == MixedBatchSampler(10, 6, 4, 0.5, seed=3, views=3).plan(0)   # seeded
    assert plan != sampler.plan(1)
    # one view is the plain sampler's plan, index for index
    plain = MixedBatchSampler(10, 6, 4, 0.5, seed=3).plan(0)
    assert [[index // 3 for index in batch] for batch in plan] == plain
    with pytest.raises(ValueError, match="views must be >= 1"):
        MixedBatchSampler(10, 0, 4, views=0)
