"""The values a user gives at the edge (a CLI flag, a Python keyword, a recipe field):
integers within a range, finite positive numbers, input shapes, class counts, names,
backends. One helper per kind, shared by `cli_args` (argparse types), the Python API and
the recipe loader, so a value is refused the same way wherever it is given.

Every helper takes the `label` a message should name — ``"--seed"``, ``"seed="`` or a
recipe's ``file, line N, field x`` — and raises `UsageError` (a `ValueError`, exit 2 at
the command line). Pure Python: importing it imports no TensorFlow, Keras or JAX.
"""

from __future__ import annotations

import math
import re

from cnnbuilder.errors import UsageError

SEED_MAX = 2**32 - 1
# The largest input side or class count a model may have: Keras/TensorFlow index a tensor
# dimension with 32-bit integers in places (and any such model is far over the cost bound).
DIMENSION_MAX = 2**31 - 1
BACKENDS = ("tensorflow", "jax")  # what train, tune and the command line run on
# What Keras itself accepts; a recipe builds under each (DESIGN §6: keras.layers/ops only).
KERAS_BACKENDS = ("tensorflow", "jax", "torch", "numpy", "openvino")
# What Keras accepts as a layer or model name and what survives a SavedModel's and
# TensorBoard's paths: no "/", no spaces or other separators.
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
NAME_RULE = "a name of letters, digits and _ . - that starts with a letter or _"


def _is_int(value) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def integer_in_range(value, label: str, minimum: int, maximum: int | None = None) -> int:
    """`value` (an int, or its text) when within [minimum, maximum], else a UsageError
    naming `label`."""
    text = value
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            value = None
    span = f"from {minimum:,} to {maximum:,}" if maximum is not None else f">= {minimum:,}"
    if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
        raise UsageError(f"{label}: expected an integer {span}, got {text!r}.")
    return value


def seed(value, label: str = "seed") -> int:
    """A random seed: an integer 0..2**32-1 (what NumPy and Keras accept)."""
    return integer_in_range(value, label, 0, SEED_MAX)


def positive_number(value, label: str, *, allow_zero: bool = False) -> float:
    """A finite number > 0 (>= 0 with `allow_zero`): `inf` would train to a NaN loss."""
    text = value
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            value = None
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and (value >= 0 if allow_zero else value > 0))
    if not ok:
        what = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise UsageError(f"{label}: expected {what}, got {text!r}.")
    return value


def input_shape(value, label: str = "input_shape") -> tuple | None:
    """(height, width, channels) of positive integers (height and width may be None),
    each at most DIMENSION_MAX; a string such as "32,32,3" is refused, not split."""
    if value is None:
        return None
    expected = (f"{label}: expected (height, width, channels) of positive integers at most "
                f"{DIMENSION_MAX:,} (height and width may be None), got {value!r}.")
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 3:
        raise UsageError(expected)
    shape = []
    for index, dim in enumerate(value):
        if dim is None and index < 2:
            shape.append(None)
            continue
        if hasattr(dim, "__index__") and not isinstance(dim, bool):
            dim = int(dim.__index__())
        if not _is_int(dim) or not 1 <= dim <= DIMENSION_MAX:
            raise UsageError(expected)
        shape.append(dim)
    return tuple(shape)


def classes(value, label: str = "classes") -> int | None:
    """A class count: an integer 1..DIMENSION_MAX (None: the recipe's)."""
    return None if value is None else integer_in_range(value, label, 1, DIMENSION_MAX)


def name(value, label: str = "name") -> str:
    """A model, layer or stage name Keras and the exported files accept."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise UsageError(f"{label}: expected {NAME_RULE}, got {value!r}.")
    return value


def backend(value, label: str = "KERAS_BACKEND", allowed=BACKENDS) -> str:
    """A Keras backend among `allowed` (default: the ones cnnbuilder trains on)."""
    if value not in allowed:
        raise UsageError(f"{label}={value!r}: expected {', '.join(allowed[:-1])} or {allowed[-1]}; "
                         f"set {label} to one of them (or unset it: tensorflow).")
    return value


def environment_backend(environ=None, allowed=BACKENDS) -> str | None:
    """$KERAS_BACKEND checked before Keras is imported (Keras itself would fail with a
    bare error on its first import); None when it is not set."""
    import os

    value = (environ if environ is not None else os.environ).get("KERAS_BACKEND")
    return None if value in (None, "") else backend(value, allowed=allowed)
