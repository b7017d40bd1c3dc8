"""vldistill: distil large vision-language models into small, fast students.

``import vldistill`` stays light (no Lightning, no matplotlib). ``vldistill.distill(...)`` is the
one-call Python API (see :mod:`vldistill.api`); ``vldistill.distill`` is also the package of
losses and the distillation step.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "distill":
        import importlib

        return importlib.import_module("vldistill.distill")
    raise AttributeError(f"module 'vldistill' has no attribute {name!r}")
