"""The kit's own error types.

Every problem with user input (files, annotations, checkpoints, configuration)
is raised as one of these, with a message that names the file and the problem,
so that entry points can print it without a traceback from deep inside a library.
"""
from __future__ import annotations


class ChhError(Exception):
    """Base class of every error the kit raises on purpose."""


class DataFormatError(ChhError, ValueError):
    """A data file (image, annotation, descriptor) is missing, unreadable or malformed."""


class CheckpointError(ChhError, ValueError):
    """A checkpoint is missing, corrupt or does not fit the configured model."""


class ConfigError(ChhError, ValueError):
    """A configuration or profile is invalid."""


class NonFiniteError(ChhError, FloatingPointError):
    """Logits or a loss became NaN or infinite."""


class NotebookError(ChhError, RuntimeError):
    """A teaching notebook failed while it was executed; the message names the notebook and the cell."""
