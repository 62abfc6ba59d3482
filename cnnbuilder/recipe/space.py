"""The values a search space is made of: a `Dimension` per tuned param or training setting,
and the `SearchSpace` of a recipe (what `cnnbuilder.recipe.search_space.parse_space` returns).

Pure Python: the dimensions say how KerasTuner declares them (`Dimension.keras_tuner`)
without importing it.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any, Iterable

TRAINING = "training"


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Dimension:
    """One tuned value: a recipe param (section "params") or a training setting."""

    name: str
    section: str  # "params" | "training"
    kind: str  # "choice" | "int" | "float"
    values: tuple = ()  # choice
    low: Any = None  # int, float
    high: Any = None
    step: Any = None
    log: bool = False
    default: Any = None

    @property
    def key(self) -> str:
        """The hyperparameter's name in KerasTuner (training settings get a prefix)."""
        return self.name if self.section == "params" else f"{TRAINING}.{self.name}"

    @property
    def label(self) -> str:
        return self.key

    # -- KerasTuner encoding: Choice only holds one scalar type (and turns booleans into
    # ints), so other choices (lists, booleans, mixed types) travel as JSON labels.

    @property
    def _encoded(self) -> bool:
        if self.kind != "choice":
            return False
        types = {type(v) for v in self.values}
        return len(types) != 1 or not types <= {int, float, str}

    def keras_tuner(self) -> tuple[str, dict]:
        """(HyperParameters method, keyword arguments) that declares this dimension."""
        if self.kind == "choice":
            values = [self.encode(v) for v in self.values]
            kwargs = {"name": self.key, "values": values}
            if self.default is not None:
                kwargs["default"] = self.encode(self.default)
            return "Choice", kwargs
        kwargs = {"name": self.key, "min_value": self.low, "max_value": self.high}
        if self.step is not None:
            kwargs["step"] = self.step
        if self.log:
            kwargs["sampling"] = "log"
        if self.default is not None:
            kwargs["default"] = self.default
        return ("Int" if self.kind == "int" else "Float"), kwargs

    def encode(self, value):
        return json.dumps(value) if self._encoded else value

    def decode(self, value):
        if self._encoded and isinstance(value, str):
            return json.loads(value)
        if self.kind == "int" and is_number(value):
            return int(value)
        if self.kind == "float" and is_number(value):
            return float(value)
        return value

    def grid(self, limit: int) -> list | None:
        """Every value of a finite dimension (None for continuous ones or above `limit`)."""
        if self.kind == "choice":
            return list(self.values)
        if self.kind == "int" and not self.log:
            step = self.step or 1
            count = (self.high - self.low) // step + 1
            return list(range(self.low, self.high + 1, step)) if count <= limit else None
        return None

    def to_dict(self) -> dict:
        spec: dict = {self.kind: list(self.values) if self.kind == "choice" else [self.low, self.high]}
        if self.step is not None:
            spec["step"] = self.step
        if self.log:
            spec["log"] = True
        if self.default is not None:
            spec["default"] = self.default
        return spec


@dataclass(frozen=True)
class SearchSpace:
    dimensions: tuple[Dimension, ...] = ()
    source: str = "tune"

    def __bool__(self) -> bool:
        return bool(self.dimensions)

    def __iter__(self):
        return iter(self.dimensions)

    def __len__(self) -> int:
        return len(self.dimensions)

    @property
    def keys(self) -> list[str]:
        return [d.key for d in self.dimensions]

    @property
    def params(self) -> tuple[Dimension, ...]:
        return tuple(d for d in self.dimensions if d.section == "params")

    @property
    def training(self) -> tuple[Dimension, ...]:
        return tuple(d for d in self.dimensions if d.section == TRAINING)

    def split(self, values: dict) -> tuple[dict, dict]:
        """KerasTuner values {key: encoded} -> (recipe params, training settings), decoded.

        Dimensions absent from `values` take their default (KerasTuner's rule)."""
        params, training = {}, {}
        for dim in self.dimensions:
            if dim.key in values:
                value = dim.decode(values[dim.key])
            else:
                value = self.default_value(dim)
            (params if dim.section == "params" else training)[dim.name] = value
        return params, training

    def hyperparameters(self, values: dict) -> dict:
        """The values of one trial as the recipe writes them: params, then a `training` map."""
        params, training = self.split(values)
        return {**params, **({TRAINING: training} if training else {})}

    @staticmethod
    def default_value(dim: Dimension):
        if dim.default is not None:
            return dim.default
        if dim.kind == "choice":
            return dim.values[0]
        return dim.low

    def without(self, params: Iterable[str] = (), training: Iterable[str] = ()) -> "SearchSpace":
        """The space less the dimensions fixed elsewhere (--set, --batch-size...)."""
        params, training = set(params), set(training)
        kept = tuple(d for d in self.dimensions
                     if not (d.section == "params" and d.name in params)
                     and not (d.section == TRAINING and d.name in training))
        return SearchSpace(kept, self.source)

    def log_keys(self) -> tuple[str, ...]:
        return tuple(d.key for d in self.dimensions if d.log)

    def to_dict(self) -> dict:
        section: dict = {d.name: d.to_dict() for d in self.params}
        if self.training:
            section[TRAINING] = {d.name: d.to_dict() for d in self.training}
        return section

    def combinations(self, limit: int = 10_000) -> list[tuple[dict, dict]] | None:
        """Every (params, training) of a finite space of at most `limit` points, else None."""
        grids = [d.grid(limit) for d in self.dimensions]
        if any(g is None for g in grids) or math.prod(len(g) for g in grids) > limit:
            return None
        out = []
        for combo in itertools.product(*grids):
            params, training = {}, {}
            for dim, value in zip(self.dimensions, combo):
                (params if dim.section == "params" else training)[dim.name] = value
            out.append((params, training))
        return out


__all__ = ["Dimension", "SearchSpace", "TRAINING", "is_int", "is_number"]
