"""The error types vldistill raises at its boundaries.

Each one subclasses the built-in a caller would expect (``ValueError``, ``FileNotFoundError``),
so ``except ValueError`` keeps working, and :class:`VldistillError` catches all of ours at once.
Messages name the file, the record or field, the value received, what is expected and the fix.
"""

from __future__ import annotations


class VldistillError(Exception):
    """Base class of every error vldistill raises on purpose."""


class DataError(VldistillError, ValueError):
    """Input data is malformed: bad JSON, a missing field, a wrong type, an unreadable image."""


class RecipeError(VldistillError, ValueError):
    """A recipe (YAML config) is invalid: unknown key, wrong type, value out of range."""


class MissingFileError(VldistillError, FileNotFoundError):
    """A file the input needs (questions, annotations, an image, a depth map) does not exist."""


class DiskSpaceError(VldistillError, OSError):
    """Not enough free disk space for a checkpoint, cache shard or export; nothing was left
    half-written."""
