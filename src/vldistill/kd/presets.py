"""The objective of ``vldistill.distill(terms=...)``: a preset name or a term list.

A term list is what a recipe's ``distill.terms`` holds: items ``{"loss": "kd", "weight": 0.5,
"temperature": 4.0}`` (every registered loss by name, with its own parameters; ``name`` sets
the log name). Two keys exist only here, for models that name no features of their own:
``student_layer`` and ``teacher_layer`` (or ``layer`` for both) name the submodules whose
outputs a feature term (``feature``, ``contrastive``, ``relational``) compares; forward hooks
read them (:mod:`vldistill.models.taps`) and a learned projector maps the student's width to
the teacher's where they differ. The loss ``task`` stands for the data's task loss
(cross-entropy for class labels, ``vqa_bce`` for VQA soft scores).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# registers the logit, feature and token losses by name
from vldistill.kd import feature_losses, logit_losses, token_losses  # noqa: F401
from vldistill.kd.losses import LOSSES, build_loss
from vldistill.kd.step import WeightedTerm, check_weights

FEATURE_LOSSES = ("feature", "contrastive", "relational")
LAYER_KEYS = ("student_layer", "teacher_layer", "layer")


@dataclass(frozen=True)
class Preset:
    when: str                          # when to use it (docs/api.md's table)
    # the term list; "layers": True marks a feature term whose layers come from
    # distill(layers=(student layer, teacher layer))
    terms: list[dict[str, Any]]


TASK = {"loss": "task", "weight": 0.5}
KD = {"loss": "kd", "weight": 0.5, "temperature": 4.0}

PRESETS: dict[str, Preset] = {
    "kd": Preset(
        "the default: Hinton KD at T = 4 beside the task loss; works for any pair that shares "
        "the classes", [TASK, KD]),
    "dkd": Preset(
        "a large teacher-student gap or a confident teacher: decoupled KD (target and "
        "non-target classes weighted apart; Zhao et al. 2022); transfer rows get plain KD",
        [{"loss": "task", "weight": 1.0},
         {"loss": "dkd", "weight": 1.0, "alpha": 1.0, "beta": 8.0, "temperature": 4.0,
          "unlabelled": "kd"}]),
    "loca": Preset(
        "a teacher that is wrong on some training labels: LoCa calibrates its logits so the "
        "true class ranks first before KD",
        [TASK, {"loss": "loca", "weight": 0.5, "alpha": 0.9, "temperature": 4.0,
                "unlabelled": "kd"}]),
    "kd+feature": Preset(
        "teacher and student with comparable inner layers: KD plus a FitNet hint on one pair "
        "of layers (layers=(student, teacher))",
        [TASK, KD, {"loss": "feature", "weight": 1.0, "layers": True}]),
    "kd+contrastive": Preset(
        "few labels and a transfer set: KD plus CRD-style InfoNCE between the two models' "
        "embeddings (layers=(student, teacher))",
        [TASK, KD, {"loss": "contrastive", "weight": 0.5, "temperature": 0.1,
                    "layers": True}]),
    "kd+relational": Preset(
        "embeddings of different widths: KD plus RKD distances between the rows of a batch "
        "(layers=(student, teacher))",
        [TASK, KD, {"loss": "relational", "weight": 1.0, "kind": "rkd_distance",
                    "layers": True}]),
    "task": Preset(
        "the baseline: the task loss alone, no teacher (what the student learns without "
        "distillation)", [{"loss": "task", "weight": 1.0}]),
}


class TermsError(ValueError):
    """A ``terms=`` value that cannot become an objective; the message names the item."""


@dataclass
class Objective:
    """The built terms, and the layers each model must expose: {feature name: layer}."""

    terms: list[WeightedTerm]
    student_taps: dict[str, str] = field(default_factory=dict)
    teacher_taps: dict[str, str] = field(default_factory=dict)
    spec: list[dict[str, Any]] = field(default_factory=list)     # the resolved term list

    @property
    def needs_teacher(self) -> bool:
        return any(t.term.needs_teacher for t in self.terms)

    def teacher_fields(self) -> list[str]:
        """The teacher outputs the terms read (what a cache stores)."""
        fields: list[str] = []
        for t in self.terms:
            fields += [f for f in t.term.teacher_fields() if f not in fields]
        return fields


def preset_table() -> str:
    """A markdown table of the presets and when to use each (docs/api.md holds it)."""
    lines = ["| preset | terms | when to use it |", "|---|---|---|"]
    for name, preset in PRESETS.items():
        listed = " + ".join(f"{t['weight']} {t['loss']}" for t in preset.terms)
        lines.append(f"| `{name}` | {listed} | {preset.when} |")
    return "\n".join(lines)


def _as_dict(item: Any, index: int) -> dict[str, Any]:
    if isinstance(item, Mapping):
        return dict(item)
    if hasattr(item, "loss") and hasattr(item, "params"):        # a recipe's LossTermSettings
        return {"loss": item.loss, "weight": item.weight, "name": item.name, **item.params}
    raise TermsError(f"terms[{index}] is a {type(item).__name__}; expected a dict such as "
                     "{'loss': 'kd', 'weight': 0.5, 'temperature': 4.0}.")


def resolve_terms(terms: str | Sequence[Any], layers: Sequence[str] | None = None
                  ) -> list[dict[str, Any]]:
    """The term list of a preset name (its feature terms given ``layers``) or of a list."""
    if isinstance(terms, str):
        if terms not in PRESETS:
            raise TermsError(f"unknown terms preset {terms!r}; presets: "
                             f"{', '.join(PRESETS)}. Or pass a term list, e.g. "
                             "[{'loss': 'task', 'weight': 0.5}, {'loss': 'kd', 'weight': 0.5}].")
        items = [dict(t) for t in PRESETS[terms].terms]
        for item in items:
            if item.pop("layers", False):
                if layers is None or len(layers) != 2:
                    raise TermsError(
                        f"preset {terms!r} matches a student layer to a teacher layer: pass "
                        "layers=('<student layer>', '<teacher layer>'), e.g. "
                        "layers=('features.3', 'features.6'); the names are those of "
                        "model.named_modules().")
                item["student_layer"], item["teacher_layer"] = layers
        return items
    if isinstance(terms, (list, tuple)) and terms:
        return [_as_dict(item, index) for index, item in enumerate(terms)]
    raise TermsError(f"terms is {terms!r}; expected a preset name ({', '.join(PRESETS)}) or a "
                     "non-empty list of term dicts.")


def build_objective(terms: str | Sequence[Any], task_loss: str,
                    layers: Sequence[str] | None = None) -> Objective:
    """Build the weighted terms; a TermsError naming the item and the fix for any bad one."""
    spec = resolve_terms(terms, layers)
    built: list[WeightedTerm] = []
    student_taps: dict[str, str] = {}
    teacher_taps: dict[str, str] = {}
    pairs: dict[tuple[str, str], str] = {}
    for index, item in enumerate(spec):
        item = dict(item)
        where = f"terms[{index}]"
        loss = item.pop("loss", None)
        if not isinstance(loss, str):
            raise TermsError(f"{where} has no 'loss' name: {item}. Valid losses: task, "
                             f"{', '.join(LOSSES.names())}.")
        loss = task_loss if loss == "task" else loss
        if loss not in LOSSES:
            raise TermsError(f"{where}: unknown loss {loss!r}; valid: task, "
                             f"{', '.join(LOSSES.names())}.")
        weight = item.pop("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise TermsError(f"{where} ({loss}): weight {weight!r} is not a number.")
        name = item.pop("name", None) or loss
        both = item.pop("layer", None)
        student_layer = item.pop("student_layer", both)
        teacher_layer = item.pop("teacher_layer", both)
        if (student_layer is None) != (teacher_layer is None):
            raise TermsError(f"{where} ({loss}): name both student_layer and teacher_layer "
                             "(or layer for both).")
        if student_layer is not None:
            if loss not in FEATURE_LOSSES:
                raise TermsError(f"{where}: loss {loss!r} reads logits, not layers; "
                                 f"student_layer / teacher_layer apply to "
                                 f"{', '.join(FEATURE_LOSSES)}.")
            key = pairs.setdefault((student_layer, teacher_layer), f"tap{len(pairs)}")
            student_taps[key], teacher_taps[key] = student_layer, teacher_layer
            item["feature"] = key
        elif loss in FEATURE_LOSSES and "feature" not in item:
            raise TermsError(f"{where} ({loss}) compares features: name the layers, "
                             "student_layer='<student layer>' and teacher_layer='<teacher "
                             "layer>' (or feature='image_embeds' for models that return a "
                             "ModelOutput with it).")
        try:
            term = build_loss(loss, **item)
        except (TypeError, ValueError) as error:
            raise TermsError(f"{where} ({loss}): {error}") from None
        built.append(WeightedTerm(name, float(weight), term))
    names = [t.name for t in built]
    if len(set(names)) != len(names):
        raise TermsError(f"two terms share a name ({names}); give one a 'name'.")
    try:
        check_weights(built)
    except ValueError as error:
        raise TermsError(str(error)) from None
    return Objective(built, student_taps, teacher_taps, spec)
