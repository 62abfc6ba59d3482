"""Block implementations, one module per family, registered by the names recipes use.

Each block is a function `block(x, *, nn, name, **fields) -> tensor`; `nn` is the
`LayerFactory` carrying the recipe's layer defaults. The fields and their defaults are
declared in `cnnbuilder.recipe.vocabulary`, which the recipe resolver checks first.
"""

from __future__ import annotations

from typing import Callable

BLOCK_FUNCTIONS: dict[str, Callable] = {}


def register(*names: str):
    """Register the decorated block function under the recipe block `names`.

    Raises:
        KeyError: a name registered twice.
    """

    def decorator(function):
        for name in names:
            if name in BLOCK_FUNCTIONS:
                raise KeyError(f"block {name!r} registered twice")
            BLOCK_FUNCTIONS[name] = function
        return function

    return decorator


def _load_families() -> None:
    # Imported for their registrations.
    from cnnbuilder.model.blocks import basic, decoder, dense, inception, residual  # noqa: F401


_load_families()
