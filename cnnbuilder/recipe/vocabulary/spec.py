"""What a block of the recipe language is: its fields (`Field`), its spec (`BlockSpec`) and
the registry (`BLOCKS`) the resolver, the layer builder and the docs generator read.

Pure Python. Each family module (`primitives`, `residual`, `dense`, `inception`) registers
its blocks here; `cnnbuilder.model.blocks` registers one implementation per entry.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

REQUIRED = object()
# The layer names Keras accepts and exported files keep (no "/", no spaces); the same rule
# as `cnnbuilder.recipe.checks.NAME_PATTERN`, for a block's `name:`.
LAYER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")

ACTIVATIONS = frozenset(
    "relu relu6 sigmoid softmax tanh elu selu gelu silu swish linear leaky_relu "
    "hard_sigmoid hard_silu softplus softsign mish exponential log_softmax".split()
)
INITIALIZERS = frozenset(
    "glorot_uniform glorot_normal he_normal he_uniform lecun_normal lecun_uniform zeros "
    "ones orthogonal truncated_normal random_normal random_uniform variance_scaling".split()
)


class ShapeError(ValueError):
    """The block cannot take an input of this shape."""


def did_you_mean(word: str, options) -> str:
    """' Did you mean 'x'?' for the closest of `options`, or '' when none is close."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


# The largest integer a block field takes: Keras/TensorFlow size tensors with 32-bit
# integers in places (a larger one fails deep inside them); any model near it is far over
# the cost bound anyway (`cnnbuilder.model.cost`).
INT_MAX = 2**31 - 1


def _is_int(value, minimum) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= INT_MAX


def _too_large(value) -> bool:
    """An integer (or one in a list) past INT_MAX, which no block field takes."""
    if isinstance(value, (list, tuple)):
        return any(_too_large(v) for v in value)
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT_MAX


def _is_size(value) -> bool:
    if _is_int(value, 1):
        return True
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_int(x, 1) for x in value)


def _is_padding(value) -> bool:
    if _is_int(value, 0):
        return True
    if isinstance(value, (list, tuple)) and len(value) == 2:
        if all(_is_int(x, 0) for x in value):
            return True
        return all(isinstance(p, (list, tuple)) and len(p) == 2 and all(_is_int(x, 0) for x in p)
                   for p in value)
    return False


@dataclass(frozen=True)
class Field:
    """One field of a block: its kind, default (`REQUIRED` if none), bounds and description."""

    name: str
    kind: str  # int | float | bool | choice | size | padding | activation | initializer | str | name
    default: Any = REQUIRED
    doc: str = ""
    minimum: float | None = None  # inclusive
    maximum: float | None = None  # inclusive
    below: float | None = None  # exclusive upper bound
    above: float | None = None  # exclusive lower bound
    choices: tuple = ()
    optional: bool = False  # None is accepted

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def describe_type(self) -> str:
        """What the field accepts, as the docs and error messages say it ("integer >= 1")."""
        text = {
            "int": "integer",
            "float": "number",
            "bool": "true or false",
            "choice": " | ".join(str(c) for c in self.choices),
            "size": "integer or [height, width]",
            "padding": "integer, [height, width] or [[top, bottom], [left, right]]",
            "activation": "activation name",
            "initializer": "initializer name",
            "str": "string",
            "name": "a name of letters, digits and _ . - that starts with a letter or _",
        }[self.kind]
        bounds = []
        if self.minimum is not None:
            bounds.append(f">= {self.minimum:g}")
        if self.above is not None:
            bounds.append(f"> {self.above:g}")
        if self.maximum is not None:
            bounds.append(f"<= {self.maximum:g}")
        if self.below is not None:
            bounds.append(f"< {self.below:g}")
        if bounds:
            text += " " + " and ".join(bounds)
        if self.optional:
            text += " or null"
        return text

    def check(self, value: Any) -> str | None:
        """None when `value` suits the field, else what was expected."""
        expected = f"expected {self.describe_type()}"
        if _too_large(value):
            return f"{expected}, at most {INT_MAX:,}"
        if value is None:
            return None if self.optional else expected
        kind = self.kind
        if kind == "size":
            return None if _is_size(value) else expected + " (positive)"
        if kind == "padding":
            return None if _is_padding(value) else expected + " (non-negative)"
        if kind in ("activation", "initializer"):
            names = ACTIVATIONS if kind == "activation" else INITIALIZERS
            if isinstance(value, str) and value in names:
                return None
            return expected + f" (one of {', '.join(sorted(names))})" + did_you_mean(value, names)
        ok = {
            "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and abs(v) <= INT_MAX,
            "float": lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool)
                                and math.isfinite(v)),
            "bool": lambda v: isinstance(v, bool),
            "choice": lambda v: any(v == c and type(v) is type(c) for c in self.choices),
            "str": lambda v: isinstance(v, str) and bool(v),
            "name": lambda v: isinstance(v, str) and LAYER_NAME.fullmatch(v) is not None,
        }[kind](value)
        if not ok:
            return expected
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                return expected
            if self.maximum is not None and value > self.maximum:
                return expected
            if self.below is not None and value >= self.below:
                return expected
            if self.above is not None and value <= self.above:
                return expected
        return None


COMMON_FIELDS = (
    Field("name", "name", None, "layer-name prefix (default: derived from the stage and position)", optional=True),
    Field("repeat", "int", 1, "how many times the block is applied in sequence", minimum=0),
)


@dataclass(frozen=True)
class BlockSpec:
    """A block name users write, its fields and how it changes the shape of its input."""

    name: str
    family: str
    doc: str
    fields: tuple[Field, ...]
    shape: Callable[[tuple, dict], tuple]  # (h, w, c) or (c,) -> output shape
    shorthand: str | None = None  # field set by `- block: value`
    composite: bool = False  # named `<stage>_block<k>` rather than `<stage>_<type><k>`
    field_map: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        self.field_map.update({f.name: f for f in COMMON_FIELDS + self.fields})

    def field(self, name: str) -> Field | None:
        return self.field_map.get(name)


BLOCKS: dict[str, BlockSpec] = {}


def register(spec: BlockSpec) -> BlockSpec:
    """Add a block to the vocabulary (in the order the docs list them)."""
    if spec.name in BLOCKS:
        raise KeyError(f"block {spec.name!r} declared twice")
    BLOCKS[spec.name] = spec
    return spec

