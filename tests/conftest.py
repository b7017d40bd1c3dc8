import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Generated data goes to a per-session cache, never the user's ~/.cache."""
    os.environ["VLDISTILL_CACHE"] = str(tmp_path_factory.mktemp("vldistill-cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    yield


@pytest.fixture
def tiny_recipe_path() -> Path:
    return ROOT / "recipes" / "tiny.yaml"
