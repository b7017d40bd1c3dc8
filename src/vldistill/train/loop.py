"""A plain seeded training loop for models trained outside Lightning: the retriever and
reader of knowledge-based VQA (vldistill.kb) and the open-vocabulary image encoders
(vldistill.openvocab). Their steps are a few lines over index batches of a fixed population;
the VQA trainer (vldistill.train.fit) is built around image-question batches and answer heads.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from vldistill.core.console import console


def run_steps(parameters, *, steps: int, batch_size: int, population: int, lr: float,
              seed: int, what: str, progress: bool,
              step_loss: Callable[[np.ndarray], torch.Tensor],
              after_step: Callable[[int], bool] | None = None,
              schedule: str = "constant", warmup_steps: int = 0) -> list[float]:
    """The loop the retriever, reader and open-vocabulary trainers share: each step draws
    ``batch_size`` row indices out of ``population`` without replacement (seeded),
    ``step_loss(rows)`` gives the loss, AdamW steps; a progress bar counts the steps.
    ``after_step(step)`` returning True stops early. The learning rate is ``lr`` times a
    linear warm-up ramp over the first ``warmup_steps`` times, with ``schedule: cosine``, a
    cosine decay from 1 to 0 over all ``steps`` (the two factors multiply from step 0).
    Returns the loss per step."""

    generator = np.random.default_rng(seed)
    torch.manual_seed(seed)
    optimiser = torch.optim.AdamW(parameters, lr=lr)
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule {schedule!r}: expected constant or cosine")

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
        decay = 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)) \
            if schedule == "cosine" else 1.0
        return warm * decay
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, factor)
    losses: list[float] = []
    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task(what, total=steps, visible=progress)
        for step in range(1, steps + 1):
            rows = generator.choice(population, size=min(batch_size, population),
                                    replace=False)
            loss = step_loss(rows)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            bar.update(task, advance=1)
            if progress and not console.is_terminal and step % max(1, steps // 10) == 0:
                # a live bar shows nothing in a log file: a line every tenth of the run
                console.print(f"{what}: step {step}/{steps}, loss {losses[-1]:.4f}",
                              markup=False)
            if after_step is not None and after_step(step):
                break
    return losses
