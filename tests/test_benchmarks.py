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
