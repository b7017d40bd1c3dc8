"""A plain seeded training loop for models trained outside Lightning: the retriever and
reader of knowledge-based VQA (vldistill.kb) and the open-vocabulary image encoders
(vldistill.openvocab). Their steps are a few lines over index batches of a fixed population;
the VQA trainer (vldistill.train.fit) is built around image-question batches and answer heads.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from vldistill.console import console


def run_steps(parameters, *, steps: int, batch_size: int, population: int, lr: float,
              seed: int, what: str, progress: bool,
              step_loss: Callable[[np.ndarray], torch.Tensor],
              after_step: Callable[[int], bool] | None = None) -> list[float]:
    """The loop the retriever, reader and open-vocabulary trainers share: each step draws ``batch_size`` row
    indices out of ``population`` without replacement (seeded), ``step_loss(rows)`` gives the
    loss, AdamW steps; a progress bar counts the steps. ``after_step(step)`` returning True
    stops early. Returns the loss per step."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    generator = np.random.default_rng(seed)
    torch.manual_seed(seed)
    optimiser = torch.optim.AdamW(parameters, lr=lr)
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
            losses.append(float(loss.detach()))
            bar.update(task, advance=1)
            if after_step is not None and after_step(step):
                break
    return losses
