"""The package version and the versions of the libraries a run used (``versions.json``)."""

from __future__ import annotations

import platform
from importlib import metadata

__version__ = "0.1.0"

RECORDED = ("torch", "lightning", "numpy", "pydantic", "safetensors", "transformers")


def library_versions() -> dict[str, str]:
    """Python, platform, vldistill and the installed versions of the libraries a run uses."""
    versions = {"python": platform.python_version(), "platform": platform.platform(),
                "vldistill": __version__}
    for package in RECORDED:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions
