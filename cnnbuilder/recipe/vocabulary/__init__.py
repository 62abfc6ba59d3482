"""The block vocabulary of the recipe language: every block, its fields, types and defaults.

A module per family, as `cnnbuilder.model.blocks`: `primitives` (one layer each),
`residual`, `dense`, `inception`, `decoder` (segmentation); `spec` holds what a block is (`Field`, `BlockSpec`) and the
registry `BLOCKS`. Pure Python, so recipes can be validated (and documented) without
importing TensorFlow; `cnnbuilder.model.blocks` registers one implementation per entry, and
a test checks that the two agree. Each block also knows how it changes the shape of its
input, which lets the resolver reject a network that shrinks its input to nothing before
any layer is built.
"""

from __future__ import annotations

from cnnbuilder.recipe.vocabulary.spec import (
    ACTIVATIONS,
    BLOCKS,
    COMMON_FIELDS,
    INITIALIZERS,
    REQUIRED,
    BlockSpec,
    Field,
    ShapeError,
    did_you_mean,
    register,
)

# Imported for their registrations, in the order the reference lists the blocks.
from cnnbuilder.recipe.vocabulary import primitives, residual, dense, inception, decoder  # noqa: E402, F401, I001

__all__ = [
    "ACTIVATIONS", "BLOCKS", "COMMON_FIELDS", "INITIALIZERS", "REQUIRED", "BlockSpec", "Field",
    "ShapeError", "did_you_mean", "register",
]
