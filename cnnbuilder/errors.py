"""The exceptions cnnbuilder raises on purpose.

Everything a user can cause (a bad recipe, a missing file, a bad CLI argument) is a
`CnnBuilderError`; the CLI prints its message as one paragraph and exits non-zero.
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
