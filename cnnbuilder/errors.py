"""Every exception cnnbuilder raises on purpose.

Everything a user can cause (a bad recipe, a missing file, a bad CLI argument) is a
`CnnBuilderError`; the CLI prints its message as one paragraph and exits with status 2.
Any other exception is an internal failure: exit status 1 and a hint to rerun with
``--debug``, which shows the traceback.

This module imports nothing, so every layer of the package (the pure-Python recipe
language included) can raise these.
"""


class CnnBuilderError(Exception):
    """Base class of the errors that carry a message meant for a user."""


class RecipeError(CnnBuilderError, ValueError):
    """A recipe (or a parameter override) is invalid; raised before any layer is built."""


class WeightsError(CnnBuilderError, ValueError):
    """A weights file is missing or does not fit the model."""


class DataError(CnnBuilderError, ValueError):
    """A dataset cannot be found, read or used with the model."""


class RunError(CnnBuilderError, ValueError):
    """A training, tuning or export directory is in a state that forbids the request."""


class TuningError(CnnBuilderError, ValueError):
    """A tuning argument is invalid (tuner, objective, trial counts...)."""


class ExportError(CnnBuilderError, ValueError):
    """An export cannot be written or does not reproduce the Keras model."""


class UsageError(CnnBuilderError, ValueError):
    """A command-line argument is malformed."""


class TrialSkipped(CnnBuilderError):
    """A tuning trial that is never trained: the recipe rejects its values, or the model
    is over the parameter budget. The tuner records it as skipped and goes on."""

    def __init__(self, reason: str, params: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.params = params
