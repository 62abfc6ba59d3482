"""What a param accepts: the declaration form of an entry of `params:`.

A param is written either as its default (`growth_rate: 32`) or as a declaration, a
mapping with the default and what the param accepts::

    params:
      growth_rate: {default: 32, int: [1, 1024]}             # an integer from 1 to 1024
      compression: {default: 0.5, float: [0.01, 1.0]}        # a number in the range
      blocks: {default: [6, 12, 24, 16], int: [1, 1000], length: 4}   # each item, and the count
      style: {default: v1, choice: [v1, v2]}
      depth:
        default: 100
        int: [7, 1000]
        rule: "${(depth - 4) % (6 if bottleneck else 3) == 0}"  # any params; must be true
        message: depth - 4 must be a positive multiple of 6 (without bottleneck: of 3)

A bound may be null (no bound on that side). Each level of an `extends` chain may declare:
a child's plain value changes the default and keeps the parent's declaration, a child's
declaration is merged into the parent's key by key (null removes a key). The declarations
are split from the defaults when each file is read (`split_params`), so that
`document.data["params"]` keeps the plain `{name: default}` form every reader knows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cnnbuilder.errors import RecipeError
from cnnbuilder.recipe.expressions import has_expression
from cnnbuilder.recipe.source import Location, Locations, format_path

KEYS = ("default", "int", "float", "choice", "length", "rule", "message")
KEY_DOCS = {
    "default": "The value when nothing overrides it (required at the level that declares the param first).",
    "int": "`[low, high]`: an integer in the range, bounds included (null: unbounded); for a list param, each item.",
    "float": "`[low, high]`: a number in the range, bounds included (null: unbounded); for a list param, each item.",
    "choice": "`[a, b, ...]`: one of these values; for a list param, each item.",
    "length": "For a list param: the number of items, `n` or `[low, high]`.",
    "rule": "A `${...}` expression over the params that must be true, such as `\"${(depth - 2) % 6 == 0}\"`.",
    "message": "What the rule asks for, in the recipe author's words (shown when it fails).",
}


@dataclass(frozen=True)
class Declaration:
    """What one param accepts, and where (file and line) each level declared it."""

    name: str
    checks: dict  # the keys of KEYS but `default`
    where: Location | None = None

    def describe(self) -> str:
        """'an integer from 1 to 1024', 'one of v1, v2'... for messages."""
        parts = []
        for kind in ("int", "float"):
            if kind in self.checks:
                low, high = self.checks[kind]
                noun = "an integer" if kind == "int" else "a number"
                if low is not None and high is not None:
                    parts.append(f"{noun} from {low:g} to {high:g}")
                elif low is not None:
                    parts.append(f"{noun} >= {low:g}")
                elif high is not None:
                    parts.append(f"{noun} <= {high:g}")
                else:
                    parts.append(noun)
        if "choice" in self.checks:
            parts.append("one of " + ", ".join(repr(c) for c in self.checks["choice"]))
        text = " and ".join(parts)
        if "length" in self.checks:
            low, high = self.checks["length"]
            count = f"{low}" if low == high else f"{low} to {high}"
            text = f"a list of {count} items" + (f", each {text}" if text else "")
        return text or "any value"

    def problem(self, value: Any) -> str | None:
        """None when `value` is accepted, else what was expected."""
        if "length" in self.checks:
            low, high = self.checks["length"]
            if not isinstance(value, (list, tuple)) or not low <= len(value) <= high:
                return f"expected {self.describe()}"
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        for index, item in enumerate(items):
            if not self._accepts(item):
                at = f"item {index} = {item!r}: " if isinstance(value, (list, tuple)) else ""
                return f"{at}expected {self.describe()}"
        return None

    def _accepts(self, item) -> bool:
        number = isinstance(item, (int, float)) and not isinstance(item, bool)
        for kind in ("int", "float"):
            if kind in self.checks:
                if not number or (kind == "int" and not isinstance(item, int)):
                    return False
                low, high = self.checks[kind]
                if (low is not None and item < low) or (high is not None and item > high):
                    return False
        if "choice" in self.checks:
            return any(item == c and type(item) is type(c) for c in self.checks["choice"])
        return True


def split_params(data: dict, locations: Locations, label: str) -> dict:
    """Turn the declarations of one file's `params:` into plain defaults, in place.

    Returns {name: {key: value}} of this level's declarations (without `default`, with `at`:
    the `Location` of the declaration); the location of a declared default becomes the
    param's own (`params.<name>`)."""
    params = data.get("params")
    if not isinstance(params, dict):
        return {}
    declared = {}
    for name, value in list(params.items()):
        if not isinstance(value, dict):
            continue
        path = ("params", name)

        def error(key, message, path=path):
            at = locations.near(path + (key,) if key else path)
            prefix = f"{at}, field {format_path(path + ((key,) if key else ()))}" if at else label
            return RecipeError(f"{prefix}: {message}")

        unknown = [key for key in value if key not in KEYS]
        if unknown:
            raise error(unknown[0], f"a param written as a mapping declares what it accepts; "
                        f"{unknown[0]!r} is not one of {', '.join(KEYS)}. (A param's value "
                        "cannot itself be a mapping.)")
        checks = {key: _check_form(key, v, error) for key, v in value.items() if key != "default"}
        if "message" in checks and "rule" not in checks:
            raise error("message", "a message explains a rule; give `rule:` too.")
        declared[name] = {**checks, "at": locations.near(path)}
        if "default" in value:
            params[name] = value["default"]
            if path + ("default",) in locations:
                locations[path] = locations[path + ("default",)]
        else:
            del params[name]  # this level only declares; the default (and its line) is inherited
        for old in [p for p in locations if p[:2] == path and (len(p) > 2 or "default" not in value)]:
            del locations[old]
    return declared


def _check_form(key, value, error):
    """The value of one declaration key, checked (lists become tuples: (low, high))."""
    if value is None:
        return None  # removes an inherited key
    if key in ("int", "float"):
        number = (lambda v: isinstance(v, int) and not isinstance(v, bool)) if key == "int" else (
            lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))
        if not (isinstance(value, list) and len(value) == 2 and all(v is None or number(v) for v in value)):
            noun = "integers" if key == "int" else "numbers"
            raise error(key, f"expected [low, high] of {noun} (null: unbounded), got {value!r}.")
        if None not in value and value[0] > value[1]:
            raise error(key, f"expected low <= high, got {value!r}.")
        return tuple(value)
    if key == "choice":
        if not isinstance(value, list) or not value or any(isinstance(v, (list, dict)) for v in value):
            raise error(key, f"expected a non-empty list of values, got {value!r}.")
        return tuple(value)
    if key == "length":
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return (value, value)
        if (isinstance(value, list) and len(value) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
                and value[0] <= value[1]):
            return tuple(value)
        raise error(key, f"expected a count n or [low, high], got {value!r}.")
    if key == "rule":
        if not has_expression(value):
            raise error(key, f'expected a "${{...}}" expression that is true for accepted values, got {value!r}.')
        return value
    if not isinstance(value, str) or not value:
        raise error(key, f"expected the text shown when the rule fails, got {value!r}.")
    return value


def merge_declarations(parent: dict, child: dict) -> dict:
    """A child's declarations merged into its parent's, key by key; null removes a key."""
    merged = {name: dict(checks) for name, checks in parent.items()}
    for name, checks in child.items():
        entry = merged.setdefault(name, {})
        for key, value in checks.items():
            if value is None and key != "at":
                entry.pop(key, None)
            else:
                entry[key] = value
    return merged


__all__ = ["KEYS", "KEY_DOCS", "Declaration", "merge_declarations", "split_params"]
