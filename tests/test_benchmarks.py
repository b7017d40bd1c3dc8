"""The method benchmark's arithmetic: gap recovered, mean and spread (by hand)."""

import importlib.util
from pathlib import Path

import pytest

PATH = Path(__file__).parents[1] / "benchmarks" / "methods.py"


@pytest.fixture(scope="module")
def methods():
    spec = importlib.util.spec_from_file_location("methods_benchmark", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gap_recovered_by_hand(methods):
    # teacher 60, no KD mean 40: a method at 50 recovers (50 - 40) / (60 - 40) = 50 %
    text = methods.table(60.0, {"no KD": [39.0, 41.0], "KD": [49.0, 51.0], "bad": [35.0]})
    lines = text.splitlines()
    assert "| no KD | 40.00 ± 1.00 | 39.00, 41.00 | +0.0 % |" in lines
    assert "| KD | 50.00 ± 1.00 | 49.00, 51.00 | +50.0 % |" in lines
    assert "| bad | 35.00 ± 0.00 | 35.00 | -25.0 % |" in lines


def test_every_method_names_registered_losses(methods):
    from vldistill.config import LossTermSettings

    for terms in methods.METHODS.values():
        for term in terms:
            LossTermSettings(**term)     # validates loss names and hyper-parameters


# --- benchmarks/peer/run.py: the side-by-side table against torchdistill ------------------


@pytest.fixture(scope="module")
def peer():
    path = Path(__file__).parents[1] / "benchmarks" / "peer" / "run.py"
    spec = importlib.util.spec_from_file_location("peer_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(method, seed, accuracies, seconds, passes=0, teacher_s=0.0):
    history = [{"epoch": i + 1, "time_s": t, "accuracy": a}
               for i, (a, t) in enumerate(zip(accuracies, seconds))]
    return {"method": method, "seed": seed, "history": history, "accuracy": accuracies[-1],
            "wall_time_s": seconds[-1], "teacher_forward_examples": passes,
            "teacher_time_s": teacher_s}


def test_peer_table_and_checks_by_hand(peer):
    records = [
        _record("torchdistill kd", 0, [50, 60, 70], [10, 20, 30], passes=300),
        _record("torchdistill kd", 1, [40, 60, 72], [10, 20, 30], passes=300),
        # reaches 70 (seed 0) at 12 s and 72 (seed 1) at 14 s: 0.40 and 0.47 of 30 s
        _record("vldistill kd", 0, [55, 70, 71], [8, 12, 16], passes=100, teacher_s=4.0),
        _record("vldistill kd", 1, [55, 73, 74], [8, 14, 18], passes=100, teacher_s=4.0),
        _record("vldistill dkd", 0, [60, 72, 73], [8, 12, 16], passes=100),
        _record("vldistill dkd", 1, [60, 72, 72.5], [8, 12, 16], passes=100),
        _record("vldistill student only", 0, [30, 40, 50], [4, 8, 12]),
        _record("vldistill student only", 1, [30, 40, 52], [4, 8, 12]),
    ]
    text, summary = peer.table(records, 3)
    lines = text.splitlines()
    assert "| torchdistill kd | 71.00 ± 1.41 | 70.00, 72.00 | 30.0 | 30.0 | 300 |" in lines
    assert "| vldistill kd | 72.50 ± 2.12 | 71.00, 74.00 | 17.0 | 13.0 | 100 |" in lines
    assert ("| vldistill student only | 51.00 ± 1.41 | 50.00, 52.00 | 12.0 | not reached in "
            "2 of 2 seeds | 0 |") in lines
    verdicts = peer.checks(summary, records)
    # the best preset by mean is dkd (72.75, over kd's 72.50): it reaches 70 and 72 at 12 s
    # (0.40 of 30 s each); kd at 12 and 14 s is shown beside it
    assert verdicts[0].startswith("vldistill dkd reaches torchdistill KD's final accuracy in "
                                  "0.40, 0.40 x") and verdicts[0].endswith("PASS")
    assert verdicts[1].startswith("vldistill kd reaches torchdistill KD's final accuracy in "
                                  "0.40, 0.47 x") and verdicts[1].endswith("shown")
    # dkd's margins +3.0 and +0.5: fails on seed 1
    assert verdicts[2].startswith("best preset vldistill dkd: +3.00, +0.50 points")
    assert verdicts[2].endswith("FAIL")
    # cached kd: (17 - 4) / 12 = 1.08 of the student alone per epoch
    assert "1.08 (goal <= 1.1): PASS" in verdicts[3]


def test_peer_epoch_cosine_matches_torch_cosine_annealing_stepped_per_epoch(peer):
    import torch

    model = torch.nn.Linear(2, 2)
    ours = torch.optim.SGD(model.parameters(), lr=0.1)
    theirs = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = peer.epoch_cosine(steps_per_epoch=3, epochs=4)(ours, 12)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(theirs, T_max=4)
    for epoch in range(4):
        for _ in range(3):
            assert ours.param_groups[0]["lr"] == pytest.approx(theirs.param_groups[0]["lr"])
            ours.step()
            schedule.step()
        theirs.step()
        reference.step()
