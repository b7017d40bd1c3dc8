"""The open-vocabulary job (``task: open_vocab``, seed 004 / KDEOV).

    frozen text encoder (MiniLM, or a CLIP / SigLIP text tower)
    -> teacher image encoder: trained contrastively into the text space (or a CLIP / SigLIP
       image tower from a folder)
    -> for each seed: a light student without KD (contrastive on its labelled images only) and
       with KD (the same, plus cosine / L2 to the teacher's image embeddings and the affinity
       term on labelled and unlabelled transfer images)
    -> zero-shot classification (seen and held-out combinations), retrieval, size, latency
    -> runs/<name>/ results.json, report.md, checkpoints

Training is the plain seeded loop (vldistill.train.loop): a step is a few lines over image
indices, not an image-question batch of the VQA trainer. The teacher's image embeddings of
the student's training images are computed once (it is frozen): a teacher-output cache in
memory.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from vldistill.config import Strict
from vldistill.console import console
from vldistill.data.shapesworld import ShapesWorldSettings
from vldistill.errors import DataError
from vldistill.openvocab import losses
from vldistill.openvocab.data import ImageTextSet
from vldistill.openvocab.metrics import retrieval, topk_accuracy
from vldistill.openvocab.models import (ConvBackbone, HFBackbone, OpenVocabModel,
                                        TowerImageEncoder, image_encoder_parameters)
from vldistill.openvocab.text import FrozenTextEncoder, load_text_encoder

FORMAT = "vldistill.openvocab.v2"        # v2: checksummed (models.checkpoint.write_weights)
OLDER_FORMATS = ("vldistill.openvocab.v1",)
HOLDOUT = ["purple star", "green circle", "orange square", "white triangle", "red diamond",
           "blue hexagon"]


class OVDataSettings(Strict):
    source: Literal["shapesworld", "jsonl", "folder"] = "shapesworld"
    shapesworld: ShapesWorldSettings = Field(
        default_factory=lambda: ShapesWorldSettings(train_images=20000, val_images=2000),
        description="one object per image (min/max_objects are set to 1)")
    holdout: list[str] = Field(default_factory=lambda: list(HOLDOUT), description="ShapesWorld "
                               "colour-shape combinations kept out of training entirely")
    train: Path | None = Field(None, description="jsonl: the train caption file; folder: the "
                               "train class folders")
    val: Path | None = Field(None, description="jsonl / folder: the val split")
    images: Path | None = Field(None, description="jsonl: the image root (default: the "
                                "caption file's folder)")
    image_size: int = Field(64, ge=8, description="images are resized to this (jsonl, folder)")
    prompt: str = Field("a {label}", description="zero-shot prompt (and folder captions)")
    labelled_images: int | None = Field(1000, ge=1, description="training images whose "
                                        "captions the students may use; None: all")
    transfer_images: int | None = Field(None, ge=0, description="the other training images, "
                                        "unlabelled, seen through the teacher; None: all")

    @model_validator(mode="after")
    def _paths(self) -> OVDataSettings:
        if self.source != "shapesworld" and (self.train is None or self.val is None):
            raise ValueError(f"data.source {self.source!r} needs data.train and data.val paths")
        if "{label}" not in self.prompt:
            raise ValueError(f"data.prompt {self.prompt!r} needs a {{label}} field")
        return self


class TextEncoderSettings(Strict):
    name: Literal["minilm", "clip", "siglip"] = "minilm"
    path: Path | None = Field(None, description="minilm: a local sentence-encoder folder "
                              "(None: the packaged MiniLM-L6); clip / siglip: the model folder")


class OVTrainSettings(Strict):
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(2e-3, gt=0)
    schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="cosine decay after warm-up (measured: at a constant 2e-3 the "
        "teacher's zero-shot accuracy swung between 45 and 82 % from one check to the next)")
    warmup_steps: int = Field(50, ge=0)


class ImageEncoderSettings(Strict):
    kind: Literal["cnn", "mobilenet_v2", "efficientnet", "clip", "siglip"] = "cnn"
    widths: list[int] = Field(default_factory=lambda: [8, 16, 32, 64], min_length=1,
                              description="cnn: channels per stride-2 stage")
    config: dict[str, Any] | None = Field(None, description="mobilenet_v2 / efficientnet: "
                                          "transformers config fields (a model built in code)")
    path: Path | None = Field(None, description="a local folder (transformers backbone, or the "
                              "CLIP / SigLIP model whose image tower this is)")
    projection: bool = Field(True, description="a linear map into the text space")
    fusion: Literal["none", "film", "cross_attention"] = "none"
    train: OVTrainSettings = Field(default_factory=OVTrainSettings)


class OVDistillSettings(Strict):
    contrastive: float = Field(1.0, ge=0, description="InfoNCE image-text (labelled images)")
    cosine: float = Field(1.0, ge=0, description="1 - cos to the teacher's image embedding")
    l2: float = Field(0.0, ge=0, description="squared L2 to the teacher's image embedding")
    affinity: float = Field(1.0, ge=0, description="KL of image-text score distributions")
    affinity_temperature: float = Field(0.05, gt=0)


class OVEvalSettings(Strict):
    batch_size: int = Field(256, ge=1)
    latency_repeats: int = Field(30, ge=1)


class OpenVocabRecipe(Strict):
    task: Literal["open_vocab"] = Field("open_vocab", description="marks an open-vocabulary "
                                        "recipe (`vldistill run` dispatches on it)")
    name: str = "open_vocab"
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    output_dir: Path = Path("runs")
    data: OVDataSettings = Field(default_factory=OVDataSettings)
    text_encoder: TextEncoderSettings = Field(default_factory=TextEncoderSettings)
    teacher: ImageEncoderSettings = Field(default_factory=lambda: ImageEncoderSettings(
        widths=[32, 64, 128, 256]))
    teacher_checkpoint: Path | None = Field(None, description="a saved teacher (vldistill "
                                            "checkpoint) instead of training one")
    student: ImageEncoderSettings = Field(default_factory=ImageEncoderSettings)
    distill: OVDistillSettings = Field(default_factory=OVDistillSettings)
    eval: OVEvalSettings = Field(default_factory=OVEvalSettings)

    @model_validator(mode="after")
    def _towers(self) -> OpenVocabRecipe:
        if self.teacher.fusion != "none":
            raise ValueError("teacher.fusion must be none: the students distil the teacher's "
                             "image embeddings, which a fusion module would not produce")
        if self.teacher.kind in ("clip", "siglip"):
            if self.teacher.path is None:
                raise ValueError(f"teacher.kind {self.teacher.kind!r} needs teacher.path")
            text_path = self.text_encoder.path
            if self.text_encoder.name != self.teacher.kind or text_path is None or \
                    Path(text_path).resolve() != Path(self.teacher.path).resolve():
                raise ValueError(f"a {self.teacher.kind} teacher is aligned with its own text "
                                 f"tower: set text_encoder: {{name: {self.teacher.kind}, path: "
                                 f"{self.teacher.path}}}")
        if self.student.kind in ("clip", "siglip"):
            raise ValueError("the student is a light backbone: cnn, mobilenet_v2 or "
                             "efficientnet")
        return self


def load_open_vocab_recipe(path: Path | None, overrides: list[str] = ()) -> OpenVocabRecipe:
    from vldistill.config import load_task_recipe

    return load_task_recipe(OpenVocabRecipe, path, overrides, "recipes/open_vocab.yaml")


# -- building and saving models


def build_image_encoder(settings: ImageEncoderSettings, text_dim: int) -> nn.Module:
    if settings.kind in ("clip", "siglip"):
        tower = TowerImageEncoder(settings.kind, settings.path)
        if tower.text_dim != text_dim:
            raise ValueError(f"the {settings.kind} image tower gives {tower.text_dim}-d "
                             f"embeddings, the text encoder {text_dim}-d")
        return tower
    if settings.kind == "cnn":
        backbone: nn.Module = ConvBackbone(tuple(settings.widths))
    else:
        backbone = HFBackbone(settings.kind, settings.config, settings.path)
    return OpenVocabModel(backbone, text_dim, settings.projection, settings.fusion)


def save_encoder(path: Path, model: nn.Module, settings: ImageEncoderSettings,
                 text_encoder: FrozenTextEncoder, data: OVDataSettings, role: str) -> Path:
    """safetensors weights + what rebuilds the model and its text encoder (checksummed)."""
    from vldistill.models.checkpoint import write_weights

    if settings.path is not None:
        settings = settings.model_copy(update={"path": Path(settings.path).resolve()})
    metadata = {"format": FORMAT, "role": role,
                "image_encoder": settings.model_dump_json(),
                "text_encoder": json.dumps({"name": text_encoder.kind,
                                            "path": str(Path(text_encoder.path).resolve())
                                            if text_encoder.path else None}),
                "text_dim": str(text_encoder.dim), "prompt": data.prompt,
                "image_size": str(image_size(data)), "source": data.source,
                "holdout": json.dumps(data.holdout if data.source == "shapesworld" else [])}
    return write_weights(path, model, metadata)


def image_size(data: OVDataSettings) -> int:
    return data.shapesworld.image_size if data.source == "shapesworld" else data.image_size


def check_teacher_checkpoint(metadata: dict[str, str], recipe: OpenVocabRecipe,
                             path: Path) -> None:
    """A saved teacher must live in this recipe's text space, see images of its size, and
    have kept out the same held-out combinations (or KD would leak them)."""
    text = json.loads(metadata["text_encoder"])
    wanted = recipe.text_encoder
    expected = {
        "text encoder": (text["name"], wanted.name),
        "text encoder path": (text["path"], str(Path(wanted.path).resolve())
                              if wanted.path else None),
        "image size": (metadata.get("image_size"), str(image_size(recipe.data))),
        "held-out combinations": (sorted(json.loads(metadata.get("holdout", "[]"))),
                                  sorted(recipe.data.holdout
                                         if recipe.data.source == "shapesworld" else []))}
    for name, (saved, current) in expected.items():
        if saved != current:
            raise DataError(f"teacher_checkpoint {path} was trained with another {name} "
                            f"({saved!r}) than this recipe's ({current!r}); distil from a "
                            "teacher of the same setting, or train one (teacher_checkpoint: "
                            "null)")


def load_encoder(path: Path) -> tuple[nn.Module, FrozenTextEncoder, dict[str, str]]:
    """(image encoder, its text encoder, metadata) of a saved open-vocabulary checkpoint."""
    from vldistill.models.checkpoint import read_weights

    state, metadata = read_weights(
        path, "pass a .safetensors file from an open_vocab run's checkpoints/ folder", (FORMAT,),
        "Use another checkpoint of the run, copy it again, or run the recipe again.")
    if metadata.get("format") not in (FORMAT, *OLDER_FORMATS):
        raise DataError(f"checkpoint {path} is not an open-vocabulary checkpoint (format "
                        f"{metadata.get('format')!r}, expected {FORMAT!r}); zero-shot needs "
                        "one written by an open_vocab run")
    settings = ImageEncoderSettings.model_validate_json(metadata["image_encoder"])
    text = json.loads(metadata["text_encoder"])
    text_encoder = load_text_encoder(text["name"], Path(text["path"]) if text["path"] else None)
    model = build_image_encoder(settings, int(metadata["text_dim"]))
    model.load_state_dict(state)
    return model.eval(), text_encoder, metadata


# -- data


def load_data(settings: OVDataSettings) -> tuple[ImageTextSet, ImageTextSet, list[str]]:
    """(train, val, zero-shot classes)."""
    from vldistill.openvocab.data import read_folder, read_jsonl, shapesworld_sets

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
    from vldistill.train.loop import run_steps

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
    from vldistill.eval.efficiency import median_seconds

    model.eval()
    with torch.inference_mode():
        return 1000 * median_seconds(lambda: model.scores(image, text), repeats)


# -- the job


def run_open_vocab(recipe: OpenVocabRecipe) -> dict[str, Any]:
    start = time.perf_counter()
    run_dir = recipe.output_dir / recipe.name
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]vldistill open-vocab[/] {recipe.name}: seeds {recipe.seeds}, "
                  f"output {run_dir}")
    text_encoder = load_text_encoder(recipe.text_encoder.name, recipe.text_encoder.path)
    train, val, classes = load_data(recipe.data)
    holdout = recipe.data.holdout if recipe.data.source == "shapesworld" else []
    console.print(f"data: {len(train)} training images, {len(val)} val; {len(classes)} "
                  f"classes, held out of training: {', '.join(holdout) or 'none'}")
    evaluate_model = lambda m: evaluate(m, text_encoder, val, classes, holdout,  # noqa: E731
                                        recipe.data.prompt, recipe.eval.batch_size)
    torch.manual_seed(recipe.seeds[0])
    if recipe.teacher_checkpoint is not None:
        teacher, _, metadata = load_encoder(recipe.teacher_checkpoint)
        check_teacher_checkpoint(metadata, recipe, recipe.teacher_checkpoint)
        teacher_time = 0.0
    else:
        teacher = build_image_encoder(recipe.teacher, text_encoder.dim)
        teacher_time = time.perf_counter()
        if recipe.teacher.kind not in ("clip", "siglip"):
            # the teacher learns from captions alone, whatever the students' weights
            train_encoder(teacher, text_encoder, train, recipe.teacher.train,
                          OVDistillSettings(contrastive=1.0), recipe.seeds[0], "teacher")
            save_encoder(run_dir / "checkpoints" / "teacher.safetensors", teacher,
                         recipe.teacher, text_encoder, recipe.data, "teacher")
        teacher_time = time.perf_counter() - teacher_time
    teacher.requires_grad_(False).eval()
    rows: dict[str, list[dict[str, Any]]] = {"teacher": [
        {**evaluate_model(teacher), "train_time_s": teacher_time, "seed": recipe.seeds[0]}]}
    console.print(f"teacher: {_summary(rows['teacher'][0])}")
    students: dict[str, nn.Module] = {}
    for seed in recipe.seeds:
        labelled, transfer = student_split(train, recipe.data, seed)
        everything = labelled if transfer is None else ImageTextSet(
            torch.cat([labelled.images, transfer.images]), labelled.captions + transfer.captions,
            labelled.labels + transfer.labels)
        teacher_embeds = embed_all(teacher, everything.images)
        for name, kd in (("student (no KD)", False), ("student (KD)", True)):
            torch.manual_seed(seed)
            student = build_image_encoder(recipe.student, text_encoder.dim)
            began = time.perf_counter()
            weights = recipe.distill if kd else OVDistillSettings(contrastive=1.0)
            train_encoder(student, text_encoder, labelled, recipe.student.train, weights, seed,
                          f"{name} seed {seed}", transfer if kd else None,
                          teacher_embeds if kd else None)
            role = f"student-{'kd' if kd else 'nokd'}-seed{seed}"
            save_encoder(run_dir / "checkpoints" / f"{role}.safetensors", student,
                         recipe.student, text_encoder, recipe.data, role)
            row = {**evaluate_model(student), "train_time_s": time.perf_counter() - began,
                   "seed": seed}
            rows.setdefault(name, []).append(row)
            students[name] = student
            console.print(f"{name} seed {seed}: {_summary(row)}")
    class_text = text_encoder([recipe.data.prompt.format(label=c) for c in classes])
    models = {"teacher": teacher, **students}
    results = {
        "recipe": recipe.name, "seeds": recipe.seeds, "classes": len(classes),
        "holdout": holdout, "val_images": len(val),
        "rows": [{"model": name, **_mean(runs),
                  "parameters": image_encoder_parameters(models[name]),
                  "latency_ms": latency_ms(models[name], val.images[:1], class_text,
                                           recipe.eval.latency_repeats),
                  "per_seed": runs} for name, runs in rows.items()],
        "wall_time_s": time.perf_counter() - start}
    write_report(results, run_dir)
    return results


def _summary(row: dict[str, Any]) -> str:
    keys = [k for k in ("zero_shot_top1/seen", "zero_shot_top1/heldout", "i2t_R@1", "t2i_R@1")
            if k in row]
    return ", ".join(f"{k} {row[k]:.1f}" for k in keys)


def _mean(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in runs[0] if k not in ("seed",)]
    out = {}
    for key in keys:
        values = [run[key] for run in runs]
        out[key] = statistics.fmean(values)
        if len(values) > 1:
            out[f"{key}_std"] = statistics.pstdev(values)
    return out


COLUMNS = [("zero_shot_top1/seen", "top-1 seen"), ("zero_shot_top1/heldout", "top-1 held-out"),
           ("zero_shot_top5/heldout", "top-5 held-out"), ("i2t_R@1", "I→T R@1"),
           ("i2t_R@5", "I→T R@5"), ("i2t_R@10", "I→T R@10"), ("t2i_R@1", "T→I R@1"),
           ("t2i_R@5", "T→I R@5"), ("t2i_R@10", "T→I R@10")]


def markdown_table(results: dict[str, Any]) -> str:
    columns = [(k, label) for k, label in COLUMNS if any(k in r for r in results["rows"])]
    lines = ["| model | " + " | ".join(label for _, label in columns)
             + " | image params | latency b=1 ms |",
             "|---|" + "---|" * (len(columns) + 2)]
    for row in results["rows"]:
        cells = []
        for key, _ in columns:
            if key not in row:
                cells.append("-")
            elif f"{key}_std" in row:
                cells.append(f"{row[key]:.2f} ± {row[f'{key}_std']:.2f}")
            else:
                cells.append(f"{row[key]:.2f}")
        lines.append(f"| {row['model']} | " + " | ".join(cells)
                     + f" | {row['parameters']:,} | {row['latency_ms']:.2f} |")
    return "\n".join(lines)


def goal_line(results: dict[str, Any]) -> str:
    rows = {row["model"]: row for row in results["rows"]}
    key = "zero_shot_top1/heldout"
    if not all(key in rows.get(n, {}) for n in ("teacher", "student (KD)", "student (no KD)")):
        return ""
    teacher, kd, nokd = rows["teacher"], rows["student (KD)"], rows["student (no KD)"]
    kept = 100 * kd[key] / teacher[key] if teacher[key] else float("nan")
    size = teacher["parameters"] / kd["parameters"]
    met = kept >= 90 and size >= 10 and kd[key] > nokd[key]
    return (f"KD student: {kept:.1f} % of the teacher's held-out zero-shot top-1 with "
            f"1/{size:.1f} of its image-encoder parameters; without KD {nokd[key]:.2f}, with KD "
            f"{kd[key]:.2f}. Goal (>= 90 %, <= 1/10, beats no-KD): {'met' if met else 'NOT met'}.")


def write_report(results: dict[str, Any], run_dir: Path) -> Path:
    from vldistill.report.results import write_run_files

    text = "\n\n".join([f"# vldistill open-vocab: {results['recipe']}", markdown_table(results),
                        goal_line(results),
                        f"Zero-shot over {results['classes']} classes; held out of training: "
                        f"{', '.join(results['holdout']) or 'none'}; {results['val_images']} val "
                        f"images; seeds {results['seeds']}; {results['wall_time_s']:.0f} s."])
    return write_run_files(run_dir, results, text)


def zero_shot(checkpoint: Path, image: Path, labels: list[str], prompt: str | None = None
              ) -> list[tuple[str, float, float]]:
    """[(label, probability, cosine)] best first: softmax over the labels of the model's
    scaled cosine scores of the image against each label's prompt."""
    from vldistill.data.images import read_rgb
    from vldistill.openvocab.data import check_labels

    labels = check_labels(labels)
    model, text_encoder, metadata = load_encoder(checkpoint)
    prompt = prompt or metadata.get("prompt", "{label}")
    if "{label}" not in prompt:
        raise ValueError(f"--prompt {prompt!r} needs a {{label}} field")
    size = int(metadata.get("image_size", 64))
    pixels = torch.from_numpy(read_rgb(Path(image), "--image: image", size))
    with torch.no_grad():
        text = text_encoder([prompt.format(label=label) for label in labels])
        cosines = model.scores(pixels.permute(2, 0, 1)[None], text)[0]
        probabilities = (model.scale() * cosines).softmax(-1)
    order = torch.argsort(probabilities, descending=True).tolist()
    return [(labels[i], float(probabilities[i]), float(cosines[i])) for i in order]
