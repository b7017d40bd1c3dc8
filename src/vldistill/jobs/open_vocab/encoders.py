"""Open-vocabulary image encoders: built from a recipe, saved with what rebuilds them and their
text encoder (checksummed safetensors), loaded back, and a loaded teacher checked against the
recipe it is reused in."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from vldistill.core.errors import DataError
from vldistill.jobs.open_vocab.recipe import ImageEncoderSettings, OpenVocabRecipe, OVDataSettings
from vldistill.models.checkpoint import read_weights, write_weights
from vldistill.models.open_vocab import ConvBackbone, HFBackbone, OpenVocabModel, TowerImageEncoder
from vldistill.models.text_towers import FrozenTextEncoder, load_text_encoder

FORMAT = "vldistill.openvocab.v2"        # v2: checksummed (models.checkpoint.write_weights)
OLDER_FORMATS = ("vldistill.openvocab.v1",)


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
