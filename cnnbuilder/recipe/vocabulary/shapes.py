"""Shape arithmetic shared by the block families: how a convolution or pooling window
changes a spatial size (None stays None: a variable input size)."""

from __future__ import annotations

import math

from cnnbuilder.recipe.vocabulary.spec import ShapeError


def pair(value) -> tuple[int, int]:
    """`3` or `[3, 5]` -> (3, 3) or (3, 5)."""
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def conv_size(n, kernel, stride, padding, dilation=1):
    """The output size of a window `kernel` over `n` pixels (same, valid or symmetric)."""
    if n is None:
        return None
    effective = (kernel - 1) * dilation + 1
    if padding == "same":
        return math.ceil(n / stride)
    if padding == "symmetric":
        n += 2 * (effective // 2)
    return (n - effective) // stride + 1


def spatial(shape, fn):
    """(fn(height, 0), fn(width, 1), channels) of an image-shaped `shape`."""
    if len(shape) != 3:
        raise ShapeError(f"needs an image-shaped input (height, width, channels), got {shape}")
    h, w, c = shape
    return fn(h, 0), fn(w, 1), c
