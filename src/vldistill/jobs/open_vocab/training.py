"""Open-vocabulary data splits, training of an image encoder into a frozen text space, and
its evaluation (zero-shot classification, retrieval, latency)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from vldistill.core.errors import DataError
from vldistill.data.image_text import ImageTextSet, read_folder, read_jsonl, shapesworld_sets
from vldistill.eval.efficiency import median_seconds
from vldistill.eval.zero_shot import retrieval, topk_accuracy
from vldistill.jobs.open_vocab.recipe import OVDataSettings, OVDistillSettings, OVTrainSettings
from vldistill.kd import image_text_losses as losses
from vldistill.models.text_towers import FrozenTextEncoder
from vldistill.train.loop import run_steps


def load_data(settings: OVDataSettings) -> tuple[ImageTextSet, ImageTextSet, list[str]]:
    """(train, val, zero-shot classes)."""
    if settings.source == "shapesworld":
        return shapesworld_sets(settings.shapesworld, settings.holdout)
    if settings.source == "jsonl":
        root = lambda p: settings.images or Path(p).parent                   # noqa: E731
        train = read_jsonl(settings.train, root(settings.train), settings.image_size)
        val = read_jsonl(settings.val, root(settings.val), settings.image_size)
    else:
        train = read_folder(settings.train, settings.image_size, settings.prompt)
        val = read_folder(settings.val, settings.image_size, settings.prompt)
    classes = sorted({label for label in train.labels + val.labels if label})
    return train, val, classes


def student_split(train: ImageTextSet, settings: OVDataSettings, seed: int
                  ) -> tuple[ImageTextSet, ImageTextSet | None]:
    """The students' labelled images and unlabelled transfer images (a seeded choice)."""
    order = np.random.default_rng([seed, 11]).permutation(len(train))
    count = len(train) if settings.labelled_images is None else settings.labelled_images
    if count > len(train):
        raise DataError(f"data.labelled_images is {count} but training has {len(train)} "
                        "images; lower it or set it to null (all)")
    rest = order[count:]
    if settings.transfer_images is not None:
        rest = rest[:settings.transfer_images]
    return (train.subset(sorted(order[:count])),
            train.subset(sorted(rest)) if len(rest) else None)


# -- training


def train_encoder(model: nn.Module, text_encoder: FrozenTextEncoder, labelled: ImageTextSet,
                  train: OVTrainSettings, weights: OVDistillSettings, seed: int, what: str,
                  transfer: ImageTextSet | None = None, teacher_embeds: torch.Tensor | None = None
                  ) -> list[float]:
    """Contrastive training on ``labelled``; with ``teacher_embeds`` (one row per image of
    labelled, then transfer) also cosine / L2 / affinity distillation on a second batch drawn
    from all of them. The affinity bank is the labelled captions."""
    bank_captions = list(dict.fromkeys(labelled.captions))
    bank = text_encoder(bank_captions)                                        # (U, D)
    index = {caption: i for i, caption in enumerate(bank_captions)}
    caption_ids = torch.tensor([index[c] for c in labelled.captions])
    kd = teacher_embeds is not None
    if kd:
        pool = labelled.images if transfer is None else torch.cat([labelled.images,
                                                                   transfer.images])
        teacher_bank = teacher_embeds @ bank.T                                 # (N_all, U)
        draw = np.random.default_rng([seed, 5])
    model.train()

    def step_loss(rows: np.ndarray) -> torch.Tensor:
        ids = caption_ids[rows]
        scores = model.scores(labelled.images[rows], bank[ids])                # (B, B)
        loss = weights.contrastive * losses.contrastive(scores, ids, model.scale())
        if kd:
            picks = draw.choice(len(pool), size=min(train.batch_size, len(pool)),
                                replace=False)
            images = pool[picks]
            if weights.cosine or weights.l2:
                student = model.embed(images)
                loss = loss + weights.cosine * losses.cosine_distill(
                    student, teacher_embeds[picks]) + weights.l2 * losses.l2_distill(
                    student, teacher_embeds[picks])
            if weights.affinity:
                loss = loss + weights.affinity * losses.affinity_distill(
                    model.scores(images, bank), teacher_bank[picks],
                    weights.affinity_temperature)
        return loss

    trainable = [p for p in model.parameters() if p.requires_grad]
    return run_steps(trainable, steps=train.steps, batch_size=train.batch_size,
                     population=len(labelled), lr=train.lr, seed=seed, what=what,
                     progress=True, step_loss=step_loss, schedule=train.schedule,
                     warmup_steps=train.warmup_steps)


@torch.no_grad()
def embed_all(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model.embed(images[i:i + batch_size])
                      for i in range(0, len(images), batch_size)])


# -- evaluation


@torch.inference_mode()
def evaluate(model: nn.Module, text_encoder: FrozenTextEncoder, val: ImageTextSet,
             classes: list[str], holdout: list[str], prompt: str, batch_size: int = 256
             ) -> dict[str, float]:
    """Zero-shot top-1 / top-5 (all, seen, held-out classes) and retrieval recall@1/5/10."""
    model.eval()
    out: dict[str, float] = {}
    labelled = [i for i, label in enumerate(val.labels) if label in classes]
    if labelled:
        class_text = text_encoder([prompt.format(label=c) for c in classes])
        images = val.images[labelled]
        scores = torch.cat([model.scores(images[i:i + batch_size], class_text)
                            for i in range(0, len(images), batch_size)])
        labels = torch.tensor([classes.index(val.labels[i]) for i in labelled])
        held = torch.tensor([val.labels[i] in holdout for i in labelled])
        for name, mask in (("all", torch.ones_like(held)), ("seen", ~held), ("heldout", held)):
            if bool(mask.any()):
                accuracy = topk_accuracy(scores[mask], labels[mask], (1, 5))
                out[f"zero_shot_top1/{name}"] = accuracy[1]
                out[f"zero_shot_top5/{name}"] = accuracy[5]
    captions = list(dict.fromkeys(val.captions))
    text = text_encoder(captions)

    def block(i0: int, i1: int, t0: int, t1: int) -> torch.Tensor:
        return torch.cat([model.scores(val.images[i:min(i + batch_size, i1)], text[t0:t1])
                          for i in range(i0, i1, batch_size)])
    out.update(retrieval(block, len(val), len(captions), val.captions, captions))
    return out


def latency_ms(model: nn.Module, image: torch.Tensor, text: torch.Tensor,
               repeats: int) -> float:
    """Median wall time (ms) of scoring one image against ``text`` (the class prompts)."""
    model.eval()
    with torch.inference_mode():
        return 1000 * median_seconds(lambda: model.scores(image, text), repeats)
