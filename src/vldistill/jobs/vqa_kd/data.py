"""Data for a recipe run: splits, the student's labelled subset and transfer set, vocabularies.

The teacher trains on the whole labelled training split; the student may use the answers of
only ``data.labelled_images`` of those images, and sees the rest as an unlabelled transfer set
(questions without answers), which only the teacher can label. This is the situation users are
in: the teacher has seen far more than the student's labels cover.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vldistill.config import DataSettings
from vldistill.core.errors import RecipeError
from vldistill.data.answers import AnswerVocab, VocabCoverage
from vldistill.data.artquest import read_artquest
from vldistill.data.batches import group_by_image
from vldistill.data.rgbd import read_rgbd
from vldistill.data.sample import ImageStore, Sample
from vldistill.data.shapesworld import load_shapesworld
from vldistill.data.shapesworld_questions import style_questions
from vldistill.data.tokenizer import QuestionTokenizer
from vldistill.data.vizwiz import read_vizwiz
from vldistill.data.vqa import read_vqa


@dataclass
class RunData:
    teacher_train: list[Sample]      # every labelled training question
    labelled: list[Sample]           # the student's labelled subset
    transfer: list[Sample]           # the student's unlabelled transfer set (answers removed)
    val: list[Sample]
    train_images: ImageStore
    val_images: ImageStore
    answer_vocab: AnswerVocab
    tokenizer: QuestionTokenizer
    val_coverage: VocabCoverage


def load_splits(settings: DataSettings, progress: bool = False,
                needs: Sequence[str] = ("rgb",)
                ) -> tuple[list[Sample], ImageStore, list[Sample], ImageStore]:
    """(train samples, train images, val samples, val images) for the recipe's data source;
    ``needs``: the modalities the recipe's models see (rgb, depth)."""
    if settings.source == "shapesworld":

        world = load_shapesworld(settings.shapesworld, progress=progress)
        train, val = world.splits["train"], world.splits["val"]
        return train.samples, train.images, val.samples, val.images
    splits = []
    if settings.source == "rgbd":

        for files in (settings.train, settings.val):
            samples, images, _ = read_rgbd(files.annotations, image_size=settings.image_size,
                                           needs=needs, settings=settings.depth)
            splits += [samples, images]
        return tuple(splits)  # type: ignore[return-value]
    if settings.source == "artquest":

        for files in (settings.train, settings.val):
            splits += read_artquest(files.csv, files.images, image_size=settings.image_size)
        return tuple(splits)  # type: ignore[return-value]
    if settings.source == "vizwiz":

        for files in (settings.train, settings.val):
            splits += read_vizwiz(files.annotations, files.images,
                                  image_size=settings.image_size)
        return tuple(splits)  # type: ignore[return-value]

    for files in (settings.train, settings.val):
        if "depth" in needs and files.depth is None:
            raise RecipeError("a model of this recipe sees depth, but data.train / data.val "
                              "give no depth folder; set data.train.depth and data.val.depth "
                              "(16-bit PNG depth maps named like the images)")
        samples, images = read_vqa(files.questions, files.annotations, files.images,
                                   pattern=files.pattern, image_size=settings.image_size,
                                   depth_root=files.depth if "depth" in needs else None)
        splits += [samples, images]
    return tuple(splits)  # type: ignore[return-value]


def load_val(settings: DataSettings, needs: Sequence[str] = ("rgb",)
             ) -> tuple[list[Sample], ImageStore]:
    """The val split as a run scores it (with its style questions, when the data has them):
    what ``vldistill eval`` and ``bench`` read for a saved model."""
    _, _, val, val_images = load_splits(settings, needs=needs)
    if settings.style_questions:
        [(val, _)] = with_style_questions(settings, val)
    return val, val_images


def split_for_student(train: list[Sample], settings: DataSettings, seed: int
                      ) -> tuple[list[Sample], list[Sample]]:
    """The student's labelled subset and transfer set, chosen by image with a seeded shuffle."""
    groups = group_by_image(train)
    order = np.random.default_rng(seed).permutation(len(groups))
    count = len(groups) if settings.labelled_images is None else settings.labelled_images
    if count > len(groups):
        raise RecipeError(f"data.labelled_images is {count} but the training split has only "
                          f"{len(groups)} images; lower it or set it to null (all).")
    labelled = [s for i in sorted(order[:count]) for s in groups[i]]
    rest = order[count:]
    if settings.transfer_images is not None:
        rest = rest[:settings.transfer_images]   # a random subset, not the first in file order
    rest = sorted(rest)
    transfer = [s.unlabelled() for i in rest for s in groups[i]]
    return labelled, transfer


def take_subset(train: list[Sample], fraction: float, seed: int) -> list[Sample]:
    """A seeded random ``fraction`` of the training images (all their questions), in file
    order; at least one image."""
    if fraction >= 1.0:
        return train
    groups = group_by_image(train)
    count = max(1, round(fraction * len(groups)))
    chosen = sorted(np.random.default_rng([seed, 7]).permutation(len(groups))[:count])
    return [s for i in chosen for s in groups[i]]


def prepare_data(settings: DataSettings, seed: int, progress: bool = False,
                 needs: Sequence[str] = ("rgb",)) -> RunData:
    """Splits, the student's labelled subset and transfer set, and the vocabularies; the
    training split is first cut to ``settings.subset`` of its images."""
    train, train_images, val, val_images = load_splits(settings, progress, needs)
    train = take_subset(train, settings.subset, seed)
    labelled, transfer = split_for_student(train, settings, seed)
    if settings.style_questions:
        # the words of style questions that the training split lacks read as <unk>, as they
        # would for a frozen base model's own tokenizer
        (labelled, _), (val, _) = with_style_questions(settings, labelled, val)
    answer_vocab = AnswerVocab.build((s.answers for s in train if s.answers),
                                     min_count=settings.answer_vocab_min_count,
                                     max_size=settings.answer_vocab_max_size)
    tokenizer = QuestionTokenizer.build(s.question for s in train)
    coverage = answer_vocab.coverage([s.answers for s in val if s.answers])
    return RunData([s for s in train if s.answers], labelled, transfer, val, train_images,
                   val_images, answer_vocab, tokenizer, coverage)


def with_style_questions(settings: DataSettings, *splits: list[Sample]
                         ) -> list[tuple[list[Sample], list[Sample]]]:
    """ShapesWorld's image-level style questions (``data.style_questions`` per image) after
    each image's own questions, per split: [(samples with them, the added ones), ...]. The
    run adds them to the student's labelled set and to val, not to the teacher's training set
    (they are the new task); ``vldistill eval`` adds them to val the same way."""

    world = load_shapesworld(settings.shapesworld)
    scenes = {scene.image_id: scene for split in world.splits.values()
              for scene in split.scenes}
    out = []
    for samples in splits:
        extended, added = [], []
        for group in group_by_image(samples):
            extra = style_questions(scenes[group[0].image_id], settings.style_questions)
            extended += group + extra
            added += extra
        out.append((extended, added))
    return out
