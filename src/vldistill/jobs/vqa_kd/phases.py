"""Multi-phase distillation of the KD student (seed 001: contrastive, then LoCa, then both).

Each phase is one ``fit`` with its own loss terms, step budget and trainable parameters. A
phase starts from the previous phase's student (in memory, or its checkpoint when a single phase
is run with ``vldistill run RECIPE --phase NAME``), from a checkpoint file, or from scratch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import nn

from vldistill.config import PhaseSettings
from vldistill.core.errors import RecipeError
from vldistill.jobs.vqa_kd.workspace import VQAWorkspace
from vldistill.kd.step import DistillationStep, build_terms
from vldistill.models import build_from_checkpoint
from vldistill.models.checkpoint import load_checkpoint
from vldistill.train.fit import FitResult


def select_phases(phases: Sequence[PhaseSettings], only: str | None) -> list[PhaseSettings]:
    if only is None:
        return list(phases)
    names = [phase.name for phase in phases]
    if only not in names:
        raise RecipeError(f"--phase {only!r} is not a phase of this recipe; its phases: "
                          f"{', '.join(names) or '(none: the recipe has no distill.phases)'}")
    return [phases[names.index(only)]]


def set_trainable(step: DistillationStep, prefixes: Sequence[str]) -> None:
    """Train only student parameters under ``prefixes`` (names as in ``step.named_parameters``,
    e.g. ``student.head``); loss-term projectors always train; the teacher never does."""
    student = [(f"student.{name}", p) for name, p in step.student.named_parameters()]
    for prefix in prefixes:
        if not any(name == prefix or name.startswith(prefix + ".") for name, _ in student):
            modules = sorted({".".join(name.split(".")[:2]) for name, _ in student})
            raise RecipeError(f"phase trainable prefix {prefix!r} matches no student parameter;"
                              f" the student's modules: {', '.join(modules)} (or 'student')")
    for name, parameter in student:
        parameter.requires_grad_(any(name == p or name.startswith(p + ".") for p in prefixes))


def phase_role(seed: int, phase: str) -> str:
    return f"student-kd-seed{seed}-{phase}"


def phase_checkpoint(job: VQAWorkspace, seed: int, phase: str) -> Path:
    return job.paths.weights(phase_role(seed, phase))


def initial_student(job: VQAWorkspace, phases: Sequence[PhaseSettings], phase: PhaseSettings,
                    previous: nn.Module | None, seed: int) -> nn.Module:
    """The student a phase starts from."""
    if isinstance(phase.init_from, Path):
        return build_from_checkpoint(load_checkpoint(phase.init_from)).train()
    index = [p.name for p in phases].index(phase.name)
    if phase.init_from == "scratch" or index == 0:
        return job.build("student")[0]
    if previous is not None:
        return previous
    earlier = phases[index - 1].name
    path = phase_checkpoint(job, seed, earlier)
    if not path.is_file():
        raise RecipeError(f"phase {phase.name!r} starts from phase {earlier!r}, whose checkpoint "
                          f"{path} does not exist. Run that phase first: "
                          f"`vldistill run RECIPE --phase {earlier}`.")
    return build_from_checkpoint(load_checkpoint(path)).train()


def train_phases(job: VQAWorkspace, teacher: nn.Module, seed: int, only: str | None = None
                 ) -> tuple[list[FitResult], str]:
    """Run the recipe's phases (or only one) for one seed; returns the fits and the last role."""
    recipe = job.recipe
    phases = recipe.distill.phases
    student: nn.Module | None = None
    results, role = [], ""
    for phase in select_phases(phases, only):
        student = initial_student(job, phases, phase, student, seed)
        role = phase_role(seed, phase.name)
        step = DistillationStep(student, build_terms(phase.terms), teacher=teacher)
        set_trainable(step, phase.trainable)
        _, save = job.build("student")
        labelled, transfer = job.student_sets(teacher)
        results.append(job.train(role, step, phase.train or recipe.student.train, labelled,
                                 transfer, recipe.distill.transfer_fraction, seed=seed,
                                 save=save))
        student.requires_grad_(True)
    return results, role
