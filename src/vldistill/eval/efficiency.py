"""Efficiency: parameters, latency at batch 1, throughput. Measured, never estimated.

Timings on a shared CPU are noisy: compare models measured in the same process, one after the
other, and read ratios rather than absolute numbers.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from vldistill.models import count_parameters
from vldistill.models.outputs import call_model


@dataclass(frozen=True)
class Efficiency:
    parameters: int
    latency_ms: float              # median wall time of one example (batch 1)
    throughput: float              # examples per second at the throughput batch size
    throughput_batch: int          # examples per throughput batch

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.inference_mode()
def median_seconds(run: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``run()`` over ``repeats`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _median_seconds(model: nn.Module, inputs: Mapping[str, Any] | Sequence[Any],
                    repeats: int, warmup: int = 3) -> float:
    return median_seconds(lambda: call_model(model, inputs), repeats, warmup)


def measure(model: nn.Module, single_inputs: Mapping[str, Any] | Sequence[Any],
            batch_inputs: Mapping[str, Any] | Sequence[Any], batch_examples: int,
            repeats: int = 50) -> Efficiency:
    """Latency of ``single_inputs`` (one example) and throughput of ``batch_inputs``
    (``batch_examples`` examples), both as medians over ``repeats`` runs."""
    model.eval()
    latency = _median_seconds(model, single_inputs, repeats)
    batch_seconds = _median_seconds(model, batch_inputs, max(3, repeats // 5))
    return Efficiency(count_parameters(model), latency * 1000.0,
                      batch_examples / batch_seconds, batch_examples)
