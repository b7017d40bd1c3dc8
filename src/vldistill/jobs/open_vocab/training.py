"""Open-vocabulary data splits, training of an image encoder into a frozen text space through
the engine (:func:`vldistill.train.fit.fit`), and its evaluation (zero-shot classification,
retrieval, latency)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from vldistill.config import TrainerSettings, TrainSettings
from vldistill.core.errors import DataError
from vldistill.core.hashing import module_fingerprint, tensor_fingerprint
from vldistill.core.runpaths import RunPaths
from vldistill.data.batches import RowCollate, Rows
from vldistill.data.image_text import ImageTextSet, read_folder, read_jsonl, shapesworld_sets
from vldistill.eval.efficiency import median_seconds
from vldistill.eval.zero_shot import retrieval, topk_accuracy
from vldistill.jobs.open_vocab.recipe import OVDataSettings, OVDistillSettings
from vldistill.kd import image_text_losses as losses
from vldistill.kd.sources import (
    OnlineTeacher,
    TeacherSource,
    row_cache,
    row_fingerprint,
)
from vldistill.models.outputs import ModelOutput
from vldistill.models.text_towers import FrozenTextEncoder
from vldistill.train.fit import FitResult, SaveFn, fit, mixed_loaders


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


class ImageTextStep(nn.Module):
    """One open-vocabulary training step over a batch of row indices.

    ``batch["labelled"]`` rows (of the labelled images): symmetric InfoNCE between the
    student's image embeddings and their captions' text embeddings (images sharing a caption
    are all positives). ``batch["pool"]`` rows (of every student image, labelled then
    transfer; only with a teacher): cosine and squared L2 to the teacher's image embeddings, and
    the affinity KL between the student's and the teacher's score distributions over the
    labelled captions. The teacher's embeddings come from its source (vldistill.kd.sources):
    the exact cache, or the teacher run online. Image tables stay on the CPU; a batch's rows
    move to the student's device."""

    def __init__(self, model: nn.Module, bank: torch.Tensor, caption_ids: torch.Tensor,
                 labelled_images: torch.Tensor, weights: OVDistillSettings,
                 pool_images: torch.Tensor | None = None,
                 teacher: TeacherSource | None = None) -> None:
        super().__init__()
        self.student, self.weights = model, weights
        self.bank, self.caption_ids, self.labelled_images = bank, caption_ids, labelled_images
        self.pool_images, self.teacher = pool_images, teacher

    def _device(self) -> torch.device:
        return next(self.student.parameters()).device

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        weights, device = self.weights, self._device()
        ids = self.caption_ids[batch["labelled"]]
        scores = self.student.scores(self.labelled_images[batch["labelled"]].to(device),
                                     self.bank[ids].to(device))                 # (B, B)
        terms = {"contrastive": losses.contrastive(scores, ids.to(device), self.student.scale())}
        loss = weights.contrastive * terms["contrastive"]
        picks = batch["pool"]
        if self.teacher is not None and len(picks):
            images = self.pool_images[picks].to(device)
            embeds = self.teacher.teacher_outputs({"rows": picks, "inputs": images}).image_embeds
            target = embeds.to(device)
            if weights.cosine or weights.l2:
                embedded = self.student.embed(images)
                terms["cosine"] = losses.cosine_distill(embedded, target)
                terms["l2"] = losses.l2_distill(embedded, target)
                loss = loss + weights.cosine * terms["cosine"] + weights.l2 * terms["l2"]
            if weights.affinity:
                teacher_scores = embeds @ self.bank.to(embeds.device).T
                terms["affinity"] = losses.affinity_distill(
                    self.student.scores(images, self.bank.to(device)),
                    teacher_scores.to(device), weights.affinity_temperature)
                loss = loss + weights.affinity * terms["affinity"]
        return {"loss": loss, **terms}

    def batch_size(self, batch: dict[str, torch.Tensor]) -> int:
        return len(batch["labelled"])

    def predict(self, batch: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError("open-vocabulary training has no in-loop validation; the "
                                  "job scores each model after training")


def train_encoder(model: nn.Module, text_encoder: FrozenTextEncoder, labelled: ImageTextSet,
                  train: TrainSettings, weights: OVDistillSettings, seed: int, role: str,
                  paths: RunPaths, trainer: TrainerSettings,
                  transfer: ImageTextSet | None = None,
                  teacher: TeacherSource | None = None, save: SaveFn | None = None,
                  resume: bool = False, stamp: str = "") -> FitResult:
    """Contrastive training of ``model`` on ``labelled`` through the engine (Lightning,
    resume points, logs); with a ``teacher`` source (answering rows of labelled, then
    transfer), each batch of ``train.batch_size`` labelled rows is paired with as many rows drawn
    from all of them for cosine / L2 / affinity distillation. The affinity bank is the labelled
    captions."""
    bank_captions = list(dict.fromkeys(labelled.captions))
    bank = text_encoder(bank_captions)                                        # (U, D)
    index = {caption: i for i, caption in enumerate(bank_captions)}
    caption_ids = torch.tensor([index[c] for c in labelled.captions])
    kd = teacher is not None
    pool = None
    if kd:
        pool = labelled.images if transfer is None else torch.cat([labelled.images,
                                                                   transfer.images])
    step = ImageTextStep(model, bank, caption_ids, labelled.images, weights, pool, teacher)
    loaders = mixed_loaders(Rows(len(labelled), "labelled"),
                            Rows(len(pool), "pool") if kd else None,
                            RowCollate("labelled", "pool"), None,
                            batch_size=train.batch_size * (2 if kd else 1),
                            transfer_fraction=0.5 if kd else 0.0, seed=seed)
    return fit(step, loaders, None, train, trainer, run_dir=paths.root, role=role, save=save,
               resume=resume, stamp=stamp)


def image_embeds_call(model: nn.Module, batch: dict[str, torch.Tensor]) -> ModelOutput:
    """How an online open-vocabulary teacher answers: its image embeddings of the batch."""
    embeds = model.embed(batch["inputs"])
    return ModelOutput(embeds.new_zeros(len(embeds), 0), image_embeds=embeds)


def teacher_source(teacher: nn.Module, images: torch.Tensor, mode: str, directory: Path,
                   batch_size: int = 256) -> TeacherSource:
    """The students' teacher source over ``images`` (labelled, then transfer rows): the exact
    cache in ``directory`` (built when missing or stale; every rank of a distributed run
    embeds its share) or the teacher run online."""
    if mode == "online":
        return OnlineTeacher(teacher, image_embeds_call)
    fingerprint = row_fingerprint(module_fingerprint(teacher), tensor_fingerprint(images),
                                  "image_embeds", batch_size=batch_size)
    # shards are whole multiples of the embedding batch, so every image is embedded in the
    # same batch as in one pass over all of them
    return row_cache(directory, fingerprint, len(images),
                     lambda first, last: embed_all(teacher, images[first:last], batch_size),
                     command="`vldistill run RECIPE` (a stale cache is rebuilt)",
                     shard_rows=batch_size * 256)


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
