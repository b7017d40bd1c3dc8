"""vldistill: distil large vision-language models into small, fast students.

``import vldistill`` stays light (no Lightning, no matplotlib): ``vldistill.distill(...)``, the
one-call Python API (:func:`vldistill.api.distill`), is loaded on first use. The losses, the
distillation step and the teacher sources are the package :mod:`vldistill.kd`.
"""

from vldistill.core.versions import __version__

__all__ = ["Augment", "__version__", "distill"]


def __getattr__(name: str):
    if name in ("distill", "Augment", "DistillResult"):
        # the API needs Lightning: loaded when it is first used, not at `import vldistill`
        from vldistill import api

        return getattr(api, name)
    raise AttributeError(f"module 'vldistill' has no attribute {name!r}")
