"""Torch datasets, collation and batch sampling for training and evaluation.

Questions are grouped by image: one dataset item is one image with all its questions, so the
image encoder runs once per image however many questions it has (DESIGN.md: most of the cost is
in the image stem). A batch is the dict the distillation step expects (see
vldistill.distill.step): ``inputs``, ``targets``, ``labelled``, plus ``meta`` for evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from vldistill.data.answers import AnswerVocab
from vldistill.data.sample import ImageStore, Sample
from vldistill.data.tokenizer import QuestionTokenizer
from vldistill.errors import DataError


def group_by_image(samples: Sequence[Sample]) -> list[list[Sample]]:
    """Samples grouped by image id, groups in order of first appearance."""
    groups: dict[Any, list[Sample]] = {}
    for sample in samples:
        groups.setdefault(sample.image_id, []).append(sample)
    return list(groups.values())


class VQAImageDataset(Dataset):
    """Item i: one image (3, H, W) uint8 with its questions, tokenised, and soft targets.

    ``labelled=False`` makes every question unlabelled (a transfer set: only teacher terms
    apply); otherwise a question is labelled when it has answers. Tokens and targets are
    encoded once here as small arrays, so collating a batch is a few array copies.
    """

    def __init__(self, samples: Sequence[Sample], images: ImageStore, answer_vocab: AnswerVocab,
                 tokenizer: QuestionTokenizer, *, labelled: bool = True) -> None:
        if not samples:
            raise DataError("VQAImageDataset got no samples; check the data split or subset "
                            "size in the recipe (e.g. data.shapesworld.val_images >= 1).")
        self.groups = group_by_image(samples)
        self.images = images
        self.answer_vocab = answer_vocab
        self.encoded = [self._encode(group, tokenizer, labelled) for group in self.groups]

    def _encode(self, group: list[Sample], tokenizer: QuestionTokenizer,
                labelled: bool) -> dict[str, np.ndarray]:
        ids = [tokenizer.encode(s.question) for s in group]
        lengths = np.array([len(t) for t in ids], dtype=np.int64)
        tokens = np.zeros((len(ids), lengths.max()), dtype=np.int64)           # (Q, L)
        flags = np.array([labelled and s.labelled for s in group])
        rows, columns, scores = [], [], []
        for row, (sample, flag) in enumerate(zip(group, flags)):
            tokens[row, :lengths[row]] = ids[row]
            if flag:
                indices, values = self.answer_vocab.targets(sample.answers)
                rows += [row] * len(indices)
                columns += indices
                scores += values
        return {"tokens": tokens, "lengths": lengths, "labelled": flags,
                "target_rows": np.array(rows, dtype=np.int64),
                "target_columns": np.array(columns, dtype=np.int64),
                "target_scores": np.array(scores, dtype=np.float32)}

    def __len__(self) -> int:
        return len(self.groups)

    @property
    def num_questions(self) -> int:
        return sum(len(group) for group in self.groups)

    def __getitem__(self, index: int) -> dict[str, Any]:
        group = self.groups[index]
        rgb = self.images.rgb(group[0].image_id)                         # (H, W, 3) uint8
        return {"image": torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1),
                **self.encoded[index], "samples": group}


class BatchMeta:
    """Per-question records travelling with a batch for evaluation (not moved to a device).

    A plain class on purpose: Lightning's batch transfer recurses into mappings, sequences and
    dataclasses, and refuses frozen dataclasses such as :class:`Sample`.
    """

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples


class VQACollator:
    """Stacks image items into the batch dict; targets become dense (N_q, num_answers)."""

    def __init__(self, num_answers: int) -> None:
        self.num_answers = num_answers

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        counts = [len(item["lengths"]) for item in items]
        offsets = np.cumsum([0, *counts])
        lengths = np.concatenate([item["lengths"] for item in items])
        tokens = np.zeros((offsets[-1], lengths.max()), dtype=np.int64)        # (N_q, L)
        for item, offset in zip(items, offsets):
            tokens[offset:offset + len(item["lengths"]), :item["tokens"].shape[1]] = \
                item["tokens"]
        targets = torch.zeros(int(offsets[-1]), self.num_answers)
        rows = np.concatenate([item["target_rows"] + o for item, o in zip(items, offsets)])
        columns = np.concatenate([item["target_columns"] for item in items])
        targets[torch.from_numpy(rows), torch.from_numpy(columns)] = torch.from_numpy(
            np.concatenate([item["target_scores"] for item in items]))
        batch = {
            "inputs": {"images": torch.stack([item["image"] for item in items]),
                       "question_tokens": torch.from_numpy(tokens),
                       "question_lengths": torch.from_numpy(lengths),
                       "image_index": torch.from_numpy(np.repeat(np.arange(len(items)),
                                                                 counts)),
                       # the raw text, for models that tokenize with their own tokenizer
                       "questions": [s.question for item in items for s in item["samples"]]},
            "targets": targets,
            "labelled": torch.from_numpy(np.concatenate([item["labelled"] for item in items])),
            "meta": BatchMeta([s for item in items for s in item["samples"]]),
        }
        if "view" in items[0]:      # augmented views (vldistill.data.augment): one per question
            batch["views"] = torch.from_numpy(np.repeat([item["view"] for item in items],
                                                        counts))
        return batch


class MixedBatchSampler(Sampler[list[int]]):
    """Batches of images drawn from a labelled set and, optionally, a transfer set.

    Indices address ``ConcatDataset([labelled, transfer])``. One epoch walks the labelled set
    once in a seeded random order, ``labelled_per_batch`` images per batch, and fills the rest of
    each batch from a fresh seeded permutation of the transfer set. Every batch is full (the last
    wraps around). With several processes each rank takes every ``world_size``-th batch of the
    same plan, and the plan is cut to a multiple of ``world_size`` so all ranks step together.
    The epoch advances on every ``__iter__`` (or explicitly through ``set_epoch``).

    ``state_dict()`` records the epoch and how many of its batches were handed out;
    ``load_state_dict`` makes the next pass over that epoch skip them (resume mid-epoch).
    """

    def __init__(self, num_labelled: int, num_transfer: int, images_per_batch: int,
                 transfer_fraction: float = 0.0, *, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        if num_labelled < 1:
            raise ValueError("MixedBatchSampler needs at least one labelled image.")
        if not 0.0 <= transfer_fraction < 1.0:
            raise ValueError(f"transfer_fraction must be in [0, 1), got {transfer_fraction}")
        use_transfer = num_transfer > 0 and transfer_fraction > 0
        self.transfer_per_batch = round(images_per_batch * transfer_fraction) if use_transfer else 0
        self.labelled_per_batch = max(1, images_per_batch - self.transfer_per_batch)
        self.num_labelled, self.num_transfer = num_labelled, num_transfer
        self.seed, self.rank, self.world_size = seed, rank, world_size
        batches = math.ceil(num_labelled / self.labelled_per_batch)
        self.num_batches = max(world_size, batches - batches % world_size) // world_size
        self.epoch = 0
        self._explicit_epoch = False
        self._current: tuple[int, int] | None = None   # (epoch being iterated, batches out)
        self._skip: tuple[int, int] | None = None

    def state_dict(self) -> dict[str, int]:
        """Where the next batch comes from: ``{"epoch": e, "position": batches of e done}``."""
        epoch, position = self._current if self._current is not None else (self.epoch, 0)
        if position >= self.num_batches:     # that epoch is over: the next one starts
            epoch, position = epoch + 1, 0
        return {"epoch": epoch, "position": position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, position = int(state["epoch"]), int(state["position"])
        if not 0 <= position <= self.num_batches:
            raise ValueError(f"sampler state position {position} is outside this epoch's "
                             f"{self.num_batches} batches: the data or batch size changed")
        self._skip = (epoch, position)
        self._current = (epoch, position)
        # the next pass is that epoch (later passes advance as usual)
        self.epoch, self._explicit_epoch = epoch, False

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._explicit_epoch = epoch, True

    def __len__(self) -> int:
        return self.num_batches

    def plan(self, epoch: int) -> list[list[int]]:
        """All batches of an epoch, for all ranks."""
        rng = np.random.default_rng([self.seed, epoch])
        total = self.num_batches * self.world_size
        labelled = np.resize(rng.permutation(self.num_labelled), total * self.labelled_per_batch)
        labelled = labelled.reshape(total, self.labelled_per_batch)
        if not self.transfer_per_batch:
            return labelled.tolist()
        transfer = np.resize(rng.permutation(self.num_transfer), total * self.transfer_per_batch)
        transfer = transfer.reshape(total, self.transfer_per_batch) + self.num_labelled
        return np.concatenate([labelled, transfer], axis=1).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self.epoch
        if not self._explicit_epoch:
            self.epoch += 1
        self._explicit_epoch = False
        skip = 0
        if self._skip is not None and self._skip[0] == epoch:
            skip = self._skip[1]
        self._skip = None
        batches = self.plan(epoch)[self.rank::self.world_size]
        self._current = (epoch, skip)
        for position in range(skip, len(batches)):
            self._current = (epoch, position + 1)
            yield batches[position]


def sequential_batches(num_items: int, batch_size: int) -> list[list[int]]:
    """Fixed, ordered batches for evaluation."""
    return [list(range(i, min(i + batch_size, num_items)))
            for i in range(0, num_items, batch_size)]
