"""Torch datasets, collation and batch sampling for training and evaluation.

Questions are grouped by image: one dataset item is one image with all its questions, so the
image encoder runs once per image however many questions it has (DESIGN.md: most of the cost is
in the image stem). A batch is the dict the distillation step expects (see
vldistill.kd.step): ``inputs``, ``targets``, ``labelled``, plus ``meta`` for evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from vldistill.core.errors import DataError
from vldistill.data.answers import AnswerVocab
from vldistill.data.rgbd import DepthSettings, preprocess_depth
from vldistill.data.sample import ImageStore, Sample
from vldistill.data.tokenizer import QuestionTokenizer

MODALITY_KEYS = {"rgb": "image", "depth": "depth"}     # modality -> key of a dataset item


def group_by_image(samples: Sequence[Sample]) -> list[list[Sample]]:
    """Samples grouped by image id, groups in order of first appearance."""
    groups: dict[Any, list[Sample]] = {}
    for sample in samples:
        groups.setdefault(sample.image_id, []).append(sample)
    return list(groups.values())


class VQAImageDataset(Dataset):
    """Item i: one image with its questions, tokenised, and soft targets.

    The image comes in the ``modalities`` asked for: ``image`` (3, H, W) uint8 RGB and/or
    ``depth`` (C, H, W) float32, preprocessed by ``depth`` settings (vldistill.data.rgbd).
    ``labelled=False`` makes every question unlabelled (a transfer set: only teacher terms
    apply); otherwise a question is labelled when it has answers. Tokens and targets are
    encoded once here as small arrays, so collating a batch is a few array copies.
    """

    def __init__(self, samples: Sequence[Sample], images: ImageStore, answer_vocab: AnswerVocab,
                 tokenizer: QuestionTokenizer, *, labelled: bool = True,
                 modalities: Sequence[str] = ("rgb",), depth: DepthSettings | None = None
                 ) -> None:
        if not samples:
            raise DataError("VQAImageDataset got no samples; check the data split or subset "
                            "size in the recipe (e.g. data.shapesworld.val_images >= 1).")
        unknown = sorted(set(modalities) - set(MODALITY_KEYS))
        if unknown or not modalities:
            raise ValueError(f"modalities must be a non-empty subset of {list(MODALITY_KEYS)}, "
                             f"got {list(modalities)}")
        self.modalities = tuple(dict.fromkeys(modalities))
        self.depth_settings = depth or DepthSettings()
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
        image_id = group[0].image_id
        item: dict[str, Any] = {**self.encoded[index], "samples": group}
        if "rgb" in self.modalities:
            rgb = self.images.rgb(image_id)                               # (H, W, 3) uint8
            item["image"] = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)
        if "depth" in self.modalities:
            metres = self.images.depth(image_id)
            if metres is None:
                raise DataError(f"image {image_id!r} has no depth map in its image store "
                                f"({type(self.images).__name__}), but a model sees depth. "
                                f"Fix: give the data depth maps (data.train.depth / val.depth "
                                f"for the vqa source, or the rgbd source).")
            item["depth"] = torch.from_numpy(preprocess_depth(metres, self.depth_settings))
        return item


class BatchMeta:
    """Per-question records travelling with a batch for evaluation (not moved to a device).

    A plain class on purpose: Lightning's batch transfer recurses into mappings, sequences and
    dataclasses, and refuses frozen dataclasses such as :class:`Sample`.
    """

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples


class VQACollator:
    """Stacks image items into the batch dict; targets become dense (N_q, num_answers).

    ``inputs["images"]`` holds the ``modality`` the trained model sees; when the teacher sees
    another one (``teacher_modality``, paired-modality distillation), ``teacher_inputs`` is the
    same batch with the teacher's images.
    """

    def __init__(self, num_answers: int, modality: str = "rgb",
                 teacher_modality: str | None = None) -> None:
        for name in (modality, teacher_modality):
            if name is not None and name not in MODALITY_KEYS:
                raise ValueError(f"modality {name!r} is not one of {list(MODALITY_KEYS)}")
        self.num_answers = num_answers
        self.modality = modality
        self.teacher_modality = teacher_modality if teacher_modality != modality else None

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
            "inputs": {"images": _stack(items, self.modality),
                       "question_tokens": torch.from_numpy(tokens),
                       "question_lengths": torch.from_numpy(lengths),
                       "image_index": torch.from_numpy(np.repeat(np.arange(len(items)),
                                                                 counts)),
                       # the raw text, for models that tokenize with their own tokenizer
                       "questions": [s.question for item in items for s in item["samples"]],
                       # what a generative model is teacher-forced on (None: unlabelled)
                       "answers": [common_answer(s.answers) if flag else None
                                   for item in items
                                   for s, flag in zip(item["samples"], item["labelled"])]},
            "targets": targets,
            "labelled": torch.from_numpy(np.concatenate([item["labelled"] for item in items])),
            "meta": BatchMeta([s for item in items for s in item["samples"]]),
        }
        if self.teacher_modality is not None:
            batch["teacher_inputs"] = {**batch["inputs"],
                                       "images": _stack(items, self.teacher_modality)}
        if "view" in items[0]:      # augmented views (vldistill.data.augment): one per question
            batch["views"] = torch.from_numpy(np.repeat([item["view"] for item in items],
                                                        counts))
        return batch


def common_answer(answers: Sequence[str]) -> str:
    """The most common annotator answer (whitespace-stripped; the first of the tied)."""
    stripped = [a.strip() for a in answers]
    return max(dict.fromkeys(stripped), key=stripped.count)


def _stack(items: Sequence[dict[str, Any]], modality: str) -> torch.Tensor:
    key = MODALITY_KEYS[modality]
    if key not in items[0]:
        raise ValueError(f"the batch items carry no {modality!r} images ({key!r}); build the "
                         f"dataset with modalities including {modality!r}")
    return torch.stack([item[key] for item in items])


class MixedBatchSampler(Sampler[list[int]]):
    """Batches of images drawn from a labelled set and, optionally, a transfer set.

    Indices address ``ConcatDataset([labelled, transfer])``. One epoch walks the labelled set
    once in a seeded random order, ``labelled_per_batch`` images per batch, and fills the rest of
    each batch from a fresh seeded permutation of the transfer set. Every batch is full (the last
    wraps around). With several processes each rank takes every ``world_size``-th batch of the
    same plan, and the plan is cut to a multiple of ``world_size`` so all ranks step together.
    The epoch advances on every ``__iter__`` (or explicitly through ``set_epoch``).

    With ``views`` > 1 each set is its items' replayable views in
    :class:`~vldistill.data.augment.ViewDataset` order (item j's view v at ``j * views + v``):
    an epoch still walks every labelled item once, each in one seeded random view.

    ``state_dict()`` records the epoch and how many of its batches were handed out;
    ``load_state_dict`` makes the next pass over that epoch skip them (resume mid-epoch).
    """

    def __init__(self, num_labelled: int, num_transfer: int, images_per_batch: int,
                 transfer_fraction: float = 0.0, *, seed: int = 0, rank: int = 0,
                 world_size: int = 1, views: int = 1) -> None:
        if num_labelled < 1:
            raise ValueError("MixedBatchSampler needs at least one labelled image.")
        if not 0.0 <= transfer_fraction < 1.0:
            raise ValueError(f"transfer_fraction must be in [0, 1), got {transfer_fraction}")
        use_transfer = num_transfer > 0 and transfer_fraction > 0
        self.transfer_per_batch = round(images_per_batch * transfer_fraction) if use_transfer else 0
        self.labelled_per_batch = max(1, images_per_batch - self.transfer_per_batch)
        self.num_labelled, self.num_transfer = num_labelled, num_transfer
        if views < 1:
            raise ValueError(f"views must be >= 1, got {views}")
        self.seed, self.rank, self.world_size, self.views = seed, rank, world_size, views
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
        if self.transfer_per_batch:
            transfer = np.resize(rng.permutation(self.num_transfer),
                                 total * self.transfer_per_batch)
            transfer = transfer.reshape(total, self.transfer_per_batch) + self.num_labelled
            labelled = np.concatenate([labelled, transfer], axis=1)
        if self.views > 1:       # item j's view v is index j * views + v (ViewDataset order)
            labelled = labelled * self.views + rng.integers(0, self.views, labelled.shape)
        return labelled.tolist()

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


class Rows(Dataset):
    """Row indices ``0 .. count-1`` of one part of a batch (``part``: a name such as
    "labelled", "pool" or "val"), for steps whose examples live in tables the step holds
    (texts, image tensors) rather than in the dataset."""

    def __init__(self, count: int, part: str) -> None:
        self.count, self.part = count, part

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[str, int]:
        if not 0 <= index < self.count:
            raise IndexError(f"row {index} of {self.count} ({self.part})")
        return self.part, index


class RowCollate:
    """Batches of :class:`Rows` items as ``{part: LongTensor of row indices}``, one entry per
    part named here (empty when the batch has none of it)."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    def __call__(self, items: list[tuple[str, int]]) -> dict[str, torch.Tensor]:
        unknown = {p for p, _ in items} - set(self.parts)
        if unknown:
            raise ValueError(f"rows of part(s) {sorted(unknown)}; expected {list(self.parts)}")
        return {part: torch.tensor([i for p, i in items if p == part], dtype=torch.long)
                for part in self.parts}
